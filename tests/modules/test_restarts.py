"""Restart strategies: the sweep, each catalog check (with a history-keeping test module and, when available, the
library's L-BFGS and Polak-Ribière), and Powell's tests on conjugate gradient with exact line searches."""
from __future__ import annotations

import importlib

import pytest
import torch
from sweep import check_module

import torchzero as tz
from torchzero.core import Module, Var
from torchzero.modules.restarts.restarts import (
    BirginMartinezRestart,
    PowellRestart,
    RestartEvery,
    RestartOnStuck,
    RestartStrategyBase,
)

F64 = torch.float64


class History(Module):
    """Keeps one entry per call after the first (like the pair history of L-BFGS); outputs the update unchanged."""

    def __init__(self):
        super().__init__()
        self.resets = 0

    def step(self, var: Var) -> Var:
        gs = self.global_state
        if gs.get("seen"):
            gs["history"] = gs.get("history", 0) + 1
        gs["seen"] = True
        var.get_update()
        return var

    def reset(self) -> None:
        self.resets += 1
        super().reset()


def _run(modules: list[Module], n: int, f=lambda x: (x**2).sum(), x0=(1.0, -2.0), record=None) -> list:
    x = torch.tensor(x0, dtype=F64, requires_grad=True)
    opt = tz.Modular([x], *modules)
    out = []
    for _ in range(n):
        def closure(backward=True):
            loss = f(x)
            if backward:
                opt.zero_grad()
                loss.backward()
            return loss
        opt.step(closure)
        out.append(record() if record is not None else x.detach().clone())
    return out


