"""ops: binary, multi-operand and reduction operations, unary operations, sources, accumulators, moments."""
from __future__ import annotations

import math

import pytest
import torch
from sweep import check_module

import torchzero as tz
from torchzero.core import Module, Var


def run(x0, *modules, steps=1, f=lambda x: (x**2).sum(), loss=None):
    """Steps a ``Modular`` on one parameter from ``x0``; returns (x after, last update seen by the optimizer)."""
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = tz.Modular([x], *modules)

    def closure(backward=True):
        value = f(x)
        if backward:
            opt.zero_grad()
            value.backward()
        return value

    for _ in range(steps):
        opt.step(closure, loss=loss)
    return x.detach()


def update_of(x0, *modules, **kw):
    """The update applied by one step (x0 − x1)."""
    return torch.tensor(x0, dtype=torch.float64) - run(x0, *modules, **kw)


def close(a, b, tol=1e-4):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                               rtol=tol, atol=tol)


# --------------------------------------------------------------------------------- catalog checks, binary
def test_binary_checks():
    close(run([3.0, -4.0], tz.m.Fill(2.0), tz.m.RSub(3.0)), [2.0, -5.0])
    close(run([3.0, -4.0], tz.m.Fill(2.0), tz.m.Sub(3.0, alpha=2)), [7.0, 0.0])
    close(run([3.0, -4.0], tz.m.Fill(2.0), tz.m.RPow(3.0)), [-6.0, -13.0])
    close(update_of([3.0, -4.0], tz.m.Fill(1.0), tz.m.RCopySign(tz.m.Grad())), [6.0, 8.0])
    close(update_of([1.0, 2.0], tz.m.Fill(2.0), tz.m.Add(tz.m.Grad(), alpha=0.5)), [3.0, 4.0])
    close(update_of([1.0, 2.0], tz.m.Mul(tz.m.Grad())), [4.0, 16.0])
    close(update_of([1.0, 2.0], tz.m.Div(2.0)), [1.0, 2.0])
    close(update_of([1.0, 2.0], tz.m.RDiv(8.0)), [4.0, 2.0])
    close(update_of([1.0, 2.0], tz.m.Pow(2.0)), [4.0, 16.0])
    close(update_of([1.0, -2.0], tz.m.CopySign(tz.m.Fill(-1.0))), [-2.0, -4.0])
    close(update_of([1.0, -2.0], tz.m.Maximum(tz.m.Fill(0.0))), [2.0, 0.0])
    close(update_of([1.0, -2.0], tz.m.Minimum(tz.m.Fill(0.0))), [0.0, -4.0])
    close(update_of([1.0, -2.0], tz.m.Clip(-1.0, tz.m.Fill(1.5))), [1.5, -1.0])
    assert tz.m.CopyMagnitude is tz.m.RCopySign and tz.m.GraftToUpdate is tz.m.RGraft and tz.m.Noop is tz.m.Identity


def _update_module_output(module, u):
    var = Var(params=[torch.zeros_like(u)], closure=None, model=None, current_step=0)
    var.grad = [u.clone()]
    var.update = [u.clone()]
    return module.step(var).update[0]


def test_threshold_and_gram_schmidt():
    u = torch.tensor([2.0, 4.0, 6.0])
    close(_update_module_output(tz.m.Threshold(3.0, 0.0, update_above=True), u), [0.0, 4.0, 6.0])
    close(_update_module_output(tz.m.Threshold(3.0, 0.0, update_above=False), u), [2.0, 0.0, 0.0])
    close(_update_module_output(tz.m.GramSchimdt(tz.m.Fill(2.0)), u), u / 2)


def test_graft_checks():
    close(run([3.0, 4.0], tz.m.Graft(tz.m.Fill(1.0))), [2.1515, 2.8686])
    close(run([3.0, 4.0], tz.m.RGraft(tz.m.Fill(1.0))), [-4.0711, -3.0711])
    close(run([3.0, 4.0], tz.m.GraftModules(tz.m.Fill(1.0), tz.m.Grad(), strength=0.5)), [-1.0355, -0.0355])


