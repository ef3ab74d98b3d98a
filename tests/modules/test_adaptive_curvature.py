"""Curvature-based and sharpness-aware modules: AdaHessian, SophiaH, ESGD, MatrixMomentum, SAM, ASAM, MSAM,
MSAMObjective.

Each is checked against a slow, plainly written implementation of the paper's algorithm (exact Hessians from
``torch.autograd.functional.hessian``, probes drawn from a generator seeded like the module's), the closed-form
expectations of the random estimators, the catalog's checks, and the shared sweep.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch
from sweep import Objective, assert_all_close, assert_all_equal, check_module, clone_params, make_params, snapshot

import torchzero as tz
from torchzero.core import Var
from torchzero.modules.adaptive.adahessian import AdaHessian, adahessian_average, hvp_probe_mean
from torchzero.modules.adaptive.esgd import ESGD
from torchzero.modules.adaptive.matrix_momentum import MatrixMomentum
from torchzero.modules.adaptive.msam import MSAM, MSAMObjective
from torchzero.modules.adaptive.sam import ASAM, SAM
from torchzero.modules.adaptive.sophia_h import SophiaH

# a 1-d, a matrix with an odd number of rows, a 3-d tensor (spatial averaging) and a scalar
SHAPES = [(3,), (5, 2), (2, 3, 2), ()]
N_STEPS = 30


# ------------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------------
def _closure(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor], f: Callable) -> Callable:
    def closure(backward: bool = True) -> torch.Tensor:
        loss = f(params)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss
    return closure


def _run(modules: Sequence[tz.core.Module], params: list[torch.Tensor], f: Callable, n: int = N_STEPS,
         groups: list[dict] | None = None) -> tuple[tz.Modular, list[list[torch.Tensor]]]:
    opt = tz.Modular(params if groups is None else groups, *modules)
    traj = []
    for _ in range(n):
        opt.step(_closure(opt, params, f))
        traj.append(snapshot(params))
    return opt, traj


def _output(module: tz.core.Module, params: list[torch.Tensor], f: Callable) -> list[torch.Tensor]:
    """The update one step of ``module`` produces (the parameters are not changed)."""
    var = Var(params=params, closure=lambda backward=True: _plain_closure(params, f, backward), model=None,
              current_step=0)
    return module.step(var).get_update()


def _plain_closure(params: Sequence[torch.Tensor], f: Callable, backward: bool) -> torch.Tensor:
    loss = f(params)
    if backward:
        for p in params:
            p.grad = None
        loss.backward()
    return loss


class Flat:
    """``f`` as a function of one flat vector, its exact gradient and Hessian, and the split back into tensors."""

    def __init__(self, f: Callable, shapes: Sequence[tuple[int, ...]]):
        self.f, self.shapes = f, list(shapes)
        self.sizes = [math.prod(s) for s in shapes]

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [c.reshape(s) for c, s in zip(torch.split(x, self.sizes), self.shapes)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(self.split(x))

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_()
        return torch.autograd.grad(self(x), x)[0]

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        return torch.autograd.functional.hessian(self, x.detach())


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _rademacher(shapes, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """One ±1 probe per parameter, in parameter order (as the modules draw them)."""
    return torch.cat([(torch.empty(s, dtype=dtype).bernoulli_(0.5, generator=gen) * 2 - 1).reshape(-1)
                      for s in shapes])


def _gaussian(shapes, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    return torch.cat([torch.randn(s, generator=gen, dtype=dtype).reshape(-1) for s in shapes])


def _problem(shapes=SHAPES, dtype=torch.float64, seed: int = 0) -> tuple[list[torch.Tensor], Objective, Flat]:
    params = make_params(dtype, shapes, seed=seed)
    f = Objective(params)
    return params, f, Flat(f, shapes)


# ------------------------------------------------------------------------------------------------------------------
# the shared sweep
# ------------------------------------------------------------------------------------------------------------------
SWEEP: dict[str, tuple[Callable, bool]] = {
    "AdaHessian": (lambda: [AdaHessian(seed=0), tz.m.LR(0.01)], True),
    "AdaHessian_blocks_forward": (lambda: [AdaHessian(block_size=1, n_samples=2, hvp_method="forward",
                                                      hessian_power=0.5, seed=1), tz.m.LR(0.01)], True),
    "AdaHessian_central_inner": (lambda: [AdaHessian(update_freq=2, hvp_method="central", seed=2,
                                                     inner=tz.m.EMA(0.5)), tz.m.LR(0.01)], True),
    "SophiaH": (lambda: [SophiaH(update_freq=2, seed=0), tz.m.LR(0.01)], True),
    "SophiaH_forward_samples": (lambda: [SophiaH(hvp_method="forward", n_samples=2, seed=3), tz.m.LR(0.01)], True),
    "ESGD": (lambda: [ESGD(update_freq=2, seed=0), tz.m.LR(0.01)], True),
    "ESGD_central_inner": (lambda: [ESGD(hvp_method="central", n_samples=2, seed=4, inner=tz.m.HeavyBall(0.5)),
                                    tz.m.LR(0.01)], True),
    "MatrixMomentum": (lambda: [MatrixMomentum(0.01, mu=0.01)], True),
    "MatrixMomentum_adaptive": (lambda: [MatrixMomentum(0.01, mu=0.01, adaptive=True)], True),
    "MatrixMomentum_adapt_freq_forward": (lambda: [MatrixMomentum(0.01, mu=0.01, hvp_method="forward",
                                                                  adaptive=True, adapt_freq=2)], True),
    "MatrixMomentum_central_tfm": (lambda: [MatrixMomentum(0.01, mu=0.01, hvp_method="central",
                                                           hvp_tfm=tz.m.ClipValue(1.0))], True),
    "SAM": (lambda: [SAM(), tz.m.LR(0.01)], True),
    "SAM_p3_then_adam": (lambda: [SAM(0.1, p=3), tz.m.Adam(), tz.m.LR(0.01)], True),
    "SAM_pinf": (lambda: [SAM(0.1, p=math.inf), tz.m.LR(0.01)], True),
    "ASAM": (lambda: [ASAM(), tz.m.LR(0.01)], True),
    "MSAM": (lambda: [MSAM(0.01)], False),
    "MSAM_nesterov_wd": (lambda: [MSAM(0.01, nesterov=True, weight_decay=0.01)], False),
    "MSAM_lerp": (lambda: [MSAM(0.01, lerp=True)], False),
    "MSAMObjective": (lambda: [MSAMObjective([tz.m.Adam(), tz.m.LR(0.01)])], False),
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    factory, needs_closure = SWEEP[name]
    # the seeded generator survives reset() (it continues its sequence), so a reset optimizer draws other probes
    # than a fresh one
    seeded = name.startswith(("AdaHessian", "SophiaH", "ESGD"))
    check_module(factory, needs_closure=needs_closure, check_reset=not seeded)


# a single-probe ESGD estimate can be close to 0 for some element; damping keeps arbitrary draws stable
@pytest.mark.parametrize("make", [lambda: AdaHessian(), lambda: SophiaH(), lambda: ESGD(damping=0.1)])
def test_sweep_global_rng(make) -> None:
    """Without a seed the probes come from the global RNG (not reproducible between optimizers)."""
    check_module(lambda: [make(), tz.m.LR(0.01)], needs_closure=True, deterministic=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_cuda(name: str) -> None:
    factory, needs_closure = SWEEP[name]
    check_module(factory, needs_closure=needs_closure, device="cuda")


@pytest.mark.parametrize("cls", [AdaHessian, SophiaH, ESGD, SAM, ASAM])
def test_requires_closure(cls) -> None:
    p = torch.ones(3, requires_grad=True)
    opt = tz.Modular([p], cls(), tz.m.LR(0.1))
    (p**2).sum().backward()
    with pytest.raises(RuntimeError, match=f"{cls.__name__} requires a closure"):
        opt.step()


def test_matrix_momentum_requires_closure() -> None:
    p = torch.ones(3, requires_grad=True)
    opt = tz.Modular([p], MatrixMomentum(0.1))
    (p**2).sum().backward()
    with pytest.raises(RuntimeError, match="MatrixMomentum requires a closure"):
        opt.step()


@pytest.mark.parametrize("make", [
    lambda: AdaHessian(beta1=1.0), lambda: AdaHessian(beta2=-0.1), lambda: AdaHessian(eps=-1),
    lambda: AdaHessian(block_size=0), lambda: AdaHessian(update_freq=0), lambda: AdaHessian(update_freq=1.5),
    lambda: AdaHessian(hessian_power=-1), lambda: AdaHessian(hvp_method="exact"), lambda: AdaHessian(fd_h=0),
    lambda: AdaHessian(n_samples=0), lambda: AdaHessian(seed=1.5), lambda: AdaHessian(averaging="yes"),
    lambda: SophiaH(beta1=1.0), lambda: SophiaH(update_freq=0), lambda: SophiaH(clip=0), lambda: SophiaH(eps=0),
    lambda: SophiaH(precond_scale=-1), lambda: SophiaH(hvp_method="nope"),
    lambda: ESGD(damping=-1), lambda: ESGD(update_freq=0), lambda: ESGD(n_samples=-2), lambda: ESGD(fd_h=-1e-3),
    lambda: MatrixMomentum(-0.1), lambda: MatrixMomentum(0.1, mu=-1), lambda: MatrixMomentum(0.1, h=0),
    lambda: MatrixMomentum(0.1, adapt_freq=0), lambda: MatrixMomentum(0.1, adaptive=1),
    lambda: MatrixMomentum(0.1, hvp_method="backward"),
    lambda: SAM(rho=-0.1), lambda: SAM(p=1), lambda: SAM(p=0.5), lambda: SAM(eps=-1), lambda: SAM(asam=None),
    lambda: ASAM(rho=-1), lambda: ASAM(p=1),
    lambda: MSAM(-0.1), lambda: MSAM(0.1, momentum=1.5), lambda: MSAM(0.1, rho=-1),
    lambda: MSAM(0.1, weight_decay=-1), lambda: MSAM(0.1, nesterov="no"),
    lambda: MSAMObjective(tz.m.LR(0.1), momentum=-0.5), lambda: MSAMObjective(tz.m.LR(0.1), lerp=None),
])
def test_invalid_arguments_fail_at_construction(make) -> None:
    with pytest.raises((ValueError, TypeError)):
        make()


def test_error_messages_name_the_class() -> None:
    with pytest.raises(ValueError, match="ASAM"):
        ASAM(rho=-1)
    with pytest.raises(ValueError, match="SophiaH"):
        SophiaH(beta2=2)


# ------------------------------------------------------------------------------------------------------------------
# Hutchinson estimators: closed-form expectations
# ------------------------------------------------------------------------------------------------------------------
def _dense_problem() -> tuple[list[torch.Tensor], Objective, torch.Tensor]:
    params, f, flat = _problem(shapes=[(4,), (2, 3)])
    return params, f, flat.hessian(_flat(params))


def _estimate(module, params, f, **kwargs) -> torch.Tensor:
    var = Var(params=params, closure=lambda backward=True: _plain_closure(params, f, backward), model=None,
              current_step=0)
    return _flat(hvp_probe_mean(module, var, **kwargs))


@pytest.mark.parametrize("distribution", ["rademacher", "normal"])
def test_hutchinson_mean_over_seeds_is_hessian_diagonal(distribution) -> None:
    params, f, H = _dense_problem()
    n = 1000
    est = torch.stack([_estimate(AdaHessian(), params, f, distribution=distribution, statistic="z*Hz",
                                 n_samples=1, hvp_method="autograd", h=1e-3, seed=s) for s in range(n)])
    diag = H.diagonal()
    # per-element variance of z_i (Hz)_i: sum_{j != i} H_ij^2, plus 2 H_ii^2 for Gaussian probes
    var = (H**2).sum(1) - diag**2 + (2 * diag**2 if distribution == "normal" else 0)
    se = (var / n).sqrt()
    assert ((est.mean(0) - diag).abs() <= 4.5 * se + 1e-12).all(), (est.mean(0), diag, se)
    # the estimate is not the mean of Hz (whose expectation is zero)
    assert (diag.abs() > 10 * se).any()


def test_equilibration_estimator_mean_is_diag_of_h_squared() -> None:
    params, f, H = _dense_problem()
    n = 1000
    est = torch.stack([_estimate(ESGD(), params, f, distribution="normal", statistic="Hz^2", n_samples=1,
                                 hvp_method="autograd", h=1e-3, seed=s) for s in range(n)])
    expected = (H**2).sum(1)  # E[(Hz)_i^2] = sum_j H_ij^2 = diag(H^2)
    # (Hz)_i is N(0, expected_i), so (Hz)_i^2 has variance 2 expected_i^2
    se = (2 * expected**2 / n).sqrt()
    assert ((est.mean(0) - expected).abs() <= 4.5 * se).all()


def test_n_samples_averages_the_products() -> None:
    """``n_samples`` probes average ``z ⊙ Hz`` (AdaHessian, SophiaH) and ``(Hz)²`` (ESGD): the reference averaged
    ``Hz`` before multiplying or squaring."""
    params, f, H = _dense_problem()
    shapes = [p.shape for p in params]
    for statistic, draw, dist in (("z*Hz", _rademacher, "rademacher"), ("z*Hz", _gaussian, "normal"),
                                  ("Hz^2", _gaussian, "normal")):
        got = _estimate(AdaHessian(), params, f, distribution=dist, statistic=statistic, n_samples=5,
                        hvp_method="autograd", h=1e-3, seed=11)
        gen = torch.Generator().manual_seed(11)
        zs = [draw(shapes, gen) for _ in range(5)]
        expected = sum(z * (H @ z) if statistic == "z*Hz" else (H @ z) ** 2 for z in zs) / 5
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [AdaHessian, SophiaH, ESGD])
def test_seeded_runs_are_reproducible(cls) -> None:
    x0, f, _ = _problem()
    runs = []
    for seed in (5, 5, 6):
        params = clone_params(x0)
        _run([cls(seed=seed, update_freq=1), tz.m.LR(0.01)], params, f, n=5)
        runs.append(snapshot(params))
    assert_all_equal(runs[0], runs[1], "same seed")
    assert any(not torch.equal(a, b) for a, b in zip(runs[0], runs[2])), "different seeds gave the same run"


@pytest.mark.parametrize("method,evals_per_step", [("autograd", 1), ("forward", 1 + 3), ("central", 1 + 2 * 3)])
def test_evaluations_per_step_and_released_graph(method, evals_per_step) -> None:
    params, f, _ = _problem()
    opt, _ = _run([AdaHessian(hvp_method=method, n_samples=3, seed=0), tz.m.LR(0.01)], params, f, n=4)
    assert opt.num_evaluations == 4 * evals_per_step
    # no autograd graph survives the step
    assert all(p.grad is None or not p.grad.requires_grad for p in params)


# ------------------------------------------------------------------------------------------------------------------
# AdaHessian
# ------------------------------------------------------------------------------------------------------------------
def _ref_average(D: torch.Tensor, averaging: bool, block_size: int | None) -> torch.Tensor:
    """AdaHessian's spatial averaging, with plain loops over rows and blocks."""
    if not averaging or D.ndim < 2 or D.numel() <= D.shape[0]:
        return D
    A, out = D.abs(), D.clone()
    if block_size is None:
        if D.ndim < 3:
            return D
        for i in range(D.shape[0]):
            for j in range(D.shape[1]):
                out[i, j] = A[i, j].sum() / A[i, j].numel()
        return out
    n = D.shape[0]
    n_blocks = n // block_size
    if n_blocks < 2:
        groups = [list(range(n))]
    else:
        groups = [list(range(b * block_size, (b + 1) * block_size)) for b in range(n_blocks)]
        if n_blocks * block_size < n:
            groups.append(list(range(n_blocks * block_size, n)))
    for rows in groups:
        mean = sum(A[r] for r in rows) / len(rows)
        for r in rows:
            out[r] = mean
    return out


