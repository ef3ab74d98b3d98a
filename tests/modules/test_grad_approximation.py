"""Gradient approximators: FDM against autograd and against the exactness/convergence order of each stencil;
randomized estimators against plainly written per-sample formulas and unbiasedness over many draws (tolerance from
the standard error); MeZO against RandomizedFDM fed the same directions; ForwardGradient against u uᵀ∇f; evaluation
counts; gradient-free optimisation; the shared sweep."""
from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from sweep import SHAPES, check_module, make_closure, roundtrip

import torchzero as tz
from torchzero.core import Var
from torchzero.modules.adaptive.adam import Adam
from torchzero.modules.grad_approximation.base import GradApproximator
from torchzero.modules.grad_approximation.fdm import FD_FORMULAS, FDM, fd_gradient
from torchzero.modules.grad_approximation.forward_gradient import ForwardGradient
from torchzero.modules.grad_approximation.randomized import (
    RDSA,
    SPSA,
    GaussianSmoothing,
    MeZO,
    RandomizedFDM,
)
from torchzero.utils import TensorList

LR = tz.m.LR

SWEEP = {
    "FDM": lambda: [FDM(), LR(0.01)],
    "FDM_forward_grad": lambda: [FDM(formula="forward", target="grad"), LR(0.01)],
    "FDM_central4_update": lambda: [FDM(formula="central4", target="update"), LR(0.01)],
    "FDM_bspsa4_adam": lambda: [FDM(formula="bspsa4"), Adam(), LR(0.01)],
    "RandomizedFDM": lambda: [RandomizedFDM(seed=0), LR(0.01)],
    "RandomizedFDM_no_pregen_forward5_sphere": lambda: [
        RandomizedFDM(n_samples=2, formula="forward5", distribution="sphere", pre_generate=False, seed=1), LR(0.01)],
    "RandomizedFDM_uniform_grad": lambda: [RandomizedFDM(distribution="uniform", seed=2, target="grad"), LR(0.01)],
    "RandomizedFDM_generator_seed": lambda: [RandomizedFDM(seed=torch.Generator().manual_seed(3)), LR(0.01)],
    "SPSA": lambda: [SPSA(seed=0), Adam(), LR(0.01)],
    "RDSA_update": lambda: [RDSA(n_samples=3, seed=0, target="update"), LR(0.01)],
    "GaussianSmoothing": lambda: [GaussianSmoothing(n_samples=5, seed=0), LR(0.01)],
    "ForwardGradient": lambda: [ForwardGradient(seed=0), LR(0.01)],
    "ForwardGradient_forward_no_pregen": lambda: [
        ForwardGradient(n_samples=2, jvp_method="forward", pre_generate=False, seed=0), LR(0.01)],
    "ForwardGradient_central_rademacher": lambda: [
        ForwardGradient(distribution="rademacher", jvp_method="central", seed=0, target="grad"), LR(0.01)],
}


# the 4-point FDM stencils cost 4 evaluations per entry: they get a 0-d..2-d and a 7-d shape, plain FDM gets all
_FEWER_SHAPES = {"FDM_central4_update", "FDM_bspsa4_adam"}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    # seeded generators survive reset(), so a reset optimizer does not repeat a fresh one's draws
    shapes = SHAPES[:5] + SHAPES[-1:] if name in _FEWER_SHAPES else SHAPES
    check_module(SWEEP[name], needs_closure=True, check_reset=name.startswith("FDM"), shapes=shapes)


