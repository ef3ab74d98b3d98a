"""Quasi-Newton methods: dense and diagonal secant updates on a shared base, and limited-memory L-BFGS/L-SR1.

``__all__`` lists the module classes (exported as ``tz.m.<Name>``) and the base ``HessianUpdateStrategy``; the
operators (``LBFGSOperator``, ``LSR1Operator``), ``LimitedMemoryBase`` and ``DampingStrategy`` are importable from
this package."""
from .base import HessianUpdateStrategy
from .bfgs_family import BFGS, DFP, SSVM, FletcherVMM, Horisho, NewSSM
from .broyden import ICUM, BroydenBad, BroydenGood, Greenstadt1, Greenstadt2, McCormick, Pearson, ThomasOptimalMethod
from .damping import DampingStrategy
from .diagonal import DNRTR, DiagonalBFGS, DiagonalQuasiCauchi, DiagonalSR1, DiagonalWeightedQuasiCauchi, NewDQN
from .lbfgs import LBFGS, LBFGSOperator
from .limited_memory import LimitedMemoryBase
from .lsr1 import LSR1, LSR1Operator
from .other_updates import PSB, SR1, GradientCorrection, ProjectedNewtonRaphson, ShorR

__all__ = [
    "HessianUpdateStrategy", "BFGS", "DFP", "SSVM", "FletcherVMM", "Horisho", "NewSSM", "ICUM", "BroydenBad",
    "BroydenGood", "Greenstadt1", "Greenstadt2", "McCormick", "Pearson", "ThomasOptimalMethod", "DNRTR",
    "DiagonalBFGS", "DiagonalQuasiCauchi", "DiagonalSR1", "DiagonalWeightedQuasiCauchi", "NewDQN", "LBFGS", "LSR1",
    "PSB", "SR1", "GradientCorrection", "ProjectedNewtonRaphson", "ShorR",
]