SWEEP = {
    "RestartEvery": lambda: [RestartEvery(tz.m.Adam(), 2), tz.m.LR(0.01)],
    "RestartEvery_ndim": lambda: [RestartEvery([tz.m.EMA(0.9), tz.m.Adam()], "ndim"), tz.m.LR(0.01)],
    "RestartEvery_none": lambda: [tz.m.Adam(), RestartEvery(None, 2), tz.m.LR(0.01)],
    "RestartOnStuck": lambda: [RestartOnStuck(tz.m.Adam(), tol=10.0, n_tol=2), tz.m.LR(0.01)],
    "RestartOnStuck_none": lambda: [tz.m.Adam(), RestartOnStuck(None, tol=10.0, n_tol=2), tz.m.LR(0.01)],
    "PowellRestart": lambda: [PowellRestart(tz.m.Adam()), tz.m.LR(0.01)],
    "PowellRestart_none": lambda: [tz.m.HeavyBall(0.9), PowellRestart(None, cond1=None), tz.m.LR(0.01)],
    "BirginMartinezRestart": lambda: [BirginMartinezRestart(tz.m.Adam(), cond=0.5), tz.m.LR(0.01)],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    check_module(SWEEP[name])


@pytest.mark.parametrize("make", [lambda: RestartEvery(None, 0), lambda: RestartEvery(None, "n"),
                                  lambda: RestartOnStuck(None, tol=-1), lambda: RestartOnStuck(None, n_tol=0),
                                  lambda: PowellRestart(None, cond1=-0.1), lambda: BirginMartinezRestart("adam"),
                                  lambda: BirginMartinezRestart(tz.m.Adam(), cond=-1)])
def test_invalid_arguments(make) -> None:
    with pytest.raises((ValueError, TypeError)):
        make()


class Always(RestartStrategyBase):
    def __init__(self, modules=None):
        super().__init__(None, modules)

    def should_reset(self, var):
        return True


def test_base_always_reset_leaves_wrapped_state_empty() -> None:
    h = History()
    lengths = _run([Always(h), tz.m.LR(0.1)], 5, record=lambda: h.global_state.get("history", 0))
    assert lengths == [0] * 5 and h.resets == 5
    adam = tz.m.Adam()
    steps = _run([Always(adam), tz.m.LR(0.1)], 3, record=lambda: adam.global_state["step"])
    assert steps == [1, 1, 1]


def test_base_update_checks_and_apply_does_not() -> None:
    adam = tz.m.Adam()
    resets = []
    original_reset = adam.reset
    adam.reset = lambda: (resets.append(1), original_reset())  # type: ignore[method-assign]
    m = Always(adam)
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    var = Var([x], None, None, 0)
    var.grad = [torch.tensor([1.0, -1.0])]
    m.update(var)
    assert len(resets) == 1 and var.update is None  # update checks, resets and updates; the update is untouched
    out = m.apply(var)
    assert len(resets) == 1  # apply doesn't check again
    torch.testing.assert_close(out.update[0], torch.tensor([1.0, -1.0]), atol=1e-6, rtol=0)  # Adam's 1st step


def test_restart_every_check() -> None:
    h = History()
    lengths = _run([RestartEvery(h, 4), tz.m.LR(0.1)], 12, record=lambda: h.global_state.get("history", 0))
    assert lengths == [0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 0]
    h = History()
    lengths = _run([h, RestartEvery(None, 4), tz.m.LR(0.1)], 12, record=lambda: h.global_state.get("history", 0))
    assert lengths == [0, 1, 2, 0, 0, 1, 2, 0, 0, 1, 2, 0]


def test_restart_every_ndim() -> None:
    h = History()
    lengths = _run([RestartEvery(h, "ndim"), tz.m.LR(0.1)], 5, record=lambda: h.global_state.get("history", 0))
    assert lengths == [0, 0, 1, 0, 1]  # 2 scalars: every 2nd step restarts


def _lbfgs():
    mod = pytest.importorskip("torchzero.modules.quasi_newton.lbfgs")
    return mod.LBFGS()


def _history_len(lbfgs: Module) -> int:
    for key in ("s_history", "S", "s"):
        if key in lbfgs.global_state:
            return len(lbfgs.global_state[key])
    for s in lbfgs.state.values():
        for key in ("s_history",):
            if key in s:
                return len(s[key])
    return 0


def test_restart_every_check_with_lbfgs() -> None:
    lbfgs = _lbfgs()
    f = lambda x: (x**2).sum() + 0.1 * (x**4).sum()
    lengths = _run([RestartEvery(lbfgs, 4), tz.m.LR(0.1)], 12, f=f, record=lambda: _history_len(lbfgs))
    assert lengths == [0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 0]
    lbfgs = _lbfgs()
    lengths = _run([lbfgs, RestartEvery(None, 4), tz.m.LR(0.1)], 12, f=f, record=lambda: _history_len(lbfgs))
    assert lengths == [0, 1, 2, 0, 0, 1, 2, 0, 0, 1, 2, 0]


@pytest.mark.parametrize("wrapped", [True, False])
def test_restart_on_stuck_check(wrapped: bool) -> None:
    h = History()
    zero = tz.m.LR(0.0)  # an optimizer that never moves
    n_tol = 3
    modules = [RestartOnStuck(h, n_tol=n_tol), zero] if wrapped else [h, RestartOnStuck(None, n_tol=n_tol), zero]
    resets = _run(modules, 10, record=lambda: h.resets)
    if wrapped:
        # step 1 stores x; steps 2..4 are stuck: the reset happens at the start of step n_tol + 1 = 4; then the
        # module's own state is cleared, so step 5 stores x again and step 8 resets
        assert resets == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    else:
        # the reset of the whole optimizer happens after step 4 (and after step 8)
        assert resets == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]


def test_restart_on_stuck_moving_resets_count() -> None:
    h = History()
    resets = _run([RestartOnStuck(h, n_tol=2), tz.m.LR(0.1)], 8, record=lambda: h.resets)
    assert resets == [0] * 8


def test_birgin_martinez_check() -> None:
    xs = _run([BirginMartinezRestart(tz.m.Negate()), tz.m.LR(0.1)], 1, f=lambda x: 0.5 * (x**2).sum())
    torch.testing.assert_close(xs[0], torch.tensor([0.9, -1.8], dtype=F64))


def test_birgin_martinez_keeps_acute_updates_and_resets() -> None:
    h = History()
    xs = _run([BirginMartinezRestart(h), tz.m.LR(0.1)], 2, f=lambda x: 0.5 * (x**2).sum())
    torch.testing.assert_close(xs[1], torch.tensor([0.81, -1.62], dtype=F64))
    assert h.resets == 0
    neg = tz.m.Negate()
    calls = []
    neg.reset = lambda: calls.append(1)  # type: ignore[method-assign]
    _run([BirginMartinezRestart(neg), tz.m.LR(0.1)], 3, f=lambda x: 0.5 * (x**2).sum())
    assert len(calls) == 3


