from .lr import LR, StepSize

__all__ = ["LR", "StepSize"]
