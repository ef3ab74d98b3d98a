"""Split: the same iterates as stepping its optimizers separately (float64, 30 steps, bitwise), one closure evaluation
per step, shared parameter groups (schedulers), state dict round trip, errors."""
from __future__ import annotations

import warnings

import pytest
import torch
from sweep import SHAPES, Objective, assert_all_equal, clone_params, make_params, roundtrip, snapshot

import torchzero as tz
from torchzero.optim import Split

N_STEPS = 30


def _halves(params: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return params[::2], params[1::2]


def _closure(opt: torch.optim.Optimizer, params: list[torch.Tensor], f: Objective, counter: list[int] | None = None):
    def closure(backward: bool = True) -> torch.Tensor:
        if counter is not None:
            counter[0] += 1
        loss = f(params)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss
    return closure


FACTORIES = {
    "sgd+adam": lambda a, b: [torch.optim.SGD(a, lr=0.05, momentum=0.9), torch.optim.Adam(b, lr=0.05)],
    "modular+adamw": lambda a, b: [tz.Modular(a, tz.m.Adam(), tz.m.LR(0.05)), torch.optim.AdamW(b, lr=0.02)],
    "nested": lambda a, b: [(torch.optim.SGD(a[:2], lr=0.05), torch.optim.SGD(a[2:], lr=0.01)),
                            torch.optim.Adagrad(b, lr=0.1)],
}


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("use_closure", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_iterates_as_separate_optimizers(name: str, use_closure: bool, dtype: torch.dtype):
    params = make_params(dtype)
    f = Objective(params)
    ref_params = clone_params(params)

    split = Split(*FACTORIES[name](*_halves(params)))
    ref_opts = FACTORIES[name](*_halves(ref_params))
    ref_flat = [o for item in ref_opts for o in (item if isinstance(item, tuple) else (item,))]
    counter = [0]
    for _ in range(N_STEPS):
        if use_closure:
            loss = split.step(_closure(split, params, f, counter))
            assert torch.equal(loss, f([p.detach() for p in ref_params]))
        else:
            split.zero_grad()
            f(params).backward()
            assert split.step() is None

        for o in ref_flat:
            o.zero_grad()
        f(ref_params).backward()
        for o in ref_flat:
            o.step()
        assert_all_equal(snapshot(params), snapshot(ref_params), f"{name} step")
    if use_closure:
        assert counter[0] == N_STEPS  # one closure evaluation per step


def test_param_groups_are_shared_and_schedulers_reach_every_optimizer():
    params = make_params(torch.float64, shapes=SHAPES[:4])
    ref_params = clone_params(params)
    f = Objective(params)

    sgd, adam = torch.optim.SGD(params[:2], lr=0.1), torch.optim.Adam(params[2:], lr=0.1)
    split = Split(sgd, adam)
    assert split.param_groups[0] is sgd.param_groups[0] and split.param_groups[1] is adam.param_groups[0]
    scheduler = torch.optim.lr_scheduler.StepLR(split, step_size=3, gamma=0.5)

    ref = [torch.optim.SGD(ref_params[:2], lr=0.1), torch.optim.Adam(ref_params[2:], lr=0.1)]
    ref_schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5) for o in ref]
    for _ in range(10):
        split.step(_closure(split, params, f))
        scheduler.step()
        for o in ref:
            o.zero_grad()
        f(ref_params).backward()
        for o, s in zip(ref, ref_schedulers):
            o.step()
            s.step()
        assert_all_equal(snapshot(params), snapshot(ref_params))
    assert sgd.param_groups[0]["lr"] == adam.param_groups[0]["lr"] == 0.1 * 0.5**3


def test_state_dict_round_trip_continues_bit_identically():
    params = make_params(torch.float64)
    f = Objective(params)

    def make(ps):
        a, b = _halves(ps)
        return Split(torch.optim.SGD(a, lr=0.05, momentum=0.9), tz.Modular(b, tz.m.Adam(), tz.m.LR(0.05)))

    split = make(params)
    for _ in range(5):
        split.step(_closure(split, params, f))
    sd = roundtrip(split.state_dict())

    params2 = clone_params(params)
    split2 = make(params2)
    split2.load_state_dict(sd)
    for _ in range(5):
        split.step(_closure(split, params, f))
        split2.step(_closure(split2, params2, f))
    assert_all_equal(snapshot(params), snapshot(params2))

    with pytest.raises(ValueError, match="Split.load_state_dict: the state dict holds 2 optimizers"):
        Split(torch.optim.SGD(params[:1], lr=0.1)).load_state_dict(sd)
    with pytest.raises(ValueError, match="Split.load_state_dict expects"):
        split2.load_state_dict({"state": {}})


def test_zero_grad_clears_all_parameters():
    params = make_params(torch.float64, shapes=SHAPES[:4])
    split = Split(torch.optim.SGD(params[:2], lr=0.1), torch.optim.Adam(params[2:]))
    sum(p.sum() for p in params).backward()
    split.zero_grad()
    assert all(p.grad is None for p in params)


def test_errors():
    a, b = make_params(torch.float64, shapes=[(2,), (3,)])
    with pytest.raises(ValueError, match="Split needs at least one optimizer"):
        Split()
    with pytest.raises(TypeError, match="Split expects torch.optim.Optimizer instances"):
        Split(torch.optim.SGD([a], lr=0.1), "adam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="LBFGS requires one"):
        Split(torch.optim.SGD([a], lr=0.1), torch.optim.LBFGS([b]))
    with pytest.warns(UserWarning, match="Split: 1 parameter"):
        Split(torch.optim.SGD([a, b], lr=0.1), torch.optim.Adam([b]))
    split = Split(torch.optim.SGD([a], lr=0.1))
    with pytest.raises(TypeError, match="Split.add_param_group"):
        split.add_param_group({"params": [b]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Split([torch.optim.SGD([a], lr=0.1), torch.optim.SGD([b], lr=0.1)])  # no duplicate, no warning
