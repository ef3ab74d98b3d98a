"""misc modules built around the loss: GradientAccumulation, homotopies, NegateOnLossIncrease, SaveBest,
EscapeAnnealing, FillLoss/MulByLoss/DivByLoss and the Print* debug modules."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from sweep import Objective, assert_all_close, check_module, clone_params, make_params, snapshot

import torchzero as tz
from torchzero.modules.misc.debug import PrintLoss, PrintParams, PrintShape, PrintUpdate
from torchzero.modules.misc.escape import EscapeAnnealing, NegateOnLossIncrease, SaveBest
from torchzero.modules.misc.gradient_accumulation import GradientAccumulation
from torchzero.modules.misc.homotopy import ExpHomotopy, LambdaHomotopy, LogHomotopy, SqrtHomotopy, SquareHomotopy
from torchzero.modules.misc.scaling import DivByLoss, FillLoss, MulByLoss

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


def run(x0, *modules, steps=1, f=lambda x: (x**2).sum(), loss=None):
    x, opt = _make_opt(x0, *modules)
    for _ in range(steps):
        opt.step(_closure(opt, x, f), loss=loss)
    return x.detach()


def close(a, b, tol=1e-4):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                               rtol=tol, atol=tol)


# --------------------------------------------------------------------------------------------- sweep
SWEEP = {
    "GradientAccumulation": (lambda: [GradientAccumulation(2), tz.m.Adam(), tz.m.LR(0.01)], False),
    "GradientAccumulation_no_stop": (lambda: [GradientAccumulation(3, mean=False, stop=False), tz.m.LR(0.01)], False),
    "SquareHomotopy": (lambda: [SquareHomotopy(), tz.m.Adam(), tz.m.LR(0.01)], True),
    "SqrtHomotopy": (lambda: [SqrtHomotopy(), tz.m.LR(0.01)], True),
    # homotopies compose: exp(0.01·L) keeps exp finite on the sweep objective (L ≈ 150)
    "ExpHomotopy": (lambda: [LambdaHomotopy(lambda l: 0.01 * l), ExpHomotopy(), tz.m.LR(0.01)], True),
    "LogHomotopy": (lambda: [LogHomotopy(), tz.m.LR(0.01)], True),
    "LambdaHomotopy": (lambda: [LambdaHomotopy(lambda l: 2 * l), tz.m.LR(0.01)], True),
    "NegateOnLossIncrease_last": (lambda: [tz.m.Adam(), tz.m.Mul(0.01), NegateOnLossIncrease(True)], True),
    "NegateOnLossIncrease_lr": (lambda: [tz.m.HeavyBall(0.9), tz.m.Mul(0.01), NegateOnLossIncrease(), tz.m.LR(0.5)],
                                True),
    "SaveBest": (lambda: [tz.m.Adam(), SaveBest(), tz.m.LR(0.01)], True),
    "EscapeAnnealing": (lambda: [tz.m.HeavyBall(), EscapeAnnealing(n_tol=2, max_iter=3), tz.m.LR(0.01)], True),
    "FillLoss": (lambda: [tz.m.Mul(FillLoss(0.1)), tz.m.LR(0.001)], True),
    "MulByLoss": (lambda: [tz.m.Adam(), MulByLoss(0.1), tz.m.LR(0.01)], True),
    "DivByLoss": (lambda: [DivByLoss(backward=False), tz.m.LR(0.01)], True),
    "PrintUpdate": (lambda: [PrintUpdate(print_fn=lambda s: None), tz.m.LR(0.01)], False),
    "PrintShape": (lambda: [tz.m.Adam(), PrintShape(print_fn=lambda s: None), tz.m.LR(0.01)], False),
    "PrintParams": (lambda: [PrintParams(print_fn=lambda s: None), tz.m.LR(0.01)], False),
    "PrintLoss": (lambda: [tz.m.HeavyBall(), PrintLoss(print_fn=lambda s: None), tz.m.LR(0.01)], True),
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


# --------------------------------------------------------------------------------------------- GradientAccumulation
def test_gradient_accumulation_check():
    x, opt = _make_opt([1.0], GradientAccumulation(2), tz.m.Mul(0.5))
    f = lambda x: (x**2).sum()
    opt.step(_closure(opt, x, f))
    close(x.detach(), [1.0])
    opt.step(_closure(opt, x, f))
    close(x.detach(), [0.0])


def test_gradient_accumulation_equals_step_on_mean_gradient():
    """[GradientAccumulation(n), Adam, LR] on n different mini-batches = torch Adam on their mean gradient."""
    n = 3
    x0 = make_params(torch.float64)
    batches = [Objective(x0, seed=s) for s in range(12)]
    ps_tz, ps_ref = clone_params(x0), clone_params(x0)
    opt = tz.Modular(ps_tz, GradientAccumulation(n), tz.m.Adam(), tz.m.LR(0.05))
    ref = torch.optim.Adam(ps_ref, lr=0.05)
    for k in range(0, len(batches), n):
        for f in batches[k:k + n]:
            before = snapshot(ps_tz)
            opt.step(_closure(opt, ps_tz, f))
            if f is not batches[k + n - 1]:
                assert all(torch.equal(a, b) for a, b in zip(before, ps_tz))  # no move while accumulating
        ref.zero_grad()
        (sum(f(ps_ref) for f in batches[k:k + n]) / n).backward()
        ref.step()
        assert_all_close(ps_tz, snapshot(ps_ref), rtol=1e-6, atol=1e-12)


def test_gradient_accumulation_sum_and_no_stop():
    # sum of two gradients, and with stop=False the update passes through on accumulation steps
    close(run([1.0], GradientAccumulation(2, mean=False), tz.m.Mul(0.25), steps=2), [1 - 0.25 * (2 + 2)])
    x, opt = _make_opt([1.0], GradientAccumulation(2, stop=False), tz.m.Mul(0.25))
    f = lambda x: (x**2).sum()
    opt.step(_closure(opt, x, f))
    close(x.detach(), [0.5])  # plain step
    opt.step(_closure(opt, x, f))
    close(x.detach(), [0.5 - 0.25 * (2 + 1) / 2])  # mean of g=2 and g=1
    with pytest.raises(ValueError, match="GradientAccumulation"):
        GradientAccumulation(0)


# --------------------------------------------------------------------------------------------- homotopies
def test_homotopy_checks():
    x, opt = _make_opt([2.0], SquareHomotopy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # loss known without gradient: the Var warns about a second evaluation
        ret = opt.step(_closure(opt, x, lambda x: (x**2).sum()), loss=torch.tensor(4.0))
    close(x.detach(), [-30.0])
    close(ret, 4.0)

    x, opt = _make_opt([2.0], SqrtHomotopy())
    ret = opt.step(_closure(opt, x, lambda x: (x**2).sum()))
    close(x.detach(), [1.0])
    close(ret, 4.0)  # Modular.step returns the untransformed loss

    close(torch.tensor([0.5]) - run([0.5], ExpHomotopy()), [1.0 * math.exp(0.25)])
    close(run([2.0], LogHomotopy()), [1.0])
    close(torch.tensor([1.5]) - run([1.5], LambdaHomotopy(lambda l: 3 * l)), [9.0])


def test_homotopy_transforms_known_loss_and_keeps_cached_gradient():
    """A loss known before the homotopy is transformed; a gradient computed before it is not touched."""
    x, opt = _make_opt([2.0], tz.m.Identity(), SquareHomotopy(), tz.m.Mul(1.0))
    seen = {}

    class Probe(tz.core.Module):
        def step(self, var):
            seen["loss"] = float(var.get_loss(False))
            return var

    x, opt = _make_opt([2.0], tz.m.Grad(), SquareHomotopy(), Probe())
    opt.step(_closure(opt, x, lambda x: (x**2).sum()))
    assert seen["loss"] == 16.0
    close(x.detach(), [2.0 - 4.0])  # the gradient of the original loss was already the update


def test_homotopy_loss_of_later_evaluations_is_transformed():
    seen = {}

    class Probe(tz.core.Module):
        def step(self, var):
            seen["loss"] = float(var.get_loss(False))
            return var

    x, opt = _make_opt([3.0], SqrtHomotopy(), tz.m.Grad(), Probe())
    ret = opt.step(_closure(opt, x, lambda x: (x**2).sum()))
    close(seen["loss"], 3.0)  # sqrt(9): the Var holds the transformed loss
    close(ret, 9.0)  # Modular.step returns the untransformed one
    close(x.detach(), [2.0])


def test_homotopy_with_newton_like_consumer_uses_transformed_objective():
    """Every later evaluation goes through T: NegateOnLossIncrease compares T(f) values."""
    x, opt = _make_opt([2.0], LogHomotopy(), tz.m.Mul(0.5), NegateOnLossIncrease(backtrack=True))
    counter = []
    opt.step(_closure(opt, x, lambda x: (x**2).sum(), counter))
    close(x.detach(), [1.5])  # ∇log(x²) = 1, step 0.5 decreases log f
    with pytest.raises(RuntimeError, match="SquareHomotopy"):
        x, opt = _make_opt([1.0], SquareHomotopy())
        x.grad = torch.ones_like(x)
        opt.step()
    with pytest.raises(TypeError, match="LambdaHomotopy"):
        LambdaHomotopy(3.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- NegateOnLossIncrease
def test_negate_on_loss_increase_checks():
    close(run([1.0], tz.m.Mul(3.0), NegateOnLossIncrease(backtrack=True)), [7.0])
    close(run([1.0], tz.m.Mul(3.0), NegateOnLossIncrease(backtrack=False)), [1.0])
    close(run([1.0], tz.m.Mul(0.25), NegateOnLossIncrease()), [0.5])
    close(run([1.0], tz.m.Mul(0.25), NegateOnLossIncrease(), tz.m.LR(2.0)), [0.0])


class FlagsProbe(tz.core.Module):
    """Records, after the step, whether the final Var skipped the optimizer's update (the direct path)."""

    def __init__(self, record):
        super().__init__({})
        self.record = record

    def step(self, var):
        var.post_step_hooks.append(lambda opt, v: self.record.append(v.skip_update))
        return var


