"""Adaptive search: a `search:` section turns a sweep into an Optuna study (ask and tell)."""