def _ref_adahessian(flat: Flat, x0: torch.Tensor, lr: float, n: int, beta1=0.9, beta2=0.999, averaging=True,
                    block_size=None, update_freq=1, eps=1e-8, hessian_power=1.0, n_samples=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x, m, v = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    traj = []
    for k in range(n):
        g, H = flat.grad(x), flat.hessian(x)
        if k % update_freq == 0:
            D = torch.zeros_like(x)
            for _ in range(n_samples):
                z = _rademacher(flat.shapes, gen)
                D += z * (H @ z)
            D /= n_samples
            D = _flat([_ref_average(d, averaging, block_size) for d in flat.split(D)])
            v = beta2 * v + (1 - beta2) * D * D
        m = beta1 * m + (1 - beta1) * g
        t = k + 1
        step = m / (1 - beta1**t) * (1 - beta2**t) ** (hessian_power / 2) / (v ** (hessian_power / 2) + eps)
        x = x - lr * step
        traj.append(flat.split(x))
    return traj


@pytest.mark.parametrize("kwargs", [
    {},
    {"block_size": 2, "beta1": 0.8, "beta2": 0.95},
    {"averaging": False, "update_freq": 3, "n_samples": 3, "hessian_power": 0.5, "eps": 1e-4},
])
def test_adahessian_matches_loop_reference(kwargs) -> None:
    x0, f, flat = _problem(shapes=[(3,), (5, 2), (2, 3, 2), (), (3, 2)])
    params = clone_params(x0)
    _, traj = _run([AdaHessian(seed=7, **kwargs), tz.m.LR(0.05)], params, f)
    ref = _ref_adahessian(flat, _flat(x0), 0.05, N_STEPS, seed=7, **kwargs)
    for k, (a, b) in enumerate(zip(traj, ref)):
        assert_all_close(a, b, rtol=1e-9, atol=1e-12, msg=f"step {k}")


@pytest.mark.parametrize("method", ["forward", "central"])
def test_adahessian_finite_differences_on_quadratic(method) -> None:
    """On a quadratic the finite-difference products are exact up to rounding."""
    A = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    A = A @ A.T + torch.eye(6, dtype=torch.float64)
    f = lambda ps: 0.5 * torch.cat([p.reshape(-1) for p in ps]) @ A @ torch.cat([p.reshape(-1) for p in ps])
    x0 = make_params(torch.float64, [(2,), (2, 2)])
    exact, fd = clone_params(x0), clone_params(x0)
    _run([AdaHessian(seed=1), tz.m.LR(0.1)], exact, f, n=10)
    _run([AdaHessian(seed=1, hvp_method=method, fd_h=1e-2), tz.m.LR(0.1)], fd, f, n=10)
    assert_all_close(fd, exact, rtol=1e-7, atol=1e-10)


def test_adahessian_averaging_unit() -> None:
    D = [torch.arange(10.0).reshape(5, 2) - 4, torch.arange(6.0).reshape(3, 2) - 3, torch.arange(12.0).reshape(2, 3, 2) - 5,
         torch.arange(6.0).reshape(2, 3) - 2, torch.arange(4.0).reshape(4, 1) - 2, torch.arange(3.0) - 1]
    out = adahessian_average(D, [True] * 6, [2, 2, None, None, 2, 2])
    A0 = D[0].abs()
    torch.testing.assert_close(out[0][0], (A0[0] + A0[1]) / 2)
    torch.testing.assert_close(out[0][3], (A0[2] + A0[3]) / 2)
    torch.testing.assert_close(out[0][4], A0[4])  # leftover row forms its own group
    torch.testing.assert_close(out[1], D[1].abs().mean(0, keepdim=True).expand(3, 2))  # < 2 whole blocks
    torch.testing.assert_close(out[2], D[2].abs().mean(2, keepdim=True).expand(2, 3, 2))
    assert out[3] is D[3] and out[4] is D[4] and out[5] is D[5]  # 2-d without block, 1 element per row, 1-d
    assert all(o is d for o, d in zip(adahessian_average(D, [False] * 6, [2] * 6), D))


def test_adahessian_one_step_lands_on_minimiser_of_diagonal_quadratic() -> None:
    """Catalog check: on ``½Σ dᵢxᵢ²`` one step with ``LR(1)`` gives ``g/d = x``."""
    d = [torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64), torch.tensor([[1.5, 3.0], [1.0, 4.0]], dtype=torch.float64)]
    f = lambda ps: sum(0.5 * (di * p**2).sum() for di, p in zip(d, ps))
    params = [torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True),
              torch.tensor([[0.5, -1.0], [2.0, 1.0]], dtype=torch.float64, requires_grad=True)]
    _run([AdaHessian(seed=0), tz.m.LR(1.0)], params, f, n=1)
    for p in params:
        torch.testing.assert_close(p, torch.zeros_like(p), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# SophiaH
# ------------------------------------------------------------------------------------------------------------------
def _ref_sophia(flat: Flat, x0, lr, n, beta1=0.96, beta2=0.99, update_freq=10, precond_scale=1.0, clip=1.0,
                eps=1e-12, n_samples=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x, m, h = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    traj = []
    for k in range(n):
        g, H = flat.grad(x), flat.hessian(x)
        if k % update_freq == 0:
            h_hat = torch.zeros_like(x)
            for _ in range(n_samples):
                z = _gaussian(flat.shapes, gen)
                h_hat += z * (H @ z)
            h = beta2 * h + (1 - beta2) * h_hat / n_samples
        m = beta1 * m + (1 - beta1) * g
        step = torch.empty_like(x)
        for i in range(len(x)):  # elementwise, as in the paper
            step[i] = min(max(m[i] / max(precond_scale * h[i], eps), -clip), clip)
        x = x - lr * step
        traj.append(flat.split(x))
    return traj


@pytest.mark.parametrize("kwargs", [
    {},
    {"beta1": 0.9, "beta2": 0.95, "update_freq": 2, "precond_scale": 0.5, "clip": 0.8, "n_samples": 2},
])
def test_sophia_h_matches_loop_reference(kwargs) -> None:
    x0, f, flat = _problem()
    params = clone_params(x0)
    _, traj = _run([SophiaH(seed=3, **kwargs), tz.m.LR(0.05)], params, f)
    ref = _ref_sophia(flat, _flat(x0), 0.05, N_STEPS, seed=3, **kwargs)
    for k, (a, b) in enumerate(zip(traj, ref)):
        assert_all_close(a, b, rtol=1e-9, atol=1e-12, msg=f"step {k}")


def test_sophia_h_first_output_and_clip() -> None:
    """Catalog check: outputs lie in ``[−clip, clip]`` and the first equals
    ``clamp((1−β1)g / max((1−β2)·z⊙Hz, eps), −1, 1)`` for the drawn z."""
    d = torch.tensor([0.5, 2.0, 7.0, 1e-3, 3.0], dtype=torch.float64)
    f = lambda ps: 0.5 * (d * ps[0] ** 2).sum()
    params = [torch.tensor([1.0, -2.0, 3.0, 4.0, -0.01], dtype=torch.float64, requires_grad=True)]
    (out,) = _output(SophiaH(seed=9), params, f)
    z = torch.randn(5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    g = d * params[0].detach()
    expected = ((1 - 0.96) * g / torch.clamp((1 - 0.99) * z * d * z, min=1e-12)).clamp(-1, 1)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)
    assert (out.abs() < 1).any() and (out.abs() == 1).any()  # both regimes are exercised

    x0, f, _ = _problem()
    outputs: list = []
    _run([SophiaH(clip=0.3, update_freq=2, seed=0), _Record(outputs), tz.m.LR(0.1)], clone_params(x0), f, n=6)
    assert len(outputs) == 6 and all((u.abs() <= 0.3).all() for out in outputs for u in out)
    assert any((u.abs() == 0.3).any() for out in outputs for u in out)


def test_per_parameter_settings_reach_the_math() -> None:
    """A param-group value of a numeric setting applies to that group only (same probes: same seed and order)."""
    x0, f, _ = _problem()
    grouped, only_a, only_b = [], [], []
    params = clone_params(x0)
    _run([SophiaH(seed=0, update_freq=1), _Record(grouped), tz.m.LR(0.01)], params, f, n=1,
         groups=[{"params": params[:2], "clip": 0.05}, {"params": params[2:]}])
    _run([SophiaH(seed=0, update_freq=1, clip=0.05), _Record(only_a), tz.m.LR(0.01)], clone_params(x0), f, n=1)
    _run([SophiaH(seed=0, update_freq=1), _Record(only_b), tz.m.LR(0.01)], clone_params(x0), f, n=1)
    assert_all_equal(grouped[0][:2], only_a[0][:2], "group with clip=0.05")
    assert_all_equal(grouped[0][2:], only_b[0][2:], "group with the default clip")


class _Record(tz.core.Module):
    """Records the update it receives."""

    def __init__(self, log: list):
        super().__init__()
        self.log = log

    def step(self, var):
        self.log.append([u.clone() for u in var.get_update()])
        return var


def test_state_keys() -> None:
    x0, f, _ = _problem()
    params = clone_params(x0)
    modules = [AdaHessian(seed=0), SophiaH(seed=0), ESGD(seed=0)]
    for m in modules:
        _run([m, tz.m.LR(0.01)], params, f, n=2)
    assert {"exp_avg", "h_exp_avg"} <= set(modules[0].state[params[0]]) and modules[0].global_state["step"] == 2
    assert {"exp_avg", "h_exp_avg"} <= set(modules[1].state[params[0]])
    assert "D_sq_acc" in modules[2].state[params[0]] and modules[2].global_state["i"] == 1
    assert all(isinstance(m.global_state["generator"], torch.Generator) for m in modules)
    msam = MSAM(0.1)
    _run([msam], params, f, n=1)
    assert set(msam.state[params[0]]) == {"velocity"}


def test_inner_sees_update_before_the_preconditioner() -> None:
    """``inner`` transforms the update fed to the first moment / division; curvature comes from the gradient."""
    x0, f, _ = _problem()
    for make in (lambda **kw: AdaHessian(seed=0, **kw), lambda **kw: SophiaH(seed=0, clip=1e9, **kw),
                 lambda **kw: ESGD(seed=0, **kw)):
        plain = _output(make(), clone_params(x0), f)
        doubled = _output(make(inner=tz.m.StepSize(2.0)), clone_params(x0), f)
        assert_all_close(doubled, [2 * t for t in plain], rtol=1e-12)


# ------------------------------------------------------------------------------------------------------------------
# ESGD
# ------------------------------------------------------------------------------------------------------------------
def _ref_esgd(flat: Flat, x0, lr, n, damping=1e-4, update_freq=20, n_samples=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x, S, i = x0.clone(), torch.zeros_like(x0), 0
    traj = []
    for k in range(n):
        g, H = flat.grad(x), flat.hessian(x)
        if k % update_freq == 0:
            S = S + sum((H @ _gaussian(flat.shapes, gen)) ** 2 for _ in range(n_samples)) / n_samples
            i += 1
        x = x - lr * g / ((S / max(i, 1)).sqrt() + damping)
        traj.append(flat.split(x))
    return traj


@pytest.mark.parametrize("kwargs,lr", [({}, 0.01), ({"update_freq": 3, "n_samples": 3, "damping": 0.1}, 0.05)])
def test_esgd_matches_loop_reference(kwargs, lr) -> None:
    x0, f, flat = _problem()
    params = clone_params(x0)
    _, traj = _run([ESGD(seed=2, **kwargs), tz.m.LR(lr)], params, f)
    ref = _ref_esgd(flat, _flat(x0), lr, N_STEPS, seed=2, **kwargs)
    for k, (a, b) in enumerate(zip(traj, ref)):
        assert_all_close(a, b, rtol=1e-9, atol=1e-12, msg=f"step {k}")


def test_esgd_preconditioner_converges_to_curvature() -> None:
    """Catalog check: on ``½Σ dᵢxᵢ²`` with ``update_freq=1`` and ``LR(0)``, ``sqrt(S/i)/d`` is within 3% of 1 after
    3000 steps."""
    d = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64)
    f = lambda ps: 0.5 * (d * ps[0] ** 2).sum()
    params = [torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)]
    esgd = ESGD(update_freq=1, seed=0)
    opt, _ = _run([esgd, tz.m.LR(0.0)], params, f, n=3000)
    S, i = esgd.state[params[0]]["D_sq_acc"], esgd.global_state["i"]
    assert i == 3000
    ratio = (S / i).sqrt() / d
    assert ((ratio - 1).abs() < 0.03).all(), ratio


# ------------------------------------------------------------------------------------------------------------------
# MatrixMomentum
# ------------------------------------------------------------------------------------------------------------------
def _quadratic(n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = A @ A.T / n + 0.5 * torch.eye(n, dtype=torch.float64)
    return A, lambda ps: 0.5 * _flat_graph(ps) @ A @ _flat_graph(ps)


def _flat_graph(ps: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in ps])


def _first_step(d: torch.Tensor) -> torch.Tensor:
    eps = max(1e-7, torch.finfo(d.dtype).eps)
    factor = min(max(1 / d.abs().sum().item(), eps / d.abs().max().item()), 1.0)
    return d * factor


@pytest.mark.parametrize("method", ["autograd", "forward", "central"])
def test_matrix_momentum_recurrence_on_quadratic(method) -> None:
    """Catalog check: from step 2 on, ``x⁺ = x + (I − μA)(x − x_prev) − lr·Ax`` (1e-6)."""
    A, f = _quadratic()
    params = make_params(torch.float64, [(2,), (2, 2)])
    lr, mu = 0.1, 0.3
    x = [_flat(params)]
    _, traj = _run([MatrixMomentum(lr, mu=mu, hvp_method=method)], params, f, n=N_STEPS)
    x += [_flat(t) for t in traj]
    torch.testing.assert_close(x[1], x[0] - _first_step(lr * A @ x[0]), rtol=1e-12, atol=1e-14)
    for t in range(1, N_STEPS):
        expected = x[t] + (torch.eye(6, dtype=torch.float64) - mu * A) @ (x[t] - x[t - 1]) - lr * A @ x[t]
        torch.testing.assert_close(x[t + 1], expected, rtol=1e-6, atol=1e-9)


def _ref_matrix_momentum(fs: list[Flat], x0, lr, mu, n, adaptive=False, adapt_freq=None):
    """Orr-Leen matrix momentum with an objective ``fs[t]`` that changes every step (mini-batches)."""
    x, x_prev, g_prev, mu_mul = x0.clone(), None, None, 1.0
    traj = []
    for t in range(1, n + 1):
        flat = fs[t - 1]
        g = flat.grad(x)
        if x_prev is None:
            x_new = x - _first_step(lr * g)
        else:
            s = x - x_prev
            if adaptive and (adapt_freq is None or (t - 2) % adapt_freq == 0):
                y = g - (g_prev if adapt_freq is None else flat.grad(x_prev))
                mu_mul = (s.norm() / y.norm()).item()
            x_new = x + s - mu * mu_mul * (flat.hessian(x) @ s) - lr * g
        x_prev, g_prev, x = x, g, x_new
        traj.append(x)
    return traj


@pytest.mark.parametrize("adaptive,adapt_freq,extra_evals", [(False, None, 0), (True, None, 0), (True, 3, 10)])
def test_matrix_momentum_matches_loop_reference(adaptive, adapt_freq, extra_evals) -> None:
    shapes = [(3,), (2, 2)]
    x0 = make_params(torch.float64, shapes)
    batches = [Objective(x0, seed=s) for s in range(N_STEPS)]  # the objective changes every step
    fs = [Flat(b, shapes) for b in batches]
    params = clone_params(x0)
    opt = tz.Modular(params, MatrixMomentum(0.02, mu=0.05, adaptive=adaptive, adapt_freq=adapt_freq))
    traj = []
    for t in range(N_STEPS):
        opt.step(_closure(opt, params, batches[t]))
        traj.append(_flat(params))
    ref = _ref_matrix_momentum(fs, _flat(x0), 0.02, 0.05, N_STEPS, adaptive, adapt_freq)
    for k, (a, b) in enumerate(zip(traj, ref)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=lambda m, k=k: f"step {k}: {m}")
    # one evaluation per step, plus one at p_prev on adaptation steps (t = 2, 5, ..., 29)
    assert opt.num_evaluations == N_STEPS + extra_evals


def test_matrix_momentum_hvp_tfm_and_state_keys() -> None:
    A, f = _quadratic()
    x0 = make_params(torch.float64, [(2,), (2, 2)])
    a, b = clone_params(x0), clone_params(x0)
    mm = MatrixMomentum(0.1, mu=0.2, hvp_tfm=tz.m.StepSize(0.5))
    _run([mm], a, f, n=10)
    _run([MatrixMomentum(0.1, mu=0.1)], b, f, n=10)
    assert_all_close(a, b, rtol=1e-12, atol=1e-14)
    assert {"p_prev", "s", "Hs"} <= set(mm.state[a[0]])


def test_matrix_momentum_keeps_mu_mul_when_gradient_does_not_change() -> None:
    """``‖s‖/‖y‖`` with ``y = 0`` is not finite: the previous multiplier is kept instead of producing NaN."""
    params = [torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)]
    f = lambda ps: (ps[0] * torch.tensor([1.0, -1.0], dtype=torch.float64)).sum()  # constant gradient, H = 0
    mm = MatrixMomentum(0.1, adaptive=True)
    _run([mm], params, f, n=4)
    assert torch.isfinite(params[0]).all() and float(mm.global_state["mu_mul"]) == 1.0


