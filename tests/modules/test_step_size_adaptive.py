"""Step-size modules: Warmup, WarmupNormClip, RandomStepSize, PolyakStepSize, BarzilaiBorwein, BBStab, AdGD. The sweep,
each catalog check, and trajectories against plain loop implementations of the papers' rules."""
from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from sweep import check_module

import torchzero as tz
from torchzero.modules.step_size.adaptive import (
    AdGD,
    BarzilaiBorwein,
    BBStab,
    PolyakStepSize,
    bb_step_size,
    bb_step_size_float,
    epsilon_step,
)
from torchzero.modules.step_size.random_step import RandomStepSize
from torchzero.modules.step_size.warmup import Warmup, WarmupNormClip

F64 = torch.float64

SWEEP = {
    "Warmup": lambda: [Warmup(steps=3), tz.m.LR(0.01)],
    "WarmupNormClip": lambda: [WarmupNormClip(steps=3, start_norm=0.1), tz.m.LR(0.01)],
    "RandomStepSize": lambda: [RandomStepSize(seed=0), tz.m.LR(0.01)],
    "RandomStepSize_parameterwise": lambda: [RandomStepSize(0.5, 2, parameterwise=True, seed=3), tz.m.LR(0.01)],
    "BarzilaiBorwein": lambda: [BarzilaiBorwein()],
    "BarzilaiBorwein_short_update": lambda: [BarzilaiBorwein("short", use_grad=False), tz.m.LR(0.5)],
    "BarzilaiBorwein_long_inner": lambda: [BarzilaiBorwein("long", inner=tz.m.EMA(0.5))],
    "BarzilaiBorwein_geom_fallback": lambda: [BarzilaiBorwein("geom-fallback")],
    "BBStab": lambda: [BBStab(inf_iters=1)],
    "BBStab_delta": lambda: [BBStab(delta=0.1, type="short", use_grad=False)],
    "AdGD": lambda: [AdGD()],
    "AdGD_v1": lambda: [AdGD(variant=1, sqrt=False, alpha_0=1e-3, inner=tz.m.EMA(0.5))],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    check_module(SWEEP[name])


@pytest.mark.parametrize("make", [lambda: [PolyakStepSize()], lambda: [PolyakStepSize(f_star=None), tz.m.LR(0.5)],
                                  lambda: [PolyakStepSize(use_grad=False, max=10, inner=tz.m.EMA(0.5))]])
def test_sweep_polyak(make) -> None:
    check_module(make, needs_closure=True)  # needs the loss: without closure (or `loss=`) it raises naming itself


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["BarzilaiBorwein", "BBStab", "AdGD", "RandomStepSize", "WarmupNormClip"])
def test_sweep_cuda(name: str) -> None:
    check_module(SWEEP[name], device="cuda")


@pytest.mark.parametrize("make", [
    lambda: Warmup(steps=-1), lambda: Warmup(start_lr=-1), lambda: WarmupNormClip(steps=1.5),
    lambda: RandomStepSize(2, 1), lambda: RandomStepSize(seed=1.5), lambda: PolyakStepSize(max=0),
    lambda: PolyakStepSize(y_decay=1), lambda: BarzilaiBorwein("longest"), lambda: BarzilaiBorwein(alpha_0=0),
    lambda: BBStab(c=0), lambda: BBStab(delta=-1), lambda: BBStab(inf_iters=0), lambda: AdGD(variant=3),
    lambda: AdGD(alpha_0=-1),
])
def test_invalid_arguments(make) -> None:
    with pytest.raises((ValueError, TypeError)):
        make()


def _steps(modules: Callable, f: Callable, x0: list[float], n: int) -> list[torch.Tensor]:
    """Runs ``n`` steps and returns the parameters after each (x_0 first)."""
    x = torch.tensor(x0, dtype=F64, requires_grad=True)
    opt = tz.Modular([x], *modules())
    out = [x.detach().clone()]
    for _ in range(n):
        def closure(backward=True):
            loss = f(x)
            if backward:
                opt.zero_grad()
                loss.backward()
            return loss
        opt.step(closure)
        out.append(x.detach().clone())
    return out