def test_negate_on_loss_increase_direct_path():
    record = []
    close(run([1.0], FlagsProbe(record), tz.m.Mul(0.25), NegateOnLossIncrease()), [0.5])
    close(run([1.0], FlagsProbe(record), tz.m.Mul(0.25), NegateOnLossIncrease(), tz.m.Mul(1.0)), [0.5])
    close(run([1.0], FlagsProbe(record), tz.m.Mul(3.0), NegateOnLossIncrease()), [1.0])
    assert record == [True, False, False]  # parameters left moved only when last and accepted


def test_negate_on_loss_increase_evaluations_and_nan():
    counter = []
    x, opt = _make_opt([1.0], tz.m.Mul(0.25), NegateOnLossIncrease())
    opt.step(_closure(opt, x, lambda x: (x**2).sum(), counter))
    assert counter == [True, False]  # gradient and f0 from one evaluation, one trial evaluation
    # a NaN trial loss counts as an increase
    f = lambda x: torch.where(x < 0.9, torch.nan, x**2).sum()
    close(run([1.0], tz.m.Mul(0.25), NegateOnLossIncrease(backtrack=True), f=f), [1.5])


# --------------------------------------------------------------------------------------------- SaveBest
def test_save_best_check():
    x, opt = _make_opt([1.0], tz.m.Mul(1.5), SaveBest())
    for _ in range(3):
        opt.step(_closure(opt, x, lambda x: (x**2).sum()))
    assert opt.attrs["best_loss"] == 1.0
    close(opt.attrs["best_params"][0], [1.0])
    assert not torch.allclose(x.detach(), torch.tensor([1.0], dtype=torch.float64))
    opt.attrs["load_best_params"]()
    close(x.detach(), [1.0])
    # the saved copy is not aliased by the parameters: later steps don't change it
    opt.step(_closure(opt, x, lambda x: (x**2).sum()))
    close(opt.attrs["best_params"][0], [1.0])


