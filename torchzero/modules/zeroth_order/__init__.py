"""Zeroth-order methods that propose updates from function values only."""
from .cd import CD

__all__ = ["CD"]