# ------------------------------------------------------------------------------------------------------------------
# SAM / ASAM
# ------------------------------------------------------------------------------------------------------------------
def _ref_sam_e(g: list[torch.Tensor], x: list[torch.Tensor], rho: float | list[float], p: float, asam: bool,
               eps: float = 1e-10) -> list[torch.Tensor]:
    q = 1.0 if math.isinf(p) else p / (p - 1)
    rhos = rho if isinstance(rho, list) else [rho] * len(g)
    out = []
    for gi, xi, rho in zip(g, x, rhos):
        a = (xi.abs() * gi.abs()) if asam else gi.abs()
        denom = max(float((a**q).sum()) ** (1 / p) if not math.isinf(p) else 1.0, eps)
        e = rho * torch.sign(gi) * gi.abs() ** (q - 1) / denom
        out.append(e * xi**2 if asam else e)
    return out


@pytest.mark.parametrize("rho,p,asam", [(0.05, 2, False), (0.1, 3, False), (0.02, math.inf, False),
                                        (0.5, 2, True), (0.3, 1.5, True)])
def test_sam_matches_loop_reference(rho, p, asam) -> None:
    x0, f, flat = _problem()
    params = clone_params(x0)
    opt, traj = _run([SAM(rho, p=p, asam=asam), tz.m.LR(0.05)], params, f)
    x = [t.detach().clone() for t in x0]
    for k in range(N_STEPS):
        g = flat.split(flat.grad(_flat(x)))
        e = _ref_sam_e(g, x, rho, p, asam)
        g_e = flat.split(flat.grad(_flat([xi + ei for xi, ei in zip(x, e)])))
        x = [xi - 0.05 * gi for xi, gi in zip(x, g_e)]
        assert_all_close(traj[k], x, rtol=1e-9, atol=1e-12, msg=f"step {k}")
    assert opt.num_evaluations == 2 * N_STEPS


