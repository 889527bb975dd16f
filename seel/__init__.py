"""SEEL: sweep federated-learning hyperparameters by driving real processes."""

from __future__ import annotations

__version__ = "0.1.0"
