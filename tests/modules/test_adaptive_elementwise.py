"""Adaptive elementwise modules: Adagrad, AdagradNorm, RMSprop, Rprop and the sign-change family, Lion, Adan, AEGD,
AdaptiveHeavyBall, MARSCorrection, DualNormCorrection, OrthoGrad.

Each module passes the shared sweep and is checked against an independent reference: the matching
``torch.optim`` optimizer (float64, 30 steps, rtol 1e-6, with and without closure), or a slow, plainly written
per-tensor loop of the paper's algorithm below, and the catalog's "Check" line.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch
from sweep import Objective, assert_all_close, check_module, clone_params, make_params, snapshot

import torchzero as tz
from torchzero.core import Var
from torchzero.modules.adaptive.adagrad import Adagrad, AdagradNorm
from torchzero.modules.adaptive.adan import Adan
from torchzero.modules.adaptive.adaptive_heavyball import AdaptiveHeavyBall
from torchzero.modules.adaptive.aegd import AEGD
from torchzero.modules.adaptive.dual_norm import DualNormCorrection
from torchzero.modules.adaptive.lion import Lion
from torchzero.modules.adaptive.mars import MARSCorrection
from torchzero.modules.adaptive.orthograd import OrthoGrad
from torchzero.modules.adaptive.rmsprop import RMSprop
from torchzero.modules.adaptive.rprop import (
    BacktrackOnSignChange,
    Rprop,
    ScaleLRBySignChange,
    SignConsistencyLRs,
    SignConsistencyMask,
)

N_STEPS = 30
RTOL = 1e-6

# ================================================================================================== sweep
SWEEP: dict[str, Callable[[], list[tz.core.Module]]] = {
    "Adagrad": lambda: [Adagrad(), tz.m.LR(0.1)],
    "Adagrad_options": lambda: [Adagrad(lr_decay=0.1, initial_accumulator_value=0.1, pow=3, divide=True, beta=0.9,
                                        decay=0.01, alpha=0.5), tz.m.LR(0.1)],
    "Adagrad_no_sqrt_not_last": lambda: [Adagrad(use_sqrt=False, initial_accumulator_value=1.0), tz.m.ClipValue(1),
                                         tz.m.LR(0.1)],
    "Adagrad_inner": lambda: [Adagrad(inner=tz.m.EMA(0.5)), tz.m.LR(0.1)],
    "AdagradNorm": lambda: [AdagradNorm(), tz.m.LR(0.1)],
    "AdagradNorm_options": lambda: [AdagradNorm(lr_decay=0.1, initial_accumulator_value=1.0, divide=True, beta=0.9,
                                                decay=0.01, use_sqrt=False, inner=tz.m.EMA(0.5)), tz.m.LR(0.1)],
    "RMSprop": lambda: [RMSprop(), tz.m.LR(0.01)],
    "RMSprop_centered": lambda: [RMSprop(centered=True), tz.m.LR(0.01)],
    "RMSprop_all": lambda: [RMSprop(0.9, centered=True, debiased=True, amsgrad=True), tz.m.ClipValue(10), tz.m.LR(0.01)],
    "RMSprop_init_update_pow": lambda: [RMSprop(init="update", pow=3, amsgrad=True, inner=tz.m.EMA(0.5)),
                                        tz.m.LR(0.01)],
    "Rprop": lambda: [Rprop(alpha=0.01)],
    "Rprop_no_backtrack": lambda: [Rprop(backtrack=False, alpha=0.01, nplus=1.5, nminus=0.3, lb=1e-3, ub=0.1)],
    "BacktrackOnSignChange": lambda: [tz.m.HeavyBall(0.9), BacktrackOnSignChange(), tz.m.LR(0.01)],
    "BacktrackOnSignChange_grad": lambda: [BacktrackOnSignChange(use_grad=True, backtrack=False), tz.m.LR(0.01)],
    "BacktrackOnSignChange_target_grad": lambda: [BacktrackOnSignChange(target="grad"), tz.m.LR(0.01)],
    "ScaleLRBySignChange": lambda: [ScaleLRBySignChange(), tz.m.LR(0.01)],
    "ScaleLRBySignChange_grad": lambda: [tz.m.HeavyBall(), ScaleLRBySignChange(use_grad=True, alpha=0.5),
                                         tz.m.LR(0.01)],
    "SignConsistencyLRs": lambda: [SignConsistencyLRs(lb=None, ub=None), tz.m.LR(0.01)],
    "SignConsistencyMask": lambda: [SignConsistencyMask(), tz.m.LR(0.01)],
    "Lion": lambda: [Lion(), tz.m.LR(0.01)],
    "Lion_wd": lambda: [Lion(0.8, 0.95), tz.m.WeightDecay(0.1), tz.m.LR(0.01)],
    "Adan": lambda: [Adan(), tz.m.LR(0.01)],
    "Adan_not_last": lambda: [Adan(0.9, 0.8, 0.95), tz.m.ClipValue(10), tz.m.LR(0.01)],
    "MARSCorrection": lambda: [MARSCorrection(), tz.m.Adam(0.9), tz.m.LR(0.01)],
    "MARSCorrection_no_clip": lambda: [MARSCorrection(max_norm=None), tz.m.LR(0.01)],
    "DualNormCorrection": lambda: [DualNormCorrection(), tz.m.LR(0.001)],
    "OrthoGrad": lambda: [OrthoGrad(), tz.m.LR(0.01)],
    "OrthoGrad_no_renormalize_grad": lambda: [OrthoGrad(renormalize=False, target="grad"), tz.m.LR(0.01)],
}
NEEDS_CLOSURE: dict[str, Callable[[], list[tz.core.Module]]] = {
    "AEGD": lambda: [AEGD(lr=0.05, c=1)],
    "AdaptiveHeavyBall": lambda: [AdaptiveHeavyBall(f_star=-1e3)],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    check_module(SWEEP[name])


@pytest.mark.parametrize("name", list(NEEDS_CLOSURE))
def test_sweep_needs_loss(name: str) -> None:
    check_module(NEEDS_CLOSURE[name], needs_closure=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_cuda(name: str) -> None:
    check_module(SWEEP[name], device="cuda")


# ================================================================================================== helpers
def _trajectory(make_opt: Callable, params: list[torch.Tensor], f: Callable, use_closure: bool, n: int = N_STEPS
                ) -> list[list[torch.Tensor]]:
    opt = make_opt(params)
    out = []
    for _ in range(n):
        if use_closure:
            def closure(backward=True):
                loss = f(params)
                if backward:
                    opt.zero_grad()
                    loss.backward()
                return loss
            opt.step(closure)
        else:
            opt.zero_grad()
            loss = f(params)
            loss.backward()
            opt.step(loss=loss.detach()) if isinstance(opt, tz.Modular) else opt.step()
        out.append(snapshot(params))
    return out


def _compare(make_tz: Callable, make_ref: Callable, use_closure: bool = True, rtol: float = RTOL,
             atol: float = 1e-12, n: int = N_STEPS) -> None:
    x0 = make_params(torch.float64)
    f = Objective(x0)
    a = _trajectory(make_tz, clone_params(x0), f, use_closure, n)
    b = _trajectory(make_ref, clone_params(x0), f, False, n)
    for k, (x, y) in enumerate(zip(a, b)):
        if rtol == 0 and atol == 0:
            for i, (xi, yi) in enumerate(zip(x, y)):
                assert torch.equal(xi, yi), f"step {k}, tensor {i}: max diff {(xi - yi).abs().max()}"
        else:
            assert_all_close(x, y, rtol=rtol, atol=atol, msg=f"step {k}")
    # the trajectory is not trivial
    assert any(not torch.equal(p, q) for p, q in zip(a[-1], x0))


class LoopOptimizer(torch.optim.Optimizer):
    """A plain reference optimizer: ``direction(state, xs, gs, loss) -> ds`` is written with per-tensor loops, and
    the step is ``x ← x − d``."""

    def __init__(self, params, direction: Callable, needs_loss: bool = False):
        super().__init__(params, {})
        self.direction = direction
        self.needs_loss = needs_loss
        self.ref_state: dict = {"t": 0}
        self.last_loss: float | None = None

    @torch.no_grad()
    def step(self, closure=None, loss=None):  # type: ignore[override]
        params = [p for g in self.param_groups for p in g["params"]]
        grads = [p.grad.clone() for p in params]
        self.ref_state["t"] += 1
        ds = self.direction(self.ref_state, [p.clone() for p in params], grads, self.last_loss)
        for p, d in zip(params, ds):
            p.sub_(d)


def _loop_trajectory(direction: Callable, x0: list[torch.Tensor], f: Callable, n: int = N_STEPS
                     ) -> list[list[torch.Tensor]]:
    params = clone_params(x0)
    opt = LoopOptimizer(params, direction)
    out = []
    for _ in range(n):
        opt.zero_grad()
        loss = f(params)
        loss.backward()
        opt.last_loss = float(loss.detach())
        opt.step()
        out.append(snapshot(params))
    return out


def _compare_loop(make_tz: Callable, direction: Callable, use_closure: bool = True, rtol: float = 1e-9,
                  atol: float = 1e-12, n: int = N_STEPS) -> None:
    x0 = make_params(torch.float64)
    f = Objective(x0)
    a = _trajectory(make_tz, clone_params(x0), f, use_closure, n)
    b = _loop_trajectory(direction, x0, f, n)
    for k, (x, y) in enumerate(zip(a, b)):
        assert_all_close(x, y, rtol=rtol, atol=atol, msg=f"step {k}")
    assert any(not torch.equal(p, q) for p, q in zip(a[-1], x0))


def _apply(module: tz.core.Module, *updates: torch.Tensor, params: list[torch.Tensor] | None = None,
           grads: Sequence[torch.Tensor] | None = None, loss: float | None = None) -> list[torch.Tensor]:
    """Steps ``module`` on a sequence of single-tensor updates; returns its outputs (cloned)."""
    if params is None:
        params = [torch.zeros_like(updates[0])]
    outs = []
    for i, u in enumerate(updates):
        var = Var(params=params, closure=None, model=None, current_step=i)
        var.grad = [u.clone() if grads is None else grads[i].clone()]
        var.update = [u.clone()]
        var.loss = None if loss is None else torch.tensor(loss)
        outs.append(module.step(var).update[0].clone())
    return outs


# ================================================================================================== torch parity
TORCH_CASES: dict[str, tuple[Callable, Callable]] = {
    "adagrad": (lambda p: tz.Modular(p, Adagrad(), tz.m.LR(0.1)),
                lambda p: torch.optim.Adagrad(p, lr=0.1)),
    "adagrad_lr_decay_init_acc": (
        lambda p: tz.Modular(p, Adagrad(lr_decay=0.05, initial_accumulator_value=0.3, eps=1e-6), tz.m.LR(0.2)),
        lambda p: torch.optim.Adagrad(p, lr=0.2, lr_decay=0.05, initial_accumulator_value=0.3, eps=1e-6)),
    "adagrad_weight_decay": (lambda p: tz.Modular(p, tz.m.WeightDecay(0.1), Adagrad(lr_decay=0.01), tz.m.LR(0.1)),
                             lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.01, weight_decay=0.1)),
    # not fused into the parameter step (a module between Adagrad and LR)
    "adagrad_unfused": (lambda p: tz.Modular(p, Adagrad(lr_decay=0.05, alpha=2.0), tz.m.ClipValue(1e9), tz.m.LR(0.05)),
                        lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.05)),
    "rmsprop": (lambda p: tz.Modular(p, RMSprop(), tz.m.LR(0.01)),
                lambda p: torch.optim.RMSprop(p, lr=0.01)),
    "rmsprop_alpha_eps": (lambda p: tz.Modular(p, RMSprop(0.9, eps=1e-4), tz.m.LR(0.02)),
                          lambda p: torch.optim.RMSprop(p, lr=0.02, alpha=0.9, eps=1e-4)),
    "rmsprop_centered": (lambda p: tz.Modular(p, RMSprop(0.95, centered=True), tz.m.LR(0.01)),
                         lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.95, centered=True)),
    "rmsprop_centered_unfused": (lambda p: tz.Modular(p, RMSprop(centered=True), tz.m.ClipValue(1e9), tz.m.LR(0.01)),
                                 lambda p: torch.optim.RMSprop(p, lr=0.01, centered=True)),
    # torch's RMSprop momentum is HeavyBall after RMSprop; its weight_decay is WeightDecay before it
    "rmsprop_momentum_weight_decay": (
        lambda p: tz.Modular(p, tz.m.WeightDecay(0.05), RMSprop(centered=True), tz.m.HeavyBall(0.8), tz.m.LR(0.005)),
        lambda p: torch.optim.RMSprop(p, lr=0.005, momentum=0.8, weight_decay=0.05, centered=True)),
}


@pytest.mark.parametrize("use_closure", [True, False])
@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_matches_torch_optim(name: str, use_closure: bool) -> None:
    make_tz, make_torch = TORCH_CASES[name]
    _compare(make_tz, make_torch, use_closure)


@pytest.mark.parametrize("use_closure", [True, False])
@pytest.mark.parametrize("kwargs", [{}, dict(nplus=1.5, nminus=0.3, lb=1e-4, ub=0.05)])
def test_rprop_matches_torch_exactly(kwargs: dict, use_closure: bool) -> None:
    torch_kwargs = {}
    if kwargs:
        torch_kwargs = dict(etas=(kwargs["nminus"], kwargs["nplus"]), step_sizes=(kwargs["lb"], kwargs["ub"]))
    _compare(lambda p: tz.Modular(p, Rprop(backtrack=False, alpha=0.01, **kwargs)),
             lambda p: torch.optim.Rprop(p, lr=0.01, **torch_kwargs), use_closure, rtol=0, atol=0)


def test_adagrad_rmsprop_exact_in_float32() -> None:
    """The catalog's Adagrad check: step for step equal to torch.optim.Adagrad in fp32 (same operation order)."""
    for make_tz, make_torch in (
        (lambda p: tz.Modular(p, Adagrad(initial_accumulator_value=0.1), tz.m.LR(0.1)),
         lambda p: torch.optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.1, foreach=True)),
        (lambda p: tz.Modular(p, RMSprop(), tz.m.LR(0.01)), lambda p: torch.optim.RMSprop(p, lr=0.01, foreach=True)),
        (lambda p: tz.Modular(p, RMSprop(centered=True), tz.m.LR(0.01)),
         lambda p: torch.optim.RMSprop(p, lr=0.01, centered=True, foreach=True)),
    ):
        x0 = make_params(torch.float32)
        f = Objective(x0)
        a = _trajectory(make_tz, clone_params(x0), f, True, 10)
        b = _trajectory(make_torch, clone_params(x0), f, False, 10)
        for x, y in zip(a, b):
            for xi, yi in zip(x, y):
                assert torch.equal(xi, yi)


