"""Dense and diagonal quasi-Newton modules: the shared sweep, quadratic termination with exact line searches,
secant/closed-form checks of every update formula from the catalog, and the shared base's rules."""
from __future__ import annotations

import math

import pytest
import torch
from sweep import Objective, check_module, clone_params, make_params, snapshot

import torchzero as tz
from torchzero.core import Module, Var
from torchzero.modules.conjugate_gradient.cg import ProjectedGradientMethod
from torchzero.modules.quasi_newton.base import HessianUpdateStrategy, first_step_scale, safe
from torchzero.modules.quasi_newton.bfgs_family import (
    BFGS,
    DFP,
    SSVM,
    FletcherVMM,
    Horisho,
    NewSSM,
    bfgs_B_,
    bfgs_H_,
    dfp_B_,
    dfp_H_,
    horisho_H_,
    newssm_H_,
    ssvm_H_,
)
from torchzero.modules.quasi_newton.broyden import (
    ICUM,
    BroydenBad,
    BroydenGood,
    Greenstadt1,
    Greenstadt2,
    McCormick,
    Pearson,
    ThomasOptimalMethod,
    broyden_bad_B_,
    broyden_good_B_,
    family_update_H_,
    icum_H_,
    thomas_H_,
)
from torchzero.modules.quasi_newton.diagonal import (
    DNRTR,
    DiagonalBFGS,
    DiagonalQuasiCauchi,
    DiagonalSR1,
    DiagonalWeightedQuasiCauchi,
    NewDQN,
)
from torchzero.modules.quasi_newton.other_updates import (
    PSB,
    SR1,
    GradientCorrection,
    ProjectedNewtonRaphson,
    ShorR,
    projected_newton_raphson_,
    psb_B_,
    shor_r_H_,
    sr1_,
)
from torchzero.utils.linalg.linear_operator import Dense, DenseInverse, Diagonal


@pytest.fixture(autouse=True)
def _float64_default():
    """Tensors created without a dtype in this file are float64 (restored afterwards)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)

# --------------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------------
DENSE = [BFGS, DFP, SSVM, FletcherVMM, Horisho, BroydenGood, BroydenBad, Greenstadt1, Greenstadt2, ICUM,
         ThomasOptimalMethod, Pearson, McCormick, PSB, SR1, ShorR, ProjectedNewtonRaphson, DiagonalBFGS, DiagonalSR1,
         DiagonalQuasiCauchi, DiagonalWeightedQuasiCauchi, DNRTR, NewDQN]
SWEEP = {cls.__name__: (lambda cls=cls: [cls(), tz.m.LR(0.01)]) for cls in DENSE}
SWEEP.update({
    "B_forms": lambda: [BFGS(inverse=False), DFP(inverse=False), tz.m.LR(0.01)],
    "BFGS_tensorwise_scale_first": lambda: [BFGS(concat_params=False, scale_first=True), tz.m.LR(0.1)],
    "BFGS_beta_restart_update_freq": lambda: [BFGS(beta=0.5, restart_interval=3, update_freq=2), tz.m.LR(0.01)],
    "BFGS_inner_not_last": lambda: [BFGS(inner=tz.m.EMA(0.5), ptol_restart=True), tz.m.ClipValue(1.0),
                                    tz.m.LR(0.01)],
    "GradientCorrection_BFGS_last": lambda: [GradientCorrection(), BFGS(init_scale=2.0)],
    "SR1_B": lambda: [SR1(inverse=False, tol=1e-8), DiagonalSR1(inverse=False), tz.m.LR(0.01)],
    "Broyden_B": lambda: [BroydenGood(inverse=False), BroydenBad(inverse=False, restart_interval="auto"),
                          tz.m.LR(0.01)],
    "SSVM_switches": lambda: [SSVM(switch=2), SSVM(switch=4), SSVM(switch=(0.5, 0.5)), tz.m.LR(0.01)],
    "NewDQN_tensorwise": lambda: [NewDQN(concat_params=False, beta=0.9), tz.m.LR(0.01)],
    "BFGS_GradientCorrection": lambda: [BFGS(inner=GradientCorrection()), tz.m.LR(0.01)],
})


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    check_module(SWEEP[name])


@pytest.mark.parametrize("type", [1, 2])
def test_sweep_newssm_needs_loss(type) -> None:
    check_module(lambda: [NewSSM(type=type), tz.m.LR(0.01)], needs_closure=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["BFGS", "B_forms", "SR1_B", "DNRTR", "BFGS_tensorwise_scale_first"])
def test_sweep_cuda(name: str) -> None:
    check_module(SWEEP[name], device="cuda")


# --------------------------------------------------------------------------------------------------
# helpers: a quadratic, an exact line search, feeding pairs
# --------------------------------------------------------------------------------------------------
SHAPES_Q = [(2,), (2, 2)]  # n = 6 split over two tensors, so concatenation is exercised


def random_spd(n: int, seed: int, cond: float = 30.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.logspace(0, math.log10(cond), n, dtype=torch.float64)
    return (Q * eig) @ Q.T


def flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


class Quadratic:
    """``f(x) = ½xᵀAx − bᵀx`` over a list of tensors."""

    def __init__(self, n: int = 6, seed: int = 0):
        self.A = random_spd(n, seed)
        self.b = torch.randn(n, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)

    def __call__(self, params) -> torch.Tensor:
        x = flat(params)
        return 0.5 * x @ self.A @ x - self.b @ x

    def grad(self, params) -> torch.Tensor:
        return self.A @ flat(params) - self.b


class ExactLineSearch(Module):
    """Test-only exact line search on a known quadratic: scales the update by ``α = gᵀu/(uᵀAu)``."""

    def __init__(self, A: torch.Tensor):
        super().__init__()
        self.A = A

    def step(self, var: Var) -> Var:
        u = flat(var.get_update())
        g = flat(var.get_grad())
        uAu = u @ self.A @ u
        alpha = (g @ u) / uAu if uAu > 0 else torch.tensor(0.0, dtype=u.dtype)
        var.update = [t * alpha for t in var.get_update()]
        return var


def run_exact_ls(module: Module, q: Quadratic, n_steps: int, shapes=SHAPES_Q, seed: int = 3):
    """Runs ``module`` + exact line search; returns (params, gradient norms before each step, optimizer)."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in shapes]
    opt = tz.Modular(params, module, ExactLineSearch(q.A))
    gnorms = []

    def closure(backward=True):
        loss = q(params)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    for _ in range(n_steps):
        gnorms.append(float(torch.linalg.vector_norm(q.grad(params).detach())))
        opt.step(closure)
    gnorms.append(float(torch.linalg.vector_norm(q.grad(params).detach())))
    return params, gnorms, opt


