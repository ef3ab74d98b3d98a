from .adaptive import AdGD, BarzilaiBorwein, BBStab, PolyakStepSize
from .lr import LR, StepSize
from .random_step import RandomStepSize
from .warmup import Warmup, WarmupNormClip

__all__ = ["LR", "AdGD", "BBStab", "BarzilaiBorwein", "PolyakStepSize", "RandomStepSize", "StepSize", "Warmup",
           "WarmupNormClip"]
