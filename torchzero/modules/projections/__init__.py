"""Projections: child modules optimise a different view of the parameters (catalog section 8)."""
from .cast import To, ViewAsReal
from .projection import ProjectionBase
from .vector import ScalarProjection, VectorProjection

__all__ = ["ProjectionBase", "ScalarProjection", "To", "VectorProjection", "ViewAsReal"]