def test_per_group_settings_match_torch() -> None:
    def tz_groups(p):
        return [{"params": p[:4], "smoothing": 0.9, "eps": 1e-3, "lr": 0.02}, {"params": p[4:]}]

    def torch_groups(p):
        return [{"params": p[:4], "alpha": 0.9, "eps": 1e-3, "lr": 0.02}, {"params": p[4:]}]

    _compare(lambda p: tz.Modular(tz_groups(p), RMSprop(), tz.m.LR(0.01)),
             lambda p: torch.optim.RMSprop(torch_groups(p), lr=0.01))
    # (torch.optim.Adagrad reads initial_accumulator_value from its constructor only, not from the groups)
    _compare(lambda p: tz.Modular([{"params": p[:3], "lr_decay": 0.1, "eps": 1e-3}, {"params": p[3:]}],
                                  Adagrad(initial_accumulator_value=0.5), tz.m.LR(0.1)),
             lambda p: torch.optim.Adagrad([{"params": p[:3], "lr_decay": 0.1, "eps": 1e-3}, {"params": p[3:]}],
                                           lr=0.1, initial_accumulator_value=0.5))
    _compare(lambda p: tz.Modular([{"params": p[:3], "nplus": 1.1, "ub": 0.02}, {"params": p[3:]}],
                                  Rprop(backtrack=False, alpha=0.01)),
             lambda p: torch.optim.Rprop([{"params": p[:3], "etas": (0.5, 1.1), "step_sizes": (1e-6, 0.02)},
                                          {"params": p[3:]}], lr=0.01), rtol=0, atol=0)


