"""fcmaes (fast CMA-ES and differential evolution with retries) as a ``torch.optim.Optimizer``.

Importing this module imports fcmaes (an optional dependency: ``pip install torchzero[fcmaes]``). fcmaes changes
NumPy's print options and the ``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` environment variables when its modules are
imported; this module undoes both after importing it.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ...utils.params import Params
from ._base import Problem, WrapperOptimizer, check_box_arg, restore_numpy_printoptions

_ENV_KEYS = ("MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_saved_env = {k: os.environ.get(k) for k in _ENV_KEYS}
with restore_numpy_printoptions():
    try:
        import fcmaes.optimizer
        from loguru import logger
        from scipy.optimize import Bounds
    finally:
        for _k, _v in _saved_env.items():
            if _v is None:
                os.environ.pop(_k, None)
            else:
                os.environ[_k] = _v

__all__ = ["FcmaesWrapper"]


@contextmanager
def _quiet_fcmaes() -> Iterator[None]:
    """Disables fcmaes' loguru messages inside the block, then restores loguru's previous activation state."""
    core = getattr(logger, "_core", None)
    saved = None
    if core is not None and hasattr(core, "activation_list") and hasattr(core, "enabled"):
        saved = (list(core.activation_list), dict(core.enabled))
    logger.disable("fcmaes")
    try:
        yield
    finally:
        if saved is None:
            logger.enable("fcmaes")
        else:
            with core.lock:
                core.activation_list = saved[0]
                core.enabled = saved[1]


class FcmaesWrapper(WrapperOptimizer):
    r"""fcmaes' parallel-retry optimization over the box ``[lb, ub]``, run in this process.

    ``num_retries`` independent runs of ``optimizer`` (default: fcmaes' differential evolution followed by CMA-ES,
    ``de_cma(max_evaluations, popsize, stop_fitness)``), each from a random point of the box with initial step sizes
    drawn in ``[0.05, 0.1]`` of the box width; the best result below ``value_limit`` is written into the parameters
    and its value returned. Retries stop early once a value ``<= stop_fitness`` is found.

    This follows ``fcmaes.retry.minimize(..., workers=1)``, but runs the retry loop in this process instead of a
    forked worker process, so the closure evaluates on these parameters (on any device), evaluations are counted in
    ``num_evaluations``, runs are reproducible with ``np.random.seed`` (the retry generator and fcmaes' default
    optimizer draw from NumPy's global generator), and an exception raised by the closure ends the run and is
    re-raised (fcmaes prints it and goes on). fcmaes' result store is replaced by ``opt.results`` for the same reason
    (it also divides by a zero elapsed time when loguru's debug level is active). fcmaes' log messages are silenced
    during the run. If no run gets below ``value_limit``, the best point evaluated is used and a warning issued.

    Args:
        params: parameters or parameter groups; groups may set their own ``lb``/``ub``.
        lb: lower bound of every parameter entry (finite; per-group setting).
        ub: upper bound of every parameter entry (finite; per-group setting).
        optimizer: an ``fcmaes.optimizer.Optimizer`` (e.g. ``fcmaes.optimizer.Cma_cpp(10000)``), or None for the
            DE → CMA-ES sequence. Default None.
        max_evaluations: evaluation budget of each run of the default optimizer. Default 50000.
        value_limit: results at or above this value are not kept. Default ``inf``.
        num_retries: number of runs. Default 1.
        popsize: CMA-ES population size of the default optimizer. Default 31.
        capacity: how many of the best run results ``opt.results`` keeps, as ``(value, x)`` sorted by value.
            Default 500.
        stop_fitness: no more retries once a value ``<= stop_fitness`` is found (also passed to the default
            optimizer, which then stops its run). Default ``-inf``.
        statistic_num: if > 0, ``opt.statistics`` records up to this many improvements as ``(evaluation, value)``.
            Default 0.

    Reference:
        Wolz, "fcmaes - A Python-3 derivative-free optimization library", https://github.com/dietmarwo/fast-cma-es;
        Hansen, "The CMA Evolution Strategy: A Tutorial", arXiv:1604.00772 (2016).

    Example:
        ```python
        np.random.seed(0)
        opt = tz.optim.wrappers.fcmaes.FcmaesWrapper(model.parameters(), lb=-5, ub=5, max_evaluations=5000)
        loss = opt.step(closure)
        ```
    """

    def __init__(
        self,
        params: Params | torch.nn.Module,
        lb: float,
        ub: float,
        optimizer: fcmaes.optimizer.Optimizer | None = None,
        max_evaluations: int | None = 50000,
        value_limit: float | None = np.inf,
        num_retries: int | None = 1,
        popsize: int | None = 31,
        capacity: int | None = 500,
        stop_fitness: float | None = -np.inf,
        statistic_num: int | None = 0,
    ):
        name = type(self).__name__
        check_box_arg(name, lb, ub, required=True)
        if optimizer is not None and not isinstance(optimizer, fcmaes.optimizer.Optimizer):
            raise TypeError(f"{name}: optimizer must be an fcmaes.optimizer.Optimizer or None, got "
                            f"{type(optimizer).__name__}")
        for arg, v, low in (("max_evaluations", max_evaluations, 1), ("num_retries", num_retries, 1),
                            ("popsize", popsize, 1), ("capacity", capacity, 1), ("statistic_num", statistic_num, 0)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
                raise ValueError(f"{name}: {arg} must be an int >= {low} or None, got {v!r}")
        for arg, v in (("value_limit", value_limit), ("stop_fitness", stop_fitness)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v)):
                raise ValueError(f"{name}: {arg} must be a number or None, got {v!r}")
        super().__init__(params, dict(lb=lb, ub=ub))
        self.optimizer = optimizer
        self.max_evaluations = 50000 if max_evaluations is None else max_evaluations
        self.value_limit = math.inf if value_limit is None else float(value_limit)
        self.num_retries = 1 if num_retries is None else num_retries
        self.popsize = 31 if popsize is None else popsize
        self.capacity = 500 if capacity is None else capacity
        self.stop_fitness = -math.inf if stop_fitness is None else float(stop_fitness)
        self.statistic_num = 0 if statistic_num is None else statistic_num
        self.results: list[tuple[float, np.ndarray]] = []
        """The best run results of the last step, ``(value, x)`` sorted by value (at most ``capacity``)."""
        self.statistics: list[tuple[int, float]] = []
        """Improvements of the last step as ``(evaluation number, value)`` (at most ``statistic_num``)."""

    def _objective(self, problem: Problem) -> Callable[[np.ndarray], float]:
        if self.statistic_num == 0:
            return problem.guarded
        best = [math.inf]

        def f(x: np.ndarray) -> float:
            y = problem.guarded(x)
            if y < best[0] and problem.error is None:
                best[0] = y
                if len(self.statistics) < self.statistic_num:
                    self.statistics.append((problem.n_evaluations, y))
            return y
        return f

    @torch.no_grad()
    def step(self, closure: Callable[..., Any] | None = None) -> float:  # type: ignore[override]
        """Runs the retries, writes the best point into the parameters and returns its value."""
        problem = self._problem(closure)
        lb, ub = problem.box(required=True)
        optimizer = self.optimizer
        if optimizer is None:
            optimizer = fcmaes.optimizer.de_cma(self.max_evaluations, self.popsize, self.stop_fitness)
        rg = np.random.Generator(np.random.PCG64DXSM(np.random.randint(0, 2**63 - 1, dtype=np.int64)))
        bounds = Bounds(lb, ub)
        fun = self._objective(problem)
        self.results, self.statistics = [], []
        best_y = math.inf

        with _quiet_fcmaes(), restore_numpy_printoptions():
            for _ in range(self.num_retries):
                if problem.error is not None or best_y <= self.stop_fitness:
                    break
                x, y, _evals = optimizer.minimize(fun, bounds, None, [rg.uniform(0.05, 0.1)] * problem.n, rg, None)
                y = float(y)
                if problem.error is None and y < self.value_limit:
                    self.results.append((y, np.array(x, dtype=np.float64)))
                    best_y = min(best_y, y)
        problem.reraise()
        self.results.sort(key=lambda r: r[0])
        del self.results[self.capacity:]

        if self.results:
            value, x = self.results[0]
        elif problem.best_x is not None:
            warnings.warn(f"{type(self).__name__}: no run got below value_limit={self.value_limit}; using the best "
                          "point evaluated", RuntimeWarning, stacklevel=2)
            x, value = problem.best_x, problem.best_f
        else:
            raise RuntimeError(f"{type(self).__name__}: every evaluation returned NaN or inf; the parameters were "
                               "left at the last evaluated point")
        self.result = (x, value)
        problem.load(x)
        return value