# --------------------------------------------------------------------------------------------------
# Powell's restarts on conjugate gradient
# --------------------------------------------------------------------------------------------------
class PR(Module):
    """Plain Polak–Ribière direction ``u = g + β u_prev``, ``β = gᵀ(g − g_prev)/‖g_prev‖²`` (test helper)."""

    def step(self, var: Var) -> Var:
        g = torch.cat([t.reshape(-1) for t in var.get_grad()])
        gs = self.global_state
        if "g_prev" in gs:
            beta = float(g @ (g - gs["g_prev"]) / (gs["g_prev"] @ gs["g_prev"]))
            u = g + beta * gs["u_prev"]
        else:
            u = g.clone()
        gs["g_prev"], gs["u_prev"] = g.clone(), u.clone()
        var.update = [u.view_as(var.params[0])]
        return var


class ExactQuadraticLS(Module):
    """Exact line search on ``½xᵀAx − bᵀx``: ``α = uᵀg/(uᵀAu)`` (test helper)."""

    def __init__(self, A):
        super().__init__()
        self.A = A

    def step(self, var: Var) -> Var:
        u, g = var.get_update()[0], var.get_grad()[0]
        var.update = [u * float(u @ g / (u @ self.A @ u))]
        return var


def _quadratic(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    A = Q @ torch.diag(torch.linspace(1, 10, n, dtype=F64)) @ Q.T
    b = torch.randn(n, generator=gen, dtype=F64)
    return A, b, (lambda x: 0.5 * x @ A @ x - b @ x)


def _counting_powell(**kwargs):
    calls = []
    pr = PowellRestart(None, **kwargs)
    orig = pr.should_reset

    def should_reset(var):
        out = orig(var)
        calls.append(out)
        return out

    pr.should_reset = should_reset  # type: ignore[method-assign]
    return pr, calls


@pytest.mark.parametrize("cg", ["test", "library"])
def test_powell_never_triggers_on_quadratic_with_exact_line_search(cg: str) -> None:
    A, b, f = _quadratic()
    n = 6
    if cg == "library":
        mod = pytest.importorskip("torchzero.modules.conjugate_gradient")
        direction = mod.PolakRibiere(restart_interval=None)
    else:
        direction = PR()
    pr, calls = _counting_powell()
    xs = _run([direction, pr, ExactQuadraticLS(A)], n, f=f, x0=[0.0] * n)
    assert calls == [False] * n
    x_star = torch.linalg.solve(A, b)
    torch.testing.assert_close(xs[-1], x_star, rtol=1e-9, atol=1e-9)  # n-step termination preserved


def test_powell_tests_fire() -> None:
    A, b, f = _quadratic()
    # test 2: an update that is not downhill enough (u = 3g) fires on the second step, test 1 disabled
    pr, calls = _counting_powell(cond1=None)
    _run([tz.m.Mul(3.0), pr, tz.m.LR(0.01)], 3, f=f, x0=[0.0] * 6)
    assert calls == [False, True, False]  # the step after a restart only stores g_prev again
    # test 1: steepest descent with a tiny step: consecutive gradients are nearly parallel
    pr, calls = _counting_powell(cond2=None)
    _run([pr, tz.m.LR(1e-4)], 3, f=f, x0=[0.0] * 6)
    assert calls == [False, True, False]
    # with modules given, the wrapped module is reset
    h = History()
    _run([PowellRestart(h, cond1=None), tz.m.Mul(3.0), tz.m.LR(0.01)], 3, f=f, x0=[0.0] * 6)
    assert h.resets == 0  # the restart module sees the incoming update (the gradient): never fires
    h = History()
    _run([tz.m.Mul(3.0), PowellRestart(h, cond1=None), tz.m.LR(0.01)], 3, f=f, x0=[0.0] * 6)
    assert h.resets == 1


def test_library_exports_importable() -> None:
    mod = importlib.import_module("torchzero.modules.restarts")
    assert set(mod.__all__) == {"RestartStrategyBase", "RestartEvery", "RestartOnStuck", "PowellRestart",
                                "BirginMartinezRestart"}
