"""misc transforms and random modules: Dropout, WeightDropout, PerturbWeights, RandomHvp, HpuEstimate, grafting,
history (Previous, Last*), GradSign, UpdateSign, Relative, NoiseSign."""
from __future__ import annotations

import math

import pytest
import torch
from sweep import Objective, assert_all_close, check_module, clone_params, make_params, snapshot

import torchzero as tz
from torchzero.core import Var
from torchzero.modules.misc.curvature import HpuEstimate, RandomHvp
from torchzero.modules.misc.escape import NegateOnLossIncrease
from torchzero.modules.misc.grafting import GraftGradToUpdate, GraftToGrad, GraftToParams
from torchzero.modules.misc.history import (
    LastAbsoluteRatio,
    LastDifference,
    LastGradDifference,
    LastProduct,
    LastRatio,
    Previous,
)
from torchzero.modules.misc.regularization import Dropout, PerturbWeights, WeightDropout
from torchzero.modules.misc.scaling import GradSign, NoiseSign, Relative, UpdateSign

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


def update_of(x0, *modules, **kw):
    return torch.tensor(x0, dtype=torch.float64) - run(x0, *modules, **kw)


def close(a, b, tol=1e-4):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                               rtol=tol, atol=tol)


def outputs(module, inputs, grads=None):
    """Steps ``module`` on a hand-made Var for each input (the update; and the gradient if given)."""
    p = torch.zeros(1, dtype=torch.float64)
    out = []
    for k, u in enumerate(inputs):
        var = Var(params=[p], closure=None, model=None, current_step=k)
        var.update = [torch.tensor([float(u)], dtype=torch.float64)]
        var.grad = [torch.tensor([float(grads[k] if grads is not None else u)], dtype=torch.float64)]
        out.append(float(module.step(var).update[0]))
    return out


def trajectory(modules_fn, n=10, seed=None):
    x0 = make_params(torch.float64)
    f = Objective(x0)
    ps = clone_params(x0)
    opt = tz.Modular(ps, *modules_fn())
    if seed is not None:
        torch.manual_seed(seed)
    for _ in range(n):
        opt.step(_closure(opt, ps, f))
    return snapshot(ps)


