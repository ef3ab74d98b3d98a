"""Trajectories of module chains against the ``torch.optim`` optimizers they are equivalent to (float64, 30 steps)."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from sweep import Objective, assert_all_close, clone_params, make_params, snapshot

import torchzero as tz

N_STEPS = 30
RTOL = 1e-6


def _trajectory(make_opt: Callable, params: list[torch.Tensor], f: Callable, use_closure: bool
                ) -> list[list[torch.Tensor]]:
    opt = make_opt(params)
    out = []
    for _ in range(N_STEPS):
        if use_closure:
            def closure(backward=True):
                loss = f(params)
                if backward:
                    opt.zero_grad()
                    loss.backward()
                return loss
            opt.step(closure)
        else:
            opt.zero_grad()
            f(params).backward()
            opt.step()
        out.append(snapshot(params))
    return out


def _compare(make_tz: Callable, make_torch: Callable, use_closure: bool = True) -> None:
    x0 = make_params(torch.float64)
    f = Objective(x0)
    tz_traj = _trajectory(make_tz, clone_params(x0), f, use_closure)
    torch_traj = _trajectory(make_torch, clone_params(x0), f, use_closure=False)
    for k, (a, b) in enumerate(zip(tz_traj, torch_traj)):
        assert_all_close(a, b, rtol=RTOL, atol=1e-12, msg=f"step {k}")


CASES: dict[str, tuple[Callable, Callable]] = {
    "sgd": (lambda p: tz.Modular(p, tz.m.LR(0.05)), lambda p: torch.optim.SGD(p, lr=0.05)),
    "heavyball": (lambda p: tz.Modular(p, tz.m.HeavyBall(0.9), tz.m.LR(0.02)),
                  lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9)),
    "heavyball_dampening": (lambda p: tz.Modular(p, tz.m.HeavyBall(0.8, dampening=0.3), tz.m.LR(0.02)),
                            lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.8, dampening=0.3)),
    "nag": (lambda p: tz.Modular(p, tz.m.NAG(0.9), tz.m.LR(0.02)),
            lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9, nesterov=True)),
    "sgd_weight_decay": (lambda p: tz.Modular(p, tz.m.WeightDecay(0.1), tz.m.LR(0.05)),
                         lambda p: torch.optim.SGD(p, lr=0.05, weight_decay=0.1)),
    "heavyball_weight_decay": (lambda p: tz.Modular(p, tz.m.WeightDecay(0.1), tz.m.HeavyBall(0.9), tz.m.LR(0.02)),
                               lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9, weight_decay=0.1)),
    "adam": (lambda p: tz.Modular(p, tz.m.Adam(0.9, 0.999), tz.m.LR(0.05)),
             lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.9, 0.999))),
    "adam_betas": (lambda p: tz.Modular(p, tz.m.Adam(0.8, 0.95, eps=1e-6), tz.m.LR(0.03)),
                   lambda p: torch.optim.Adam(p, lr=0.03, betas=(0.8, 0.95), eps=1e-6)),
    "amsgrad": (lambda p: tz.Modular(p, tz.m.Adam(0.9, 0.99, amsgrad=True), tz.m.LR(0.05)),
                lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.9, 0.99), amsgrad=True)),
    "adam_l2": (lambda p: tz.Modular(p, tz.m.WeightDecay(0.1), tz.m.Adam(0.9, 0.999), tz.m.LR(0.05)),
                lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1)),
    "adamw": (lambda p: tz.Modular(p, tz.m.Adam(0.9, 0.999), tz.m.WeightDecay(0.1), tz.m.LR(0.05)),
              lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1)),
    # Adam not fused into the final step (a module between Adam and LR)
    "adam_unfused": (lambda p: tz.Modular(p, tz.m.Adam(0.9, 0.999), tz.m.LR(0.5), tz.m.LR(0.1)),
                     lambda p: torch.optim.Adam(p, lr=0.05)),
    "adam_alpha": (lambda p: tz.Modular(p, tz.m.Adam(alpha=0.5), tz.m.LR(0.1)),
                   lambda p: torch.optim.Adam(p, lr=0.05)),
    "clip_value_sgd": (lambda p: tz.Modular(p, tz.m.ClipValue(0.5), tz.m.LR(0.05)), None),
    "clip_norm_global_sgd": (lambda p: tz.Modular(p, tz.m.ClipNorm(1.0, dim="global"), tz.m.LR(0.05)), None),
}


@pytest.mark.parametrize("use_closure", [True, False])
@pytest.mark.parametrize("name", [k for k, v in CASES.items() if v[1] is not None])
def test_matches_torch_optim(name: str, use_closure: bool) -> None:
    make_tz, make_torch = CASES[name]
    with pytest.warns(UserWarning) if name == "adam_unfused" else _nullcontext():
        _compare(make_tz, make_torch, use_closure)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


class _ClippedSGD(torch.optim.SGD):
    """SGD after ``torch.nn.utils`` gradient clipping (the reference for clipping modules first in the chain)."""

    def __init__(self, params, lr, clip):
        super().__init__(params, lr=lr)
        self.clip = clip

    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"]]
        self.clip(params)
        return super().step(closure)


def test_clip_value_matches_torch_utils() -> None:
    _compare(CASES["clip_value_sgd"][0],
             lambda p: _ClippedSGD(p, 0.05, lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.5)))


def test_clip_norm_global_matches_torch_utils() -> None:
    # torch divides by (norm + 1e-6); the difference is far below the tolerance for norms of order 1-100
    x0 = make_params(torch.float64)
    f = Objective(x0)
    a = _trajectory(CASES["clip_norm_global_sgd"][0], clone_params(x0), f, True)
    b = _trajectory(lambda p: _ClippedSGD(p, 0.05, lambda ps: torch.nn.utils.clip_grad_norm_(ps, 1.0)),
                    clone_params(x0), f, False)
    for x, y in zip(a, b):
        assert_all_close(x, y, rtol=1e-5, atol=1e-7)


def test_lr_scheduler_changes_lr() -> None:
    x0 = make_params(torch.float64)
    f = Objective(x0)

    def make_tz(p):
        opt = tz.Modular(p, tz.m.Adam(), tz.m.LR(0.05))
        opt.scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        return opt

    def make_torch(p):
        opt = torch.optim.Adam(p, lr=0.05)
        opt.scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        return opt

    trajs = []
    for make in (make_tz, make_torch):
        params = clone_params(x0)
        opt = make(params)
        traj = []
        for _ in range(12):
            opt.zero_grad()
            f(params).backward()
            opt.step()
            opt.scheduler.step()
            traj.append(snapshot(params))
        trajs.append(traj)
    for a, b in zip(*trajs):
        assert_all_close(a, b, rtol=RTOL, atol=1e-12)


def test_per_group_lr_and_betas() -> None:
    def groups(p):
        return [{"params": p[:4], "lr": 0.01, "beta1": 0.5}, {"params": p[4:]}]

    def torch_groups(p):
        return [{"params": p[:4], "lr": 0.01, "betas": (0.5, 0.999)}, {"params": p[4:]}]

    _compare(lambda p: tz.Modular(groups(p), tz.m.Adam(), tz.m.LR(0.05)),
             lambda p: torch.optim.Adam(torch_groups(p), lr=0.05))
