"""wrappers: other optimizers used as modules."""
from .wrap import Wrap

__all__ = ["Wrap"]
