"""Projections: child modules optimise a different view of the parameters (catalog section 8)."""
from .cast import To, ViewAsReal
from .galore import GaLore
from .projection import ProjectionBase
from .vector import ScalarProjection, VectorProjection

__all__ = ["GaLore", "ProjectionBase", "ScalarProjection", "To", "VectorProjection", "ViewAsReal"]