def feed(module: Module, xs, gs, loss=None, p: torch.Tensor | None = None):
    """Drives ``module`` (a transform) with explicit points ``xs`` and incoming updates ``gs`` (1-D tensors), using
    ``p`` (a new tensor by default) as the parameter; returns the outputs and ``p``."""
    if p is None:
        p = xs[0].clone()
    outs = []
    for x, g in zip(xs, gs):
        p.copy_(x)
        var = Var(params=[p], closure=None, model=None, current_step=0)
        var.grad = [g.clone()]
        var.update = [g.clone()]
        var.loss = loss
        outs.append(module.step(var).update[0].clone())
    return outs, p


def state_of(module: Module, p: torch.Tensor) -> dict:
    return module.state[p]


def random_pair(n: int, seed: int, spd_H: bool = True):
    g = torch.Generator().manual_seed(seed)
    H = random_spd(n, seed + 100, cond=5) if spd_H else torch.randn(n, n, generator=g)
    s = torch.randn(n, generator=g)
    y = random_spd(n, seed + 200, cond=5) @ s  # sᵀy > 0
    return H, s, y


# --------------------------------------------------------------------------------------------------
# quadratic termination with exact line search, recovery of A⁻¹ / A
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls,inverse", [(BFGS, True), (BFGS, False), (DFP, True), (DFP, False)])
def test_exact_line_search_recovers_inverse_hessian(cls, inverse):
    q = Quadratic()
    n = 6
    params, gnorms, opt = run_exact_ls(cls(inverse=inverse), q, n + 1)
    assert gnorms[n] < 1e-9 * gnorms[0], gnorms
    state = opt.modules[0].state[params[0]]
    if inverse:
        torch.testing.assert_close(state["H"], torch.linalg.inv(q.A), rtol=1e-7, atol=1e-9)
    else:
        torch.testing.assert_close(state["B"], q.A, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("make", [lambda: ProjectedNewtonRaphson(), lambda: ProjectedGradientMethod(),
                                  lambda: BFGS(init_scale=3.0), lambda: Horisho(), lambda: FletcherVMM(),
                                  lambda: SSVM(), lambda: SSVM(switch=4)])
def test_exact_line_search_terminates(make):
    q = Quadratic(seed=4)
    _, gnorms, _ = run_exact_ls(make(), q, 6)
    assert gnorms[6] < 1e-8 * gnorms[0], gnorms


def test_sr1_exact_line_search_newton_step_after_n_updates():
    # after n updates H = A⁻¹ (N&W Theorem 6.1), so step n + 1 is a Newton step
    q = Quadratic(seed=4)
    _, gnorms, _ = run_exact_ls(SR1(init_scale=1, tol=1e-8), q, 7)
    assert gnorms[7] < 1e-8 * gnorms[0], gnorms


def test_projected_newton_raphson_R_recovers_inverse():
    q = Quadratic(seed=5)
    params, gnorms, opt = run_exact_ls(ProjectedNewtonRaphson(restart_interval=None), q, 7)
    st = opt.modules[0].state[params[0]]
    torch.testing.assert_close(st["R"], torch.linalg.inv(q.A), rtol=1e-6, atol=1e-8)
    assert st["H"].abs().max() < 1e-8  # the projector has removed every direction


@pytest.mark.parametrize("inverse", [True, False])
def test_sr1_pairs_recover_hessian_independent_of_step_lengths(inverse):
    n = 6
    A = random_spd(n, 7)
    gen = torch.Generator().manual_seed(8)
    xs = [torch.randn(n, generator=gen)]
    for k in range(n):
        xs.append(xs[-1] + torch.randn(n, generator=gen) * (10.0 ** (k - 3)))  # wildly different lengths
    gs = [A @ x for x in xs]
    m = SR1(init_scale=1, tol=1e-8, inverse=inverse)
    _, p = feed(m, xs, gs)
    M = m.state[p]["H" if inverse else "B"]
    torch.testing.assert_close(M, torch.linalg.inv(A) if inverse else A, rtol=1e-9, atol=1e-11)


# --------------------------------------------------------------------------------------------------
# independent references for the formulas
# --------------------------------------------------------------------------------------------------
def test_bfgs_matches_product_form_and_both_forms_are_inverses():
    for seed in range(3):
        H, s, y = random_pair(5, seed)
        rho = 1 / (s @ y)
        I = torch.eye(5)
        expected = (I - rho * torch.outer(s, y)) @ H @ (I - rho * torch.outer(y, s)) + rho * torch.outer(s, s)
        H1 = bfgs_H_(H.clone(), s, y, s @ y)
        torch.testing.assert_close(H1, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(H1 @ y, s, rtol=1e-12, atol=1e-12)
        B1 = bfgs_B_(torch.linalg.inv(H), s, y, s @ y)
        torch.testing.assert_close(B1, torch.linalg.inv(H1), rtol=1e-9, atol=1e-10)


def test_dfp_forms_are_inverses():
    for seed in range(3):
        H, s, y = random_pair(5, seed)
        H1 = dfp_H_(H.clone(), s, y, s @ y)
        torch.testing.assert_close(H1 @ y, s, rtol=1e-12, atol=1e-12)
        B1 = dfp_B_(torch.linalg.inv(H), s, y, s @ y)
        rho = 1 / (s @ y)
        I = torch.eye(5)
        B0 = torch.linalg.inv(H)
        expected = (I - rho * torch.outer(y, s)) @ B0 @ (I - rho * torch.outer(s, y)) + rho * torch.outer(y, y)
        torch.testing.assert_close(B1, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(B1, torch.linalg.inv(H1), rtol=1e-9, atol=1e-10)


def test_sr1_formula_and_skip_rule():
    H, s, y = random_pair(5, 0)
    z = s - H @ y
    torch.testing.assert_close(sr1_(H.clone(), s, y, 0.0), H + torch.outer(z, z) / (z @ y))
    # |zᵀy| ≤ tol·‖y‖·‖z‖ skips
    tol = float(abs(z @ y) / (y.norm() * z.norm())) * 1.01
    torch.testing.assert_close(sr1_(H.clone(), s, y, tol), H)


def test_sr1_skips_degenerate_first_update_after_auto_scaling():
    n = 4
    A = random_spd(n, 1)
    xs = [torch.zeros(n), torch.ones(n), torch.tensor([1.0, 2.0, 0.0, -1.0])]
    m = SR1()
    _, p = feed(m, xs[:2], [A @ x for x in xs[:2]])
    s, y = xs[1] - xs[0], A @ (xs[1] - xs[0])
    torch.testing.assert_close(m.state[p]["H"], torch.eye(n) * (s @ y) / (y @ y))  # scaled, no correction


@pytest.mark.parametrize("c_of", ["good", "bad", "g_prev", "H2y", "pearson", "mccormick"])
def test_family_secant_equation(c_of):
    gen = torch.Generator().manual_seed(3)
    H = torch.randn(5, 5, generator=gen)
    s, y, g_prev = (torch.randn(5, generator=gen) for _ in range(3))
    c = {"good": H.T @ s, "bad": y, "g_prev": g_prev, "H2y": H @ H @ y, "pearson": H @ y, "mccormick": s}[c_of]
    H1 = family_update_H_(H.clone(), s, y, c)
    torch.testing.assert_close(H1 @ y, s, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(H1, H - torch.outer(H @ y - s, c) / (c @ y))


@pytest.mark.parametrize("cls", [BroydenGood, BroydenBad, Greenstadt1, Greenstadt2, Pearson, McCormick])
def test_family_classes_use_their_c(cls):
    """The classes wire the right ``c`` into the family formula (two updates from ``H₀ = I``)."""
    n = 4
    gen = torch.Generator().manual_seed(11)
    xs = [torch.randn(n, generator=gen) for _ in range(3)]
    gs = [torch.randn(n, generator=gen) for _ in range(3)]
    m = cls(init_scale=1)
    _, p = feed(m, xs, gs)
    H = torch.eye(n)
    for k in (1, 2):
        s, y, g_prev = xs[k] - xs[k - 1], gs[k] - gs[k - 1], gs[k - 1]
        c = {BroydenGood: H.T @ s, BroydenBad: y, Greenstadt1: g_prev, Greenstadt2: H @ (H @ y),
             Pearson: H @ y, McCormick: s}[cls]
        H = H - torch.outer(H @ y - s, c) / (c @ y)
    torch.testing.assert_close(m.state[p]["H"], H)


def test_broyden_good_properties():
    gen = torch.Generator().manual_seed(4)
    B = random_spd(5, 9)
    s, y = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    B1 = broyden_good_B_(B.clone(), s, y)
    torch.testing.assert_close(B1 @ s, y)
    v = torch.randn(5, generator=gen)
    v = v - s * (v @ s) / (s @ s)
    torch.testing.assert_close(B1 @ v, B @ v)
    H1 = family_update_H_(torch.linalg.inv(B), s, y, torch.linalg.inv(B).T @ s)  # the H-form of BroydenGood
    torch.testing.assert_close(torch.linalg.inv(H1), B1, rtol=1e-9, atol=1e-10)


def test_broyden_bad_properties():
    gen = torch.Generator().manual_seed(5)
    B, H = random_spd(5, 10), random_spd(5, 11)
    s, y = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    torch.testing.assert_close(broyden_bad_B_(B.clone(), s, y) @ s, y)
    H1 = family_update_H_(H.clone(), s, y, y)
    v = torch.randn(5, generator=gen)
    v = v - y * (v @ y) / (y @ y)
    torch.testing.assert_close(H1 @ v, H @ v)


def test_greenstadt2_symmetric_correction():
    H, s, y = random_pair(5, 6)
    H2y = H @ H @ y
    expected = H - torch.outer(H @ y - s, H2y) / (y @ H2y)
    torch.testing.assert_close(family_update_H_(H.clone(), s, y, H @ (H @ y)), expected)


def test_mccormick_leaves_orthogonal_complement():
    H, s, y = random_pair(5, 7, spd_H=False)
    H1 = family_update_H_(H.clone(), s, y, s)
    v = torch.randn(5, generator=torch.Generator().manual_seed(1))
    v = v - s * (v @ s) / (s @ s)
    torch.testing.assert_close(H1 @ v, H @ v)


def test_pearson_is_not_symmetric():
    H, s, y = random_pair(5, 8)
    H1 = family_update_H_(H.clone(), s, y, H @ y)
    torch.testing.assert_close(H1 @ y, s)
    assert (H1 - H1.T).abs().max() > 1e-3


def test_icum_changes_one_column():
    gen = torch.Generator().manual_seed(9)
    H = torch.randn(6, 6, generator=gen)
    s, y = torch.randn(6, generator=gen), torch.randn(6, generator=gen)
    H1 = icum_H_(H.clone(), s, y)
    j = int(y.abs().argmax())
    changed = (H1 - H).abs().sum(0) > 0
    assert changed.nonzero().flatten().tolist() == [j]
    torch.testing.assert_close(H1 @ y, s)


def test_thomas_secant_and_symmetric_R():
    H, s, y = random_pair(5, 10)
    R = torch.eye(5)
    for k in range(3):
        Hk, sk, yk = random_pair(5, 20 + k)
        sigma = sk.norm()
        d = (R + sigma / 2 * torch.eye(5)) @ sk
        R_expected = (1 + sigma) * (sigma * torch.eye(5) + R - torch.outer(d, d) / (d @ sk))
        H_expected = H - torch.outer(H @ yk - sk, H.T @ d) / ((H.T @ d) @ yk)
        H = thomas_H_(H, R, sk, yk)
        torch.testing.assert_close(R, R_expected)
        torch.testing.assert_close(H, H_expected)
        torch.testing.assert_close(H @ yk, sk)
        torch.testing.assert_close(R, R.T)


def test_thomas_reset_discards_R():
    n = 4
    A = random_spd(n, 2)
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(n, generator=gen) for _ in range(4)]
    m = ThomasOptimalMethod(restart_interval=3)
    _, p = feed(m, xs[:2], [A @ x for x in xs[:2]])
    assert "R" in m.state[p]
    feed(m, xs[2:3], [A @ xs[2]], p=p)  # step 3 is a restart
    assert "R" not in m.state[p]
    feed(m, xs[3:4], [A @ xs[3]], p=p)
    assert "R" in m.state[p]


@pytest.mark.parametrize("switch", [1, 2, 3, 4, (0.3, 0.7)])
def test_ssvm_secant_equation_and_symmetry(switch):
    for seed in range(3):
        H, s, y = random_pair(5, 30 + seed)
        g = torch.randn(5, generator=torch.Generator().manual_seed(seed))
        H1 = ssvm_H_(H.clone(), s, y, g, switch)
        if H1 is None:  # switch 2 with ε/τ < 0
            assert switch == 2
            continue
        torch.testing.assert_close(H1 @ y, s, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(H1, H1.T, rtol=1e-10, atol=1e-10)


def test_ssvm_matches_paper_formula():
    H, s, y = random_pair(5, 40)
    g = torch.randn(5, generator=torch.Generator().manual_seed(2))
    phi, theta = 0.3, 0.7
    omega, tau, eps = s @ y, y @ H @ y, (g @ s) / (g @ H @ y)
    v = tau.sqrt() * (s / omega - H @ y / tau)
    u = phi * eps + (1 - phi) * omega / tau
    expected = u * (H - torch.outer(H @ y, H @ y) / tau + theta * torch.outer(v, v)) + torch.outer(s, s) / omega
    torch.testing.assert_close(ssvm_H_(H.clone(), s, y, g, (phi, theta)), expected)


def test_horisho_secant_symmetric_and_distinct():
    H, s, y = random_pair(5, 50)
    H1 = horisho_H_(H.clone(), s, y, s @ y)
    torch.testing.assert_close(H1 @ y, s)
    torch.testing.assert_close(H1, H1.T)
    w, t = y @ s, y @ H @ y
    Hy = H @ y
    expected = H + ((1 + 2 * t / w) * torch.outer(s, s) - torch.outer(s, Hy) - torch.outer(Hy, s)
                    - torch.outer(Hy, Hy)) / (w + t)
    torch.testing.assert_close(H1, expected)
    assert (H1 - bfgs_H_(H.clone(), s, y, s @ y)).abs().max() > 1e-3
    assert (H1 - dfp_H_(H.clone(), s, y, s @ y)).abs().max() > 1e-3


def test_fletcher_vmm_equals_bfgs_and_applies_negative_curvature():
    n = 4
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(n, generator=gen) for _ in range(3)]
    A = random_spd(n, 3)
    gs = [A @ x for x in xs]
    outs_f, pf = feed(FletcherVMM(), xs, gs)
    outs_b, pb = feed(BFGS(), xs, gs)
    torch.testing.assert_close(outs_f[-1], outs_b[-1])
    # negative curvature: BFGS skips, FletcherVMM applies it
    gs_neg = [-(A @ x) for x in xs]
    f, b = FletcherVMM(init_scale=1), BFGS(init_scale=1)
    _, pf = feed(f, xs[:2], gs_neg[:2])
    _, pb = feed(b, xs[:2], gs_neg[:2])
    torch.testing.assert_close(b.state[pb]["H"], torch.eye(n))
    s, y = xs[1] - xs[0], gs_neg[1] - gs_neg[0]
    torch.testing.assert_close(f.state[pf]["H"] @ y, s)


@pytest.mark.parametrize("type", [1, 2])
def test_newssm_scaled_secant(type):
    H, s, y = random_pair(5, 60)
    f, f_prev = torch.tensor(1.5), torch.tensor(2.0)
    w = s @ y
    rho = (2 * w + 2 * (f - f_prev)) / w if type == 1 else (f_prev - f + 1 / (2 * w)) / w
    H1 = newssm_H_(H.clone(), s, y, s @ y, f, f_prev, type)
    torch.testing.assert_close(H1 @ y, s / rho)
    # ρ = 1 gives BFGS: choose f so that type 1's ρ is 1
    H2 = newssm_H_(H.clone(), s, y, s @ y, f_prev - w / 2, f_prev, 1)
    torch.testing.assert_close(H2, bfgs_H_(H.clone(), s, y, s @ y))


def test_newssm_needs_loss_and_uses_it():
    params = [torch.zeros(3, requires_grad=True)]
    opt = tz.Modular(params, NewSSM(), tz.m.LR(0.1))
    params[0].grad = torch.ones(3)
    with pytest.raises(RuntimeError, match="NewSSM"):
        opt.step()
    opt.step(loss=torch.tensor(1.0))  # an explicit loss is enough
    params[0].grad = torch.tensor([0.5, 1.0, 2.0])
    opt.step(loss=torch.tensor(0.5))
    assert torch.isfinite(params[0]).all()


def test_shor_r_properties():
    H, s, y = random_pair(5, 70)
    alpha = 0.3
    H1 = shor_r_H_(H.clone(), y, alpha)
    torch.testing.assert_close(y @ H1 @ y, alpha**2 * (y @ H @ y))
    v = torch.randn(5, generator=torch.Generator().manual_seed(4))
    Hy = H @ y
    v = v - Hy * (v @ Hy) / (Hy @ Hy)  # vᵀHy = 0
    torch.testing.assert_close(H1 @ v, H @ v)


def test_projected_newton_raphson_properties():
    H, s, y = random_pair(5, 80)
    R = torch.eye(5) + 0.1 * random_spd(5, 81)
    H1 = projected_newton_raphson_(H.clone(), R, s, y)
    torch.testing.assert_close(H1 @ y, torch.zeros(5), atol=1e-12, rtol=0)
    torch.testing.assert_close(R @ y, s)


def test_projected_newton_raphson_reset_copies_R():
    n = 3
    A = random_spd(n, 4)
    gen = torch.Generator().manual_seed(5)
    xs = [torch.randn(n, generator=gen) for _ in range(4)]
    m = ProjectedNewtonRaphson()  # restart every n + 1 = 4 steps
    _, p = feed(m, xs, [A @ x for x in xs])
    st = m.state[p]
    assert st["step"] == 4
    torch.testing.assert_close(st["H"], st["R"])


def test_psb_symmetric_secant():
    gen = torch.Generator().manual_seed(6)
    B = random_spd(5, 12)
    s, y = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    B1 = psb_B_(B.clone(), s, y)
    torch.testing.assert_close(B1, B1.T)
    torch.testing.assert_close(B1 @ s, y)


def test_gradient_correction():
    q = Quadratic(n=5, seed=2)
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    m = GradientCorrection()
    outs, _ = feed(m, [x0, x1], [q.A @ x0 - q.b, q.A @ x1 - q.b])
    torch.testing.assert_close(outs[0], q.A @ x0 - q.b)
    s, g = x1 - x0, q.A @ x1 - q.b
    y = q.A @ s
    torch.testing.assert_close(s @ outs[1], torch.tensor(0.0), atol=1e-12, rtol=0)
    tau = -(s @ g) / (s @ y)
    torch.testing.assert_close(outs[1], q.A @ (x1 + tau * s) - q.b)


# --------------------------------------------------------------------------------------------------
# diagonal classes
# --------------------------------------------------------------------------------------------------
def _one_diag_update(m: HessianUpdateStrategy, s: torch.Tensor, y: torch.Tensor, key: str):
    x0 = torch.zeros_like(s)
    g0 = torch.ones_like(s)
    _, p = feed(m, [x0, s], [g0, g0 + y])
    return m.state[p][key]


def test_diagonal_bfgs_hand_example():
    H = _one_diag_update(DiagonalBFGS(init_scale=1), torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0]), "H")
    torch.testing.assert_close(H, torch.tensor([7 / 9, 13 / 9]))


def test_diagonal_sr1_hand_example():
    s, y = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([0.5, 1.0, 3.0])
    z = s - y
    H = _one_diag_update(DiagonalSR1(init_scale=1), s, y, "H")
    torch.testing.assert_close(H, 1 + z * z / (z @ y))
    zb = y - s
    B = _one_diag_update(DiagonalSR1(init_scale=1, inverse=False), s, y, "B")
    torch.testing.assert_close(B, 1 + zb * zb / (zb @ s))


@pytest.mark.parametrize("cls", [DiagonalQuasiCauchi, DiagonalWeightedQuasiCauchi, DNRTR])
def test_weak_secant(cls):
    s, y = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, -1.0, 3.0])
    B = _one_diag_update(cls(init_scale=1), s, y, "B")
    torch.testing.assert_close(s @ (B * s), s @ y)