@pytest.mark.parametrize("formula", ["central2", "uniform"])
def test_sweep_mezo(formula: str) -> None:
    # MeZO has no generator: its draws depend on its own step counter, which reset() restarts
    if formula == "uniform":
        check_module(lambda: [MeZO(distribution="uniform", n_samples=2), LR(0.01)], needs_closure=True)
    else:
        check_module(lambda: [MeZO(), LR(0.01)], needs_closure=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_cuda(name: str) -> None:
    check_module(SWEEP[name], needs_closure=True, check_reset=name.startswith("FDM"), device="cuda")


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _smooth(params: list[torch.Tensor]) -> torch.Tensor:
    """Smooth, non-separable, non-polynomial objective over a list of tensors."""
    v = torch.cat([p.reshape(-1) for p in params])
    return (torch.sin(v) * v.roll(1)).sum() + torch.exp(0.3 * v).sum() + 0.5 * (v**2).sum() + torch.cos(v.sum())


def _params(shapes=((3,), (2, 2), ()), seed: int = 0, dtype=torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def _autograd(f: Callable, params: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.enable_grad():
        return list(torch.autograd.grad(f(params), params))


def _no_backward_closure(f: Callable, params: list[torch.Tensor]) -> Callable:
    """A closure that never calls backward (a gradient-free user's)."""
    def closure(backward: bool = True) -> torch.Tensor:
        return f(params)
    return closure


def _estimate(module: GradApproximator, f: Callable, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], Var]:
    """One step of ``module`` (target 'grad' or 'update') on a fresh Var; returns the estimate and the Var."""
    var = Var(params=params, closure=_no_backward_closure(f, params), model=None, current_step=0)
    var = module.step(var)
    return (var.grad if module._target == "grad" else var.update), var


def _flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


# --------------------------------------------------------------------------------------------------
# GradApproximator
# --------------------------------------------------------------------------------------------------
class TrueGradient(GradApproximator):
    def approximate(self, closure, params, loss):
        with torch.enable_grad():
            loss = closure(False)
            grad = torch.autograd.grad(loss, params)
        return list(grad), loss.detach(), None


@pytest.mark.parametrize("target", ["closure", "grad", "update"])
def test_true_gradient_approximator_equals_plain_lr(target):
    """Catalog check: a subclass returning the true gradient makes [Approximator, LR] identical to [LR]."""
    f = _smooth
    pa, pb = _params(), _params()
    opt_a = tz.Modular(pa, TrueGradient(target=target), LR(0.05))
    opt_b = tz.Modular(pb, LR(0.05))
    for _ in range(5):
        la = opt_a.step(make_closure(opt_a, pa, f))
        lb = opt_b.step(make_closure(opt_b, pb, f))
        assert torch.equal(la, lb)
    for a, b in zip(pa, pb):
        assert torch.equal(a, b)


def test_invalid_target():
    with pytest.raises(ValueError, match="FDM"):
        FDM(target="params_direct")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# FDM and stencils
# --------------------------------------------------------------------------------------------------
_ORDER = {"forward": 1, "forward2": 1, "backward": 1, "backward2": 1, "central": 2, "central2": 2, "central3": 2,
          "forward3": 2, "backward3": 2, "forward4": 3, "central4": 4, "forward5": 4, "bspsa4": 4}


def test_every_formula_has_an_order():
    assert set(_ORDER) == set(FD_FORMULAS)


@pytest.mark.parametrize("formula", list(_ORDER))
def test_fdm_matches_autograd(formula):
    """Every formula matches autograd to 1e-4 (float64) with a step suited to its order."""
    h = {1: 1e-7, 2: 1e-4, 3: 1e-3, 4: 1e-3}[_ORDER[formula]]
    params = _params()
    expected = _autograd(_smooth, params)
    est, _ = _estimate(FDM(h=h, formula=formula, target="grad"), _smooth, params)
    torch.testing.assert_close(_flat(est), _flat(expected), rtol=1e-4, atol=1e-4)


def test_fdm_catalog_accuracy():
    """Catalog check: with h=1e-3 in float64, central ~1e-6 relative, central4 ~1e-12, forward ~1e-3."""
    params = _params()
    expected = _flat(_autograd(_smooth, params))

    def rel_err(formula):
        est, _ = _estimate(FDM(h=1e-3, formula=formula, target="grad"), _smooth, params)
        return ((_flat(est) - expected).norm() / expected.norm()).item()

    assert 1e-9 < rel_err("central") < 1e-5
    assert rel_err("central4") < 1e-10
    assert 1e-5 < rel_err("forward") < 1e-2


def _plain_derivative(formula: str, f: Callable[[float], float], x: float, h: float) -> float:
    """The stencils written out by hand (independent of the library's table)."""
    F = lambda k: f(x + k * h)
    if formula in ("forward", "forward2"):
        return (F(1) - F(0)) / h
    if formula in ("backward", "backward2"):
        return (F(0) - F(-1)) / h
    if formula in ("central", "central2", "central3"):
        return (F(1) - F(-1)) / (2 * h)
    if formula == "forward3":
        return (-3 * F(0) + 4 * F(1) - F(2)) / (2 * h)
    if formula == "backward3":
        return (F(-2) - 4 * F(-1) + 3 * F(0)) / (2 * h)
    if formula == "central4":
        return (F(-2) - 8 * F(-1) + 8 * F(1) - F(2)) / (12 * h)
    if formula == "forward4":
        return (2 * F(3) - 9 * F(2) + 18 * F(1) - 11 * F(0)) / (6 * h)
    if formula == "forward5":
        return (-3 * F(4) + 16 * F(3) - 36 * F(2) + 48 * F(1) - 25 * F(0)) / (12 * h)
    if formula == "bspsa4":
        return (27 * (F(1) - F(-1)) - (F(3) - F(-3))) / (48 * h)
    raise AssertionError(formula)


@pytest.mark.parametrize("formula", list(_ORDER))
def test_stencil_exactness_and_order(formula):
    """A stencil of order p is exact on polynomials of degree ≤ p (even with a large step) and not on degree p+1;
    halving h divides the error on a smooth function by about 2^p; and it equals the hand-written formula."""
    order = _ORDER[formula]
    x0, h = 0.3, 0.5

    def fd(fn, x, h):
        p = torch.tensor(x, dtype=torch.float64)
        return fd_gradient(lambda backward=True: fn(p), [p], [h], [formula])[0][0].item()
    for degree in range(order + 1):
        poly = lambda t, d=degree: (t + 0.7) ** d
        exact = degree * (x0 + 0.7) ** (degree - 1) if degree > 0 else 0.0
        assert fd(poly, x0, h) == pytest.approx(exact, abs=1e-12)
    poly = lambda t: (t + 0.7) ** (order + 1)
    assert abs(fd(poly, x0, h) - (order + 1) * (x0 + 0.7) ** order) > 1e-6

    smooth = lambda t: torch.exp(torch.sin(t)) if isinstance(t, torch.Tensor) else math.exp(math.sin(t))
    exact = math.cos(x0) * math.exp(math.sin(x0))
    h1 = 0.02 if order < 4 else 0.05
    e1, e2 = abs(fd(smooth, x0, h1) - exact), abs(fd(smooth, x0, h1 / 2) - exact)
    assert 2 ** order * 0.7 < e1 / e2 < 2 ** order * 1.4
    assert fd(smooth, x0, h1) == pytest.approx(_plain_derivative(formula, smooth, x0, h1), rel=1e-12)


def test_fdm_restores_params_and_losses():
    """Parameters restored bit-exactly; stencils through x give var.loss = f(x); central ones leave var.loss unknown
    and give f(x + h e) as loss_approx."""
    params = _params()
    x0 = [p.detach().clone() for p in params]
    _, var = _estimate(FDM(formula="forward", target="grad"), _smooth, params)
    assert all(torch.equal(p, q) for p, q in zip(params, x0))
    assert torch.equal(var.loss, _smooth(params).detach())

    _, var = _estimate(FDM(formula="central", target="grad"), _smooth, params)
    assert var.loss is None
    # the last coordinate visited is the 0-d tensor; f₁ is that of the last coordinate
    shifted = [p.detach().clone() for p in params]
    shifted[-1] = shifted[-1] + 1e-3
    torch.testing.assert_close(var.loss_approx, _smooth(shifted).detach(), rtol=1e-14, atol=0)
    assert all(torch.equal(p, q) for p, q in zip(params, x0))


def test_fdm_restores_params_when_closure_raises():
    params = _params()
    x0 = [p.detach().clone() for p in params]
    calls = []

    def closure(backward=True):
        calls.append(1)
        if len(calls) == 3:
            raise ZeroDivisionError("boom")
        return _smooth(params)

    var = Var(params=params, closure=closure, model=None, current_step=0)
    for module in (FDM(target="grad"), SPSA(n_samples=3, target="grad", seed=0)):
        calls.clear()
        with pytest.raises(ZeroDivisionError):
            module.step(var)
        assert all(torch.equal(p, q) for p, q in zip(params, x0))


def test_fdm_per_sample_losses_are_averaged():
    params = _params(((4,),))
    est_vec, _ = _estimate(FDM(target="grad"), lambda ps: torch.sin(ps[0]) * ps[0], params)
    est_mean, _ = _estimate(FDM(target="grad"), lambda ps: (torch.sin(ps[0]) * ps[0]).mean(), params)
    torch.testing.assert_close(est_vec, est_mean, rtol=1e-12, atol=1e-14)


def test_fdm_closure_target_returns_exact_loss_and_sets_grad():
    """With target='closure' the step returns f(x) even for central differences, and p.grad holds the estimate."""
    params = _params()
    opt = tz.Modular(params, FDM(h=1e-4), LR(0.0))
    expected_grad = _autograd(_smooth, params)
    loss = opt.step(_no_backward_closure(_smooth, params))
    assert torch.equal(loss, _smooth(params))
    for p, g in zip(params, expected_grad):
        torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------------------
# evaluation counts
# --------------------------------------------------------------------------------------------------
# evaluations outside x per direction, written out independently of the library's stencil table
_EVALS = {"forward": 1, "forward2": 1, "backward": 1, "backward2": 1, "central": 2, "central2": 2, "central3": 2,
          "forward3": 2, "backward3": 2, "central4": 4, "forward4": 3, "forward5": 4, "bspsa4": 4}
_THROUGH_X = {"forward", "forward2", "backward", "backward2", "forward3", "backward3", "forward4", "forward5"}


def _evals_per_step(modules, f=_smooth, n_steps: int = 2, params=None) -> list[int]:
    params = _params() if params is None else params
    opt = tz.Modular(params, *modules)
    counts = []
    for _ in range(n_steps):
        before = opt.num_evaluations
        opt.step(_no_backward_closure(f, params))
        counts.append(opt.num_evaluations - before)
    return counts


@pytest.mark.parametrize("formula", list(_EVALS))
def test_num_evaluations(formula):
    n = 3 + 4 + 1  # entries of _params()
    k = _EVALS[formula]
    # closure target: one evaluation at x (either the stencil's f₀ or the wrapper's loss), then the stencil points
    assert _evals_per_step([FDM(formula=formula), LR(0.01)]) == [1 + n * k] * 2
    assert _evals_per_step([RandomizedFDM(n_samples=3, formula=formula, seed=0), LR(0.01)]) == [1 + 3 * k] * 2
    assert _evals_per_step([MeZO(n_samples=3, formula=formula), LR(0.01)]) == [1 + 3 * k] * 2
    # grad target: no extra evaluation for the loss
    through_x = int(formula in _THROUGH_X)
    assert _evals_per_step([FDM(formula=formula, target="grad"), LR(0.01)]) == [through_x + n * k] * 2
    assert _evals_per_step([SPSA(n_samples=2, formula=formula, target="update", seed=0), LR(0.01)]) == \
        [through_x + 2 * k] * 2


def test_num_evaluations_forward_gradient():
    for method, expected in (("autograd", 3), ("forward", 1 + 3), ("central", 1 + 2 * 3)):
        assert _evals_per_step([ForwardGradient(n_samples=3, jvp_method=method, seed=0), LR(0.01)]) == [expected] * 2
    assert _evals_per_step([ForwardGradient(n_samples=3, jvp_method="central", seed=0, target="grad"),
                            LR(0.01)]) == [6, 6]
    assert _evals_per_step([GaussianSmoothing(seed=0), LR(0.01)]) == [101, 101]


# --------------------------------------------------------------------------------------------------
# randomized estimators: per-sample formula
# --------------------------------------------------------------------------------------------------
def _stored_directions(module, params) -> list[list[torch.Tensor]]:
    per_param = [module.state[p]["perturbations"] for p in params]
    return [[pp[i] for pp in per_param] for i in range(len(per_param[0]))]


@pytest.mark.parametrize("formula", list(_ORDER))
@pytest.mark.parametrize("distribution", ["rademacher", "gaussian", "uniform", "sphere"])
def test_randomized_fdm_matches_plain_loop(formula, distribution):
    """ĝ = (1/N) Σ uᵢ Dᵢ with Dᵢ the hand-written stencil of f(x + t δᵢ) over t, δᵢ = h uᵢ (per-parameter h through
    parameter groups), computed with the stored directions in a plain loop."""
    params = _params(seed=1)
    hs = [1e-2, 3e-3, 2e-2]
    module = RandomizedFDM(h=1e-3, n_samples=3, formula=formula, distribution=distribution, seed=0, target="grad")
    module.set_param_groups([{"params": [p], "h": h} for p, h in zip(params, hs)])
    est, _ = _estimate(module, _smooth, params)

    x = [p.detach().clone() for p in params]
    expected = [torch.zeros_like(p) for p in params]
    deltas = _stored_directions(module, params)
    assert len(deltas) == 3
    for delta in deltas:
        along = lambda t, delta=delta: _smooth([xi + t * di for xi, di in zip(x, delta)]).item()
        s = _plain_derivative(formula, along, 0.0, 1.0)  # ≈ ∇fᵀδ
        for e, d, h in zip(expected, delta, hs):
            e += d / h * s / h / 3  # u · (∇fᵀu) with u = δ/h, ∇fᵀu ≈ s/h for a shared h; per-parameter in general
    torch.testing.assert_close(_flat(est), _flat(expected), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian", "uniform", "sphere"])
def test_directions_have_unit_variance(distribution):
    """The stored directions are h·u with E[uuᵀ] = I (rademacher ±1, uniform on ±√3, sphere of radius √n)."""
    params = [torch.zeros(50, dtype=torch.float64, requires_grad=True), torch.zeros(5, 10, dtype=torch.float64,
                                                                                     requires_grad=True)]
    module = RandomizedFDM(h=0.1, n_samples=2000, distribution=distribution, seed=0, target="grad")
    module.pre_step(Var(params=params, closure=None, model=None, current_step=0))
    u = torch.stack([_flat(d) / 0.1 for d in _stored_directions(module, params)])  # (2000, 100)
    cov = u.T @ u / u.shape[0]  # entries have standard errors ≤ √(2/2000) ≈ 0.03
    assert (cov.diagonal().mean() - 1).abs() < 0.02
    assert (cov.diagonal() - 1).abs().max() < 0.25
    assert (cov - torch.diag(cov.diagonal())).abs().max() < 0.15
    if distribution == "rademacher":
        assert torch.equal(u.abs(), torch.ones_like(u))
    if distribution == "uniform":
        assert u.abs().max() <= math.sqrt(3) + 1e-12 and u.abs().max() > 1.6
    if distribution == "sphere":
        torch.testing.assert_close(u.norm(dim=1), torch.full((2000,), 10.0, dtype=torch.float64))


def test_spsa_linear_function_single_sample():
    """Catalog check: for f = cᵀx a single central sample returns u uᵀc exactly."""
    params = _params(((6,),), seed=2)
    c = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    f = lambda ps: (c * ps[0]).sum()
    module = SPSA(h=0.5, seed=0, target="grad")
    (est,), _ = _estimate(module, f, params)
    u = _stored_directions(module, params)[0][0] / 0.5
    torch.testing.assert_close(est, u * (u @ c), rtol=1e-13, atol=1e-14)


def test_pre_generate_shares_directions_within_a_step():
    params = _params()
    for pre_generate, same in ((True, True), (False, False)):
        module = SPSA(h=1e-2, pre_generate=pre_generate, seed=0)
        var = Var(params=params, closure=_no_backward_closure(_smooth, params), model=None, current_step=0)
        var = module.step(var)
        var.closure()
        g1 = [p.grad.clone() for p in params]
        var.closure()
        g2 = [p.grad.clone() for p in params]
        assert all(torch.equal(a, b) for a, b in zip(g1, g2)) == same


# --------------------------------------------------------------------------------------------------
# randomized estimators: unbiasedness
# --------------------------------------------------------------------------------------------------
def _quadratic(n: int = 6, seed: int = 0):
    """``f(x) = ½xᵀAx + bᵀx``, a starting point, the gradient there and the minimiser."""
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = M @ M.T / n + torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    f = lambda ps: 0.5 * ps[0] @ A @ ps[0] + b @ ps[0]
    return f, x, A @ x + b, torch.linalg.solve(A, -b)


UNBIASED = {
    "SPSA": lambda: SPSA(h=1e-2, seed=0, target="grad"),
    "RDSA": lambda: RDSA(h=1e-2, seed=0, target="grad"),
    "uniform_central4": lambda: RandomizedFDM(h=1e-2, formula="central4", distribution="uniform", seed=0,
                                              target="grad"),
    "sphere_bspsa4": lambda: RandomizedFDM(h=1e-2, formula="bspsa4", distribution="sphere", seed=0, target="grad"),
    "GaussianSmoothing": lambda: GaussianSmoothing(h=0.1, n_samples=1, seed=0, target="grad"),
    "MeZO": lambda: MeZO(h=1e-2, target="grad"),
    "ForwardGradient": lambda: ForwardGradient(seed=0, target="grad"),
    "ForwardGradient_central": lambda: ForwardGradient(jvp_method="central", distribution="rademacher", seed=0,
                                                       target="grad"),
}


@pytest.mark.parametrize("name", list(UNBIASED))
def test_unbiased_on_quadratic(name):
    """The mean of N single-sample estimates (one per step, new draws each step) is within 5 standard errors of the
    true gradient in every coordinate; a biased estimator (e.g. scaled by 1.5) would fail."""
    f, x, g_true, _ = _quadratic()
    params = [x.clone().requires_grad_()]
    module = UNBIASED[name]()
    N = 3000
    samples = torch.stack([_estimate(module, f, params)[0][0] for _ in range(N)])
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(N)
    assert ((mean - g_true).abs() < 5 * se).all(), (mean - g_true) / se
    assert (se < 0.2 * g_true.abs().max()).all()  # the test has power: the standard error is small
    assert ((1.5 * mean - g_true).abs() > 5 * se).any()


def test_gaussian_smoothing_converges_with_samples():
    """Catalog check: on ½xᵀAx the estimate approaches Ax as n_samples grows (error ~ 1/√N)."""
    f, x, g_true, _ = _quadratic()
    params = [x.clone().requires_grad_()]
    errs = []
    for n in (100, 10000):
        (est,), _ = _estimate(GaussianSmoothing(n_samples=n, seed=0, target="grad"), f, params)
        errs.append(((est - g_true).norm() / g_true.norm()).item())
    assert errs[1] < errs[0] / 4 and errs[1] < 0.1


# --------------------------------------------------------------------------------------------------
# seeds and state
# --------------------------------------------------------------------------------------------------
def _run(modules, n_steps, params, state_dict=None):
    opt = tz.Modular(params, *modules)
    if state_dict is not None:
        opt.load_state_dict(state_dict)
    for _ in range(n_steps):
        opt.step(_no_backward_closure(_smooth, params))
    return opt


@pytest.mark.parametrize("factory", [lambda: SPSA(h=1e-2, seed=7), lambda: RDSA(seed=7, pre_generate=False),
                                     lambda: ForwardGradient(seed=7), lambda: MeZO(n_samples=2),
                                     lambda: SPSA(seed=torch.Generator().manual_seed(7))])
def test_seeded_runs_reproducible_and_state_dict_continues(factory):
    pa, pb = _params(), _params()
    _run([factory(), Adam(), LR(0.01)], 6, pa)
    _run([factory(), Adam(), LR(0.01)], 6, pb)
    assert all(torch.equal(a, b) for a, b in zip(pa, pb))

    # a round trip through torch.save / weights_only load, mid-run, continues bit-identically
    pc = _params()
    opt_c = _run([factory(), Adam(), LR(0.01)], 3, pc)
    sd = roundtrip(opt_c.state_dict())
    pd = [p.detach().clone().requires_grad_() for p in pc]
    _run([factory(), Adam(), LR(0.01)], 3, pd, state_dict=sd)
    for _ in range(3):
        opt_c.step(_no_backward_closure(_smooth, pc))
    assert all(torch.equal(a, b) for a, b in zip(pa, pd))
    assert all(torch.equal(a, b) for a, b in zip(pa, pc))


def test_different_seeds_differ_and_generator_survives_reset():
    pa, pb = _params(), _params()
    _run([SPSA(seed=0), LR(0.01)], 2, pa)
    _run([SPSA(seed=1), LR(0.01)], 2, pb)
    assert not all(torch.equal(a, b) for a, b in zip(pa, pb))
    module = SPSA(seed=0)
    _run([module, LR(0.01)], 1, _params())
    gen = module.global_state["generator"]
    module.reset()
    assert module.global_state["generator"] is gen


# --------------------------------------------------------------------------------------------------
# MeZO and ForwardGradient
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distribution", ["rademacher", "uniform", "gaussian"])
def test_mezo_equals_randomized_fdm_with_same_directions(distribution):
    """Catalog check: MeZO's directions are regenerated bitwise from seed 1e6·t + i; fed the same directions,
    RandomizedFDM gives the same estimate."""
    params = _params()
    mezo = MeZO(h=1e-2, n_samples=3, distribution=distribution, target="grad")
    for step in range(3):
        var = Var(params=params, closure=_no_backward_closure(_smooth, params), model=None, current_step=step)
        mezo.step(var)
        dirs = [mezo.direction(params, i) for i in range(3)]
        for i, d in enumerate(dirs):
            assert all(torch.equal(a, b) for a, b in zip(d, mezo.direction(params, i)))  # bitwise regenerated
            gen = torch.Generator().manual_seed(1_000_000 * step + i)
            variance = 1e-4 if distribution == "uniform" else 1e-2  # U(−h√3, h√3) has variance h²
            ref = TensorList(params).sample_like(distribution, variance=variance, generator=gen)
            assert all(torch.equal(a, b) for a, b in zip(d, ref))
        rfdm = RandomizedFDM(h=1e-2, n_samples=3, formula="central2", target="grad")
        for j, p in enumerate(params):
            rfdm.state[p]["perturbations"] = [d[j] for d in dirs]
        expected, _, _ = rfdm.approximate(var.closure, params, None)
        assert all(torch.equal(a, b) for a, b in zip(var.grad, expected))


def test_mezo_steps_use_new_directions():
    params = _params(((20,),))
    mezo = MeZO()
    mezo.pre_step(Var(params=params, closure=None, model=None, current_step=0))
    d0 = mezo.direction(params, 0)[0]
    mezo.pre_step(Var(params=params, closure=None, model=None, current_step=1))
    assert not torch.equal(d0, mezo.direction(params, 0)[0])
    assert not torch.equal(mezo.direction(params, 0)[0], mezo.direction(params, 1)[0])


def test_forward_gradient_autograd_is_exact_per_sample():
    """Catalog check: with jvp_method='autograd' each sample equals u uᵀ∇f to machine precision."""
    params = _params()
    g = _flat(_autograd(_smooth, params))
    for n_samples in (1, 4):
        module = ForwardGradient(n_samples=n_samples, seed=0, target="grad")
        est, var = _estimate(module, _smooth, params)
        us = [_flat(d) for d in _stored_directions(module, params)]
        expected = sum(u * (u @ g) for u in us) / n_samples
        torch.testing.assert_close(_flat(est), expected, rtol=1e-12, atol=1e-12)
        assert torch.equal(var.loss, _smooth(params).detach())


@pytest.mark.parametrize("method", ["forward", "central"])
def test_forward_gradient_finite_differences(method):
    params = _params()
    g = _flat(_autograd(_smooth, params))
    module = ForwardGradient(n_samples=2, jvp_method=method, h=1e-5, seed=0, target="grad")
    est, _ = _estimate(module, _smooth, params)
    us = [_flat(d) for d in _stored_directions(module, params)]
    expected = sum(u * (u @ g) for u in us) / 2
    tol = 1e-4 if method == "forward" else 1e-8
    torch.testing.assert_close(_flat(est), expected, rtol=tol, atol=tol)


# --------------------------------------------------------------------------------------------------
# optimisation without backward
# --------------------------------------------------------------------------------------------------
def _rosenbrock(ps):
    x = ps[0]
    return ((1 - x[:-1]) ** 2).sum() + 10 * ((x[1:] - x[:-1] ** 2) ** 2).sum()


def test_fdm_adam_matches_autograd_adam_without_backward():
    """FDM + Adam on a closure that never calls backward follows Adam with true gradients (central4 differences are
    exact on this quartic up to rounding) and reaches the minimum."""
    x0 = torch.tensor([-1.2, 1.0, 0.5], dtype=torch.float64)
    pa, pb = [x0.clone().requires_grad_()], [x0.clone().requires_grad_()]
    opt_a = tz.Modular(pa, FDM(h=1e-2, formula="central4"), Adam(), LR(0.05))
    opt_b = tz.Modular(pb, Adam(), LR(0.05))
    for _ in range(300):
        opt_a.step(_no_backward_closure(_rosenbrock, pa))
        opt_b.step(make_closure(opt_b, pb, _rosenbrock))
    torch.testing.assert_close(pa[0], pb[0], rtol=1e-8, atol=1e-8)
    assert _rosenbrock(pa).item() < 1e-2


def test_fdm_lbfgs_strong_wolfe_without_backward():
    lbfgs = pytest.importorskip("torchzero.modules.quasi_newton.lbfgs")
    strong_wolfe = pytest.importorskip("torchzero.modules.line_search.strong_wolfe")
    params = [torch.tensor([-1.2, 1.0, 0.5, -0.3], dtype=torch.float64, requires_grad=True)]
    opt = tz.Modular(params, FDM(h=1e-4), lbfgs.LBFGS(), strong_wolfe.StrongWolfe())
    for _ in range(60):
        opt.step(_no_backward_closure(_rosenbrock, params))
    torch.testing.assert_close(params[0].detach(), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-5)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in params)


def test_spsa_adam_without_backward():
    f, x, _, x_star = _quadratic(n=10, seed=3)
    params = [x.clone().requires_grad_()]
    f_star = f([x_star]).item()
    opt = tz.Modular(params, SPSA(h=1e-3, n_samples=2, seed=0), Adam(), LR(0.05))
    f0 = f(params).item()
    for _ in range(500):
        opt.step(_no_backward_closure(f, params))
    assert f(params).item() - f_star < 1e-3 * (f0 - f_star)



# --------------------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, exc", [
    (lambda: FDM(h=0), ValueError),
    (lambda: FDM(h=-1e-3), ValueError),
    (lambda: FDM(formula="central6"), ValueError),
    (lambda: RandomizedFDM(n_samples=0), ValueError),
    (lambda: RandomizedFDM(n_samples=1.5), TypeError),
    (lambda: RandomizedFDM(distribution="cauchy"), ValueError),
    (lambda: RandomizedFDM(seed="0"), TypeError),
    (lambda: RandomizedFDM(pre_generate="yes"), TypeError),
    (lambda: SPSA(h=float("nan")), ValueError),
    (lambda: RDSA(target="params"), ValueError),
    (lambda: GaussianSmoothing(n_samples=-1), ValueError),
    (lambda: MeZO(formula="x"), ValueError),
    (lambda: ForwardGradient(jvp_method="reverse"), ValueError),
    (lambda: ForwardGradient(h=0), ValueError),
])
def test_invalid_arguments(make, exc):
    with pytest.raises(exc) as info:
        make()
    assert any(name in str(info.value) for name in
               ("FDM", "RandomizedFDM", "SPSA", "RDSA", "GaussianSmoothing", "MeZO", "ForwardGradient"))


