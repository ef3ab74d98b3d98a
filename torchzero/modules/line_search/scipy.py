"""``ScipyMinimizeScalar``: a line search by ``scipy.optimize.minimize_scalar`` (Brent, golden section, bounded)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ...core import Var
from ...utils.checks import check_choice
from .line_search import LineSearchBase, check_maxiter

_METHODS = (None, "brent", "golden", "bounded")


class ScipyMinimizeScalar(LineSearchBase):
    """Line search that minimises ``φ(α) = f(x − α·u)`` with ``scipy.optimize.minimize_scalar`` (loss only).

    ``method`` (``'brent'``, ``'golden'``, ``'bounded'``; None lets SciPy choose: Brent, or bounded when ``bounds`` is
    given), ``bracket``, ``bounds``, ``tol`` and ``options`` are passed to SciPy; ``maxiter`` is passed as
    ``options['maxiter']`` (it is not the base evaluation cap). With ``prev_init=True`` and a previous nonzero result,
    the last entry of the bracket is replaced by the previous step (the default bracket ``(0, 1)`` becomes
    ``(0, α_prev)``). A non-finite result, ``|α| ≥ max/2`` of the dtype, or a result whose loss is above ``φ(0)`` (a
    safeguard added here) becomes 0 (the parameters stay at ``x₀``). Non-finite losses are passed to SciPy as
    ``+inf``. The result is stored in ``global_state['x_prev']``.

    The number of evaluations is decided by SciPy (its bracket search can take many on an objective that decreases
    without bound along ``u``). The loss at the accepted point is known (SciPy evaluated it), its gradient is not, so
    the next step evaluates the gradient there. SciPy works on Python floats; only the loss values leave the device.

    Args:
        method: SciPy method. Defaults to None.
        maxiter: ``options['maxiter']`` for SciPy. Defaults to None.
        bracket: bracketing interval for Brent/golden. Defaults to None (SciPy's ``(0, 1)``).
        bounds: bounds for the bounded method. Defaults to None.
        tol: SciPy's ``tol``. Defaults to None.
        prev_init: start the bracket from the previous step. Defaults to False.
        options: further SciPy options. Defaults to None.

    Reference:
        R. P. Brent, *Algorithms for Minimization without Derivatives*, Prentice-Hall 1973; SciPy documentation of
        ``scipy.optimize.minimize_scalar``.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.ScipyMinimizeScalar(method="brent", tol=1e-8))
        ```
    """

    def __init__(self, method: str | None = None, maxiter: int | None = None, bracket: Sequence[float] | None = None,
                 bounds: Sequence[float] | None = None, tol: float | None = None, prev_init: bool = False,
                 options: Mapping[str, Any] | None = None):
        owner = "ScipyMinimizeScalar"
        check_choice(owner, "method", method.lower() if isinstance(method, str) else method, _METHODS)
        check_maxiter(owner, "maxiter", maxiter)
        if method is not None and method.lower() == "bounded" and bounds is None:
            raise ValueError(f"{owner}: method='bounded' needs `bounds`")
        if bracket is not None and len(bracket) not in (2, 3):
            raise ValueError(f"{owner}: bracket must have 2 or 3 entries, got {bracket!r}")
        if bounds is not None and (len(bounds) != 2 or not bounds[0] < bounds[1]):
            raise ValueError(f"{owner}: bounds must be (low, high) with low < high, got {bounds!r}")
        if tol is not None and not tol > 0:
            raise ValueError(f"{owner}: tol must be positive, got {tol}")
        super().__init__(dict(method=method, maxiter=maxiter, bracket=bracket, bounds=bounds, tol=tol,
                              prev_init=prev_init, options=options))

    def search(self, update: list[torch.Tensor], var: Var) -> float:
        from scipy.optimize import minimize_scalar

        s = self.defaults
        f0 = self.evaluate_f(0, var)
        if not math.isfinite(f0):
            return 0.0
        options = dict(s["options"]) if s["options"] is not None else {}
        if s["maxiter"] is not None:
            options["maxiter"] = s["maxiter"]
        bracket = s["bracket"]
        x_prev = self.global_state.get("x_prev")
        if s["prev_init"] and x_prev is not None and x_prev != 0 and math.isfinite(x_prev):
            base = list(bracket) if bracket is not None else [0.0, 1.0]
            if x_prev not in base[:-1]:
                bracket = (*base[:-1], x_prev)
        kwargs: dict[str, Any] = dict(method=s["method"], bracket=bracket, bounds=s["bounds"], tol=s["tol"])
        if options:
            kwargs["options"] = options

        with np.errstate(all="ignore"):
            res = minimize_scalar(lambda a: self.evaluate_f(float(a), var), **kwargs)
        alpha = float(res.x)
        finfo = torch.finfo(var.params[0].dtype)
        if not math.isfinite(alpha) or abs(alpha) >= finfo.max / 2 or not self.evaluate_f(alpha, var) <= f0:
            alpha = 0.0
        self.global_state["x_prev"] = alpha
        return alpha
