"""Experimental modules, exported as ``torchzero.m.experimental.<Name>``: less tested research methods."""
from .block_partition import BlockPartition
from .coordinate_momentum import CoordinateMomentum
from .curveball import CurveBall
from .ema_squared import NesterovEMASquared, PrecenteredEMASquared, SqrtNesterovEMASquared
from .fft import FFTProjection
from .gradmin import GradMin
from .infinity_norm_trust_region import InfinityNormTrustRegion
from .newton_newton import NewtonNewton
from .newton_solver import NewtonSolver
from .reduce_outward_lr import ReduceOutwardLR
from .scipy_newton_cg import ScipyNewtonCG
from .tensorize import TensorizeProjection

__all__ = ["BlockPartition", "CoordinateMomentum", "CurveBall", "FFTProjection", "GradMin", "InfinityNormTrustRegion", "NesterovEMASquared", "NewtonNewton", "NewtonSolver", "ScipyNewtonCG",
           "PrecenteredEMASquared", "ReduceOutwardLR", "SqrtNesterovEMASquared", "TensorizeProjection"]
