"""DirectWeightDecay and RelativeWeightDecay: the shared sweep, the catalog checks, and loop references."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from sweep import Objective, assert_all_close, check_module, clone_params, make_params, snapshot

import torchzero as tz
from torchzero.core import Module, Var
from torchzero.modules.adaptive.adam import Adam
from torchzero.modules.momentum.momentum import HeavyBall
from torchzero.modules.step_size.lr import LR
from torchzero.modules.weight_decay.direct import DirectWeightDecay
from torchzero.modules.weight_decay.relative import RelativeWeightDecay

SWEEP: dict[str, tuple[Callable[[], list[Module]], bool]] = {
    # (factory, deterministic): with DirectWeightDecay first, the gradient of a closure is taken after the decay
    # while a gradient passed without closure was taken before it, so those two runs differ by design
    "DirectWeightDecay_after_momentum": (lambda: [HeavyBall(0.9), DirectWeightDecay(0.1), LR(0.01)], True),
    "DirectWeightDecay_ord1": (lambda: [Adam(), DirectWeightDecay(0.01, ord=1), LR(0.01)], True),
    "DirectWeightDecay_first": (lambda: [DirectWeightDecay(0.1, ord=3), LR(0.01)], False),
    "RelativeWeightDecay": (lambda: [RelativeWeightDecay(), LR(0.01)], True),
    "RelativeWeightDecay_grad_l2_ord1": (lambda: [Adam(), RelativeWeightDecay(0.2, ord=1, norm_input="grad",
                                                                               metric="l2"), LR(0.01)], True),
    "RelativeWeightDecay_params_target_grad": (lambda: [RelativeWeightDecay(norm_input="params", metric="linf",
                                                                             target="grad"), LR(0.01)], True),
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    factory, deterministic = SWEEP[name]
    check_module(factory, deterministic=deterministic)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_cuda(name: str) -> None:
    factory, deterministic = SWEEP[name]
    check_module(factory, deterministic=deterministic, device="cuda")


def _closure(opt, params, f, counter: list[int] | None = None):
    def closure(backward=True):
        if counter is not None:
            counter.append(1)
        loss = f(params)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss
    return closure


# ----------------------------------------------------------------------------------------------- DirectWeightDecay
def test_direct_weight_decay_check():
    params = make_params(torch.float64)
    f = Objective(params)
    x0 = snapshot(params)
    opt = tz.Modular(params, DirectWeightDecay(0.1), LR(0))
    for k in range(1, 8):
        opt.step(_closure(opt, params, f))
        assert_all_close(snapshot(params), [0.9**k * x for x in x0], rtol=1e-13, atol=1e-15, msg=f"step {k}")


def test_direct_weight_decay_lazy_gradient_is_taken_at_the_decayed_point():
    params = make_params(torch.float64)
    f = Objective(params)
    x = snapshot(params)
    opt = tz.Modular(params, DirectWeightDecay(0.1), LR(0.05))
    evaluations: list[int] = []
    for k in range(10):
        opt.step(_closure(opt, params, f, evaluations))
        # reference: decay, then a gradient step from the decayed point
        x = [0.9 * t for t in x]
        xr = clone_params(x)
        f(xr).backward()
        x = [t.detach() - 0.05 * t.grad for t in xr]
        assert_all_close(snapshot(params), x, rtol=1e-12, atol=1e-14, msg=f"step {k}")
    assert len(evaluations) == 10  # one evaluation per step


def test_direct_weight_decay_drops_a_gradient_computed_before_it_with_closure():
    """An earlier module evaluated the gradient; the update is still unset, so the step's gradient must be
    re-evaluated at the decayed point."""

    class TouchGrad(Module):
        def step(self, var):
            var.get_grad()
            return var

    params = make_params(torch.float64)
    f = Objective(params)
    x = snapshot(params)
    opt = tz.Modular(params, TouchGrad(), DirectWeightDecay(0.1), LR(0.05))
    evaluations: list[int] = []
    for _ in range(4):
        opt.step(_closure(opt, params, f, evaluations))
        x = [0.9 * t for t in x]
        xr = clone_params(x)
        f(xr).backward()
        x = [t.detach() - 0.05 * t.grad for t in xr]
        assert_all_close(snapshot(params), x, rtol=1e-12, atol=1e-14)
    assert len(evaluations) == 8


def test_direct_weight_decay_drops_an_evaluation_reused_from_the_previous_step():
    """Modular seeds a step with the loss/gradient the previous step evaluated at the point it left (line
    searches); after the decay they are stale and must be re-evaluated."""

    class GradientStepAndRecord(Module):  # moves the parameters itself and records the evaluation there
        def step(self, var):
            with torch.no_grad():
                torch._foreach_sub_(var.params, var.get_grad(), alpha=0.05)
            closure = var.closure
            with torch.enable_grad():
                loss = closure()
            var.set_result_evaluation(loss, [p.grad for p in var.params])
            var.skip_update = True
            return var

    params = make_params(torch.float64)
    f = Objective(params)
    x = snapshot(params)
    opt = tz.Modular(params, DirectWeightDecay(0.1), GradientStepAndRecord())
    closure = _closure(opt, params, f)
    for k in range(4):
        opt.step(closure)
        x = [0.9 * t for t in x]
        xr = clone_params(x)
        f(xr).backward()
        x = [t.detach() - 0.05 * t.grad for t in xr]
        assert_all_close(snapshot(params), x, rtol=1e-12, atol=1e-14, msg=f"step {k}")


def test_direct_weight_decay_keeps_a_gradient_passed_without_closure():
    params = make_params(torch.float64)
    f = Objective(params)
    x = snapshot(params)
    opt = tz.Modular(params, DirectWeightDecay(0.1), LR(0.05))
    for _ in range(5):
        opt.zero_grad()
        f(params).backward()
        g = [p.grad.clone() for p in params]
        opt.step()
        x = [0.9 * t - 0.05 * gi for t, gi in zip(x, g)]
        assert_all_close(snapshot(params), x, rtol=1e-12, atol=1e-14)


def test_direct_weight_decay_drops_a_loss_from_before_the_decay():
    seen = {}

    class RecordLoss(Module):
        def step(self, var):
            seen["loss"] = float(var.get_loss(False).detach())
            var.update = [torch.zeros_like(p) for p in var.params]  # no gradient needed
            return var

    p = torch.tensor([2.0, -4.0], dtype=torch.float64, requires_grad=True)
    f = lambda ps: (ps[0] ** 2).sum()
    opt = tz.Modular([p], DirectWeightDecay(0.5), RecordLoss(), LR(0.0))
    opt.step(_closure(opt, [p], f), loss=torch.tensor(20.0))
    assert seen["loss"] == pytest.approx(5.0)  # f(0.5·x), not the loss passed for x


@pytest.mark.parametrize("ord_, expected", [
    (1, lambda x: x - 0.1 * torch.sign(x)),
    (3, lambda x: x - 0.1 * x.abs() ** 2 * torch.sign(x)),
    (4, lambda x: x - 0.1 * x.abs() ** 3 * torch.sign(x)),
])
def test_direct_weight_decay_orders(ord_, expected):
    x = torch.tensor([-2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    p = x.clone()
    var = Var(params=[p], closure=None, model=None, current_step=0)
    update = [torch.ones(4, dtype=torch.float64)]
    var.update = update
    out = DirectWeightDecay(0.1, ord=ord_).step(var)
    torch.testing.assert_close(p, expected(x), rtol=1e-14, atol=0)
    assert out.update is update and torch.equal(update[0], torch.ones(4, dtype=torch.float64))  # untouched


def test_direct_weight_decay_per_parameter_groups():
    a = torch.ones(2, dtype=torch.float64, requires_grad=True)
    b = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = tz.Modular([{"params": [a], "weight_decay": 0.5}, {"params": [b]}], DirectWeightDecay(0.1), LR(0.0))
    a.grad, b.grad = torch.zeros(2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(a.detach(), torch.full((2,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.full((3,), 0.9, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------- RelativeWeightDecay
def _apply(module, update, params, grads=None):
    var = Var(params=params, closure=None, model=None, current_step=0)
    var.grad = grads if grads is not None else [u.clone() for u in update]
    var.update = [u.clone() for u in update]
    return module.step(var).update


def _random(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]


SHAPES = [(3, 2), (4,), ()]


def test_relative_weight_decay_check():
    u, x = _random(SHAPES, 0), _random(SHAPES, 1)
    mean_abs = torch.cat([t.abs().reshape(-1) for t in u]).mean()
    out = _apply(RelativeWeightDecay(), u, x)
    assert_all_close(out, [ut + 0.1 * mean_abs * xt for ut, xt in zip(u, x)], rtol=1e-13)


@pytest.mark.parametrize("norm_input", ["update", "grad", "params"])
@pytest.mark.parametrize("metric, fn", [("mad", lambda v: v.abs().mean()), ("l2", lambda v: v.norm()),
                                        ("linf", lambda v: v.abs().max()), (3, lambda v: v.norm(3)),
                                        ("std", lambda v: v.std())])
@pytest.mark.parametrize("ord_", [1, 2, 3])
def test_relative_weight_decay_formula(norm_input, metric, fn, ord_):
    u, x, g = _random(SHAPES, 0), _random(SHAPES, 1), _random(SHAPES, 2)
    src = {"update": u, "grad": g, "params": x}[norm_input]
    coeff = 0.3 * fn(torch.cat([t.reshape(-1) for t in src]))
    penalty = [x_ if ord_ == 2 else x_.abs() ** (ord_ - 1) * torch.sign(x_) for x_ in x]
    out = _apply(RelativeWeightDecay(0.3, ord=ord_, norm_input=norm_input, metric=metric), u, x, grads=g)
    assert_all_close(out, [ut + coeff * pt for ut, pt in zip(u, penalty)], rtol=1e-12, atol=1e-15)


def test_relative_weight_decay_per_parameter_groups():
    a = torch.ones(2, dtype=torch.float64, requires_grad=True)
    b = torch.ones(2, dtype=torch.float64, requires_grad=True)
    opt = tz.Modular([{"params": [a], "weight_decay": 1.0}, {"params": [b]}], RelativeWeightDecay(0.1), LR(1.0))
    a.grad, b.grad = torch.full((2,), 2.0, dtype=torch.float64), torch.full((2,), -2.0, dtype=torch.float64)
    opt.step()
    # mean |u| = 2: a -= 2 + 1.0·2·1, b -= -2 + 0.1·2·1
    torch.testing.assert_close(a.detach(), torch.full((2,), 1.0 - 4.0, dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.full((2,), 1.0 + 2.0 - 0.2, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("make", [
    lambda: DirectWeightDecay(-0.1), lambda: DirectWeightDecay(0.1, ord=0), lambda: DirectWeightDecay(0.1, ord=2.5),
    lambda: DirectWeightDecay("a"), lambda: RelativeWeightDecay(-1), lambda: RelativeWeightDecay(ord=0),
    lambda: RelativeWeightDecay(norm_input="weights"), lambda: RelativeWeightDecay(metric="l7"),
    lambda: RelativeWeightDecay(target="x"),
])
def test_invalid_arguments_fail_at_construction(make):
    with pytest.raises((ValueError, TypeError)):
        make()


def test_errors_name_the_class():
    with pytest.raises(ValueError, match="DirectWeightDecay"):
        DirectWeightDecay(-1)
    with pytest.raises(ValueError, match="RelativeWeightDecay"):
        RelativeWeightDecay(metric="l7")
