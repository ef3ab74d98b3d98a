"""Variance reduction for stochastic (mini-batch) objectives."""
from .svrg import SVRG

__all__ = ["SVRG"]
