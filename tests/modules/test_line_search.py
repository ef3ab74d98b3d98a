"""Line searches: the sweep, each catalog check, the accepted-step conditions over many random problems, parity with
``torch.optim.LBFGS``'s strong Wolfe search, evaluation counts against SciPy's L-BFGS-B, non-finite objectives,
non-descent directions and where the parameters are left."""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from sweep import check_module

import torchzero as tz
from torchzero.core import Module, Var
from torchzero.modules.line_search.adaptive import AdaptiveTracking
from torchzero.modules.line_search.backtracking import AdaptiveBacktracking, Backtracking
from torchzero.modules.line_search.interpolation import (
    cubic_interpolate,
    polynomial_interpolate,
    polynomial_interpolate_retry,
    quadratic_interpolate,
)
from torchzero.modules.line_search.line_search import LineSearchBase
from torchzero.modules.line_search.scipy import ScipyMinimizeScalar
from torchzero.modules.line_search.strong_wolfe import StrongWolfe

F64 = torch.float64


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
class Direction(Module):
    """Sets the update to ``fn(grad)`` (a test direction)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn

    def step(self, var: Var) -> Var:
        var.update = [self.fn(g) for g in var.get_grad()]
        return var


class Capture(Module):
    """Records the update and the parameters it sees."""

    def __init__(self):
        super().__init__()
        self.updates: list[list[torch.Tensor]] = []
        self.params: list[list[torch.Tensor]] = []

    def step(self, var: Var) -> Var:
        self.updates.append([u.clone() for u in var.get_update()])
        self.params.append([p.detach().clone() for p in var.params])
        return var


class TorchLikeLBFGS(Module):
    """L-BFGS direction written like ``torch.optim.LBFGS`` (two-loop recursion, ``H₀ = sᵀy/yᵀy``, pairs with
    ``sᵀy > sy_tol``, first direction scaled by ``min(1, 1/‖g‖₁)``), to test the line search on its own."""

    def __init__(self, history_size: int = 10, sy_tol: float = 1e-10):
        super().__init__()
        self.history_size, self.sy_tol = history_size, sy_tol

    @torch.no_grad()
    def step(self, var: Var) -> Var:
        g = torch.cat([t.reshape(-1) for t in var.get_grad()])
        x = torch.cat([p.reshape(-1) for p in var.params])
        gs = self.global_state
        if "x_prev" not in gs:
            gs.update(S=[], Y=[], H_diag=1.0)
            d = g * min(1.0, 1.0 / float(g.abs().sum()))
        else:
            s, y = x - gs["x_prev"], g - gs["g_prev"]
            ys = float(y.dot(s))
            if ys > self.sy_tol:
                if len(gs["S"]) == self.history_size:
                    gs["S"].pop(0)
                    gs["Y"].pop(0)
                gs["S"].append(s)
                gs["Y"].append(y)
                gs["H_diag"] = ys / float(y.dot(y))
            q, al = g.clone(), []
            for s_i, y_i in zip(reversed(gs["S"]), reversed(gs["Y"])):
                al.append(float(s_i.dot(q)) / float(y_i.dot(s_i)))
                q.add_(y_i, alpha=-al[-1])
            d = q * gs["H_diag"]
            for s_i, y_i, a in zip(gs["S"], gs["Y"], reversed(al)):
                d.add_(s_i, alpha=a - float(y_i.dot(d)) / float(y_i.dot(s_i)))
        gs["x_prev"], gs["g_prev"] = x.clone(), g.clone()
        var.update = list(torch.split(d, [p.numel() for p in var.params]))
        var.update = [u.view_as(p).clone() for u, p in zip(var.update, var.params)]
        return var


def make_closure(opt: torch.optim.Optimizer, params: list[torch.Tensor], f: Callable) -> Callable:
    def closure(backward: bool = True) -> torch.Tensor:
        loss = f(*params)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss
    return closure


def one_step(ls: Module, f: Callable, x0: list[float], direction: Callable | None = None
             ) -> tuple[torch.Tensor, tz.Modular]:
    """One step of ``[Direction, ls]`` from ``x0`` on ``f(x)``; returns the new x and the optimizer."""
    x = torch.tensor(x0, dtype=F64, requires_grad=True)
    modules = [ls] if direction is None else [Direction(direction), ls]
    opt = tz.Modular([x], *modules)
    opt.step(make_closure(opt, [x], f))
    return x.detach(), opt


def square(x: torch.Tensor) -> torch.Tensor:
    return (x**2).sum()


# --------------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------------
SWEEP = {
    "Backtracking": lambda: [Backtracking()],
    "Backtracking_lr": lambda: [Backtracking(), tz.m.LR(0.5)],
    "Backtracking_not_last": lambda: [Backtracking(), tz.m.ClipValue(10), tz.m.LR(0.5)],
    "Backtracking_goldstein": lambda: [Backtracking(c=0.1, condition="goldstein")],
    "Backtracking_decrease": lambda: [Backtracking(condition="decrease", init=10, adaptive=False)],
    "AdaptiveBacktracking": lambda: [AdaptiveBacktracking()],
    "AdaptiveBacktracking_target2": lambda: [AdaptiveBacktracking(target_iters=2, scale_beta=0.5)],
    "AdaptiveTracking": lambda: [AdaptiveTracking()],
    "StrongWolfe": lambda: [StrongWolfe()],
    "StrongWolfe_lr": lambda: [StrongWolfe(), tz.m.LR(0.5)],
    "StrongWolfe_not_last": lambda: [StrongWolfe(c2=0.1, a_init="first-order"), tz.m.ClipValue(10), tz.m.LR(1)],
    "StrongWolfe_quadratic": lambda: [StrongWolfe(a_init="quadratic", interpolation="quadratic")],
    "StrongWolfe_quadratic_clip": lambda: [StrongWolfe(a_init="quadratic-clip", interpolation="bisection")],
    "StrongWolfe_previous_poly": lambda: [StrongWolfe(a_init="previous", interpolation="polynomial")],
    "StrongWolfe_poly2_pm": lambda: [StrongWolfe(interpolation="polynomial2", plus_minus=True, fallback=True,
                                                 maxeval=8)],
    "ScipyMinimizeScalar": lambda: [ScipyMinimizeScalar()],
    "ScipyMinimizeScalar_prev": lambda: [ScipyMinimizeScalar(method="golden", prev_init=True, maxiter=30)],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    check_module(SWEEP[name], needs_closure=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["Backtracking", "StrongWolfe", "AdaptiveTracking", "StrongWolfe_not_last"])
def test_sweep_cuda(name: str) -> None:
    check_module(SWEEP[name], needs_closure=True, device="cuda")


@pytest.mark.parametrize("ls", [Backtracking, AdaptiveBacktracking, AdaptiveTracking, StrongWolfe,
                                ScipyMinimizeScalar])
def test_requires_closure(ls) -> None:
    x = torch.tensor([1.0], requires_grad=True)
    opt = tz.Modular([x], ls())
    square(x).backward()
    with pytest.raises(RuntimeError, match=ls.__name__):
        opt.step()


@pytest.mark.parametrize("make", [
    lambda: Backtracking(beta=1.0), lambda: Backtracking(init=0), lambda: Backtracking(condition="wolfe"),
    lambda: Backtracking(condition="nope"), lambda: Backtracking(c=1.5), lambda: Backtracking(maxiter=0),
    lambda: Backtracking(condition="goldstein", c=0.7), lambda: AdaptiveBacktracking(target_iters=-1),
    lambda: AdaptiveBacktracking(nplus=0.5), lambda: AdaptiveTracking(nminus=1.5), lambda: AdaptiveTracking(nplus=1),
    lambda: StrongWolfe(c1=0.5, c2=0.4), lambda: StrongWolfe(c2=1.0), lambda: StrongWolfe(a_init="cubic"),
    lambda: StrongWolfe(interpolation="spline"), lambda: StrongWolfe(maxzoom=0), lambda: StrongWolfe(maxeval=0),
    lambda: StrongWolfe(init_value=-1), lambda: ScipyMinimizeScalar(method="bounded"),
    lambda: ScipyMinimizeScalar(method="newton"), lambda: ScipyMinimizeScalar(bracket=(1,)),
])
def test_invalid_arguments(make) -> None:
    with pytest.raises((ValueError, TypeError)):
        make()


# --------------------------------------------------------------------------------------------------
# catalog checks
# --------------------------------------------------------------------------------------------------
class GridSearch(LineSearchBase):
    def __init__(self, maxiter: int | None = None):
        super().__init__(defaults=None, maxiter=maxiter)
        self.seen: list[float] = []

    def search(self, update, var):
        f0 = self.evaluate_f(0, var)
        grid = [k / 10 for k in range(1, 11)]
        losses = []
        for a in grid:
            losses.append(self.evaluate_f(a, var))
            self.seen.append(a)  # after the evaluation: the 4th is interrupted with maxiter=3
        best = min(range(len(grid)), key=losses.__getitem__)
        return grid[best] if losses[best] < f0 else 0.0


def test_base_grid_search_and_maxiter() -> None:
    x, opt = one_step(GridSearch(), square, [1.0])
    assert abs(float(x)) < 1e-15 and opt.num_evaluations == 11
    # maxiter=3: 0.1, 0.2, 0.3 are evaluated, then the search is interrupted and the best of them (0.3) is used
    ls = GridSearch(maxiter=3)
    x, opt = one_step(ls, square, [1.0])
    assert ls.seen == [0.1, 0.2, 0.3] and opt.num_evaluations == 4
    assert float(x) == pytest.approx(1 - 0.3 * 2, abs=1e-15)


class ProbeHelpers(LineSearchBase):
    """Checks the objective helpers against closed forms of f(x) = Σx² along u = 2x (the gradient)."""

    def __init__(self):
        super().__init__(defaults=None)
        self.checked = False

    def search(self, update, var):
        x0 = var.params[0].detach().clone()
        phi = self.make_objective(var)
        phi_d = self.make_objective_with_derivative(var)
        phi_dg = self.make_objective_with_derivative_and_gradient(var)
        u = 2 * x0
        xa = x0 - 0.25 * u
        f_a = phi(0.25)
        assert f_a == float((xa**2).sum())
        f, d = phi_d(0.25)
        assert f == float((xa**2).sum()) and d == pytest.approx(-float(2 * xa @ u))
        f, d, g = phi_dg(0.1)
        xb = x0 - 0.1 * u
        torch.testing.assert_close(g[0], 2 * xb)
        f0, d0 = phi_d(0)
        assert f0 == float((x0**2).sum()) and d0 == pytest.approx(-float(u @ u))
        # α = 0.25 loss only, then again with gradient (a loss-only evaluation has no slope), α = 0.1; α = 0 is free
        assert self.num_evaluations == 3
        assert phi(0.25) == f_a and phi_d(0.1)[0] == f and self.num_evaluations == 3  # cached
        self.checked = True
        return 0.0


def test_base_objective_helpers() -> None:
    ls = ProbeHelpers()
    x, opt = one_step(ls, square, [1.0, -2.0])
    assert ls.checked and torch.equal(x, torch.tensor([1.0, -2.0], dtype=F64))
    assert opt.num_evaluations == 1 + 3


def test_strong_wolfe_maxeval() -> None:
    # a unit step 1e6 times too long and bisection: with maxeval=3 the search stops after α = 1, 0.5, 0.25 and
    # takes the best point seen, here x₀ itself
    ls = StrongWolfe(maxeval=3, interpolation="bisection")
    x, opt = one_step(ls, square, [1.0], direction=lambda g: 1e6 * g)
    assert opt.num_evaluations == 1 + 3 and float(x) == 1.0
    # with a cap that is reached after a decrease, the lowest point is used
    ls = StrongWolfe(maxeval=2, interpolation="bisection", c2=1e-3)
    x, opt = one_step(ls, lambda x: (x**2).sum(), [1.0], direction=lambda g: 0.3 * g)  # α = 1: x = 0.4
    assert opt.num_evaluations == 1 + 2 and float(x) == pytest.approx(0.4)


def test_backtracking_check() -> None:
    x, opt = one_step(Backtracking(), square, [1.0])
    assert float(x) == 0.0 and opt.num_evaluations == 3


def test_adaptive_backtracking_check() -> None:
    f = lambda x: 0.5 * (20 * x[0] ** 2 + x[1] ** 2)
    ls = AdaptiveBacktracking()
    x = torch.tensor([1.0, 1.0], dtype=F64, requires_grad=True)
    opt = tz.Modular([x], ls)
    closure = make_closure(opt, [x], f)
    opt.step(closure)
    assert opt.num_evaluations == 1 + 5  # accepted after 5 trials: 1, 0.5, 0.25, 0.125, 0.0625
    torch.testing.assert_close(x.detach(), torch.tensor([1 - 0.0625 * 20, 1 - 0.0625], dtype=F64))
    assert ls.global_state["initial_scale"] == 0.125
    n = opt.num_evaluations
    x_before = x.detach().clone()
    opt.step(closure)
    g = torch.tensor([20 * x_before[0], x_before[1]], dtype=F64)
    torch.testing.assert_close(x.detach(), x_before - 0.0625 * g)  # accepted α = 0.0625 on the 2nd trial
    assert opt.num_evaluations - n == 2 + 1 and ls.global_state["initial_scale"] == 0.125


def test_adaptive_tracking_check() -> None:
    ls = AdaptiveTracking(init=0.1)
    x, opt = one_step(ls, square, [1.0])
    assert float(x) == pytest.approx(0.2, abs=1e-15) and opt.num_evaluations == 5
    assert ls.global_state["a_prev"] == pytest.approx(0.4)


def test_adaptive_tracking_shrinks_and_start_was_best() -> None:
    # start too large (u = 8): α = 1, 0.5, 0.25, 0.125 improve, 0.0625 is worse: 0.125 is returned
    ls = AdaptiveTracking(init=1.0)
    x, _ = one_step(ls, lambda x: (x**2).sum(), [1.0], direction=lambda g: 4 * g)  # u = 8
    assert float(x) == pytest.approx(1 - 0.125 * 8)
    # start already best (α=0.5 is exact, 1.0 worse): the unevaluated 0.5·nminus = 0.25 is returned
    ls = AdaptiveTracking(init=0.5)
    x, opt = one_step(ls, square, [1.0])
    assert float(x) == pytest.approx(1 - 0.25 * 2) and opt.num_evaluations == 3


def test_strong_wolfe_check() -> None:
    x, opt = one_step(StrongWolfe(), square, [1.0])
    assert float(x) == 0.0 and opt.num_evaluations == 3


def test_scipy_cauchy_step() -> None:
    A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]], dtype=F64)
    b = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    f = lambda x: 0.5 * x @ A @ x - b @ x
    x0 = torch.tensor([2.0, 1.0, -1.0], dtype=F64)
    g = A @ x0 - b
    alpha = float(g @ g / (g @ A @ g))
    x, _ = one_step(ScipyMinimizeScalar(method="brent", tol=1e-12), f, x0.tolist())
    torch.testing.assert_close(x, x0 - alpha * g, rtol=1e-8, atol=0)


def test_scipy_prev_init_and_rejection() -> None:
    ls = ScipyMinimizeScalar(prev_init=True)
    x = torch.tensor([3.0], dtype=F64, requires_grad=True)
    opt = tz.Modular([x], ls)
    closure = make_closure(opt, [x], square)
    opt.step(closure)
    assert ls.global_state["x_prev"] == pytest.approx(0.5, abs=1e-6)
    # an objective with no decrease along u: α = 0, parameters unchanged
    _, opt = one_step(ScipyMinimizeScalar(), lambda x: (x**2).sum(), [0.0], direction=lambda g: g + 1)
    assert float(opt.param_groups[0]["params"][0].detach()) == 0.0


# --------------------------------------------------------------------------------------------------
# accepted steps satisfy their conditions (re-evaluated independently)
# --------------------------------------------------------------------------------------------------
def _random_problem(seed: int) -> tuple[Callable, torch.Tensor, Callable]:
    """A random smooth function of 5 variables, a start point and a random descent direction map."""
    g = torch.Generator().manual_seed(seed)
    n = 5
    Q = torch.randn(n, n, generator=g, dtype=F64)
    A = Q @ Q.T + 0.1 * torch.eye(n, dtype=F64)
    c = torch.randn(n, generator=g, dtype=F64)
    kind = seed % 4
    scale = float(3 * 10 ** torch.empty(1, dtype=F64).uniform_(-2, 0, generator=g))

    def f(x: torch.Tensor) -> torch.Tensor:
        d = x - c
        if kind == 0:
            return 0.5 * d @ A @ d + 0.1 * (d**4).sum()
        if kind == 1:
            return ((1 - x[:-1]) ** 2).sum() + 10 * ((x[1:] - x[:-1] ** 2) ** 2).sum()
        if kind == 2:
            return torch.logsumexp(A @ d, 0) + 0.05 * (d**2).sum()
        return 0.5 * d @ A @ d + torch.sin(3 * x).sum()

    P = torch.randn(n, n, generator=g, dtype=F64)
    P = P @ P.T + 0.05 * torch.eye(n, dtype=F64)
    x0 = torch.randn(n, generator=g, dtype=F64) * 2
    # a descent direction with a random length between 0.03 and 3 (the unit step is within a few orders of
    # magnitude of a good one, as for a quasi-Newton direction)
    return f, x0, lambda grad: scale * (P @ grad) / (P @ grad).norm()


def _check_accepted(ls_factory: Callable, condition: Callable, n_problems: int = 60) -> int:
    """Runs one step on each random problem; re-evaluates f and ∇f at the old and new point and checks
    ``condition(f0, d0, f1, d1, alpha)``. Returns the number of failed searches (α = 0)."""
    failures = 0
    for seed in range(n_problems):
        f, x0, direction = _random_problem(seed)
        x1, _ = one_step(ls_factory(), f, x0.tolist(), direction)
        xa = x0.clone().requires_grad_()
        f0 = f(xa)
        g0, = torch.autograd.grad(f0, xa)
        u = direction(g0)
        if torch.equal(x1, x0):
            failures += 1
            continue
        alpha = float((x0 - x1) @ u / (u @ u))
        torch.testing.assert_close(x1, x0 - alpha * u, rtol=1e-9, atol=1e-12)
        xb = x1.clone().requires_grad_()
        f1 = f(xb)
        g1, = torch.autograd.grad(f1, xb)
        assert condition(float(f0.detach()), -float(g0 @ u), float(f1.detach()), -float(g1 @ u), alpha), f"seed {seed}"
    return failures


@pytest.mark.parametrize("c1,c2", [(1e-4, 0.9), (1e-4, 0.1), (0.3, 0.5)])
@pytest.mark.parametrize("interpolation", ["cubic", "quadratic", "bisection", "polynomial", "polynomial2"])
def test_strong_wolfe_accepted_steps_satisfy_conditions(c1: float, c2: float, interpolation: str) -> None:
    tol = 1e-10

    def strong_wolfe(f0, d0, f1, d1, alpha):
        return f1 <= f0 + c1 * alpha * d0 + tol * abs(f0) and abs(d1) <= c2 * abs(d0) * (1 + tol)

    failures = _check_accepted(lambda: StrongWolfe(c1=c1, c2=c2, interpolation=interpolation), strong_wolfe)
    assert failures == 0


@pytest.mark.parametrize("interpolation", ["cubic", "bisection", "polynomial2"])
def test_strong_wolfe_exhausted_budget_still_decreases(interpolation: str) -> None:
    """With a unit step 1e4-1e7 times too long the zoom may run out of trials; the step it returns (the best point of
    the bracket) still satisfies sufficient decrease, or the search returns 0."""
    def armijo(f0, d0, f1, d1, alpha):
        return f1 <= f0 + 1e-4 * alpha * d0

    def far(seed):
        f, x0, direction = _random_problem(seed)
        return f, x0, lambda g: direction(g) * 10 ** (4 + seed % 4)

    for seed in range(20):
        f, x0, direction = far(seed)
        x1, _ = one_step(StrongWolfe(interpolation=interpolation), f, x0.tolist(), direction)
        xa = x0.clone().requires_grad_()
        f0 = f(xa)
        g0, = torch.autograd.grad(f0, xa)
        u = direction(g0)
        if torch.equal(x1, x0):
            continue
        alpha = float((x0 - x1) @ u / (u @ u))
        assert armijo(float(f0.detach()), -float(g0 @ u), float(f(x1)), None, alpha)


@pytest.mark.parametrize("condition,c", [("armijo", 1e-4), ("armijo", 0.5), ("goldstein", 0.25),
                                         ("decrease", 0.0)])
def test_backtracking_accepted_steps_satisfy_condition(condition: str, c: float) -> None:
    def ok(f0, d0, f1, d1, alpha):
        m = min(d0, 0)
        if condition == "armijo":
            return f1 < f0 + c * alpha * m
        if condition == "decrease":
            return f1 < f0
        return f0 + (1 - c) * alpha * m < f1 < f0 + c * alpha * m

    # from α = 100, trials shrinking by 0.8 can't jump over the Goldstein interval ([α*/2, 3α*/2] on a quadratic)
    failures = _check_accepted(lambda: Backtracking(init=100.0, beta=0.8, c=c, condition=condition, maxiter=150),
                               ok)
    assert failures == 0


def test_adaptive_backtracking_accepted_steps_satisfy_armijo() -> None:
    failures = _check_accepted(lambda: AdaptiveBacktracking(init=100.0, maxiter=60),
                               lambda f0, d0, f1, d1, a: f1 < f0 + 1e-4 * a * min(d0, 0))
    assert failures == 0


# --------------------------------------------------------------------------------------------------
# parity with torch.optim.LBFGS's line search
# --------------------------------------------------------------------------------------------------
FUNS_1D = {
    "quartic": lambda x: x**4 - 3 * x**2 + x,
    "shifted_quadratic": lambda x: (x - 2) ** 2,
    "exp": lambda x: torch.exp(x) - 2 * x,
    "sin": lambda x: torch.sin(3 * x) + x**2,
    "log_cosh": lambda x: torch.log(torch.cosh(4 * (x - 1))),
    "steep": lambda x: 1000 * (x - 0.001) ** 2,
}


@pytest.mark.parametrize("name", list(FUNS_1D))
def test_strong_wolfe_matches_torch_strong_wolfe(name: str) -> None:
    from torch.optim.lbfgs import _strong_wolfe

    fn = FUNS_1D[name]
    for x0 in (-2.0, -0.5, 0.3, 1.7):
        for t0 in (0.01, 0.3, 1.0, 5.0):
            xt = torch.tensor([x0], dtype=F64, requires_grad=True)
            f0 = fn(xt).sum()
            g0, = torch.autograd.grad(f0, xt)
            d = -g0
            n_torch = [0]

            def obj_func(x, t, d_, n_torch=n_torch):
                p = (x[0] + t * d_).requires_grad_()
                f = fn(p).sum()
                g, = torch.autograd.grad(f, p)
                n_torch[0] += 1
                return float(f.detach()), g

            _, _, t_torch, _ = _strong_wolfe(obj_func, [xt.detach()], t0, d, float(f0.detach()), g0, g0.dot(d),
                                             max_ls=25)
            x1, opt = one_step(StrongWolfe(init_value=t0), lambda x: fn(x).sum(), [x0], direction=lambda g: g)
            alpha = float((x0 - x1[0]) / g0[0])
            assert alpha == pytest.approx(float(t_torch), rel=1e-12, abs=1e-15), (x0, t0)
            assert opt.num_evaluations - 1 == n_torch[0]


def _rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return ((1 - x[:-1]) ** 2).sum() + 100 * ((x[1:] - x[:-1] ** 2) ** 2).sum()


def test_lbfgs_strong_wolfe_matches_torch_lbfgs() -> None:
    x0 = torch.tensor([-1.2, 1.0] * 5, dtype=F64)
    a, b = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    opt_a = tz.Modular([a], TorchLikeLBFGS(), StrongWolfe())
    opt_b = torch.optim.LBFGS([b], lr=1, max_iter=1, max_eval=26, history_size=10, line_search_fn="strong_wolfe",
                              tolerance_grad=0, tolerance_change=0)
    closure_a, closure_b = make_closure(opt_a, [a], _rosenbrock), make_closure(opt_b, [b], _rosenbrock)
    for k in range(15):
        opt_a.step(closure_a)
        opt_b.step(closure_b)
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-13, msg=f"step {k}")


def test_library_lbfgs_strong_wolfe_matches_torch_lbfgs() -> None:
    """Catalog check of LBFGS + StrongWolfe: the same iterates as torch.optim.LBFGS for the first 10 steps."""
    lbfgs = pytest.importorskip("torchzero.modules.quasi_newton.lbfgs")
    x0 = torch.tensor([-1.2, 1.0] * 5, dtype=F64)
    a, b = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    opt_a = tz.Modular([a], lbfgs.LBFGS(history_size=10), StrongWolfe())
    opt_b = torch.optim.LBFGS([b], lr=1, max_iter=1, history_size=10, line_search_fn="strong_wolfe")
    closure_a, closure_b = make_closure(opt_a, [a], _rosenbrock), make_closure(opt_b, [b], _rosenbrock)
    for k in range(10):
        opt_a.step(closure_a)
        opt_b.step(closure_b)
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-14, msg=f"step {k}")


# --------------------------------------------------------------------------------------------------
# evaluation efficiency
# --------------------------------------------------------------------------------------------------
def test_accepted_point_is_not_evaluated_again() -> None:
    """The loss and gradient at the accepted point are reused by the next step: with the unit step accepted at once,
    each step after the first costs exactly one evaluation (the trial)."""
    x = torch.tensor([3.0, -1.0], dtype=F64, requires_grad=True)
    f = lambda x: 0.5 * ((x - 1) ** 2).sum()
    opt = tz.Modular([x], Direction(lambda g: 0.5 * g), StrongWolfe())  # α = 1 halves the distance to 1
    closure = make_closure(opt, [x], f)
    opt.step(closure)
    assert opt.num_evaluations == 2
    for k in range(4):
        expected_loss = float(f(x.detach()))
        ret = opt.step(closure)
        assert opt.num_evaluations == 3 + k
        assert float(ret) == expected_loss  # step() returns the (reused) loss at its start point
    torch.testing.assert_close(x.detach(), 1 + torch.tensor([2.0, -2.0], dtype=F64) / 2**5)


def test_result_evaluation_recorded() -> None:
    """On the direct path the accepted point's loss and gradient are handed to the optimizer; they equal a fresh
    evaluation at the final parameters."""
    records = []

    class Hook(Module):
        def step(self, var):
            var.post_step_hooks.append(lambda o, v: records.append((v.result_loss, v.result_grad)))
            return var

    f = lambda x: ((x - 1) ** 4).sum() + (x**2).sum()
    x = torch.tensor([2.0, -3.0], dtype=F64, requires_grad=True)
    opt = tz.Modular([x], Hook(), StrongWolfe())
    closure = make_closure(opt, [x], f)
    for _ in range(3):
        opt.step(closure)
        loss, grad = records[-1]
        xr = x.detach().clone().requires_grad_()
        fr = f(xr)
        gr, = torch.autograd.grad(fr, xr)
        assert float(loss) == float(fr.detach()) and torch.equal(grad[0], gr)


def test_nothing_recorded_off_the_direct_path() -> None:
    records = []

    class Hook(Module):
        def step(self, var):
            var.post_step_hooks.append(lambda o, v: records.append(v.result_loss))
            return var

    for modules in ([Hook(), StrongWolfe(), tz.m.LR(0.5)], [Hook(), StrongWolfe(), tz.m.ClipValue(10)],
                    [Hook(), Backtracking()]):
        x = torch.tensor([2.0, -3.0], dtype=F64, requires_grad=True)
        opt = tz.Modular([x], *modules)
        opt.step(make_closure(opt, [x], square))
        assert records[-1] is None


def _count_to_tolerance(f: Callable, x0: list[float], rel_tol: float, direction: Callable[[], Module]
                        ) -> tuple[int, int]:
    """Evaluations used by SciPy's L-BFGS-B and by ``direction() + StrongWolfe()`` until
    ``f − f* ≤ rel_tol·(f(x0) − f*)`` (``f* = 0``)."""
    import scipy.optimize

    values: list[float] = []

    def fun(xn: np.ndarray) -> tuple[float, np.ndarray]:
        x = torch.tensor(xn, dtype=F64, requires_grad=True)
        v = f(x)
        v.backward()
        values.append(float(v.detach()))
        return values[-1], x.grad.numpy()

    scipy.optimize.minimize(fun, np.array(x0), jac=True, method="L-BFGS-B",
                            options=dict(maxcor=10, gtol=1e-14, ftol=0, maxiter=2000))
    target = rel_tol * values[0]
    n_scipy = next(i + 1 for i, v in enumerate(values) if v <= target)

    x = torch.tensor(x0, dtype=F64, requires_grad=True)
    opt = tz.Modular([x], direction(), StrongWolfe())
    closure = make_closure(opt, [x], f)
    for _ in range(1000):
        opt.step(closure)
        if float(f(x.detach())) <= target:
            return opt.num_evaluations, n_scipy
    raise AssertionError("did not converge")


def _powell_singular(x):
    return (x[0] + 10 * x[1]) ** 2 + 5 * (x[2] - x[3]) ** 2 + (x[1] - 2 * x[2]) ** 4 + 10 * (x[0] - x[3]) ** 4


def _wood(x):
    return (100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2 + 90 * (x[3] - x[2] ** 2) ** 2 + (1 - x[2]) ** 2
            + 10.1 * ((x[1] - 1) ** 2 + (x[3] - 1) ** 2) + 19.8 * (x[1] - 1) * (x[3] - 1))


_D = torch.logspace(0, 3, 20, dtype=F64)
CLASSIC = {
    "rosenbrock_2": (_rosenbrock, [-1.2, 1.0]),
    "rosenbrock_10": (_rosenbrock, [-1.2, 1.0] * 5),
    "beale": (lambda x: (1.5 - x[0] + x[0] * x[1]) ** 2 + (2.25 - x[0] + x[0] * x[1] ** 2) ** 2
              + (2.625 - x[0] + x[0] * x[1] ** 3) ** 2, [1.0, 1.0]),
    "booth": (lambda x: (x[0] + 2 * x[1] - 7) ** 2 + (2 * x[0] + x[1] - 5) ** 2, [0.0, 0.0]),
    "powell_singular": (_powell_singular, [3.0, -1.0, 0.0, 1.0]),
    "wood": (_wood, [-3.0, -1.0, -3.0, -1.0]),
    "ill_conditioned_quadratic": (lambda x: 0.5 * (_D * x**2).sum(), [1.0] * 20),
    "himmelblau": (lambda x: (x[0] ** 2 + x[1] - 11) ** 2 + (x[0] + x[1] ** 2 - 7) ** 2, [0.0, 0.0]),
}


@pytest.mark.parametrize("name", list(CLASSIC))
def test_no_more_evaluations_than_scipy_lbfgsb(name: str) -> None:
    """L-BFGS + StrongWolfe (defaults) needs no more objective evaluations than SciPy's L-BFGS-B to solve classic
    problems to high accuracy (f reduced by 1e-12 relative to the start)."""
    f, x0 = CLASSIC[name]
    ours, scipy_evals = _count_to_tolerance(f, x0, 1e-12, lambda: TorchLikeLBFGS(sy_tol=1e-32))
    assert ours <= scipy_evals, (ours, scipy_evals)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CLASSIC))
def test_library_lbfgs_no_more_evaluations_than_scipy_lbfgsb(name: str) -> None:
    """The same with the library's ``LBFGS`` (defaults) when it is available."""
    lbfgs = pytest.importorskip("torchzero.modules.quasi_newton.lbfgs")
    f, x0 = CLASSIC[name]
    ours, scipy_evals = _count_to_tolerance(f, x0, 1e-12, lbfgs.LBFGS)
    assert ours <= scipy_evals, (ours, scipy_evals)


