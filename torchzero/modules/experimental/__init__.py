"""Experimental modules, exported as ``torchzero.m.experimental.<Name>``: less tested research methods."""
from .block_partition import BlockPartition
from .coordinate_momentum import CoordinateMomentum
from .curveball import CurveBall
from .ema_squared import NesterovEMASquared, PrecenteredEMASquared, SqrtNesterovEMASquared
from .fft import FFTProjection
from .gradmin import GradMin
from .reduce_outward_lr import ReduceOutwardLR
from .tensorize import TensorizeProjection

__all__ = ["BlockPartition", "CoordinateMomentum", "CurveBall", "FFTProjection", "GradMin", "NesterovEMASquared",
           "PrecenteredEMASquared", "ReduceOutwardLR", "SqrtNesterovEMASquared", "TensorizeProjection"]
