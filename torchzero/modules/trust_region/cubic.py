"""Cubic regularization of Newton's method (adaptive regularization with cubics)."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

from ...core import Chainable
from ...utils.checks import check_bool, check_int, check_range
from ...utils.linalg.linear_operator import Diagonal, LinearOperator, ScaledIdentity
from .trust_region import RadiusStrategy, TrustRegionBase, _float, trial_loss


def symmetric_eig(H: LinearOperator, n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Eigenvalues ``λ`` and eigenvectors ``Q`` of the symmetric part of ``H`` (``Q`` None for diagonal operators,
    whose eigenvectors are the coordinate axes). None when the decomposition fails (e.g. non-finite entries)."""
    if isinstance(H, ScaledIdentity):
        return torch.ones(n, device=like.device, dtype=like.dtype) * H.s, None
    if isinstance(H, Diagonal):
        return H.x.to(like), None
    A = H.to_tensor().to(like)
    A = (A + A.mT) / 2
    if not bool(torch.isfinite(A).all()):
        return None
    try:
        lam, Q = torch.linalg.eigh(A)
    except torch.linalg.LinAlgError:
        return None
    return lam, Q


def cauchy_radius(g_norm: float, kappa: float, M: float) -> float:
    """Length of the cubic Cauchy point, the minimiser of the cubic model along ``−g``:
    ``R = −κ/(2M) + sqrt(κ²/(4M²) + ‖g‖/M)`` with ``κ = ĝᵀHĝ`` for ``ĝ = g/‖g‖`` (Carmon & Duchi). A lower bound
    on the length of the global minimiser."""
    a = kappa / (2 * M)
    root = math.sqrt(a * a + g_norm / M)
    if a > 0:  # avoid cancellation
        return (g_norm / M) / (a + root)
    return root - a


def cubic_subproblem_eig(g_hat: torch.Tensor, lam: torch.Tensor, M: float, eps: float, maxiter: int,
                         sigma0: float | None = None) -> torch.Tensor:
    """Global minimiser of ``ĝᵀs + ½ sᵀdiag(λ)s + (M/3)‖s‖³`` (the cubic model in the eigenbasis of ``H``),
    returned negated, ``u = −s`` (a step to subtract).

    The minimiser satisfies ``(diag(λ) + σI)s = −ĝ`` with ``σ = M‖s‖ ≥ max(0, −λ_min)``. ``σ`` is found by
    Newton's method on ``φ(σ) = 1/‖s(σ)‖ − M/σ`` (increasing and concave, so iterates from the left converge
    monotonically), safeguarded by bisection inside the bracket ``(max(0, −λ_min), σ_hi]``, where
    ``σ_hi = (−λ_min + sqrt(λ_min² + 4M‖g‖))/2`` satisfies ``‖s(σ_hi)‖ ≤ σ_hi/M``. It stops when ``|φ| < eps``,
    when the bracket has shrunk to rounding level, or after ``maxiter`` iterations. The hard case (``ĝ`` orthogonal
    to the eigenvectors of a negative ``λ_min``, so that no root exists above ``−λ_min``) is solved exactly by
    adding the component along such an eigenvector that brings ``‖s‖`` to ``σ/M``; in particular at a saddle point
    (``ĝ = 0``) the step follows the most negative curvature. ``sigma0`` is an optional starting point.
    """
    finfo = torch.finfo(lam.dtype)
    g_norm = _float(torch.linalg.vector_norm(g_hat))
    lam_min = _float(lam.min())
    lam_scale = max(_float(lam.abs().max()), finfo.tiny)
    sigma_low = max(0.0, -lam_min)

    if lam_min < 0:
        # hard case: no component of g along the eigenvectors of the smallest eigenvalue, and ‖s(σ_low)‖ ≤ σ_low/M
        near = (lam - lam_min) <= 16 * finfo.eps * lam_scale
        if _float(g_hat[near].abs().max()) <= 16 * finfo.eps * max(g_norm, finfo.tiny):
            rest = ~near
            u = torch.zeros_like(g_hat)
            u[rest] = g_hat[rest] / (lam[rest] + sigma_low)
            u_norm = _float(torch.linalg.vector_norm(u))
            target = sigma_low / M
            if u_norm <= target:
                idx = int(torch.nonzero(near)[0])
                u[idx] = math.sqrt(max(target * target - u_norm * u_norm, 0.0))
                return u
    if g_norm == 0:
        return torch.zeros_like(g_hat)

    # upper end of the bracket: ‖s(σ)‖ ≤ ‖g‖/(λ_min + σ) ≤ σ/M
    disc = math.sqrt(lam_min * lam_min + 4 * M * g_norm)
    sigma_hi = (-lam_min + disc) / 2 if lam_min <= 0 else 2 * M * g_norm / (lam_min + disc)
    lo, hi = sigma_low, max(sigma_hi, sigma_low)
    sigma = sigma0 if sigma0 is not None else 0.5 * (lo + hi)
    last = hi  # last point where φ was evaluated with a finite step; the upper end is safe (‖s‖ ≤ σ/M)
    for _ in range(maxiter):
        if not lo < sigma < hi:
            sigma = 0.5 * (lo + hi)
            if not lo < sigma < hi:  # the bracket has collapsed
                break
        denom = lam + sigma
        u = g_hat / denom
        u_norm = _float(torch.linalg.vector_norm(u))
        if math.isfinite(u_norm):
            last = sigma
        phi = 1 / u_norm - M / sigma
        if abs(phi) < eps:
            break
        if phi < 0:
            lo = sigma
        else:
            hi = sigma
        if hi - lo <= 4 * finfo.eps * hi:
            break
        dphi = _float((g_hat.square() / denom.pow(3)).sum()) / u_norm**3 + M / sigma**2
        sigma = sigma - phi / dphi
    return g_hat / (lam + last)


