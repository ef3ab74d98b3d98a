"""SciPy's global methods over a box: differential evolution, dual annealing, SHGO, DIRECT and brute-force grid
search. See the package docstring for the common behaviour."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import scipy.optimize
import torch

from ....utils.params import Params
from .._base import Problem, WrapperOptimizer, check_box_arg, check_callable, check_dict, check_number

__all__ = ["ScipyDE", "ScipyDualAnnealing", "ScipySHGO", "ScipyDIRECT", "ScipyBrute"]


def _box_bounds(problem: Problem) -> list[tuple[float, float]]:
    lb, ub = problem.box(required=True)
    return list(zip(lb.tolist(), ub.tolist()))


def _seed_kwarg(fn: Callable[..., Any], new: str, value: Any) -> dict[str, Any]:
    """``{new: value}`` when SciPy's ``fn`` accepts ``new`` (SciPy >= 1.15 renamed ``seed`` to ``rng``), else
    ``{'seed': value}``."""
    return {new: value} if new in inspect.signature(fn).parameters else {"seed": value}


class ScipyDE(WrapperOptimizer):
    r"""``scipy.optimize.differential_evolution`` over the box ``[lb, ub]``, seeded with the current parameters.

    Differential evolution (``best1bin`` by default): for each member ``x_i`` a mutant ``v = x_best + F (x_r1 −
    x_r2)`` is crossed over with ``x_i`` (probability ``CR`` per entry) and replaces it if not worse. One ``step`` is
    a complete run; ``res.x`` is written into the parameters and ``res.fun`` returned.

    Args:
        params: parameters or parameter groups; groups may set their own ``lb``/``ub``.
        lb: lower bound of every parameter entry (finite; per-group setting).
        ub: upper bound of every parameter entry (finite; per-group setting). The current parameters (``x0``,
            a member of the initial population) must lie inside the box.
        strategy, maxiter, popsize, tol, mutation, recombination, callback, disp, polish, init, atol, updating,
            constraints, integrality: forwarded to SciPy (defaults ``'best1bin', 1000, 15, 0.01, (0.5, 1), 0.7,
            None, False, False, 'latinhypercube', 0, 'immediate', (), None``).
        seed: SciPy's ``seed`` (an int or NumPy generator) for reproducible runs. Default None.
        workers: SciPy's ``workers``. Default 1. An int above 1 evaluates in other processes, which needs a picklable
            closure and leaves ``num_evaluations`` uncounted; a map-like callable keeps evaluation in this process.

    Reference:
        Storn, Price, "Differential Evolution – A Simple and Efficient Heuristic for global Optimization over
        Continuous Spaces", Journal of Global Optimization 11 (1997).

    Example:
        ```python
        opt = tz.optim.wrappers.scipy.ScipyDE(model.parameters(), lb=-5, ub=5, seed=0)
        loss = opt.step(closure)
        ```
    """

    def __init__(
        self,
        params: Params | torch.nn.Module,
        lb: float,
        ub: float,
        strategy: Literal["best1bin", "best1exp", "rand1bin", "rand1exp", "rand2bin", "rand2exp", "randtobest1bin",
                          "randtobest1exp", "currenttobest1bin", "currenttobest1exp", "best2exp", "best2bin"] = "best1bin",
        maxiter: int = 1000,
        popsize: int = 15,
        tol: float = 0.01,
        mutation: float | tuple[float, float] = (0.5, 1),
        recombination: float = 0.7,
        seed: Any = None,
        callback: Callable[..., Any] | None = None,
        disp: bool = False,
        polish: bool = False,
        init: str | np.ndarray = "latinhypercube",
        atol: int = 0,
        updating: Literal["immediate", "deferred"] = "immediate",
        workers: int | Callable[..., Any] = 1,
        constraints: Any = (),
        *,
        integrality: Any = None,
    ):
        name = type(self).__name__
        check_box_arg(name, lb, ub, required=True)
        for arg, v, low in (("maxiter", maxiter, 1), ("popsize", popsize, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name}: {arg} must be an int >= {low}, got {v!r}")
        check_number(name, "tol", tol, allow_none=False)
        check_number(name, "atol", atol, allow_none=False)
        check_callable(name, "callback", callback)
        super().__init__(params, dict(lb=lb, ub=ub))
        self._kwargs = dict(strategy=strategy, maxiter=maxiter, popsize=popsize, tol=tol, mutation=mutation,
                            recombination=recombination, callback=callback, disp=disp, polish=polish, init=init,
                            atol=atol, updating=updating, workers=workers, constraints=constraints,
                            integrality=integrality)
        self.seed = seed

    @torch.no_grad()
    def step(self, closure: Callable[..., Any] | None = None) -> float:  # type: ignore[override]
        """Runs differential evolution, writes ``res.x`` into the parameters and returns ``res.fun``."""
        problem = self._problem(closure)
        lb, ub = problem.box(required=True)
        x0 = problem.x0()
        problem.check_inside(x0, lb, ub)
        res = scipy.optimize.differential_evolution(problem.value, list(zip(lb.tolist(), ub.tolist())), x0=x0,
                                                    seed=self.seed, **self._kwargs)
        self.result = res
        problem.load(res.x)
        return float(res.fun)


class ScipyDualAnnealing(WrapperOptimizer):
    r"""``scipy.optimize.dual_annealing`` over the box ``[lb, ub]``, started from the current parameters.

    Generalized simulated annealing (Tsallis visiting distribution, acceptance ``accept``) with a local search
    (``scipy.optimize.minimize``, finite-difference gradients unless ``minimizer_kwargs`` says otherwise) after
    accepted moves. One ``step`` is a complete run; ``res.x`` is written into the parameters and ``res.fun``
    returned.

    Args:
        params: parameters or parameter groups; groups may set their own ``lb``/``ub``.
        lb: lower bound of every parameter entry (finite; per-group setting).
        ub: upper bound of every parameter entry (finite; per-group setting). The current parameters must lie
            inside the box.
        maxiter, minimizer_kwargs, initial_temp, restart_temp_ratio, visit, accept, maxfun, no_local_search:
            forwarded to SciPy (defaults ``1000, None, 5230.0, 2e-5, 2.62, -5.0, 1e7, False``).
        rng: SciPy's ``rng`` (``seed`` in SciPy < 1.15) for reproducible runs. Default None.

    Reference:
        Xiang, Sun, Fan, Gong, "Generalized simulated annealing algorithm and its application to the Thomson model",
        Physics Letters A 233 (1997).

    Example:
        ```python
        opt = tz.optim.wrappers.scipy.ScipyDualAnnealing(model.parameters(), lb=-5, ub=5, rng=0)
        loss = opt.step(closure)
        ```
    """

    def __init__(
        self,
        params: Params | torch.nn.Module,
        lb: float,
        ub: float,
        maxiter: int = 1000,
        minimizer_kwargs: dict[str, Any] | None = None,
        initial_temp: float = 5230.0,
        restart_temp_ratio: float = 2e-05,
        visit: float = 2.62,
        accept: float = -5.0,
        maxfun: float = 10000000.0,
        rng: Any = None,
        no_local_search: bool = False,
    ):
        name = type(self).__name__
        check_box_arg(name, lb, ub, required=True)
        if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1:
            raise ValueError(f"{name}: maxiter must be an int >= 1, got {maxiter!r}")
        check_number(name, "maxfun", maxfun, low=1, allow_none=False)
        check_dict(name, "minimizer_kwargs", minimizer_kwargs)
        super().__init__(params, dict(lb=lb, ub=ub))
        self._kwargs = dict(maxiter=maxiter, initial_temp=initial_temp, restart_temp_ratio=restart_temp_ratio,
                            visit=visit, accept=accept, maxfun=maxfun, no_local_search=no_local_search)
        self.minimizer_kwargs = minimizer_kwargs
        self.rng = rng

    @torch.no_grad()
    def step(self, closure: Callable[..., Any] | None = None) -> float:  # type: ignore[override]
        """Runs dual annealing, writes ``res.x`` into the parameters and returns ``res.fun``."""
        problem = self._problem(closure)
        lb, ub = problem.box(required=True)
        x0 = problem.x0()
        problem.check_inside(x0, lb, ub)
        minimizer_kwargs = None if self.minimizer_kwargs is None else dict(self.minimizer_kwargs)
        res = scipy.optimize.dual_annealing(problem.value, list(zip(lb.tolist(), ub.tolist())), x0=x0,
                                            minimizer_kwargs=minimizer_kwargs,
                                            **_seed_kwarg(scipy.optimize.dual_annealing, "rng", self.rng),
                                            **self._kwargs)
        self.result = res
        problem.load(res.x)
        return float(res.fun)


class ScipySHGO(WrapperOptimizer):
    r"""``scipy.optimize.shgo`` (simplicial homology global optimization) over the box ``[lb, ub]``.

    Samples the box, builds a simplicial complex of the samples, and runs a local minimization from each minimizer
    of the complex (candidate basin). One ``step`` is a complete run (the current parameters are not used as a
    starting point); ``res.x`` is written into the parameters and ``res.fun`` returned.

    Args:
        params: parameters or parameter groups; groups may set their own ``lb``/``ub``.
        lb: lower bound of every parameter entry (finite; per-group setting).
        ub: upper bound of every parameter entry (finite; per-group setting).
        constraints, n, iters, callback, minimizer_kwargs, options, sampling_method: forwarded to SciPy (defaults
            ``None, 100, 1, None, None, None, 'simplicial'``).

    Reference:
        Endres, Sandrock, Focke, "A simplicial homology algorithm for Lipschitz optimisation", Journal of Global
        Optimization 72 (2018).

    Example:
        ```python
        opt = tz.optim.wrappers.scipy.ScipySHGO(model.parameters(), lb=-5, ub=5)
        loss = opt.step(closure)
        ```
    """

    def __init__(
        self,
        params: Params | torch.nn.Module,
        lb: float,
        ub: float,
        constraints: Any = None,
        n: int = 100,
        iters: int = 1,
        callback: Callable[..., Any] | None = None,
        minimizer_kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        sampling_method: str | Callable[..., Any] = "simplicial",
    ):
        name = type(self).__name__
        check_box_arg(name, lb, ub, required=True)
        for arg, v in (("n", n), ("iters", iters)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: {arg} must be an int >= 1, got {v!r}")
        check_callable(name, "callback", callback)
        check_dict(name, "minimizer_kwargs", minimizer_kwargs)
        check_dict(name, "options", options)
        super().__init__(params, dict(lb=lb, ub=ub))
        self._kwargs = dict(constraints=constraints, n=n, iters=iters, callback=callback,
                            sampling_method=sampling_method)
        self.minimizer_kwargs = minimizer_kwargs
        self.options = options

    @torch.no_grad()
    def step(self, closure: Callable[..., Any] | None = None) -> float:  # type: ignore[override]
        """Runs SHGO, writes ``res.x`` into the parameters and returns ``res.fun``."""
        problem = self._problem(closure)
        res = scipy.optimize.shgo(problem.value, _box_bounds(problem),
                                  minimizer_kwargs=None if self.minimizer_kwargs is None else dict(self.minimizer_kwargs),
                                  options=None if self.options is None else dict(self.options), **self._kwargs)
        self.result = res
        problem.load(res.x)
        return float(res.fun)


class ScipyDIRECT(WrapperOptimizer):
    r"""``scipy.optimize.direct`` (DIviding RECTangles) over the box ``[lb, ub]``.

    Deterministic global search: repeatedly trisects the hyper-rectangles that are potentially optimal for some
    Lipschitz constant (locally biased DIRECT-L by default). One ``step`` is a complete run; ``res.x`` is written into
    the parameters and ``res.fun`` returned. An exception raised by the closure ends evaluation (later points get
    ``+inf`` without calling the closure) and is re-raised after SciPy returns; the parameters are then left at the
    last evaluated point.

    Args:
        params: parameters or parameter groups; groups may set their own ``lb``/``ub``.
        lb: lower bound of every parameter entry (finite; per-group setting).
        ub: upper bound of every parameter entry (finite; per-group setting).
        maxfun, maxiter, eps, locally_biased, f_min, f_min_rtol, vol_tol, len_tol, callback: forwarded to SciPy
            (defaults ``1000, 1000, 1e-4, True, -inf, 1e-4, 1e-16, 1e-6, None``).

    Reference:
        Jones, Perttunen, Stuckman, "Lipschitzian optimization without the Lipschitz constant", JOTA 79 (1993);
        Gablonsky, Kelley, "A locally-biased form of the DIRECT algorithm", JOGO 21 (2001).

    Example:
        ```python
        opt = tz.optim.wrappers.scipy.ScipyDIRECT(model.parameters(), lb=-5, ub=5, maxfun=2000)
        loss = opt.step(closure)
        ```
    """

    def __init__(
        self,
        params: Params | torch.nn.Module,
        lb: float,
        ub: float,
        maxfun: int | None = 1000,
        maxiter: int = 1000,
        eps: float = 0.0001,
        locally_biased: bool = True,
        f_min: float = -np.inf,
        f_min_rtol: float = 0.0001,
        vol_tol: float = 1e-16,
        len_tol: float = 1e-06,
        callback: Callable[..., Any] | None = None,
    ):
        name = type(self).__name__
        check_box_arg(name, lb, ub, required=True)
        if maxfun is not None and (isinstance(maxfun, bool) or not isinstance(maxfun, int) or maxfun < 1):
            raise ValueError(f"{name}: maxfun must be a positive int or None, got {maxfun!r}")
        if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1:
            raise ValueError(f"{name}: maxiter must be a positive int, got {maxiter!r}")
        for arg, v in (("eps", eps), ("f_min_rtol", f_min_rtol), ("vol_tol", vol_tol), ("len_tol", len_tol)):
            check_number(name, arg, v, allow_none=False)
        check_callable(name, "callback", callback)
        super().__init__(params, dict(lb=lb, ub=ub))
        self._kwargs = dict(maxfun=maxfun, maxiter=maxiter, eps=eps, locally_biased=locally_biased, f_min=f_min,
                            f_min_rtol=f_min_rtol, vol_tol=vol_tol, len_tol=len_tol, callback=callback)

    @torch.no_grad()
    def step(self, closure: Callable[..., Any] | None = None) -> float:  # type: ignore[override]
        """Runs DIRECT, writes ``res.x`` into the parameters and returns ``res.fun``."""
        problem = self._problem(closure)
        res = scipy.optimize.direct(problem.guarded, _box_bounds(problem), **self._kwargs)
        self.result = res
        problem.reraise()
        problem.load(res.x)
        return float(res.fun)


class ScipyBrute(WrapperOptimizer):
    r"""``scipy.optimize.brute``: grid search over the box ``[lb, ub]`` (``Ns`` points per entry, ``Ns^n``
    evaluations), then ``finish`` (default ``scipy.optimize.fmin``) polishes the best grid point.

    One ``step`` evaluates the whole grid; the point found is written into the parameters and its objective value
    returned (the reference returned None).

    Args:
        params: parameters or parameter groups; groups may set their own ``lb``/``ub``.
        lb: lower bound of every parameter entry (finite; per-group setting).
        ub: upper bound of every parameter entry (finite; per-group setting).
        Ns: grid points per entry (endpoints included). Default 20.
        full_output: if truthy, ``opt.result`` keeps SciPy's full output ``(x, fval, grid, Jout)``; otherwise
            ``(x, fval)``. Default 0.
        finish: SciPy's ``finish`` polishing function (``finish(func, x0, args=..., full_output=True,
            disp=...)``), or None for the best grid point. Default ``scipy.optimize.fmin`` (it may leave the box).
        disp: SciPy's ``disp``. Default False.
        workers: SciPy's ``workers``. Default 1 (see ``ScipyDE`` about other processes).

    Reference:
        Virtanen et al., "SciPy 1.0", Nature Methods 17 (2020).

    Example:
        ```python
        opt = tz.optim.wrappers.scipy.ScipyBrute(model.parameters(), lb=-2, ub=2, Ns=11)
        loss = opt.step(closure)
        ```
    """

    def __init__(
        self,
        params: Params | torch.nn.Module,
        lb: float,
        ub: float,
        Ns: int = 20,
        full_output: int = 0,
        finish: Callable[..., Any] | None = scipy.optimize.fmin,
        disp: bool = False,
        workers: int | Callable[..., Any] = 1,
    ):
        name = type(self).__name__
        check_box_arg(name, lb, ub, required=True)
        if isinstance(Ns, bool) or not isinstance(Ns, int) or Ns < 2:
            raise ValueError(f"{name}: Ns must be an int >= 2, got {Ns!r}")
        check_callable(name, "finish", finish)
        super().__init__(params, dict(lb=lb, ub=ub))
        self.Ns = Ns
        self.full_output = full_output
        self.finish = finish
        self.disp = disp
        self.workers = workers

    @torch.no_grad()
    def step(self, closure: Callable[..., Any] | None = None) -> float:  # type: ignore[override]
        """Runs the grid search (and ``finish``), writes the point into the parameters and returns its value."""
        problem = self._problem(closure)
        out = scipy.optimize.brute(problem.value, _box_bounds(problem), Ns=self.Ns, full_output=True,
                                   finish=self.finish, disp=self.disp, workers=self.workers)
        x = np.atleast_1d(np.asarray(out[0], dtype=np.float64))
        fval = float(out[1])
        self.result = (x, fval, out[2], out[3]) if self.full_output else (x, fval)
        problem.load(x)
        return fval
