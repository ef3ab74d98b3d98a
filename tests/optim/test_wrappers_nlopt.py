"""NLOptWrapper against NLopt called directly on the same objective: the same points (derivative-free) or the same run
(gradient-based, autograd gradient vs analytic); algorithm names, bounds, stopping criteria, errors."""
from __future__ import annotations

import math
import typing
import warnings

import numpy as np
import pytest
import torch

nlopt = pytest.importorskip("nlopt")

from torchzero.optim.wrappers.nlopt import NloptAlgorithmName, NLOptWrapper  # noqa: E402


def rosen_torch(x: torch.Tensor) -> torch.Tensor:
    a, b = x[0], x[1]
    t = b - a * a
    u = 1 - a
    return 100 * t * t + u * u


def rosen_np(x: np.ndarray, grad: np.ndarray) -> float:
    a, b = x[0], x[1]
    t = b - a * a
    u = 1 - a
    if grad.size > 0:
        grad[:] = [-400 * a * t - 2 * u, 200 * t]
    return float(100 * t * t + u * u)


class Closure:
    def __init__(self, opt: torch.optim.Optimizer, x: torch.Tensor, f=rosen_torch):
        self.opt, self.x, self.f = opt, x, f
        self.points: list[np.ndarray] = []

    def __call__(self, backward: bool = True) -> torch.Tensor:
        self.points.append(self.x.detach().numpy().copy())
        loss = self.f(self.x)
        if backward:
            self.opt.zero_grad()
            loss.backward()
        return loss


def run_nlopt(algorithm: int, x0: list[float], lb=None, ub=None, **stop) -> tuple[np.ndarray, float, list]:
    points: list[np.ndarray] = []

    def f(x: np.ndarray, grad: np.ndarray) -> float:
        points.append(x.copy())
        return rosen_np(x, grad)

    o = nlopt.opt(algorithm, 2)
    o.set_min_objective(f)
    if lb is not None:
        o.set_lower_bounds(lb)
        o.set_upper_bounds(ub)
    for k, v in stop.items():
        getattr(o, f"set_{k}")(v)
    x = o.optimize(np.array(x0))
    return x, o.last_optimum_value(), points


@pytest.mark.parametrize("algorithm", ["LN_SBPLX", "LN_NELDERMEAD", "LN_COBYLA"])
def test_derivative_free_evaluates_exactly_nlopts_points(algorithm: str):
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    opt = NLOptWrapper([x], algorithm, lb=-3, ub=3, maxeval=300)
    closure = Closure(opt, x)
    value = opt.step(closure)
    ref_x, ref_f, ref_points = run_nlopt(getattr(nlopt, algorithm), [-1.2, 1.0], [-3, -3], [3, 3], maxeval=300)
    assert len(closure.points) == len(ref_points) == opt.num_evaluations
    for ours, theirs in zip(closure.points, ref_points):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(x.detach().numpy(), ref_x)
    assert value == ref_f == rosen_torch(x.detach()).item()


@pytest.mark.parametrize("algorithm", ["LD_LBFGS", "LD_SLSQP", "LD_VAR2", "LD_TNEWTON_PRECOND_RESTART"])
def test_gradient_based_matches_nlopt(algorithm: str):
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    opt = NLOptWrapper([x], algorithm, maxeval=2000, ftol_rel=1e-14)
    closure = Closure(opt, x)
    value = opt.step(closure)
    ref_x, ref_f, ref_points = run_nlopt(getattr(nlopt, algorithm), [-1.2, 1.0], maxeval=2000, ftol_rel=1e-14)
    np.testing.assert_allclose(x.detach().numpy(), ref_x, atol=1e-6)
    np.testing.assert_allclose(x.detach().numpy(), [1.0, 1.0], atol=1e-4)
    assert abs(len(closure.points) - len(ref_points)) <= 0.1 * len(ref_points) + 2
    assert value == rosen_torch(x.detach()).item()


