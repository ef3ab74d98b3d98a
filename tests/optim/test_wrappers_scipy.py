"""SciPy wrappers against SciPy called directly on the same objective written in NumPy: same iterates, iteration and
evaluation counts; the closure sees exactly the points SciPy asks for; bounds, argument validation, return values."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

scipy_optimize = pytest.importorskip("scipy.optimize")

from torchzero.optim.wrappers.scipy import (  # noqa: E402
    ScipyBrute,
    ScipyDE,
    ScipyDIRECT,
    ScipyDualAnnealing,
    ScipyLeastSquaresOptimization,
    ScipyMinimize,
    ScipyRootOptimization,
    ScipySHGO,
)


def rosen_torch(x: torch.Tensor) -> torch.Tensor:
    a, b = x[0], x[1]
    t = b - a * a
    u = 1 - a
    return 100 * t * t + u * u


def rosen_np(x: np.ndarray) -> float:
    a, b = x[0], x[1]
    t = b - a * a
    u = 1 - a
    return float(100 * t * t + u * u)


def rosen_grad_np(x: np.ndarray) -> np.ndarray:
    a, b = x
    t = b - a * a
    return np.array([-400 * a * t - 2 * (1 - a), 200 * t])


def rosen_hess_np(x: np.ndarray) -> np.ndarray:
    a, b = x
    return np.array([[1200 * a * a - 400 * b + 2, -400 * a], [-400 * a, 200.0]])


def bowl_torch(x: torch.Tensor) -> torch.Tensor:
    """A bumpy bowl with several local minima, computed with the same scalar operations as ``bowl_np``."""
    a, b = x[0], x[1]
    return (a - 0.3) * (a - 0.3) + 3 * (b + 0.7) * (b + 0.7) + 0.5 * torch.sin(5 * a) * torch.sin(5 * a)


def bowl_np(x: np.ndarray) -> float:
    a, b = x[0], x[1]
    return float((a - 0.3) * (a - 0.3) + 3 * (b + 0.7) * (b + 0.7) + 0.5 * np.sin(5 * a) * np.sin(5 * a))


class Closure:
    """``closure(backward=True)`` for ``f(x)`` recording the points (as float64 arrays) it is evaluated at."""

    def __init__(self, opt: torch.optim.Optimizer, x: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]):
        self.opt, self.x, self.f = opt, x, f
        self.points: list[np.ndarray] = []

    def __call__(self, backward: bool = True) -> torch.Tensor:
        self.points.append(self.x.detach().double().numpy().copy())
        loss = self.f(self.x)
        if backward:
            self.opt.zero_grad()
            loss.backward()
        return loss


class Recorded:
    """A NumPy function recording the points it is evaluated at."""

    def __init__(self, f: Callable[[np.ndarray], Any]):
        self.f = f
        self.points: list[np.ndarray] = []

    def __call__(self, x: np.ndarray, *args: Any) -> Any:
        self.points.append(np.array(x, dtype=np.float64))
        return self.f(x)


def param(values: list[float], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, requires_grad=True)


# ---------------------------------------------------------------------------------------------------- minimize
def test_nelder_mead_evaluates_exactly_scipys_points():
    x = param([-1.2, 1.0])
    opt = ScipyMinimize([x], method="nelder-mead", options={"maxiter": 200})
    closure = Closure(opt, x, rosen_torch)
    value = opt.step(closure)

    ref_f = Recorded(rosen_np)
    ref = scipy_optimize.minimize(ref_f, np.array([-1.2, 1.0]), method="nelder-mead", options={"maxiter": 200})
    assert len(closure.points) == len(ref_f.points) == ref.nfev == opt.num_evaluations
    for ours, theirs in zip(closure.points, ref_f.points):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(x.detach().numpy(), ref.x)
    assert value == ref.fun


def test_trust_exact_rosenbrock_same_iterations_as_scipy():
    x = param([-1.2, 1.0])
    opt = ScipyMinimize([x], method="trust-exact")
    opt.step(Closure(opt, x, rosen_torch))
    ref = scipy_optimize.minimize(rosen_np, np.array([-1.2, 1.0]), jac=rosen_grad_np, hess=rosen_hess_np,
                                  method="trust-exact")
    assert ref.success and opt.result.success
    assert opt.result.nit == ref.nit and opt.result.nfev == ref.nfev and opt.result.nhev == ref.nhev
    np.testing.assert_allclose(x.detach().numpy(), ref.x, rtol=0, atol=1e-10)
    np.testing.assert_allclose(x.detach().numpy(), [1.0, 1.0], atol=1e-8)


@pytest.mark.parametrize("method", ["newton-cg", "dogleg", "trust-ncg", "trust-krylov"])
def test_autograd_hessian_methods_match_scipy(method: str):
    x0 = [-1.2, 1.0] if method != "dogleg" else [0.8, 0.5]  # dogleg needs a positive definite Hessian
    x = param(x0)
    opt = ScipyMinimize([x], method=method)
    closure = Closure(opt, x, rosen_torch)
    opt.step(closure)
    ref = scipy_optimize.minimize(rosen_np, np.array(x0), jac=rosen_grad_np, hess=rosen_hess_np, method=method)
    assert opt.result.nit == ref.nit and opt.result.nhev == ref.nhev
    np.testing.assert_allclose(x.detach().numpy(), ref.x, atol=1e-8)
    assert opt.num_evaluations == len(closure.points) >= opt.result.nfev + opt.result.nhev


@pytest.mark.parametrize("jac", ["autograd", "2-point", "3-point"])
def test_bfgs_matches_scipy_and_counts_evaluations(jac: str):
    x = param([-1.2, 1.0])
    opt = ScipyMinimize([x], method="bfgs", jac=jac)
    closure = Closure(opt, x, rosen_torch)
    opt.step(closure)
    ref = scipy_optimize.minimize(rosen_np, np.array([-1.2, 1.0]), method="bfgs",
                                  jac=rosen_grad_np if jac == "autograd" else jac)
    np.testing.assert_allclose(x.detach().numpy(), ref.x, atol=1e-6 if jac == "autograd" else 1e-4)
    assert opt.num_evaluations == len(closure.points) == opt.result.nfev
    if jac != "autograd":  # the same finite differences of the same function: the same run
        assert opt.result.nfev == ref.nfev and opt.result.nit == ref.nit


def test_per_group_bounds_and_float32():
    """Group bounds expand per entry; a bound-constrained L-BFGS-B run equals SciPy's with the same box; float32
    parameters are optimised in float64 by SciPy and hold the float32-rounded solution."""
    a = param([2.0, 2.0])
    b = param([2.0], dtype=torch.float32)
    c = torch.tensor([1.5, -1.0, 0.25], dtype=torch.float64)

    def f(ps: list[torch.Tensor]) -> torch.Tensor:
        v = torch.cat([ps[0], ps[1].double()])
        return ((v - c) ** 2).sum()

    opt = ScipyMinimize([{"params": [a], "lb": 0.0, "ub": 1.0}, {"params": [b]}], method="l-bfgs-b")

    def closure(backward: bool = True) -> torch.Tensor:
        loss = f([a, b])
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    value = opt.step(closure)
    assert isinstance(opt.result.x, np.ndarray) and opt.result.x.dtype == np.float64
    np.testing.assert_allclose(a.detach().numpy(), [1.0, 0.0], atol=1e-6)
    assert a.detach()[0] == 1.0 and a.detach()[1] == 0.0  # exactly on the bounds
    assert b.dtype == torch.float32 and abs(b.item() - 0.25) < 1e-5
    assert value == pytest.approx(0.25 + 1.0, abs=1e-8)


def test_options_and_callback_are_passed_and_not_modified():
    options = {"maxiter": 3}
    seen: list[Any] = []
    x = param([-1.2, 1.0])
    opt = ScipyMinimize([x], method="bfgs", options=options, callback=lambda r: seen.append(r))
    opt.step(Closure(opt, x, rosen_torch))
    assert options == {"maxiter": 3}
    assert opt.result.nit == 3 and len(seen) == 3


def test_minimize_argument_validation():
    x = param([1.0])
    with pytest.raises(ValueError, match="ScipyMinimize: jac"):
        ScipyMinimize([x], jac="forward")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ScipyMinimize: hess"):
        ScipyMinimize([x], hess="exact")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ScipyMinimize: method"):
        ScipyMinimize([x], method=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ScipyMinimize: lb must be smaller than ub"):
        ScipyMinimize([x], lb=1, ub=0)
    with pytest.raises(TypeError, match="ScipyMinimize: options"):
        ScipyMinimize([x], options=[("maxiter", 3)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ScipyMinimize: tol"):
        ScipyMinimize([x], tol=-1.0)


def test_hessian_update_strategy_is_passed():
    x = param([-1.2, 1.0])
    opt = ScipyMinimize([x], method="trust-constr", hess=scipy_optimize.BFGS())
    opt.step(Closure(opt, x, rosen_torch))
    np.testing.assert_allclose(x.detach().numpy(), [1.0, 1.0], atol=1e-5)


# ---------------------------------------------------------------------------------------------------- root / lsq
def _cubic_torch(x: torch.Tensor) -> torch.Tensor:
    # gradient: x^3 + x - t, Hessian: diag(3x^2 + 1)
    t = torch.tensor([1.0, -2.0, 0.5], dtype=x.dtype)
    return (x**4 / 4 + x**2 / 2 - t * x).sum()


def _cubic_grad(x: np.ndarray) -> np.ndarray:
    return x**3 + x - np.array([1.0, -2.0, 0.5])


def _cubic_hess(x: np.ndarray) -> np.ndarray:
    return np.diag(3 * x**2 + 1)


@pytest.mark.parametrize("method", ["hybr", "lm"])
def test_root_uses_autograd_hessian_as_jacobian(method: str):
    x = param([0.0, 0.0, 0.0])
    opt = ScipyRootOptimization([x], method=method)
    closure = Closure(opt, x, _cubic_torch)
    g = opt.step(closure)
    ref_f, ref_j = Recorded(_cubic_grad), Recorded(_cubic_hess)
    ref = scipy_optimize.root(ref_f, np.zeros(3), method=method, jac=ref_j)
    np.testing.assert_allclose(x.detach().numpy(), ref.x, atol=1e-12)
    assert opt.result.nfev == ref.nfev and opt.result.njev == ref.njev
    np.testing.assert_allclose(g, _cubic_grad(x.detach().numpy()), atol=1e-15)
    # one closure call per gradient and per Hessian SciPy asks for (the Hessian only when asked)
    assert opt.num_evaluations == len(closure.points) == len(ref_f.points) + len(ref_j.points)


def test_root_jacobian_free_method():
    x = param([0.0, 0.0, 0.0])
    opt = ScipyRootOptimization([x], method="df-sane", options={"fatol": 1e-12})
    opt.step(Closure(opt, x, _cubic_torch))
    ref = scipy_optimize.root(_cubic_grad, np.zeros(3), method="df-sane", options={"fatol": 1e-12})
    np.testing.assert_allclose(x.detach().numpy(), ref.x, atol=1e-10)


def test_least_squares_on_gradient_matches_scipy():
    x = param([0.0, 0.0, 0.0])
    opt = ScipyLeastSquaresOptimization([x])
    g = opt.step(Closure(opt, x, _cubic_torch))
    ref = scipy_optimize.least_squares(_cubic_grad, np.zeros(3), jac=lambda v: _cubic_hess(v), x_scale=1.0)
    np.testing.assert_allclose(x.detach().numpy(), ref.x, atol=1e-12)
    assert opt.result.nfev == ref.nfev and opt.result.njev == ref.njev
    assert opt.num_evaluations == ref.nfev + ref.njev
    np.testing.assert_allclose(g, ref.fun, atol=1e-12)


def test_root_and_lsq_validation():
    x = param([1.0])
    with pytest.raises(ValueError, match="ScipyRootOptimization: method"):
        ScipyRootOptimization([x], method="newton")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ScipyLeastSquaresOptimization: method"):
        ScipyLeastSquaresOptimization([x], method="gn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ScipyLeastSquaresOptimization: max_nfev"):
        ScipyLeastSquaresOptimization([x], max_nfev=0)


# ---------------------------------------------------------------------------------------------------- global
def test_de_equals_scipy_with_same_seed():
    x = param([1.0, 1.0])
    opt = ScipyDE([x], lb=-2, ub=2, seed=3, maxiter=30)
    closure = Closure(opt, x, bowl_torch)
    value = opt.step(closure)
    ref_f = Recorded(bowl_np)
    ref = scipy_optimize.differential_evolution(ref_f, [(-2, 2)] * 2, x0=np.array([1.0, 1.0]), seed=3, maxiter=30,
                                                polish=False)
    assert len(closure.points) == len(ref_f.points) == ref.nfev
    for ours, theirs in zip(closure.points, ref_f.points):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(x.detach().numpy(), ref.x)
    assert value == ref.fun


def test_dual_annealing_equals_scipy_with_same_rng():
    x = param([1.0, 1.0])
    opt = ScipyDualAnnealing([x], lb=-2, ub=2, rng=1, maxiter=20)
    closure = Closure(opt, x, bowl_torch)
    value = opt.step(closure)
    ref = scipy_optimize.dual_annealing(bowl_np, [(-2, 2)] * 2, x0=np.array([1.0, 1.0]), rng=1, maxiter=20)
    np.testing.assert_array_equal(x.detach().numpy(), ref.x)
    assert value == ref.fun and opt.num_evaluations == ref.nfev


@pytest.mark.parametrize("wrapper, call", [
    (lambda p: ScipySHGO(p, lb=-2, ub=2), lambda f: scipy_optimize.shgo(f, [(-2, 2)] * 2)),
    (lambda p: ScipyDIRECT(p, lb=-2, ub=2, maxfun=500), lambda f: scipy_optimize.direct(f, [(-2, 2)] * 2, maxfun=500)),
    (lambda p: ScipyBrute(p, lb=-2, ub=2, Ns=9, finish=None),
     lambda f: scipy_optimize.brute(f, [(-2, 2)] * 2, Ns=9, finish=None, full_output=True)),
], ids=["shgo", "direct", "brute"])
def test_box_searches_equal_scipy(wrapper: Callable, call: Callable):
    x = param([1.0, 1.0])
    opt = wrapper([x])
    closure = Closure(opt, x, bowl_torch)
    value = opt.step(closure)
    ref_f = Recorded(bowl_np)
    ref = call(ref_f)
    ref_x, ref_fun = (ref[0], ref[1]) if isinstance(ref, tuple) else (ref.x, ref.fun)
    assert len(closure.points) == len(ref_f.points)
    for ours, theirs in zip(closure.points, ref_f.points):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(x.detach().numpy(), ref_x)
    assert value == ref_fun
    assert opt.num_evaluations == len(closure.points)


def test_brute_full_output_and_finish():
    x = param([1.0, 1.0])
    opt = ScipyBrute([x], lb=-2, ub=2, Ns=5, full_output=1)
    value = opt.step(Closure(opt, x, bowl_torch))
    assert isinstance(value, float) and value == bowl_torch(x.detach()).item()
    xs, fval, grid, jout = opt.result
    assert grid.shape == (2, 5, 5) and jout.shape == (5, 5) and fval == value
    assert value <= jout.min()  # the finish (fmin) polished the best grid point


def test_direct_reraises_closure_exception_after_scipy_returns():
    x = param([1.0, 1.0])
    calls = [0]

    def f(v: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 5:
            raise KeyError("closure failed")
        return bowl_torch(v)

    opt = ScipyDIRECT([x], lb=-2, ub=2)
    with pytest.raises(KeyError, match="closure failed"):
        opt.step(Closure(opt, x, f))
    assert calls[0] == 5 and opt.num_evaluations == 4


@pytest.mark.parametrize("cls, kw", [(ScipyDE, {"seed": 0}), (ScipyDualAnnealing, {"rng": 0})])
def test_start_outside_box_is_an_error(cls: type, kw: dict):
    x = param([3.0, 0.0])
    opt = cls([x], lb=-2, ub=2, **kw)
    with pytest.raises(ValueError, match=f"{cls.__name__} starts from the current parameters"):
        opt.step(Closure(opt, x, bowl_torch))
    assert x.detach().tolist() == [3.0, 0.0]


@pytest.mark.parametrize("cls", [ScipyDE, ScipyDualAnnealing, ScipySHGO, ScipyDIRECT, ScipyBrute])
def test_box_argument_validation(cls: type):
    x = param([1.0])
    name = cls.__name__
    with pytest.raises(ValueError, match=f"{name}: lb must be finite"):
        cls([x], lb=-math.inf, ub=1)
    with pytest.raises(ValueError, match=f"{name}: lb must be smaller than ub"):
        cls([x], lb=2, ub=1)
    with pytest.raises(TypeError, match=f"{name}: ub must be a finite number"):
        cls([x], lb=0, ub=None)
    opt = cls([{"params": [x], "lb": None}], lb=0, ub=1)
    with pytest.raises(ValueError, match=f"{name} searches a bounded box"):
        opt.step(Closure(opt, x, lambda v: (v**2).sum()))