# ================================================================================================== reference loops
def _adagrad_direction(lr, lr_decay=0.0, init=0.0, eps=1e-10, alpha=1.0, pow=2.0, use_sqrt=True, divide=False,
                       beta=None, decay=None):
    def direction(st, xs, gs, loss):
        t = st["t"]
        if "s" not in st:
            st["s"] = [torch.full_like(g, init) for g in gs]
        out = []
        for i, g in enumerate(gs):
            s = st["s"][i]
            if beta is None or t == 1:
                s = s + g.abs() ** pow
            else:
                s = beta * s + (1 - beta) * g.abs() ** pow
            if decay is not None:
                s = s * (1 - decay)
            st["s"][i] = s
            acc = s / t if divide else s
            den = acc ** (1 / pow) + eps if use_sqrt else acc + eps
            clr = alpha / (1 + (t - 1) * lr_decay)
            out.append(lr * clr * g / den)
        return out
    return direction


def test_adagrad_options_match_loop() -> None:
    kw = dict(lr_decay=0.02, initial_accumulator_value=0.1, eps=1e-6, alpha=0.7, pow=3.0, divide=True, beta=0.9,
              decay=0.01)
    _compare_loop(lambda p: tz.Modular(p, Adagrad(**kw), tz.m.LR(0.1)),
                  _adagrad_direction(0.1, **{k if k != "initial_accumulator_value" else "init": v
                                             for k, v in kw.items()}))
    _compare_loop(lambda p: tz.Modular(p, Adagrad(use_sqrt=False, initial_accumulator_value=1.0), tz.m.LR(0.1)),
                  _adagrad_direction(0.1, init=1.0, use_sqrt=False))


def test_adagrad_norm_matches_loop() -> None:
    def direction(st, xs, gs, loss, beta=0.8, decay=0.01, lr=0.3, eps=1e-6, lr_decay=0.05):
        t = st["t"]
        q = sum(float((g * g).sum()) for g in gs)
        a = st.get("A", 0.5)
        a = a + q if t == 1 else beta * a + (1 - beta) * q
        a = a * (1 - decay)
        st["A"] = a
        clr = 1 / (1 + (t - 1) * lr_decay)
        return [lr * clr * g / (eps + math.sqrt(a / t)) for g in gs]

    _compare_loop(lambda p: tz.Modular(p, AdagradNorm(lr_decay=0.05, initial_accumulator_value=0.5, eps=1e-6,
                                                      divide=True, beta=0.8, decay=0.01), tz.m.LR(0.3)), direction)


