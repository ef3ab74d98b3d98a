"""L-BFGS and L-SR1: the shared sweep, the trajectory of ``torch.optim.LBFGS`` (fixed step), the two-loop recursion
against a dense construction, the operators from ``get_H``, L-SR1 against dense SR1, damping, and the pair tests."""
from __future__ import annotations

import math

import pytest
import torch
from sweep import Objective, assert_all_close, check_module, clone_params, make_params, snapshot

import torchzero as tz
from torchzero.core import Module, Var
from torchzero.modules.quasi_newton.bfgs_family import bfgs_H_
from torchzero.modules.quasi_newton.damping import double_damping, powell_damping
from torchzero.modules.quasi_newton.lbfgs import LBFGS, LBFGSOperator, lbfgs_Hx_
from torchzero.modules.quasi_newton.lsr1 import LSR1, LSR1Operator
from torchzero.modules.quasi_newton.other_updates import SR1


@pytest.fixture(autouse=True)
def _float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


SWEEP = {
    "LBFGS": lambda: [LBFGS(), tz.m.LR(0.1)],
    "LBFGS_small_history_no_scale": lambda: [LBFGS(history_size=2, scale_first=False), tz.m.LR(0.01)],
    "LBFGS_damping_restart_freq": lambda: [LBFGS(damping="powell", ptol_restart=True, gtol_restart=True,
                                                 update_freq=2), tz.m.LR(0.1)],
    "LBFGS_double_inner_not_last": lambda: [LBFGS(damping="double", inner=tz.m.EMA(0.5)), tz.m.ClipValue(1.0),
                                            tz.m.LR(0.1)],
    "LBFGS_last": lambda: [LBFGS(history_size=3)],
    "LSR1": lambda: [LSR1(), tz.m.LR(0.01)],
    "LSR1_options": lambda: [LSR1(history_size=2, ptol=1e-12, gtol=1e-12, scale_first=True, damping="double"),
                             tz.m.LR(0.01)],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    check_module(SWEEP[name])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_cuda(name: str) -> None:
    check_module(SWEEP[name], device="cuda")


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def random_spd(n: int, seed: int, cond: float = 30.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    return (Q * torch.logspace(0, math.log10(cond), n)) @ Q.T


def feed(module: Module, xs, gs, p: torch.Tensor | None = None):
    """Drives ``module`` with explicit points and incoming updates (1-D tensors); returns outputs and the param."""
    if p is None:
        p = xs[0].clone()
    outs = []
    for x, g in zip(xs, gs):
        p.copy_(x)
        var = Var(params=[p], closure=None, model=None, current_step=0)
        var.grad = [g.clone()]
        var.update = [g.clone()]
        outs.append(module.step(var).update[0].clone())
    return outs, p


def history(m: Module) -> tuple[list, list]:
    return list(m.global_state["s_history"]), list(m.global_state["y_history"])


def quadratic_pairs(n: int, k: int, seed: int):
    A = random_spd(n, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    xs = [torch.randn(n, generator=gen) for _ in range(k)]
    return A, xs, [A @ x for x in xs]


# --------------------------------------------------------------------------------------------------
# torch.optim.LBFGS
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("history_size,lr", [(10, 0.5), (3, 0.3)])
def test_matches_torch_lbfgs_fixed_step(history_size, lr):
    """``torch.optim.LBFGS(max_iter=1)`` without line search takes ``x ← x + t·d`` with ``t = min(1, 1/‖g‖₁)·lr`` on
    the first step and ``t = lr`` after; pairs are stored when ``sᵀy > 1e-10``."""
    x0 = make_params(torch.float64)
    f = Objective(x0)

    def run(make, use_closure):
        params = clone_params(x0)
        opt = make(params)
        traj = []
        for _ in range(30):
            def closure(backward=True):
                loss = f(params)
                if backward:
                    opt.zero_grad()
                    loss.backward()
                return loss
            if use_closure:
                opt.step(closure)
            else:
                closure()
                opt.step()
            traj.append(snapshot(params))
        return traj

    ours = run(lambda p: tz.Modular(p, LBFGS(history_size=history_size, sy_tol=1e-10), tz.m.LR(lr)), False)
    ref = run(lambda p: torch.optim.LBFGS(p, lr=lr, max_iter=1, history_size=history_size, tolerance_grad=-1,
                                          tolerance_change=-1), True)
    for k, (a, b) in enumerate(zip(ours, ref)):
        assert_all_close(a, b, rtol=1e-6, atol=1e-12, msg=f"step {k}")


# --------------------------------------------------------------------------------------------------
# the two-loop recursion and the operator
# --------------------------------------------------------------------------------------------------
def test_two_loop_equals_dense_construction():
    n = 7
    A, xs, gs = quadratic_pairs(n, 6, 0)
    m = LBFGS(history_size=10)
    _, p = feed(m, xs, gs)
    S, Y = history(m)
    assert len(S) == 5
    gamma = (S[-1] @ Y[-1]) / (Y[-1] @ Y[-1])
    H = torch.eye(n) * gamma
    for s, y in zip(S, Y):
        H = bfgs_H_(H, s, y, s @ y)
    g = torch.randn(n, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(lbfgs_Hx_(g.clone(), S, Y, list(m.global_state["sy_history"])), H @ g)
    out, _ = feed(m, [xs[-1]], [g], p=p)  # the module's output on the same history
    S2, Y2 = history(m)
    gamma = (S2[-1] @ Y2[-1]) / (Y2[-1] @ Y2[-1])
    H = torch.eye(n) * gamma
    for s, y in zip(S2, Y2):
        H = bfgs_H_(H, s, y, s @ y)
    torch.testing.assert_close(out[0], H @ g)


def test_history_size_limits_pairs():
    A, xs, gs = quadratic_pairs(5, 8, 1)
    m = LBFGS(history_size=3)
    _, p = feed(m, xs, gs)
    S, _ = history(m)
    assert len(S) == 3
    torch.testing.assert_close(S[-1], xs[-1] - xs[-2])
    torch.testing.assert_close(S[0], xs[-3] - xs[-4])


def test_operator_matvec_inverts_solve():
    n = 6
    A, xs, gs = quadratic_pairs(n, 5, 2)
    m = LBFGS()
    _, p = feed(m, xs, gs)
    H = m.get_H(Var(params=[p], closure=None, model=None, current_step=0))
    assert isinstance(H, LBFGSOperator)
    b = torch.randn(n, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(H.matvec(H.solve(b)), b)
    torch.testing.assert_close(H.solve(H.matvec(b)), b)
    Bd = H.to_tensor()
    torch.testing.assert_close(Bd, Bd.T)
    torch.testing.assert_close(torch.linalg.inv(Bd), H.inv().to_tensor())
    S, Y = history(m)
    torch.testing.assert_close(H.matvec(S[-1]), Y[-1])  # secant equation of the newest pair


def test_operator_identity_without_history():
    m = LBFGS()
    p = torch.zeros(4, requires_grad=True)
    H = m.get_H(Var(params=[p], closure=None, model=None, current_step=0))
    v = torch.arange(4.0)
    torch.testing.assert_close(H.solve(v), v)
    torch.testing.assert_close(H.matvec(v), v)
    assert H.size() == (4, 4)


def test_lbfgs_exact_line_search_terminates_on_quadratic():
    n = 6
    A = random_spd(n, 3)
    b = torch.randn(n, generator=torch.Generator().manual_seed(4))

    class ExactLS(Module):
        def step(self, var):
            u, g = flat(var.get_update()), flat(var.get_grad())
            alpha = (g @ u) / (u @ A @ u)
            var.update = [t * alpha for t in var.update]
            return var

    params = [torch.randn(2, generator=torch.Generator().manual_seed(5)).requires_grad_(),
              torch.randn(4, generator=torch.Generator().manual_seed(6)).requires_grad_()]
    opt = tz.Modular(params, LBFGS(history_size=n), ExactLS())

    def closure(backward=True):
        x = flat(params)
        loss = 0.5 * x @ A @ x - b @ x
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    g0 = torch.linalg.vector_norm(A @ flat(params).detach() - b)
    for _ in range(n):
        opt.step(closure)
    assert torch.linalg.vector_norm(A @ flat(params).detach() - b) < 1e-9 * g0


# --------------------------------------------------------------------------------------------------
# pair tests, scaling, restarts
# --------------------------------------------------------------------------------------------------
def test_scale_first():
    g = torch.tensor([3.0, -1.0, 0.5])
    out, _ = feed(LBFGS(), [torch.zeros(3)], [g])
    torch.testing.assert_close(out[0], g / g.abs().sum())
    out, _ = feed(LBFGS(scale_first=False), [torch.zeros(3)], [g])
    torch.testing.assert_close(out[0], g)


def test_ptol_drops_pair_without_refreshing_prev():
    A, xs, gs = quadratic_pairs(4, 3, 3)
    xs = [xs[0], xs[0] + 1e-40, xs[1]]
    gs = [A @ x for x in xs]
    m = LBFGS(ptol=1e-30)
    _, p = feed(m, xs, gs)
    S, Y = history(m)
    assert len(S) == 1
    torch.testing.assert_close(S[0], xs[2] - xs[0])  # spans from the last accepted point
    assert m.global_state["step"] == 3


def test_gtol_restart_clears_history():
    A, xs, gs = quadratic_pairs(4, 4, 4)
    xs = xs[:3] + [xs[3]]
    gs = gs[:3] + [gs[2].clone()]  # y = 0 on the last pair
    m = LBFGS(gtol_restart=True)
    outs, p = feed(m, xs, gs)
    assert len(history(m)[0]) == 0
    assert m.global_state["step"] == 1
    torch.testing.assert_close(m.global_state["x_prev"], xs[3])
    torch.testing.assert_close(outs[-1], gs[3] / gs[3].abs().sum())  # first-step scaling again


def test_sy_tol_drops_pair_but_refreshes_prev():
    xs = [torch.zeros(2), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])]
    gs = [torch.zeros(2), torch.tensor([-1.0, 0.0]), torch.tensor([-1.0, 2.0])]  # sᵀy = −1, then 2
    m = LBFGS()
    _, p = feed(m, xs, gs)
    S, Y = history(m)
    assert len(S) == 1
    torch.testing.assert_close(S[0], xs[2] - xs[1])


def test_non_finite_pair_is_dropped():
    A, xs, gs = quadratic_pairs(3, 4, 5)
    bad = gs[1].clone()
    bad[1] = float("inf")
    m = LBFGS()
    outs, p = feed(m, xs, [gs[0], bad, gs[2], gs[3]])
    S, _ = history(m)
    assert len(S) == 1
    torch.testing.assert_close(S[0], xs[3] - xs[2])
    assert torch.isfinite(outs[-1]).all()


def test_update_freq():
    A, xs, gs = quadratic_pairs(3, 5, 6)
    m = LBFGS(update_freq=2)
    _, p = feed(m, xs, gs)
    S, _ = history(m)
    assert len(S) == 2
    torch.testing.assert_close(S[0], xs[2] - xs[0])
    torch.testing.assert_close(S[1], xs[4] - xs[2])


def test_state_dict_keeps_deques():
    params = make_params(torch.float64, [(3,), (2, 2)])
    f = Objective(params)
    opt = tz.Modular(params, LBFGS(history_size=4), tz.m.LR(0.1))
    for _ in range(6):
        opt.zero_grad()
        f(params).backward()
        opt.step()
    from sweep import roundtrip
    sd = roundtrip(opt.state_dict())
    opt2 = tz.Modular(clone_params(params), LBFGS(history_size=4), tz.m.LR(0.1))
    opt2.load_state_dict(sd)
    gs = opt2.modules[0].global_state
    assert gs["s_history"].maxlen == 4 and len(gs["s_history"]) == 4


# --------------------------------------------------------------------------------------------------
# L-SR1
# --------------------------------------------------------------------------------------------------
def test_lsr1_equals_dense_sr1():
    n = 6
    A, xs, gs = quadratic_pairs(n, 6, 7)
    gs = [g + 0.1 * torch.sin(3 * x) for g, x in zip(gs, xs)]  # not a quadratic: the pairs are not consistent
    lsr1, sr1, sr1_B = LSR1(), SR1(init_scale=1, tol=0), SR1(init_scale=1, tol=0, inverse=False)
    outs1, p1 = feed(lsr1, xs, gs)
    outs2, p2 = feed(sr1, xs, gs)
    _, p3 = feed(sr1_B, xs, gs)
    for a, b in zip(outs1, outs2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    op = lsr1.get_H(Var(params=[p1], closure=None, model=None, current_step=0))
    assert isinstance(op, LSR1Operator)
    g = torch.randn(n, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(op.solve(g), sr1.state[p2]["H"] @ g, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.matvec(g), sr1_B.state[p3]["B"] @ g, rtol=1e-12, atol=1e-12)


def test_lsr1_recovers_inverse_with_n_pairs():
    n = 5
    A, xs, gs = quadratic_pairs(n, n + 1, 8)
    m = LSR1()
    _, p = feed(m, xs, gs)
    op = m.get_H(Var(params=[p], closure=None, model=None, current_step=0))
    torch.testing.assert_close(torch.stack([op.solve(e) for e in torch.eye(n)], 1), torch.linalg.inv(A),
                               rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(op.to_tensor(), A, rtol=1e-8, atol=1e-10)
    b = torch.randn(n, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(op.matvec(op.solve(b)), b, rtol=1e-8, atol=1e-10)


def test_lsr1_omits_degenerate_pair():
    xs = [torch.zeros(2), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])]
    gs = [torch.zeros(2), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])]  # y = s: w = s − y = 0
    m = LSR1()
    out, _ = feed(m, xs, gs)
    torch.testing.assert_close(out[-1], gs[-1])
    assert torch.isfinite(out[-1]).all()


# --------------------------------------------------------------------------------------------------
# damping
# --------------------------------------------------------------------------------------------------
def test_powell_damping_inverse_form():
    n = 5
    gen = torch.Generator().manual_seed(0)
    s, y = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    y = y - s * ((s @ y) + 1) / (s @ s)  # sᵀy = −1 < 0
    Hinv = random_spd(n, 9)
    op = LBFGSOperator([], [], [], n, torch.device("cpu"), torch.float64)

    class Op(LBFGSOperator):
        def solve(self, b):
            return Hinv @ b

    H = Op([], [], [], n, torch.device("cpu"), torch.float64)
    s2, y2 = powell_damping(s, y, y, H)
    q = y @ Hinv @ y
    torch.testing.assert_close(s2 @ y2, 0.2 * q)
    torch.testing.assert_close(y2, y)
    # no damping when sᵀy ≥ 0.2·q
    s3, _ = powell_damping(Hinv @ y, y, y, H)
    torch.testing.assert_close(s3, Hinv @ y)
    s4, y4 = double_damping(s, y, y, op)
    assert s4 @ y4 >= (s4 @ s4) / 3 - 1e-12


def test_damping_in_module_and_callable():
    A, xs, gs = quadratic_pairs(4, 3, 10)
    gs = [-(g) for g in gs]  # negative curvature pairs
    m = LBFGS(damping="double")
    _, p = feed(m, xs, gs)
    S, Y = history(m)
    assert len(S) == 2  # stored despite negative curvature, because damping made sᵀy > 0
    for s, y in zip(S, Y):
        assert s @ y >= (s @ s) / 3 - 1e-10
    seen = []

    def damping(s, y, g, H):
        seen.append((s.shape, y.shape, g.shape, type(H).__name__))
        return s, y.abs() + 1

    m = LSR1(damping=damping)
    p = torch.zeros(2, 2)
    for k in range(3):
        p.copy_(torch.full((2, 2), float(k)))
        var = Var(params=[p], closure=None, model=None, current_step=0)
        var.update = [torch.full((2, 2), float(k * k))]
        var.grad = var.update
        m.step(var)
    assert seen == [((4,), (4,), (4,), "LSR1Operator")] * 2
    torch.testing.assert_close(history(m)[1][0], torch.full((4,), 2.0))


# --------------------------------------------------------------------------------------------------
# constructor validation
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: LBFGS(history_size=0), lambda: LBFGS(ptol=-1), lambda: LBFGS(sy_tol=-1),
                                  lambda: LBFGS(damping="bad"), lambda: LBFGS(update_freq=0),
                                  lambda: LSR1(gtol=-1.0), lambda: LSR1(scale_first=1)])
def test_invalid_arguments(make):
    with pytest.raises((ValueError, TypeError), match="LBFGS|LSR1"):
        make()
