from .averaging import Averaging, MedianAveraging, WeightedAveraging
from .cautious import (
    Cautious,
    IntermoduleCautious,
    ScaleByGradCosineSimilarity,
    ScaleModulesByCosineSimilarity,
    UpdateGradientSignConsistency,
)
from .momentum import EMA, NAG, HeavyBall

__all__ = ["EMA", "NAG", "Averaging", "Cautious", "HeavyBall", "IntermoduleCautious", "MedianAveraging",
           "ScaleByGradCosineSimilarity", "ScaleModulesByCosineSimilarity", "UpdateGradientSignConsistency",
           "WeightedAveraging"]
