"""Nonlinear least squares: ``GaussNewton`` and ``SumOfSquares`` for closures that return residual vectors."""
from .gn import GaussNewton, SumOfSquares

__all__ = ["GaussNewton", "SumOfSquares"]
