"""Complete optimizers: ``Split`` (several optimizers stepped as one) and, in ``torchzero.optim.wrappers``, other
libraries' optimizers behind the ``torch.optim.Optimizer`` interface (each wrapper module is imported explicitly,
since it imports its optional dependency)."""
from . import wrappers
from .split import Split

__all__ = ["Split", "wrappers"]