def test_operand_child_evaluated_once_and_update_unchanged():
    calls = []

    class Count(Module):
        def step(self, var):
            calls.append(1)
            var.update = [g.clone() for g in var.get_grad()]
            return var

    class PassThrough(tz.m.BinaryOperationBase):
        def transform(self, var, update, other):
            return update

    op = PassThrough({}, other=Count())
    assert "other" in op.children
    close(update_of([1.0, 2.0], tz.m.Fill(3.0), op), [3.0, 3.0])
    assert len(calls) == 1


def test_operands_reuse_gradient_and_clone_update():
    evaluations = []
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    opt = tz.Modular([x], tz.m.Sum(tz.m.Grad(), tz.m.Grad(), tz.m.Clone()))

    def closure(backward=True):
        evaluations.append(backward)
        loss = (x**2).sum()
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    opt.step(closure)
    assert evaluations == [True]  # the gradient computed for the first operand is reused
    close(x.detach(), [1 - 6.0, 2 - 12.0])


# --------------------------------------------------------------------------------- multi-operand
def test_multi_checks():
    close(update_of([1.0], tz.m.Fill(2.0), tz.m.SubModules(3.0, tz.m.Fill(1.0), alpha=2)), [1.0])
    close(update_of([1.0], tz.m.DivModules(tz.m.Fill(2.0), 4.0, other_first=True)), [0.5])
    close(update_of([1.0], tz.m.LerpModules(tz.m.Fill(2.0), tz.m.Fill(4.0), 0.25)), [2.5])
    close(update_of([1.0], tz.m.PowModules(2.0, tz.m.Fill(2.0))), [4.0])
    close(update_of([1.0], tz.m.PowModules(tz.m.Fill(3.0), 2.0)), [9.0])  # reference divided instead (fixed)
    close(update_of([3.0, -4.0], tz.m.ClipModules(tz.m.Grad(), -1, 1)), [1.0, -1.0])
    with pytest.raises(ValueError, match="at least one operand must be a module"):
        tz.m.SubModules(1.0, 2.0)
    with pytest.raises(TypeError):
        tz.m.Add("x")  # type: ignore[arg-type]


def test_div_modules_other_first_order():
    order = []

    class Tag(Module):
        def __init__(self, name, value):
            super().__init__({})
            self.name, self.value = name, value

        def step(self, var):
            order.append(self.name)
            var.update = [torch.full_like(p, self.value) for p in var.params]
            return var

    update_of([1.0], tz.m.DivModules(Tag("input", 2.0), Tag("other", 4.0), other_first=True))
    assert order == ["other", "input"]


# --------------------------------------------------------------------------------- reductions
def test_reduce_checks():
    x = [1.0, 2.0, 3.0]
    g = 2 * torch.tensor(x, dtype=torch.float64)
    close(update_of(x, tz.m.Mean(1.0, tz.m.Grad())), torch.tensor(x, dtype=torch.float64) + 0.5)
    close(update_of(x, tz.m.Sum(1.0, tz.m.Grad(), tz.m.Grad())), 2 * g + 1)
    close(update_of([3.0, -4.0], tz.m.Prod(2.0, tz.m.Grad(), tz.m.Fill(3.0))), [36.0, -48.0])
    close(update_of([3.0, -4.0], tz.m.MaximumModules(0.0, tz.m.Grad())), [6.0, 0.0])
    close(update_of([3.0, -4.0], tz.m.MinimumModules(0.0, tz.m.Grad())), [0.0, -8.0])
    close(update_of([3.0, -4.0], tz.m.WeightedSum(1.0, tz.m.Grad(), weights=[2.0, 0.5])), [5.0, -2.0])
    close(update_of([3.0, -4.0], tz.m.WeightedMean(1.0, tz.m.Grad(), weights=[2.0, 0.5])), [2.5, -1.0])
    with pytest.raises(ValueError):
        tz.m.Sum(1.0)
    assert list(tz.m.Sum(tz.m.Grad(), 1.0).children) == ["operand_0"]
    with pytest.raises(ValueError, match="weights"):
        tz.m.WeightedSum(tz.m.Grad(), 1.0, weights=[1.0])


