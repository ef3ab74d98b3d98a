"""misc meta-modules: Online, Split, Alternate, Switch, Multistep, Sequential.

The sweep (also with children that keep state), every catalog check, reuse of the loss/gradient between
branches (counted closure evaluations), trajectories against torch.optim or plain loops, and argument errors.
"""
from __future__ import annotations

import pytest
import torch
from sweep import Objective, assert_all_close, check_module, clone_params, make_params, snapshot

import torchzero as tz
from torchzero.modules.misc.curvature import HpuEstimate
from torchzero.modules.misc.meta import Alternate, Multistep, Online, Sequential, Split, Switch

pytestmark = pytest.mark.filterwarnings("ignore:multiple learning rate modules")


def _make_opt(x0, *modules):
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    return x, tz.Modular([x], *modules)


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


def run(x0, *modules, steps=1, f=lambda x: (x**2).sum()):
    x, opt = _make_opt(x0, *modules)
    for _ in range(steps):
        opt.step(_closure(opt, x, f))
    return x.detach()


def applied_updates(x0, *modules, steps, f=lambda x: (x**2).sum()):
    """Updates applied on each of ``steps`` steps (x_k − x_{k+1})."""
    x, opt = _make_opt(x0, *modules)
    out = []
    for _ in range(steps):
        before = x.detach().clone()
        opt.step(_closure(opt, x, f))
        out.append(before - x.detach())
    return out


def close(a, b, tol=1e-6):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                               rtol=tol, atol=tol)


# --------------------------------------------------------------------------------------------- sweep
SWEEP = {
    "Online_HpuEstimate": (lambda: [Online(HpuEstimate()), tz.m.LR(0.01)], True),
    "Online_chain_stateful": (lambda: [Online(HpuEstimate(), tz.m.EMA(0.5)), tz.m.LR(0.01)], True),
    "Split_stateful": (lambda: [Split(lambda p: p.ndim >= 2, true=tz.m.Adam(), false=[tz.m.HeavyBall(0.9)]),
                                tz.m.LR(0.01)], False),
    "Split_one_branch": (lambda: [Split(lambda p: p.numel() > 2, true=tz.m.EMA(0.5), false=None),
                                  tz.m.LR(0.01)], False),
    "Alternate_stateful": (lambda: [Alternate(tz.m.HeavyBall(0.9), tz.m.Adam(), steps=(2, 1)), tz.m.LR(0.01)], False),
    "Switch_stateful": (lambda: [Switch(tz.m.Adam(), [tz.m.HeavyBall(0.5), tz.m.Mul(0.5)], steps=2),
                                 tz.m.LR(0.01)], False),
    "Multistep_direct": (lambda: [Multistep([tz.m.HeavyBall(0.9), tz.m.LR(0.01)], steps=2)], True),
    "Multistep_difference": (lambda: [Multistep(tz.m.Adam(), steps=3), tz.m.LR(0.01)], True),
    "Multistep_one_step": (lambda: [Multistep([tz.m.Adam(), tz.m.LR(0.01)], steps=1)], False),
    "Sequential_direct": (lambda: [Sequential([[tz.m.Adam(), tz.m.LR(0.01)], [tz.m.HeavyBall(), tz.m.LR(0.01)]],
                                              steps=2)], True),
    "Sequential_difference": (lambda: [Sequential([tz.m.Adam(), tz.m.HeavyBall()]), tz.m.LR(0.01)], True),
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name):
    factory, needs_closure = SWEEP[name]
    check_module(factory, needs_closure=needs_closure)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_cuda(name):
    factory, needs_closure = SWEEP[name]
    check_module(factory, needs_closure=needs_closure, device="cuda")


# --------------------------------------------------------------------------------------------- Online
def test_online_check_same_trajectory_and_evaluations():
    f = lambda x: (x**2).sum() + (x**4).sum()
    x_a, opt_a = _make_opt([1.0, -2.0], Online(HpuEstimate()), tz.m.Mul(0.1))
    x_b, opt_b = _make_opt([1.0, -2.0], HpuEstimate(), tz.m.Mul(0.1))
    evaluations = []
    for _ in range(3):
        opt_a.step(_closure(opt_a, x_a, f))
        opt_b.step(_closure(opt_b, x_b, f))
        evaluations.append(opt_a.num_evaluations)
        close(x_a.detach(), x_b.detach(), tol=1e-12)
    assert evaluations == [1, 3, 5]