def test_adagrad_norm_constant_input() -> None:
    g = torch.tensor([3.0, -4.0], dtype=torch.float64)
    outs = _apply(AdagradNorm(eps=0), *[g] * 5)
    for t, o in enumerate(outs, 1):
        torch.testing.assert_close(o, g / (5 * math.sqrt(t)), rtol=1e-12, atol=0)
    # divide=True must not store A/t back (reference defect): with a constant input A/t = ‖g‖² at every step
    outs = _apply(AdagradNorm(eps=0, divide=True), *[g] * 5)
    for o in outs:
        torch.testing.assert_close(o, g / 5, rtol=1e-12, atol=0)
    outs = _apply(AdagradNorm(eps=0, use_sqrt=False), *[g] * 3)
    for t, o in enumerate(outs, 1):
        torch.testing.assert_close(o, g / (25 * t), rtol=1e-12, atol=0)


def _rmsprop_direction(lr, s=0.99, eps=1e-8, centered=False, debiased=False, amsgrad=False, pow=2.0,
                       init="zeros"):
    def direction(st, xs, gs, loss):
        t = st["t"]
        if "v" not in st:
            st["v"] = [g.abs() ** pow if init == "update" else torch.zeros_like(g) for g in gs]
            st["m"] = [torch.zeros_like(g) for g in gs]
            st["vmax"] = [torch.zeros_like(g) for g in gs]
        out = []
        for i, g in enumerate(gs):
            v = st["v"][i] = s * st["v"][i] + (1 - s) * g.abs() ** pow
            q = v
            if centered:
                m = st["m"][i] = s * st["m"][i] + (1 - s) * g
                q = v - m * m
            if amsgrad:
                q = st["vmax"][i] = torch.maximum(st["vmax"][i], q)
            d = q ** (1 / pow)
            if debiased:
                d = d / (1 - s**t) ** (1 / pow)
            out.append(lr * g / (d + eps))
        return out
    return direction


@pytest.mark.parametrize("kw", [dict(debiased=True), dict(amsgrad=True), dict(centered=True, amsgrad=True),
                                dict(centered=True, debiased=True, amsgrad=True, s=0.9),
                                dict(pow=3.0, init="update", eps=1e-4), dict(init="update", debiased=True)])
def test_rmsprop_variants_match_loop(kw: dict) -> None:
    tz_kw = {("smoothing" if k == "s" else k): v for k, v in kw.items()}
    _compare_loop(lambda p: tz.Modular(p, RMSprop(**tz_kw), tz.m.LR(0.01)), _rmsprop_direction(0.01, **kw))