def test_sam_per_parameter_rho() -> None:
    x0, f, flat = _problem()
    params = clone_params(x0)
    rhos = [0.1, 0.0, 0.05, 0.2]
    opt = tz.Modular([{"params": [p], "rho": r} for p, r in zip(params, rhos)], SAM(0.5), tz.m.LR(0.05))
    opt.step(_closure(opt, params, f))
    x = [t.detach() for t in x0]
    e = _ref_sam_e(flat.split(flat.grad(_flat(x))), x, rhos, 2, asam=False)
    g_e = flat.split(flat.grad(_flat([xi + ei for xi, ei in zip(x, e)])))
    assert_all_close(params, [xi - 0.05 * gi for xi, gi in zip(x, g_e)], rtol=1e-12, atol=1e-14)


def test_sam_with_rho_zero_is_gradient_descent() -> None:
    x0, f, _ = _problem(dtype=torch.float32)
    a, b = clone_params(x0), clone_params(x0)
    _run([SAM(rho=0.0), tz.m.LR(0.1)], a, f)
    _run([tz.m.LR(0.1)], b, f)
    assert_all_equal(a, b, "SAM(rho=0) vs gradient descent")


def _recording(f: Callable, log: list) -> Callable:
    def g(ps):
        log.append([p.detach().clone() for p in ps])
        return f(ps)
    return g


