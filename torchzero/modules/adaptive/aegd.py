"""AEGD: adaptive gradient descent with energy."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ...core import Transform, Var
from ...utils.checks import check_non_negative, check_range
from ...utils.foreach import Scalars, combine, scalar_or_list


def aegd_step_(tensors: Sequence[torch.Tensor], r_: list[torch.Tensor], f_plus_c: Scalars, lr: Scalars
               ) -> list[torch.Tensor]:
    """With ``v = u / (2·sqrt(f + c))``: ``r ← r / (1 + 2·lr·v²)`` in place, returns ``2·lr·r·v`` as new tensors.

    Computed as ``r ← r / (1 + lr·u²/(2(f + c)))`` and ``lr·r·u/sqrt(f + c)`` (the same, with fewer operations)."""
    k = combine(lr, f_plus_c, lambda a, b: a / (2 * b))
    denom = list(torch._foreach_mul(tensors, tensors))
    torch._foreach_mul_(denom, k)
    torch._foreach_add_(denom, 1)
    torch._foreach_div_(r_, denom)
    out = list(torch._foreach_mul(r_, tensors))
    torch._foreach_mul_(out, combine(lr, f_plus_c, lambda a, b: a / math.sqrt(b)))
    return out


class AEGD(Transform):
    """AEGD: energy-adaptive gradient descent; the step size is built in and only shrinks.

    Needs the loss f at the current point. Per-parameter energy ``'r'``, filled with ``sqrt(f₀ + c)`` on the first
    step. Each step: ``v = u / (2·sqrt(f + c))``, ``r ← r / (1 + 2·lr·v²)`` (elementwise), output ``2·lr·r·v``.
    The first output is ``lr·g / (1 + lr·g²/(2(f₀ + c)))``. Do not add ``LR`` (``lr`` is the step size; it is a
    per-parameter setting, so schedulers may change it).

    The loss is read as a Python number (one device synchronisation per step), and ``f + c`` must be positive: a
    loss with ``f + c ≤ 0`` or a non-finite loss raises ``ValueError`` (increase ``c``). Non-finite gradients are
    not checked; they propagate.

    Args:
        lr: step size (per-parameter). Defaults to 0.1.
        c: shift that keeps ``f + c > 0`` (per-parameter). Defaults to 1.

    Reference:
        H. Liu, X. Tian, "AEGD: Adaptive Gradient Descent with Energy", 2020 (arXiv:2010.05109).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.AEGD(lr=0.1))
        opt.step(closure)  # or opt.step(loss=loss) after loss.backward()
        ```
    """

    _readonly_input = True

    def __init__(self, lr: float = 0.1, c: float = 1):
        check_non_negative("AEGD", "lr", lr)
        check_range("AEGD", "c", c)
        super().__init__(dict(lr=lr, c=c), uses_loss=True)

    def step(self, var: Var) -> Var:
        if var.loss is None and var.closure is None:
            raise RuntimeError("AEGD requires the loss: call `opt.step(closure)`, or `opt.step(loss=loss)` after "
                               "`loss.backward()`.")
        return super().step(var)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        if loss is None:
            raise RuntimeError("AEGD requires the loss: call `opt.step(closure)` or `opt.step(loss=loss)`.")
        f = float(loss)
        lr, c = (scalar_or_list(v) for v in self.unpack_settings(settings, "lr", "c"))
        f_plus_c = combine(f, c, lambda a, b: a + b)
        for v in f_plus_c if isinstance(f_plus_c, list) else [f_plus_c]:
            if not v > 0:
                raise ValueError(f"AEGD: the energy needs f + c > 0, got f = {f}, f + c = {v}; increase `c`")
        if "r" not in states[0]:
            roots = f_plus_c if isinstance(f_plus_c, list) else [f_plus_c] * len(tensors)
            for s, t, v in zip(states, tensors, roots):
                s["r"] = torch.full_like(t, math.sqrt(v))
        return aegd_step_(tensors, [s["r"] for s in states], f_plus_c, lr)
