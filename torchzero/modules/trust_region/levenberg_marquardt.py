"""Levenberg–Marquardt: a trust region whose radius is the reciprocal of a damping term."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

from ...core import Chainable
from ...utils.checks import check_bool, check_range
from ...utils.linalg.linear_operator import (
    Dense,
    DenseInverse,
    DenseWithInverse,
    Diagonal,
    LinearOperator,
    ScaledIdentity,
)
from .trust_region import RadiusStrategy, TrustRegionBase, _float


def marquardt_diagonal(H: LinearOperator, y: float) -> torch.Tensor:
    """``D = y·diag(H) + (1 − y)`` with diagonal entries below ``2·tiny`` replaced by 1 (``y = 1``: Marquardt's
    scaling)."""
    dH = H.diagonal()
    dH = torch.where(dH < 2 * torch.finfo(dH.dtype).tiny, torch.ones_like(dH), dH)
    return dH * y + (1 - y)


def _positive_shift_start(diag: torch.Tensor, scale: float) -> tuple[float, float]:
    """Nocedal & Wright Alg. 3.3: the first shift ``τ₀`` (0 if the diagonal is positive) and the increment ``β``."""
    beta = 1e-3 * scale if scale > 0 and math.isfinite(scale) else 1e-3
    d_min = _float(diag.min())
    return (0.0 if d_min > 0 else beta - d_min), beta


def levenberg_marquardt_step(g: torch.Tensor, H: LinearOperator, radius: float,
                             D: torch.Tensor | None = None, max_shifts: int = 64) -> torch.Tensor:
    """The damped Newton step ``(H + D/Δ + τI)⁻¹ g`` (``D = I`` when None), to be subtracted.

    ``τ = 0`` when ``A = H + D/Δ`` is positive definite, which is always the case for a positive semi-definite
    ``H`` (Gauss–Newton). Otherwise ``τ`` is the first of ``τ₀, 2τ₀, 4τ₀...`` for which the Cholesky factorisation
    succeeds (Nocedal & Wright Alg. 3.3, Cholesky with added multiple of the identity; ``β = 10⁻³·max|Aᵢⱼ|``), so the
    step always minimises a convex model and the predicted reduction is positive. A matrix with non-finite entries
    (or one that stays indefinite after ``max_shifts`` doublings) gives a NaN step.
    """
    A = H.add_diagonal(1 / radius if D is None else D / radius)
    if isinstance(A, (ScaledIdentity, Diagonal)):
        diag = A.x if isinstance(A, Diagonal) else torch.full_like(g, float(A.s))
        scale = _float(diag.abs().max())
        tau, _ = _positive_shift_start(diag, scale)
        return g / (diag + tau)

    M = A.to_tensor()
    L, info = torch.linalg.cholesky_ex(M)
    if int(info) != 0:
        if not bool(torch.isfinite(M).all()):
            return torch.full_like(g, math.nan)
        scale = _float(M.abs().max())
        tau, beta = _positive_shift_start(M.diagonal(), scale)
        eye = torch.eye(M.shape[0], device=M.device, dtype=M.dtype)
        for _ in range(max_shifts):
            L, info = torch.linalg.cholesky_ex(M + tau * eye)
            if int(info) == 0:
                break
            tau = max(2 * tau, beta)
        else:
            return torch.full_like(g, math.nan)
    return torch.cholesky_solve(g.unsqueeze(-1), L).squeeze(-1)


_CHEAP_DIAGONAL_SHIFT = (Dense, DenseWithInverse, Diagonal, ScaledIdentity)
"""Operators whose ``add_diagonal`` is cheap; anything else is densified once per step and reused by all attempts."""


class LevenbergMarquardt(TrustRegionBase):
    """Levenberg–Marquardt: the damped Newton step ``(H + D/Δ)⁻¹ g`` with the damping adapted by the trust-region
    rule.

    ``Δ`` acts as an inverse damping: ``D = I`` when ``y == 0``, otherwise ``D = y·diag(H) + (1 − y)·I``
    (diagonal entries of ``H`` below ``2·tiny`` replaced by 1; ``y = 1`` is Marquardt's scaling, meant for
    ``GaussNewton``). The system is solved by Cholesky; when ``H + D/Δ`` is not positive definite (an indefinite
    Newton or SR1 Hessian) a multiple of the identity is added until it is (Nocedal & Wright Alg. 3.3), so every step
    minimises a convex model (with a plain solve, an indefinite system gives steps towards saddle points or maxima
    whose negative predicted reduction makes the ratio meaningless). A rejected step multiplies ``Δ`` by ``nminus`` (more damping), a very good one by ``nplus``
    (``radius_fn`` is None, so the radius itself is multiplied and ``boundary_tol`` is not used). For an ``H`` that
    only keeps an inverse (``DenseInverse``, quasi-Newton modules with ``inverse=True``) the module raises unless
    ``fallback=True``, in which case the inverse is inverted once per step. Matrix-free operators (``AtA`` from
    ``GaussNewton``, limited-memory ones) are densified once per step and reused by every attempt.

    Args:
        hess_module: curvature module with ``get_H`` (``GaussNewton``, ``Newton``, ``BFGS(inverse=False)``...).
        eta: acceptance threshold on the reduction ratio. Defaults to 0.0.
        nplus: multiplier of ``Δ`` (damping divided) after a very good step. Defaults to 3.5.
        nminus: multiplier of ``Δ`` (damping multiplied by its inverse) after a bad step. Defaults to 0.25.
        rho_good: ratio above which ``Δ`` grows. Defaults to 0.99.
        rho_bad: ratio below which ``Δ`` shrinks. Defaults to 1e-4.
        init: initial ``Δ`` (damping ``1/init``). Defaults to 1.
        max_attempts: attempts per step. Defaults to 10.
        radius_strategy: ``'default'``, ``'fixed'`` (constant damping ``1/init``) or a custom strategy. Defaults to
            ``'default'``.
        y: Marquardt scaling weight in ``[0, 1]``. Defaults to 0.
        fallback: invert an inverse-only ``H`` instead of raising. Defaults to False.
        update_freq: refresh ``H`` every this many steps. Defaults to 1.
        inner: modules applied to the update before the solve. Defaults to None.

    Reference:
        K. Levenberg, "A method for the solution of certain non-linear problems in least squares", Quart. Appl.
        Math. 2, 1944; D. W. Marquardt, "An algorithm for least-squares estimation of nonlinear parameters",
        SIAM J. Appl. Math. 11(2), 1963; J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., §10.3.

    Example:
        Nonlinear least squares with a closure that returns the residual vector:

        ```python
        opt = tz.Modular(model.parameters(), tz.m.LevenbergMarquardt(tz.m.GaussNewton(), y=1))

        def closure(backward=True):
            return model(inputs) - targets  # residuals; GaussNewton never calls backward on them

        for _ in range(20):
            opt.step(closure)
        ```
    """

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
        y: float = 0,
        fallback: bool = False,
        update_freq: int = 1,
        inner: Chainable | None = None,
    ):
        check_range("LevenbergMarquardt", "y", y, 0, 1)
        check_bool("LevenbergMarquardt", "fallback", fallback)
        super().__init__(dict(y=y, fallback=fallback), hess_module, eta=eta, nplus=nplus, nminus=nminus,
                         rho_good=rho_good, rho_bad=rho_bad, boundary_tol=None, init=init,
                         max_attempts=max_attempts, radius_strategy=radius_strategy, radius_fn=None,
                         update_freq=update_freq, inner=inner)

    def _prepared(self, H: LinearOperator, y: float, fallback: bool) -> tuple[LinearOperator, torch.Tensor | None]:
        if isinstance(H, DenseInverse):
            if not fallback:
                raise TypeError("LevenbergMarquardt: hess_module only provides an inverse Hessian (DenseInverse, e.g. "
                                "a quasi-Newton module with inverse=True); use inverse=False, or fallback=True to "
                                "invert it")
            H = Dense(H.to_tensor())
        elif not isinstance(H, _CHEAP_DIAGONAL_SHIFT):
            H = Dense(H.to_tensor())
        D = None if y == 0 else marquardt_diagonal(H, y)
        return H, D

    def trust_solve(self, f: float, g: torch.Tensor, H: LinearOperator, radius: float, params: list[torch.Tensor],
                    closure: Callable, settings: Mapping[str, Any]) -> torch.Tensor:
        y, fallback = settings["y"], settings["fallback"]
        H_, D = self._memoize("H", (H, y, fallback), lambda: self._prepared(H, y, fallback))
        return levenberg_marquardt_step(g, H_, radius, D)
