"""misc: meta-modules (Online, Split, Alternate, Switch, Multistep, Sequential), gradient accumulation,
homotopies, loss guards, random regularization, curvature probes, grafting, history, scaling and debug helpers."""
from .curvature import HpuEstimate, RandomHvp
from .debug import PrintLoss, PrintParams, PrintShape, PrintUpdate
from .escape import EscapeAnnealing, NegateOnLossIncrease, SaveBest
from .gradient_accumulation import GradientAccumulation
from .grafting import GraftGradToUpdate, GraftToGrad, GraftToParams
from .history import LastAbsoluteRatio, LastDifference, LastGradDifference, LastProduct, LastRatio, Previous
from .homotopy import ExpHomotopy, LambdaHomotopy, LogHomotopy, SqrtHomotopy, SquareHomotopy
from .meta import Alternate, Multistep, Online, Sequential, Split, Switch
from .regularization import Dropout, PerturbWeights, WeightDropout
from .scaling import DivByLoss, FillLoss, GradSign, MulByLoss, NoiseSign, Relative, UpdateSign

__all__ = [
    "Alternate",
    "Dropout",
    "DivByLoss",
    "EscapeAnnealing",
    "ExpHomotopy",
    "FillLoss",
    "GradSign",
    "GradientAccumulation",
    "GraftGradToUpdate",
    "GraftToGrad",
    "GraftToParams",
    "HpuEstimate",
    "LambdaHomotopy",
    "LastAbsoluteRatio",
    "LastDifference",
    "LastGradDifference",
    "LastProduct",
    "LastRatio",
    "LogHomotopy",
    "MulByLoss",
    "Multistep",
    "NegateOnLossIncrease",
    "NoiseSign",
    "Online",
    "PerturbWeights",
    "Previous",
    "PrintLoss",
    "PrintParams",
    "PrintShape",
    "PrintUpdate",
    "RandomHvp",
    "Relative",
    "SaveBest",
    "Sequential",
    "Split",
    "SqrtHomotopy",
    "SquareHomotopy",
    "Switch",
    "UpdateSign",
    "WeightDropout",
]