def _grad(f: Callable, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_()
    g, = torch.autograd.grad(f(x), x)
    return g


# --------------------------------------------------------------------------------------------------
# warm-up and random step sizes
# --------------------------------------------------------------------------------------------------
def test_warmup_check() -> None:
    xs = _steps(lambda: [Warmup(steps=4, start_lr=0, end_lr=1)], lambda x: x.sum(), [0.0], 7)
    steps = [float(a - b) for a, b in zip(xs[:-1], xs[1:])]
    assert steps == [0, 0.25, 0.5, 0.75, 1, 1, 1]


def test_warmup_per_parameter_settings() -> None:
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = tz.Modular([{"params": [a], "end_lr": 2.0}, {"params": [b]}], Warmup(steps=2, start_lr=0))
    for _ in range(3):
        a.grad, b.grad = torch.ones(1), torch.ones(1)
        opt.step()
    assert float(a.detach()) == -(0 + 1 + 2) and float(b.detach()) == -(0 + 0.5 + 1)


def test_warmup_norm_clip_check() -> None:
    g = torch.tensor([3.0, 4.0], dtype=F64)
    xs = _steps(lambda: [WarmupNormClip(steps=4, start_norm=0, end_norm=1)], lambda x: x @ g, [0.0, 0.0], 7)
    norms = [float((a - b).norm()) for a, b in zip(xs[:-1], xs[1:])]
    assert norms == pytest.approx([0, 0.25, 0.5, 0.75, 1, 5, 5], abs=1e-15)


def test_random_step_size_seed_and_bounds() -> None:
    f = lambda x: (x**2).sum()
    a = _steps(lambda: [RandomStepSize(0.2, 0.5, seed=7)], f, [1.0, -1.0], 10)
    b = _steps(lambda: [RandomStepSize(0.2, 0.5, seed=7)], f, [1.0, -1.0], 10)
    c = _steps(lambda: [RandomStepSize(0.2, 0.5, seed=8)], f, [1.0, -1.0], 10)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    for x, y in zip(a[:-1], a[1:]):  # x ← x − r·2x, r ∈ [0.2, 0.5]
        r = (x - y) / (2 * x)
        assert torch.allclose(r, r[0]) and 0.2 <= float(r[0]) <= 0.5


def test_random_step_size_parameterwise() -> None:
    a, b = torch.ones(1, requires_grad=True), torch.ones(1, requires_grad=True)
    opt = tz.Modular([{"params": [a], "low": 10.0, "high": 11.0}, {"params": [b]}],
                     RandomStepSize(0, 1, parameterwise=True, seed=0))
    a.grad, b.grad = torch.ones(1), torch.ones(1)
    opt.step()
    assert 10 <= 1 - float(a.detach()) <= 11 and 0 <= 1 - float(b.detach()) <= 1


# --------------------------------------------------------------------------------------------------
# shared math
# --------------------------------------------------------------------------------------------------
def test_epsilon_step() -> None:
    assert float(epsilon_step([torch.tensor([1e-9, -2e-9])], 1e-7)) == 1.0
    assert float(epsilon_step([torch.tensor([0.5, -0.25])], 1e-7)) == pytest.approx(1e-7 / 0.5)
    assert float(epsilon_step([torch.tensor([5.0]), torch.tensor([-3.0])], 1e-7)) == pytest.approx(1e-7)


def test_bb_formulas_tensor_and_float_agree() -> None:
    e = 1e-300
    cases = [(2.0, 4.0, 3.0), (-1.0, 4.0, 3.0), (0.0, 0.0, 3.0), (2.0, 0.0, 3.0), (0.0, 4.0, 3.0)]
    for sy, yy, ss in cases:
        for type in ("short", "long", "geom", "geom-fallback"):
            t = float(bb_step_size(torch.tensor(sy, dtype=F64), torch.tensor(yy, dtype=F64),
                                   torch.tensor(ss, dtype=F64), type, e))
            p = bb_step_size_float(sy, yy, ss, type, e)
            assert (math.isnan(t) and p is None) or t == pytest.approx(p), (sy, yy, ss, type, t, p)
    assert bb_step_size_float(2.0, 4.0, 3.0, "short", e) == 0.5
    assert bb_step_size_float(2.0, 4.0, 3.0, "long", e) == 1.5
    assert bb_step_size_float(2.0, 4.0, 3.0, "geom", e) == pytest.approx(math.sqrt(0.75))
    assert bb_step_size_float(0.0, 0.0, 3.0, "geom-fallback", e) is None
    assert bb_step_size_float(2.0, 0.0, 3.0, "geom-fallback", e) == 1.5  # short: sᵀs/sᵀy, long: sᵀs/sᵀy


# --------------------------------------------------------------------------------------------------
# Polyak
# --------------------------------------------------------------------------------------------------
def test_polyak_check() -> None:
    xs = _steps(lambda: [PolyakStepSize(f_star=0)], lambda x: 0.5 * (x**2).sum(), [3.0, -1.0], 5)
    for k, x in enumerate(xs):
        torch.testing.assert_close(x, torch.tensor([3.0, -1.0], dtype=F64) / 2**k)


def test_polyak_estimated_target_matches_loop() -> None:
    f = lambda x: ((x - 1) ** 2).sum() + 0.1 * (x**4).sum() + 2.0
    y, y_decay, alpha = 0.5, 0.1, 0.7
    xs = _steps(lambda: [PolyakStepSize(f_star=None, y=y, y_decay=y_decay, alpha=alpha)], f, [2.0, -1.0], 6)
    x, f_best = torch.tensor([2.0, -1.0], dtype=F64), math.inf
    for k in range(6):
        fx, g = float(f(x)), _grad(f, x)
        f_best = min(f_best, fx)
        a = (fx - (f_best - y * (1 - y_decay) ** k)) / float(g @ g)
        x = x - a * alpha * g
        torch.testing.assert_close(xs[k + 1], x, rtol=1e-12, atol=1e-14)


def test_polyak_unacceptable_uses_epsilon_step_and_get_H() -> None:
    # f* above the loss: α < 0 is unacceptable, the epsilon step (a₀ = 1e-7) is taken
    xs = _steps(lambda: [PolyakStepSize(f_star=100)], lambda x: (x**2).sum(), [2.0], 1)
    assert float(xs[0] - xs[1]) == pytest.approx(1e-7 * 4.0)  # max|g| = 4 ≥ 1: the step is a₀·g
    x = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    ps = PolyakStepSize(f_star=0, max=0.3)
    opt = tz.Modular([x], ps)
    opt.step(lambda backward=True: _closure(opt, x, lambda x: 0.5 * (x**2).sum(), backward))
    H = ps.get_H(tz.core.Var([x], None, None, 0))
    v = torch.tensor([1.0, 1.0], dtype=F64)
    torch.testing.assert_close(H.matvec(v), v / 0.3)  # α = 1/2 capped by max = 0.3


def _closure(opt, x, f, backward):
    loss = f(x)
    if backward:
        opt.zero_grad()
        loss.backward()
    return loss


# --------------------------------------------------------------------------------------------------
# Barzilai-Borwein
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("type", ["long", "short", "geom", "geom-fallback"])
def test_bb_check(type: str) -> None:
    xs = _steps(lambda: [BarzilaiBorwein(type)], lambda x: 1.5 * (x**2).sum(), [1.0, -2.0], 2)
    g0 = 3 * xs[0]
    torch.testing.assert_close(xs[1], xs[0] - 1e-7 * g0)  # first: epsilon step, max|g| ≥ 1 so it is a₀·g
    torch.testing.assert_close(xs[2], torch.zeros(2, dtype=F64), atol=1e-15, rtol=0)


def _bb_loop(f: Callable, x0: torch.Tensor, n: int, type: str, a0: float) -> list[torch.Tensor]:
    """Plain BB iteration (Barzilai & Borwein 1988) with the epsilon first step."""
    x, out = x0.clone(), []
    x_prev = g_prev = None
    for _ in range(n):
        g = _grad(f, x)
        alpha = None
        if x_prev is not None:
            s, y = x - x_prev, g - g_prev
            alpha = bb_step_size_float(float(s @ y), float(y @ y), float(s @ s), type, 2 * torch.finfo(F64).tiny)
        if alpha is None or not math.isfinite(alpha) or alpha <= 0:
            m = float(g.abs().max())
            alpha = 1.0 if m < a0 else (a0 / m if m < 1 else a0)
        x_prev, g_prev = x, g
        x = x - alpha * g
        out.append(x)
    return out


@pytest.mark.parametrize("type", ["long", "short", "geom"])
def test_bb_matches_loop(type: str) -> None:
    A = torch.diag(torch.tensor([1.0, 3.0, 10.0, 0.5], dtype=F64))
    f = lambda x: 0.5 * x @ A @ x + 0.01 * (x**4).sum()
    x0 = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=F64)
    xs = _steps(lambda: [BarzilaiBorwein(type)], f, x0.tolist(), 25)
    for a, b in zip(xs[1:], _bb_loop(f, x0, 25, type, 1e-7)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_bb_get_H() -> None:
    x = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    bb = BarzilaiBorwein()
    opt = tz.Modular([x], bb)
    var = tz.core.Var([x], None, None, 0)
    assert torch.equal(bb.get_H(var).matvec(torch.ones(2, dtype=F64)), torch.ones(2, dtype=F64))  # no α: I
    for _ in range(2):
        opt.step(lambda backward=True: _closure(opt, x, lambda x: 1.5 * (x**2).sum(), backward))
    torch.testing.assert_close(bb.get_H(var).matvec(torch.ones(2, dtype=F64)), 3 * torch.ones(2, dtype=F64))


# --------------------------------------------------------------------------------------------------
# BBStab
# --------------------------------------------------------------------------------------------------
def test_bbstab_check() -> None:
    A = torch.diag(torch.tensor([1.0, 5.0, 20.0], dtype=F64))
    f = lambda x: 0.5 * x @ A @ x
    xs = _steps(lambda: [BBStab(delta=0.05)], f, [3.0, -2.0, 1.0], 30)
    norms = [float((a - b).norm()) for a, b in zip(xs[:-1], xs[1:])]
    assert all(n <= 0.05 * (1 + 1e-12) for n in norms[1:])
    assert norms[0] == pytest.approx(1e-7 * float((A @ xs[0]).norm()))  # epsilon step a₀·g (max|g| ≥ 1)


def _bbstab_loop(f, x0, n, c, inf_iters, type):
    """Burdakov, Dai & Huang (2019): α = min(α_BB, Δ/‖g‖), Δ = c·min ‖s‖ over the recording steps."""
    x, out = x0.clone(), []
    x_prev = g_prev = None
    alpha, n_valid, s_min = None, 0, math.inf
    tiny = torch.finfo(F64).tiny
    for _ in range(n):
        g = _grad(f, x)
        if x_prev is not None:
            s, y = x - x_prev, g - g_prev
            a_bb = bb_step_size_float(float(s @ y), float(y @ y), float(s @ s), type, tiny)
            if a_bb is not None:
                n_valid += 1
                alpha = a_bb
                if n_valid == 1:
                    pass
                elif n_valid <= 1 + inf_iters:
                    s_min = min(s_min, float(s.norm()))
                else:
                    alpha = min(a_bb, c * s_min / float(g.norm()))
        if alpha is None:
            m = float(g.abs().max())
            step = 1.0 if m < 1e-7 else (1e-7 / m if m < 1 else 1e-7)
        else:
            step = alpha
        x_prev, g_prev = x, g
        x = x - step * g
        out.append(x)
    return out


def test_bbstab_matches_loop() -> None:
    A = torch.diag(torch.tensor([1.0, 4.0, 30.0, 0.2], dtype=F64))
    f = lambda x: 0.5 * x @ A @ x + 0.05 * (x**4).sum()
    x0 = torch.tensor([2.0, -1.0, 0.5, 3.0], dtype=F64)
    xs = _steps(lambda: [BBStab(c=0.3, inf_iters=2)], f, x0.tolist(), 30)
    for a, b in zip(xs[1:], _bbstab_loop(f, x0, 30, 0.3, 2, "geom")):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# AdGD
# --------------------------------------------------------------------------------------------------
def _adgd_loop(f, x0, n, variant, sqrt, a0):
    """Malitsky & Mishchenko (2020, 2023) with the catalog's guards; returns iterates and (α, θ, L) per step."""
    x, out, info = x0.clone(), [], []
    tiny = torch.finfo(F64).tiny
    alpha, theta = a0, (0.0 if variant == 1 else 1 / 3)
    x_prev = g_prev = None
    for _ in range(n):
        g = _grad(f, x)
        L = None
        if x_prev is not None:
            sn, yn = float((x - x_prev).norm()), float((g - g_prev).norm())
            if sn > 0:
                L = yn / sn
                if variant == 1:
                    new = math.sqrt(1 + theta) * alpha
                    if L > 2 * tiny:
                        new = min(new, 1 / (math.sqrt(2) * L) if sqrt else 1 / (2 * L))
                else:
                    new = min(math.sqrt(2 / 3 + theta) * alpha,
                              alpha / math.sqrt(max(2 * tiny, 2 * alpha**2 * L**2 - 1)))
                if new > 2 * tiny:
                    info.append((new, theta, alpha, L))
                    theta, alpha = new / alpha, new
        x_prev, g_prev = x, g
        x = x - alpha * g
        out.append(x)
    return out, info


@pytest.mark.parametrize("variant,sqrt", [(1, True), (1, False), (2, True)])
def test_adgd_matches_loop_and_bounds(variant: int, sqrt: bool) -> None:
    A = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=F64))
    f = lambda x: 0.5 * x @ A @ x
    x0 = torch.tensor([1.0, -1.0, 2.0, 0.5, -0.5, 1.5], dtype=F64)
    xs = _steps(lambda: [AdGD(variant=variant, sqrt=sqrt)], f, x0.tolist(), 60)
    ref, info = _adgd_loop(f, x0, 60, variant, sqrt, 1e-7)
    for a, b in zip(xs[1:], ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-14)
    for new, theta_prev, alpha_prev, L in info:
        if variant == 1:
            assert new <= (1 / (math.sqrt(2) * L) if sqrt else 1 / (2 * L)) * (1 + 1e-12)
        else:
            assert new <= math.sqrt(2 / 3 + theta_prev) * alpha_prev * (1 + 1e-12)