def test_algorithm_resolution():
    x = torch.zeros(2, requires_grad=True)
    assert NLOptWrapper([x], "ld_lbfgs").algorithm == nlopt.LD_LBFGS
    assert NLOptWrapper([x], nlopt.LN_BOBYQA).algorithm == nlopt.LN_BOBYQA
    for name in typing.get_args(NloptAlgorithmName):
        assert isinstance(getattr(nlopt, name), int), name
    with pytest.raises(ValueError, match="NLOptWrapper: unknown NLopt algorithm 'LD_NOPE'"):
        NLOptWrapper([x], "LD_NOPE")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NLOptWrapper: 99 is not an NLopt algorithm"):
        NLOptWrapper([x], 99)
    with pytest.raises(TypeError, match="NLOptWrapper: algorithm"):
        NLOptWrapper([x], True)  # type: ignore[arg-type]


def test_stopping_criteria_and_bounds_are_set():
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    opt = NLOptWrapper([{"params": [x], "lb": -2.0, "ub": 1.5}, {"params": [y]}], "LN_BOBYQA", ub=1.0, maxeval=7,
                       stopval=-5.0, ftol_rel=1e-3, ftol_abs=1e-4, xtol_rel=1e-5, xtol_abs=1e-6, maxtime=30.0)
    opt.step(Closure(opt, x, f=lambda v: rosen_torch(v) + (y - 2) ** 2))
    o = opt.result
    assert opt.num_evaluations == 7 and o.get_numevals() == 7
    assert o.get_maxeval() == 7 and o.get_stopval() == -5.0 and o.get_ftol_rel() == 1e-3
    assert o.get_ftol_abs() == 1e-4 and o.get_xtol_rel() == 1e-5 and o.get_maxtime() == 30.0
    np.testing.assert_array_equal(o.get_xtol_abs(), [1e-6] * 3)
    np.testing.assert_array_equal(o.get_lower_bounds(), [-2.0, -2.0, -math.inf])
    np.testing.assert_array_equal(o.get_upper_bounds(), [1.5, 1.5, 1.0])
    assert (x.detach() <= 1.5).all() and (x.detach() >= -2).all() and y.item() <= 1.0


def test_start_outside_bounds_is_an_error():
    x = torch.tensor([3.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = NLOptWrapper([x], "LN_BOBYQA", lb=-2, ub=2)
    with pytest.raises(ValueError, match="NLOptWrapper starts from the current parameters"):
        opt.step(Closure(opt, x))


def test_roundoff_limited_uses_best_point():
    """LN_BOBYQA stops with RoundoffLimited on this problem: the best evaluated point and its loss are used."""
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1.0, 3.0], dtype=torch.float64)
    c = torch.tensor([0.3, -0.7], dtype=torch.float64)
    opt = NLOptWrapper([x], "LN_BOBYQA")
    closure = Closure(opt, x, f=lambda v: (w * (v - c) ** 2).sum() + 1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = opt.step(closure)
    losses = [closure.f(torch.from_numpy(p)).item() for p in closure.points]
    assert value == min(losses) == closure.f(x.detach()).item()
    if any("RoundoffLimited" in str(w.message) for w in caught):
        np.testing.assert_array_equal(x.detach().numpy(), closure.points[int(np.argmin(losses))])


def test_argument_validation():
    x = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="NLOptWrapper: maxeval"):
        NLOptWrapper([x], "LD_LBFGS", maxeval=0)
    with pytest.raises(ValueError, match="NLOptWrapper: xtol_rel must be non-negative"):
        NLOptWrapper([x], "LD_LBFGS", xtol_rel=-1.0)
    with pytest.raises(ValueError, match="NLOptWrapper: ftol_abs"):
        NLOptWrapper([x], "LD_LBFGS", ftol_abs=math.nan)
    with pytest.raises(ValueError, match="NLOptWrapper: lb must be smaller than ub"):
        NLOptWrapper([x], "LD_LBFGS", lb=3.0, ub=-3.0)
