"""Weight decay applied directly to the parameters (``DirectWeightDecay``)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...core import Module, Var
from ...utils.checks import check_non_negative
from ...utils.foreach import Scalars, combine, scalar_or_list
from .weight_decay import weight_decay_


def direct_weight_decay_(params_: Sequence[torch.Tensor], weight_decay: Scalars, ord: int = 2) -> None:
    """Decays the parameters in place: ``x ← x − wd·x`` (ord 2, one multiplication by ``1 − wd``),
    ``x ← x − wd·sign(x)`` (ord 1), otherwise ``x ← x − wd·|x|^(ord−1)·sign(x)`` (``weight_decay_``'s penalty)."""
    params_ = list(params_)
    with torch.no_grad():
        if ord == 2:
            torch._foreach_mul_(params_, combine(1, weight_decay, lambda a, b: a - b))
        else:
            # the penalty gradient is computed from the old values before the in-place addition
            weight_decay_(params_, params_, combine(0, weight_decay, lambda a, b: a - b), ord=ord)


def _check_weight_decay_args(owner: str, weight_decay: float, ord: int) -> None:
    check_non_negative(owner, "weight_decay", weight_decay)
    if isinstance(ord, bool) or not isinstance(ord, int):
        raise TypeError(f"{owner}: ord must be an int, got {type(ord).__name__}")
    if ord < 1:
        raise ValueError(f"{owner}: ord must be >= 1, got {ord}")


class DirectWeightDecay(Module):
    """Weight decay applied to the parameters in place when the module is stepped; the update is left alone.

    ``x ← x − wd·x`` (ord 2), ``x ← x − wd·sign(x)`` (ord 1), otherwise ``x ← x − wd·|x|^(ord−1)·sign(x)``. The
    decay is not scaled by the learning rate. Because the parameters move when the module runs, loss and gradient
    afterwards refer to the decayed point: with a closure, a loss or gradient known from before the decay (computed
    by an earlier module, or reused from the previous step) is dropped, and a later module that requests it gets it
    evaluated at the decayed point; the current update is kept. Without a closure the gradient passed in (taken
    before the decay) is the only one available and is kept. ``Modular(p, DirectWeightDecay(wd), LR(lr))`` with a
    closure is "decay, then a gradient step from the decayed point".

    Args:
        weight_decay: the coefficient ``wd`` (per-parameter setting, non-negative).
        ord: order of the penalty. Defaults to 2.

    Reference:
        I. Loshchilov, F. Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (decay decoupled from the
        gradient step).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.DirectWeightDecay(1e-4), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, weight_decay: float, ord: int = 2):
        _check_weight_decay_args("DirectWeightDecay", weight_decay, ord)
        super().__init__(dict(weight_decay=weight_decay, ord=ord))

    def step(self, var: Var) -> Var:
        params = var.params
        wd = scalar_or_list(self.get_settings(params, "weight_decay"))
        if isinstance(wd, list) or wd != 0:
            direct_weight_decay_(params, wd, ord=self.settings[params[0]]["ord"])
            if var.closure is not None:
                # evaluated before the decay: get_loss/get_grad re-evaluate at the new point when asked
                var.loss = None
                var.grad = None
        return var