# --------------------------------------------------------------------------------------------- sweep
SWEEP = {
    "Dropout": (lambda: [Dropout(0.5), tz.m.LR(0.01)], dict(deterministic=False)),
    "Dropout_graft_grad": (lambda: [Dropout(0.3, graft=True, target="grad"), tz.m.Adam(), tz.m.LR(0.01)],
                           dict(deterministic=False)),
    "WeightDropout": (lambda: [WeightDropout(0.3), tz.m.LR(0.01)], dict(deterministic=False, needs_closure=True)),
    "PerturbWeights": (lambda: [PerturbWeights(0.1), tz.m.LR(0.01)], dict(deterministic=False, needs_closure=True)),
    "PerturbWeights_sphere": (lambda: [PerturbWeights(0.1, relative=False, distribution="sphere"), tz.m.LR(0.01)],
                              dict(deterministic=False, needs_closure=True)),
    "RandomHvp": (lambda: [RandomHvp(2), tz.m.LR(0.001)], dict(deterministic=False, needs_closure=True)),
    # as an operand: steps that reuse D evaluate nothing themselves, the gradient is evaluated by Add's input
    "RandomHvp_central_freq": (lambda: [tz.m.Add(RandomHvp(update_freq=2, hvp_method="central"), alpha=0.1),
                                        tz.m.LR(0.001)], dict(deterministic=False, needs_closure=True)),
    "HpuEstimate": (lambda: [HpuEstimate(), tz.m.LR(0.01)], {}),
    "GraftToGrad": (lambda: [tz.m.Adam(), GraftToGrad(), tz.m.LR(0.01)], {}),
    "GraftGradToUpdate": (lambda: [tz.m.Adam(), GraftGradToUpdate(tensorwise=True, ord="mad"), tz.m.LR(0.01)], {}),
    "GraftToParams": (lambda: [tz.m.Adam(), GraftToParams(tensorwise=True), tz.m.LR(0.01)], {}),
    "Previous": (lambda: [Previous(2), tz.m.Mul(2.0), tz.m.LR(0.01)], {}),
    "Previous_grad": (lambda: [Previous(1, target="grad"), tz.m.Adam(), tz.m.LR(0.01)], {}),
    "LastDifference": (lambda: [LastDifference(), tz.m.LR(0.01)], {}),
    "LastProduct": (lambda: [LastProduct(), tz.m.LR(0.001)], {}),
    "LastRatio": (lambda: [LastRatio("prev"), tz.m.ClipValue(1.0), tz.m.LR(0.01)], {}),
    "LastAbsoluteRatio": (lambda: [LastAbsoluteRatio(), tz.m.ClipValue(1.0), tz.m.LR(0.01)], {}),
    "LastGradDifference": (lambda: [LastGradDifference(), tz.m.LR(0.01)], {}),
    "GradSign": (lambda: [tz.m.Adam(), GradSign(), tz.m.LR(0.01)], {}),
    "UpdateSign": (lambda: [tz.m.Adam(), UpdateSign(), tz.m.LR(0.01)], {}),
    "Relative": (lambda: [tz.m.Adam(), Relative(), tz.m.LR(0.01)], {}),
    "NoiseSign": (lambda: [NoiseSign("uniform", 0.5), tz.m.LR(0.01)], dict(deterministic=False)),
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name):
    factory, kwargs = SWEEP[name]
    check_module(factory, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_cuda(name):
    factory, kwargs = SWEEP[name]
    check_module(factory, device="cuda", **kwargs)


@pytest.mark.parametrize("name", ["Dropout", "WeightDropout", "PerturbWeights", "RandomHvp", "NoiseSign"])
def test_random_modules_reproducible_under_seed(name):
    """Randomized modules draw from the global RNG: seeding it makes runs identical, different seeds differ."""
    a = trajectory(SWEEP[name][0], seed=0)
    b = trajectory(SWEEP[name][0], seed=0)
    c = trajectory(SWEEP[name][0], seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(not torch.equal(x, y) for x, y in zip(a, c))


# --------------------------------------------------------------------------------------------- Dropout
def test_dropout_checks():
    base = trajectory(lambda: [tz.m.Adam(), tz.m.LR(0.01)])
    assert_all_close(trajectory(lambda: [Dropout(0.0), tz.m.Adam(), tz.m.LR(0.01)]), base, rtol=0, msg="p=0")
    close(update_of([1.0, 2.0], Dropout(1.0)), [0.0, 0.0])
    torch.manual_seed(0)
    u = torch.randn(100_000, dtype=torch.float64)
    var = Var(params=[torch.zeros_like(u)], closure=None, model=None, current_step=0)
    var.update = [u.clone()]
    out = Dropout(0.3, graft=True).step(var).update[0]
    close(out.norm(), u.norm(), tol=1e-10)
    zero_frac = (out == 0).double().mean().item()
    assert abs(zero_frac - 0.3) < 0.01
    kept = out != 0
    close(out[kept] / u[kept], torch.full((int(kept.sum()),), (u.norm() / u[kept].norm()).item(),
                                           dtype=torch.float64), tol=1e-10)
    var.update = [u.clone()]
    out = Dropout(0.3).step(var).update[0]
    assert torch.equal(out[out != 0], u[out != 0])  # survivors are not rescaled
    var.update = [u.clone()]
    out = Dropout(1.0, graft=True).step(var).update[0]
    assert torch.equal(out, torch.zeros_like(u))  # all dropped with graft: zeros, not NaN
    with pytest.raises(ValueError, match="Dropout"):
        Dropout(1.5)


def test_dropout_per_parameter_p():
    a = torch.ones(1000, dtype=torch.float64, requires_grad=True)
    b = torch.ones(1000, dtype=torch.float64, requires_grad=True)
    opt = tz.Modular([{"params": [a], "p": 0.0}, {"params": [b], "p": 1.0}], Dropout(0.5))
    opt.step(_closure(opt, [a, b], lambda ps: ps[0].sum() + ps[1].sum()))
    assert torch.equal(a.detach(), torch.zeros(1000, dtype=torch.float64))
    assert torch.equal(b.detach(), torch.ones(1000, dtype=torch.float64))


# --------------------------------------------------------------------------------------------- WeightDropout
def test_weight_dropout_checks():
    base = trajectory(lambda: [tz.m.Adam(), tz.m.LR(0.01)])
    assert_all_close(trajectory(lambda: [WeightDropout(0.0), tz.m.Adam(), tz.m.LR(0.01)]), base, rtol=0, msg="p=0")
    # p=1: the gradient at zero weights, −2c for f = Σ(x − c)²
    close(update_of([1.0, 2.0], WeightDropout(1.0), f=lambda x: ((x - 3) ** 2).sum()), [-6.0, -6.0])


def test_weight_dropout_same_mask_in_a_step_and_exact_restore():
    torch.manual_seed(0)
    x = torch.arange(1.0, 201.0, dtype=torch.float64, requires_grad=True)
    seen = []
    opt = tz.Modular([x], WeightDropout(0.5), tz.m.Mul(1e-3), NegateOnLossIncrease())

    def closure(backward=True):
        seen.append(x.detach().clone())
        loss = (x**2).sum()
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    x0 = x.detach().clone()
    opt.step(closure)
    assert len(seen) == 2  # gradient evaluation at x, trial evaluation at x − u
    mask = seen[0] != 0
    assert torch.equal(seen[1] != 0, mask)  # same mask for every evaluation of the step
    assert 0.4 < mask.double().mean() < 0.6
    # gradient of the thinned objective: 2·(x ⊙ m); parameters left at x − u exactly
    assert torch.equal(x.detach(), x0 - 1e-3 * (2 * x0 * mask))


def test_weight_dropout_use_dropout_setting():
    a = torch.ones(500, dtype=torch.float64, requires_grad=True)
    b = torch.ones(500, dtype=torch.float64, requires_grad=True)
    opt = tz.Modular([{"params": [a], "use_dropout": False}, {"params": [b]}], WeightDropout(1.0))
    opt.step(_closure(opt, [a, b], lambda ps: (ps[0] ** 2).sum() + (ps[1] ** 2).sum()))
    close(a.detach(), torch.full((500,), -1.0))  # gradient at the unthinned weights
    close(b.detach(), torch.ones(500))  # gradient at zero weights
    with pytest.raises(ValueError, match="WeightDropout"):
        WeightDropout(-0.1)


# --------------------------------------------------------------------------------------------- PerturbWeights
def test_perturb_weights_checks():
    base = trajectory(lambda: [tz.m.Adam(), tz.m.LR(0.01)])
    assert_all_close(trajectory(lambda: [PerturbWeights(0.0), tz.m.Adam(), tz.m.LR(0.01)]), base, rtol=0)
    # perturb=False on a group: that group's gradient is unperturbed
    a = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    opt = tz.Modular([{"params": [a], "perturb": False}, {"params": [b]}], PerturbWeights(0.5))
    opt.step(_closure(opt, [a, b], lambda ps: (ps[0] ** 2).sum() + (ps[1] ** 2).sum()))
    close(a.detach(), [-1.0, -2.0], tol=1e-12)
    assert not torch.allclose(b.detach(), torch.tensor([-3.0, -4.0], dtype=torch.float64))


@pytest.mark.parametrize("distribution", ["normal", "gaussian", "uniform", "sphere"])
@pytest.mark.parametrize("relative", [True, False])
def test_perturb_weights_shift(distribution, relative):
    torch.manual_seed(0)
    x = (torch.linspace(-3, 3, 10_000, dtype=torch.float64) + 0.1).requires_grad_()
    x0 = x.detach().clone()
    seen = []
    opt = tz.Modular([x], PerturbWeights(0.2, relative=relative, distribution=distribution), tz.m.Mul(0.0),
                     NegateOnLossIncrease())

    def closure(backward=True):
        seen.append(x.detach().clone())
        loss = (x**2).sum()
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    opt.step(closure)
    assert torch.equal(x.detach(), x0)  # restored exactly
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])  # the same shift for both evaluations
    delta = seen[0] - x0
    a = 0.2 * (x0.abs().mean().item() if relative else 1.0)
    if distribution in ("normal", "gaussian"):
        close(delta.std() / a, 1.0, tol=0.03)
    elif distribution == "uniform":
        assert delta.abs().max() <= a and delta.abs().max() > 0.99 * a
        close(delta.std() / a, 1 / math.sqrt(3), tol=0.02)
    else:
        close(delta.norm() / a, 1.0, tol=1e-10)