def test_weighted_quasi_cauchy_zero_entries_never_change():
    from torchzero.modules.quasi_newton.diagonal import diagonal_weighted_quasi_cauchy_B_
    B = torch.tensor([0.0, 2.0, 1.0])
    s, y = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, -1.0, 3.0])
    B1 = diagonal_weighted_quasi_cauchy_B_(B.clone(), s, y, s @ y)
    assert B1[0] == 0
    torch.testing.assert_close(s @ (B1 * s), s @ y)


def test_new_dqn_change():
    s, y = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, -1.0, 3.0])
    B = _one_diag_update(NewDQN(init_scale=1, lb=0, ub=1e10), s, y, "B")
    torch.testing.assert_close(B - 1, (s @ y) / (s**4).sum() * s * s)


@pytest.mark.parametrize("cls", [DNRTR, NewDQN])
def test_truncation(cls):
    m = cls()
    p = torch.zeros(3)
    feed(m, [p.clone()], [torch.ones(3)], p=p)
    m.state[p]["B"] = torch.tensor([1e-3, 2.0, 1e6])
    out, _ = feed(m, [p.clone()], [torch.tensor([1.0, 1.0, 1.0])], p=p)
    torch.testing.assert_close(out[0], torch.tensor([1.0, 0.5, 1.0]))
    var = Var(params=[p], closure=None, model=None, current_step=0)
    H = m.get_H(var)
    assert isinstance(H, Diagonal)
    torch.testing.assert_close(H.diagonal(), torch.tensor([1.0, 2.0, 1.0]))
    torch.testing.assert_close(m.state[p]["B"], torch.tensor([1e-3, 2.0, 1e6]))  # stored B is not truncated


