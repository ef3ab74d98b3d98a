"""Nonlinear conjugate gradient: the shared sweep, β against a plain textbook loop (descent-direction form), n-step
termination with exact line searches (and the stale-``g_prev`` reference deviation), per-formula properties."""
from __future__ import annotations

import math

import pytest
import torch
from sweep import check_module

import torchzero as tz
from torchzero.core import Module, Var
from torchzero.modules.conjugate_gradient.cg import (
    DYHS,
    ConjugateDescent,
    DaiYuan,
    FletcherReeves,
    HagerZhang,
    HestenesStiefel,
    LiuStorey,
    PolakRibiere,
    ProjectedGradientMethod,
    dyhs_beta,
    projected_gradient_H_,
)

ALL = [PolakRibiere, FletcherReeves, HestenesStiefel, DaiYuan, LiuStorey, ConjugateDescent, HagerZhang, DYHS]


@pytest.fixture(autouse=True)
def _float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


SWEEP = {cls.__name__: (lambda cls=cls: [cls(), tz.m.LR(0.01)]) for cls in ALL}
SWEEP.update({
    "PolakRibiere_noclip_restart": lambda: [PolakRibiere(clip_beta=False, restart_interval=2), tz.m.LR(0.01)],
    "FletcherReeves_inner_clip": lambda: [FletcherReeves(clip_beta=True, restart_interval=None,
                                                         inner=tz.m.EMA(0.5)), tz.m.LR(0.01)],
    "HagerZhang_restart": lambda: [HagerZhang(restart_interval=3), tz.m.LR(0.05)],
    "ProjectedGradientMethod": lambda: [ProjectedGradientMethod(), tz.m.LR(0.01)],
    "ProjectedGradientMethod_tensorwise": lambda: [ProjectedGradientMethod(concat_params=False, scale_first=True),
                                                   tz.m.LR(0.1)],
})


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    check_module(SWEEP[name])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["PolakRibiere", "FletcherReeves", "ProjectedGradientMethod"])
def test_sweep_cuda(name: str) -> None:
    check_module(SWEEP[name], device="cuda")


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
SHAPES = [(2,), (2, 2)]  # n = 6 over two tensors


def flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def random_spd(n: int, seed: int, cond: float = 50.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    return (Q * torch.logspace(0, math.log10(cond), n)) @ Q.T


def apply_sequence(module: Module, gs: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Outputs of ``module`` stepped on a sequence of incoming updates (lists of tensors); returns flattened outputs."""
    params = [torch.zeros_like(t) for t in gs[0]]
    outs = []
    for g in gs:
        var = Var(params=params, closure=None, model=None, current_step=0)
        var.grad = [t.clone() for t in g]
        var.update = [t.clone() for t in g]
        outs.append(flat(module.step(var).update).clone())
    return outs


def textbook(kind: str, gs: list[torch.Tensor], clip: bool) -> list[torch.Tensor]:
    """Plain nonlinear CG in descent-direction form ``d = −g + β d_prev`` (Nocedal & Wright §5.2, Hager & Zhang's
    survey); returns ``u = −d``."""
    outs = []
    d_prev = g_prev = None
    for g in gs:
        if d_prev is None:
            d = -g
        else:
            y = g - g_prev
            dy = d_prev @ y
            beta = {
                "PR": (g @ y) / (g_prev @ g_prev),
                "FR": (g @ g) / (g_prev @ g_prev),
                "HS": (g @ y) / dy,
                "DY": (g @ g) / dy,
                "LS": -(g @ y) / (d_prev @ g_prev),
                "CD": -(g @ g) / (d_prev @ g_prev),
                "HZ": (y - 2 * d_prev * (y @ y) / dy) @ g / dy,
                "DYHS": max(0.0, min(float((g @ y) / dy), float((g @ g) / dy))),
            }[kind]
            beta = float(beta)
            if clip:
                beta = max(0.0, beta)
            d = -g + beta * d_prev
        outs.append(-d)
        g_prev, d_prev = g, d
    return outs


KINDS = {"PR": PolakRibiere, "FR": FletcherReeves, "HS": HestenesStiefel, "DY": DaiYuan, "LS": LiuStorey,
         "CD": ConjugateDescent, "HZ": HagerZhang, "DYHS": DYHS}


def random_inputs(k: int, seed: int) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen) for s in SHAPES] for _ in range(k)]


class ExactLineSearch(Module):
    """Test-only exact line search on a known quadratic: scales the update by ``α = gᵀu/(uᵀAu)``."""

    def __init__(self, A: torch.Tensor):
        super().__init__()
        self.A = A

    def step(self, var: Var) -> Var:
        u, g = flat(var.get_update()), flat(var.get_grad())
        uAu = u @ self.A @ u
        alpha = (g @ u) / uAu if uAu > 0 else torch.tensor(0.0)
        var.update = [t * alpha for t in var.get_update()]
        return var


def run_quadratic(module: Module, n_steps: int, seed: int = 0):
    A = random_spd(6, seed)
    b = torch.randn(6, generator=torch.Generator().manual_seed(seed + 1))
    gen = torch.Generator().manual_seed(seed + 2)
    params = [torch.randn(s, generator=gen).requires_grad_() for s in SHAPES]
    opt = tz.Modular(params, module, ExactLineSearch(A))

    def closure(backward=True):
        x = flat(params)
        loss = 0.5 * x @ A @ x - b @ x
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    xs = [flat(params).detach().clone()]
    for _ in range(n_steps):
        opt.step(closure)
        xs.append(flat(params).detach().clone())
    gnorms = [float(torch.linalg.vector_norm(A @ x - b)) for x in xs]
    return xs, gnorms


# --------------------------------------------------------------------------------------------------
# β against the textbook formulas
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("clip", [False, True])
def test_matches_textbook(kind, clip):
    gs = random_inputs(6, seed=len(kind))
    outs = apply_sequence(KINDS[kind](clip_beta=clip, restart_interval=None), gs)
    ref = textbook(kind, [flat(g) for g in gs], clip)
    for k, (a, b) in enumerate(zip(outs, ref)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"{kind} step {k}")


def test_restart_interval():
    gs = random_inputs(7, seed=1)
    outs = apply_sequence(PolakRibiere(clip_beta=False, restart_interval=3), gs)
    for k in (0, 3, 6):  # the first step of each cycle is the plain input
        torch.testing.assert_close(outs[k], flat(gs[k]))
    ref = textbook("PR", [flat(g) for g in gs[3:6]], clip=False)
    for a, b in zip(outs[3:6], ref):
        torch.testing.assert_close(a, b)
    # 'auto' = n + 1 = 7: no restart within 7 steps, the 8th is a plain step
    gs = random_inputs(8, seed=2)
    outs = apply_sequence(PolakRibiere(clip_beta=False), gs)
    torch.testing.assert_close(outs[7], flat(gs[7]))
    assert not torch.allclose(outs[6], flat(gs[6]))


def test_fletcher_reeves_stores_scalar():
    m = FletcherReeves()
    gs = random_inputs(3, seed=3)
    apply_sequence(m, gs)
    torch.testing.assert_close(m.global_state["prev_gg"], flat(gs[-1]) @ flat(gs[-1]))


def test_zero_denominator_gives_zero_beta():
    zero = [torch.zeros(s) for s in SHAPES]
    g = random_inputs(1, seed=4)[0]
    for cls in ALL:
        outs = apply_sequence(cls(), [zero, g])
        torch.testing.assert_close(outs[1], flat(g), msg=cls.__name__)  # β = 0
        assert torch.isfinite(outs[1]).all()


def test_non_finite_input_restarts():
    gs = random_inputs(4, seed=7)
    bad = [t.clone() for t in gs[1]]
    bad[0][0] = float("nan")
    for cls in ALL:
        outs = apply_sequence(cls(restart_interval=None), [gs[0], bad, gs[2], gs[3]])
        torch.testing.assert_close(outs[2], flat(gs[2]), msg=cls.__name__)  # restarted from the finite input
        ref = textbook({v: k for k, v in KINDS.items()}[cls], [flat(gs[2]), flat(gs[3])],
                       clip=cls is PolakRibiere)
        torch.testing.assert_close(outs[3], ref[1], msg=cls.__name__)


# --------------------------------------------------------------------------------------------------
# quadratic termination with exact line search
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ALL + [ProjectedGradientMethod])
def test_terminates_on_quadratic(cls):
    xs, gnorms = run_quadratic(cls(), 6)
    assert gnorms[6] < 1e-8 * gnorms[0], gnorms


def test_all_formulas_coincide_on_quadratic():
    ref, _ = run_quadratic(PolakRibiere(), 5, seed=3)
    for cls in ALL[1:]:
        xs, _ = run_quadratic(cls(), 5, seed=3)
        for a, b in zip(xs, ref):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10, msg=cls.__name__)


def test_stale_g_prev_of_reference_loses_termination():
    """torchzero 0.3.14 kept the ``g_prev`` of the start of the cycle: Polak–Ribière with that rule does not
    terminate in n steps (plain loop below), whereas the module (refreshing ``g_prev``) does."""
    A = random_spd(6, 0)
    b = torch.randn(6, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    x = torch.cat([torch.randn(s, generator=gen).reshape(-1) for s in SHAPES])
    g_first = u_prev = None
    for _ in range(6):
        g = A @ x - b
        if u_prev is None:
            u, g_first = g, g
        else:
            beta = max(0.0, float(g @ (g - g_first) / (g_first @ g_first)))
            u = g + beta * u_prev
        x = x - (g @ u) / (u @ A @ u) * u
        u_prev = u
    stale = float(torch.linalg.vector_norm(A @ x - b))
    _, gnorms = run_quadratic(PolakRibiere(), 6)
    assert gnorms[6] < 1e-8 * gnorms[0]
    assert stale > 1e-4 * gnorms[0]


# --------------------------------------------------------------------------------------------------
# per-formula properties
# --------------------------------------------------------------------------------------------------
def test_hager_zhang_sufficient_descent():
    gs = random_inputs(12, seed=5)
    outs = apply_sequence(HagerZhang(restart_interval=None), gs)
    for u, g in zip(outs, gs):
        g = flat(g)
        assert u @ g >= 7 / 8 * (g @ g) - 1e-12


def test_hestenes_stiefel_conjugacy():
    gs = random_inputs(6, seed=6)
    outs = apply_sequence(HestenesStiefel(restart_interval=None), gs)
    for k in range(1, 6):
        y = flat(gs[k]) - flat(gs[k - 1])
        torch.testing.assert_close(outs[k] @ y, torch.tensor(0.0), atol=1e-12, rtol=0)


def test_dyhs_beta_range():
    for seed in range(20):
        g, g_prev, u_prev = random_inputs(3, seed=100 + seed)
        beta = dyhs_beta(g, g_prev, u_prev)
        y = flat(g) - flat(g_prev)
        beta_dy = -(flat(g) @ flat(g)) / (flat(u_prev) @ y)
        assert 0 <= beta <= max(float(beta_dy), 0.0) + 1e-12


def test_dai_yuan_descent_with_exact_line_search():
    """On a convex non-quadratic objective with an accurate line search (SciPy's Brent), every DY output is a
    descent update: ``uᵀ∇f > 0``."""
    from scipy.optimize import minimize_scalar

    A = random_spd(6, 7, cond=20)

    def f(x):
        return 0.5 * x @ A @ x + torch.log(torch.cosh(x - 1)).sum()

    x = torch.randn(6, generator=torch.Generator().manual_seed(8)).requires_grad_()
    m = DaiYuan(restart_interval=None)
    for _ in range(12):
        loss = f(x)
        (g,) = torch.autograd.grad(loss, x)
        var = Var(params=[x], closure=None, model=None, current_step=0)
        var.grad = [g.clone()]
        var.update = [g.clone()]
        u = m.step(var).update[0].clone()
        if g.norm() < 1e-8:
            break
        assert u @ g > 0
        with torch.no_grad():
            res = minimize_scalar(lambda a, x=x, u=u: float(f(x - a * u)), bracket=(0, 1e-3), tol=1e-12)
            x -= res.x * u


def test_projected_gradient_projector():
    gen = torch.Generator().manual_seed(9)
    H = torch.eye(5)
    for _ in range(3):
        y = torch.randn(5, generator=gen)
        H = projected_gradient_H_(H, y)
        torch.testing.assert_close(H @ y, torch.zeros(5), atol=1e-12, rtol=0)
        torch.testing.assert_close(H, H.T)


# --------------------------------------------------------------------------------------------------
# constructor validation
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: PolakRibiere(restart_interval=0), lambda: FletcherReeves(clip_beta=1),
                                  lambda: HagerZhang(restart_interval="never"), lambda: DaiYuan(restart_interval=-2)])
def test_invalid_arguments(make):
    with pytest.raises((ValueError, TypeError), match="PolakRibiere|FletcherReeves|HagerZhang|DaiYuan"):
        make()