def test_perturb_weights_errors():
    with pytest.raises(ValueError, match="PerturbWeights"):
        PerturbWeights(distribution="rademacher")
    with pytest.raises(ValueError, match="PerturbWeights"):
        PerturbWeights(alpha=-1.0)
    x, opt = _make_opt([1.0], PerturbWeights())
    x.grad = torch.ones_like(x)
    with pytest.raises(RuntimeError, match="PerturbWeights"):
        opt.step()


# --------------------------------------------------------------------------------------------- RandomHvp
@pytest.mark.parametrize("hvp_method", ["autograd", "forward", "central"])
def test_random_hvp_quadratic(hvp_method):
    x0 = [1.0, -2.0, 0.5]
    torch.manual_seed(3)
    x, opt = _make_opt(x0, RandomHvp(hvp_method=hvp_method))
    opt.step(_closure(opt, x, lambda x: (x**2).sum()))
    torch.manual_seed(3)
    v = torch.randn(3, dtype=torch.float64)
    close(torch.tensor(x0, dtype=torch.float64) - x.detach(), 2 * v, tol=1e-6)


@pytest.mark.parametrize("hvp_method", ["autograd", "forward", "central"])
@pytest.mark.parametrize("distribution", ["normal", "rademacher"])
def test_random_hvp_matches_dense_hessian(hvp_method, distribution):
    f = lambda x: (x**4).sum() + x[0] * x[1] * 3 + (x.sin() * torch.arange(1.0, 4.0, dtype=x.dtype)).sum()
    x0 = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    H = torch.autograd.functional.hessian(f, x0)
    torch.manual_seed(5)
    x, opt = _make_opt(x0.tolist(), RandomHvp(n_samples=3, distribution=distribution, hvp_method=hvp_method, h=1e-5))
    opt.step(_closure(opt, x, f))
    torch.manual_seed(5)
    vs = [torch.randn(3, dtype=torch.float64) if distribution == "normal"
          else torch.empty(3, dtype=torch.float64).bernoulli_(0.5).mul_(2).sub_(1) for _ in range(3)]
    expected = sum(H @ v for v in vs) / 3
    close(x0 - x.detach(), expected, tol={"autograd": 1e-10, "forward": 1e-4, "central": 1e-6}[hvp_method])


