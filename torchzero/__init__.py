"""torchzero: a modular optimization library for PyTorch.

Build an optimizer by chaining small modules and use it as any ``torch.optim.Optimizer``::

    import torchzero as tz
    opt = tz.Modular(model.parameters(), tz.m.ClipNorm(1.0), tz.m.Adam(), tz.m.WeightDecay(1e-2), tz.m.LR(1e-3))
"""
from . import core, modules, optim, utils
from . import modules as m
from .core import Modular

__all__ = ["Modular", "core", "m", "modules", "optim", "utils"]
__version__ = "0.4.0.dev0"
