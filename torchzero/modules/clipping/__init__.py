from .centralize import Centralize
from .clipping import ClipNorm, ClipValue, Normalize
from .ema_clipping import ClipNormByEMA, ClipValueByEMA, NormalizeByEMA
from .growth_clipping import ClipNormGrowth, ClipValueGrowth

__all__ = ["Centralize", "ClipNorm", "ClipNormByEMA", "ClipNormGrowth", "ClipValue", "ClipValueByEMA",
           "ClipValueGrowth", "Normalize", "NormalizeByEMA"]
