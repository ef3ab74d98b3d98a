"""Reductions over positional operands (numbers or module outputs)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import torch

from ...core import Chainable, Module, Var
from .operands import evaluate_operand, is_module_operand


class ReduceOperationBase(Module, ABC):
    """Base for reductions over positional operands.

    A module operand at position ``i`` is registered as child ``operand_{i}``; at least one operand must be a
    module (ValueError). ``step`` evaluates the module operands on clones of the ``Var`` (catalog 0.5) and sets
    ``var.update`` to ``transform(var, *operands)`` with the operands in their original positional order. The
    incoming update is not an operand (pass ``Identity()`` or ``Clone()`` to include it).
    """

    def __init__(self, defaults: dict[str, Any] | None, *operands: Chainable | Any):
        super().__init__(defaults)
        self.operands: list[Any] = []
        for i, value in enumerate(operands):
            if is_module_operand(value):
                self.set_child(f"operand_{i}", value)
                self.operands.append(None)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self.operands.append(value)
            else:
                raise TypeError(f"{type(self).__name__}: operand {i} must be a number or a module, "
                                f"got {type(value).__name__}")
        if not self.children:
            raise ValueError(f"{type(self).__name__}: at least one operand must be a module")

    @abstractmethod
    def transform(self, var: Var, *operands: list[torch.Tensor] | float) -> list[torch.Tensor]:
        """Returns the new update from the operand values (module outputs may be modified in place)."""

    @torch.no_grad()
    def step(self, var: Var) -> Var:
        values = [evaluate_operand(self.children[f"operand_{i}"], var) if f"operand_{i}" in self.children else v
                  for i, v in enumerate(self.operands)]
        var.update = list(self.transform(var, *values))
        return var


def _fold_order(operands: Iterable[Any]) -> list[Any]:
    """Module outputs in their original order, then the numbers in theirs: the fold starts from a tensor list."""
    operands = list(operands)
    return [o for o in operands if isinstance(o, list)] + [o for o in operands if not isinstance(o, list)]


def _fold(operands: Iterable[Any], op_: Any, scalar_op_: Any = None) -> list[torch.Tensor]:
    """Folds the operands into the first module output (modified in place) with the in-place foreach ``op_``
    (``scalar_op_`` for numbers, default ``op_``)."""
    first, *rest = _fold_order(operands)
    for o in rest:
        (op_ if isinstance(o, list) or scalar_op_ is None else scalar_op_)(first, o)
    return first


class Sum(ReduceOperationBase):
    """``Σ inputs``.

    Args:
        *inputs: numbers or modules (at least one module).

    Example:
        ```python
        # gradient plus momentum
        opt = tz.Modular(model.parameters(), tz.m.Sum(tz.m.Grad(), tz.m.HeavyBall(0.9)), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, *inputs: Chainable | float):
        super().__init__({}, *inputs)

    def transform(self, var, *operands):
        return _fold(operands, torch._foreach_add_)


class Mean(ReduceOperationBase):
    """``Σ inputs / number of inputs`` (numbers included in the count).

    Args:
        *inputs: numbers or modules (at least one module).
    """

    def __init__(self, *inputs: Chainable | float):
        super().__init__({}, *inputs)

    def transform(self, var, *operands):
        out = _fold(operands, torch._foreach_add_)
        torch._foreach_div_(out, len(operands))
        return out


class Prod(ReduceOperationBase):
    """``Π inputs`` (elementwise).

    Args:
        *inputs: numbers or modules (at least one module).
    """

    def __init__(self, *inputs: Chainable | float):
        super().__init__({}, *inputs)

    def transform(self, var, *operands):
        return _fold(operands, torch._foreach_mul_)


class MaximumModules(ReduceOperationBase):
    """Elementwise maximum of the inputs.

    Args:
        *inputs: numbers or modules (at least one module).
    """

    def __init__(self, *inputs: Chainable | float):
        super().__init__({}, *inputs)

    def transform(self, var, *operands):
        return _fold(operands, torch._foreach_maximum_, torch._foreach_clamp_min_)


class MinimumModules(ReduceOperationBase):
    """Elementwise minimum of the inputs.

    Args:
        *inputs: numbers or modules (at least one module).
    """

    def __init__(self, *inputs: Chainable | float):
        super().__init__({}, *inputs)

    def transform(self, var, *operands):
        return _fold(operands, torch._foreach_minimum_, torch._foreach_clamp_max_)


def _weighted_sum(operands: tuple[Any, ...], weights: list[float]) -> list[torch.Tensor]:
    """``Σ wᵢ·xᵢ`` with weight i paired with input i, folded from the first module output."""
    pairs = list(zip(operands, weights))
    modules = [(o, w) for o, w in pairs if isinstance(o, list)]
    numbers = [(o, w) for o, w in pairs if not isinstance(o, list)]
    (first, w0), *rest = modules + numbers
    torch._foreach_mul_(first, w0)
    for o, w in rest:
        if isinstance(o, list):
            torch._foreach_add_(first, o, alpha=w)
        else:
            torch._foreach_add_(first, o * w)
    return first


class WeightedSum(ReduceOperationBase):
    """``Σ wᵢ·xᵢ``, weight i paired with input i.

    Args:
        *inputs: numbers or modules (at least one module).
        weights: one weight per input (ValueError otherwise).
    """

    def __init__(self, *inputs: Chainable | float, weights: Iterable[float]):
        weights = [float(w) for w in weights]
        if len(weights) != len(inputs):
            raise ValueError(f"{type(self).__name__}: got {len(weights)} weights for {len(inputs)} inputs")
        super().__init__(dict(weights=weights), *inputs)

    def transform(self, var, *operands):
        return _weighted_sum(operands, self.defaults["weights"])


class WeightedMean(WeightedSum):
    """``(Σ wᵢ·xᵢ) / number of inputs`` (not divided by the sum of weights).

    Args:
        *inputs: numbers or modules (at least one module).
        weights: one weight per input (ValueError otherwise).
    """

    def transform(self, var, *operands):
        out = _weighted_sum(operands, self.defaults["weights"])
        torch._foreach_div_(out, len(operands))
        return out
