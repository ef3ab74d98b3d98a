"""LR, StepSize, EMA, HeavyBall, NAG, Adam, WeightDecay, ClipValue, ClipNorm, Normalize: the shared sweep and
each module's own checks from the catalog."""
from __future__ import annotations

import pytest
import torch
from sweep import check_module

import torchzero as tz
from torchzero.core import Var

SWEEP = {
    "LR": lambda: [tz.m.LR(0.01)],
    "StepSize": lambda: [tz.m.StepSize(0.01, key="alpha")],
    "EMA": lambda: [tz.m.EMA(0.9), tz.m.LR(0.01)],
    "EMA_debiased_update_init": lambda: [tz.m.EMA(0.8, dampening=0.1, debiased=True, ema_init="update"),
                                         tz.m.LR(0.01)],
    "HeavyBall": lambda: [tz.m.HeavyBall(0.9), tz.m.LR(0.01)],
    "HeavyBall_not_last": lambda: [tz.m.HeavyBall(0.9), tz.m.ClipValue(10), tz.m.LR(0.01)],
    "NAG": lambda: [tz.m.NAG(0.9), tz.m.LR(0.01)],
    "NAG_lerp": lambda: [tz.m.NAG(0.5, lerp=True, dampening=0.2), tz.m.LR(0.01)],
    "Adam": lambda: [tz.m.Adam(), tz.m.LR(0.01)],
    "Adam_amsgrad_pow": lambda: [tz.m.Adam(amsgrad=True, pow=3, alpha=2.0), tz.m.LR(0.01)],
    "Adam_not_debiased_last": lambda: [tz.m.Adam(debiased=False)],
    "Adam_inner": lambda: [tz.m.Adam(inner=tz.m.EMA(0.5)), tz.m.LR(0.01)],
    "WeightDecay": lambda: [tz.m.WeightDecay(0.1), tz.m.LR(0.01)],
    "WeightDecay_ord1": lambda: [tz.m.WeightDecay(0.1, ord=1), tz.m.LR(0.01)],
    "WeightDecay_ord3": lambda: [tz.m.WeightDecay(0.1, ord=3), tz.m.LR(0.01)],
    "ClipValue": lambda: [tz.m.ClipValue(0.1), tz.m.LR(0.01)],
    "ClipNorm": lambda: [tz.m.ClipNorm(0.5), tz.m.LR(0.01)],
    "ClipNorm_dims": lambda: [tz.m.ClipNorm(0.5, dim=0, inverse_dims=True, ord="linf"), tz.m.LR(0.01)],
    "ClipNorm_global": lambda: [tz.m.ClipNorm(0.5, dim="global", ord=1), tz.m.LR(0.01)],
    "Normalize": lambda: [tz.m.Normalize(), tz.m.LR(0.01)],
    "Normalize_mad_min_size": lambda: [tz.m.Normalize(2.0, ord="mad", dim=(0, 1), min_size=2), tz.m.LR(0.01)],
    "Normalize_global": lambda: [tz.m.Normalize(dim="global"), tz.m.LR(0.01)],
    "targets": lambda: [tz.m.ClipValue(1.0, target="grad"), tz.m.WeightDecay(0.1, target="update_difference"),
                        tz.m.Adam(), tz.m.LR(0.01)],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    check_module(SWEEP[name])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_cuda(name: str) -> None:
    check_module(SWEEP[name], device="cuda")


def test_sparse_gradients_are_rejected():
    emb = torch.nn.Embedding(5, 2, sparse=True)
    opt = tz.Modular(emb.parameters(), tz.m.Adam(), tz.m.LR(0.1))
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def _apply(module, *updates: torch.Tensor, params=None, grads=None) -> list[torch.Tensor]:
    """Steps ``module`` on a sequence of single-tensor updates and returns its outputs."""
    if params is None:
        params = [torch.zeros_like(updates[0])]
    outs = []
    for u in updates:
        var = Var(params=params, closure=None, model=None, current_step=0)
        var.grad = [u.clone()] if grads is None else grads
        var.update = [u.clone()]
        outs.append(module.step(var).update[0])
    return outs


def test_ema_constant_input():
    c = torch.tensor([2.0, -1.0])
    outs = _apply(tz.m.EMA(0.9), *[c] * 4)
    for t, o in enumerate(outs, 1):
        torch.testing.assert_close(o, (1 - 0.9**t) * c)
    for o in _apply(tz.m.EMA(0.9, debiased=True), *[c] * 4):
        torch.testing.assert_close(o, c)


def test_heavyball_first_buffer_is_input():
    u1, u2 = torch.tensor([1.0]), torch.tensor([3.0])
    o1, o2 = _apply(tz.m.HeavyBall(0.5), u1, u2)
    assert float(o1) == 1.0 and float(o2) == 0.5 * 1 + 3  # not (1 + beta) * u1
    o1, o2 = _apply(tz.m.HeavyBall(0.5, ema_init="zeros"), u1, u2)
    assert float(o1) == 1.0 and float(o2) == 3.5
    o1, o2 = _apply(tz.m.HeavyBall(0.5, dampening=0.5), u1, u2)
    assert float(o1) == 1.0 and float(o2) == 0.5 + 1.5


def test_output_does_not_alias_state():
    m = tz.m.EMA(0.5)
    params = [torch.zeros(1)]
    (o,) = _apply(m, torch.tensor([1.0]), params=params)
    o.add_(100)
    (o2,) = _apply(m, torch.tensor([1.0]), params=params)
    assert float(o2) == 0.75


def test_nag_formula():
    u1, u2 = torch.tensor([1.0]), torch.tensor([2.0])
    o1, o2 = _apply(tz.m.NAG(0.5), u1, u2)
    # v1 = 0.5*(0+1) = 0.5, out 1.5; v2 = 0.5*(0.5+2) = 1.25, out 3.25
    assert float(o1) == 1.5 and float(o2) == 3.25
    o1, o2 = _apply(tz.m.NAG(0.5, dampening=0.5), u1, u2)
    assert float(o1) == 1.25 and float(o2) == 2.625


def test_adam_formula_pow_and_no_debias():
    u = torch.tensor([0.5, -2.0])
    (o,) = _apply(tz.m.Adam(0.9, 0.99, eps=0.0), u)
    torch.testing.assert_close(o, torch.sign(u))
    (o,) = _apply(tz.m.Adam(0.9, 0.99, eps=0.0, debiased=False), u)
    torch.testing.assert_close(o, 0.1 * u / (0.01**0.5 * u.abs()))
    (o,) = _apply(tz.m.Adam(0.9, 0.99, eps=0.0, pow=3), u)
    torch.testing.assert_close(o, torch.sign(u))
    (o,) = _apply(tz.m.Adam(0.9, 0.99, eps=0.0, alpha=3.0), u)
    torch.testing.assert_close(o, 3 * torch.sign(u))


def test_adam_inner_gets_closure_and_loss():
    """The inner chain runs with the enclosing var's closure (the reference gave it a var without closure)."""
    seen = {}

    class NeedsClosure(tz.core.Module):
        def step(self, var):
            seen["loss"] = var.get_loss(False)
            seen["closure"] = var.closure
            return var

    p = [torch.tensor([1.0, 2.0], requires_grad=True)]
    opt = tz.Modular(p, tz.m.Adam(inner=NeedsClosure()), tz.m.LR(0.1))

    def closure(backward=True):
        loss = (p[0] ** 2).sum()
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    opt.step(closure)
    assert seen["closure"] is not None and float(seen["loss"]) == 5.0


def test_weight_decay_orders():
    x = torch.tensor([-2.0, 0.5, 3.0])
    u = torch.tensor([1.0, 1.0, 1.0])
    for ord_, expected in ((2, u + 0.1 * x), (1, u + 0.1 * torch.sign(x)),
                           (3, u + 0.1 * x.abs() ** 2 * torch.sign(x)), (4, u + 0.1 * x.abs() ** 3 * torch.sign(x))):
        (o,) = _apply(tz.m.WeightDecay(0.1, ord=ord_), u, params=[x])
        torch.testing.assert_close(o, expected)


def test_clip_value():
    u = torch.tensor([-3.0, 0.2, 5.0])
    (o,) = _apply(tz.m.ClipValue(1.0), u)
    torch.testing.assert_close(o, torch.clamp(u, -1, 1))


def test_clip_norm_per_tensor_and_slices():
    torch.manual_seed(0)
    a, b = torch.randn(4, 3) * 10, torch.randn(5) * 0.01
    var = Var(params=[torch.zeros(4, 3), torch.zeros(5)], closure=None, model=None, current_step=0)
    var.update = [a.clone(), b.clone()]
    out = tz.m.ClipNorm(1.0).step(var).update
    torch.testing.assert_close(out[0].norm(), torch.tensor(1.0))
    torch.testing.assert_close(out[1], b)  # already below the bound

    var.update = [a.clone(), b.clone()]
    out = tz.m.ClipNorm(1.0, dim=0).step(var).update  # one norm per column
    torch.testing.assert_close(out[0].norm(dim=0), torch.ones(3))

    var.update = [a.clone(), b.clone()]
    out = tz.m.ClipNorm(1.0, dim=0, inverse_dims=True).step(var).update  # one norm per row
    torch.testing.assert_close(out[0].norm(dim=1), torch.ones(4))

    # a 1-d first tensor must not change how later matrices are sliced (reference defect)
    var.update = [b.clone() * 1000, a.clone()]
    var.params = [torch.zeros(5), torch.zeros(4, 3)]
    out = tz.m.Normalize(1.0).step(var).update
    torch.testing.assert_close(out[1].norm(), torch.tensor(1.0))


def test_clip_norm_zero_and_min_size():
    var = Var(params=[torch.zeros(3), torch.zeros(1)], closure=None, model=None, current_step=0)
    var.update = [torch.zeros(3), torch.tensor([5.0])]
    out = tz.m.ClipNorm(1.0, min_size=2).step(var).update
    assert torch.equal(out[0], torch.zeros(3)) and float(out[1]) == 5.0
    var.update = [torch.zeros(3), torch.zeros(1)]
    out = tz.m.Normalize(dim="global").step(var).update
    assert all(torch.isfinite(o).all() for o in out)


def test_normalize_norms():
    torch.manual_seed(0)
    ts = [torch.randn(3, 4), torch.randn(7), torch.randn(())]
    var = Var(params=[torch.zeros_like(t) for t in ts], closure=None, model=None, current_step=0)
    var.update = [t.clone() for t in ts]
    out = tz.m.Normalize(2.0).step(var).update
    for o in out:
        torch.testing.assert_close(o.norm(), torch.tensor(2.0))
    var.update = [t.clone() for t in ts]
    out = tz.m.Normalize(2.0, dim="global").step(var).update
    torch.testing.assert_close(torch.cat([o.ravel() for o in out]).norm(), torch.tensor(2.0))
    var.update = [t.clone() for t in ts]
    out = tz.m.Normalize(1.0, ord="l1", dim="global").step(var).update
    torch.testing.assert_close(torch.cat([o.ravel() for o in out]).abs().sum(), torch.tensor(1.0))


def test_step_size_key():
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = tz.Modular([{"params": [a], "alpha": 0.5}, {"params": [b]}], tz.m.StepSize(0.1, key="alpha"))
    a.grad, b.grad = torch.ones(1), torch.ones(1)
    opt.step()
    assert float(a) == -0.5 and abs(float(b) + 0.1) < 1e-7


@pytest.mark.parametrize("make", [
    lambda: tz.m.LR(-1.0), lambda: tz.m.Adam(beta1=1.0), lambda: tz.m.Adam(beta2=-0.1), lambda: tz.m.Adam(eps=-1),
    lambda: tz.m.EMA(1.5), lambda: tz.m.HeavyBall(-0.1), lambda: tz.m.NAG(2.0), lambda: tz.m.WeightDecay(-1),
    lambda: tz.m.ClipValue(-1), lambda: tz.m.ClipNorm(-1), lambda: tz.m.ClipNorm(1, dim="x"),
    lambda: tz.m.EMA(target="nope"), lambda: tz.m.EMA(ema_init="ones"), lambda: tz.m.Normalize(ord="l7"),
])
def test_invalid_arguments_fail_at_construction(make):
    with pytest.raises((ValueError, TypeError)):
        make()