@pytest.mark.parametrize("variant", [1, 2])
def test_adgd_converges_without_tuning(variant: int) -> None:
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=F64))
    A = Q @ torch.diag(torch.linspace(1, 4, 6, dtype=F64)) @ Q.T
    b = torch.randn(6, generator=g, dtype=F64)
    f = lambda x: 0.5 * x @ A @ x - b @ x
    xs = _steps(lambda: [AdGD(variant=variant)], f, [0.0] * 6, 300)
    assert float(_grad(f, xs[-1]).norm()) < 1e-10


def test_adgd_get_H_and_clearing() -> None:
    x = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    m = AdGD(alpha_0=0.01)
    opt = tz.Modular([x], m)
    opt.step(lambda backward=True: _closure(opt, x, lambda x: (x**2).sum(), backward))
    var = tz.core.Var([x], None, None, 0)
    torch.testing.assert_close(m.get_H(var).matvec(torch.ones(2, dtype=F64)), 100 * torch.ones(2, dtype=F64))
    # an unacceptable stored α clears all state and takes the epsilon step
    m.global_state["alpha"] = math.inf
    x_before = x.detach().clone()
    opt.step(lambda backward=True: _closure(opt, x, lambda x: (x**2).sum(), backward))
    assert "alpha" not in m.global_state and all("x_prev" not in s for s in m.state.values())
    g = 2 * x_before  # max|g| = 4 ≥ 1: the epsilon step is a₀·g with a₀ = alpha_0
    torch.testing.assert_close(x.detach(), x_before - 0.01 * g)