# --------------------------------------------------------------------------------- unary
def test_unary_checks():
    close(update_of([1.0], tz.m.Fill(-2.0), tz.m.Reciprocal(eps=1)), [-1.0])
    close(update_of([1.0, 2.0], tz.m.UnaryLambda(lambda t: [2 * v for v in t])), [4.0, 8.0])
    close(update_of([1.0, -2.0], tz.m.UnaryParameterwiseLambda(lambda t: t * 3)), [6.0, -12.0])
    close(update_of([1.0, -2.0], tz.m.Abs()), [2.0, 4.0])
    close(update_of([1.0, -2.0], tz.m.Sign()), [1.0, -1.0])
    close(update_of([0.5], tz.m.Exp()), [math.exp(1.0)])
    close(update_of([2.0], tz.m.Sqrt()), [2.0])
    close(update_of([2.0], tz.m.Negate()), [-4.0])
    close(update_of([1.0, -2.0], tz.m.CustomUnaryOperation("neg")), [-2.0, 4.0])
    close(update_of([1.0, -2.0], tz.m.CustomUnaryOperation("abs")), [2.0, 4.0])
    u = torch.tensor([float("nan"), float("inf"), -float("inf")])
    out = _update_module_output(tz.m.NanToNum(nan=1.0, posinf=2.0), u)
    assert out.tolist() == [1.0, 2.0, torch.finfo(torch.float32).min]
    with pytest.raises(ValueError):
        tz.m.CustomUnaryOperation("no_such_method")


# --------------------------------------------------------------------------------- sources
def test_sources():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    u = _update_module_output(tz.m.Clone(), torch.tensor([1.0, 2.0]))
    close(u, [1.0, 2.0])
    close(update_of([1.0, 2.0], tz.m.Mul(5.0), tz.m.Grad()), [2.0, 4.0])
    close(run([1.0, 2.0], tz.m.Params()), [0.0, 0.0])
    close(update_of([1.0, 2.0], tz.m.Fill(1.0), tz.m.UpdateToNone()), [2.0, 4.0])
    close(update_of([1.0, 2.0], tz.m.Zeros()), [0.0, 0.0])
    close(update_of([1.0, 2.0], tz.m.Ones()), [1.0, 1.0])
    tz.m.Identity(1, a=2)
    del x


def test_grad_to_none_no_closure_call_for_fill():
    calls = []
    x = torch.tensor([1.0], requires_grad=True)
    opt = tz.Modular([x], tz.m.GradToNone(), tz.m.Fill(1.0))

    def closure(backward=True):
        calls.append(backward)
        return (x**2).sum()

    opt.step(closure)
    assert calls == []


def test_clone_gives_new_objects():
    var = Var(params=[torch.zeros(2)], closure=None, model=None, current_step=0)
    before = [torch.ones(2)]
    var.update = before
    var = tz.m.Clone().step(var)
    assert var.update[0] is not before[0] and torch.equal(var.update[0], before[0])


