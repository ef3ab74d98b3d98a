"""Adaptive heavy-ball method with Polyak step sizes (Goujaud, Taylor, Dieuleveut)."""
from __future__ import annotations

import math

import torch

from ...core import Transform, Var
from ...utils.checks import check_range
from ...utils.tensorlist import TensorList


class AdaptiveHeavyBall(Transform):
    """Heavy-ball method whose step size and momentum are derived from the loss gap ``f − f*`` (Polyak-type).

    All inner products are global (all parameters as one vector). With ``a = f − f*``:

    - first step: output ``h·u`` with ``h = 2a/‖u‖²``; stores ``'p_prev'`` (= x), ``'g_prev'`` (= u) and the global
      ``'f_prev'``;
    - later, with ``b = f_prev − f*``: ``μ = −a⟨u, g_prev⟩ / (b‖u‖² + a⟨u, g_prev⟩)``, output
      ``(1 + μ)·h·u − μ·(x − p_prev)``, i.e. ``x⁺ = x − (1 + μ)h·u + μ(x − p_prev)``; then f, x and u are stored.

    If ``a ≤ 2·tiny(dtype)`` (at or below the known minimum), or ``u = 0``, or a quantity is not finite, it returns
    ``u`` unchanged and leaves the state alone. If the denominator of μ is 0, ``μ = 0`` (a plain Polyak step). The
    step is fully determined: do not add ``LR``. On a strongly convex quadratic in dimension n it behaves like
    conjugate gradient (the minimum is reached after about n steps). It is meant for deterministic,
    (near-)quadratic problems with a known minimum value ``f_star``. The loss and two inner products are read as
    Python numbers (one device synchronisation per step); ``f_star`` is global (first parameter's setting).

    Args:
        f_star: the minimal value of the objective. Defaults to 0.

    Reference:
        B. Goujaud, A. Taylor, A. Dieuleveut, "Quadratic minimization: from conjugate gradient to an adaptive
        Heavy-ball method with Polyak step-sizes", Open Journal of Mathematical Optimization 5, 2024
        (arXiv:2210.06367).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.AdaptiveHeavyBall(f_star=0))
        opt.step(closure)
        ```
    """

    def __init__(self, f_star: float = 0):
        check_range("AdaptiveHeavyBall", "f_star", f_star)
        super().__init__(dict(f_star=f_star), uses_loss=True)

    def step(self, var: Var) -> Var:
        if var.loss is None and var.closure is None:
            raise RuntimeError("AdaptiveHeavyBall requires the loss: call `opt.step(closure)`, or "
                               "`opt.step(loss=loss)` after `loss.backward()`.")
        return super().step(var)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        if loss is None:
            raise RuntimeError("AdaptiveHeavyBall requires the loss: call `opt.step(closure)`.")
        f = float(loss)
        a = f - settings[0]["f_star"]
        u = TensorList(tensors)
        first = "g_prev" not in states[0]
        if first:
            uu = float(u.global_vector_norm(2)) ** 2
            ug = 0.0
        else:
            g_prev = [s["g_prev"] for s in states]
            uu, ug = torch.stack([u.global_vector_norm(2).square(), u.dot(g_prev).to(tensors[0].dtype)]).tolist()
        tiny = torch.finfo(tensors[0].dtype).tiny
        if not (a > 2 * tiny and uu > 0 and math.isfinite(a) and math.isfinite(uu) and math.isfinite(ug)):
            return tensors

        h = 2 * a / uu
        if first:
            for s, t, p in zip(states, tensors, params):
                s["p_prev"] = p.clone()
                s["g_prev"] = t.clone()
            self.global_state["f_prev"] = f
            torch._foreach_mul_(tensors, h)
            return tensors

        b = self.global_state["f_prev"] - settings[0]["f_star"]
        den = b * uu + a * ug
        mu = -a * ug / den if den != 0 else 0.0
        p_prev = [s["p_prev"] for s in states]
        torch._foreach_copy_(g_prev, tensors)
        torch._foreach_mul_(tensors, (1 + mu) * h)
        torch._foreach_sub_(p_prev, params)  # p_prev - x
        torch._foreach_add_(tensors, p_prev, alpha=mu)  # - mu (x - p_prev)
        torch._foreach_copy_(p_prev, params)
        self.global_state["f_prev"] = f
        return tensors