class CubicRegularization(TrustRegionBase):
    """Cubic regularization of Newton's method: each step minimises the cubic model
    ``m(s) = gᵀs + ½sᵀHs + (M/3)‖s‖³`` with ``M = 1/Δ`` adapted by the trust-region rule.

    The update (subtracted) is ``−s*``, where the global minimiser ``s*`` satisfies ``(H + M‖s*‖I)s* = −g`` and
    ``H + M‖s*‖I ⪰ 0`` (Nesterov & Polyak). Solver, on the eigendecomposition ``H = Q diag(λ) Qᵀ`` of the symmetric
    part of ``H`` (computed once per refresh of ``H`` and reused by every attempt; diagonal operators need none):

    - for positive definite ``H`` the Newton step ``s_N = −H⁻¹g`` is returned when ``‖s_N‖ − r_min < eps``
      (``r_min`` is the length of the cubic Cauchy point, a lower bound on ``‖s*‖``), or when ``check_decrease``
      and ``f(x + s_N) < f`` (one extra evaluation);
    - otherwise ``σ = M‖s‖`` is found by safeguarded Newton iterations on ``φ = 1/‖s‖ − 1/r`` (``r = σ/M``) inside a
      bracket, started from the Cauchy radius, for at most ``maxiter`` iterations or until ``|φ| < eps``;
    - indefinite ``H`` is handled: the root is searched above ``−λ_min``, and the hard case (``g`` orthogonal to the
      eigenvectors of ``λ_min < 0``) adds the eigenvector component exactly. At a saddle point (zero update) the
      step follows the most negative curvature, so this module does not stop at ``g = 0`` when ``H`` has a
      negative eigenvalue.

    ``Δ`` is multiplied by ``nminus``/``nplus`` by the radius rule (``radius_fn`` None); the predicted reduction of
    the rule is that of the quadratic part of the model. Memory ``O(n²)`` and an ``O(n³)`` eigendecomposition per
    refresh of a dense ``H``.

    Args:
        hess_module: curvature module with ``get_H`` (``Newton``, ``GaussNewton``, quasi-Newton modules...).
        eta: acceptance threshold on the reduction ratio. Defaults to 0.0.
        nplus: multiplier of ``Δ`` (``M`` divided) after a very good step. Defaults to 3.5.
        nminus: multiplier of ``Δ`` after a bad step. Defaults to 0.25.
        rho_good: ratio above which ``Δ`` grows. Defaults to 0.99.
        rho_bad: ratio below which ``Δ`` shrinks. Defaults to 1e-4.
        init: initial ``Δ`` (``M = 1/init``). Defaults to 1.
        max_attempts: attempts per step. Defaults to 10.
        radius_strategy: ``'default'``, ``'fixed'`` or a custom strategy. Defaults to ``'default'``.
        maxiter: maximum iterations of the root finder for ``‖s‖``. Defaults to 100.
        eps: tolerance on ``|φ|`` and on ``‖s_N‖ − r_min``. Defaults to 1e-8.
        check_decrease: return the Newton step whenever it decreases the loss (costs one evaluation per attempt).
            Defaults to False.
        update_freq: refresh ``H`` every this many steps. Defaults to 1.
        inner: modules applied to the update before the solve. Defaults to None.

    Reference:
        Yu. Nesterov, B. T. Polyak, "Cubic regularization of Newton method and its global performance", Math.
        Program. 108, 2006; C. Cartis, N. I. M. Gould, Ph. L. Toint, "Adaptive cubic regularisation methods for
        unconstrained optimization. Part I", Math. Program. 127, 2011; Y. Carmon, J. C. Duchi, "Gradient descent
        efficiently finds the cubic-regularized non-convex Newton step", arXiv:1612.00547 (Cauchy radius).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.CubicRegularization(tz.m.Newton()))
        ```
    """

    _zero_g_is_stationary = False

    def __init__(
        self,
        hess_module: Chainable,
        eta: float = 0.0,
        nplus: float = 3.5,
        nminus: float = 0.25,
        rho_good: float = 0.99,
        rho_bad: float = 0.0001,
        init: float = 1,
        max_attempts: int = 10,
        radius_strategy: RadiusStrategy | Literal["default", "fixed"] = "default",
        maxiter: int = 100,
        eps: float = 1e-08,
        check_decrease: bool = False,
        update_freq: int = 1,
        inner: Chainable | None = None,
    ):
        check_int("CubicRegularization", "maxiter", maxiter, 1)
        check_range("CubicRegularization", "eps", eps, 0)
        check_bool("CubicRegularization", "check_decrease", check_decrease)
        super().__init__(dict(maxiter=maxiter, eps=eps, check_decrease=check_decrease), hess_module, eta=eta,
                         nplus=nplus, nminus=nminus, rho_good=rho_good, rho_bad=rho_bad, boundary_tol=None,
                         init=init, max_attempts=max_attempts, radius_strategy=radius_strategy, radius_fn=None,
                         update_freq=update_freq, inner=inner)

    def trust_solve(self, f: float, g: torch.Tensor, H: LinearOperator, radius: float, params: list[torch.Tensor],
                    closure: Callable, settings: Mapping[str, Any]) -> torch.Tensor:
        eig = self._memoize("eig", (H,), lambda: symmetric_eig(H, g.numel(), g))
        if eig is None:
            return torch.full_like(g, math.nan)
        lam, Q = eig
        g_hat = g if Q is None else self._memoize("g_hat", (g, H), lambda: Q.mT @ g)
        M = 1 / radius
        eps = settings["eps"]

        g_norm = _float(torch.linalg.vector_norm(g_hat))
        sigma0 = None
        if g_norm > 0:
            kappa = _float((g_hat.square() * lam).sum()) / g_norm**2
            r_min = cauchy_radius(g_norm, kappa, M)
            sigma0 = M * r_min
            if _float(lam.min()) > 0:
                u_newton = g_hat / lam
                d_newton = u_newton if Q is None else Q @ u_newton
                if _float(torch.linalg.vector_norm(u_newton)) - r_min < eps:
                    return d_newton
                if settings["check_decrease"] and trial_loss(params, closure, d_newton) < f:
                    return d_newton

        u = cubic_subproblem_eig(g_hat, lam, M, eps=eps, maxiter=settings["maxiter"], sigma0=sigma0)
        return u if Q is None else Q @ u
