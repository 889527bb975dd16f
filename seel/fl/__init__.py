"""seel.fl: a small federated-learning runtime whose console behaves like IBM FL's."""
