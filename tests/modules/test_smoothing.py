"""LaplacianSmoothing against a dense solve with the explicit circulant Laplacian; GradientSampling against a slow loop
of the aggregation rules over the stored draws; the catalog checks; the shared sweep."""
from __future__ import annotations

import math

import pytest
import torch
from sweep import (
    Objective,
    assert_all_close,
    assert_all_equal,
    check_module,
    clone_params,
    make_closure,
    make_params,
    roundtrip,
    snapshot,
)

import torchzero as tz
from torchzero.core import Module, Var
from torchzero.modules.smoothing.gradient_sampling import GradientSampling
from torchzero.modules.smoothing.laplacian import LaplacianSmoothing, laplacian_denominator
from torchzero.modules.termination.termination import TerminateAfterNSteps, TerminateByGradientNorm, TerminateNever
from torchzero.utils import TensorList


def _step_update(module: Module, updates: list[torch.Tensor]) -> list[torch.Tensor]:
    """One step of ``module`` on a Var whose gradient and update are ``updates``; returns the new update."""
    params = [torch.zeros_like(u) for u in updates]
    var = Var(params=params, closure=None, model=None, current_step=0)
    var.grad = [u.clone() for u in updates]
    var.update = [u.clone() for u in updates]
    return module.step(var).update


# ===============================================================================================================
# LaplacianSmoothing
# ===============================================================================================================
def _dense_laplacian_solve(u: torch.Tensor, sigma: float) -> torch.Tensor:
    """Solves (I − σL) y = u with L the explicit n × n periodic Laplacian (stencil [1, −2, 1], wrap-around)."""
    n = u.numel()
    L = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        L[i, i] -= 2
        L[i, (i - 1) % n] += 1
        L[i, (i + 1) % n] += 1
    A = torch.eye(n, dtype=torch.float64) - sigma * L
    return torch.linalg.solve(A, u.reshape(-1).to(torch.float64)).view_as(u)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16, 33])
@pytest.mark.parametrize("sigma", [0.0, 0.3, 1.0, 5.0])
def test_laplacian_global_matches_dense_solve(n, sigma):
    u = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    (y,) = _step_update(LaplacianSmoothing(sigma, layerwise=False), [u])
    torch.testing.assert_close(y, _dense_laplacian_solve(u, sigma), rtol=1e-12, atol=1e-12)


def test_laplacian_layerwise_matches_dense_solve_per_tensor():
    g = torch.Generator().manual_seed(0)
    shapes = [(), (3,), (4,), (5,), (2, 3), (3, 1, 4), (1, 2, 1, 3)]
    us = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    ys = _step_update(LaplacianSmoothing(0.7), us)
    for u, y in zip(us, ys):
        expected = u if u.numel() <= 4 else _dense_laplacian_solve(u, 0.7)  # row-major flattening
        assert y.shape == u.shape
        torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)

    ys = _step_update(LaplacianSmoothing(0.7, min_numel=0), us)
    for u, y in zip(us, ys):
        torch.testing.assert_close(y, _dense_laplacian_solve(u, 0.7), rtol=1e-12, atol=1e-12)


