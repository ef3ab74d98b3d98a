"""Binary operations: the incoming update ``u`` is the left operand, the other is a number or a module output."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import torch

from ...core import Chainable, Module, Var
from ...utils.tensorlist import Metrics, TensorList
from .operands import evaluate_operands, register_operands

Operand = list[torch.Tensor] | float | int | None


class BinaryOperationBase(Module, ABC):
    """Base for operations whose left operand is the incoming update.

    Each keyword operand is stored under its name: as a child if it is a module or a sequence of modules
    (evaluated on a clone of the ``Var`` each step, catalog 0.5), else as a constant. ``step`` evaluates the
    module operands in declaration order, then calls ``transform(var, update, **operands)`` with
    ``update = var.get_update()`` and stores its result in ``var.update``. Settings are read from ``defaults``.
    """

    def __init__(self, defaults: dict[str, Any] | None, **operands: Chainable | Any):
        super().__init__(defaults)
        self.operands: dict[str, Any] = register_operands(self, operands)

    @abstractmethod
    def transform(self, var: Var, update: list[torch.Tensor], **operands: Any) -> Iterable[torch.Tensor]:
        """Returns the new update from ``update`` (may be modified in place) and the operand values."""

    @torch.no_grad()
    def step(self, var: Var) -> Var:
        operands = evaluate_operands(self, self.operands, var)
        var.update = list(self.transform(var, update=var.get_update(), **operands))
        return var


def _neg(o: Operand) -> Operand:
    return [-t for t in o] if isinstance(o, list) else -o  # type: ignore[operator]


class Add(BinaryOperationBase):
    """``u + alpha·other``.

    Args:
        other: a number or a module whose output is added.
        alpha: multiplier of ``other``. Defaults to 1.

    Example:
        ```python
        # gradient plus 0.1 times the momentum
        opt = tz.Modular(model.parameters(), tz.m.Add(tz.m.HeavyBall(0.9), alpha=0.1), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, other: Chainable | float, alpha: float = 1):
        super().__init__(dict(alpha=alpha), other=other)

    def transform(self, var, update, other):
        alpha = self.defaults["alpha"]
        if isinstance(other, list):
            torch._foreach_add_(update, other, alpha=alpha)
        else:
            torch._foreach_add_(update, other * alpha)
        return update


class Sub(BinaryOperationBase):
    """``u − alpha·other``.

    Args:
        other: a number or a module whose output is subtracted.
        alpha: multiplier of ``other``. Defaults to 1.
    """

    def __init__(self, other: Chainable | float, alpha: float = 1):
        super().__init__(dict(alpha=alpha), other=other)

    def transform(self, var, update, other):
        alpha = self.defaults["alpha"]
        if isinstance(other, list):
            torch._foreach_sub_(update, other, alpha=alpha)
        else:
            torch._foreach_sub_(update, other * alpha)
        return update


class RSub(BinaryOperationBase):
    """``other − u``.

    Args:
        other: a number or a module.
    """

    def __init__(self, other: Chainable | float):
        super().__init__({}, other=other)

    def transform(self, var, update, other):
        torch._foreach_neg_(update)
        if isinstance(other, list):
            torch._foreach_add_(update, other)
        else:
            torch._foreach_add_(update, other)
        return update


class Mul(BinaryOperationBase):
    """``u · other`` (elementwise).

    Args:
        other: a number or a module.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.Mul(0.5), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, other: Chainable | float):
        super().__init__({}, other=other)

    def transform(self, var, update, other):
        torch._foreach_mul_(update, other)
        return update


class Div(BinaryOperationBase):
    """``u / other`` (elementwise).

    Args:
        other: a number or a module.
    """

    def __init__(self, other: Chainable | float):
        super().__init__({}, other=other)

    def transform(self, var, update, other):
        torch._foreach_div_(update, other)
        return update


class RDiv(BinaryOperationBase):
    """``other / u`` (elementwise).

    Args:
        other: a number or a module.
    """

    def __init__(self, other: Chainable | float):
        super().__init__({}, other=other)

    def transform(self, var, update, other):
        if isinstance(other, list):
            return torch._foreach_div(other, update)
        torch._foreach_reciprocal_(update)
        torch._foreach_mul_(update, other)
        return update


class Pow(BinaryOperationBase):
    """``u ** exponent`` (elementwise).

    Args:
        exponent: a number or a module.
    """

    def __init__(self, exponent: Chainable | float):
        super().__init__({}, exponent=exponent)

    def transform(self, var, update, exponent):
        torch._foreach_pow_(update, exponent)
        return update


class RPow(BinaryOperationBase):
    """``other ** u`` (elementwise; a number acts as a scalar base).

    Args:
        other: a number or a module.
    """

    def __init__(self, other: Chainable | float):
        super().__init__({}, other=other)

    def transform(self, var, update, other):
        return list(torch._foreach_pow(other, update))


class CopySign(BinaryOperationBase):
    """``copysign(u, other)``: the magnitude of the update with the sign of ``other``.

    Args:
        other: a module.
    """

    def __init__(self, other: Chainable):
        super().__init__({}, other=other)

    def transform(self, var, update, other):
        return [u.copysign_(o) for u, o in zip(update, other)]


class RCopySign(BinaryOperationBase):
    """``copysign(other, u)``: the magnitude of ``other`` with the sign of the update.

    Args:
        other: a module.
    """

    def __init__(self, other: Chainable):
        super().__init__({}, other=other)

    def transform(self, var, update, other):
        return [o.copysign_(u) for u, o in zip(update, other)]


CopyMagnitude = RCopySign


class Clip(BinaryOperationBase):
    """Clamps the update between ``min`` and ``max`` (numbers or module outputs, elementwise); the lower bound is
    applied first, a None bound is skipped.

    Args:
        min: lower bound. Defaults to None.
        max: upper bound. Defaults to None.
    """

    def __init__(self, min: float | Chainable | None = None, max: float | Chainable | None = None):
        super().__init__({}, min=min, max=max)

    def transform(self, var, update, min, max):
        return clamp_(update, min, max)


def clamp_(tensors: list[torch.Tensor], low: Operand, high: Operand) -> list[torch.Tensor]:
    """Clamps in place by numbers or lists of tensors; None bounds are skipped; the lower bound first."""
    if low is not None:
        if isinstance(low, list):
            torch._foreach_maximum_(tensors, low)
        else:
            torch._foreach_clamp_min_(tensors, low)
    if high is not None:
        if isinstance(high, list):
            torch._foreach_minimum_(tensors, high)
        else:
            torch._foreach_clamp_max_(tensors, high)
    return tensors


class Maximum(BinaryOperationBase):
    """Elementwise ``max(u, other)``.

    Args:
        other: a module.
    """

    def __init__(self, other: Chainable):
        super().__init__({}, other=other)

    def transform(self, var, update, other):
        torch._foreach_maximum_(update, other)
        return update


class Minimum(BinaryOperationBase):
    """Elementwise ``min(u, other)``.

    Args:
        other: a module.
    """

    def __init__(self, other: Chainable):
        super().__init__({}, other=other)

    def transform(self, var, update, other):
        torch._foreach_minimum_(update, other)
        return update


class GramSchimdt(BinaryOperationBase):
    """Elementwise ``u − (o·u) / max(o·o, 2·tiny)`` (name spelled as in the API).

    Kept as in the reference API: the formula is evaluated per element, not with inner products, so it is not
    an orthogonal projection.

    Args:
        other: a module.
    """

    def __init__(self, other: Chainable):
        super().__init__({}, other=other)

    def transform(self, var, update, other):
        tiny = 2 * torch.finfo(update[0].dtype).tiny
        num = torch._foreach_mul(other, update)
        den = torch._foreach_mul(other, other)
        torch._foreach_clamp_min_(den, tiny)
        torch._foreach_div_(num, den)
        torch._foreach_sub_(update, num)
        return update


class Threshold(BinaryOperationBase):
    """Keeps the update where it is above (``update_above=True``) or below the threshold, elsewhere puts ``value``.

    Args:
        threshold: a number or a module output (elementwise).
        value: a number or a module output put where the update is not kept.
        update_above: keep ``u > threshold`` (True) or ``u < threshold`` (False).
    """

    def __init__(self, threshold: Chainable | float, value: Chainable | float, update_above: bool):
        super().__init__(dict(update_above=update_above), threshold=threshold, value=value)

    def transform(self, var, update, threshold, value):
        above = self.defaults["update_above"]
        n = len(update)
        thr = threshold if isinstance(threshold, list) else [threshold] * n
        val = value if isinstance(value, list) else [value] * n
        out = []
        for u, t, v in zip(update, thr, val):
            keep = u > t if above else u < t
            out.append(torch.where(keep, u, torch.as_tensor(v, dtype=u.dtype, device=u.device)))
        return out


def graft(direction: list[torch.Tensor], magnitude: list[torch.Tensor], tensorwise: bool = True, ord: Metrics = 2,
          eps: float = 1e-6, strength: float = 1) -> list[torch.Tensor]:
    """``direction`` rescaled to the size of ``magnitude`` (catalog 0.6):
    ``d · n_m / max(n_d, eps)`` with norms per tensor or joint, and ``n_m ← strength·n_m + (1 − strength)·n_d``."""
    return TensorList(direction).graft(magnitude, tensorwise=tensorwise, ord=ord, eps=eps, strength=strength)


class Graft(BinaryOperationBase):
    """Rescales the update to the norm of the output of ``magnitude``: ``graft(d=u, m=magnitude(u))``.

    Args:
        magnitude: module whose output gives the norm.
        tensorwise: norms per tensor (True) or over all tensors jointly. Defaults to True.
        ord: norm order or metric. Defaults to 2.
        eps: lower bound of the update's norm. Defaults to 1e-6.

    Example:
        ```python
        # the direction of Adam with the step size of SGD momentum
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.Graft(tz.m.HeavyBall()), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, magnitude: Chainable, tensorwise: bool = True, ord: float = 2, eps: float = 1e-06):
        super().__init__(dict(tensorwise=tensorwise, ord=ord, eps=eps), magnitude=magnitude)

    def transform(self, var, update, magnitude):
        d = self.defaults
        return graft(update, magnitude, tensorwise=d["tensorwise"], ord=d["ord"], eps=d["eps"])


class RGraft(BinaryOperationBase):
    """Rescales the output of ``direction`` to the norm of the update: ``graft(d=direction(u), m=u)``.

    Args:
        direction: module whose output gives the direction.
        tensorwise: norms per tensor (True) or jointly. Defaults to True.
        ord: norm order or metric. Defaults to 2.
        eps: lower bound of the direction's norm. Defaults to 1e-6.
    """

    def __init__(self, direction: Chainable, tensorwise: bool = True, ord: float = 2, eps: float = 1e-06):
        super().__init__(dict(tensorwise=tensorwise, ord=ord, eps=eps), direction=direction)

    def transform(self, var, update, direction):
        d = self.defaults
        return graft(direction, update, tensorwise=d["tensorwise"], ord=d["ord"], eps=d["eps"])


GraftToUpdate = RGraft
