from .direct import DirectWeightDecay
from .relative import RelativeWeightDecay
from .weight_decay import WeightDecay

__all__ = ["DirectWeightDecay", "RelativeWeightDecay", "WeightDecay"]