def test_random_hvp_update_freq_evaluations_and_errors():
    counter = []
    x, opt = _make_opt([1.0, 2.0], RandomHvp(update_freq=2, hvp_method="central"))
    f = lambda x: (x**2).sum()
    torch.manual_seed(0)
    opt.step(_closure(opt, x, f, counter))
    assert len(counter) == 2
    u1 = torch.tensor([1.0, 2.0], dtype=torch.float64) - x.detach()
    before = x.detach().clone()
    opt.step(_closure(opt, x, f, counter))
    assert len(counter) == 2  # D reused, no evaluation
    close(before - x.detach(), u1, tol=1e-12)
    x, opt = _make_opt([1.0], RandomHvp())
    x.grad = torch.ones_like(x)
    with pytest.raises(RuntimeError, match="RandomHvp"):
        opt.step()
    for kwargs in (dict(n_samples=0), dict(distribution="cauchy"), dict(update_freq=0), dict(hvp_method="x"),
                   dict(h=0.0)):
        with pytest.raises((ValueError, TypeError), match="RandomHvp"):
            RandomHvp(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- HpuEstimate
def test_hpu_estimate_check_and_plain_loop():
    close(update_of([1.0, 2.0], HpuEstimate()), [0.894, 1.789], tol=1e-3)
    f = lambda x: (x**4).sum() + (x**2).sum()
    grad = lambda x: 4 * x**3 + 2 * x
    x, opt = _make_opt([1.0, 2.0], HpuEstimate(), tz.m.Mul(0.05))
    ref = torch.tensor([1.0, 2.0], dtype=torch.float64)
    p_prev, g_prev = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for _ in range(5):
        opt.step(_closure(opt, x, f))
        g = grad(ref)
        y = (g - g_prev) / max((ref - p_prev).norm().item(), 1e-8)
        p_prev, g_prev = ref.clone(), g
        ref = ref - 0.05 * y
        close(x.detach(), ref, tol=1e-10)
    m = HpuEstimate()
    var = Var(params=[torch.ones(2)], closure=None, model=None, current_step=0)
    var.update = [torch.ones(2)]
    m.step(var)
    m.reset_for_online()
    assert set(next(iter(m.state.values()))) == {"y"}


# --------------------------------------------------------------------------------------------- grafting
def test_graft_checks():
    close(update_of([3.0, 4.0], tz.m.Fill(1.0), GraftToGrad()), [7.0711, 7.0711])
    close(update_of([3.0, 4.0], tz.m.Fill(1.0), GraftGradToUpdate()), [0.8485, 1.1314])
    close(update_of([3.0, 4.0], tz.m.Fill(1.0), GraftToParams()), [3.5355, 3.5355])


def test_graft_tensorwise_and_metrics_against_loop():
    a = torch.tensor([3.0, -4.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.0, 2.0, -2.0], dtype=torch.float64, requires_grad=True)
    for module, direction, magnitude in (
        (GraftToGrad(tensorwise=True, ord=1), "fill", "grad"),
        (GraftGradToUpdate(tensorwise=True, ord="linf"), "grad", "fill"),
        (GraftToParams(tensorwise=False, ord="mad"), "fill", "params"),
    ):
        opt = tz.Modular([a, b], tz.m.Fill(0.5), module)
        x0 = snapshot([a, b])
        opt.step(_closure(opt, [a, b], lambda ps: (ps[0] ** 2).sum() + (ps[1] ** 3).sum()))
        grads = [2 * x0[0], 3 * x0[1] ** 2]
        fills = [torch.full_like(t, 0.5) for t in x0]
        src = {"fill": fills, "grad": grads, "params": x0}
        d, m = src[direction], src[magnitude]
        ord_ = module.defaults["ord"]
        metric = {1: lambda t: t.abs().sum(), "linf": lambda t: t.abs().max(), "mad": lambda t: t.abs().mean()}[ord_]
        if module.defaults["tensorwise"]:
            expected = [di * metric(mi) / max(metric(di), module.defaults["eps"]) for di, mi in zip(d, m)]
        else:
            dc, mc = torch.cat(d), torch.cat(m)
            expected = [di * metric(mc) / max(metric(dc), module.defaults["eps"]) for di in d]
        for x, x_0, e in zip([a, b], x0, expected):
            close(x_0 - x.detach(), e, tol=1e-12)
        with torch.no_grad():
            a.copy_(x0[0])
            b.copy_(x0[1])


# --------------------------------------------------------------------------------------------- history
def test_history_checks():
    assert outputs(Previous(2), [1, 2, 3, 4]) == [1, 1, 1, 2]
    assert outputs(LastDifference(), [2, 4, 1]) == [2, 2, -3]
    assert outputs(LastProduct(), [2, 4, 1]) == [2, 8, 4]
    assert outputs(LastRatio(), [2, 4, 1]) == [2, 2, 0.25]
    assert outputs(LastRatio("prev"), [2, 4, 1]) == [0.5, 0.5, 4]
    close(outputs(LastAbsoluteRatio(eps=3), [-2, 4, 1]), [2 / 3, 4 / 3, 0.25], tol=1e-12)
    assert outputs(LastGradDifference(), [0, 0, 0], grads=[2, 4, 1]) == [2, 2, -3]
    assert outputs(Previous(0), [5, 6]) == [5, 6]
    with pytest.raises(ValueError, match="LastRatio"):
        LastRatio("next")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Previous"):
        Previous(-1)


def test_previous_history_not_corrupted_by_in_place_modules():
    """Reference deviation (fixed): Previous stored the input objects, so a following in-place Mul changed them."""
    ups = []
    x, opt = _make_opt([0.0], tz.m.Fill(0.0), Previous(2), tz.m.Mul(10.0))
    for k in range(1, 6):
        opt.modules[0].defaults["value"] = float(k)
        before = x.detach().clone()
        opt.step(_closure(opt, x, lambda x: x.sum()))
        ups.append(float(before - x.detach()))
    assert ups == [10, 10, 10, 20, 30]


def test_previous_stores_copies_of_reused_input_objects():
    """An upstream module that hands out the same tensor object every step (refilled in place) must not alter the
    stored history."""

    class Reused(tz.core.Module):
        def __init__(self):
            super().__init__({})
            self.k = 0
            self.buf = None

        def step(self, var):
            self.k += 1
            if self.buf is None:
                self.buf = [torch.zeros_like(p) for p in var.params]
            for b in self.buf:
                b.fill_(float(self.k))
            var.update = self.buf
            return var

    ups = []
    x, opt = _make_opt([0.0], Reused(), Previous(2))
    for _ in range(5):
        before = x.detach().clone()
        opt.step(_closure(opt, x, lambda x: x.sum()))
        ups.append(float(before - x.detach()))
    assert ups == [1, 1, 1, 2, 3]


def test_last_grad_difference_in_optimizer():
    gs = [2.0, 4.0, 1.0]
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = tz.Modular([x], LastGradDifference())
    ups = []
    for g in gs:
        before = x.detach().clone()
        opt.step(_closure(opt, x, lambda x, g=g: (g * x).sum()))
        ups.append(float(before - x.detach()))
    assert ups == [2, 2, -3]


# --------------------------------------------------------------------------------------------- sign / relative
def test_sign_and_relative_checks():
    close(update_of([3.0, -4.0], tz.m.Fill(1.0), GradSign()), [1.0, -1.0])
    close(update_of([3.0, -4.0], tz.m.Fill(-1.0), UpdateSign()), [-6.0, -8.0])
    close(update_of([3.0, -4.0], tz.m.Fill(2.0), Relative(min_value=3.5)), [7.0, 8.0])
    # the gradient is not modified by UpdateSign: a later Grad() sees it unchanged
    close(update_of([3.0, -4.0], tz.m.Fill(-1.0), UpdateSign(), tz.m.Grad()), [6.0, -8.0])


def test_noise_sign():
    torch.manual_seed(7)
    u = torch.tensor([1.0, -2.0, 3.0, -0.5, 0.0], dtype=torch.float64)
    var = Var(params=[torch.zeros_like(u)], closure=None, model=None, current_step=0)
    var.update = [u.clone()]
    out = NoiseSign(variance=2.0).step(var).update[0]
    torch.manual_seed(7)
    r = torch.randn(5, dtype=torch.float64) * 2.0
    close(out, torch.copysign(r, u), tol=1e-12)
    with pytest.raises(ValueError, match="NoiseSign"):
        NoiseSign("cauchy")  # type: ignore[arg-type]
