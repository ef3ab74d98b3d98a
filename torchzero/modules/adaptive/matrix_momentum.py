"""Matrix momentum (Orr and Leen): momentum whose coefficient is the matrix ``I − μH``."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ...core import Chainable, Module, Var, apply_transform
from ...utils.checks import check_bool, check_int, check_range
from ...utils.foreach import Scalars, add_scaled_, scalar_or_list, scale_
from ...utils.tensorlist import TensorList
from .adahessian import HvpMethod, check_hvp_args, release_grad_graph_


def first_step_safety_factor(step: Sequence[torch.Tensor]) -> torch.Tensor:
    """``clamp(1/Σ|d|, min=ε/max|d|, max=1)`` with ``ε = max(1e-7, machine eps)``, all tensors as one vector
    (1 when ``ε/max|d| ≥ 1``): scales a first step without history down to an L1 norm of at most 1, but not below
    a largest element of ``ε``. A 0-d tensor (no host sync)."""
    tl = TensorList(step)
    eps = max(1e-7, torch.finfo(step[0].dtype).eps)
    return torch.maximum(1 / tl.global_vector_norm(1), eps / tl.global_vector_norm(math.inf)).clamp(max=1)


def matrix_momentum_step_(update_: list[torch.Tensor], s: Sequence[torch.Tensor], Hs: Sequence[torch.Tensor],
                          lr: Scalars, mu: Scalars, mu_mul: torch.Tensor | None = None) -> list[torch.Tensor]:
    """``lr·u − s + μ·Hs`` in place of ``update_`` (``μ`` times ``mu_mul`` when given), so that subtracting it gives
    ``x⁺ = x + (I − μH)(x − x_prev) − lr·u``."""
    scale_(update_, lr)
    torch._foreach_sub_(update_, s)
    if mu_mul is None:
        add_scaled_(update_, Hs, mu)
    else:
        mu_Hs = torch._foreach_mul(Hs, mu_mul)
        if isinstance(mu, list) or mu != 1:
            torch._foreach_mul_(mu_Hs, mu)
        torch._foreach_add_(update_, mu_Hs)
    return update_


def adapt_mu_mul(s: Sequence[torch.Tensor], y: Sequence[torch.Tensor], previous: torch.Tensor | None
                 ) -> torch.Tensor:
    """``‖s‖/‖y‖`` (global norms); where that is not finite (``y = 0``, or both zero) the previous multiplier
    is kept (1 at first)."""
    ratio = TensorList(s).global_vector_norm() / TensorList(y).global_vector_norm()
    if previous is None:
        previous = torch.ones_like(ratio)
    return torch.where(torch.isfinite(ratio), ratio, previous)


def grad_at(closure: Callable, params: list[torch.Tensor], point: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Gradient at ``point`` (one ``closure()`` call with backward). The parameters are moved there and restored
    bit-exactly by copying their values back; ``p.grad`` is restored to the tensors it held before (which the
    closure cannot zero in place, as ``p.grad`` is cleared before the call)."""
    saved = [p.detach().clone() for p in params]
    old_grads = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        with torch.no_grad():
            torch._foreach_copy_(params, list(point))
        with torch.enable_grad():
            closure()
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, saved)
        for p, g in zip(params, old_grads):
            p.grad = g