def test_online_reevaluates_current_batch_at_previous_point():
    """With a different objective (batch) per step, HpuEstimate under Online sees gradient differences of the
    *same* batch at the previous and the current point; a plain loop computes the reference."""
    targets = [torch.tensor([1.0, -1.0]), torch.tensor([3.0, 0.5]), torch.tensor([-2.0, 2.0]),
               torch.tensor([0.0, 4.0])]
    fs = [lambda x, t=t: ((x - t) ** 2 * torch.tensor([1.0, 3.0])).sum() + (x**4).sum() * 0.1 for t in targets]

    def grad(f, x):
        x = x.detach().clone().requires_grad_()
        return torch.autograd.grad(f(x), x)[0]

    x, opt = _make_opt([0.5, 0.2], Online(HpuEstimate()), tz.m.Mul(0.1))
    x = opt.param_groups[0]["params"][0]
    ref_x = x.detach().clone()
    ref_prev = None
    for f in fs:
        opt.step(_closure(opt, x, f))
        g = grad(f, ref_x)
        if ref_prev is None:  # first step: previous point and update are zeros
            y = g / ref_x.norm()
        else:
            s = ref_x - ref_prev
            y = (g - grad(f, ref_prev)) / s.norm()
        ref_prev = ref_x.clone()
        ref_x = ref_x - 0.1 * y
        close(x.detach(), ref_x, tol=1e-10)