def test_sam_catalog_check() -> None:
    """On ``½‖x‖²`` the closure is called at ``x`` and ``x(1 + ρ/‖x‖)``, and the step is ``lr·x(1 + ρ/‖x‖)``."""
    x0 = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    params = [x0.clone().requires_grad_()]
    log: list = []
    _run([SAM(rho=0.3), tz.m.LR(0.1)], params, _recording(lambda ps: 0.5 * (ps[0] ** 2).sum(), log), n=1)
    scale = 1 + 0.3 / x0.norm()
    assert len(log) == 2
    torch.testing.assert_close(log[0][0], x0, rtol=0, atol=0)
    torch.testing.assert_close(log[1][0], x0 * scale, rtol=1e-14, atol=0)
    torch.testing.assert_close(params[0].detach(), x0 - 0.1 * x0 * scale, rtol=1e-14, atol=1e-15)


def test_asam_catalog_check() -> None:
    """With ``LR(1)`` the closure is evaluated at w and at ``w + ρ w² g/‖|w| g‖``; the step is ``∇f(w + e)``."""
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    c = torch.tensor([0.3, 1.0, -1.0, 2.0], dtype=torch.float64)
    f = lambda ps: ((ps[0] - c) ** 4).sum() + (ps[0] ** 2).sum()
    grad = lambda x: 4 * (x - c) ** 3 + 2 * x
    params = [w.clone().requires_grad_()]
    log: list = []
    _run([ASAM(rho=0.5), tz.m.LR(1.0)], params, _recording(f, log), n=1)
    g = grad(w)
    e = 0.5 * w**2 * g / (w.abs() * g).norm()
    assert len(log) == 2
    torch.testing.assert_close(log[0][0], w, rtol=0, atol=0)
    torch.testing.assert_close(log[1][0], w + e, rtol=1e-14, atol=0)
    torch.testing.assert_close(params[0].detach(), w - grad(w + e), rtol=1e-12, atol=1e-12)