def test_rmsprop_centered_amsgrad_keeps_centering() -> None:
    """Reference defect: with centered=True, amsgrad=True, 0.3.14 used the max of the uncentred v."""
    u1, u2 = torch.tensor([1.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    _, o2 = _apply(RMSprop(0.5, eps=0.0, centered=True, amsgrad=True), u1, u2)
    # v = 0.75, m = 0.75 -> v - m² = 0.1875 (the step-1 value 0.5 - 0.25 = 0.25 is larger and is kept by the max)
    torch.testing.assert_close(o2, u2 / math.sqrt(0.25))
    _, o2 = _apply(RMSprop(0.5, eps=0.0, centered=True), u1, u2)
    torch.testing.assert_close(o2, u2 / math.sqrt(0.1875))


def _rprop_direction(alpha=0.01, nplus=1.2, nminus=0.5, lb=1e-6, ub=50.0, backtrack=True):
    """Rprop with weight backtracking as in Riedmiller & Braun (1993): on a sign change the previous step is undone
    and the next step treats the sign product as 0; written element by element."""
    def direction(st, xs, gs, loss):
        out = []
        for i, g in enumerate(gs):
            g_flat = g.reshape(-1)
            if "delta" not in st:
                st.setdefault("delta", {})
                st.setdefault("prev", {})
                st.setdefault("allowed", {})
            if i not in st["delta"]:
                st["delta"][i] = [min(max(alpha, lb), ub)] * g_flat.numel()
                st["prev"][i] = [0.0] * g_flat.numel()
                st["allowed"][i] = [True] * g_flat.numel()
                first = True
            else:
                first = False
            d = torch.zeros_like(g_flat)
            for j in range(g_flat.numel()):
                sgn = float(torch.sign(g_flat[j]))
                if first:
                    step = st["delta"][i][j] * sgn
                    st["prev"][i][j] = step
                    d[j] = step
                    continue
                q = sgn * st["prev"][i][j] * (1.0 if st["allowed"][i][j] else 0.0)
                if q > 0:
                    st["delta"][i][j] = min(st["delta"][i][j] * nplus, ub)
                elif q < 0:
                    st["delta"][i][j] = max(st["delta"][i][j] * nminus, lb)
                if q < 0:
                    step = -st["prev"][i][j] if backtrack else 0.0
                else:
                    step = st["delta"][i][j] * sgn
                st["allowed"][i][j] = q >= 0
                st["prev"][i][j] = step
                d[j] = step
            out.append(d.view_as(g))
        return out
    return direction


@pytest.mark.parametrize("backtrack", [True, False])
def test_rprop_matches_elementwise_loop(backtrack: bool) -> None:
    _compare_loop(lambda p: tz.Modular(p, Rprop(alpha=0.05, nplus=1.3, nminus=0.4, lb=1e-3, ub=0.2,
                                                backtrack=backtrack)),
                  _rprop_direction(0.05, 1.3, 0.4, 1e-3, 0.2, backtrack), rtol=0, atol=0, n=15)


def test_rprop_first_step_and_state() -> None:
    u = torch.tensor([2.0, -3.0, 0.0])
    m = Rprop(alpha=100.0, ub=50.0)
    (o,) = _apply(m, u)
    torch.testing.assert_close(o, torch.tensor([50.0, -50.0, 0.0]))
    state = next(iter(m.state.values()))
    assert set(state) == {"magnitudes", "prev", "allowed"} and state["allowed"].dtype == torch.bool
    # prev does not alias the output
    o.add_(1)
    assert torch.equal(state["prev"], torch.tensor([50.0, -50.0, 0.0]))


def _lion_direction(lr, beta1=0.9, beta2=0.99):
    def direction(st, xs, gs, loss):
        if "m" not in st:
            st["m"] = [torch.zeros_like(g) for g in gs]
        out = []
        for i, g in enumerate(gs):
            c = beta1 * st["m"][i] + (1 - beta1) * g
            out.append(lr * torch.sign(c))
            st["m"][i] = beta2 * st["m"][i] + (1 - beta2) * g
        return out
    return direction


def test_lion_matches_loop() -> None:
    (o,) = _apply(Lion(), torch.tensor([0.5, -2.0, 0.0]))
    torch.testing.assert_close(o, torch.tensor([1.0, -1.0, 0.0]))
    _compare_loop(lambda p: tz.Modular(p, Lion(), tz.m.LR(0.01)), _lion_direction(0.01))
    _compare_loop(lambda p: tz.Modular(p, Lion(0.8, 0.95), tz.m.LR(0.02)), _lion_direction(0.02, 0.8, 0.95))


def _adan_direction(lr, b1=0.98, b2=0.92, b3=0.99, eps=1e-8):
    """Adan (Xie et al., Algorithm 1) in the paper's notation, with β_paper = 1 − keep factor, and the bias
    correction of the official implementation."""
    pb1, pb2, pb3 = 1 - b1, 1 - b2, 1 - b3

    def direction(st, xs, gs, loss):
        t = st["t"]
        if "m" not in st:
            st.update(m=[torch.zeros_like(g) for g in gs], v=[torch.zeros_like(g) for g in gs],
                      n=[torch.zeros_like(g) for g in gs], g_prev=[None] * len(gs))
        out = []
        for i, g in enumerate(gs):
            g_prev = st["g_prev"][i]
            st["m"][i] = (1 - pb1) * st["m"][i] + pb1 * g
            if g_prev is None:
                w = g
            else:
                st["v"][i] = (1 - pb2) * st["v"][i] + pb2 * (g - g_prev)
                w = g + (1 - pb2) * (g - g_prev)
            st["n"][i] = (1 - pb3) * st["n"][i] + pb3 * w * w
            m_hat = st["m"][i] / (1 - b1**t)
            v_hat = st["v"][i] / (1 - b2**t)
            n_hat = st["n"][i] / (1 - b3**t)
            out.append(lr * (m_hat + (1 - pb2) * v_hat) / (n_hat.sqrt() + eps))
            st["g_prev"][i] = g
        return out
    return direction


def test_adan_matches_loop() -> None:
    g = torch.tensor([0.5, -2.0, 1e-3], dtype=torch.float64)
    (o,) = _apply(Adan(), g)
    torch.testing.assert_close(o, g / (g.abs() + 1e-8), rtol=1e-12, atol=0)
    _compare_loop(lambda p: tz.Modular(p, Adan(), tz.m.LR(0.01)), _adan_direction(0.01))
    _compare_loop(lambda p: tz.Modular(p, Adan(0.9, 0.8, 0.95, eps=1e-6), tz.m.ClipValue(1e9), tz.m.LR(0.02)),
                  _adan_direction(0.02, 0.9, 0.8, 0.95, 1e-6))


def _aegd_direction(lr=0.1, c=1.0):
    """Liu & Tian (2020), Algorithm 1: v = ∇f/(2 sqrt(f + c)), r ← r/(1 + 2ηv²), θ ← θ − 2ηrv."""
    def direction(st, xs, gs, loss):
        s = math.sqrt(loss + c)
        if "r" not in st:
            st["r"] = [torch.full_like(g, s) for g in gs]
        out = []
        for i, g in enumerate(gs):
            v = g / (2 * s)
            st["r"][i] = st["r"][i] / (1 + 2 * lr * v * v)
            out.append(2 * lr * st["r"][i] * v)
        return out
    return direction


def test_aegd_first_step_and_loop() -> None:
    g = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    f0, lr, c = 2.5, 0.3, 1.5
    (o,) = _apply(AEGD(lr=lr, c=c), g, loss=f0)
    torch.testing.assert_close(o, lr * g / (1 + lr * g**2 / (2 * (f0 + c))), rtol=1e-7, atol=0)
    # the test objective goes below 0, so c = 20
    _compare_loop(lambda p: tz.Modular(p, AEGD(lr=0.05, c=20.0)), _aegd_direction(0.05, 20.0))


def test_aegd_and_adaptive_heavyball_need_the_loss() -> None:
    for module, name in ((AEGD(), "AEGD"), (AdaptiveHeavyBall(), "AdaptiveHeavyBall")):
        p = [torch.tensor([1.0, 2.0], requires_grad=True)]
        opt = tz.Modular(p, module)
        (p[0] ** 2).sum().backward()
        with pytest.raises(RuntimeError, match=name):
            opt.step()
        loss = (p[0] ** 2).sum()
        opt.step(loss=loss.detach())  # the loss passed to step is enough
        assert torch.isfinite(p[0]).all()


def test_aegd_rejects_non_positive_energy() -> None:
    with pytest.raises(ValueError, match="AEGD"):
        _apply(AEGD(c=1.0), torch.tensor([1.0]), loss=-2.0)
    with pytest.raises(ValueError, match="AEGD"):
        _apply(AEGD(c=1.0), torch.tensor([1.0]), loss=float("nan"))


def test_adaptive_heavyball_first_step_and_quadratic() -> None:
    torch.manual_seed(0)
    n = 12
    q = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))[0]
    a = q @ torch.diag(torch.logspace(0, 1, n, dtype=torch.float64)) @ q.T  # condition number 10
    a = (a + a.T) / 2
    x = torch.randn(n, dtype=torch.float64, requires_grad=True)

    def f(ps):
        return 0.5 * ps[0] @ a @ ps[0]

    x0 = x.detach().clone()
    g0 = a @ x0
    f0 = float(f([x0]))
    opt = tz.Modular([x], AdaptiveHeavyBall())

    def closure(backward=True):
        loss = f([x])
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(x.detach(), x0 - 2 * f0 / (g0 @ g0) * g0, rtol=1e-12, atol=1e-14)
    for _ in range(n):
        opt.step(closure)
    assert float(f([x]).detach()) < 1e-20 * f0


