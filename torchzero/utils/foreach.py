"""Small multi-tensor helpers shared by modules: per-parameter scalars and scaled in-place updates."""
from __future__ import annotations

from collections.abc import Sequence

import torch

Scalars = float | list[float]
"""A scalar shared by all tensors, or one scalar per tensor."""


def scalar_or_list(values: Sequence[float]) -> Scalars:
    """A single scalar if all per-parameter values are equal (the common case), else a list of them.

    Foreach ops take either; a scalar lets them skip per-tensor scalars and lets ``alpha=`` overloads be used.
    """
    first = values[0]
    for v in values:
        if v != first:
            return list(values)
    return first


def combine(a: Scalars, b: Scalars, fn) -> Scalars:
    """``fn(a, b)`` for scalars, or elementwise when either is a per-tensor list."""
    if isinstance(a, list) or isinstance(b, list):
        n = len(a) if isinstance(a, list) else len(b)  # type: ignore[arg-type]
        a_ = a if isinstance(a, list) else [a] * n
        b_ = b if isinstance(b, list) else [b] * n
        return [fn(x, y) for x, y in zip(a_, b_)]
    return fn(a, b)


def add_scaled_(tensors_: list[torch.Tensor], other: Sequence[torch.Tensor],
                scale: Scalars | Sequence[torch.Tensor]) -> None:
    """``tensors_ += scale * other`` in place, with a scalar or per-tensor scale (numbers or 0-d tensors)."""
    if isinstance(scale, list):
        torch._foreach_add_(tensors_, torch._foreach_mul(other, scale))
    elif scale == 1:
        torch._foreach_add_(tensors_, other)
    elif scale != 0:
        torch._foreach_add_(tensors_, other, alpha=scale)


def scale_(tensors_: list[torch.Tensor], scale: Scalars | Sequence[float]) -> list[torch.Tensor]:
    """Multiplies ``tensors_`` in place by a scalar or per-tensor scalars; skipped when all are exactly 1."""
    if not isinstance(scale, (int, float)):
        scale = scalar_or_list(scale)
    if isinstance(scale, list):
        torch._foreach_mul_(tensors_, scale)
    elif scale != 1:
        torch._foreach_mul_(tensors_, scale)
    return tensors_


def sub_scaled_(params_: list[torch.Tensor], update: Sequence[torch.Tensor], scale: Scalars | Sequence[float]) -> None:
    """``params_ -= scale * update`` (one multi-tensor op when the scale is shared), without autograd."""
    if not isinstance(scale, (int, float)):
        scale = scalar_or_list(scale)
    with torch.no_grad():
        if isinstance(scale, list):
            torch._foreach_sub_(params_, torch._foreach_mul(update, scale))
        else:
            torch._foreach_sub_(params_, update, alpha=scale)
