"""The direct-search solvers of the ``directsearch`` package as ``torch.optim.Optimizer`` objects.

Importing this module imports directsearch (an optional dependency: ``pip install torchzero[directsearch]``).

Each ``step(closure)`` is a complete run from the current parameters that only calls ``closure(False)``; the solution
``res.x`` is written into the parameters and ``res.f`` returned. A NaN loss is passed on as ``+inf``. The solvers draw
random directions from NumPy's global generator (seed it with ``np.random.seed`` for reproducible runs).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import directsearch
import torch
from directsearch.ds import DEFAULT_PARAMS, VALID_POLL_TYPES

from ...utils.params import Params
from ._base import WrapperOptimizer

__all__ = ["DirectSearch", "DirectSearchDS", "DirectSearchProbabilistic", "DirectSearchSubspace", "DirectSearchSTP"]


def _check_kwargs(owner: str, kwargs: dict[str, Any]) -> None:
    for key in ("maxevals", "sketch_dim", "print_freq"):
        v = kwargs.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{owner}: {key} must be a positive int or None, got {v!r}")
    for key in ("alpha0", "alpha_max", "alpha_min", "gamma_inc", "gamma_dec"):
        v = kwargs.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
            raise ValueError(f"{owner}: {key} must be a positive number{' or None' if key == 'alpha0' else ''}, "
                             f"got {v!r}")
    if "gamma_inc" in kwargs and kwargs["gamma_inc"] < 1:
        raise ValueError(f"{owner}: gamma_inc must be >= 1, got {kwargs['gamma_inc']}")
    if "gamma_dec" in kwargs and kwargs["gamma_dec"] >= 1:
        raise ValueError(f"{owner}: gamma_dec must be < 1, got {kwargs['gamma_dec']}")
    if "poll_type" in kwargs and kwargs["poll_type"] not in VALID_POLL_TYPES:
        raise ValueError(f"{owner}: poll_type must be one of {tuple(VALID_POLL_TYPES)}, got {kwargs['poll_type']!r}")
    if "rho" in kwargs and kwargs["rho"] is not None and not callable(kwargs["rho"]):
        raise TypeError(f"{owner}: rho must be a callable forcing function or None, got "
                        f"{type(kwargs['rho']).__name__}")


class _DirectSearchBase(WrapperOptimizer):
    _solver: ClassVar[Callable[..., Any]]

    def __init__(self, params: Params | torch.nn.Module, kwargs: dict[str, Any]):
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(params, {})
        self._kwargs = kwargs

    @torch.no_grad()
    def step(self, closure: Callable[..., Any] | None = None) -> float:  # type: ignore[override]
        """Runs the solver from the current parameters, writes ``res.x`` into them and returns ``res.f``."""
        problem = self._problem(closure)
        res = type(self)._solver(problem.value, problem.x0(), **self._kwargs)
        self.result = res
        problem.load(res.x)
        return float(res.f)


class DirectSearch(_DirectSearchBase):
    r"""``directsearch.solve``: direct search, optionally in random subspaces (sketching) or as stochastic three
    points.

    Polls ``x + α d`` over a set of directions ``d`` (``poll_type``; in a random ``sketch_dim``-dimensional subspace
    when sketching); a poll point with ``f(x + α d) < f(x) − ρ(α‖d‖)`` is accepted and ``α ← γ_inc α``, otherwise
    ``α ← γ_dec α``; stops when ``α < alpha_min`` or after ``maxevals`` evaluations.

    Args:
        params: parameters or parameter groups.
        maxevals: maximum number of evaluations (None: the package's default).
        rho: forcing function ``ρ(t)`` (None: the package's default).
        sketch_dim: dimension of the random subspace (None: no sketching).
        sketch_type: sketching matrix type (``'gaussian'``, ...).
        poll_type: polling directions, one of ``'2n'``, ``'np1'``, ``'random2'``, ``'random_ortho'``.
        alpha0: initial step size (None: the package's default).
        alpha_max: largest step size.
        alpha_min: smallest step size (stopping criterion).
        gamma_inc: step-size increase factor (>= 1).
        gamma_dec: step-size decrease factor (< 1).
        verbose: print progress.
        print_freq: print every ``print_freq`` iterations.
        use_stochastic_three_points: use the stochastic three points method.
        rho_uses_normd: whether the forcing function takes ``α‖d‖`` (else ``α``).

        All defaults are ``directsearch.ds.DEFAULT_PARAMS[name]``.

    Reference:
        Roberts, Royer, "Direct search based on probabilistic descent in reduced spaces", SIAM J. Optim. 33 (2023).

    Example:
        ```python
        opt = tz.optim.wrappers.directsearch.DirectSearch(model.parameters(), maxevals=2000)
        loss = opt.step(closure)
        ```
    """

    _solver = staticmethod(directsearch.solve)

    def __init__(
        self,
        params: Params | torch.nn.Module,
        maxevals: int | None = DEFAULT_PARAMS["maxevals"],
        rho: Callable[[float], float] | None = DEFAULT_PARAMS["rho"],
        sketch_dim: int | None = DEFAULT_PARAMS["sketch_dim"],
        sketch_type: str = DEFAULT_PARAMS["sketch_type"],
        poll_type: str = DEFAULT_PARAMS["poll_type"],
        alpha0: float | None = DEFAULT_PARAMS["alpha0"],
        alpha_max: float = DEFAULT_PARAMS["alpha_max"],
        alpha_min: float = DEFAULT_PARAMS["alpha_min"],
        gamma_inc: float = DEFAULT_PARAMS["gamma_inc"],
        gamma_dec: float = DEFAULT_PARAMS["gamma_dec"],
        verbose: bool = DEFAULT_PARAMS["verbose"],
        print_freq: int | None = DEFAULT_PARAMS["print_freq"],
        use_stochastic_three_points: bool = DEFAULT_PARAMS["use_stochastic_three_points"],
        rho_uses_normd: bool = DEFAULT_PARAMS["rho_uses_normd"],
    ):
        super().__init__(params, dict(
            maxevals=maxevals, rho=rho, sketch_dim=sketch_dim, sketch_type=sketch_type, poll_type=poll_type,
            alpha0=alpha0, alpha_max=alpha_max, alpha_min=alpha_min, gamma_inc=gamma_inc, gamma_dec=gamma_dec,
            verbose=verbose, print_freq=print_freq, use_stochastic_three_points=use_stochastic_three_points,
            rho_uses_normd=rho_uses_normd))


class DirectSearchDS(_DirectSearchBase):
    r"""``directsearch.solve_directsearch``: plain direct search in the full space (no sketching).

    Same iteration as :class:`DirectSearch` with polling directions ``poll_type`` of the full space.

    Args:
        params: parameters or parameter groups.
        maxevals, rho, poll_type, alpha0, alpha_max, alpha_min, gamma_inc, gamma_dec, verbose, print_freq,
            rho_uses_normd: as in :class:`DirectSearch`; defaults ``directsearch.ds.DEFAULT_PARAMS[name]``.

    Reference:
        Kolda, Lewis, Torczon, "Optimization by direct search: new perspectives on some classical and modern
        methods", SIAM Review 45 (2003).

    Example:
        ```python
        opt = tz.optim.wrappers.directsearch.DirectSearchDS(model.parameters(), maxevals=2000)
        loss = opt.step(closure)
        ```
    """

    _solver = staticmethod(directsearch.solve_directsearch)

    def __init__(
        self,
        params: Params | torch.nn.Module,
        maxevals: int | None = DEFAULT_PARAMS["maxevals"],
        rho: Callable[[float], float] | None = DEFAULT_PARAMS["rho"],
        poll_type: str = DEFAULT_PARAMS["poll_type"],
        alpha0: float | None = DEFAULT_PARAMS["alpha0"],
        alpha_max: float = DEFAULT_PARAMS["alpha_max"],
        alpha_min: float = DEFAULT_PARAMS["alpha_min"],
        gamma_inc: float = DEFAULT_PARAMS["gamma_inc"],
        gamma_dec: float = DEFAULT_PARAMS["gamma_dec"],
        verbose: bool = DEFAULT_PARAMS["verbose"],
        print_freq: int | None = DEFAULT_PARAMS["print_freq"],
        rho_uses_normd: bool = DEFAULT_PARAMS["rho_uses_normd"],
    ):
        super().__init__(params, dict(
            maxevals=maxevals, rho=rho, poll_type=poll_type, alpha0=alpha0, alpha_max=alpha_max, alpha_min=alpha_min,
            gamma_inc=gamma_inc, gamma_dec=gamma_dec, verbose=verbose, print_freq=print_freq,
            rho_uses_normd=rho_uses_normd))


class DirectSearchProbabilistic(_DirectSearchBase):
    r"""``directsearch.solve_probabilistic_directsearch``: direct search with random polling directions (descent in
    probability).

    Polls ``x ± α d`` for a random direction ``d``; step-size update as in :class:`DirectSearch`.

    Args:
        params: parameters or parameter groups.
        maxevals, rho, alpha0, alpha_max, alpha_min, gamma_inc, gamma_dec, verbose, print_freq, rho_uses_normd: as
            in :class:`DirectSearch`; defaults ``directsearch.ds.DEFAULT_PARAMS[name]``.

    Reference:
        Gratton, Royer, Vicente, Zhang, "Direct search based on probabilistic descent", SIAM J. Optim. 25 (2015).

    Example:
        ```python
        opt = tz.optim.wrappers.directsearch.DirectSearchProbabilistic(model.parameters(), maxevals=2000)
        loss = opt.step(closure)
        ```
    """

    _solver = staticmethod(directsearch.solve_probabilistic_directsearch)

    def __init__(
        self,
        params: Params | torch.nn.Module,
        maxevals: int | None = DEFAULT_PARAMS["maxevals"],
        rho: Callable[[float], float] | None = DEFAULT_PARAMS["rho"],
        alpha0: float | None = DEFAULT_PARAMS["alpha0"],
        alpha_max: float = DEFAULT_PARAMS["alpha_max"],
        alpha_min: float = DEFAULT_PARAMS["alpha_min"],
        gamma_inc: float = DEFAULT_PARAMS["gamma_inc"],
        gamma_dec: float = DEFAULT_PARAMS["gamma_dec"],
        verbose: bool = DEFAULT_PARAMS["verbose"],
        print_freq: int | None = DEFAULT_PARAMS["print_freq"],
        rho_uses_normd: bool = DEFAULT_PARAMS["rho_uses_normd"],
    ):
        super().__init__(params, dict(
            maxevals=maxevals, rho=rho, alpha0=alpha0, alpha_max=alpha_max, alpha_min=alpha_min, gamma_inc=gamma_inc,
            gamma_dec=gamma_dec, verbose=verbose, print_freq=print_freq, rho_uses_normd=rho_uses_normd))


class DirectSearchSubspace(_DirectSearchBase):
    r"""``directsearch.solve_subspace_directsearch``: direct search polling in random low-dimensional subspaces.

    Each iteration draws a ``sketch_dim × n`` sketch and polls directions of that subspace; step-size update as in
    :class:`DirectSearch`.

    Args:
        params: parameters or parameter groups.
        maxevals, rho, sketch_dim, sketch_type, poll_type, alpha0, alpha_max, alpha_min, gamma_inc, gamma_dec,
            verbose, print_freq, rho_uses_normd: as in :class:`DirectSearch`; defaults
            ``directsearch.ds.DEFAULT_PARAMS[name]``.

    Reference:
        Roberts, Royer, "Direct search based on probabilistic descent in reduced spaces", SIAM J. Optim. 33 (2023).

    Example:
        ```python
        opt = tz.optim.wrappers.directsearch.DirectSearchSubspace(model.parameters(), sketch_dim=2, maxevals=2000)
        loss = opt.step(closure)
        ```
    """

    _solver = staticmethod(directsearch.solve_subspace_directsearch)

    def __init__(
        self,
        params: Params | torch.nn.Module,
        maxevals: int | None = DEFAULT_PARAMS["maxevals"],
        rho: Callable[[float], float] | None = DEFAULT_PARAMS["rho"],
        sketch_dim: int | None = DEFAULT_PARAMS["sketch_dim"],
        sketch_type: str = DEFAULT_PARAMS["sketch_type"],
        poll_type: str = DEFAULT_PARAMS["poll_type"],
        alpha0: float | None = DEFAULT_PARAMS["alpha0"],
        alpha_max: float = DEFAULT_PARAMS["alpha_max"],
        alpha_min: float = DEFAULT_PARAMS["alpha_min"],
        gamma_inc: float = DEFAULT_PARAMS["gamma_inc"],
        gamma_dec: float = DEFAULT_PARAMS["gamma_dec"],
        verbose: bool = DEFAULT_PARAMS["verbose"],
        print_freq: int | None = DEFAULT_PARAMS["print_freq"],
        rho_uses_normd: bool = DEFAULT_PARAMS["rho_uses_normd"],
    ):
        super().__init__(params, dict(
            maxevals=maxevals, rho=rho, sketch_dim=sketch_dim, sketch_type=sketch_type, poll_type=poll_type,
            alpha0=alpha0, alpha_max=alpha_max, alpha_min=alpha_min, gamma_inc=gamma_inc, gamma_dec=gamma_dec,
            verbose=verbose, print_freq=print_freq, rho_uses_normd=rho_uses_normd))


class DirectSearchSTP(_DirectSearchBase):
    r"""``directsearch.solve_stp``: the stochastic three points method.

    Draws a random direction ``d`` and moves to the best of ``x``, ``x + α d``, ``x − α d``; ``α`` decreases over
    the iterations.

    Args:
        params: parameters or parameter groups.
        maxevals, alpha0, alpha_min, verbose, print_freq: as in :class:`DirectSearch`; defaults
            ``directsearch.ds.DEFAULT_PARAMS[name]``.

    Reference:
        Bergou, Gorbunov, Richtárik, "Stochastic three points method for unconstrained smooth minimization",
        SIAM J. Optim. 30 (2020).

    Example:
        ```python
        opt = tz.optim.wrappers.directsearch.DirectSearchSTP(model.parameters(), maxevals=2000)
        loss = opt.step(closure)
        ```
    """

    _solver = staticmethod(directsearch.solve_stp)

    def __init__(
        self,
        params: Params | torch.nn.Module,
        maxevals: int | None = DEFAULT_PARAMS["maxevals"],
        alpha0: float | None = DEFAULT_PARAMS["alpha0"],
        alpha_min: float = DEFAULT_PARAMS["alpha_min"],
        verbose: bool = DEFAULT_PARAMS["verbose"],
        print_freq: int | None = DEFAULT_PARAMS["print_freq"],
    ):
        super().__init__(params, dict(maxevals=maxevals, alpha0=alpha0, alpha_min=alpha_min, verbose=verbose,
                                      print_freq=print_freq))