def test_diagonal_zero_B_divides_by_one():
    m = DiagonalQuasiCauchi()
    p = torch.zeros(2)
    feed(m, [p.clone()], [torch.ones(2)], p=p)
    m.state[p]["B"] = torch.tensor([0.0, 4.0])
    out, _ = feed(m, [p.clone()], [torch.tensor([3.0, 2.0])], p=p)
    torch.testing.assert_close(out[0], torch.tensor([3.0, 0.5]))


# --------------------------------------------------------------------------------------------------
# the shared base
# --------------------------------------------------------------------------------------------------
def _pairs(n=4, k=4, seed=0):
    A = random_spd(n, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    xs = [torch.randn(n, generator=gen) for _ in range(k)]
    return A, xs, [A @ x for x in xs]


def test_first_call_and_numeric_init_scale():
    for inverse in (True, False):
        m = BFGS(init_scale=4.0, inverse=inverse)
        g = torch.tensor([1.0, -2.0, 3.0])
        out, p = feed(m, [torch.zeros(3)], [g])
        st = m.state[p]
        assert st["step"] == 1
        if inverse:
            torch.testing.assert_close(st["H"], torch.eye(3) / 4)
        else:
            torch.testing.assert_close(st["B"], torch.eye(3) * 4)
        torch.testing.assert_close(out[0], g / 4)


def test_auto_init_scale_only_on_step_two():
    A, xs, gs = _pairs()
    m = BFGS()
    _, p = feed(m, xs[:3], gs[:3])
    s1, y1 = xs[1] - xs[0], gs[1] - gs[0]
    s2, y2 = xs[2] - xs[1], gs[2] - gs[1]
    H = torch.eye(4) * (s1 @ y1) / (y1 @ y1)
    H = bfgs_H_(H, s1, y1, s1 @ y1)
    H = bfgs_H_(H, s2, y2, s2 @ y2)
    torch.testing.assert_close(m.state[p]["H"], H)


def test_ptol_skip_still_refreshes_prev():
    A, xs, gs = _pairs()
    xs = [xs[0], xs[0] + 1e-40, xs[1]]
    gs = [A @ x for x in xs]
    m = BFGS(init_scale=1, ptol=1e-30)
    _, p = feed(m, xs, gs)
    s, y = xs[2] - xs[1], gs[2] - gs[1]  # spans from the skipped point
    torch.testing.assert_close(m.state[p]["H"], bfgs_H_(torch.eye(4), s, y, s @ y))
    assert m.state[p]["step"] == 3


def test_restart_interval_and_reset_scaling():
    A, xs, gs = _pairs(k=5)
    m = BFGS(restart_interval=3)
    _, p = feed(m, xs[:3], gs[:3])  # step 3 is a restart
    s, y = xs[2] - xs[1], gs[2] - gs[1]
    factor = (y @ y) / (s @ y)
    expected = torch.eye(4) / factor if factor >= 1 else torch.eye(4)
    torch.testing.assert_close(m.state[p]["H"], expected)
    # numeric init scale below 1 is not applied on a reset
    m = BFGS(restart_interval=2, init_scale=0.5)
    _, p = feed(m, xs[:2], gs[:2])
    torch.testing.assert_close(m.state[p]["H"], torch.eye(4))
    m = BFGS(restart_interval=2, init_scale=2.0, inverse=False)
    _, p = feed(m, xs[:2], gs[:2])
    torch.testing.assert_close(m.state[p]["B"], torch.eye(4) * 2)


def test_ptol_restart_resets():
    A, xs, gs = _pairs()
    xs = [xs[0], xs[1], xs[1].clone()]
    gs = [A @ x for x in xs]
    m = BFGS(init_scale=1, ptol_restart=True)
    _, p = feed(m, xs, gs)
    torch.testing.assert_close(m.state[p]["H"], torch.eye(4))


def test_gtol_skips():
    xs = [torch.zeros(3), torch.ones(3)]
    m = BFGS(init_scale=1)
    _, p = feed(m, xs, [torch.ones(3), torch.ones(3)])
    torch.testing.assert_close(m.state[p]["H"], torch.eye(3))


def test_beta_lerps_matrix():
    A, xs, gs = _pairs()
    m = BFGS(init_scale=1, beta=0.25)
    _, p = feed(m, xs[:2], gs[:2])
    s, y = xs[1] - xs[0], gs[1] - gs[0]
    torch.testing.assert_close(m.state[p]["H"], 0.25 * torch.eye(4) + 0.75 * bfgs_H_(torch.eye(4), s, y, s @ y))


def test_update_freq_spans_steps():
    A, xs, gs = _pairs(k=5)
    m = BFGS(init_scale=1, update_freq=2)
    outs, p = feed(m, xs[:4], gs[:4])  # updates on calls 0 and 2
    s, y = xs[2] - xs[0], gs[2] - gs[0]
    H = bfgs_H_(torch.eye(4), s, y, s @ y)
    torch.testing.assert_close(m.state[p]["H"], H)
    torch.testing.assert_close(outs[3], H @ gs[3])  # the current matrix is applied on every call


def test_scale_first():
    g = torch.tensor([3.0, -1.0, 0.5])
    out, _ = feed(BFGS(scale_first=True), [torch.zeros(3)], [g])
    torch.testing.assert_close(out[0], g / g.abs().sum())
    torch.testing.assert_close(first_step_scale(torch.tensor([1e-3, 0.0]), 1e-7), torch.tensor(1.0))
    big = torch.full((10,), 1e-9)  # floor: max|σv| ≥ eps
    torch.testing.assert_close(first_step_scale(big, 1e-12), torch.tensor(1.0))
    v = torch.ones(100)
    torch.testing.assert_close(first_step_scale(v, 0.05), torch.tensor(0.05))


def test_inner_changes_only_the_preconditioned_vector():
    A, xs, gs = _pairs()
    m = BFGS(init_scale=1, inner=tz.m.Mul(2.0))
    outs, p = feed(m, xs[:2], gs[:2])
    s, y = xs[1] - xs[0], gs[1] - gs[0]  # from the raw input
    H = bfgs_H_(torch.eye(4), s, y, s @ y)
    torch.testing.assert_close(m.state[p]["H"], H)
    torch.testing.assert_close(outs[1], H @ (2 * gs[1]))


def test_concat_params_false_is_block_diagonal():
    params = make_params(torch.float64, [(2,), (3,)])
    f = Objective(params)
    opt = tz.Modular(params, BFGS(concat_params=False), tz.m.LR(0.1))
    for _ in range(3):
        opt.zero_grad()
        f(params).backward()
        opt.step()
    m = opt.modules[0]
    H = m.get_H(Var(params=params, closure=None, model=None, current_step=0))
    assert isinstance(H, DenseInverse)
    expected = torch.block_diag(m.state[params[0]]["H"], m.state[params[1]]["H"])
    torch.testing.assert_close(H.A_inv, expected)
    assert m.state[params[0]]["H"].shape == (2, 2) and m.state[params[1]]["H"].shape == (3, 3)


def test_get_H_operators():
    params = [torch.zeros(3, requires_grad=True)]
    var = Var(params=params, closure=None, model=None, current_step=0)
    assert BFGS().get_H(var) is None
    for m, kind in [(BFGS(), DenseInverse), (BFGS(inverse=False), Dense), (DiagonalBFGS(), Diagonal),
                    (DiagonalQuasiCauchi(), Diagonal)]:
        opt = tz.Modular(params, m, tz.m.LR(0.01))
        for g in ([1.0, 2.0, 3.0], [0.5, 1.0, 1.0]):
            params[0].grad = torch.tensor(g)
            opt.step()
        H = m.get_H(var)
        assert isinstance(H, kind)
        st = m.state[params[0]]
        if isinstance(m, DiagonalBFGS):
            torch.testing.assert_close(H.diagonal(), 1 / st["H"])
        elif kind is Dense:
            torch.testing.assert_close(H.to_tensor(), st["B"])
        elif kind is DenseInverse:
            torch.testing.assert_close(H.solve(torch.ones(3)), st["H"] @ torch.ones(3))


def test_singular_B_clears_state_and_takes_safe_step():
    m = BFGS(inverse=False)
    p = torch.zeros(3)
    feed(m, [p.clone()], [torch.ones(3)], p=p)
    m.state[p]["B"].zero_()
    g = torch.tensor([2.0, -1.0, 1.0])
    out, _ = feed(m, [p.clone() + 1], [g], p=p)
    torch.testing.assert_close(out[0], g / g.abs().sum())
    assert len(m.state) == 0 and len(m.global_state) == 0
    out, _ = feed(m, [p.clone() + 2], [g], p=p)  # starts over
    assert m.state[p]["step"] == 1
    torch.testing.assert_close(out[0], g)


def test_non_finite_pair_is_skipped_and_recovers():
    A, xs, gs = _pairs(k=4)
    m = BFGS(init_scale=1)
    bad = gs[1].clone()
    bad[0] = float("nan")
    _, p = feed(m, xs[:2], [gs[0], bad])
    torch.testing.assert_close(m.state[p]["H"], torch.eye(4))
    feed(m, xs[2:4], gs[2:4], p=p)  # pair 2 has NaN g_prev: skipped; pair 3 is fine
    s, y = xs[3] - xs[2], gs[3] - gs[2]
    torch.testing.assert_close(m.state[p]["H"], bfgs_H_(torch.eye(4), s, y, s @ y))


def test_overflowing_update_resets():
    m = BFGS(init_scale=1, tol=0.0)
    xs = [torch.zeros(2, dtype=torch.float32), torch.tensor([1.0, 0.0], dtype=torch.float32)]
    gs = [torch.zeros(2, dtype=torch.float32), torch.tensor([1e-30, 1.0], dtype=torch.float32)]
    outs, p = feed(m, xs, gs)
    H = m.state[p]["H"]
    assert torch.isfinite(H).all() and torch.isfinite(outs[1]).all()
    torch.testing.assert_close(H, torch.eye(2, dtype=torch.float32))


def test_trajectory_matches_plain_loop_bfgs():
    """Plain loop implementation of the dense BFGS of the catalog (identity start, N&W scaling before the first
    update, product-form inverse update) with a fixed step, against ``BFGS`` + ``LR``."""
    x0 = make_params(torch.float64, [(3,), (2, 2)])
    f = Objective(x0)
    lr = 0.2

    params = clone_params(x0)
    opt = tz.Modular(params, BFGS(), tz.m.LR(lr))
    traj = []
    for _ in range(30):
        opt.zero_grad()
        f(params).backward()
        opt.step()
        traj.append(flat(snapshot(params)))

    x = flat(snapshot(x0))
    n = x.numel()
    shapes = [p.shape for p in x0]

    def grad(v):
        ps, i = [], 0
        for sh in shapes:
            k = math.prod(sh)
            ps.append(v[i:i + k].reshape(sh).clone().requires_grad_())
            i += k
        f(ps).backward()
        return flat([p.grad for p in ps])

    H = torch.eye(n)
    x_prev = g_prev = None
    for k in range(30):
        g = grad(x)
        if x_prev is not None:
            s, y = x - x_prev, g - g_prev
            rho = 1 / (s @ y)
            if k == 1:
                H = H * (s @ y) / (y @ y)
            if s @ y > 1e-32:
                I = torch.eye(n)
                H = (I - rho * torch.outer(s, y)) @ H @ (I - rho * torch.outer(y, s)) + rho * torch.outer(s, s)
        x_prev, g_prev = x, g
        x = x - lr * (H @ g)
        torch.testing.assert_close(traj[k], x, rtol=1e-6, atol=1e-10)


# --------------------------------------------------------------------------------------------------
# constructor validation
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: BFGS(init_scale=0), lambda: BFGS(init_scale="x"), lambda: BFGS(tol=-1), lambda: BFGS(ptol=-1),
    lambda: BFGS(restart_interval=0), lambda: BFGS(restart_interval="always"), lambda: BFGS(beta=1.0),
    lambda: BFGS(update_freq=0), lambda: BFGS(inverse=1), lambda: SSVM(switch=5), lambda: SSVM(switch=(1, 2, 3)),
    lambda: NewSSM(type=3), lambda: ShorR(alpha=1.0), lambda: DNRTR(lb=10, ub=1), lambda: SR1(gtol=-1.0),
])
def test_invalid_arguments(make):
    with pytest.raises((ValueError, TypeError)) as e:
        make()
    assert any(n in str(e.value) for n in ("BFGS", "SSVM", "NewSSM", "ShorR", "DNRTR", "SR1"))


@pytest.mark.parametrize("make", [lambda: PSB(inverse=True), lambda: Greenstadt1(inverse=False),
                                  lambda: ICUM(inverse=False), lambda: DiagonalBFGS(inverse=False),
                                  lambda: DiagonalQuasiCauchi(inverse=True), lambda: Pearson(inverse=False)])
def test_unsupported_form_raises(make):
    with pytest.raises(NotImplementedError):
        make()


def test_safe_guard():
    tiny2 = 2 * torch.finfo(torch.float64).tiny
    assert safe(torch.tensor(0.0)) == tiny2
    assert safe(torch.tensor(-1e-320)) == -tiny2
    assert safe(torch.tensor(3.0)) == 3.0