def test_sam_restores_parameters_bit_exactly() -> None:
    torch.manual_seed(0)
    params = [(torch.randn(50) * torch.logspace(-4, 1, 50)).requires_grad_(), torch.randn(7, 3).requires_grad_()]
    f = lambda ps: sum(((p - 0.3) ** 2).sum() * (i + 1) for i, p in enumerate(ps))
    x0 = snapshot(params)
    # the naive restore (x + e) - e is not exact for these values, so this test can fail
    g = [2 * (p.detach() - 0.3) * (i + 1) for i, p in enumerate(params)]
    naive = [(xi + ei) - ei for xi, ei in zip(x0, _ref_sam_e(g, x0, 0.05, 2, asam=False))]
    assert any(not torch.equal(a, b) for a, b in zip(naive, x0))

    for sam in (SAM(0.05), ASAM(0.05)):
        var = Var(params=params, closure=lambda backward=True: _plain_closure(params, f, backward), model=None,
                  current_step=0)
        closure = sam.step(var).closure
        for backward in (True, False, True):
            closure(backward)
            assert_all_equal(params, x0, "parameters after the SAM closure")


def test_sam_closure_without_backward_restores_grads() -> None:
    """With ``backward=False`` the ``.grad`` tensors from before the call are restored, with their values, even
    when the user's closure zeroes gradients in place."""
    params = [torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([[3.0]], requires_grad=True)]
    sentinels = [torch.tensor([7.0, 8.0]), torch.tensor([[9.0]])]
    for p, s in zip(params, sentinels):
        p.grad = s
    opt = torch.optim.SGD(params, lr=0.1)

    def closure(backward=True):
        loss = sum((p**2).sum() for p in params)
        if backward:
            opt.zero_grad(set_to_none=False)
            loss.backward()
        return loss

    var = Var(params=params, closure=closure, model=None, current_step=0)
    sam_closure = SAM(0.1).step(var).closure
    loss = sam_closure(False)
    assert all(p.grad is s for p, s in zip(params, sentinels))
    assert float(sentinels[0][0]) == 7.0 and float(sentinels[1][0, 0]) == 9.0
    a = torch.tensor([1.0, 2.0])  # e is per tensor: 0.1 a/‖a‖ and 0.1 sign(3)
    torch.testing.assert_close(loss, ((a + 0.1 * a / a.norm()) ** 2).sum() + 3.1**2)


