"""NLopt's optimizers as a ``torch.optim.Optimizer``.

Importing this module imports nlopt (an optional dependency: ``pip install torchzero[nlopt]``).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import nlopt
import numpy as np
import torch

from ...utils.params import Params
from ._base import Problem, WrapperOptimizer, check_box_arg

__all__ = ["NLOptWrapper", "NloptAlgorithmName"]

NloptAlgorithmName: TypeAlias = Literal[
    "GN_DIRECT", "GN_DIRECT_L", "GN_DIRECT_L_RAND", "GN_DIRECT_NOSCAL", "GN_DIRECT_L_NOSCAL",
    "GN_DIRECT_L_RAND_NOSCAL", "GN_ORIG_DIRECT", "GN_ORIG_DIRECT_L", "GD_STOGO", "GD_STOGO_RAND",
    "LD_LBFGS_NOCEDAL", "LD_LBFGS", "LN_PRAXIS", "LD_VAR1", "LD_VAR2", "LD_TNEWTON", "LD_TNEWTON_RESTART",
    "LD_TNEWTON_PRECOND", "LD_TNEWTON_PRECOND_RESTART", "GN_CRS2_LM", "GN_MLSL", "GD_MLSL", "GN_MLSL_LDS",
    "GD_MLSL_LDS", "LD_MMA", "LN_COBYLA", "LN_NEWUOA", "LN_NEWUOA_BOUND", "LN_NELDERMEAD", "LN_SBPLX", "LN_AUGLAG",
    "LD_AUGLAG", "LN_AUGLAG_EQ", "LD_AUGLAG_EQ", "LN_BOBYQA", "GN_ISRES", "AUGLAG", "AUGLAG_EQ", "G_MLSL",
    "G_MLSL_LDS", "LD_SLSQP", "LD_CCSAQ", "GN_ESCH", "GN_AGS",
]
"""Names of NLopt algorithm constants (resolved with ``getattr(nlopt, name.upper())``)."""

_STOPPING = ("stopval", "ftol_rel", "ftol_abs", "xtol_rel", "xtol_abs", "maxtime")


def _resolve_algorithm(owner: str, algorithm: int | str) -> int:
    if isinstance(algorithm, str):
        value = getattr(nlopt, algorithm.upper(), None)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{owner}: unknown NLopt algorithm {algorithm!r}")
        return value
    if isinstance(algorithm, bool) or not isinstance(algorithm, (int, np.integer)):
        raise TypeError(f"{owner}: algorithm must be an NLopt constant or its name, got {type(algorithm).__name__}")
    if not 0 <= int(algorithm) < nlopt.NUM_ALGORITHMS:
        raise ValueError(f"{owner}: {algorithm} is not an NLopt algorithm constant")
    return int(algorithm)


class NLOptWrapper(WrapperOptimizer):
    r"""An NLopt algorithm as a ``torch.optim.Optimizer``: one ``step`` is a complete ``nlopt.opt(algorithm, n)``
    run minimizing ``f(x)`` from the current parameters.

    Derivative-based algorithms (``LD_*``, ``GD_*``) get the autograd gradient from ``closure()``; the others only
    call ``closure(False)``. The point NLopt returns is written into the parameters and its objective value
    (``opt.last_optimum_value()``) returned, so the returned loss always belongs to the parameters left behind (the
    reference returned the last evaluated loss instead). If NLopt stops with ``RoundoffLimited`` (its result is
    usually still useful), the best point evaluated is used and a warning issued. An exception raised by the closure
    force-stops NLopt and is re-raised. A NaN loss is passed to NLopt as ``+inf``.

    Args:
        params: parameters or parameter groups; groups may set their own ``lb``/``ub``.
        algorithm: an NLopt algorithm constant (``nlopt.LD_LBFGS``) or its name (``'LD_LBFGS'``, case-insensitive).
        lb: lower bound of every parameter entry (per-group setting), None for ``-inf``. Default None.
        ub: upper bound of every parameter entry (per-group setting), None for ``+inf``. Default None. Global
            algorithms (``GN_*``, ``GD_*``) need finite bounds.
        maxeval: maximum number of evaluations, None for no limit. Default 10000.
        stopval: stop when a value ``<= stopval`` is found. Default None.
        ftol_rel: relative tolerance on the function value. Default None.
        ftol_abs: absolute tolerance on the function value. Default None.
        xtol_rel: relative tolerance on the parameters. Default None.
        xtol_abs: absolute tolerance on the parameters. Default None.
        maxtime: maximum run time in seconds. Default None.

    Reference:
        Johnson, "The NLopt nonlinear-optimization package", https://github.com/stevengj/nlopt.

    Example:
        ```python
        opt = tz.optim.wrappers.nlopt.NLOptWrapper(model.parameters(), "LD_LBFGS", maxeval=500)
        loss = opt.step(closure)
        ```
    """

    def __init__(
        self,
        params: Params | torch.nn.Module,
        algorithm: int | NloptAlgorithmName,
        lb: float | None = None,
        ub: float | None = None,
        maxeval: int | None = 10000,
        stopval: float | None = None,
        ftol_rel: float | None = None,
        ftol_abs: float | None = None,
        xtol_rel: float | None = None,
        xtol_abs: float | None = None,
        maxtime: float | None = None,
    ):
        name = type(self).__name__
        self.algorithm = _resolve_algorithm(name, algorithm)
        check_box_arg(name, lb, ub, required=False)
        if maxeval is not None and (isinstance(maxeval, bool) or not isinstance(maxeval, int) or maxeval < 1):
            raise ValueError(f"{name}: maxeval must be a positive int or None, got {maxeval!r}")
        for arg, v in (("stopval", stopval), ("ftol_rel", ftol_rel), ("ftol_abs", ftol_abs), ("xtol_rel", xtol_rel),
                       ("xtol_abs", xtol_abs), ("maxtime", maxtime)):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                raise ValueError(f"{name}: {arg} must be a number or None, got {v!r}")
            if arg != "stopval" and v < 0:
                raise ValueError(f"{name}: {arg} must be non-negative, got {v}")
        super().__init__(params, dict(lb=lb, ub=ub))
        self.maxeval = maxeval
        self.stopval = stopval
        self.ftol_rel = ftol_rel
        self.ftol_abs = ftol_abs
        self.xtol_rel = xtol_rel
        self.xtol_abs = xtol_abs
        self.maxtime = maxtime

    def _objective(self, problem: Problem, opt: nlopt.opt) -> Callable[[np.ndarray, np.ndarray], float]:
        def f(x: np.ndarray, grad: np.ndarray) -> float:
            if problem.error is not None:
                return math.inf
            try:
                if grad.size > 0:
                    value, g = problem.value_and_grad(x)
                    grad[:] = g
                    return value
                return problem.value(x)
            except BaseException as e:  # re-raised after nlopt returns
                problem.error = e
                opt.force_stop()
                return math.inf
        return f

    @torch.no_grad()
    def step(self, closure: Callable[..., Any] | None = None) -> float:  # type: ignore[override]
        """Runs NLopt from the current parameters, writes its solution into them and returns its value."""
        problem = self._problem(closure)
        lb, ub = problem.box(required=False)
        opt = nlopt.opt(self.algorithm, problem.n)
        opt.set_lower_bounds(lb)
        opt.set_upper_bounds(ub)
        opt.set_min_objective(self._objective(problem, opt))
        if self.maxeval is not None:
            opt.set_maxeval(self.maxeval)
        for key in _STOPPING:
            v = getattr(self, key)
            if v is not None:
                getattr(opt, f"set_{key}")(v)

        x0 = problem.x0()
        problem.check_inside(x0, lb, ub)
        try:
            x = opt.optimize(x0)
            value = float(opt.last_optimum_value())
        except Exception as e:
            problem.reraise()  # the closure's exception (NLopt then raises ForcedStop or a runtime error)
            if not isinstance(e, nlopt.RoundoffLimited) or problem.best_x is None:
                raise
            warnings.warn(f"{type(self).__name__}: NLopt stopped with RoundoffLimited; using the best point "
                          "evaluated", RuntimeWarning, stacklevel=2)
            x, value = problem.best_x, problem.best_f
        problem.reraise()
        self.result = opt
        problem.load(x)
        return value
