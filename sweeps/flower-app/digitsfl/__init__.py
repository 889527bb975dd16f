"""digitsfl: federated softmax regression on scikit-learn's digits."""