# --------------------------------------------------------------------------------------------------
# non-finite objectives, non-descent directions, where the parameters are left
# --------------------------------------------------------------------------------------------------
def _blows_up(x: torch.Tensor) -> torch.Tensor:
    """(x − 3)² inside |x| < 2, nan outside (inf for x < −2)."""
    v = ((x - 3) ** 2).sum()
    if float(x.detach().abs().max()) >= 2:
        return v * (math.nan if float(x.detach().max()) >= 2 else math.inf)
    return v


@pytest.mark.parametrize("ls", [
    lambda: Backtracking(init=100), lambda: AdaptiveBacktracking(init=100), lambda: AdaptiveTracking(init=100),
    lambda: StrongWolfe(init_value=100), lambda: StrongWolfe(init_value=100, interpolation="polynomial"),
    lambda: StrongWolfe(a_init="quadratic", interpolation="quadratic", init_value=100),
    lambda: ScipyMinimizeScalar(bracket=(0, 100)),
])
def test_non_finite_objective_beyond_radius(ls) -> None:
    x = torch.tensor([0.0], dtype=F64, requires_grad=True)
    opt = tz.Modular([x], ls())
    closure = make_closure(opt, [x], _blows_up)
    for _ in range(3):
        opt.step(closure)
        assert torch.isfinite(x).all() and abs(float(x.detach())) < 2
    assert float(_blows_up(x.detach())) < 9  # moved towards 3


