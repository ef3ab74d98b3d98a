"""Box (ℓ∞) trust region solved with ``scipy.optimize.lsq_linear``."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import torch

from ...core import Chainable, Module
from ...utils.checks import check_bool, check_range
from ...utils.linalg.linear_operator import LinearOperator
from ..trust_region.trust_region import RadiusStrategy, TrustRegionBase, _float

__all__ = ["InfinityNormTrustRegion", "inf_norm"]


def inf_norm(d: torch.Tensor) -> torch.Tensor:
    """``max|dᵢ|``, the ℓ∞ norm that measures steps of the box trust region."""
    return torch.linalg.vector_norm(d, ord=math.inf)


def shrink_to_box(g: torch.Tensor, radius: float) -> torch.Tensor:
    """``g`` scaled so that ``max|gᵢ| ≤ radius`` (unchanged if it already is)."""
    g_max = _float(inf_norm(g))
    if g_max <= radius or g_max == 0:
        return g.clone()
    return g * (radius / g_max)


class InfinityNormTrustRegion(TrustRegionBase):
    """Box trust region: the step solves ``min ‖H d − g‖₂`` subject to ``−Δ ≤ dᵢ ≤ Δ`` (``d`` is subtracted).

    The bounded linear least-squares problem is solved on the CPU in float64 by ``scipy.optimize.lsq_linear`` with
    tolerance ``tol``, on a dense array when ``prefer_dense`` and ``H.is_dense()`` (converted once per refresh of
    ``H``), otherwise on ``H.scipy_linop()`` (LSMR inner solves). If SciPy fails (a linear-algebra error or
    non-finite input), ``hess_module`` is reset and the step is ``g`` shrunk into the box. Steps are measured with
    the ∞-norm ``max|dᵢ|`` by the radius rule of ``TrustRegionBase`` (the reference used ``torch.amax`` and read a
    non-existent setting for the tolerance).

    Args:
        hess_module: curvature module with ``get_H`` (``Newton``, ``BFGS(inverse=False)``...).
        prefer_dense: use a dense array for dense operators. Defaults to True.
        tol: tolerance of ``lsq_linear``. Defaults to 1e-10.
        eta: acceptance threshold on the reduction ratio. Defaults to 0.0.
        nplus: radius growth factor. Defaults to 3.5.
        nminus: radius shrink factor. Defaults to 0.25.
        rho_good: ratio above which the radius grows. Defaults to 0.99.
        rho_bad: ratio below which the radius shrinks. Defaults to 1e-4.
        boundary_tol: grow only when ``(Δ − max|dᵢ|)/Δ < boundary_tol`` (None: always). Defaults to None.
        init: initial half-width of the box. Defaults to 1.
        max_attempts: attempts per step. Defaults to 10.
        radius_strategy: ``'default'``, ``'fixed'`` or a custom strategy. Defaults to ``'default'``.
        update_freq: refresh ``H`` every this many steps. Defaults to 1.
        inner: modules applied to the update before the solve. Defaults to None.

    Reference:
        A. R. Conn, N. I. M. Gould, Ph. L. Toint, *Trust-Region Methods*, SIAM, 2000 (ℓ∞ trust regions).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.experimental.InfinityNormTrustRegion(tz.m.Newton()))
        ```
    """

    def __init__(
        self,
        hess_module: Module,
        prefer_dense: bool = True,
        tol: float = 1e-10,
        eta: float = 0.0,
        nplus: float = 3.5,
        nminus: float = 0.25,
        rho_good: float = 0.99,
        rho_bad: float = 0.0001,
        boundary_tol: float | None = None,
        init: float = 1,
        max_attempts: int = 10,
        radius_strategy: RadiusStrategy | Literal["default", "fixed"] = "default",
        update_freq: int = 1,
        inner: Chainable | None = None,
    ):
        check_bool("InfinityNormTrustRegion", "prefer_dense", prefer_dense)
        check_range("InfinityNormTrustRegion", "tol", tol, 0)
        super().__init__(dict(prefer_dense=prefer_dense, tol=tol), hess_module, eta=eta, nplus=nplus,
                         nminus=nminus, rho_good=rho_good, rho_bad=rho_bad, boundary_tol=boundary_tol, init=init,
                         max_attempts=max_attempts, radius_strategy=radius_strategy, radius_fn=inf_norm,
                         update_freq=update_freq, inner=inner)

    def _scipy_operator(self, H: LinearOperator, prefer_dense: bool) -> Any:
        if prefer_dense and H.is_dense():
            return H.to_tensor().detach().to("cpu", torch.float64).numpy()
        from scipy.sparse.linalg import LinearOperator as ScipyLinearOperator

        # products in H's dtype and device, handed to SciPy as float64 arrays
        def product(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[np.ndarray], np.ndarray]:
            def mv(x: np.ndarray) -> np.ndarray:
                v = torch.as_tensor(np.asarray(x).reshape(-1), device=H.device, dtype=H.dtype)
                return fn(v).detach().to("cpu", torch.float64).numpy()
            return mv

        return ScipyLinearOperator(shape=H.size(), dtype=np.float64, matvec=product(H.matvec),
                                   rmatvec=product(H.rmatvec))

    def trust_solve(self, f: float, g: torch.Tensor, H: LinearOperator, radius: float, params: list[torch.Tensor],
                    closure: Callable, settings: Mapping[str, Any]) -> torch.Tensor:
        from scipy.optimize import lsq_linear

        A = self._memoize("A", (H, settings["prefer_dense"]),
                          lambda: self._scipy_operator(H, settings["prefer_dense"]))
        b = g.detach().to("cpu", torch.float64).numpy()
        try:
            if isinstance(A, np.ndarray) and not np.isfinite(A).all():
                raise np.linalg.LinAlgError("non-finite Hessian")
            res = lsq_linear(A, b, bounds=(-radius, radius), tol=settings["tol"])
            # lsq_linear keeps its iterates feasible; the clamp only removes rounding of the dtype conversion
            d = torch.as_tensor(res.x, dtype=g.dtype, device=g.device).clamp_(-radius, radius)
            if not bool(torch.isfinite(d).all()):
                raise np.linalg.LinAlgError("non-finite solution")
        except (np.linalg.LinAlgError, ValueError):
            self.children["hess_module"].reset()
            return shrink_to_box(g, radius)
        return d
