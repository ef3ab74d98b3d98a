"""Trust region with the Steihaug–Toint conjugate gradient subproblem solver."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

from ...core import Chainable
from ...utils.checks import check_bool, check_int, check_range
from ...utils.linalg.linear_operator import Dense, DenseWithInverse, LinearOperator, ScaledIdentity
from ...utils.linalg.solve import cg, find_within_trust_radius
from .trust_region import RadiusStrategy, TrustRegionBase, _float, newton_point

_MAX_HISTORY = 100
"""At most this many CG iterates are kept per step to re-solve for a smaller radius without running CG again."""


def _exact_newton(g: torch.Tensor, H: Dense | DenseWithInverse, reg: float) -> tuple[torch.Tensor | None, float]:
    """``((H + reg·I)⁻¹g, its norm)`` when ``H + reg·I`` is positive definite, else ``(None, inf)``."""
    p = newton_point(g, H if reg == 0 else Dense(H.A).add_diagonal(reg))
    return (None, math.inf) if p is None else (p, _float(torch.linalg.vector_norm(p)))


class TrustCG(TrustRegionBase):
    """Trust region whose subproblem is solved by Steihaug–Toint conjugate gradient (truncated CG).

    Approximately minimises ``−gᵀd + ½dᵀ(H + reg·I)d`` subject to ``‖d‖₂ ≤ Δ`` (``d`` is subtracted) by CG on
    ``(H + reg·I)d = g`` from ``d = 0`` with products ``H.matvec``: an iterate leaving the ball, or a direction of
    non-positive curvature, ends the solve at the boundary point along the current direction; otherwise CG runs
    until ``‖r‖ < cg_tol`` (after at least ``miniter`` iterations) or ``maxiter`` iterations (default ``n``).

    With ``prefer_exact`` the subproblem is solved exactly where that is cheap: for a ``ScaledIdentity`` ``H`` the
    closed form ``H.solve_bounded(g, Δ)`` (``g/s`` shortened to length ``Δ``); for a dense ``H`` (``Dense``,
    ``DenseWithInverse``, e.g. from ``Newton``) that is positive definite (its Cholesky factorisation, computed once
    per step) with the Newton point ``(H + reg·I)⁻¹g`` inside the region, that Newton point, which is what CG
    converges to in exact arithmetic (in floating point CG needs far more than ``n`` iterations on an ill-conditioned
    ``H``; the reference only had the ``ScaledIdentity`` case). Otherwise Steihaug–Toint CG is used.

    After a rejected attempt the radius shrinks; the CG iterates of the first solve (up to 100 are kept) give the
    Steihaug–Toint solution for the smaller radius directly (the last iterate inside the new ball extended to its
    boundary along its direction, ``utils.linalg.solve.find_within_trust_radius``), so CG is not run again unless
    the needed iterate was not kept. The radius follows the default rule of ``TrustRegionBase`` with
    ``radius_fn`` = L2 norm.

    Args:
        hess_module: curvature module exposing ``get_H`` (``Newton``, ``GaussNewton``, ``SR1(inverse=False)``,
            ``BFGS(inverse=False)``, ``LBFGS``, ``Identity``...; an operator that only keeps the inverse works, but
            each product is then a solve).
        eta: acceptance threshold on the reduction ratio. Defaults to 0.0.
        nplus: radius growth factor. Defaults to 3.5.
        nminus: radius shrink factor. Defaults to 0.25.
        rho_good: ratio above which the radius grows. Defaults to 0.99.
        rho_bad: ratio below which the radius shrinks. Defaults to 1e-4.
        boundary_tol: grow only when ``(Δ − ‖d‖)/Δ < boundary_tol`` (None: always). Defaults to 1e-6.
        init: initial radius. Defaults to 1.
        max_attempts: attempts per step. Defaults to 10.
        radius_strategy: ``'default'``, ``'fixed'`` or a custom strategy. Defaults to ``'default'``.
        reg: ``reg·I`` is added to ``H`` in the solve. Defaults to 0.
        maxiter: maximum CG iterations (None: the number of parameters). Defaults to None.
        miniter: CG iterations before the tolerance is checked. Defaults to 1.
        cg_tol: absolute CG residual tolerance. Defaults to 1e-8.
        prefer_exact: solve exactly when cheap (``ScaledIdentity``; dense positive definite ``H`` with the Newton
            point inside the region). Defaults to True.
        update_freq: refresh ``H`` every this many steps. Defaults to 1.
        inner: modules applied to the update before the solve. Defaults to None.

    Reference:
        T. Steihaug, "The conjugate gradient method and trust regions in large scale optimization", SIAM J. Numer.
        Anal. 20(3), 1983, 626–637; Ph. L. Toint, "Towards an efficient sparsity exploiting Newton method for
        minimization", in *Sparse Matrices and Their Uses*, 1981; Nocedal & Wright, Alg. 7.2.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.TrustCG(tz.m.Newton()))
        opt = tz.Modular(model.parameters(), tz.m.TrustCG(tz.m.SR1(inverse=False)))
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
        boundary_tol: float | None = 1e-06,
        init: float = 1,
        max_attempts: int = 10,
        radius_strategy: RadiusStrategy | Literal["default", "fixed"] = "default",
        reg: float = 0,
        maxiter: int | None = None,
        miniter: int = 1,
        cg_tol: float = 1e-08,
        prefer_exact: bool = True,
        update_freq: int = 1,
        inner: Chainable | None = None,
    ):
        name = "TrustCG"
        check_range(name, "reg", reg, 0)
        if maxiter is not None:
            check_int(name, "maxiter", maxiter, 1)
        check_int(name, "miniter", miniter, 0)
        check_range(name, "cg_tol", cg_tol, 0)
        check_bool(name, "prefer_exact", prefer_exact)
        super().__init__(dict(reg=reg, maxiter=maxiter, miniter=miniter, cg_tol=cg_tol, prefer_exact=prefer_exact),
                         hess_module, eta=eta, nplus=nplus, nminus=nminus, rho_good=rho_good, rho_bad=rho_bad,
                         boundary_tol=boundary_tol, init=init, max_attempts=max_attempts,
                         radius_strategy=radius_strategy, radius_fn=torch.linalg.vector_norm,
                         update_freq=update_freq, inner=inner)

    def trust_solve(self, f: float, g: torch.Tensor, H: LinearOperator, radius: float, params: list[torch.Tensor],
                    closure: Callable, settings: Mapping[str, Any]) -> torch.Tensor:
        reg = settings["reg"]
        if settings["prefer_exact"]:
            if isinstance(H, ScaledIdentity):
                return (H if reg == 0 else H.add_diagonal(float(reg))).solve_bounded(g, radius)
            if isinstance(H, (Dense, DenseWithInverse)):
                # positive definite H + reg·I with the Newton point inside the region: the point Steihaug's CG
                # converges to, computed exactly (CG in floating point needs far more than n iterations on an
                # ill-conditioned H)
                p, p_norm = self._memoize("newton", (g, H, reg), lambda: _exact_newton(g, H, reg))
                if p is not None and p_norm <= radius:
                    return p

        # an earlier solve of this step with a larger radius: its iterates give the solution for this radius
        previous = self._memo.get("cg")
        if previous is not None and previous[0][0] is g and previous[0][1] is H and radius <= previous[1][0]:
            d = find_within_trust_radius(previous[1][1], radius)
            if d is not None:
                return d  # type: ignore[return-value]

        maxiter = settings["maxiter"]
        history_size = min(g.numel() if maxiter is None else maxiter, _MAX_HISTORY)
        d, solver = cg(H.matvec, g, tol=settings["cg_tol"], maxiter=maxiter, reg=reg,
                       trust_radius=radius, miniter=settings["miniter"], history_size=history_size)
        self._memo["cg"] = ((g, H), (radius, solver.history))
        return d  # type: ignore[return-value]
