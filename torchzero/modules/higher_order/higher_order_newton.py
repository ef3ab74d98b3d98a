"""Higher-order Newton: minimize the order-``k`` Taylor model of the objective in a trust region."""
from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from ...core import Module, Var
from ...utils.checks import check_bool, check_choice, check_int, check_non_negative, check_positive, check_range
from ...utils.derivatives import flatten_jacobian, jacobian_wrt
from ...utils.torch_tools import vec_to_tensors


def derivatives_up_to(closure: Any, params: list[torch.Tensor], order: int, vectorize: bool = True
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``f(x)`` and the derivatives ``[∇f, ∇²f, …]`` up to ``order`` at the current parameters (the ``k``-th an
    ``n^k`` tensor over the flattened parameters), each the (vmap-batched when ``vectorize``) Jacobian of the
    previous one. All detached; ``p.grad`` is not touched."""
    n = sum(p.numel() for p in params)
    with torch.enable_grad():
        loss = closure(False)
        grads = torch.autograd.grad(loss, params, create_graph=order > 1, allow_unused=True)
        T = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])
        derivs = [T]
        for k in range(2, order + 1):
            T = flatten_jacobian(jacobian_wrt(T.reshape(-1), params, create_graph=k < order, batched=vectorize))
            derivs.append(T.reshape((n,) * k))
    return loss.detach(), [d.detach() for d in derivs]


class TaylorModel:
    """``m(s) = f₀ + Σₖ (1/k!)·Tₖ[s,…,s]`` with its gradient and Hessian, in float64 NumPy (for SciPy).

    Derivative tensors are symmetric, so ``∇m(s) = Σₖ Tₖ[s^{k−1}, ·]/(k−1)!`` and
    ``∇²m(s) = Σₖ Tₖ[s^{k−2}, ·, ·]/(k−2)!``.
    """

    def __init__(self, f0: float, derivs: list[torch.Tensor]):
        self.f0 = f0
        self.T = [d.detach().to(torch.float64).cpu().numpy() for d in derivs]
        self.n = self.T[0].shape[0]

    def _parts(self, s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        value, grad, hess = self.f0, np.zeros(self.n), np.zeros((self.n, self.n))
        for k, T in enumerate(self.T, start=1):
            if k == 1:
                value += float(T @ s)
                grad += T
                continue
            M = T
            for _ in range(k - 2):
                M = M @ s
            Ms = M @ s
            value += float(Ms @ s) / math.factorial(k)
            grad += Ms / math.factorial(k - 1)
            hess += M / math.factorial(k - 2)
        return value, grad, hess

    def value(self, s: np.ndarray) -> float:
        return self._parts(s)[0]

    def grad(self, s: np.ndarray) -> np.ndarray:
        return self._parts(s)[1]

    def hess(self, s: np.ndarray) -> np.ndarray:
        return self._parts(s)[2]


class HigherOrderNewton(Module):
    r"""Higher-order Newton: minimizes the order-``order`` Taylor model of the objective in a trust region.

    All derivatives up to ``order`` are computed at ``x₀`` by repeated (batched) Jacobians (the ``k``-th is an
    ``n^k`` tensor) and the model ``m(s) = f₀ + Σₖ (1/k!)·Tₖ[s,…,s]`` is minimized over ``s`` in float64 with SciPy,
    using its analytic gradient and Hessian:

    - ``trust_method='bounds'``: ``minimize(method='trust-constr')`` subject to ``‖s‖² ≤ Δ²`` (``'SLSQP'`` for
      ``order == 1``);
    - ``'proximal'``: ``m(s) + ‖s‖²/(2Δ)`` by ``'trust-exact'``;
    - ``'none'`` or None: ``m`` by ``'trust-exact'``, the step always accepted (for ``order ≥ 3`` the model can be
      unbounded below, so this is only sensible close to a minimum).

    With ``de_iters`` (not None/0), ``differential_evolution`` first searches the box ``±Δ`` (``±10`` without a
    trust region; ``de_iters = -1`` lets SciPy choose ``maxiter``) and the local solve starts from its result when
    that improves the model.

    Radius rule: ``ρ = (f₀ − f(x*)) / max(f₀ − m(x*), 1e-8)``; ``ρ < rho_bad`` → ``Δ·nminus``; ``ρ > rho_good`` and
    (proximal, or ``(Δ − ‖s‖)/Δ ≤ boundary_tol``) → ``Δ·nplus``; the step is accepted if ``ρ > eta``, at most
    ``max_attempts`` tries, else the update is zero. A radius outside ``[2·tiny, max/(2·nplus)]`` is reset to
    ``init``. The update is ``x₀ − x* = −s``. State: ``global_state['trust_region']`` (the radius).

    Non-finite values: non-finite derivatives give a zero update (the radius is kept); a non-finite trial loss
    counts as a failed attempt.

    Args:
        order: highest derivative order (``O(n^order)`` memory). Defaults to 4.
        trust_method: ``'bounds'``, ``'proximal'``, ``'none'`` or None. Defaults to ``'bounds'``.
        nplus: radius growth factor. Defaults to 3.5.
        nminus: radius shrink factor. Defaults to 0.25.
        rho_good: ``ρ`` above which the radius may grow. Defaults to 0.99.
        rho_bad: ``ρ`` below which the radius shrinks. Defaults to 1e-4.
        init: initial radius (None: 1 for ``'bounds'``, 0.1 otherwise). Defaults to None.
        eta: acceptance threshold on ``ρ``. Defaults to 1e-6.
        max_attempts: attempts per step. Defaults to 10.
        boundary_tol: relative distance to the boundary counted as "on the boundary". Defaults to 0.01.
        de_iters: differential evolution iterations before the local solve (None/0: none). Defaults to None.
        vectorize: batch the derivative Jacobians with vmap. Defaults to True.

    Reference:
        no single source; related to tensor methods, Y. Nesterov, "Implementable tensor methods in unconstrained
        convex optimization", Math. Program. 186, 2021.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.HigherOrderNewton(order=3))
        opt.step(closure)  # closure(backward=True) is required
        ```
    """

    def __init__(self, order: int = 4, trust_method: Literal["bounds", "proximal", "none"] | None = "bounds",
                 nplus: float = 3.5, nminus: float = 0.25, rho_good: float = 0.99, rho_bad: float = 0.0001,
                 init: float | None = None, eta: float = 1e-06, max_attempts: int = 10, boundary_tol: float = 0.01,
                 de_iters: int | None = None, vectorize: bool = True):
        name = type(self).__name__
        check_int(name, "order", order)
        check_choice(name, "trust_method", trust_method, ("bounds", "proximal", "none", None))
        check_range(name, "nplus", nplus, low=1)
        check_range(name, "nminus", nminus, 0, 1, low_inclusive=False, high_inclusive=False)
        check_range(name, "rho_good", rho_good)
        check_range(name, "rho_bad", rho_bad)
        if init is not None:
            check_positive(name, "init", init)
        check_range(name, "eta", eta)
        check_int(name, "max_attempts", max_attempts)
        check_non_negative(name, "boundary_tol", boundary_tol)
        if de_iters is not None:
            check_int(name, "de_iters", de_iters, low=-1)
        check_bool(name, "vectorize", vectorize)
        if init is None:
            init = 1.0 if trust_method == "bounds" else 0.1
        super().__init__(dict(order=order, trust_method=trust_method, nplus=nplus, nminus=nminus, rho_good=rho_good,
                              rho_bad=rho_bad, init=init, eta=eta, max_attempts=max_attempts,
                              boundary_tol=boundary_tol, de_iters=de_iters, vectorize=vectorize))

    def _minimize(self, model: TaylorModel, radius: float) -> np.ndarray:
        import scipy.optimize as sopt

        s = self.defaults
        method = s["trust_method"]
        n = model.n
        fun, jac, hess = model.value, model.grad, model.hess
        if method == "proximal":
            def fun(v):
                return model.value(v) + v @ v / (2 * radius)

            def jac(v):
                return model.grad(v) + v / radius

            def hess(v):
                return model.hess(v) + np.eye(n) / radius

        x0 = np.zeros(n)
        if s["de_iters"]:
            half = radius if method in ("bounds", "proximal") else 10.0
            kwargs = {} if s["de_iters"] == -1 else {"maxiter": s["de_iters"]}
            de = sopt.differential_evolution(fun, [(-half, half)] * n, seed=0, **kwargs)
            if de.fun < fun(x0):
                x0 = de.x

        if method == "bounds":
            if s["order"] == 1:
                cons = {"type": "ineq", "fun": lambda v: radius**2 - v @ v, "jac": lambda v: -2 * v}
                return sopt.minimize(fun, x0, jac=jac, method="SLSQP", constraints=[cons]).x
            cons = sopt.NonlinearConstraint(lambda v: v @ v, -np.inf, radius**2, jac=lambda v: 2 * v[None],
                                            hess=lambda v, w: 2 * w[0] * np.eye(n))
            return sopt.minimize(fun, x0, jac=jac, hess=hess, method="trust-constr", constraints=[cons]).x
        return sopt.minimize(fun, x0, jac=jac, hess=hess, method="trust-exact").x

    @torch.no_grad()
    def _loss_at(self, closure: Any, params: list[torch.Tensor], step: torch.Tensor) -> float:
        saved = [p.clone() for p in params]
        try:
            torch._foreach_add_(params, vec_to_tensors(step, params))
            loss = closure(False)
        finally:
            torch._foreach_copy_(params, saved)
        return float(loss)

    def step(self, var: Var) -> Var:
        closure = self._require_closure(var)
        params = var.params
        s = self.defaults
        ref = params[0]
        finfo = torch.finfo(ref.dtype)
        loss, derivs = derivatives_up_to(closure, params, s["order"], s["vectorize"])
        if var.loss is None:
            var.loss = var.loss_approx = loss
        if var.grad is None:
            var.grad = vec_to_tensors(derivs[0], params)

        zero = [torch.zeros_like(p) for p in params]
        f0 = float(loss)
        if not (math.isfinite(f0) and all(bool(torch.isfinite(d).all()) for d in derivs)):
            var.update = zero
            return var

        model = TaylorModel(f0, derivs)
        gs = self.global_state
        radius = gs.get("trust_region", s["init"])
        method = s["trust_method"]
        update = zero
        for _ in range(s["max_attempts"]):
            step = self._minimize(model, radius)
            step_t = torch.as_tensor(step, dtype=ref.dtype, device=ref.device)
            if method in ("none", None):
                update = vec_to_tensors(-step_t, params)
                break
            f_new = self._loss_at(closure, params, step_t)
            pred = f0 - model.value(step)
            rho = (f0 - f_new) / max(pred, 1e-8) if math.isfinite(f_new) else -math.inf
            step_norm = float(np.linalg.norm(step))
            if rho < s["rho_bad"]:
                radius *= s["nminus"]
            elif rho > s["rho_good"] and (method == "proximal" or (radius - step_norm) / radius <= s["boundary_tol"]):
                radius *= s["nplus"]
            if not 2 * finfo.tiny <= radius <= finfo.max / (2 * s["nplus"]):
                radius = s["init"]
            if rho > s["eta"]:
                update = vec_to_tensors(-step_t, params)
                break
        gs["trust_region"] = radius
        var.update = update
        return var