def test_non_finite_start_gives_zero_step() -> None:
    for ls in (Backtracking(), StrongWolfe(), AdaptiveTracking()):
        x, opt = one_step(ls, lambda x: (x**2).sum() * math.inf, [1.0])
        assert float(x) == 1.0


def test_non_descent_direction() -> None:
    uphill = lambda g: -g
    # StrongWolfe: α = 0 without evaluating; parameters unchanged
    x, opt = one_step(StrongWolfe(), square, [1.0], direction=uphill)
    assert float(x) == 1.0 and opt.num_evaluations == 1
    # plus_minus: searches along +u and lands on the minimum
    x, opt = one_step(StrongWolfe(plus_minus=True), square, [1.0], direction=uphill)
    assert float(x) == 0.0
    # Backtracking: the test becomes plain decrease, which uphill steps fail: α = 0
    x, _ = one_step(Backtracking(), square, [1.0], direction=uphill)
    assert float(x) == 1.0
    # a zero direction
    x, opt = one_step(StrongWolfe(plus_minus=True), square, [1.0], direction=lambda g: 0 * g)
    assert float(x) == 1.0 and opt.num_evaluations == 1


def test_params_restored_and_update_scaled_when_not_last() -> None:
    cap = Capture()
    x = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    x0 = x.detach().clone()
    opt = tz.Modular([x], StrongWolfe(), cap, tz.m.LR(1.0))
    opt.step(make_closure(opt, [x], square))
    assert torch.equal(cap.params[0][0], x0)  # parameters restored exactly before the next module
    torch.testing.assert_close(cap.updates[0][0], 0.5 * 2 * x0)  # α·u with α = 0.5
    assert torch.equal(x.detach(), torch.zeros(2, dtype=F64))