class MatrixMomentum(Module):
    """Orr–Leen matrix momentum: heavy-ball momentum with the matrix coefficient ``I − μH``.

    ``x⁺ = x + (I − μH)(x − x_prev) − lr·u``.

    Update phase (every step, with ``t`` the 1-based step count, global ``'step'``): from ``t = 2`` on,
    ``s = x − p_prev`` (``'s'``; ``'p_prev'`` holds the previous parameters) and ``Hs`` (``'Hs'``), the
    Hessian-vector product at ``x`` by ``hvp_method``, passed through ``hvp_tfm`` if given; then ``p_prev ← x``.
    Apply phase: at ``t = 1`` the output is ``lr·u`` times ``clamp(1/Σ|lr·u|, min=ε/max|lr·u|, max=1)``
    (``ε = max(1e-7, machine eps)``, sums and maxima over all parameters as one vector); later it is
    ``lr·u − s + μ·Hs``.

    ``adaptive=True`` multiplies μ by ``‖s‖/‖y‖`` (global ``'mu_mul'``, kept when the ratio is not finite). With
    ``adapt_freq=None``, ``y = g − g_prev`` for consecutive raw gradients (``'g_prev'``), every step from
    ``t = 2``. With ``adapt_freq=k`` the closure is re-evaluated at ``p_prev`` on the current batch and
    ``y = g(x) − g(p_prev)``, at ``t = 2, 2 + k, 2 + 2k, …`` (the multiplier is kept in between).

    μ should stay below ``1/λ_max(H)``. The step size is built in (``lr``, a per-parameter setting that schedulers
    change): do not add ``LR``. Non-finite values are not masked.

    Args:
        lr: step size of the gradient term.
        mu: curvature coefficient μ. Defaults to 0.1.
        hvp_method: ``'autograd'``, ``'forward'`` or ``'central'``. Defaults to ``'autograd'``.
        h: finite-difference step. Defaults to 1e-3.
        adaptive: scale μ by ``‖s‖/‖y‖``. Defaults to False.
        adapt_freq: with ``adaptive``, re-evaluate the gradient at ``p_prev`` every this many steps instead of
            using consecutive gradients. Defaults to None.
        hvp_tfm: modules applied to ``Hs``. Defaults to None.

    Reference:
        G. Orr, T. Leen, "Using curvature information for fast stochastic search", NIPS 9 (1996).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.MatrixMomentum(lr=1e-2, mu=1e-2))
        opt.step(closure)  # closure(backward=True) is required
        ```
    """

    def __init__(self, lr: float, mu: float = 0.1, hvp_method: HvpMethod = "autograd", h: float = 0.001,
                 adaptive: bool = False, adapt_freq: int | None = None, hvp_tfm: Chainable | None = None):
        name = type(self).__name__
        check_range(name, "lr", lr, low=0)
        check_range(name, "mu", mu, low=0)
        check_hvp_args(name, hvp_method, h, "h")
        check_bool(name, "adaptive", adaptive)
        if adapt_freq is not None:
            check_int(name, "adapt_freq", adapt_freq)
        defaults = dict(lr=lr, mu=mu, hvp_method=hvp_method, h=h, adaptive=adaptive, adapt_freq=adapt_freq)
        super().__init__(defaults)
        if hvp_tfm is not None:
            self.set_child("hvp_tfm", hvp_tfm)

    @torch.no_grad()
    def update(self, var: Var) -> None:
        closure = self._require_closure(var)
        params = var.params
        s0 = self.settings[params[0]]
        t = self.global_state.get("step", 0) + 1
        self.global_state["step"] = t
        states = [self.state[p] for p in params]
        adaptive, adapt_freq = s0["adaptive"], s0["adapt_freq"]

        if "p_prev" not in states[0]:  # first step: nothing to multiply by H yet
            for st, p in zip(states, params):
                st["p_prev"] = p.detach().clone()
            if adaptive and adapt_freq is None:
                for st, g in zip(states, var.get_grad()):
                    st["g_prev"] = g.clone()
            return

        p_prev = [st["p_prev"] for st in states]
        s = list(torch._foreach_sub(params, p_prev))
        Hs, _ = self.Hvp(s, at_x0=True, var=var, rgrad=None, hvp_method=s0["hvp_method"], h=s0["h"],
                         normalize=True, retain_grad=False)
        release_grad_graph_(var)
        Hs = list(Hs)
        hvp_tfm = self.children.get("hvp_tfm")
        if hvp_tfm is not None:
            Hs = apply_transform(hvp_tfm, Hs, params=params, grads=var.grad, loss=var.loss, var=var)
        self.store(params, ["s", "Hs"], [s, Hs])

        if adaptive:
            y = None
            if adapt_freq is None:
                g = var.get_grad()
                g_prev = [st["g_prev"] for st in states]
                y = torch._foreach_sub(g, g_prev)
                torch._foreach_copy_(g_prev, g)
            elif (t - 2) % adapt_freq == 0:
                y = torch._foreach_sub(var.get_grad(), grad_at(closure, params, p_prev))
            if y is not None:
                self.global_state["mu_mul"] = adapt_mu_mul(s, y, self.global_state.get("mu_mul"))

        torch._foreach_copy_(p_prev, params)

    @torch.no_grad()
    def apply(self, var: Var) -> Var:
        params = var.params
        update = var.get_update()
        lr, mu = self.get_settings(params, "lr", "mu")
        states = [self.state[p] for p in params]
        if "s" not in states[0]:  # first step
            scale_(update, scalar_or_list(lr))
            torch._foreach_mul_(update, first_step_safety_factor(update))
            var.update = update
            return var
        mu_mul = self.global_state.get("mu_mul") if self.settings[params[0]]["adaptive"] else None
        var.update = matrix_momentum_step_(update, [st["s"] for st in states], [st["Hs"] for st in states],
                                           scalar_or_list(lr), scalar_or_list(mu), mu_mul)
        return var