def test_sam_warns_when_placed_after_a_gradient_was_computed() -> None:
    class NeedsGrad(tz.core.Module):
        def step(self, var):
            var.get_grad()
            return var

    params, f, _ = _problem()
    with pytest.warns(UserWarning, match="place it first"):
        _run([NeedsGrad(), SAM(), tz.m.LR(0.1)], params, f, n=1)


# ------------------------------------------------------------------------------------------------------------------
# MSAM / MSAMObjective
# ------------------------------------------------------------------------------------------------------------------
def _ref_msam(flat: Flat, x0, lr: list[float], n, momentum=0.9, rho=0.3, weight_decay=0.0, nesterov=False,
              lerp=False):
    """Momentum-SAM tracking the unperturbed weights ``w`` explicitly: the gradient is taken at
    ``ŵ = w − ρ v/‖v‖``, ``w ← w − lr·d − weight_decay·w``. Returns the perturbed points ŵ."""
    lr_vec = torch.cat([torch.full((s,), l, dtype=x0.dtype) for s, l in zip(flat.sizes, lr)])
    w, v, w_hat = x0.clone(), torch.zeros_like(x0), x0.clone()
    traj = []
    for _ in range(n):
        g = flat.grad(w_hat)
        if nesterov:
            v = momentum * v + (1 - momentum) * g if lerp else momentum * (v + g)
            d = g + v
        else:
            v = momentum * v + ((1 - momentum) * g if lerp else g)
            d = v
        w = w - lr_vec * d - weight_decay * w
        w_hat = w - rho * v / v.norm()
        traj.append(flat.split(w_hat))
    return traj


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.01, "rho": 0.1}, {"nesterov": True},
                                    {"lerp": True, "momentum": 0.8}, {"nesterov": True, "lerp": True}])