def test_signatures_match_catalog():
    import inspect
    sig = lambda cls: [(p.name, p.default) for p in inspect.signature(cls).parameters.values()]
    assert sig(FDM) == [("h", 0.001), ("formula", "central"), ("target", "closure")]
    rfdm = [("h", 0.001), ("n_samples", 1), ("formula", "central"), ("distribution", "rademacher"),
            ("pre_generate", True), ("seed", None), ("target", "closure")]
    assert sig(RandomizedFDM) == rfdm and sig(SPSA) == rfdm
    assert sig(RDSA) == [("h", 0.001), ("n_samples", 1), ("formula", "central2"), ("distribution", "gaussian"),
                         ("pre_generate", True), ("target", "closure"), ("seed", None)]
    assert sig(GaussianSmoothing) == [("h", 0.01), ("n_samples", 100), ("formula", "forward2"),
                                      ("distribution", "gaussian"), ("pre_generate", True), ("target", "closure"),
                                      ("seed", None)]
    assert sig(MeZO) == [("h", 0.001), ("n_samples", 1), ("formula", "central2"), ("distribution", "rademacher"),
                         ("target", "closure")]
    assert sig(ForwardGradient) == [("n_samples", 1), ("distribution", "gaussian"), ("pre_generate", True),
                                    ("jvp_method", "autograd"), ("h", 0.001), ("target", "closure"), ("seed", None)]
    assert sig(GradApproximator) == [("defaults", None), ("target", "closure")]
