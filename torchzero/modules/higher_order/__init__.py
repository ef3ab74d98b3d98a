"""Higher-order methods: Newton steps on Taylor models with derivatives beyond the Hessian."""
from .higher_order_newton import HigherOrderNewton

__all__ = ["HigherOrderNewton"]
