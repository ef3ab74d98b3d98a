"""Gradient approximation: modules that estimate the gradient from loss values (finite differences, randomized
finite differences, forward-mode directional derivatives)."""
from .base import GradApproximator, GradTarget
from .fdm import FDM, FDFormula
from .forward_gradient import ForwardGradient
from .randomized import RDSA, SPSA, GaussianSmoothing, MeZO, RandomizedFDM

__all__ = ["GradApproximator", "FDM", "RandomizedFDM", "SPSA", "RDSA", "GaussianSmoothing", "MeZO", "ForwardGradient"]
