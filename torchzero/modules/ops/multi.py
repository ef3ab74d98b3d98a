"""Operations over several named operands (numbers or module outputs); the incoming update only feeds the
operand modules."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from ...core import Chainable, Module, Var
from ...utils.tensorlist import Metrics
from .binary import Operand, clamp_, graft
from .operands import evaluate_operands, register_operands


def _materialize(value: Operand, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """A numeric operand as tensors shaped like ``like``; module outputs are returned as they are."""
    if isinstance(value, list):
        return value
    return [torch.full_like(t, value) for t in like]  # type: ignore[arg-type]


class MultiOperationBase(Module, ABC):
    """Base for operations over named operands where the incoming update is not an operand.

    Operands are stored as in ``BinaryOperationBase``; at least one must be a module (ValueError otherwise).
    ``step`` evaluates the module operands on clones of the ``Var`` (catalog 0.5) and sets ``var.update`` to
    ``transform(var, **operands)``. Settings are read from ``defaults``.
    """

    def __init__(self, defaults: dict[str, Any] | None, **operands: Chainable | Any):
        super().__init__(defaults)
        self.operands: dict[str, Any] = register_operands(self, operands)
        if not self.children:
            raise ValueError(f"{type(self).__name__}: at least one operand must be a module")

    @abstractmethod
    def transform(self, var: Var, **operands: Any) -> list[torch.Tensor]:
        """Returns the new update from the operand values."""

    @torch.no_grad()
    def step(self, var: Var) -> Var:
        operands = evaluate_operands(self, self.operands, var)
        var.update = list(self.transform(var, **operands))
        return var


def _first_list(*values: Operand) -> list[torch.Tensor]:
    return next(v for v in values if isinstance(v, list))


class SubModules(MultiOperationBase):
    """``input − alpha·other``.

    Args:
        input: a number or a module.
        other: a number or a module.
        alpha: multiplier of ``other``. Defaults to 1.
    """

    def __init__(self, input: Chainable | float, other: Chainable | float, alpha: float = 1):
        super().__init__(dict(alpha=alpha), input=input, other=other)

    def transform(self, var, input, other):
        alpha = self.defaults["alpha"]
        out = _materialize(input, _first_list(input, other))
        if isinstance(other, list):
            torch._foreach_sub_(out, other, alpha=alpha)
        else:
            torch._foreach_sub_(out, other * alpha)
        return out


class DivModules(MultiOperationBase):
    """``input / other``.

    Args:
        input: a number or a module.
        other: a number or a module.
        other_first: evaluate ``other`` before ``input`` (matters when operands have side effects). Defaults to
            False.
    """

    def __init__(self, input: Chainable | float, other: Chainable | float, other_first: bool = False):
        operands = dict(other=other, input=input) if other_first else dict(input=input, other=other)
        super().__init__(dict(other_first=other_first), **operands)

    def transform(self, var, input, other):
        out = _materialize(input, _first_list(input, other))
        torch._foreach_div_(out, other)
        return out


class PowModules(MultiOperationBase):
    """``input ** exponent``.

    Args:
        input: a number or a module.
        exponent: a number or a module.
    """

    def __init__(self, input: Chainable | float, exponent: Chainable | float):
        super().__init__({}, input=input, exponent=exponent)

    def transform(self, var, input, exponent):
        if not isinstance(input, list):
            return list(torch._foreach_pow(input, exponent))
        torch._foreach_pow_(input, exponent)
        return input


class LerpModules(MultiOperationBase):
    """``input + weight·(end − input)``.

    Args:
        input: a module.
        end: a module.
        weight: interpolation weight.
    """

    def __init__(self, input: Chainable, end: Chainable, weight: float):
        super().__init__(dict(weight=weight), input=input, end=end)

    def transform(self, var, input, end):
        torch._foreach_lerp_(input, end, self.defaults["weight"])
        return input


class ClipModules(MultiOperationBase):
    """``clamp(input, min, max)``; None bounds are skipped.

    Args:
        input: a module.
        min: a number or a module. Defaults to None.
        max: a number or a module. Defaults to None.
    """

    def __init__(self, input: Chainable, min: float | Chainable | None = None, max: float | Chainable | None = None):
        super().__init__({}, input=input, min=min, max=max)

    def transform(self, var, input, min, max):
        return clamp_(input, min, max)


class GraftModules(MultiOperationBase):
    """The output of ``direction`` rescaled to the size of the output of ``magnitude``:
    ``graft(d=direction(u), m=magnitude(u); tensorwise, ord, eps, strength)``.

    Args:
        direction: module giving the direction.
        magnitude: module giving the size.
        tensorwise: norms per tensor (True) or jointly. Defaults to True.
        ord: norm order or metric. Defaults to 2.
        eps: lower bound of the direction's norm. Defaults to 1e-6.
        strength: interpolates the target norm between the magnitude's norm (1) and the direction's own norm (0).
            Defaults to 1.

    Example:
        ```python
        # direction from Adam, step size from SGD momentum
        opt = tz.Modular(model.parameters(), tz.m.GraftModules(tz.m.Adam(), tz.m.HeavyBall()), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, direction: Chainable, magnitude: Chainable, tensorwise: bool = True, ord: Metrics = 2,
                 eps: float = 1e-06, strength: float = 1):
        super().__init__(dict(tensorwise=tensorwise, ord=ord, eps=eps, strength=strength), direction=direction,
                         magnitude=magnitude)

    def transform(self, var, direction, magnitude):
        d = self.defaults
        return graft(direction, magnitude, tensorwise=d["tensorwise"], ord=d["ord"], eps=d["eps"],
                     strength=d["strength"])