def test_save_best_with_loss_argument_and_errors():
    x, opt = _make_opt([1.0], SaveBest())
    x.grad = torch.ones_like(x)
    opt.step(loss=torch.tensor(3.0))
    assert opt.attrs["best_loss"] == 3.0
    x.grad = torch.ones_like(x)
    with pytest.raises(RuntimeError, match="SaveBest"):
        opt.step()


# --------------------------------------------------------------------------------------------- EscapeAnnealing
def test_escape_annealing_check():
    torch.manual_seed(0)
    f = lambda x: ((x**2 - 1) ** 2 + 0.3 * x).sum()
    x, opt = _make_opt([0.96], EscapeAnnealing(max_region=3, max_iter=100, n_tol=2), tz.m.Mul(0.0))
    for _ in range(2):
        opt.step(_closure(opt, x, f))
        close(x.detach(), [0.96], tol=0)
    opt.step(_closure(opt, x, f))
    assert float(x.detach()) < 0
    assert float(f(x.detach())) < float(f(torch.tensor([0.96])))


@pytest.mark.filterwarnings("ignore:get_loss was called")  # f0 without backward, then Mul needs the gradient
def test_escape_annealing_gives_up_and_validates():
    # at the global minimum of a convex function nothing is better: parameters restored, counter reset
    counter = []
    x, opt = _make_opt([0.0], EscapeAnnealing(max_iter=5, n_tol=1), tz.m.Mul(0.0))
    opt.step(_closure(opt, x, lambda x: (x**2).sum(), counter))  # d = 0 → searches on the first step
    assert x.item() == 0.0
    assert counter.count(False) == 1 + 5  # f0 and the 5 trials
    for kwargs in (dict(max_region=-1.0), dict(max_iter=0), dict(n_tol=0), dict(tol=-1.0)):
        with pytest.raises((ValueError, TypeError), match="EscapeAnnealing"):
            EscapeAnnealing(**kwargs)


