"""Wrap: torch.optim optimizers as modules. Trajectories against the optimizers run directly (float64, 30 steps)
on the direct path (only module, after another module, before LR) and on the difference path; state dict round
trip of the wrapped optimizer's state; the sweep."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from sweep import (
    Objective,
    assert_all_close,
    assert_all_equal,
    check_module,
    clone_params,
    make_params,
    roundtrip,
    snapshot,
)

import torchzero as tz
from torchzero.modules.wrappers.wrap import Wrap

pytestmark = pytest.mark.filterwarnings("ignore:multiple learning rate modules")


N_STEPS = 30

OPTIMIZERS: dict[str, tuple[type, dict]] = {
    "sgd": (torch.optim.SGD, dict(lr=0.05)),
    "sgd_momentum_nesterov_wd": (torch.optim.SGD, dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.1)),
    "adam": (torch.optim.Adam, dict(lr=0.05, betas=(0.8, 0.95))),
    "adam_amsgrad": (torch.optim.Adam, dict(lr=0.05, amsgrad=True)),
    "adagrad": (torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.01)),
}


def _closure(opt, params, f, counter=None):
    def closure(backward=True):
        if counter is not None:
            counter.append(backward)
        loss = f(params)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss
    return closure


def _trajectories(make_tz: Callable, torch_cls: type, torch_kwargs: dict, grad_hook: Callable | None = None,
                  use_closure: bool = True) -> tuple[list, list]:
    x0 = make_params(torch.float64)
    f = Objective(x0)
    ps_tz, ps_ref = clone_params(x0), clone_params(x0)
    opt = make_tz(ps_tz)
    ref = torch_cls(ps_ref, **torch_kwargs)
    traj_tz, traj_ref = [], []
    for _ in range(N_STEPS):
        if use_closure:
            opt.step(_closure(opt, ps_tz, f))
        else:
            opt.zero_grad()
            f(ps_tz).backward()
            opt.step()
        ref.zero_grad()
        f(ps_ref).backward()
        if grad_hook is not None:
            grad_hook(ps_ref)
        ref.step()
        traj_tz.append(snapshot(ps_tz))
        traj_ref.append(snapshot(ps_ref))
    return traj_tz, traj_ref


def _assert_same(traj_tz, traj_ref, exact: bool):
    for k, (a, b) in enumerate(zip(traj_tz, traj_ref)):
        if exact:
            assert_all_equal(a, b, msg=f"step {k}")
        else:
            assert_all_close(a, b, rtol=1e-6, atol=1e-12, msg=f"step {k}")


# --------------------------------------------------------------------------------------------- catalog checks
def _run(*modules, steps=1):
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    opt = tz.Modular([x], *modules)
    for _ in range(steps):
        opt.step(_closure(opt, x, lambda x: (x**2).sum()))
    return x.detach(), opt


def test_wrap_checks():
    x, _ = _run(Wrap(torch.optim.SGD, lr=0.1))
    torch.testing.assert_close(x, torch.tensor([0.8], dtype=torch.float64))
    x, _ = _run(Wrap(torch.optim.SGD, lr=0.1), tz.m.LR(2.0))  # lr scaled inside the wrapped optimizer
    torch.testing.assert_close(x, torch.tensor([0.6], dtype=torch.float64))
    x, _ = _run(Wrap(torch.optim.SGD, lr=0.1), tz.m.Mul(2.0))  # difference path
    torch.testing.assert_close(x, torch.tensor([0.6], dtype=torch.float64))
    wrap = Wrap(torch.optim.SGD, lr=0.1, momentum=0.9)
    _run(wrap, steps=2)
    assert wrap.optimizer is not None
    (buf,) = [s["momentum_buffer"] for s in wrap.optimizer.state.values()]
    torch.testing.assert_close(buf, torch.tensor([3.4], dtype=torch.float64))


# --------------------------------------------------------------------------------------------- parity with torch.optim
@pytest.mark.parametrize("use_closure", [True, False])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_only_module_matches_torch(name, use_closure):
    cls, kw = OPTIMIZERS[name]
    traj = _trajectories(lambda p: tz.Modular(p, Wrap(cls, **kw)), cls, kw, use_closure=use_closure)
    _assert_same(*traj, exact=True)  # direct path: torch's own step on the same gradients


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_after_clip_value_matches_torch(name):
    cls, kw = OPTIMIZERS[name]
    traj = _trajectories(lambda p: tz.Modular(p, tz.m.ClipValue(0.5), Wrap(cls, **kw)), cls, kw,
                         grad_hook=lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.5))
    _assert_same(*traj, exact=True)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_with_lr_after_matches_torch(name):
    cls, kw = OPTIMIZERS[name]
    kw_scaled = dict(kw, lr=kw["lr"] * 0.5)
    traj = _trajectories(lambda p: tz.Modular(p, Wrap(cls, **kw), tz.m.LR(0.5)), cls, kw_scaled)
    _assert_same(*traj, exact=True)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_difference_path_matches_torch(name):
    cls, kw = OPTIMIZERS[name]
    traj = _trajectories(lambda p: tz.Modular(p, Wrap(cls, **kw), tz.m.Mul(1.0)), cls, kw)
    _assert_same(*traj, exact=False)
    # an lr module with per-parameter values also takes the difference path
    kw_scaled = dict(kw, lr=kw["lr"] * 0.5)
    traj = _trajectories(lambda p: tz.Modular([{"params": p[:3]}, {"params": p[3:]}], Wrap(cls, **kw), tz.m.LR(0.5)),
                         cls, kw_scaled)
    _assert_same(*traj, exact=False)


def test_per_parameter_lr_module_difference_path():
    a = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    opt = tz.Modular([{"params": [a], "lr": 0.5}, {"params": [b]}], Wrap(torch.optim.SGD, lr=1.0), tz.m.LR(0.1))
    opt.step(_closure(opt, [a, b], lambda ps: (ps[0] ** 2).sum() + (ps[1] ** 2).sum()))
    torch.testing.assert_close(a.detach(), torch.tensor([0.0], dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.tensor([0.8], dtype=torch.float64))


# --------------------------------------------------------------------------------------------- state
@pytest.mark.parametrize("modules", [lambda: [Wrap(torch.optim.Adam, lr=0.05)],
                                     lambda: [Wrap(torch.optim.SGD, lr=0.02, momentum=0.9), tz.m.Mul(1.0)]])
def test_state_dict_round_trip_continues_bit_identically(modules):
    x0 = make_params(torch.float64)
    f = Objective(x0)
    ps_a = clone_params(x0)
    opt_a = tz.Modular(ps_a, *modules())
    for _ in range(5):
        opt_a.step(_closure(opt_a, ps_a, f))
    sd = roundtrip(opt_a.state_dict())  # torch.load(weights_only=True)
    saved = sd["modules"][0]["extra"]["optimizer"]
    assert len(saved["state"]) == len(x0)
    ps_b = clone_params(snapshot(ps_a))
    opt_b = tz.Modular(ps_b, *modules())
    opt_b.load_state_dict(sd)
    for _ in range(5):
        opt_a.step(_closure(opt_a, ps_a, f))
        opt_b.step(_closure(opt_b, ps_b, f))
    assert_all_equal(ps_a, ps_b, "state_dict round trip")


def test_reset_clears_wrapped_state_and_grads_restored():
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    wrap = Wrap(torch.optim.Adam, lr=0.1)
    opt = tz.Modular([x], tz.m.Mul(2.0), wrap)
    g = torch.tensor([0.5, -1.0], dtype=torch.float64)
    x.grad = g
    opt.step()
    assert x.grad is g and torch.equal(g, torch.tensor([0.5, -1.0], dtype=torch.float64))
    assert wrap.optimizer is not None and len(wrap.optimizer.state) == 1
    wrap.reset()
    assert len(wrap.optimizer.state) == 0


SWEEP = {
    "sgd_momentum": lambda: [Wrap(torch.optim.SGD, lr=0.01, momentum=0.9)],
    "adam_lr": lambda: [Wrap(torch.optim.Adam), tz.m.LR(0.5)],
    "clip_adagrad": lambda: [tz.m.ClipValue(1.0), Wrap(torch.optim.Adagrad, lr=0.01)],
    "difference_path": lambda: [Wrap(torch.optim.Adam, lr=0.01), tz.m.ClipValue(1.0), tz.m.LR(0.5)],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name):
    check_module(SWEEP[name])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_cuda(name):
    check_module(SWEEP[name], device="cuda")


# --------------------------------------------------------------------------------------------- construction
def test_instance_param_groups_and_errors():
    a = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    f = lambda ps: (ps[0] ** 2).sum() + (ps[1] ** 2).sum()
    # an optimizer instance is used as is
    inner = torch.optim.SGD([a, b], lr=0.25)
    opt = tz.Modular([a, b], Wrap(inner))
    opt.step(_closure(opt, [a, b], f))
    torch.testing.assert_close(a.detach(), torch.tensor([0.5], dtype=torch.float64))
    # groups given to set_param_groups are passed to the optimizer as they are
    a.data.fill_(1.0)
    b.data.fill_(1.0)
    wrap = Wrap(torch.optim.SGD, lr=0.1).set_param_groups([{"params": [a], "lr": 0.5}, {"params": [b]}])
    opt = tz.Modular([a, b], wrap)
    opt.step(_closure(opt, [a, b], f))
    torch.testing.assert_close(a.detach(), torch.tensor([0.0], dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.tensor([0.8], dtype=torch.float64))
    with pytest.raises(ValueError, match="Wrap"):
        Wrap(inner, lr=0.1)
    with pytest.raises(TypeError, match="Wrap"):
        Wrap(3.0)  # type: ignore[arg-type]
    opt = tz.Modular([a, b], Wrap(lambda params: "not an optimizer"))
    with pytest.raises(TypeError, match="Wrap"):
        opt.step(_closure(opt, [a, b], f))