def test_random_samples():
    torch.manual_seed(0)
    p = [torch.zeros(100_000)]

    def sample(m):
        var = Var(params=p, closure=None, model=None, current_step=0)
        return m.step(var).update[0]

    u = sample(tz.m.RandomSample("uniform", variance=4.0))
    assert abs(u.var().item() - 4.0) < 0.1 and u.abs().max() <= math.sqrt(12)
    n = sample(tz.m.RandomSample("normal", variance=4.0))
    assert abs(n.var().item() - 16.0) < 0.4
    s = sample(tz.m.RandomSample("sphere"))
    assert abs(s.norm().item() - 1.0) < 1e-5
    r = sample(tz.m.RandomSample("rademacher", variance=2.0))
    assert set(r.unique().tolist()) == {-2.0, 2.0}
    un = sample(tz.m.Uniform(-1.0, 3.0))
    assert un.min() >= -1 and un.max() <= 3 and abs(un.mean().item() - 1.0) < 0.05
    rn = sample(tz.m.Randn())
    assert abs(rn.std().item() - 1.0) < 0.02


# --------------------------------------------------------------------------------- accumulators and moments
def _outputs(module, *values):
    p = [torch.zeros(())]
    outs = []
    for v in values:
        var = Var(params=p, closure=None, model=None, current_step=0)
        var.update = [torch.as_tensor(v, dtype=torch.float32).clone()]
        outs.append(module.step(var).update[0].clone())
    return outs


def test_accumulators():
    close(torch.stack(_outputs(tz.m.AccumulateSum(decay=0.5), 1.0, 1.0, 1.0)), [0.5, 1.0, 1.5])
    close(torch.stack(_outputs(tz.m.AccumulateMean(), 2.0, 4.0)), [2.0, 3.0])
    close(torch.stack(_outputs(tz.m.AccumulateProduct(), 2.0, 3.0)), [2.0, 6.0])
    p = [torch.zeros(2)]
    var = Var(params=p, closure=None, model=None, current_step=0)
    var.update = [torch.tensor([-2.0, 4.0])]
    close(tz.m.AccumulateMaximum().step(var).update[0], [0.0, 4.0])
    var.update = [torch.tensor([-2.0, 4.0])]
    close(tz.m.AccumulateMinimum().step(var).update[0], [-2.0, 0.0])


def test_accumulate_sum_grad_target():
    # grads 2, 4, 1 (f = c*x with c changing) -> applied steps 2, 6, 7
    cs = iter([2.0, 4.0, 1.0])
    x = torch.tensor(0.0, requires_grad=True)
    opt = tz.Modular([x], tz.m.AccumulateSum(target="grad"))
    steps = []
    for _ in range(3):
        c = next(cs)
        before = float(x.detach())
        opt.zero_grad()
        (c * x).backward()
        opt.step()
        steps.append(before - float(x.detach()))
    close(steps, [2.0, 6.0, 7.0])


def test_moment_checks():
    close(_outputs(tz.m.EMASquared(0.5), 2.0)[0], 2.0)
    close(_outputs(tz.m.SqrtEMASquared(0.5, debiased=True), 2.0)[0], 2.0)
    close(torch.stack(_outputs(tz.m.CenteredEMASquared(0.5), 2.0, -2.0, 0.5)), [1.0, 2.75, 1.625])
    close(torch.stack(_outputs(tz.m.CenteredEMASquared(0.5, amsgrad=True), 2.0, -2.0, 0.5)), [2.0, 3.0, 3.0])
    close(torch.stack(_outputs(tz.m.CenteredSqrtEMASquared(0.5), 2.0, -2.0)), [1.0, math.sqrt(2.75)])
    close(_outputs(tz.m.Debias(0.9, 0.999), 1.0)[0], math.sqrt(0.001) / 0.1)
    close(_outputs(tz.m.Debias2(0.5), 2.0)[0], 2 / math.sqrt(0.5))


