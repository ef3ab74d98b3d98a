"""NevergradWrapper against nevergrad's own ask/tell loop on the same objective: the same points, one evaluation per
step; parametrization (init, bounds, mutable sigma per group), recommendation, NaN policy and argument checks."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

ng = pytest.importorskip("nevergrad")
pytestmark = pytest.mark.filterwarnings("ignore:Could not import matplotlib")

from torchzero.optim.wrappers.nevergrad import NevergradWrapper  # noqa: E402

C = np.array([0.3, -0.7, 0.1])


def f_np(x: np.ndarray) -> float:
    d = x - C
    return float(d[0] * d[0] + 3 * d[1] * d[1] + 2 * d[2] * d[2])


def f_torch(ps: list[torch.Tensor]) -> torch.Tensor:
    x = torch.cat([p.reshape(-1) for p in ps])
    d = x - torch.tensor(C, dtype=x.dtype)
    return d[0] * d[0] + 3 * d[1] * d[1] + 2 * d[2] * d[2]


def make_closure(opt: torch.optim.Optimizer, params: list[torch.Tensor], f=f_torch, seen: list | None = None):
    def closure(backward: bool = True) -> torch.Tensor:
        if seen is not None:
            seen.append(torch.cat([p.detach().reshape(-1) for p in params]).numpy().copy())
        loss = f(params)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("name", ["OnePlusOne", "CMA", "DE"])
def test_same_points_as_nevergrad_ask_tell(name: str):
    a = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)  # 0-d
    np.random.seed(0)
    opt = NevergradWrapper([{"params": [a], "lb": -2.0, "ub": 2.0}, {"params": [b]}], ng.optimizers.registry[name],
                           budget=60)
    seen: list[np.ndarray] = []
    closure = make_closure(opt, [a, b], seen=seen)
    losses = [opt.step(closure) for _ in range(60)]

    np.random.seed(0)
    param = ng.p.Tuple(ng.p.Array(init=np.array([1.0, 0.5]), lower=-2.0, upper=2.0), ng.p.Array(init=np.array(0.2)))
    ref = ng.optimizers.registry[name](param, budget=60)
    ref_points, ref_losses = [], []
    for _ in range(60):
        cand = ref.ask()
        x = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in cand.value])
        ref_points.append(x)
        ref_losses.append(f_np(x))
        ref.tell(cand, ref_losses[-1])

    assert len(seen) == 60 and opt.num_evaluations == 60  # one evaluation per step
    for ours, theirs in zip(seen, ref_points):
        np.testing.assert_array_equal(ours, theirs)
    assert losses == ref_losses
    assert b.shape == () and (a.detach().abs() <= 2).all()
    # the parameters are left at the last asked point
    np.testing.assert_array_equal(torch.cat([a.detach(), b.detach().reshape(1)]).numpy(), seen[-1])

    value = opt.load_best()
    rec = ref.provide_recommendation()
    np.testing.assert_array_equal(torch.cat([a.detach(), b.detach().reshape(1)]).numpy(),
                                  np.concatenate([np.asarray(v).reshape(-1) for v in rec.value]))
    if rec.loss is not None:
        assert value == rec.loss


def test_parametrization_from_groups():
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, dtype=torch.float32, requires_grad=True)
    frozen = torch.ones(2, requires_grad=False)
    opt = NevergradWrapper([{"params": [a], "lb": -1.0, "ub": 1.0, "mutable_sigma": True}, {"params": [b, frozen]}],
                           ng.optimizers.OnePlusOne, budget=5)
    opt.step(make_closure(opt, [a, b], f=lambda ps: (ps[0] ** 2).sum() + (ps[1] ** 2).sum()))
    arrays = opt.opt.parametrization
    assert len(arrays) == 2  # the frozen tensor is not searched
    np.testing.assert_array_equal(arrays[0].bounds[0], [-1.0])
    np.testing.assert_array_equal(arrays[0].bounds[1], [1.0])
    assert arrays[1].bounds == (None, None)
    assert not isinstance(arrays[0].sigma, ng.p.Constant) and isinstance(arrays[1].sigma, ng.p.Constant)
    assert b.dtype == torch.float32 and torch.equal(frozen, torch.ones(2))


def test_use_init():
    a = torch.full((2,), 5.0, dtype=torch.float64, requires_grad=True)
    opt = NevergradWrapper([a], ng.optimizers.OnePlusOne, lb=-1, ub=1)
    with pytest.raises(ValueError, match="NevergradWrapper: with use_init=True the current parameters must lie within"):
        opt.step(make_closure(opt, [a], f=lambda ps: (ps[0] ** 2).sum()))

    opt = NevergradWrapper([a], ng.optimizers.OnePlusOne, lb=-1, ub=1, use_init=False)
    opt.step(make_closure(opt, [a], f=lambda ps: (ps[0] ** 2).sum()))
    assert (a.detach().abs() <= 1).all()


def test_nan_loss_is_told_as_inf_and_returned():
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = NevergradWrapper([a], ng.optimizers.OnePlusOne, budget=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nevergrad warns when it clips inf
        loss = opt.step(make_closure(opt, [a], f=lambda ps: ps[0].sum() * math.nan))
    assert math.isnan(loss)


def test_validation():
    a = torch.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match="NevergradWrapper: opt_cls"):
        NevergradWrapper([a], "OnePlusOne")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NevergradWrapper: budget"):
        NevergradWrapper([a], ng.optimizers.OnePlusOne, budget=0)
    with pytest.raises(TypeError, match="NevergradWrapper: mutable_sigma"):
        NevergradWrapper([a], ng.optimizers.OnePlusOne, mutable_sigma=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NevergradWrapper: lb must be smaller than ub"):
        NevergradWrapper([a], ng.optimizers.OnePlusOne, lb=1, ub=1)
    with pytest.raises(RuntimeError, match="NevergradWrapper.load_best: no step"):
        NevergradWrapper([a], ng.optimizers.OnePlusOne).load_best()
