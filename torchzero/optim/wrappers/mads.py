"""OrthoMADS (mesh adaptive direct search, package ``mads``) as a ``torch.optim.Optimizer``.

Importing this module imports mads (an optional dependency: ``pip install torchzero[mads]``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from mads.mads import orthomads

from ...utils.params import Params
from ._base import Problem, StopRun, WrapperOptimizer, check_box_arg, restore_numpy_printoptions

__all__ = ["MADS"]


class MADS(WrapperOptimizer):
    r"""OrthoMADS (``mads.orthomads``) from the current parameters within the box ``[lb, ub]``.

    Each iteration polls the ``2n`` points ``x ± Δp·(ub − lb)/2 · h_k`` along an orthogonal (Householder) set of
    directions rounded to the mesh of size ``Δm``; on improvement the incumbent moves and ``Δp ← 2Δp``,
    ``Δm ← 4Δm``, otherwise ``Δp ← Δp/2``, ``Δm ← Δm/4`` (with ``Δm ≤ Δp/4``). Stops when ``Δp <= dp_tol`` or after
    ``nitermax`` iterations. One ``step`` is a complete run: the best point is written into the parameters and its
    value returned.

    With the default ``dp_tol=-inf`` and ``nitermax=inf`` the package's loop never ends by itself: once the poll size
    underflows, it polls NaN points forever. This wrapper ends the run at the first non-finite poll point (the mesh can
    not be refined further) and keeps the incumbent, which is the package's result at that moment. The package also
    changes NumPy's print options globally; they are restored after each run. Poll directions come from NumPy's global
    generator (seed it with ``np.random.seed``). A NaN loss counts as ``+inf``.

    Args:
        params: parameters or parameter groups; groups may set their own ``lb``/``ub``.
        lb: lower bound of every parameter entry (finite; per-group setting).
        ub: upper bound of every parameter entry (finite; per-group setting). The current parameters must lie
            inside the box.
        dp: initial poll size (fraction of the box). Default 0.1.
        dm: initial mesh size. Default 0.01.
        dp_tol: stop when the poll size falls to this. Default ``-inf`` (see above).
        nitermax: maximum number of iterations. Default ``inf``.
        displog: print improvements. Default False.
        savelog: write every evaluation to ``log.txt`` in the working directory. Default False.

    Reference:
        Abramson, Audet, Dennis, Le Digabel, "OrthoMADS: A deterministic MADS instance with orthogonal directions",
        SIAM J. Optim. 20 (2009).

    Example:
        ```python
        opt = tz.optim.wrappers.mads.MADS(model.parameters(), lb=-5, ub=5, dp_tol=1e-8)
        loss = opt.step(closure)
        ```
    """

    def __init__(
        self,
        params: Params | torch.nn.Module,
        lb: float,
        ub: float,
        dp: float = 0.1,
        dm: float = 0.01,
        dp_tol: float = -float("inf"),
        nitermax: float = float("inf"),
        displog: bool = False,
        savelog: bool = False,
    ):
        name = type(self).__name__
        check_box_arg(name, lb, ub, required=True)
        for arg, v in (("dp", dp), ("dm", dm)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < math.inf):
                raise ValueError(f"{name}: {arg} must be a positive finite number, got {v!r}")
        if isinstance(dp_tol, bool) or not isinstance(dp_tol, (int, float)) or math.isnan(dp_tol):
            raise ValueError(f"{name}: dp_tol must be a number, got {dp_tol!r}")
        if isinstance(nitermax, bool) or not isinstance(nitermax, (int, float)) or not nitermax >= 1:
            raise ValueError(f"{name}: nitermax must be >= 1, got {nitermax!r}")
        super().__init__(params, dict(lb=lb, ub=ub))
        self.dp = dp
        self.dm = dm
        self.dp_tol = dp_tol
        self.nitermax = nitermax
        self.displog = displog
        self.savelog = savelog

    @staticmethod
    def _objective(problem: Problem) -> Callable[[np.ndarray], float]:
        def f(x: np.ndarray) -> float:
            if not np.isfinite(x).all():
                raise StopRun
            return problem.value(x)
        return f

    @torch.no_grad()
    def step(self, closure: Callable[..., Any] | None = None) -> float:  # type: ignore[override]
        """Runs OrthoMADS, writes the best point into the parameters and returns its value."""
        problem = self._problem(closure)
        lb, ub = problem.box(required=True)
        x0 = problem.x0()
        problem.check_inside(x0, lb, ub)
        try:
            # the package divides by the collapsed mesh size before the run is stopped: silence those warnings
            with restore_numpy_printoptions(), np.errstate(divide="ignore", invalid="ignore"):
                value, x = orthomads(x0, ub, lb, self._objective(problem), self.dp, self.dm, self.dp_tol,
                                     self.nitermax, self.displog, self.savelog)
        except StopRun:
            # the incumbent: the best point evaluated (the start, evaluated first, if nothing had a finite value)
            value, x = (problem.best_f, problem.best_x) if problem.best_x is not None else (math.inf, x0)
        self.result = (float(value), np.asarray(x, dtype=np.float64).copy())
        problem.load(x)
        return float(value)