# --------------------------------------------------------------------------------- sweep
SWEEP = {
    "Add": lambda: [tz.m.Add(tz.m.HeavyBall(0.5), alpha=0.5), tz.m.LR(0.01)],
    "Sub": lambda: [tz.m.Sub(0.1), tz.m.LR(0.01)],
    "RSub": lambda: [tz.m.RSub(tz.m.Grad()), tz.m.Add(tz.m.Grad()), tz.m.LR(0.01)],
    "Mul": lambda: [tz.m.Mul(tz.m.Adam()), tz.m.LR(0.01)],
    "Div": lambda: [tz.m.Div(tz.m.SqrtEMASquared(0.9)), tz.m.LR(0.01)],
    "RDiv": lambda: [tz.m.Abs(), tz.m.Add(1.0), tz.m.RDiv(tz.m.Grad()), tz.m.LR(0.01)],
    "Pow": lambda: [tz.m.ClipValue(1.0), tz.m.Pow(3.0), tz.m.LR(0.01)],
    "RPow": lambda: [tz.m.Sign(), tz.m.RPow(2.0), tz.m.CopySign(tz.m.Grad()), tz.m.LR(0.01)],
    "Clip": lambda: [tz.m.Clip(-1.0, tz.m.Ones()), tz.m.LR(0.01)],
    "MaxMin": lambda: [tz.m.Maximum(tz.m.Fill(-1.0)), tz.m.Minimum(tz.m.Ones()), tz.m.LR(0.01)],
    "GramSchimdt": lambda: [tz.m.GramSchimdt(tz.m.EMA(0.5)), tz.m.LR(0.01)],
    "Threshold": lambda: [tz.m.Threshold(0.0, tz.m.Grad(), update_above=True), tz.m.LR(0.01)],
    "Graft": lambda: [tz.m.Graft(tz.m.Adam()), tz.m.RGraft(tz.m.HeavyBall()), tz.m.LR(0.01)],
    "GraftModules": lambda: [tz.m.GraftModules(tz.m.Adam(), tz.m.NAG(), tensorwise=False, strength=0.5),
                             tz.m.LR(0.01)],
    "SubModules": lambda: [tz.m.SubModules(tz.m.Grad(), tz.m.EMA(0.5), alpha=0.5), tz.m.LR(0.01)],
    "LerpClipModules": lambda: [tz.m.LerpModules(tz.m.Grad(), tz.m.Adam(), 0.5),
                                tz.m.ClipModules(tz.m.Identity(), -1.0, 1.0), tz.m.LR(0.01)],
    "Reductions": lambda: [tz.m.Mean(tz.m.Grad(), tz.m.HeavyBall(0.9), 0.5),
                           tz.m.WeightedSum(tz.m.Identity(), tz.m.Adam(), weights=[0.5, 0.5]),
                           tz.m.MaximumModules(tz.m.Identity(), -10.0), tz.m.LR(0.01)],
    "Unary": lambda: [tz.m.NanToNum(), tz.m.Negate(), tz.m.Negate(), tz.m.LR(0.01)],
    "Sources": lambda: [tz.m.Fill(0.5), tz.m.UpdateToNone(), tz.m.Clone(), tz.m.LR(0.01)],
    "Accumulators": lambda: [tz.m.AccumulateMean(), tz.m.AccumulateSum(decay=0.5), tz.m.LR(0.01)],
    "Moments": lambda: [tz.m.Div(tz.m.CenteredSqrtEMASquared(0.9, debiased=True)), tz.m.Debias(0.9, 0.99),
                        tz.m.Debias2(0.9), tz.m.Add(1.0), tz.m.LR(0.01)],
    "EMASquared_amsgrad": lambda: [tz.m.Mul(tz.m.EMASquared(amsgrad=True, pow=3)), tz.m.LR(0.01)],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name):
    check_module(SWEEP[name])


def test_identity_get_h():
    params = [torch.zeros(2, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)]
    var = Var(params=params, closure=None, model=None, current_step=0)
    H = tz.m.Identity().get_H(var)
    assert H.size() == (10, 10)
    v = torch.randn(10, dtype=torch.float64)
    torch.testing.assert_close(H.matvec(v), v)
    torch.testing.assert_close(H.to_tensor(), torch.eye(10, dtype=torch.float64))
