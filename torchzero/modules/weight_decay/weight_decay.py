"""Weight decay (the gradient of an Lp penalty added to the update)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...core import Target, Transform
from ...utils.foreach import add_scaled_, scalar_or_list


def weight_decay_(tensors_: list[torch.Tensor], params: Sequence[torch.Tensor], weight_decay: float | list[float],
                  ord: int = 2) -> list[torch.Tensor]:
    """Adds the gradient of ``weight_decay/ord · Σ|x|^ord`` to ``tensors_`` in place:
    ``u + wd·x`` (ord 2), ``u + wd·sign(x)`` (ord 1), otherwise ``u + wd·|x|^(ord−1)·sign(x)``."""
    params = list(params)
    if ord == 2:
        penalty_grad = params
    elif ord == 1:
        penalty_grad = list(torch._foreach_sign(params))
    else:
        penalty_grad = list(torch._foreach_pow(torch._foreach_abs(params), ord - 1))
        torch._foreach_mul_(penalty_grad, torch._foreach_sign(params))
    add_scaled_(tensors_, penalty_grad, weight_decay)
    return tensors_


class WeightDecay(Transform):
    """Weight decay: adds the gradient of the penalty ``wd/ord · Σ|x|^ord`` to the update.

    ``u + wd·x`` (ord 2), ``u + wd·sign(x)`` (ord 1), otherwise ``u + wd·|x|^(ord−1)·sign(x)``.
    The position in the chain decides the coupling: before an adaptive module it is L2 regularisation; after it
    and before ``LR`` it is decoupled (AdamW-style) weight decay; after ``LR`` it is decay not scaled by the
    learning rate.

    Args:
        weight_decay: the coefficient ``wd`` (per-parameter setting).
        ord: order of the penalty. Defaults to 2.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        I. Loshchilov, F. Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (decoupled placement).

    Example:
        ```python
        sgd_wd = tz.Modular(model.parameters(), tz.m.WeightDecay(1e-4), tz.m.LR(1e-2))
        adamw = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.WeightDecay(1e-2), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, weight_decay: float, ord: int = 2, target: Target = "update"):
        if weight_decay < 0:
            raise ValueError(f"WeightDecay: weight_decay must be non-negative, got {weight_decay}")
        if ord < 1:
            raise ValueError(f"WeightDecay: ord must be >= 1, got {ord}")
        super().__init__(dict(weight_decay=weight_decay, ord=ord), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        wd = scalar_or_list(self.unpack_settings(settings, "weight_decay"))
        if not isinstance(wd, list) and wd == 0:
            return tensors
        return weight_decay_(tensors, params, wd, ord=settings[0]["ord"])