# --------------------------------------------------------------------------------------------- loss scaling
def test_loss_scaling_checks():
    close(torch.tensor([3.0, -4.0]) - run([3.0, -4.0], tz.m.Fill(2.0), MulByLoss(alpha=0.1)), [5.0, 5.0])
    close(torch.tensor([3.0, -4.0]) - run([3.0, -4.0], FillLoss(alpha=0.1)), [2.5, 2.5])
    close(torch.tensor([3.0, -4.0]) - run([3.0, -4.0], tz.m.Fill(5.0), DivByLoss(alpha=0.1)), [2.0, 2.0])
    # min_value bounds the factor
    close(torch.tensor([0.0]) - run([0.0], tz.m.Fill(2.0), MulByLoss(min_value=0.5)), [1.0])
    # the reference read var.update directly and failed without an earlier module; get_update() is used
    close(torch.tensor([3.0]) - run([3.0], MulByLoss()), [6.0 * 9.0])


def test_loss_scaling_evaluations_and_errors():
    counter = []
    x, opt = _make_opt([3.0], MulByLoss(backward=False))
    opt.step(_closure(opt, x, lambda x: (x**2).sum(), counter))
    assert counter == [True]  # update needs the gradient: the loss comes from the same evaluation
    counter = []
    x, opt = _make_opt([3.0], FillLoss(backward=False))
    opt.step(_closure(opt, x, lambda x: (x**2).sum(), counter))
    assert counter == [False]
    for cls in (FillLoss, MulByLoss, DivByLoss):
        x, opt = _make_opt([3.0], cls())
        x.grad = torch.ones_like(x)
        with pytest.raises(RuntimeError, match=cls.__name__):
            opt.step()
    x, opt = _make_opt([3.0], FillLoss())
    x.grad = torch.ones_like(x)
    opt.step(loss=2.0)  # a Python number as loss
    close(x.detach(), [1.0])


# --------------------------------------------------------------------------------------------- Print*
def test_print_modules():
    lines = []
    x, opt = _make_opt([1.0, 2.0], PrintUpdate(print_fn=lines.append), tz.m.Grad(), PrintShape(print_fn=lines.append),
                       PrintParams(print_fn=lines.append), PrintLoss(print_fn=lines.append))
    counter = []
    for _ in range(2):
        opt.step(_closure(opt, x, lambda x: (x**2).sum(), counter))
    assert len(lines) == 8
    assert lines[0] == "update = None"
    assert lines[1] == "shapes = [torch.Size([2])]"
    assert lines[2].startswith("params = [tensor(")
    assert lines[3] == "loss = " + str(torch.tensor(5.0, dtype=torch.float64))
    assert [l for l in lines if l.startswith("loss = ")] == [lines[3], lines[7]]
    assert counter == [True, True]  # PrintLoss reuses the loss of the gradient evaluation
    with pytest.raises(TypeError, match="PrintLoss"):
        PrintLoss(print_fn=3)  # type: ignore[arg-type]