def test_direct_step_folds_lr() -> None:
    x = torch.tensor([1.0], dtype=F64, requires_grad=True)
    opt = tz.Modular([x], StrongWolfe(), tz.m.LR(0.5))
    opt.step(make_closure(opt, [x], square))
    assert float(x.detach()) == 0.5  # x0 − α·lr·u = 1 − 0.5·0.5·2


def test_failure_restores_params_and_adapts() -> None:
    ls = Backtracking(maxiter=3)
    x, opt = one_step(ls, square, [1.0], direction=lambda g: 1e6 * g)
    assert float(x) == 1.0 and opt.num_evaluations == 4 and ls.global_state["scale"] == 0.5**3
    ls = StrongWolfe(maxiter=1, maxzoom=1, interpolation="bisection")
    x, opt = one_step(ls, square, [1.0], direction=lambda g: 1e6 * g)
    assert float(x) == 1.0 and opt.num_evaluations == 3 and ls.global_state["initial_scale"] == 0.5
    assert "a_prev" not in ls.global_state


# --------------------------------------------------------------------------------------------------
# initial step strategies
# --------------------------------------------------------------------------------------------------
def _first_trials(ls: StrongWolfe, f: Callable, x0: list[float], n_steps: int) -> list[float]:
    """The first trial α of each search (recovered from the first closure call with a perturbed point)."""
    x = torch.tensor(x0, dtype=F64, requires_grad=True)
    opt = tz.Modular([x], ls)
    firsts: list[float] = []
    state = {}

    def closure(backward=True):
        p = x.detach().clone()
        if state.get("want") and not torch.equal(p, state["x0"]):
            firsts.append(float((state["x0"] - p) @ state["u"] / (state["u"] @ state["u"])))
            state["want"] = False
        loss = f(x)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    for _ in range(n_steps):
        xa = x.detach().clone().requires_grad_()
        g, = torch.autograd.grad(f(xa), xa)
        state.update(want=True, x0=x.detach().clone(), u=g)
        opt.step(closure)
    return firsts