def test_adaptive_heavyball_matches_loop() -> None:
    f_star = -50.0

    def direction(st, xs, gs, loss):
        a = loss - f_star
        uu = sum(float((g * g).sum()) for g in gs)
        h = 2 * a / uu
        if "g_prev" not in st:
            out = [h * g for g in gs]
        else:
            ug = sum(float((g * gp).sum()) for g, gp in zip(gs, st["g_prev"]))
            b = st["f_prev"] - f_star
            mu = -a * ug / (b * uu + a * ug)
            out = [(1 + mu) * h * g - mu * (x - xp) for g, x, xp in zip(gs, xs, st["p_prev"])]
        st.update(g_prev=gs, p_prev=xs, f_prev=loss)
        return out

    _compare_loop(lambda p: tz.Modular(p, AdaptiveHeavyBall(f_star=f_star)), direction, n=10, rtol=1e-8)


def test_adaptive_heavyball_at_minimum_returns_update() -> None:
    m = AdaptiveHeavyBall(f_star=1.0)
    u = torch.tensor([1.0, -2.0])
    (o,) = _apply(m, u, loss=1.0)
    torch.testing.assert_close(o, u)
    assert all(len(s) == 0 for s in m.state.values()) and "f_prev" not in m.global_state


# ================================================================================================== catalog checks
def test_backtrack_on_sign_change() -> None:
    u1, u2 = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([1.0, 2.0, -3.0])
    o1, o2 = _apply(BacktrackOnSignChange(), u1, u2)
    torch.testing.assert_close(o1, u1)
    torch.testing.assert_close(o2, torch.tensor([1.0, -2.0, 3.0]))
    _, o2 = _apply(BacktrackOnSignChange(backtrack=False), u1, u2)
    torch.testing.assert_close(o2, torch.tensor([1.0, 0.0, 0.0]))
    # tracking the raw gradient: the update is replaced by the previous gradient where the gradient flips
    g1, g2 = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([-1.0, 1.0, 0.0])
    _, o2 = _apply(BacktrackOnSignChange(use_grad=True), u1, u2, grads=[g1, g2])
    torch.testing.assert_close(o2, torch.tensor([1.0, 2.0, -3.0]))


def test_backtrack_on_sign_change_honours_target() -> None:
    """Reference defect: 0.3.14 ignored `target`. With target='grad' the gradient is transformed, the update is not."""
    p = [torch.zeros(3, requires_grad=True)]
    opt = tz.Modular(p, BacktrackOnSignChange(backtrack=False, target="grad"), tz.m.LR(1.0))
    for g in (torch.tensor([1.0, -2.0, 3.0]), torch.tensor([1.0, 2.0, -3.0])):
        x_before = p[0].detach().clone()
        p[0].grad = g.clone()
        opt.step()
    torch.testing.assert_close(p[0].detach(), x_before - torch.tensor([1.0, 0.0, 0.0]))


def test_scale_lr_by_sign_change() -> None:
    us = [torch.tensor([1.0, -2.0, 3.0]), torch.tensor([1.0, 2.0, -3.0]), torch.tensor([1.0, 2.0, -3.0])]
    outs = _apply(ScaleLRBySignChange(), *us)
    for o, e in zip(outs, ([1, -2, 3], [1.2, 1.0, -1.5], [1.44, 1.2, -1.8])):
        torch.testing.assert_close(o, torch.tensor(e, dtype=torch.float32))
    # zeros leave the rate unchanged; clamping to [lb, ub]
    outs = _apply(ScaleLRBySignChange(lb=0.4, ub=1.3), torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]),
                  torch.tensor([-1.0, 1.0]), torch.tensor([-1.0, 1.0]))
    # rates: [1, 1] -> [0.5, 1] (flip, zero) -> [0.6, 1.2] -> [0.72, 1.3 (clamped from 1.44)]
    torch.testing.assert_close(outs[-1], torch.tensor([-0.72, 1.3]))


def test_sign_consistency_lrs_and_mask() -> None:
    us = [torch.tensor([1.0, -2.0, 3.0]), torch.tensor([1.0, 2.0, -3.0]), torch.tensor([1.0, 2.0, -3.0])]
    outs = _apply(SignConsistencyLRs(), *us)
    for o, e in zip(outs, ([1, 1, 1], [1.2, 0.5, 0.5], [1.44, 0.6, 0.6])):
        torch.testing.assert_close(o, torch.tensor(e, dtype=torch.float32))
    m = SignConsistencyLRs(lb=None, ub=1.3)
    outs = _apply(m, *us)
    torch.testing.assert_close(outs[-1], torch.tensor([1.3, 0.6, 0.6]))
    outs[-1].add_(100)  # the output is a copy
    assert float(next(iter(m.state.values()))["lrs"][0]) == pytest.approx(1.3)

    outs = _apply(SignConsistencyMask(), *us[:2])
    torch.testing.assert_close(outs[0], torch.zeros(3))
    torch.testing.assert_close(outs[1], torch.tensor([1.0, 0.0, 0.0]))


def test_sign_consistency_mask_does_not_alias_state() -> None:
    """Reference defect: the mask aliased the state buffer, so the module returned its input."""
    m = SignConsistencyMask()
    params = [torch.zeros(2)]
    u = torch.tensor([3.0, -4.0])
    var = Var(params=params, closure=None, model=None, current_step=0)
    var.grad, var.update = [u.clone()], [u.clone()]
    m.step(var)
    var = Var(params=params, closure=None, model=None, current_step=1)
    var.grad, var.update = [u.clone()], [u.clone()]
    out = m.step(var).update[0]
    torch.testing.assert_close(out, torch.ones(2))
    assert torch.equal(next(iter(m.state.values()))["prev"], u)


def test_mars_correction() -> None:
    u1, u2, u3 = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 1.0]), torch.tensor([-1.0, 0.5])
    o1, o2, o3 = _apply(MARSCorrection(max_norm=None), u1, u2, u3)
    torch.testing.assert_close(o1, u1)
    torch.testing.assert_close(o2, u2 + 0.225 * (u2 - u1))
    torch.testing.assert_close(o3, u3 + 0.225 * (u3 - u2))
    # global norm clipping
    params = [torch.zeros(2), torch.zeros(3)]
    m = MARSCorrection(beta=0.5, scaling=1.0, max_norm=1.0)
    outs = []
    for us in ([torch.tensor([0.1, 0.2]), torch.tensor([0.0, 0.1, 0.0])],
               [torch.tensor([3.0, 1.0]), torch.tensor([1.0, 0.0, -2.0])]):
        var = Var(params=params, closure=None, model=None, current_step=0)
        var.grad, var.update = [u.clone() for u in us], [u.clone() for u in us]
        outs.append(m.step(var).update)
    torch.testing.assert_close(outs[0][0], torch.tensor([0.1, 0.2]))  # below the bound: unchanged
    c = [torch.tensor([3.0, 1.0]) * 2 - torch.tensor([0.1, 0.2]), torch.tensor([1.0, 0.0, -2.0]) * 2
         - torch.tensor([0.0, 0.1, 0.0])]
    norm = torch.cat(c).norm()
    for o, ci in zip(outs[1], c):
        torch.testing.assert_close(o, ci / norm)