def test_online_requires_closure_and_validates():
    x, opt = _make_opt([1.0], Online(HpuEstimate()))
    x.grad = torch.ones_like(x)
    with pytest.raises(RuntimeError, match="Online"):
        opt.step()
    with pytest.raises(ValueError, match="Online"):
        Online()
    with pytest.raises(TypeError, match="Online"):
        Online(1.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- Split
def _split_run(true, false, filter=lambda p: p.numel() > 1):
    a = torch.tensor([1.0, 1.0], requires_grad=True)
    b = torch.tensor([1.0], requires_grad=True)
    opt = tz.Modular([a, b], Split(filter, true=true, false=false))
    counter = []
    opt.step(_closure(opt, [a, b], lambda ps: (ps[0] ** 2).sum() + (ps[1] ** 2).sum(), counter))
    return a.detach(), b.detach(), counter, (a, b)


def test_split_checks():
    a, b, counter, _ = _split_run(tz.m.Mul(2.0), tz.m.Mul(-1.0))
    close(a, [-3.0, -3.0])
    close(b, [3.0])
    assert counter == [True]  # the gradient computed by the first branch is reused by the second
    a, b, _, _ = _split_run(tz.m.Mul(2.0), None)
    close(a, [-3.0, -3.0])
    close(b, [-1.0])
    a, b, _, _ = _split_run(None, tz.m.Fill(5.0))  # only the `false` branch, which doesn't need the gradient
    close(a, [-1.0, -1.0])
    close(b, [-4.0])


def test_split_filters_module_tensor_iterable():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    params = list(model.parameters())
    first = model[0]
    for filt in (first, [first], list(first.parameters()), first.weight, [first.weight, lambda p: p is first.bias]):
        opt = tz.Modular(model.parameters(), Split(filt, true=tz.m.Zeros(), false=None))
        x0 = snapshot(params)
        opt.zero_grad()
        model(torch.ones(3, 2)).sum().backward()
        opt.step()
        moved = [not torch.equal(p, p0) for p, p0 in zip(params, x0)]
        expected_frozen = {id(first.weight), id(first.bias)} if filt is not first.weight else {id(first.weight)}
        assert moved == [id(p) not in expected_frozen for p in params], filt
    with pytest.raises(TypeError, match="Split"):
        Split("weight", true=tz.m.Zeros(), false=None)
    with pytest.raises(ValueError, match="Split"):
        Split(first, true=None, false=None)
    with pytest.raises(TypeError, match="Split"):
        Split(first, true=3.0, false=None)  # type: ignore[arg-type]


def test_split_stateful_branches_match_torch():
    """Adam on matrices and SGD momentum on the rest, against two torch optimizers on the same objective."""
    x0 = make_params(torch.float64)
    f = Objective(x0)
    ps_tz, ps_ref = clone_params(x0), clone_params(x0)
    opt = tz.Modular(ps_tz, Split(lambda p: p.ndim >= 2, true=[tz.m.Adam(), tz.m.LR(0.05)],
                                  false=[tz.m.HeavyBall(0.9), tz.m.LR(0.02)]))
    big = [p for p in ps_ref if p.ndim >= 2]
    small = [p for p in ps_ref if p.ndim < 2]
    ref = [torch.optim.Adam(big, lr=0.05), torch.optim.SGD(small, lr=0.02, momentum=0.9)]
    for _ in range(30):
        opt.step(_closure(opt, ps_tz, f))
        for o in ref:
            o.zero_grad()
        f(ps_ref).backward()
        for o in ref:
            o.step()
    assert_all_close(ps_tz, snapshot(ps_ref), rtol=1e-6, atol=1e-12)


# --------------------------------------------------------------------------------------------- Alternate / Switch
def test_alternate_check():
    ups = applied_updates([0.0], Alternate(tz.m.Fill(1.0), tz.m.Fill(10.0), steps=(2, 1)), steps=7)
    assert [float(u) for u in ups] == [1, 1, 10, 1, 1, 10, 1]
    ups = applied_updates([0.0], Alternate(tz.m.Fill(1.0), tz.m.Fill(10.0), tz.m.Fill(100.0)), steps=4)
    assert [float(u) for u in ups] == [1, 10, 100, 1]


def test_switch_checks():
    ups = applied_updates([0.0], Switch(tz.m.Fill(1.0), tz.m.Fill(10.0), tz.m.Fill(100.0), steps=(2, 3)), steps=8)
    assert [float(u) for u in ups] == [1, 1, 10, 10, 10, 100, 100, 100]
    ups = applied_updates([0.0], Switch(tz.m.Fill(1.0), tz.m.Fill(10.0), steps=3), steps=6)
    assert [float(u) for u in ups] == [1, 1, 1, 10, 10, 10]


def test_alternate_switch_argument_errors():
    with pytest.raises(ValueError, match="Alternate"):
        Alternate(tz.m.Fill(1.0), tz.m.Fill(2.0), steps=(1, 2, 3))
    with pytest.raises(ValueError, match="Alternate"):
        Alternate(tz.m.Fill(1.0), steps=0)
    with pytest.raises(ValueError, match="Alternate"):
        Alternate()
    with pytest.raises(TypeError, match="Alternate"):
        Alternate(tz.m.Fill(1.0), steps=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Switch"):
        Switch(tz.m.Fill(1.0), tz.m.Fill(2.0), steps=(1, 2))
    with pytest.raises(TypeError, match="Switch"):
        Switch(tz.m.Fill(1.0), "x", steps=1)  # type: ignore[arg-type]


def test_alternate_children_get_and_reuse_gradient():
    counter = []
    x, opt = _make_opt([1.0, 2.0], Alternate(tz.m.Sum(tz.m.Grad(), tz.m.Grad()), tz.m.Grad()))
    opt.step(_closure(opt, x, lambda x: (x**2).sum(), counter))
    close(x.detach(), [1.0 - 4.0, 2.0 - 8.0])
    assert counter == [True]


# --------------------------------------------------------------------------------------------- Multistep / Sequential
def test_multistep_checks():
    counter = []
    x, opt = _make_opt([1.0], Multistep(tz.m.Mul(0.1), steps=2))
    opt.step(_closure(opt, x, lambda x: (x**2).sum(), counter))
    close(x.detach(), [0.64])
    assert len(counter) == 2
    close(run([1.0], Multistep(tz.m.Mul(0.1), steps=3)), [0.512])
    # reference deviation (fixed): one inner step is a normal step, not a zero update
    close(run([1.0], Multistep(tz.m.Mul(0.1), steps=1)), [0.8])
    # difference path: a following LR scales the total displacement once (the reference scaled it twice)
    close(run([1.0], Multistep(tz.m.Mul(0.1), steps=2), tz.m.LR(0.5)), [1 - 0.5 * 0.36])
    close(run([1.0], Multistep(tz.m.Mul(0.1), steps=2), tz.m.Mul(2.0)), [1 - 2 * 0.36])


def test_sequential_check():
    close(run([1.0], Sequential([tz.m.Mul(0.1), tz.m.Mul(0.2)])), [0.48])
    close(run([1.0], Sequential([tz.m.Mul(0.1), tz.m.Mul(0.2)], steps=2)), [0.48 * 0.48])


@pytest.mark.parametrize("last", [True, False])
def test_multistep_matches_torch_adam(last):
    """Multistep([Adam, LR], 3) for 10 outer steps = torch Adam for 30 steps, on the direct and difference path."""
    x0 = make_params(torch.float64)
    f = Objective(x0)
    ps_tz, ps_ref = clone_params(x0), clone_params(x0)
    modules = [Multistep([tz.m.Adam(), tz.m.LR(0.05)], steps=3)] + ([] if last else [tz.m.Mul(1.0)])
    opt = tz.Modular(ps_tz, *modules)
    ref = torch.optim.Adam(ps_ref, lr=0.05)
    for _ in range(10):
        opt.step(_closure(opt, ps_tz, f))
    for _ in range(30):
        ref.zero_grad()
        f(ps_ref).backward()
        ref.step()
    assert_all_close(ps_tz, snapshot(ps_ref), rtol=1e-6, atol=1e-12)


def test_sequential_matches_plain_loop():
    x0 = make_params(torch.float64)
    f = Objective(x0)
    ps_tz, ps_ref = clone_params(x0), clone_params(x0)
    opt = tz.Modular(ps_tz, Sequential([[tz.m.HeavyBall(0.9), tz.m.LR(0.02)], [tz.m.Sign(), tz.m.LR(0.01)]],
                                       steps=2))
    sgd = torch.optim.SGD(ps_ref, lr=0.02, momentum=0.9)
    for _ in range(5 * 2):
        sgd.zero_grad()
        f(ps_ref).backward()
        sgd.step()  # momentum step
        grads = torch.autograd.grad(f(ps_ref), ps_ref)
        with torch.no_grad():
            for p, g in zip(ps_ref, grads):
                p.sub_(0.01 * g.sign())
    for _ in range(5):
        opt.step(_closure(opt, ps_tz, f))
    assert_all_close(ps_tz, snapshot(ps_ref), rtol=1e-9, atol=1e-12)


def test_multistep_sequential_errors():
    x, opt = _make_opt([1.0], Multistep(tz.m.Mul(0.1), steps=2))
    x.grad = torch.ones_like(x)
    with pytest.raises(RuntimeError, match="Multistep"):
        opt.step()
    x, opt = _make_opt([1.0], Sequential([tz.m.Mul(0.1), tz.m.Mul(0.2)]))
    x.grad = torch.ones_like(x)
    with pytest.raises(RuntimeError, match="Sequential"):
        opt.step()
    with pytest.raises(ValueError, match="Multistep"):
        Multistep(tz.m.Mul(0.1), steps=0)
    with pytest.raises(TypeError, match="Multistep"):
        Multistep(0.1, steps=2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Sequential"):
        Sequential([tz.m.Mul(0.1), 2.0])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="Sequential"):
        Sequential(tz.m.Mul(0.1), steps=1.5)  # type: ignore[arg-type]


def test_multistep_merges_loss_of_first_point():
    """Modular.step returns the loss at the starting point, and the inner steps' losses don't leak into it."""
    x, opt = _make_opt([1.0], Multistep(tz.m.Mul(0.1), steps=3))
    loss = opt.step(_closure(opt, x, lambda x: (x**2).sum()))
    close(loss, 1.0)


def test_multistep_sequential_direct_path_flags():
    record = []

    class FlagsProbe(tz.core.Module):
        def step(self, var):
            var.post_step_hooks.append(lambda opt, v: record.append(v.skip_update))
            return var

    close(run([1.0], FlagsProbe(), Multistep(tz.m.Mul(0.1), steps=2)), [0.64])
    close(run([1.0], FlagsProbe(), Multistep(tz.m.Mul(0.1), steps=2), tz.m.Mul(1.0)), [0.64])
    close(run([1.0], FlagsProbe(), Sequential([tz.m.Mul(0.1), tz.m.Mul(0.2)])), [0.48])
    close(run([1.0], FlagsProbe(), tz.core.Chain(Sequential([tz.m.Mul(0.1)]), tz.m.Mul(1.0))), [0.8])
    # left moved only as the last top-level module (not when nested in a chain that is last)
    assert record == [True, False, True, False]


def test_sequential_rejects_non_iterable():
    with pytest.raises(TypeError, match="Sequential"):
        Sequential(3.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Sequential"):
        Sequential([])
