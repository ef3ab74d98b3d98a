from .adagrad import Adagrad, AdagradNorm
from .adahessian import AdaHessian
from .adam import Adam
from .adan import Adan
from .adaptive_heavyball import AdaptiveHeavyBall
from .aegd import AEGD
from .dual_norm import DualNormCorrection
from .esgd import ESGD
from .full_matrix_adagrad import FullMatrixAdagrad, LMAdagrad
from .lion import Lion
from .mars import MARSCorrection
from .matrix_momentum import MatrixMomentum
from .msam import MSAM, MSAMObjective
from .muon import MuonAdjustLR, Orthogonalize
from .natural_gradient import NaturalGradient
from .orthograd import OrthoGrad
from .rmsprop import RMSprop
from .rprop import BacktrackOnSignChange, Rprop, ScaleLRBySignChange, SignConsistencyLRs, SignConsistencyMask
from .sam import ASAM, SAM
from .shampoo import Shampoo
from .soap import SOAP
from .sophia_h import SophiaH

__all__ = ["AEGD", "ASAM", "AdaHessian", "Adagrad", "AdagradNorm", "Adam", "Adan", "AdaptiveHeavyBall",
           "BacktrackOnSignChange", "DualNormCorrection", "FullMatrixAdagrad", "LMAdagrad", "MuonAdjustLR",
           "NaturalGradient", "Orthogonalize", "SOAP", "Shampoo", "ESGD", "Lion", "MARSCorrection", "MSAM", "MSAMObjective",
           "MatrixMomentum", "OrthoGrad", "RMSprop", "Rprop", "SAM", "ScaleLRBySignChange", "SignConsistencyLRs",
           "SignConsistencyMask", "SophiaH"]
