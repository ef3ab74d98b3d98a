"""utils.Optimizer: parameter filters, per-parameter group values and state, global_state across load_state_dict, and
an optimizer written with it against torch.optim (float64, 30 steps)."""
from __future__ import annotations

import pytest
import torch
from sweep import Objective, assert_all_close, clone_params, make_params, roundtrip, snapshot

from torchzero.utils.numberlist import NumberList
from torchzero.utils.optimizer import Optimizer, get_group_vals, get_params
from torchzero.utils.tensorlist import TensorList


class _Plain(Optimizer):
    def step(self, closure=None):  # type: ignore[override]
        return None


def _setup():
    a = torch.zeros(2, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    frozen = torch.zeros(4)
    c = torch.zeros((), requires_grad=True)
    opt = _Plain([{"params": [a, frozen], "lr": 0.1}, {"params": [b, c]}], lr=1.0, beta=0.9)
    return opt, a, b, frozen, c


def test_defaults_merge_without_mutation():
    defaults = {"lr": 1.0, "beta": 0.5}
    opt = _Plain([torch.zeros(1, requires_grad=True)], defaults, beta=0.9, eps=1e-8)
    assert opt.defaults == {"lr": 1.0, "beta": 0.9, "eps": 1e-8}
    assert defaults == {"lr": 1.0, "beta": 0.5}
    model = torch.nn.Linear(2, 1)
    opt = _Plain(model, lr=0.1)
    assert [id(p) for p in opt.get_params()] == [id(p) for p in model.parameters()]


def test_get_params_modes():
    opt, a, b, frozen, c = _setup()
    params = opt.get_params()
    assert isinstance(params, TensorList) and [id(p) for p in params] == [id(a), id(b), id(c)]
    assert [id(p) for p in opt.get_params("all", cls=list)] == [id(a), id(frozen), id(b), id(c)]
    assert len(opt.get_params("has_grad")) == 0
    b.grad = torch.ones(3)
    assert [id(p) for p in opt.get_params("has_grad")] == [id(b)]
    assert [id(p) for p in opt.get_params(lambda p: p.ndim == 0)] == [id(c)]
    with pytest.raises(ValueError, match="unknown parameter filter 'trainable'"):
        opt.get_params("trainable")  # type: ignore[arg-type]
    assert [id(p) for p in get_params(opt.param_groups, "all", list)] == [id(a), id(frozen), id(b), id(c)]


def test_group_vals():
    opt, a, b, frozen, c = _setup()
    lrs = opt.group_vals("lr")
    assert isinstance(lrs, NumberList) and list(lrs) == [0.1, 1.0, 1.0]
    lrs, betas = opt.group_vals("lr", "beta")
    assert list(lrs) == [0.1, 1.0, 1.0] and list(betas) == [0.9, 0.9, 0.9]
    lrs, betas = opt.group_vals(["lr", "beta"], mode="all", cls=list)
    assert lrs == [0.1, 0.1, 1.0, 1.0] and betas == [0.9] * 4
    b.grad = torch.ones(3)
    assert list(opt.group_vals("lr", mode="has_grad")) == [1.0]
    with pytest.raises(KeyError, match="'gamma'"):
        opt.group_vals("gamma")
    assert get_group_vals(opt.param_groups, "lr", cls=list) == [0.1, 1.0, 1.0]


def test_state_vals_and_global_state():
    opt, a, b, frozen, c = _setup()
    exp_avg = opt.state_vals("exp_avg")
    assert isinstance(exp_avg, TensorList) and [t.shape for t in exp_avg] == [a.shape, b.shape, c.shape]
    exp_avg.add_(1)
    assert all((t == 1).all() for t in opt.state_vals("exp_avg"))  # stored, not recreated
    m, v = opt.state_vals("m", "v", init=[torch.ones_like, torch.zeros_like])
    assert all((t == 1).all() for t in m) and all((t == 0).all() for t in v)
    (only,) = opt.state_vals(["m"])
    assert all(x is y for x, y in zip(only, m))
    assert frozen not in opt.state

    opt.global_state["step"] = 3
    assert opt.state[a]["step"] == 3  # the state of the first parameter
    sd = roundtrip(opt.state_dict())
    opt2, *_ = _setup()
    opt2.load_state_dict(sd)
    assert opt2.global_state["step"] == 3  # still found after load_state_dict replaced `state`
    opt2.global_state["step"] = 4
    assert opt2.state[opt2.param_groups[0]["params"][0]]["step"] == 4


class SignMomentum(Optimizer):
    """Heavy-ball momentum written with the helpers: buf = μ·buf + g; p -= lr·buf."""

    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.9):
        super().__init__(params, lr=lr, momentum=momentum)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self.get_params("has_grad")
        lr, momentum = self.group_vals("lr", "momentum", mode="has_grad")
        buf = self.state_vals("buf", mode="has_grad")
        buf.mul_(momentum).add_(params.grad)
        params.sub_(buf * lr)
        self.global_state["step"] = self.global_state.get("step", 0) + 1
        return loss


def test_optimizer_written_with_helpers_matches_torch_sgd():
    params = make_params(torch.float64)
    f = Objective(params)
    ref_params = clone_params(params)
    half = len(params) // 2
    opt = SignMomentum([{"params": params[:half], "lr": 0.05}, {"params": params[half:]}], lr=0.02, momentum=0.8)
    ref = torch.optim.SGD([{"params": ref_params[:half], "lr": 0.05}, {"params": ref_params[half:]}], lr=0.02,
                          momentum=0.8)
    for _ in range(30):
        for o, ps in ((opt, params), (ref, ref_params)):
            o.zero_grad()
            f(ps).backward()
            o.step()
    assert_all_close(snapshot(params), snapshot(ref_params), rtol=1e-6, atol=1e-12)
    assert opt.global_state["step"] == 30
