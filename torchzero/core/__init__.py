"""The framework: ``Modular``, ``Module``, ``Chain``, ``Var``, ``Transform`` and friends."""
from .modular import Modular
from .module import Chain, Chainable, Module, maybe_chain
from .reformulation import Reformulation
from .transform import Target, TensorwiseTransform, Transform, apply_transform
from .var import Var

__all__ = ["Modular", "Module", "Chain", "Chainable", "maybe_chain", "Var", "Transform", "TensorwiseTransform",
           "Target", "apply_transform", "Reformulation"]