def test_laplacian_global_is_over_the_concatenation():
    g = torch.Generator().manual_seed(1)
    us = [torch.randn(s, generator=g, dtype=torch.float64) for s in [(2, 3), (), (4,)]]
    ys = _step_update(LaplacianSmoothing(0.4, layerwise=False), us)
    expected = _dense_laplacian_solve(torch.cat([u.reshape(-1) for u in us]), 0.4)
    torch.testing.assert_close(torch.cat([y.reshape(-1) for y in ys]), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("layerwise", [True, False])
def test_laplacian_catalog_check(dtype, tol, layerwise):
    # (1+2σ)yᵢ − σ(yᵢ₋₁ + yᵢ₊₁) = uᵢ cyclically, and Σy = Σu
    sigma = 1.5
    u = torch.randn(50, generator=torch.Generator().manual_seed(2), dtype=dtype)
    (y,) = _step_update(LaplacianSmoothing(sigma, layerwise=layerwise), [u])
    residual = (1 + 2 * sigma) * y - sigma * (torch.roll(y, 1) + torch.roll(y, -1)) - u
    assert residual.abs().max() <= max(1e-6, tol)
    assert abs(float(y.sum() - u.sum())) <= 1e-6 * max(1.0, float(u.abs().sum()))
    assert y.dtype == dtype


def test_laplacian_denominator_closed_form_equals_fft_formula():
    for n in (3, 8, 21):
        v = torch.zeros(n, dtype=torch.float64)
        v[0], v[1], v[-1] = -2, 1, 1
        from_fft = 1 - 0.8 * torch.fft.fft(v)
        torch.testing.assert_close(laplacian_denominator(n, 0.8, torch.float64, "cpu"), from_fft.real[: n // 2 + 1],
                                   rtol=1e-14, atol=1e-14)
        assert from_fft.imag.abs().max() < 1e-14


def test_laplacian_denominator_cached_with_first_sigma():
    p = torch.zeros(10)
    q = torch.zeros(3)
    module = LaplacianSmoothing(1.0, min_numel=2)
    u = [torch.randn(10, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    params = [p.double(), q.double()]

    def run():
        var = Var(params=params, closure=None, model=None, current_step=0)
        var.update = [t.clone() for t in u]
        return module.step(var).update

    first = run()
    assert set(module.state[params[0]]) == {"denominator"} and module.state[params[0]]["denominator"].shape == (6,)
    module.set_param_groups([{"params": [params[0]], "sigma": 3.0}])
    assert_all_equal(run(), first, "cached denominator")  # built with the sigma of the first use
    module.reset()
    second = run()
    torch.testing.assert_close(second[0], _dense_laplacian_solve(u[0], 3.0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(second[1], _dense_laplacian_solve(u[1], 1.0), rtol=1e-12, atol=1e-12)

    glob = LaplacianSmoothing(1.0, layerwise=False)
    _step_update(glob, u)
    assert glob.global_state["full_denominator"].shape == (13 // 2 + 1,)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_laplacian_half_precision(dtype):
    u = torch.randn(4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (y,) = _step_update(LaplacianSmoothing(0.5), [u.to(dtype)])
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), _dense_laplacian_solve(u, 0.5), rtol=2e-2, atol=2e-2)


def test_laplacian_does_not_alias_input():
    u = torch.randn(3, dtype=torch.float64)
    var = Var(params=[torch.zeros(3)], closure=None, model=None, current_step=0)
    var.grad = [u]
    (y,) = LaplacianSmoothing().step(var).update  # small tensor: passed through unchanged, but as a copy
    assert torch.equal(y, u) and y is not u and y.data_ptr() != u.data_ptr()


LAPLACIAN_SWEEP = {
    "default": lambda: [LaplacianSmoothing(), tz.m.LR(0.01)],
    "min_numel_0": lambda: [LaplacianSmoothing(2.0, min_numel=0), tz.m.LR(0.01)],
    "global": lambda: [LaplacianSmoothing(0.5, layerwise=False), tz.m.LR(0.01)],
    "grad_target": lambda: [LaplacianSmoothing(1.0, min_numel=1, target="grad"), tz.m.HeavyBall(0.9), tz.m.LR(0.01)],
    "after_adam": lambda: [tz.m.Adam(), LaplacianSmoothing(1.0, min_numel=0), tz.m.LR(0.01)],
}


@pytest.mark.parametrize("name", list(LAPLACIAN_SWEEP))
def test_laplacian_sweep(name):
    check_module(LAPLACIAN_SWEEP[name])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(LAPLACIAN_SWEEP))
def test_laplacian_sweep_cuda(name):
    check_module(LAPLACIAN_SWEEP[name], device="cuda")


@pytest.mark.parametrize("make, exc", [
    (lambda: LaplacianSmoothing(-1.0), ValueError),
    (lambda: LaplacianSmoothing(min_numel=-1), ValueError),
    (lambda: LaplacianSmoothing(min_numel=2.5), TypeError),
    (lambda: LaplacianSmoothing(layerwise="yes"), TypeError),
    (lambda: LaplacianSmoothing(target="nope"), ValueError),
])
def test_laplacian_invalid_arguments(make, exc):
    with pytest.raises(exc, match="LaplacianSmoothing"):
        make()


# ===============================================================================================================
# GradientSampling
# ===============================================================================================================
def _value_and_grad(f, point: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
    pt = [t.detach().clone().requires_grad_() for t in point]
    loss = f(pt)
    grads = torch.autograd.grad(loss, pt)
    return float(loss.detach()), [g.detach() for g in grads]


def reference_aggregate(f, x: list[torch.Tensor], draws: list[list[torch.Tensor]], sigma: float, aggregate: str,
                        include_x0: bool) -> tuple[float, list[torch.Tensor]]:
    """A plain loop of GradientSampling's rules: evaluate every point, skip non-finite losses, aggregate."""
    points = ([x] if include_x0 else []) + [[xi + sigma * zi for xi, zi in zip(x, z)] for z in draws]
    evals = []
    for point in points:
        loss, grad = _value_and_grad(f, point)
        if math.isfinite(loss):
            evals.append((loss, grad))
    if not evals:
        return math.inf, [torch.full_like(xi, math.inf) for xi in x]

    if aggregate == "mean":
        loss = sum(e[0] for e in evals) / len(evals)
        grad = [sum(e[1][i] for e in evals) / len(evals) for i in range(len(x))]
        return loss, grad
    if aggregate in ("min", "max"):
        pick = min if aggregate == "min" else max
        loss = pick(e[0] for e in evals)
        grad = []
        for i in range(len(x)):
            first = evals[0][1][i].reshape(-1)
            out = torch.empty_like(first)
            for j in range(first.numel()):  # element by element
                magnitude = pick(abs(float(e[1][i].reshape(-1)[j])) for e in evals)
                out[j] = math.copysign(magnitude, float(first[j]))
            grad.append(out.view_as(x[i]))
        return loss, grad
    if aggregate == "min-norm":
        norms = [math.sqrt(sum(float((g**2).sum()) for g in e[1])) for e in evals]
        best = min(range(len(evals)), key=lambda k: (norms[k], k))
        return evals[best]
    if aggregate == "min-value":
        best = min(range(len(evals)), key=lambda k: (evals[k][0], k))
        return evals[best]
    raise ValueError(aggregate)


NAN_FROM, NEG_INF_FROM = 1.0, 1.15


def nonsmooth(params: list[torch.Tensor]) -> torch.Tensor:
    """A nonsmooth objective that is NaN, then −inf, on part of the space (so some draws are skipped)."""
    total = sum((p - 0.3).abs().sum() + 0.5 * (p**2).sum() for p in params)
    v = float(params[0].detach().reshape(-1)[0])
    if v > NEG_INF_FROM:
        total = total + float("-inf")
    elif v > NAN_FROM:
        total = total * float("nan")
    return total


AGGREGATES = ["mean", "min", "max", "min-norm", "min-value"]
SHAPES = [(), (3,), (2, 2)]


@pytest.mark.parametrize("aggregate", AGGREGATES)
@pytest.mark.parametrize("include_x0", [True, False])
def test_gradient_sampling_matches_slow_loop(aggregate, include_x0):
    params = make_params(torch.float64, SHAPES, seed=3)
    x0 = [torch.tensor(0.9, dtype=torch.float64), *[p.detach() for p in params[1:]]]
    with torch.no_grad():
        params[0].copy_(x0[0])
    sigma = 0.4
    opt = tz.Modular(params, GradientSampling(sigma=sigma, n=8, aggregate=aggregate, include_x0=include_x0, seed=5))
    closure = make_closure(opt, params, nonsmooth)
    module = opt.modules[0]
    n_nan = n_neg_inf = 0
    for _ in range(4):
        x = snapshot(params)
        opt.step(closure)
        draws = module.global_state["perts"]
        assert len(draws) == 8 - include_x0
        _, expected = reference_aggregate(nonsmooth, x, draws, sigma, aggregate, include_x0)
        update = [a - b for a, b in zip(x, snapshot(params))]
        assert_all_close(update, expected, rtol=1e-12, atol=1e-12, msg=aggregate)
        values = [float(x[0]) + sigma * float(z[0]) for z in draws]
        n_nan += sum(NAN_FROM < v <= NEG_INF_FROM for v in values)
        n_neg_inf += sum(v > NEG_INF_FROM for v in values)
    assert n_nan > 0 and n_neg_inf > 0, "the test should exercise non-finite evaluations"


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_gradient_sampling_draws_per_evaluation_match_slow_loop(aggregate):
    # pre_generate=False: every evaluation draws from the seeded generator, in order
    params = make_params(torch.float64, SHAPES, seed=4)
    opt = tz.Modular(params, GradientSampling(sigma=0.3, n=5, aggregate=aggregate, pre_generate=False, seed=11,
                                              distribution="uniform"))
    closure = make_closure(opt, params, nonsmooth)
    generator = torch.Generator().manual_seed(11)
    for _ in range(3):
        x = snapshot(params)
        draws = [TensorList(x).sample_like("uniform", generator=generator) for _ in range(4)]
        opt.step(closure)
        assert "perts" not in opt.modules[0].global_state
        _, expected = reference_aggregate(nonsmooth, x, draws, 0.3, aggregate, True)
        assert_all_close([a - b for a, b in zip(x, snapshot(params))], expected, rtol=1e-12, atol=1e-12)


def test_gradient_sampling_catalog_check():
    # f = ½‖x‖², n=5, sigma=0.5, 'mean': the update is x + 0.5·(z₁+…+z₄)/5
    params = make_params(torch.float64, SHAPES, seed=0)
    opt = tz.Modular(params, GradientSampling(n=5, sigma=0.5, aggregate="mean", seed=0))
    f = lambda p: 0.5 * sum((t**2).sum() for t in p)
    x = snapshot(params)
    opt.step(make_closure(opt, params, f))
    z = opt.modules[0].global_state["perts"]
    assert len(z) == 4
    expected = [xi + 0.5 * sum(zk[i] for zk in z) / 5 for i, xi in enumerate(x)]
    assert_all_close([a - b for a, b in zip(x, snapshot(params))], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_gradient_sampling_reported_loss(aggregate):
    params = make_params(torch.float64, SHAPES, seed=6)
    module = GradientSampling(sigma=0.5, n=6, aggregate=aggregate, seed=1)
    opt = tz.Modular(params, module)
    closure = make_closure(opt, params, nonsmooth)
    x = snapshot(params)
    var = Var(params=params, closure=closure, model=None, current_step=0, modular=opt)
    var = module.step(var)
    expected_loss, expected_grad = reference_aggregate(nonsmooth, x, module.global_state["perts"], 0.5, aggregate, True)
    assert float(var.loss_approx) == pytest.approx(expected_loss, rel=1e-12)
    assert_all_close(var.update, expected_grad, rtol=1e-12, atol=1e-12)
    assert float(var.loss.detach()) == pytest.approx(float(nonsmooth(x)), rel=1e-14)  # the true loss at x is kept
    assert_all_equal(snapshot(params), x, "parameters restored")


def test_gradient_sampling_no_finite_evaluation():
    params = make_params(torch.float64, SHAPES, seed=0)
    module = GradientSampling(sigma=0.1, n=4, seed=0)
    def nan_closure(backward=True):
        loss = sum(t.sum() for t in params) * float("nan")
        if backward:
            for p in params:
                p.grad = None
            loss.backward()
        return loss

    var = module.step(Var(params=params, closure=nan_closure, model=None, current_step=0))
    assert math.isinf(float(var.loss_approx)) and float(var.loss_approx) > 0
    assert all(bool(torch.isposinf(u).all()) for u in var.update)


@pytest.mark.parametrize("distribution", ["normal", "gaussian", "uniform", "sphere", "rademacher"])
def test_gradient_sampling_distributions(distribution):
    params = make_params(torch.float64, [(200,), (50, 4)], seed=0)
    module = GradientSampling(n=4, distribution=distribution, seed=0)
    opt = tz.Modular(params, module)
    opt.step(make_closure(opt, params, lambda p: sum((t**2).sum() for t in p)))
    draws = [TensorList(z) for z in module.global_state["perts"]]
    assert len(draws) == 3
    for z in draws:
        assert [t.shape for t in z] == [p.shape for p in params] and all(t.dtype == torch.float64 for t in z)
        flat = z.to_vec()
        if distribution == "rademacher":
            assert set(flat.unique().tolist()) == {-1.0, 1.0}
        elif distribution == "uniform":
            assert flat.min() >= -1 and flat.max() <= 1 and flat.abs().max() > 0.9
        elif distribution == "sphere":
            assert float(flat.norm()) == pytest.approx(1.0, rel=1e-12)
        else:
            assert abs(float(flat.mean())) < 0.15 and float(flat.std()) == pytest.approx(1.0, abs=0.15)
    assert not torch.equal(draws[0].to_vec(), draws[1].to_vec())


def test_gradient_sampling_seed_reproducible():
    def run(seed):
        params = make_params(torch.float64, SHAPES, seed=0)
        opt = tz.Modular(params, GradientSampling(sigma=0.5, n=4, fixed=False, seed=seed), tz.m.LR(0.1))
        closure = make_closure(opt, params, Objective(params))
        for _ in range(3):
            opt.step(closure)
        return snapshot(params)

    assert_all_equal(run(3), run(3), "same seed")
    assert any(not torch.equal(a, b) for a, b in zip(run(3), run(4)))


@pytest.mark.parametrize("options", [
    dict(),
    dict(fixed=False),
    dict(pre_generate=False),
    dict(sigma_strategy="value", termination=True),
])
def test_gradient_sampling_state_dict_round_trip(options):
    def make(params):
        kw = dict(options)
        if kw.pop("termination", False):
            kw["termination"] = TerminateAfterNSteps(1)
        return tz.Modular(params, GradientSampling(sigma=0.5, n=4, seed=7, **kw), tz.m.HeavyBall(0.5), tz.m.LR(0.1))

    x0 = make_params(torch.float64, SHAPES, seed=1)
    f = Objective(x0)
    pa = clone_params(x0)
    a = make(pa)
    closure_a = make_closure(a, pa, f)
    for _ in range(2):
        a.step(closure_a)
    pb = clone_params(snapshot(pa))
    b = make(pb)
    b.load_state_dict(roundtrip(a.state_dict()))
    assert isinstance(b.modules[0].global_state["generator"], torch.Generator)
    closure_b = make_closure(b, pb, f)
    for _ in range(3):
        a.step(closure_a)
        b.step(closure_b)
        assert_all_equal(pa, pb, "state_dict round trip")


# ---------------------------------------------------------------------------------------------------------------
# number of evaluations
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, modules, per_step", [
    (dict(n=5), None, 5),
    (dict(n=5, include_x0=False), None, 5),
    (dict(n=5, sigma_strategy="value"), None, 5),
    (dict(n=5, include_x0=False, sigma_strategy="value"), None, 6),
    (dict(n=5, include_x0=False, sigma_strategy="grad-norm"), None, 6),
    (dict(n=5, pre_generate=False, fixed=False), None, 5),
    (dict(n=1), None, 1),
    (dict(n=5, termination=TerminateByGradientNorm(0.0)), None, 5),  # the criterion's gradient is shared
    (dict(n=5), "lr", 5),
    (dict(n=4, include_x0=False), "heavyball", 4),
])
def test_gradient_sampling_num_evaluations(kwargs, modules, per_step):
    params = make_params(torch.float64, SHAPES, seed=0)
    children = {None: None, "lr": [tz.m.LR(0.1)], "heavyball": [tz.m.HeavyBall(0.9), tz.m.LR(0.1)]}[modules]
    opt = tz.Modular(params, GradientSampling(children, sigma=0.1, seed=0, **kwargs))
    closure = make_closure(opt, params, Objective(params))
    for k in range(1, 4):
        opt.step(closure)
        assert opt.num_evaluations == k * per_step


# ---------------------------------------------------------------------------------------------------------------
# modules, termination, sigma strategies
# ---------------------------------------------------------------------------------------------------------------
class ProbeAt(Module):
    """Evaluates the closure at x + d for each shift d (loss only, then with backward), records the results,
    restores x and passes var on (so that the next module evaluates at x)."""

    def __init__(self, shifts: list[float]):
        super().__init__()
        self.shifts = shifts
        self.records: list[tuple[float, float, list[torch.Tensor]]] = []

    def step(self, var):
        for d in self.shifts:
            with torch.no_grad():
                torch._foreach_add_(var.params, d)
            loss_only = float(var.closure(False))
            loss = float(var.closure())
            grad = [p.grad.clone() for p in var.params]
            with torch.no_grad():
                torch._foreach_sub_(var.params, d)
            self.records.append((loss_only, loss, grad))
        return var


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_gradient_sampling_modules_evaluate_where_the_parameters_are(aggregate):
    params = make_params(torch.float64, SHAPES, seed=2)
    shifts = [0.25, -0.1]
    probe = ProbeAt(shifts)
    module = GradientSampling([probe, tz.m.LR(1.0)], sigma=0.3, n=5, aggregate=aggregate, seed=2)
    opt = tz.Modular(params, module)
    closure = make_closure(opt, params, nonsmooth)
    for _ in range(2):
        x = snapshot(params)
        opt.step(closure)
        draws = module.global_state["perts"]
        for d, (loss_only, loss, grad) in zip(shifts, probe.records[-len(shifts):]):
            exp_loss, exp_grad = reference_aggregate(nonsmooth, [t + d for t in x], draws, 0.3, aggregate, True)
            assert loss == pytest.approx(exp_loss, rel=1e-12)
            assert loss_only == pytest.approx(exp_loss, rel=1e-12)  # the same function with and without backward
            assert_all_close(grad, exp_grad, rtol=1e-12, atol=1e-12)
        # the update (LR(1) of G) is evaluated back at x
        _, exp_update = reference_aggregate(nonsmooth, x, draws, 0.3, aggregate, True)
        assert_all_close([a - b for a, b in zip(x, snapshot(params))], exp_update, rtol=1e-12, atol=1e-12)


def test_gradient_sampling_with_modules_equals_without():
    def run(with_modules):
        params = make_params(torch.float64, SHAPES, seed=0)
        if with_modules:
            opt = tz.Modular(params, GradientSampling([tz.m.HeavyBall(0.9), tz.m.LR(0.1)], n=4, seed=1))
        else:
            opt = tz.Modular(params, GradientSampling(n=4, seed=1), tz.m.HeavyBall(0.9), tz.m.LR(0.1))
        closure = make_closure(opt, params, Objective(params))
        for _ in range(4):
            opt.step(closure)
        return snapshot(params)

    assert_all_close(run(True), run(False), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("reset_on_termination", [True, False])
def test_gradient_sampling_termination_decays_sigma(reset_on_termination):
    params = make_params(torch.float64, SHAPES, seed=0)
    module = GradientSampling(sigma=1.0, n=3, termination=TerminateAfterNSteps(2), decay=0.5,
                              reset_on_termination=reset_on_termination, seed=0)
    heavyball = tz.m.HeavyBall(0.9)
    opt = tz.Modular(params, module, heavyball, tz.m.LR(0.01))
    closure = make_closure(opt, params, Objective(params))
    sigmas, draws, momentum_cleared = [], [], []
    for _ in range(7):
        opt.step(closure)
        sigmas.append(module.state[params[0]]["sigma"])
        draws.append(module.global_state["perts"])
        momentum_cleared.append(len(heavyball.state) == 0)
    # the criterion fires at step 3; with the reset its counter restarts, so it fires again at step 6
    if reset_on_termination:
        assert sigmas == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
        assert momentum_cleared == [False, False, True, False, False, True, False]
    else:
        assert sigmas == [1.0, 1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125]
        assert not any(momentum_cleared)
    changed = [draws[k] is not draws[k - 1] for k in range(1, 7)]
    assert changed == [s != s_prev for s_prev, s in zip(sigmas[:-1], sigmas[1:])]  # redrawn exactly on decay
    assert "generator" in module.global_state


def test_gradient_sampling_reset_keeps_children_reset_and_own_state_on_termination():
    params = make_params(torch.float64, SHAPES, seed=0)
    inner = tz.m.HeavyBall(0.9)
    criterion = TerminateAfterNSteps(1)
    module = GradientSampling([inner, tz.m.LR(0.01)], sigma=1.0, n=3, termination=criterion, decay=0.5, seed=0)
    opt = tz.Modular(params, module)
    closure = make_closure(opt, params, Objective(params))
    opt.step(closure)
    assert len(inner.state) > 0 and module.state[params[0]]["sigma"] == 1.0
    opt.step(closure)  # fires: children reset after the step, own sigma kept
    assert len(inner.state) == 0 and criterion.global_state == {}
    assert module.state[params[0]]["sigma"] == 0.5 and "perts" in module.global_state
    module.reset()  # a plain reset clears everything but the generator
    assert len(module.state) == 0 and set(module.global_state) == {"generator"}


def _sigma_strategy_reference(f, x, draws, sigma, strategy, target, nplus, nminus):
    f0, g0 = _value_and_grad(f, x)
    g0_norm = math.sqrt(sum(float((g**2).sum()) for g in g0))
    n_finite, n_good = int(math.isfinite(f0)), 0
    for z in draws:
        loss, grad = _value_and_grad(f, [xi + sigma * zi for xi, zi in zip(x, z)])
        if not math.isfinite(loss):
            continue
        n_finite += 1
        norm = math.sqrt(sum(float((g**2).sum()) for g in grad))
        n_good += (loss < f0) if strategy == "value" else (norm < g0_norm)
    if isinstance(target, float):
        target = int(max(1, n_finite * target))
    return sigma * (nplus if n_good >= target else nminus), n_good


@pytest.mark.parametrize("strategy", ["value", "grad-norm"])
@pytest.mark.parametrize("target", [0.2, 0.6, 2, 5])
def test_gradient_sampling_sigma_strategy(strategy, target):
    params = make_params(torch.float64, SHAPES, seed=8)
    module = GradientSampling(sigma=0.5, n=8, sigma_strategy=strategy, sigma_target=target, sigma_nplus=1.5,
                              sigma_nminus=0.25, seed=3)
    opt = tz.Modular(params, module, tz.m.LR(0.05))
    closure = make_closure(opt, params, nonsmooth)
    sigma, increased = 0.5, []
    for _ in range(6):
        x = snapshot(params)
        opt.step(closure)
        sigma_ref, n_good = _sigma_strategy_reference(nonsmooth, x, module.global_state["perts"], sigma, strategy,
                                                      target, 1.5, 0.25)
        increased.append(sigma_ref > sigma)
        sigma = module.state[params[0]]["sigma"]
        assert sigma == pytest.approx(sigma_ref, rel=1e-15)
        assert all(module.state[p]["sigma"] == sigma for p in params)
    if target in (0.2, 2):
        assert set(increased) == {True, False}, "both branches of the strategy should be exercised"


@pytest.mark.parametrize("strategy", ["value", "grad-norm"])
@pytest.mark.parametrize("target, increases", [(0.4, True), (0.7, False), (2, True), (3, False), (0.1, True)])
def test_gradient_sampling_sigma_strategy_controlled_draws(strategy, target, increases):
    # x = 1, σ = 0.5, f = x²/2 (f and |f'| both grow with x): draws −1, −1 are good, +1, +1 are not, +3 is
    # non-finite (f is NaN above 2); so n_good = 2 and n_finite = 5 (x included): targets 0.4 → 2, 0.7 → 3, 0.1 → 1
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    module = GradientSampling(sigma=0.5, n=6, sigma_strategy=strategy, sigma_target=target, sigma_nplus=2.0,
                              sigma_nminus=0.25, seed=0)
    module.global_state["perts"] = [[torch.tensor([z], dtype=torch.float64)] for z in (-1.0, 1.0, 3.0, -1.0, 1.0)]
    opt = tz.Modular([x], module)

    def f(p):
        loss = 0.5 * (p[0] ** 2).sum()
        return loss * float("nan") if float(p[0].detach()) > 2 else loss

    opt.step(make_closure(opt, [x], f))
    assert module.state[x]["sigma"] == (1.0 if increases else 0.125)


def test_gradient_sampling_value_strategy_ties_are_not_good():
    # a flat objective: no draw has a loss strictly below f(x), so σ shrinks even with the smallest target
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    module = GradientSampling(sigma=0.5, n=4, sigma_strategy="value", sigma_target=1, seed=0)
    opt = tz.Modular([x], module)
    opt.step(make_closure(opt, [x], lambda p: (p[0] * 0).sum() + 1.0))
    assert module.state[x]["sigma"] == 0.5 * 0.6666666666666666


def test_gradient_sampling_per_parameter_sigma():
    params = make_params(torch.float64, [(3,), (2,)], seed=0)
    module = GradientSampling(sigma=0.5, n=3, seed=0).set_param_groups([{"params": [params[1]], "sigma": 2.0}])
    opt = tz.Modular(params, module)
    f = lambda p: 0.5 * sum((t**2).sum() for t in p)
    x = snapshot(params)
    opt.step(make_closure(opt, params, f))
    z = module.global_state["perts"]
    expected = [x[0] + 0.5 * (z[0][0] + z[1][0]) / 3, x[1] + 2.0 * (z[0][1] + z[1][1]) / 3]
    assert_all_close([a - b for a, b in zip(x, snapshot(params))], expected, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------------------------
# sweep and validation
# ---------------------------------------------------------------------------------------------------------------
GS_SWEEP = {
    "mean": lambda: [GradientSampling(sigma=0.05, n=4, seed=0), tz.m.LR(0.01)],
    "min_norm_sphere": lambda: [GradientSampling(sigma=0.05, n=3, aggregate="min-norm", distribution="sphere",
                                                 seed=0), tz.m.LR(0.01)],
    "max_rademacher_no_x0": lambda: [GradientSampling(sigma=0.05, n=3, aggregate="max", distribution="rademacher",
                                                      include_x0=False, seed=1), tz.m.LR(0.01)],
    "min_uniform_per_eval": lambda: [GradientSampling(sigma=0.05, n=3, aggregate="min", distribution="uniform",
                                                      pre_generate=False, seed=2), tz.m.LR(0.01)],
    "min_value_strategy": lambda: [GradientSampling(sigma=0.05, n=4, aggregate="min-value", sigma_strategy="value",
                                                    termination=TerminateAfterNSteps(2), seed=3), tz.m.LR(0.01)],
    "modules": lambda: [GradientSampling([tz.m.HeavyBall(0.5), tz.m.LR(0.01)], sigma=0.05, n=3, fixed=False,
                                         sigma_strategy="grad-norm", termination=[TerminateNever()], seed=4)],
}


@pytest.mark.parametrize("name", list(GS_SWEEP))
def test_gradient_sampling_sweep(name):
    # check_reset=False: reset() keeps the random generator (core convention), so a reset optimizer draws
    # differently from a fresh one
    check_module(GS_SWEEP[name], needs_closure=True, check_reset=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(GS_SWEEP))
def test_gradient_sampling_sweep_cuda(name):
    check_module(GS_SWEEP[name], needs_closure=True, check_reset=False, device="cuda")


def test_gradient_sampling_requires_closure():
    x = torch.zeros(3, requires_grad=True)
    x.grad = torch.ones(3)
    opt = tz.Modular([x], GradientSampling(n=3, seed=0))
    with pytest.raises(RuntimeError, match="GradientSampling requires a closure"):
        opt.step()
    assert "perts" not in opt.modules[0].global_state


@pytest.mark.parametrize("kwargs, exc", [
    (dict(sigma=0.0), ValueError),
    (dict(sigma=-1.0), ValueError),
    (dict(n=0), ValueError),
    (dict(n=2.0), TypeError),
    (dict(aggregate="median"), ValueError),
    (dict(distribution="cauchy"), ValueError),
    (dict(sigma_strategy="loss"), ValueError),
    (dict(decay=0.0), ValueError),
    (dict(sigma_nplus=-1.0), ValueError),
    (dict(sigma_nminus=0), ValueError),
    (dict(sigma_target=-1), ValueError),
    (dict(sigma_target=0.0), ValueError),
    (dict(sigma_target="a"), TypeError),
    (dict(seed=1.5), TypeError),
    (dict(termination=tz.m.LR(0.1)), TypeError),
])
def test_gradient_sampling_invalid_arguments(kwargs, exc):
    with pytest.raises(exc, match="GradientSampling|make_termination_criteria"):
        GradientSampling(**kwargs)


@pytest.mark.parametrize("aggregate", ["mean", "min", "max", "min-norm", "min-value"])
def test_gradient_sampling_with_a_closure_that_zeroes_gradients_in_place(aggregate):
    """Each evaluation's gradient is a fresh tensor: a closure with ``zero_grad(set_to_none=False)`` (which reuses
    the ``.grad`` tensors) gives the same trajectory (it used to overwrite the stored gradients of earlier draws)."""
    def run(set_to_none: bool) -> torch.Tensor:
        x = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
        opt = tz.Modular([x], GradientSampling(tz.m.LR(0.1), sigma=0.1, n=4, aggregate=aggregate, seed=0))

        def closure(backward=True):
            loss = (x**4).sum() + x.prod()
            if backward:
                opt.zero_grad(set_to_none=set_to_none)
                loss.backward()
            return loss

        for _ in range(3):
            opt.step(closure)
        return x.detach()

    assert torch.equal(run(True), run(False))