@pytest.mark.parametrize("a_init", ["fixed", "previous", "first-order", "quadratic", "quadratic-clip"])
def test_initial_step_strategies(a_init: str) -> None:
    """The first trial of the second search follows the strategy, from the state stored by the first search."""
    f = lambda x: 0.5 * (torch.tensor([1.0, 4.0], dtype=F64) * x**2).sum() + 0.1 * (x**4).sum()
    ls = StrongWolfe(a_init=a_init, c2=0.1, init_value=0.7)
    firsts = _first_trials(ls, f, [1.0, 1.0], 1)
    assert firsts == [0.7]  # no history: init_value
    a_prev, f0_prev, d0_prev = (ls.global_state[k] for k in ("a_prev", "phi_0_prev", "dphi_0_prev"))
    # second search from where the first ended
    x1 = torch.tensor([1.0, 1.0], dtype=F64)
    g0 = _grad(f, x1)
    x1 = x1 - a_prev * g0
    g1 = _grad(f, x1)
    f1, d1 = float(f(x1)), -float(g1 @ g1)
    expected = {"fixed": 0.7, "previous": a_prev, "first-order": a_prev * d0_prev / d1,
                "quadratic": 2 * (f1 - f0_prev) / d1, "quadratic-clip": min(1.0, 1.01 * 2 * (f1 - f0_prev) / d1)}
    firsts = _first_trials(StrongWolfe(a_init=a_init, c2=0.1, init_value=0.7), f, [1.0, 1.0], 2)
    assert firsts[1] == pytest.approx(expected[a_init], rel=1e-9)


