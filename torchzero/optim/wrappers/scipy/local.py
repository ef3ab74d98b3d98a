"""SciPy's local methods: ``scipy.optimize.minimize``, and stationary points through ``root`` and ``least_squares``
on the gradient. See the package docstring for the common behaviour."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import scipy.optimize
import torch

from ....utils.params import Params
from .._base import Problem, WrapperOptimizer, check_box_arg, check_callable, check_dict, check_number

__all__ = ["ScipyMinimize", "ScipyRootOptimization", "ScipyLeastSquaresOptimization"]

_FD = ("2-point", "3-point", "cs")
_GRADIENT_METHODS = ("cg", "bfgs", "newton-cg", "l-bfgs-b", "tnc", "slsqp", "dogleg", "trust-ncg", "trust-krylov",
                     "trust-exact", "trust-constr")
_AUTOGRAD_HESS_METHODS = ("newton-cg", "dogleg", "trust-ncg", "trust-krylov", "trust-exact")
_HESS_METHODS = (*_AUTOGRAD_HESS_METHODS, "trust-constr")


class ScipyMinimize(WrapperOptimizer):
    r"""``scipy.optimize.minimize`` as a ``torch.optim.Optimizer``: ``x* = argmin_x f(x)`` from the current point.

    One ``step(closure)`` is a complete run of ``method``; the solution ``res.x`` is written into the parameters and
    ``res.fun`` returned (as a float). With ``jac='autograd'`` the gradient methods (``None``, cg, bfgs, newton-cg,
    l-bfgs-b, tnc, slsqp, dogleg, trust-ncg, trust-krylov, trust-exact, trust-constr) get the loss and its autograd
    gradient from one ``closure()`` call; with ``hess='autograd'`` newton-cg, dogleg, trust-ncg, trust-krylov and
    trust-exact get the dense autograd Hessian (``n × n``: only for small problems). The starting point is the
    parameters in float64 for every method (SciPy then works in float64 whatever the parameters' dtype).

    Args:
        params: parameters or parameter groups; groups may set their own ``lb``/``ub``.
        method: SciPy's ``method`` (a name, a custom callable, or None to let SciPy choose). Default None.
        lb: lower bound of every parameter entry (per-group setting), None for unbounded. Default None.
        ub: upper bound of every parameter entry (per-group setting), None for unbounded. Default None.
            Any finite bound passes ``bounds`` to SciPy.
        constraints: SciPy's ``constraints``, functions of the flattened float64 parameter vector. Default ().
        tol: SciPy's ``tol``. Default None.
        callback: SciPy's ``callback`` (receives what SciPy gives it: the vector or an ``OptimizeResult``).
        options: SciPy's ``options`` dict (e.g. ``{"maxiter": 100}``); copied, not modified. Default None.
        jac: ``'autograd'`` (exact gradient from the closure), or SciPy's finite differences ``'2-point'``,
            ``'3-point'``, ``'cs'``. Ignored by derivative-free methods. Default ``'autograd'``.
        hess: ``'autograd'`` (dense Hessian from autograd, for the methods listed above), a finite-difference name
            or a ``scipy.optimize.HessianUpdateStrategy`` (passed to SciPy for the methods that take ``hess``).
            Default ``'autograd'``.

    Reference:
        Virtanen et al., "SciPy 1.0: fundamental algorithms for scientific computing in Python", Nature Methods 17
        (2020).

    Example:
        ```python
        opt = tz.optim.wrappers.scipy.ScipyMinimize(model.parameters(), method="l-bfgs-b", options={"maxiter": 200})

        def closure(backward=True):
            loss = loss_fn(model(inputs), targets)
            if backward:
                opt.zero_grad()
                loss.backward()
            return loss

        loss = opt.step(closure)  # a complete L-BFGS-B run
        ```
    """

    def __init__(
        self,
        params: Params | torch.nn.Module,
        method: Literal["nelder-mead", "powell", "cg", "bfgs", "newton-cg", "l-bfgs-b", "tnc", "cobyla", "cobyqa",
                        "slsqp", "trust-constr", "dogleg", "trust-ncg", "trust-exact", "trust-krylov"] | str | None = None,
        lb: float | None = None,
        ub: float | None = None,
        constraints: Any = (),
        tol: float | None = None,
        callback: Callable[..., Any] | None = None,
        options: dict[str, Any] | None = None,
        jac: Literal["2-point", "3-point", "cs", "autograd"] = "autograd",
        hess: Literal["2-point", "3-point", "cs", "autograd"] | scipy.optimize.HessianUpdateStrategy = "autograd",
    ):
        name = type(self).__name__
        if method is not None and not isinstance(method, str) and not callable(method):
            raise TypeError(f"{name}: method must be a string, a callable or None, got {type(method).__name__}")
        check_box_arg(name, lb, ub, required=False)
        check_number(name, "tol", tol)
        check_callable(name, "callback", callback)
        check_dict(name, "options", options)
        if jac not in (*_FD, "autograd"):
            raise ValueError(f"{name}: jac must be one of {(*_FD, 'autograd')}, got {jac!r}")
        if not (isinstance(hess, scipy.optimize.HessianUpdateStrategy) or hess in (*_FD, "autograd")):
            raise ValueError(f"{name}: hess must be one of {(*_FD, 'autograd')} or a HessianUpdateStrategy, "
                             f"got {hess!r}")
        super().__init__(params, dict(lb=lb, ub=ub))
        self.method = method.lower() if isinstance(method, str) else method
        self.constraints = constraints
        self.tol = tol
        self.callback = callback
        self.options = options
        self.jac = jac
        self.hess = hess

    def _bounds(self, problem: Problem) -> scipy.optimize.Bounds | None:
        lb, ub = problem.box(required=False)
        if np.isfinite(lb).any() or np.isfinite(ub).any():
            return scipy.optimize.Bounds(lb, ub)
        return None

    @torch.no_grad()
    def step(self, closure: Callable[..., Any] | None = None) -> float:  # type: ignore[override]
        """Runs ``scipy.optimize.minimize`` from the current parameters, writes ``res.x`` into them and returns
        ``res.fun``."""
        problem = self._problem(closure)
        method = self.method
        uses_gradient = method is None or callable(method) or method in _GRADIENT_METHODS

        jac: Any = None
        fun: Callable[[np.ndarray], Any] = problem.value
        if uses_gradient:
            if self.jac == "autograd":
                fun, jac = problem.value_and_grad, True
            else:
                jac = self.jac

        hess: Any = None
        if self.hess == "autograd":
            if method in _AUTOGRAD_HESS_METHODS:
                hess = problem.hessian
        elif method in _HESS_METHODS or callable(method):
            hess = self.hess

        res = scipy.optimize.minimize(
            fun, problem.x0(), method=method, jac=jac, hess=hess, bounds=self._bounds(problem),
            constraints=self.constraints, tol=self.tol, callback=self.callback,
            options=None if self.options is None else dict(self.options),
        )
        self.result = res
        problem.load(res.x)
        return float(res.fun)


_ROOT_METHODS = ("hybr", "lm", "broyden1", "broyden2", "anderson", "linearmixing", "diagbroyden", "excitingmixing",
                 "krylov", "df-sane")
_ROOT_JAC_METHODS = ("hybr", "lm")


class ScipyRootOptimization(WrapperOptimizer):
    r"""Finds a stationary point ``∇f(x) = 0`` with ``scipy.optimize.root`` applied to the gradient.

    The residual is the autograd gradient (one ``closure()`` per call) and, with ``jac='autograd'``, its Jacobian
    is the dense autograd Hessian (one ``closure(False)`` per call, only when SciPy asks for it; for ``'hybr'`` and
    ``'lm'``, the other methods are Jacobian-free and ignore ``jac``). Any stationary point is a solution: minima, maxima and saddle points alike. One ``step`` is a complete
    run; the solution is written into the parameters.

    Args:
        params: parameters or parameter groups.
        method: SciPy's root-finding method. Default ``'hybr'``.
        tol: SciPy's ``tol``. Default None.
        callback: SciPy's ``callback``. Default None.
        options: SciPy's ``options`` dict (copied). Default None.
        jac: ``'autograd'`` for the autograd Hessian; with any of ``'2-point'``, ``'3-point'``, ``'cs'`` SciPy
            estimates the Jacobian by its own forward differences (``root`` has no choice of scheme).
            Default ``'autograd'``.

    Returns (from ``step``):
        ``res.fun``, the gradient at the solution (a float64 array), as the reference does.

    Reference:
        Virtanen et al., "SciPy 1.0", Nature Methods 17 (2020); Moré, Garbow, Hillstrom, "User guide for MINPACK-1"
        (1980).

    Example:
        ```python
        opt = tz.optim.wrappers.scipy.ScipyRootOptimization(model.parameters(), method="hybr")
        grad_at_solution = opt.step(closure)
        ```
    """

    def __init__(
        self,
        params: Params | torch.nn.Module,
        method: Literal["hybr", "lm", "broyden1", "broyden2", "anderson", "linearmixing", "diagbroyden",
                        "excitingmixing", "krylov", "df-sane"] = "hybr",
        tol: float | None = None,
        callback: Callable[..., Any] | None = None,
        options: dict[str, Any] | None = None,
        jac: Literal["2-point", "3-point", "cs", "autograd"] = "autograd",
    ):
        name = type(self).__name__
        if not isinstance(method, str) or method.lower() not in _ROOT_METHODS:
            raise ValueError(f"{name}: method must be one of {_ROOT_METHODS}, got {method!r}")
        check_number(name, "tol", tol)
        check_callable(name, "callback", callback)
        check_dict(name, "options", options)
        if jac not in (*_FD, "autograd"):
            raise ValueError(f"{name}: jac must be one of {(*_FD, 'autograd')}, got {jac!r}")
        super().__init__(params, {})
        self.method = method.lower()
        self.tol = tol
        self.callback = callback
        self.options = options
        self.jac = jac

    @torch.no_grad()
    def step(self, closure: Callable[..., Any] | None = None) -> np.ndarray:  # type: ignore[override]
        """Runs ``scipy.optimize.root`` on the gradient, writes ``res.x`` into the parameters and returns
        ``res.fun`` (the gradient there)."""
        problem = self._problem(closure)
        jac = problem.hessian if self.jac == "autograd" and self.method in _ROOT_JAC_METHODS else None
        res = scipy.optimize.root(problem.grad, problem.x0(), method=self.method, jac=jac, tol=self.tol,
                                  callback=self.callback, options=None if self.options is None else dict(self.options))
        self.result = res
        problem.load(res.x)
        return np.asarray(res.fun)


class ScipyLeastSquaresOptimization(WrapperOptimizer):
    r"""Finds a stationary point by ``scipy.optimize.least_squares`` on the gradient: ``min_x ½‖∇f(x)‖²``.

    Residuals are the autograd gradient and, with ``jac='autograd'``, their Jacobian is the dense autograd Hessian.
    The other arguments are forwarded to SciPy unchanged. One ``step`` is a complete run; the solution is written
    into the parameters.

    Args:
        params: parameters or parameter groups.
        method: ``'trf'``, ``'dogbox'`` or ``'lm'``. Default ``'trf'``.
        jac: ``'autograd'`` or SciPy's ``'2-point'``, ``'3-point'``, ``'cs'``. Default ``'autograd'``.
        bounds: SciPy's ``bounds`` on the flattened parameter vector. Default ``(-inf, inf)``.
        ftol, xtol, gtol, x_scale, loss, f_scale, diff_step, tr_solver, tr_options, jac_sparsity, max_nfev,
            verbose: forwarded to ``scipy.optimize.least_squares`` (defaults ``1e-8, 1e-8, 1e-8, 1.0, 'linear',
            1.0, None, None, None, None, None, 0``).

    Returns (from ``step``):
        ``res.fun``, the residuals (gradient) at the solution, a float64 array.

    Reference:
        Virtanen et al., "SciPy 1.0", Nature Methods 17 (2020); Branch, Coleman, Li, "A subspace, interior, and
        conjugate gradient method for large-scale bound-constrained minimization problems", SISC 21 (1999).

    Example:
        ```python
        opt = tz.optim.wrappers.scipy.ScipyLeastSquaresOptimization(model.parameters())
        grad_at_solution = opt.step(closure)
        ```
    """

    def __init__(
        self,
        params: Params | torch.nn.Module,
        method: Literal["trf", "dogbox", "lm"] = "trf",
        jac: Literal["2-point", "3-point", "cs", "autograd"] = "autograd",
        bounds: Any = (-np.inf, np.inf),
        ftol: float | None = 1e-08,
        xtol: float | None = 1e-08,
        gtol: float | None = 1e-08,
        x_scale: Any = 1.0,
        loss: str | Callable[..., Any] = "linear",
        f_scale: float = 1.0,
        diff_step: Any = None,
        tr_solver: Literal["exact", "lsmr"] | None = None,
        tr_options: dict[str, Any] | None = None,
        jac_sparsity: Any = None,
        max_nfev: int | None = None,
        verbose: int = 0,
    ):
        name = type(self).__name__
        if method not in ("trf", "dogbox", "lm"):
            raise ValueError(f"{name}: method must be one of ('trf', 'dogbox', 'lm'), got {method!r}")
        if jac not in (*_FD, "autograd"):
            raise ValueError(f"{name}: jac must be one of {(*_FD, 'autograd')}, got {jac!r}")
        for arg, v in (("ftol", ftol), ("xtol", xtol), ("gtol", gtol)):
            check_number(name, arg, v)
        check_number(name, "f_scale", f_scale, allow_none=False)
        if max_nfev is not None and (isinstance(max_nfev, bool) or not isinstance(max_nfev, int) or max_nfev < 1):
            raise ValueError(f"{name}: max_nfev must be a positive int or None, got {max_nfev!r}")
        check_dict(name, "tr_options", tr_options)
        super().__init__(params, {})
        self.jac = jac
        self._kwargs = dict(method=method, bounds=bounds, ftol=ftol, xtol=xtol, gtol=gtol, x_scale=x_scale,
                            loss=loss, f_scale=f_scale, diff_step=diff_step, tr_solver=tr_solver,
                            tr_options=tr_options, jac_sparsity=jac_sparsity, max_nfev=max_nfev, verbose=verbose)

    @torch.no_grad()
    def step(self, closure: Callable[..., Any] | None = None) -> np.ndarray:  # type: ignore[override]
        """Runs ``scipy.optimize.least_squares`` on the gradient, writes ``res.x`` into the parameters and returns
        ``res.fun`` (the gradient there)."""
        problem = self._problem(closure)
        jac: Any = self.jac
        if jac == "autograd":
            def jac(x: np.ndarray, *_: Any) -> np.ndarray:
                return problem.hessian(x)
        kwargs = dict(self._kwargs)
        if kwargs["tr_options"] is None:
            kwargs["tr_options"] = {}
        else:
            kwargs["tr_options"] = dict(kwargs["tr_options"])
        res = scipy.optimize.least_squares(problem.grad, problem.x0(), jac=jac, **kwargs)
        self.result = res
        problem.load(res.x)
        return np.asarray(res.fun)
