"""Helpers for running the real IBM FL: its environment, the files its configs name, warm start.

IBM FL lives in a Python environment of its own, where SEEL is not installed: what runs there
(`make_files.py`) imports only the standard library, numpy and scikit-learn, and is run by path.
"""
