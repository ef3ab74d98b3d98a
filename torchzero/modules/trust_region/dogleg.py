"""Powell's dogleg trust region."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

from ...core import Chainable
from ...utils.linalg.linear_operator import LinearOperator
from .trust_region import RadiusStrategy, TrustRegionBase, _float, newton_point


def dogleg_step(g: torch.Tensor, gHg: float, p_newton: torch.Tensor | None, radius: float) -> torch.Tensor:
    """The dogleg step (to be subtracted) for the model ``f − gᵀd + ½dᵀHd`` within ``‖d‖ ≤ radius``
    (Nocedal & Wright §4.1):

    - ``gᵀHg ≤ 2·tiny`` (non-positive curvature along ``g``): steepest descent to the boundary, ``g·Δ/‖g‖``;
    - Cauchy point ``p_C = (gᵀg/gᵀHg)·g`` outside the region: ``g·Δ/‖g‖``;
    - no usable Newton point (``p_newton`` None): ``p_C``;
    - Newton point ``p_N = H⁻¹g`` inside the region: ``p_N``;
    - otherwise ``p_C + β(p_N − p_C)`` with ``β ∈ [0, 1]`` the root of ``‖p_C + β(p_N − p_C)‖ = Δ``.

    A non-finite ``gHg`` (``H`` with NaN or infinite entries) gives a zero step. ``gHg`` is ``gᵀHg``; ``p_newton``
    should be None when ``H⁻¹g`` is not finite or not a descent direction
    (``gᵀp_N ≤ 0``, i.e. ``H`` not positive definite along it).
    """
    tiny2 = 2 * torch.finfo(g.dtype).tiny
    g_norm = _float(torch.linalg.vector_norm(g))
    if not math.isfinite(gHg):  # a broken H (NaN or infinite curvature): no step
        return torch.zeros_like(g)
    if gHg <= tiny2:
        return g * (radius / g_norm)
    tau_c = g_norm**2 / gHg
    if tau_c * g_norm >= radius:
        return g * (radius / g_norm)
    if p_newton is None:
        return g * tau_c
    if _float(torch.linalg.vector_norm(p_newton)) <= radius:
        return p_newton
    p_c = g * tau_c
    v = p_newton - p_c
    a = _float(v.dot(v))
    if a < tiny2:
        return g * (radius / g_norm)
    b = 2 * _float(p_c.dot(v))
    c = (tau_c * g_norm) ** 2 - radius**2  # < 0 because the Cauchy point is inside
    sqrt_disc = math.sqrt(max(b * b - 4 * a * c, 0.0))
    beta = -2 * c / (b + sqrt_disc) if b > 0 else (-b + sqrt_disc) / (2 * a)
    beta = min(max(beta, 0.0), 1.0)
    return p_c.add_(v, alpha=beta)


class Dogleg(TrustRegionBase):
    """Powell's dogleg trust region: a piecewise-linear path from the Cauchy point to the Newton point, cut at the
    L2 radius.

    With ``g`` the update and ``H`` from ``hess_module.get_H``, the step (subtracted from the parameters) is, with
    ``p_C = (gᵀg / gᵀHg)·g`` and ``p_N = H⁻¹g``:

    - ``p_N`` if ``‖p_N‖ ≤ Δ``;
    - ``g·Δ/‖g‖`` if ``‖p_C‖ ≥ Δ`` or ``gᵀHg ≤ 2·tiny``;
    - ``p_C + β(p_N − p_C)`` with ``‖p_C + β(p_N − p_C)‖ = Δ``, ``β ∈ [0, 1]``, otherwise.

    The dogleg path is only meaningful for a positive definite ``H``: when ``H`` is not (a dense ``H`` whose Cholesky
    factorisation fails; for other operators a ``p_N`` that is not finite or not a descent direction,
    ``gᵀp_N ≤ 0``) the Cauchy point (cut at the radius) is used instead, so the predicted reduction is always
    positive and the iterates are not attracted to saddle points. ``p_N`` and ``gᵀHg`` are computed once per step and reused
    by every attempt. The radius follows the default rule of ``TrustRegionBase`` with the constants of Nocedal &
    Wright (``nplus=2, nminus=0.25, rho_good=0.75, rho_bad=0.25``) and ``radius_fn`` = L2 norm.

    The reference implementation capped the radius used in the solve at 2 and always returned the point of the
    second leg; this is the textbook case analysis without the cap.

    Args:
        hess_module: curvature module whose ``get_H`` supports ``matvec`` and ``solve`` (``Newton``, ``GaussNewton``,
            ``BFGS``...); ``H`` should be positive definite for the dogleg path to be meaningful.
        eta: acceptance threshold on the reduction ratio. Defaults to 0.0.
        nplus: radius growth factor. Defaults to 2.
        nminus: radius shrink factor. Defaults to 0.25.
        rho_good: ratio above which the radius grows. Defaults to 0.75.
        rho_bad: ratio below which the radius shrinks. Defaults to 0.25.
        boundary_tol: grow only when ``(Δ − ‖d‖)/Δ < boundary_tol`` (None: always). Defaults to None.
        init: initial radius. Defaults to 1.
        max_attempts: attempts per step. Defaults to 10.
        radius_strategy: ``'default'``, ``'fixed'`` or a custom strategy. Defaults to ``'default'``.
        update_freq: refresh ``H`` every this many steps. Defaults to 1.
        inner: modules applied to the update before the solve. Defaults to None.

    Reference:
        M. J. D. Powell, "A hybrid method for nonlinear equations", in *Numerical Methods for Nonlinear Algebraic
        Equations*, 1970; J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., §4.1.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Dogleg(tz.m.Newton()))
        opt = tz.Modular(model.parameters(), tz.m.Dogleg(tz.m.BFGS(inverse=False)))
        ```
    """

    def __init__(
        self,
        hess_module: Chainable,
        eta: float = 0.0,
        nplus: float = 2,
        nminus: float = 0.25,
        rho_good: float = 0.75,
        rho_bad: float = 0.25,
        boundary_tol: float | None = None,
        init: float = 1,
        max_attempts: int = 10,
        radius_strategy: RadiusStrategy | Literal["default", "fixed"] = "default",
        update_freq: int = 1,
        inner: Chainable | None = None,
    ):
        super().__init__(None, hess_module, eta=eta, nplus=nplus, nminus=nminus, rho_good=rho_good,
                         rho_bad=rho_bad, boundary_tol=boundary_tol, init=init, max_attempts=max_attempts,
                         radius_strategy=radius_strategy, radius_fn=torch.linalg.vector_norm,
                         update_freq=update_freq, inner=inner)

    def _newton_and_curvature(self, g: torch.Tensor, H: LinearOperator) -> tuple[float, torch.Tensor | None]:
        gHg = _float(g.dot(H.matvec(g)))
        return gHg, newton_point(g, H)

    def trust_solve(self, f: float, g: torch.Tensor, H: LinearOperator, radius: float, params: list[torch.Tensor],
                    closure: Callable, settings: Mapping[str, Any]) -> torch.Tensor:
        gHg, p_newton = self._memoize("newton", (g, H), lambda: self._newton_and_curvature(g, H))
        return dogleg_step(g, gHg, p_newton, radius)