def _grad(f: Callable, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_()
    g, = torch.autograd.grad(f(x), x)
    return g


def test_initial_step_formulas() -> None:
    from torchzero.modules.line_search.strong_wolfe import initial_step

    tiny = torch.finfo(F64).tiny
    assert initial_step("fixed", 2.0, 1.0, -1.0, 0.5, 3.0, -2.0, tiny) == 2.0
    assert initial_step("previous", 2.0, 1.0, -1.0, 0.5, 3.0, -2.0, tiny) == 0.5
    assert initial_step("first-order", 2.0, 1.0, -1.0, 0.5, 3.0, -2.0, tiny) == 0.5 * -2.0 / -1.0
    assert initial_step("quadratic", 2.0, 1.0, -4.0, 0.5, 3.0, -2.0, tiny) == 2 * (1.0 - 3.0) / -4.0
    assert initial_step("quadratic-clip", 2.0, 1.0, -4.0, 0.5, 3.0, -2.0, tiny) == 1.0
    assert initial_step("quadratic-clip", 2.0, 1.0, -40.0, 0.5, 3.0, -2.0, tiny) == 1.01 * 0.1
    # fallbacks: no history, loss increased, previous slope not negative
    assert initial_step("first-order", 2.0, 1.0, -1.0, None, None, None, tiny) == 2.0
    assert initial_step("quadratic", 2.0, 5.0, -1.0, 0.5, 3.0, -2.0, tiny) == 2.0
    assert initial_step("first-order", 2.0, 1.0, -1.0, 0.5, 3.0, 0.0, tiny) == 2.0


# --------------------------------------------------------------------------------------------------
# interpolation helpers
# --------------------------------------------------------------------------------------------------
def test_cubic_interpolate_matches_torch() -> None:
    from torch.optim.lbfgs import _cubic_interpolate

    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        x1, x2, f1, f2, g1, g2 = torch.randn(6, generator=g, dtype=F64).tolist()
        ref = _cubic_interpolate(x1, f1, torch.tensor(g1, dtype=F64), x2, f2, torch.tensor(g2, dtype=F64))
        ours = cubic_interpolate(x1, f1, g1, x2, f2, g2)
        assert ours == pytest.approx(float(ref), rel=1e-14, abs=1e-14)
        assert ours == cubic_interpolate(x2, f2, g2, x1, f1, g1)  # order of the points doesn't matter


def test_quadratic_interpolate_exact_on_quadratic() -> None:
    q = lambda a: 3 * (a - 0.7) ** 2 + 1
    dq = lambda a: 6 * (a - 0.7)
    assert quadratic_interpolate(0.2, q(0.2), dq(0.2), 1.5, q(1.5)) == pytest.approx(0.7)
    assert quadratic_interpolate(1.0, q(1.0), dq(1.0), 3.0, q(3.0), bounds=(0.0, 5.0)) == pytest.approx(0.7)
    assert quadratic_interpolate(0.0, 0.0, -1.0, 1.0, -5.0) == 0.5  # concave: midpoint


def test_polynomial_interpolate_recovers_minimiser() -> None:
    p = lambda a: (a - 0.3) ** 2 * (a + 2) + 0.5 * a**4  # quartic
    dp = lambda a: 2 * (a - 0.3) * (a + 2) + (a - 0.3) ** 2 + 2 * a**3
    pts = [(a, p(a), dp(a)) for a in (0.0, 0.5, 1.0)]
    a_min = polynomial_interpolate(pts, (0.0, 1.0))
    assert abs(dp(a_min)) < 1e-12
    assert abs(dp(polynomial_interpolate_retry(pts, (0.0, 1.0)))) < 1e-12
    # loss-only points are used as value constraints; non-finite points are dropped
    pts2 = [(0.0, p(0.0), dp(0.0)), (0.5, p(0.5), None), (1.0, p(1.0), dp(1.0)), (2.0, math.inf, None)]
    assert 0 <= polynomial_interpolate(pts2, (0.0, 1.0)) <= 1


@pytest.mark.parametrize("make", [lambda: tz.m.Backtracking(), lambda: tz.m.StrongWolfe(),
                                  lambda: tz.m.AdaptiveBacktracking(), lambda: tz.m.AdaptiveTracking()])
def test_zero_direction_costs_no_evaluation(make):
    """At a minimum the update is zero: the line search returns without evaluating the objective."""
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = tz.Modular([x], make())
    calls = []

    def closure(backward=True):
        calls.append(backward)
        loss = (x**2).sum()
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    opt.step(closure)
    assert len(calls) == 1  # the gradient at x only
    assert torch.equal(x.detach(), torch.zeros(3, dtype=torch.float64))