def test_dual_norm_correction() -> None:
    torch.manual_seed(0)
    g2, g3, g1, gthin = torch.randn(4, 3), torch.randn(3, 2, 5), torch.randn(6), torch.randn(1, 4)
    params = [torch.zeros_like(t) for t in (g2, g3, g1, gthin)]
    var = Var(params=params, closure=None, model=None, current_step=0)
    var.grad = [g2, g3, g1, gthin]
    var.update = [t.clone() for t in var.grad]
    out = DualNormCorrection().step(var).update
    torch.testing.assert_close(out[0], g2.square().sum() * g2)
    for k in range(5):  # one inner product per trailing index
        torch.testing.assert_close(out[1][:, :, k], g3[:, :, k].square().sum() * g3[:, :, k])
    assert torch.equal(out[2], g1) and torch.equal(out[3], gthin)  # not matrices: unchanged
    # the update differs from the gradient
    var.update = [torch.ones(4, 3), torch.ones(3, 2, 5), g1.clone(), gthin.clone()]
    out = DualNormCorrection().step(var).update
    torch.testing.assert_close(out[0], g2.sum() * torch.ones(4, 3))
    # after orthogonalisation (X = UVᵀ of G) the scale is the nuclear norm of G
    u_, s_, vh = torch.linalg.svd(g2, full_matrices=False)
    var.update = [u_ @ vh, g3.clone(), g1.clone(), gthin.clone()]
    out = DualNormCorrection().step(var).update
    torch.testing.assert_close(out[0], s_.sum() * (u_ @ vh))