def test_msam_matches_loop_reference(kwargs) -> None:
    x0, f, flat = _problem()
    params = clone_params(x0)
    lrs = [0.02, 0.01, 0.02, 0.05]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, lrs)]  # lr is a per-parameter setting
    opt = tz.Modular(groups, MSAM(0.123, **kwargs))
    ref = _ref_msam(flat, _flat(x0), lrs, N_STEPS, **kwargs)
    for k in range(N_STEPS):
        opt.step(_closure(opt, params, f))
        assert_all_close(params, ref[k], rtol=1e-9, atol=1e-12, msg=f"step {k}")
    assert opt.num_evaluations == N_STEPS  # no extra evaluation


def test_msam_first_output() -> None:
    """Catalog check: the first output (v = 0) is ``lr·g + ρ g/‖g‖``."""
    x0, f, flat = _problem()
    out = _flat(_output(MSAM(0.1, rho=0.3), clone_params(x0), f))
    g = flat.grad(_flat(x0))
    torch.testing.assert_close(out, 0.1 * g + 0.3 * g / g.norm(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kwargs", [{}, {"nesterov": True, "weight_decay": 0.01}, {"lerp": True}])
def test_msam_objective_equals_msam(kwargs) -> None:
    """Catalog check: ``MSAMObjective([HeavyBall(μ, ema_init='zeros'), LR(lr)], momentum=μ) == MSAM(lr, μ)``
    step for step, exactly (with nesterov the child sees ``u + v``, so ``LR`` alone reproduces MSAM)."""
    x0, f, _ = _problem()
    a, b = clone_params(x0), clone_params(x0)
    if kwargs.get("nesterov"):
        child = [tz.m.LR(0.05)]
    elif kwargs.get("lerp"):
        child = [tz.m.EMA(0.8), tz.m.LR(0.05)]
    else:
        child = [tz.m.HeavyBall(0.8, ema_init="zeros"), tz.m.LR(0.05)]
    _, ta = _run([MSAMObjective(child, momentum=0.8, **kwargs)], a, f)
    _, tb = _run([MSAM(0.05, momentum=0.8, **kwargs)], b, f)
    for k, (pa, pb) in enumerate(zip(ta, tb)):
        assert_all_equal(pa, pb, f"step {k}")


def test_msam_objective_child_gets_closure_and_loss() -> None:
    seen = {}

    class NeedsClosure(tz.core.Module):
        def step(self, var):
            seen["loss"] = var.get_loss(False)
            seen["closure"] = var.closure
            return var

    p = [torch.tensor([1.0, 2.0], requires_grad=True)]
    opt = tz.Modular(p, MSAMObjective([NeedsClosure(), tz.m.LR(0.1)]))
    opt.step(_closure(opt, p, lambda ps: (ps[0] ** 2).sum()))
    assert seen["closure"] is not None and float(seen["loss"].detach()) == 5.0