def test_orthograd() -> None:
    torch.manual_seed(0)
    xs = [torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    us = [torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    var = Var(params=xs, closure=None, model=None, current_step=0)
    var.grad, var.update = [u.clone() for u in us], [u.clone() for u in us]
    out = OrthoGrad().step(var).update
    x, u, o = (torch.cat([t.ravel() for t in ts]) for ts in (xs, us, out))
    assert abs(float(o @ x)) < 1e-8 * float(x.norm() * u.norm())
    torch.testing.assert_close(o.norm(), u.norm())
    # without renormalisation: the plain projection (eps included)
    var.update = [t.clone() for t in us]
    out = OrthoGrad(eps=0.5, renormalize=False).step(var).update
    expected = u - (x @ u) / (x @ x + 0.5) * x
    torch.testing.assert_close(torch.cat([t.ravel() for t in out]), expected)
    # zero weights and a zero update stay finite
    var = Var(params=[torch.zeros(3)], closure=None, model=None, current_step=0)
    var.grad, var.update = [torch.zeros(3)], [torch.zeros(3)]
    assert torch.equal(OrthoGrad(eps=0).step(var).update[0], torch.zeros(3))


# ================================================================================================== inner and misc
@pytest.mark.parametrize("make", [lambda i: Adagrad(eps=0, inner=i), lambda i: AdagradNorm(eps=0, inner=i),
                                  lambda i: RMSprop(0.0, eps=0, inner=i)])
def test_inner_sees_closure_and_statistics_see_raw_update(make) -> None:
    seen = {}

    class Double(tz.core.Module):
        def step(self, var):
            seen["loss"] = var.get_loss(False)
            seen["closure"] = var.closure
            var.update = [u * 2 for u in var.get_update()]
            return var

    p = [torch.tensor([1.0, -2.0], requires_grad=True)]
    opt = tz.Modular(p, make(Double()), tz.m.LR(1.0))

    def closure(backward=True):
        loss = (p[0] ** 2).sum()
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    g = torch.tensor([2.0, -4.0])
    opt.step(closure)
    assert seen["closure"] is not None and float(seen["loss"].detach()) == 5.0
    # denominator from the raw update u = g, numerator inner(u) = 2g
    if isinstance(opt.modules[0], AdagradNorm):
        expected = 2 * g / g.norm()
    else:
        expected = 2 * g / g.abs()
    torch.testing.assert_close(p[0].detach(), torch.tensor([1.0, -2.0]) - expected)


GROUP_CASES: dict[str, tuple[Callable, dict, dict]] = {
    # module factory, settings of group 1, settings of group 2
    "Adagrad": (lambda **kw: Adagrad(**kw), dict(lr_decay=0.1, eps=1e-3, alpha=0.5, beta=0.9, decay=0.01),
                dict(initial_accumulator_value=0.2, decay=None)),
    "RMSprop": (lambda **kw: RMSprop(debiased=True, **kw), dict(smoothing=0.9, eps=1e-4), dict(smoothing=0.5)),
    "Rprop": (lambda **kw: Rprop(**kw), dict(nplus=1.1, nminus=0.3, lb=1e-3, ub=0.05, alpha=0.02),
              dict(alpha=0.005)),
    "ScaleLRBySignChange": (lambda **kw: ScaleLRBySignChange(**kw), dict(nplus=1.5, lb=0.1, ub=2.0, alpha=0.5),
                            dict(nminus=0.2)),
    "SignConsistencyLRs": (lambda **kw: SignConsistencyLRs(**kw), dict(nplus=1.5, lb=None, alpha=0.5),
                           dict(ub=None, nminus=0.2)),
    "Lion": (lambda **kw: Lion(**kw), dict(beta1=0.5, beta2=0.9), dict(beta1=0.95)),
    "Adan": (lambda **kw: Adan(**kw), dict(beta1=0.9, beta2=0.8, beta3=0.95, eps=1e-4), dict(beta2=0.5)),
    "MARSCorrection": (lambda **kw: MARSCorrection(max_norm=None, **kw), dict(beta=0.5, scaling=0.5),
                       dict(scaling=0.1)),
    "AEGD": (lambda **kw: AEGD(**kw), dict(lr=0.05, c=30.0), dict(c=20.0)),
}


@pytest.mark.parametrize("name", list(GROUP_CASES))
def test_per_group_settings_equal_separate_optimizers(name: str) -> None:
    """Elementwise modules are separable: per-group settings (per-tensor lists inside the foreach calls) give the
    same steps as one optimizer per group constructed with those settings."""
    make, kw1, kw2 = GROUP_CASES[name]
    x0 = make_params(torch.float64)
    f = Objective(x0)
    lr = [] if name == "AEGD" else [tz.m.LR(0.01)]  # AEGD has its own `lr`: no LR after it
    pa = clone_params(x0)
    opt = tz.Modular([{"params": pa[:4], **kw1}, {"params": pa[4:], **kw2}], make(), *lr)
    pb = clone_params(x0)
    opts = [tz.Modular(pb[:4], make(**kw1), *lr), tz.Modular(pb[4:], make(**kw2), *lr)]
    for _ in range(6):
        for params, optimizers in ((pa, [opt]), (pb, opts)):
            for o in optimizers:
                o.zero_grad()
            loss = f(params)
            loss.backward()
            for o in optimizers:
                o.step(loss=loss.detach())
        assert_all_close(pa, pb, rtol=1e-12, atol=1e-15)


def test_adagrad_norm_per_group_eps_alpha() -> None:
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = tz.Modular([{"params": [a], "eps": 1.0, "alpha": 2.0}, {"params": [b], "lr_decay": 1.0}], AdagradNorm(),
                     tz.m.LR(1.0))
    for _ in range(2):
        a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
        opt.step()
    # A = 25 then 50; a: 2/(1 + 5) + 2/(1 + sqrt 50); b: 1/5 + (1/2)/sqrt(50)
    torch.testing.assert_close(a.detach(), -3.0 * torch.tensor([2 / 6 + 2 / (1 + 50**0.5), 0.0]))
    torch.testing.assert_close(b.detach(), -4.0 * torch.tensor([1 / 5 + 0.5 / 50**0.5]))


def test_direct_step_equals_unfused() -> None:
    """Adagrad, RMSprop and Adan right before the final LR update the parameters themselves; the result is the same
    as with the output materialised."""
    for make in (lambda: Adagrad(lr_decay=0.1, alpha=0.5), lambda: RMSprop(centered=True, debiased=True),
                 lambda: Adan()):
        x0 = make_params(torch.float64)
        f = Objective(x0)
        a = _trajectory(lambda p, make=make: tz.Modular(p, make(), tz.m.LR(0.01)), clone_params(x0), f, True, 8)
        b = _trajectory(lambda p, make=make: tz.Modular(p, make(), tz.m.ClipValue(1e9), tz.m.LR(0.01)),
                        clone_params(x0), f, True, 8)
        for x, y in zip(a, b):
            assert_all_close(x, y, rtol=1e-12, atol=1e-15)


def test_outputs_do_not_alias_grad_or_state() -> None:
    """Modules that read the gradient without copying it must return new tensors: modifying the output in place
    (as a later module may) changes neither p.grad nor the module state."""
    factories = [lambda: Adagrad(), lambda: AdagradNorm(), lambda: RMSprop(), lambda: Rprop(), lambda: Lion(),
                 lambda: Adan(), lambda: MARSCorrection(), lambda: ScaleLRBySignChange(),
                 lambda: SignConsistencyMask(), lambda: SignConsistencyLRs()]
    for make in factories:
        module = make()
        p = [torch.tensor([1.0, -2.0], requires_grad=True)]
        p[0].grad = torch.tensor([0.5, 1.5])
        outs = []
        for step in range(3):
            var = Var(params=p, closure=None, model=None, current_step=step)
            var.grad = [p[0].grad]
            out = module.step(var).update
            outs.append(out[0].clone())
            out[0].mul_(1000)
            assert torch.equal(p[0].grad, torch.tensor([0.5, 1.5])), type(module).__name__
        # a fresh module fed the same inputs gives the same outputs: the in-place edits didn't reach the state
        fresh = make()
        for step, o in enumerate(outs):
            var = Var(params=p, closure=None, model=None, current_step=step)
            var.grad = [p[0].grad]
            assert torch.equal(fresh.step(var).update[0], o), type(module).__name__


@pytest.mark.parametrize("make", [
    lambda: Adagrad(lr_decay=-1), lambda: Adagrad(eps=-1), lambda: Adagrad(pow=0), lambda: Adagrad(beta=1.5),
    lambda: Adagrad(decay=-0.1), lambda: Adagrad(initial_accumulator_value=-1), lambda: AdagradNorm(beta=2),
    lambda: AdagradNorm(eps=-1), lambda: RMSprop(smoothing=1.5), lambda: RMSprop(eps=-1), lambda: RMSprop(pow=-2),
    lambda: RMSprop(init="ones"), lambda: RMSprop(centered=True, init="update"), lambda: Rprop(nplus=0),
    lambda: Rprop(nminus=-1), lambda: Rprop(lb=1.0, ub=0.5), lambda: Rprop(alpha=0), lambda: Rprop(lb=-1),
    lambda: ScaleLRBySignChange(nminus=0), lambda: ScaleLRBySignChange(target="nope"),
    lambda: SignConsistencyLRs(lb=2, ub=1), lambda: SignConsistencyLRs(nplus="1"),
    lambda: BacktrackOnSignChange(target="x"), lambda: Lion(beta1=1.5), lambda: Lion(beta2=-0.1),
    lambda: Adan(beta1=1.0), lambda: Adan(eps=-1), lambda: AEGD(lr=-1), lambda: AEGD(c="1"),
    lambda: AdaptiveHeavyBall(f_star=None), lambda: MARSCorrection(beta=1.0), lambda: MARSCorrection(max_norm=0),
    lambda: MARSCorrection(scaling=-1), lambda: OrthoGrad(eps=-1), lambda: DualNormCorrection(target="nope"),
])
def test_invalid_arguments_fail_at_construction(make) -> None:
    with pytest.raises((ValueError, TypeError)):
        make()


def test_invalid_argument_errors_name_the_class() -> None:
    for make, name in ((lambda: Adagrad(eps=-1), "Adagrad"), (lambda: RMSprop(smoothing=2), "RMSprop"),
                       (lambda: Rprop(nplus=-1), "Rprop"), (lambda: Lion(beta1=2), "Lion"),
                       (lambda: Adan(beta2=2), "Adan"), (lambda: MARSCorrection(beta=1), "MARSCorrection")):
        with pytest.raises((ValueError, TypeError), match=name):
            make()
