"""Trust regions (TrustRegionBase and its radius rule, TrustCG, Dogleg, LevenbergMarquardt, CubicRegularization,
experimental InfinityNormTrustRegion): the shared sweep, trajectories against plainly written reference loops of
the textbook algorithms, SciPy's trust-region minimisers, and the documented robustness policy."""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import scipy.optimize
import torch
from sweep import check_module, roundtrip

import torchzero as tz
from torchzero.core import Module, Var
from torchzero.modules.experimental.infinity_norm_trust_region import InfinityNormTrustRegion
from torchzero.modules.quasi_newton import BFGS, LBFGS, SR1
from torchzero.modules.second_order.newton_cg import NewtonCGSteihaug
from torchzero.modules.trust_region.cubic import CubicRegularization, cauchy_radius, cubic_subproblem_eig
from torchzero.modules.trust_region.dogleg import Dogleg, dogleg_step
from torchzero.modules.trust_region.levenberg_marquardt import LevenbergMarquardt
from torchzero.modules.trust_region.trust_cg import TrustCG
from torchzero.modules.trust_region.trust_region import TrustRegionBase, next_radius, reduction_ratio
from torchzero.utils.derivatives import jacobian_and_hessian_mat_wrt
from torchzero.utils.linalg.linear_operator import Dense, DenseInverse, ScaledIdentity
from torchzero.utils.torch_tools import vec_to_tensors

F64 = torch.float64


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
class ExactHessian(Module):
    """Test curvature module: the exact dense Hessian at the current point (``get_H`` → ``Dense``); sets the loss
    and gradient. Counts its closure calls in ``self.n_evals``."""

    def __init__(self, fill: float | None = None):
        super().__init__({})
        self.fill = fill  # replaces every Hessian entry (robustness tests)

    def update(self, var: Var) -> None:
        closure = self._require_closure(var)
        with torch.enable_grad():
            loss = closure(False)
            g, H = jacobian_and_hessian_mat_wrt([loss], var.params)
        if self.fill is not None:
            H = torch.full_like(H, self.fill)
        var.loss = var.loss_approx = loss.detach()
        var.grad = vec_to_tensors(g.reshape(-1).clone(), var.params)
        self.global_state["H"] = H

    def apply(self, var: Var) -> Var:
        return var

    def get_H(self, var: Var) -> Dense | None:
        H = self.global_state.get("H")
        return None if H is None else Dense(H)


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def nonconvex(x: torch.Tensor) -> torch.Tensor:
    """Double wells coupled in a chain: indefinite Hessians near the origin, minima near ``±1``."""
    return ((x**2 - 1) ** 2).sum() + 0.1 * (x[:-1] * x[1:]).sum() + 0.05 * x.sum()


def run(modules: Callable[[], list[Module]], fn: Callable, x0, n_steps: int, stop_tol: float | None = None):
    """Runs ``tz.Modular`` on a flat float64 parameter; returns the trajectory (after each step) and the optimizer."""
    x = torch.tensor(x0, dtype=F64, requires_grad=True)
    opt = tz.Modular([x], *modules())

    def closure(backward=True):
        loss = fn(x)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    traj = []
    opt.radii = []  # type: ignore[attr-defined]
    for _ in range(n_steps):
        opt.step(closure)
        traj.append(x.detach().clone())
        opt.radii.append(opt.modules[0].global_state.get("trust_radius"))  # type: ignore[attr-defined]
        if stop_tol is not None and float(fn(x.detach())) <= stop_tol:
            break
    return traj, opt


def assert_same_trajectory(fn, ours, opt, ref, radii, rtol=1e-9, atol=1e-12):
    """Iterates equal; radii equal while the loss is above rounding level (below it the ratio is noise)."""
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a.numpy(), b, rtol=rtol, atol=atol)
    for x, r_ours, r_ref in zip(ref, opt.radii, radii):
        if float(fn(torch.tensor(x))) < 1e-20:
            break
        assert r_ours == pytest.approx(r_ref, rel=1e-9)


def derivatives(fn: Callable, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    xt = torch.tensor(x, dtype=F64, requires_grad=True)
    f = fn(xt)
    g = torch.autograd.grad(f, xt)[0]
    H = torch.autograd.functional.hessian(fn, xt.detach())
    return float(f.detach()), g.numpy(), H.numpy()


def reference_trust_region(fn: Callable, x0, solve: Callable, n_steps: int, eta: float, nplus: float, nminus: float,
                           rho_good: float, rho_bad: float, boundary_tol: float | None, init: float,
                           max_attempts: int, use_norm: bool):
    """Catalog 1.6 written plainly in NumPy: returns the iterates and radii after each step."""
    x = np.array(x0, dtype=np.float64)
    radius = init
    tiny = np.finfo(np.float64).tiny
    xs, radii = [], []
    for _ in range(n_steps):
        f, g, H = derivatives(fn, x)
        for _ in range(max_attempts):
            d = solve(g, H, radius)
            f_plus = float(fn(torch.tensor(x - d, dtype=F64)))
            pred = g @ d - 0.5 * d @ H @ d
            rho = (f - f_plus) / max(pred, 2 * tiny)
            level = 20 * np.finfo(np.float64).eps * max(abs(f), abs(f_plus))
            if abs(f - f_plus) <= level and abs(pred) <= level:  # rounding safeguard
                rho = 1.0
            r = np.linalg.norm(d) if use_norm else radius
            if not np.isfinite(f_plus) or rho < rho_bad:
                new = nminus * r
            elif rho > rho_good and (boundary_tol is None or (radius - r) / radius < boundary_tol):
                new = max(radius, nplus * r)
            else:
                new = radius
            if not (2 * tiny <= new <= np.finfo(np.float64).max / 2):
                new = init
            radius = new
            if np.isfinite(f_plus) and rho > eta:
                x = x - d
                break
        xs.append(x.copy())
        radii.append(radius)
    return xs, radii


def _boundary(z: np.ndarray, d: np.ndarray, delta: float) -> np.ndarray:
    a, b, c = d @ d, 2 * z @ d, z @ z - delta**2
    tau = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    return z + tau * d


def reference_steihaug(g: np.ndarray, B: np.ndarray, delta: float, tol: float = 1e-8, miniter: int = 1):
    """Nocedal & Wright Alg. 7.2 for ``min −gᵀp + ½pᵀBp, ‖p‖ ≤ Δ`` (the step is subtracted)."""
    z = np.zeros_like(g)
    r = g.copy()
    d = r.copy()
    for j in range(g.size):
        Bd = B @ d
        dBd = d @ Bd
        if dBd <= 0:
            return _boundary(z, d, delta)
        alpha = (r @ r) / dBd
        z_new = z + alpha * d
        if np.linalg.norm(z_new) >= delta:
            return _boundary(z, d, delta)
        r_new = r - alpha * Bd
        if np.linalg.norm(r_new) < tol and j + 1 >= miniter:
            return z_new
        d = r_new + (r_new @ r_new) / (r @ r) * d
        r, z = r_new, z_new
    return z


def reference_dogleg(g: np.ndarray, B: np.ndarray, delta: float) -> np.ndarray:
    """Nocedal & Wright §4.1 for positive definite ``B`` (the step is subtracted)."""
    p_b = np.linalg.solve(B, g)
    if np.linalg.norm(p_b) <= delta:
        return p_b
    p_u = (g @ g) / (g @ B @ g) * g
    if np.linalg.norm(p_u) >= delta:
        return g * delta / np.linalg.norm(g)
    # ‖p_u + (τ − 1)(p_b − p_u)‖ = Δ, τ ∈ [1, 2]
    v = p_b - p_u
    roots = np.roots([v @ v, 2 * p_u @ v, p_u @ p_u - delta**2])
    t = max(r.real for r in roots if abs(r.imag) < 1e-12)
    return p_u + t * v


def reference_levenberg_marquardt(g: np.ndarray, B: np.ndarray, delta: float) -> np.ndarray:
    """``(B + I/Δ + τI)⁻¹g`` with ``τ`` from Nocedal & Wright Alg. 3.3 (0 when ``B + I/Δ`` is positive definite)."""
    A = B + np.eye(g.size) / delta
    beta = 1e-3 * np.abs(A).max()
    tau = 0.0
    if np.linalg.eigvalsh(A)[0] <= 0:
        tau = 0.0 if A.diagonal().min() > 0 else beta - A.diagonal().min()
        while True:
            try:
                np.linalg.cholesky(A + tau * np.eye(g.size))
                break
            except np.linalg.LinAlgError:
                tau = max(2 * tau, beta)
    return np.linalg.solve(A + tau * np.eye(g.size), g)


def reference_cubic(g: np.ndarray, B: np.ndarray, M: float, eps: float) -> np.ndarray:
    """Global minimiser of ``gᵀs + ½sᵀBs + (M/3)‖s‖³`` (returned negated) by Brent's method on
    ``‖(B + σI)⁻¹g‖ = σ/M`` with dense solves, plus the catalog's Newton-step shortcut for SPD ``B``."""
    lam_min = np.linalg.eigvalsh(B)[0]
    gn = np.linalg.norm(g)
    if lam_min > 0:
        s_n = np.linalg.solve(B, g)
        kappa = g @ B @ g / gn**2
        r_min = -kappa / (2 * M) + math.sqrt(kappa**2 / (4 * M * M) + gn / M)
        if np.linalg.norm(s_n) - r_min < eps:
            return s_n
    lo = max(0.0, -lam_min)
    psi = lambda s: np.linalg.norm(np.linalg.solve(B + s * np.eye(g.size), g)) - s / M
    hi = lo + 1.0
    while psi(hi) > 0:
        hi *= 2
    sigma = scipy.optimize.brentq(psi, lo + 1e-14 * max(1, lo), hi, xtol=1e-15, rtol=1e-15)
    return np.linalg.solve(B + sigma * np.eye(g.size), g)


# --------------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------------
def _custom_strategy(**kw):
    # the default rule on a halved radius budget: shows that any callable with the protocol works
    from torchzero.modules.trust_region.trust_region import default_radius
    radius, success = default_radius(**kw)
    return radius, success


SWEEP = {
    "TrustCG": lambda: [TrustCG(ExactHessian())],
    "TrustCG_fixed_lr": lambda: [TrustCG(ExactHessian(), radius_strategy="fixed", init=0.5), tz.m.LR(0.5)],
    "TrustCG_custom": lambda: [TrustCG(ExactHessian(), radius_strategy=_custom_strategy)],
    "TrustCG_BFGS": lambda: [TrustCG(BFGS(inverse=False))],
    "TrustCG_SR1_reg": lambda: [TrustCG(SR1(inverse=False), reg=1e-3, maxiter=3)],
    "TrustCG_LBFGS": lambda: [TrustCG(LBFGS())],
    "TrustCG_Identity": lambda: [TrustCG(tz.m.Identity())],
    "TrustCG_inner": lambda: [TrustCG(ExactHessian(), inner=tz.m.EMA(0.5))],
    "TrustCG_update_freq": lambda: [TrustCG(ExactHessian(), update_freq=3)],
    "TrustCG_chain": lambda: [TrustCG([ExactHessian(), tz.m.LR(1.0)], maxiter=2)],
    "Dogleg": lambda: [Dogleg(ExactHessian())],
    "Dogleg_SR1": lambda: [Dogleg(SR1(inverse=False))],
    "Dogleg_BFGS_inverse": lambda: [Dogleg(BFGS())],
    "LevenbergMarquardt": lambda: [LevenbergMarquardt(ExactHessian())],
    "LevenbergMarquardt_y": lambda: [LevenbergMarquardt(ExactHessian(), y=1, update_freq=2)],
    "LevenbergMarquardt_fallback": lambda: [LevenbergMarquardt(BFGS(), fallback=True)],
    "LevenbergMarquardt_Identity": lambda: [LevenbergMarquardt(tz.m.Identity(), y=0.5)],
    "CubicRegularization": lambda: [CubicRegularization(ExactHessian())],
    "CubicRegularization_check_decrease": lambda: [CubicRegularization(ExactHessian(), check_decrease=True)],
    "CubicRegularization_LBFGS": lambda: [CubicRegularization(LBFGS())],
    "InfinityNormTrustRegion": lambda: [InfinityNormTrustRegion(ExactHessian())],
    "InfinityNormTrustRegion_linop": lambda: [InfinityNormTrustRegion(ExactHessian(), prefer_dense=False,
                                                                      update_freq=2)],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    check_module(SWEEP[name], needs_closure=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["TrustCG", "Dogleg", "LevenbergMarquardt", "CubicRegularization"])
def test_sweep_cuda(name: str) -> None:
    check_module(SWEEP[name], needs_closure=True, device="cuda")


# --------------------------------------------------------------------------------------------------
# construction
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [TrustCG, Dogleg, LevenbergMarquardt, CubicRegularization, InfinityNormTrustRegion])
@pytest.mark.parametrize("kwargs", [dict(eta=-0.1), dict(eta=1.0), dict(nplus=0.5), dict(nminus=0), dict(nminus=1),
                                    dict(init=0), dict(init=-1), dict(init=math.inf), dict(max_attempts=0),
                                    dict(radius_strategy="adaptive"), dict(update_freq=0), dict(rho_bad=0.5,
                                                                                                rho_good=0.1)])
def test_invalid_arguments(cls, kwargs):
    with pytest.raises((ValueError, TypeError), match=cls.__name__):
        cls(ExactHessian(), **kwargs)


@pytest.mark.parametrize("make", [
    lambda: TrustCG(ExactHessian(), maxiter=0), lambda: TrustCG(ExactHessian(), cg_tol=-1),
    lambda: TrustCG(ExactHessian(), prefer_exact=1), lambda: TrustCG(ExactHessian(), reg=-1),
    lambda: LevenbergMarquardt(ExactHessian(), y=2), lambda: LevenbergMarquardt(ExactHessian(), fallback="yes"),
    lambda: CubicRegularization(ExactHessian(), maxiter=0), lambda: CubicRegularization(ExactHessian(), eps=-1),
    lambda: InfinityNormTrustRegion(ExactHessian(), tol=-1), lambda: TrustCG("Newton"),
    lambda: TrustCG(ExactHessian(), boundary_tol=-1),
])
def test_invalid_subclass_arguments(make):
    with pytest.raises((ValueError, TypeError)):
        make()


def test_eta_above_rho_bad_warns_and_defaults_clash():
    with pytest.warns(UserWarning, match="stall"):
        TrustCG(ExactHessian(), eta=0.1, rho_bad=0.01)

    class Clash(TrustRegionBase):
        def trust_solve(self, f, g, H, radius, params, closure, settings):
            return g

    with pytest.raises(ValueError, match="clash"):
        Clash(dict(init=3), ExactHessian(), 0, 2, 0.5, 0.9, 0.1, None, 1, 10, "default", None)


def test_closure_required_error_names_module():
    x = torch.zeros(2, requires_grad=True)
    opt = tz.Modular([x], TrustCG(ExactHessian()))
    rosenbrock(x).backward()
    with pytest.raises(RuntimeError, match="TrustCG requires a closure"):
        opt.step()


def test_no_curvature_is_a_clear_error():
    with pytest.raises(RuntimeError, match="provides no curvature"):
        run(lambda: [TrustCG(tz.m.LR(1.0))], rosenbrock, [-1.2, 1.0], 1)


# --------------------------------------------------------------------------------------------------
# the base class and its radius rule
# --------------------------------------------------------------------------------------------------
class ExactNewtonTR(TrustRegionBase):
    """A subclass whose subproblem solution is the Newton step clipped to the radius."""

    def __init__(self, hess_module, **kwargs):
        args = dict(eta=0.0, nplus=3.5, nminus=0.25, rho_good=0.99, rho_bad=1e-4, boundary_tol=1e-6, init=1.0,
                    max_attempts=10, radius_strategy="default", radius_fn=torch.linalg.vector_norm)
        args.update(kwargs)
        super().__init__(None, hess_module, **args)

    def trust_solve(self, f, g, H, radius, params, closure, settings):
        return H.solve_bounded(g, radius)


def _quadratic(n: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))[0]
    A = Q @ torch.diag(torch.logspace(0, 2, n, dtype=F64)) @ Q.T
    b = torch.randn(n, generator=gen, dtype=F64)
    return A, b, (lambda x: 0.5 * x @ A @ x - b @ x)


def test_exact_newton_subclass_reproduces_newton_on_quadratic():
    A, b, fn = _quadratic()
    traj, opt = run(lambda: [ExactNewtonTR(ExactHessian(), init=1e6)], fn, [0.0] * 6, 1)
    torch.testing.assert_close(traj[0], torch.linalg.solve(A, b), rtol=1e-12, atol=1e-12)
    assert opt.num_evaluations == 2  # the Hessian, one trial point


def test_fixed_strategy_accepts_every_step_with_init_radius():
    A, b, fn = _quadratic()
    traj, opt = run(lambda: [TrustCG(ExactHessian(), radius_strategy="fixed", init=0.1)], fn, [0.0] * 6, 5)
    x_prev = torch.zeros(6, dtype=F64)
    for x in traj:  # every step is accepted and lies on the boundary of the fixed radius
        assert abs(float((x - x_prev).norm()) - 0.1) < 1e-12
        x_prev = x
    assert opt.num_evaluations == 5  # no trial evaluations
    tr = opt.modules[0]
    assert tr.global_state["trust_radius"] == 0.1


def test_next_radius_rule():
    kw = dict(eta=0.0, nplus=3.5, nminus=0.25, rho_good=0.99, rho_bad=1e-4, init=1.0, dtype=F64)
    # bad ratio: shrink to nminus·‖d‖, rejected
    assert next_radius(-1.0, 1.0, 2.0, 0.5, boundary_tol=1e-6, **kw) == (0.125, False)
    # non-finite trial loss: shrink, rejected
    assert next_radius(5.0, math.nan, 2.0, 0.5, boundary_tol=1e-6, **kw) == (0.125, False)
    # very good ratio on the boundary: grow to nplus·‖d‖
    assert next_radius(1.0, 1.0, 2.0, 2.0, boundary_tol=1e-6, **kw) == (7.0, True)
    # very good ratio inside the region: keep the radius
    assert next_radius(1.0, 1.0, 2.0, 1.0, boundary_tol=1e-6, **kw) == (2.0, True)
    assert next_radius(1.0, 1.0, 2.0, 1.0, boundary_tol=None, **kw) == (3.5, True)
    # ordinary ratio: keep, accepted; rho_bad < ρ <= eta would be rejected
    assert next_radius(0.5, 1.0, 2.0, 2.0, boundary_tol=1e-6, **kw) == (2.0, True)
    assert next_radius(0.0, 1.0, 2.0, 2.0, boundary_tol=1e-6, **{**kw, "rho_bad": -1.0}) == (2.0, False)
    # radii outside [2·tiny, max/2] (or NaN) are reset to init
    tiny = torch.finfo(F64).tiny
    assert next_radius(-1.0, 1.0, tiny, tiny, boundary_tol=None, **kw) == (1.0, False)
    assert next_radius(1.0, 1.0, 1e308, 1e308, boundary_tol=None, **kw) == (1.0, True)
    assert next_radius(-1.0, 1.0, 1.0, math.nan, boundary_tol=None, **kw) == (0.25, False)


def test_reduction_ratio_policy():
    tiny = torch.finfo(F64).tiny
    assert reduction_ratio(1.0, 0.5, 1.0, tiny) == 0.5
    assert reduction_ratio(1.0, math.inf, 1.0, tiny) == -math.inf
    assert reduction_ratio(1.0, math.nan, 1.0, tiny) == -math.inf
    assert reduction_ratio(math.inf, 3.0, 1.0, tiny) == math.inf
    assert reduction_ratio(1.0, 0.5, 0.0, tiny) == 0.5 / (2 * tiny)  # pred clamped at 2·tiny
    assert reduction_ratio(1.0, 0.5, math.nan, tiny) == 0.5 / (2 * tiny)
    # rounding safeguard: both reductions at rounding level give ρ = 1; only with eps given
    eps = torch.finfo(F64).eps
    assert reduction_ratio(1.0, 1.0 + eps, 1e-17, tiny, eps) == 1.0
    assert reduction_ratio(1.0, 1.0 + eps, 1e-17, tiny) == -eps / 1e-17
    assert reduction_ratio(1.0, 1.0 + 1e-10, 1e-17, tiny, eps) == pytest.approx(-1e7, rel=1e-6)  # real increase
    assert reduction_ratio(1.0, 1.0, 1e-3, tiny, eps) == 0.0  # the model promised a real decrease


def test_custom_strategy_protocol():
    calls = []

    def strategy(**kw):
        calls.append(kw)
        return kw["trust_radius"] * 0.5, len(calls) % 2 == 0  # reject every other attempt

    traj, opt = run(lambda: [TrustCG(ExactHessian(), radius_strategy=strategy, init=2.0)], rosenbrock,
                    [-1.2, 1.0], 2)
    assert set(calls[0]) == {"params", "closure", "f", "g", "H", "d", "trust_radius", "eta", "nplus", "nminus",
                             "rho_good", "rho_bad", "boundary_tol", "init", "state", "settings", "radius_fn"}
    assert [c["trust_radius"] for c in calls] == [2.0, 1.0, 0.5, 0.25]
    assert calls[0]["f"] == pytest.approx(float(rosenbrock(torch.tensor([-1.2, 1.0], dtype=F64))))
    assert calls[0]["radius_fn"] is torch.linalg.vector_norm
    assert calls[0]["state"] is opt.modules[0].global_state
    assert opt.num_evaluations == 2  # the strategy never evaluated the closure
    # the accepted step is the second attempt's, with radius 1.0
    assert float((traj[0] - torch.tensor([-1.2, 1.0], dtype=F64)).norm()) <= 1.0 + 1e-12


def test_all_attempts_failing_gives_zero_update():
    traj, opt = run(lambda: [TrustCG(ExactHessian(), radius_strategy=lambda **kw: (kw["trust_radius"], False),
                                     max_attempts=3)], rosenbrock, [-1.2, 1.0], 2)
    for x in traj:
        assert torch.equal(x, torch.tensor([-1.2, 1.0], dtype=F64))


# --------------------------------------------------------------------------------------------------
# trajectories against the reference loop
# --------------------------------------------------------------------------------------------------
TR_DEFAULTS = dict(eta=0.0, nplus=3.5, nminus=0.25, rho_good=0.99, rho_bad=1e-4, init=1.0, max_attempts=10)


@pytest.mark.parametrize("fn, x0", [(rosenbrock, [-1.2, 1.0]), (nonconvex, [0.1, -0.2, 0.05, 0.3, -0.1])])
def test_trust_cg_matches_reference_loop(fn, x0):
    n_steps = 15
    ours, opt = run(lambda: [TrustCG(ExactHessian())], fn, x0, n_steps)
    ref, radii = reference_trust_region(fn, x0, lambda g, H, r: reference_steihaug(g, H, r), n_steps,
                                        boundary_tol=1e-6, use_norm=True, **TR_DEFAULTS)
    assert_same_trajectory(fn, ours, opt, ref, radii)


@pytest.mark.parametrize("fn, x0", [(rosenbrock, [-1.2, 1.0]), (rosenbrock, [2.0, -1.0])])
def test_dogleg_matches_reference_loop(fn, x0):
    n_steps = 12
    ours, opt = run(lambda: [Dogleg(ExactHessian())], fn, x0, n_steps)
    kw = dict(TR_DEFAULTS, nplus=2, nminus=0.25, rho_good=0.75, rho_bad=0.25)
    ref, radii = reference_trust_region(fn, x0, reference_dogleg, n_steps, boundary_tol=None, use_norm=True, **kw)
    assert_same_trajectory(fn, ours, opt, ref, radii)


@pytest.mark.parametrize("fn, x0", [(rosenbrock, [-1.2, 1.0]), (nonconvex, [0.1, -0.2, 0.05, 0.3, -0.1])])
def test_levenberg_marquardt_matches_reference_loop(fn, x0):
    n_steps = 15
    ours, opt = run(lambda: [LevenbergMarquardt(ExactHessian())], fn, x0, n_steps)
    ref, radii = reference_trust_region(fn, x0, reference_levenberg_marquardt, n_steps, boundary_tol=None,
                                        use_norm=False, **TR_DEFAULTS)
    assert_same_trajectory(fn, ours, opt, ref, radii)


@pytest.mark.parametrize("fn, x0", [(rosenbrock, [-1.2, 1.0]), (nonconvex, [0.1, -0.2, 0.05, 0.3, -0.1])])
def test_cubic_matches_reference_loop(fn, x0):
    n_steps = 12
    eps = 1e-13
    ours, opt = run(lambda: [CubicRegularization(ExactHessian(), eps=eps)], fn, x0, n_steps)
    solve = lambda g, H, r: reference_cubic(g, H, 1 / r, eps)
    ref, radii = reference_trust_region(fn, x0, solve, n_steps, boundary_tol=None, use_norm=False, **TR_DEFAULTS)
    assert_same_trajectory(fn, ours, opt, ref, radii, rtol=1e-7, atol=1e-10)


# --------------------------------------------------------------------------------------------------
# against SciPy's trust-region minimisers
# --------------------------------------------------------------------------------------------------
def beale(x):
    return (1.5 - x[0] + x[0] * x[1]) ** 2 + (2.25 - x[0] + x[0] * x[1] ** 2) ** 2 + (2.625 - x[0] + x[0] * x[1] ** 3) ** 2


def wood(x):
    return (100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2 + 90 * (x[3] - x[2] ** 2) ** 2 + (1 - x[2]) ** 2
            + 10.1 * ((x[1] - 1) ** 2 + (x[3] - 1) ** 2) + 19.8 * (x[1] - 1) * (x[3] - 1))


def helical_valley(x):
    theta = torch.atan(x[1] / x[0]) / (2 * math.pi) + torch.where(x[0] < 0, 0.5, 0.0)
    return 100 * ((x[2] - 10 * theta) ** 2 + (torch.sqrt(x[0] ** 2 + x[1] ** 2) - 1) ** 2) + x[2] ** 2


def ext_rosenbrock(x):
    return (100 * (x[1::2] - x[::2] ** 2) ** 2 + (1 - x[::2]) ** 2).sum()


PROBLEMS = {
    "rosenbrock": (rosenbrock, [-1.2, 1.0], [1.0, 1.0]),
    "beale": (beale, [1.0, 1.0], [3.0, 0.5]),
    "wood": (wood, [-3.0, -1.0, -3.0, -1.0], [1.0] * 4),
    "helical_valley": (helical_valley, [-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]),
    "ext_rosenbrock_8": (ext_rosenbrock, [-1.2, 1.0] * 4, [1.0] * 8),
}


def _scipy_minimize(fn, x0, method):
    fun = lambda x: float(fn(torch.tensor(x, dtype=F64)))
    jac = lambda x: derivatives(fn, x)[1]
    hess = lambda x: derivatives(fn, x)[2]
    return scipy.optimize.minimize(fun, np.array(x0, dtype=np.float64), jac=jac, hess=hess, method=method,
                                   options=dict(gtol=1e-10, maxiter=500))


@pytest.mark.parametrize("name", [n if n == "rosenbrock" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in PROBLEMS])
@pytest.mark.parametrize("make, method", [
    (lambda: [TrustCG(ExactHessian())], "trust-ncg"),
    (lambda: [TrustCG(ExactHessian())], "trust-exact"),
    (lambda: [CubicRegularization(ExactHessian())], "trust-exact"),
    (lambda: [LevenbergMarquardt(ExactHessian())], "trust-exact"),
])
def test_same_minimiser_as_scipy(name, make, method):
    fn, x0, xstar = PROBLEMS[name]
    res = _scipy_minimize(fn, x0, method)
    traj, _ = run(make, fn, x0, 200, stop_tol=1e-20)
    np.testing.assert_allclose(res.x, xstar, atol=1e-6)
    np.testing.assert_allclose(traj[-1].numpy(), res.x, atol=1e-6)


def test_dogleg_same_minimiser_as_scipy_dogleg():
    fn, x0, xstar = PROBLEMS["rosenbrock"]
    res = _scipy_minimize(fn, x0, "dogleg")
    traj, _ = run(lambda: [Dogleg(ExactHessian())], fn, x0, 100, stop_tol=1e-20)
    np.testing.assert_allclose(traj[-1].numpy(), res.x, atol=1e-8)


@pytest.mark.parametrize("make, max_steps", [
    (lambda: [TrustCG(ExactHessian())], 28), (lambda: [Dogleg(ExactHessian())], 24),
    (lambda: [CubicRegularization(ExactHessian())], 24), (lambda: [LevenbergMarquardt(ExactHessian())], 28),
])
def test_rosenbrock_step_counts(make, max_steps):
    # catalog: TrustCG ~25 steps (scipy trust-exact 25), Dogleg ~21 (scipy dogleg 23), Cubic ~21
    traj, _ = run(make, rosenbrock, [-1.2, 1.0], 100)
    n = next(i for i, x in enumerate(traj) if float((x - 1).norm()) < 1e-6) + 1
    assert n <= max_steps


@pytest.mark.parametrize("cls", [TrustCG, Dogleg, CubicRegularization])
def test_with_newton_module(cls):
    newton = pytest.importorskip("torchzero.modules.second_order.newton")
    a, _ = run(lambda: [cls(newton.Newton())], rosenbrock, [-1.2, 1.0], 15)
    b, _ = run(lambda: [cls(ExactHessian())], rosenbrock, [-1.2, 1.0], 15)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", [lambda: TrustCG(SR1(inverse=False)), lambda: TrustCG(BFGS(inverse=False)),
                                  lambda: Dogleg(BFGS(inverse=False)), lambda: TrustCG(LBFGS()),
                                  lambda: LevenbergMarquardt(BFGS(inverse=False))])
def test_quasi_newton_trust_regions_converge(make):
    traj, _ = run(lambda: [make()], rosenbrock, [-1.2, 1.0], 300, stop_tol=1e-16)
    np.testing.assert_allclose(traj[-1].numpy(), [1.0, 1.0], atol=1e-6)


# --------------------------------------------------------------------------------------------------
# TrustCG specifics
# --------------------------------------------------------------------------------------------------
def _spd(n=8, seed=0, indefinite=False):
    gen = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))[0]
    lam = torch.logspace(-1, 1, n, dtype=F64)
    if indefinite:
        lam[:2] = -lam[:2]
    return Q @ torch.diag(lam) @ Q.T, torch.randn(n, generator=gen, dtype=F64)


def _solve(module: TrustRegionBase, g, H, radius):
    return module.trust_solve(f=0.0, g=g, H=H, radius=radius, params=[], closure=None, settings=module.defaults)


def test_trust_cg_subproblem_and_resolve_after_rejection():
    H, g = _spd()
    tr = TrustCG(ExactHessian())
    Hop = Dense(H)
    newton = torch.linalg.solve(H, g)
    assert float(newton.norm()) > 1.0
    # large radius: the Newton step; small radius: on the boundary, as the textbook algorithm
    d_big = _solve(tr, g, Hop, 100.0)
    torch.testing.assert_close(d_big, newton, rtol=1e-7, atol=1e-9)
    for radius in (0.8, 0.3, 0.05):
        d = _solve(tr, g, Hop, radius)
        assert abs(float(d.norm()) - radius) < 1e-12
        np.testing.assert_allclose(d.numpy(), reference_steihaug(g.numpy(), H.numpy(), radius), rtol=1e-10)

    # after a rejection with the same g and H, the smaller radius reuses the stored CG iterates
    calls = []
    counting = Dense(H)
    counting.matvec = lambda x: calls.append(1) or H @ x  # type: ignore[method-assign]
    d1 = _solve(tr, g, counting, 0.8)
    n_first = len(calls)
    d2 = _solve(tr, g, counting, 0.2)
    assert len(calls) == n_first  # no new products
    np.testing.assert_allclose(d1.numpy(), reference_steihaug(g.numpy(), H.numpy(), 0.8), rtol=1e-10)
    np.testing.assert_allclose(d2.numpy(), reference_steihaug(g.numpy(), H.numpy(), 0.2), rtol=1e-10)


def test_trust_cg_negative_curvature_goes_to_boundary():
    H, g = _spd(indefinite=True)
    d = _solve(TrustCG(ExactHessian()), g, Dense(H), 0.7)
    assert abs(float(d.norm()) - 0.7) < 1e-12
    np.testing.assert_allclose(d.numpy(), reference_steihaug(g.numpy(), H.numpy(), 0.7), rtol=1e-10)
    assert float(g @ d - 0.5 * d @ H @ d) > 0  # the model decreases


def test_trust_cg_scaled_identity_closed_form():
    g = torch.tensor([3.0, 4.0], dtype=F64)
    H = ScaledIdentity(2.0, shape=(2, 2), dtype=F64)
    tr = TrustCG(tz.m.Identity())
    torch.testing.assert_close(_solve(tr, g, H, 10.0), g / 2)
    torch.testing.assert_close(_solve(tr, g, H, 1.0), g / 5)


# --------------------------------------------------------------------------------------------------
# Dogleg specifics
# --------------------------------------------------------------------------------------------------
def test_dogleg_cases():
    H, g = _spd()
    Hop = Dense(H)
    tr = Dogleg(ExactHessian())
    p_n = torch.linalg.solve(H, g)
    gHg = float(g @ H @ g)
    p_c = float(g @ g) / gHg * g
    assert float(p_c.norm()) < float(p_n.norm())
    # Newton point inside
    torch.testing.assert_close(_solve(tr, g, Hop, float(p_n.norm()) * 1.01), p_n)
    # Cauchy point outside: scaled steepest descent
    r = float(p_c.norm()) * 0.5
    torch.testing.assert_close(_solve(tr, g, Hop, r), g * r / g.norm())
    # in between: norm Δ, on the segment [p_C, p_N]
    r = 0.5 * (float(p_c.norm()) + float(p_n.norm()))
    d = _solve(tr, g, Hop, r)
    assert abs(float(d.norm()) - r) < 1e-12
    beta = float((d - p_c) @ (p_n - p_c) / ((p_n - p_c) @ (p_n - p_c)))
    assert 0 < beta < 1
    torch.testing.assert_close(d, p_c + beta * (p_n - p_c), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(d.numpy(), reference_dogleg(g.numpy(), H.numpy(), r), rtol=1e-12)


def test_dogleg_indefinite_and_degenerate():
    g = torch.tensor([1.0, 0.5], dtype=F64)
    # negative curvature along g: steepest descent to the boundary
    H = torch.diag(torch.tensor([-1.0, 1.0], dtype=F64))
    d = dogleg_step(g, float(g @ H @ g), None, 0.3)
    torch.testing.assert_close(d, g * 0.3 / g.norm())
    # positive curvature along g, but the Newton point is not a descent direction: Cauchy point
    H = torch.diag(torch.tensor([1.0, -0.1], dtype=F64))
    tr = Dogleg(ExactHessian())
    d = _solve(tr, g, Dense(H), 100.0)
    gHg = float(g @ H @ g)
    assert float(g @ torch.linalg.solve(H, g)) < 0
    torch.testing.assert_close(d, g * float(g @ g) / gHg)
    # singular H: the Newton point is not finite
    H = torch.zeros(2, 2, dtype=F64)
    d = _solve(Dogleg(ExactHessian()), g, Dense(H), 0.2)
    torch.testing.assert_close(d, g * 0.2 / g.norm())
    assert torch.isfinite(d).all()


# --------------------------------------------------------------------------------------------------
# LevenbergMarquardt specifics
# --------------------------------------------------------------------------------------------------
def test_levenberg_marquardt_single_step_and_marquardt_scaling():
    H, g = _spd()
    for radius in (0.1, 1.0, 30.0):
        d = _solve(LevenbergMarquardt(ExactHessian()), g, Dense(H), radius)
        torch.testing.assert_close(d, torch.linalg.solve(H + torch.eye(8, dtype=F64) / radius, g))
        d = _solve(LevenbergMarquardt(ExactHessian(), y=1), g, Dense(H), radius)
        torch.testing.assert_close(d, torch.linalg.solve(H + torch.diag(H.diagonal()) / radius, g))
        d = _solve(LevenbergMarquardt(ExactHessian(), y=0.25), g, Dense(H), radius)
        D = 0.25 * H.diagonal() + 0.75
        torch.testing.assert_close(d, torch.linalg.solve(H + torch.diag(D) / radius, g))
    # zero diagonal entries are replaced by 1 in the scaling
    H0 = torch.zeros(3, 3, dtype=F64)
    g0 = torch.ones(3, dtype=F64)
    d = _solve(LevenbergMarquardt(ExactHessian(), y=1), g0, Dense(H0), 0.5)
    torch.testing.assert_close(d, g0 * 0.5)


def test_levenberg_marquardt_inverse_only_operator():
    H, g = _spd()
    with pytest.raises(TypeError, match="fallback=True"):
        _solve(LevenbergMarquardt(ExactHessian()), g, DenseInverse(torch.linalg.inv(H)), 1.0)
    d = _solve(LevenbergMarquardt(ExactHessian(), fallback=True), g, DenseInverse(torch.linalg.inv(H)), 1.0)
    torch.testing.assert_close(d, torch.linalg.solve(H + torch.eye(8, dtype=F64), g))


# --------------------------------------------------------------------------------------------------
# CubicRegularization specifics
# --------------------------------------------------------------------------------------------------
def _cubic_model(g, H, s, M):
    return float(g @ s + 0.5 * s @ H @ s + M / 3 * s.norm() ** 3)


@pytest.mark.parametrize("indefinite", [False, True])
@pytest.mark.parametrize("M", [0.01, 1.0, 100.0])
def test_cubic_subproblem_optimality(indefinite, M):
    H, g = _spd(indefinite=indefinite)
    tr = CubicRegularization(ExactHessian(), eps=1e-12)
    s = -_solve(tr, g, Dense(H), 1 / M)
    # first-order condition (H + M‖s‖I)s = −g and second-order condition H + M‖s‖I ⪰ 0
    residual = (H + M * s.norm() * torch.eye(8, dtype=F64)) @ s + g
    assert float(residual.norm()) < 1e-9 * max(1.0, float(g.norm()))
    assert float(torch.linalg.eigvalsh(H).min()) + M * float(s.norm()) >= -1e-9
    # the global minimum: no better point from local searches started around it
    best = _cubic_model(g, H, s, M)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        z0 = torch.randn(8, generator=gen, dtype=F64) * float(s.norm())
        res = scipy.optimize.minimize(lambda z: _cubic_model(g, H, torch.tensor(z), M), z0.numpy(), method="BFGS")
        assert best <= res.fun + 1e-9 * max(1.0, abs(res.fun))


def test_cubic_hard_case_and_saddle_point():
    # hard case: g orthogonal to the eigenvector of the negative eigenvalue
    lam = torch.tensor([-2.0, 1.0, 3.0], dtype=F64)
    g_hat = torch.tensor([0.0, 1.0, 1.0], dtype=F64)
    M = 0.5
    u = cubic_subproblem_eig(g_hat, lam, M, eps=1e-12, maxiter=100)
    s = -u
    sigma = M * float(s.norm())
    assert sigma == pytest.approx(2.0, rel=1e-12)  # σ = −λ_min
    torch.testing.assert_close((torch.diag(lam) + sigma * torch.eye(3, dtype=F64)) @ s, -g_hat)
    assert abs(float(s[0])) > 0.1  # the eigenvector component
    # saddle point: zero gradient, the step follows the negative curvature
    u = cubic_subproblem_eig(torch.zeros(3, dtype=F64), lam, M, eps=1e-12, maxiter=100)
    assert float(u.norm()) == pytest.approx(2.0 / M)
    assert float(u[1:].abs().max()) == 0


def test_cubic_escapes_saddle_with_zero_gradient_others_stay():
    fn = lambda x: x[0] ** 2 - x[1] ** 2 + x[1] ** 4  # saddle at 0, minima at (0, ±1/√2)
    traj, _ = run(lambda: [CubicRegularization(ExactHessian())], fn, [0.0, 0.0], 30)
    np.testing.assert_allclose(np.abs(traj[-1].numpy()), [0.0, 1 / math.sqrt(2)], atol=1e-8)
    for make in (lambda: [TrustCG(ExactHessian())], lambda: [Dogleg(ExactHessian())],
                 lambda: [LevenbergMarquardt(ExactHessian())]):
        traj, opt = run(make, fn, [0.0, 0.0], 3)
        assert torch.equal(traj[-1], torch.zeros(2, dtype=F64))  # stationary: zero update
        assert opt.num_evaluations == 3  # no trial evaluations
        assert "trust_radius" not in opt.modules[0].global_state


def test_cauchy_radius():
    H, g = _spd()
    M = 0.7
    gn = float(g.norm())
    kappa = float(g @ H @ g) / gn**2
    R = cauchy_radius(gn, kappa, M)
    # R minimises the cubic model along −g
    phi = lambda t: _cubic_model(g, H, -t * g / g.norm(), M)
    res = scipy.optimize.minimize_scalar(phi, bounds=(0, 10 * R), method="bounded", options=dict(xatol=1e-12))
    assert R == pytest.approx(res.x, rel=1e-6)


# --------------------------------------------------------------------------------------------------
# InfinityNormTrustRegion
# --------------------------------------------------------------------------------------------------
def test_infinity_norm_steps_within_box_and_newton_on_quadratic():
    A, b, fn = _quadratic()
    traj, _ = run(lambda: [InfinityNormTrustRegion(ExactHessian(), init=1e3)], fn, [0.0] * 6, 1)
    torch.testing.assert_close(traj[0], torch.linalg.solve(A, b), rtol=1e-8, atol=1e-8)

    radii = []

    def strategy(**kw):
        from torchzero.modules.trust_region.trust_region import default_radius
        radii.append((kw["trust_radius"], float(kw["d"].abs().max())))
        return default_radius(**kw)

    traj, _ = run(lambda: [InfinityNormTrustRegion(ExactHessian(), init=0.05, radius_strategy=strategy)],
                  rosenbrock, [-1.2, 1.0], 20)
    for radius, step in radii:
        assert step <= radius * (1 + 1e-12)
    x_prev = torch.tensor([-1.2, 1.0], dtype=F64)
    for x in traj:
        assert float((x - x_prev).abs().max()) <= max(r for r, _ in radii) * (1 + 1e-12)
        x_prev = x
    # the radius rule measures steps with the ∞-norm: a very good step on the box boundary grows the box
    assert any(b_ > a_ for (a_, _), (b_, _) in zip(radii, radii[1:]))


def test_infinity_norm_measures_steps_with_the_inf_norm():
    from torchzero.modules.experimental.infinity_norm_trust_region import inf_norm
    tr = InfinityNormTrustRegion(ExactHessian())
    d = torch.tensor([-3.0, 1.0, 2.0], dtype=F64)
    assert float(tr.defaults["radius_fn"](d)) == 3.0 == float(inf_norm(d))  # torch.amax(d) would give 2
    assert tr.defaults["tol"] == 1e-10


def test_infinity_norm_failure_falls_back_to_shrunk_gradient():
    traj, opt = run(lambda: [InfinityNormTrustRegion(ExactHessian(fill=math.inf), init=0.1,
                                                     radius_strategy="fixed")], rosenbrock, [-1.2, 1.0], 1)
    g = torch.autograd.functional.jacobian(rosenbrock, torch.tensor([-1.2, 1.0], dtype=F64))
    torch.testing.assert_close(traj[0], torch.tensor([-1.2, 1.0], dtype=F64) - g * 0.1 / g.abs().max())


# --------------------------------------------------------------------------------------------------
# robustness
# --------------------------------------------------------------------------------------------------
ALL = {
    "TrustCG": lambda: [TrustCG(ExactHessian())],
    "Dogleg": lambda: [Dogleg(ExactHessian())],
    "LevenbergMarquardt": lambda: [LevenbergMarquardt(ExactHessian())],
    "CubicRegularization": lambda: [CubicRegularization(ExactHessian())],
    "InfinityNormTrustRegion": lambda: [InfinityNormTrustRegion(ExactHessian())],
}


@pytest.mark.parametrize("name", [n for n in ALL if n != "InfinityNormTrustRegion"])
def test_indefinite_hessian_converges_to_a_minimiser(name):
    traj, _ = run(ALL[name], nonconvex, [0.1, -0.2, 0.05, 0.3, -0.1], 40)
    x = traj[-1].clone().requires_grad_()
    g = torch.autograd.grad(nonconvex(x), x)[0]
    H = torch.autograd.functional.hessian(nonconvex, x.detach())
    assert float(g.norm()) < 1e-7
    assert float(torch.linalg.eigvalsh(H).min()) > 0


def test_infinity_norm_indefinite_hessian_is_safe():
    # min ‖Hd − g‖ is not a model minimiser for indefinite H: the module may stall, but never increases the loss
    # or produces non-finite values
    traj, _ = run(ALL["InfinityNormTrustRegion"], nonconvex, [0.1, -0.2, 0.05, 0.3, -0.1], 50)
    losses = [float(nonconvex(torch.tensor([0.1, -0.2, 0.05, 0.3, -0.1], dtype=F64)))]
    losses += [float(nonconvex(x)) for x in traj]
    assert all(b <= a for a, b in zip(losses, losses[1:]))
    assert all(torch.isfinite(x).all() for x in traj)


@pytest.mark.parametrize("name", list(ALL))
def test_singular_hessian(name):
    # Powell's singular function: the Hessian is singular at the minimiser (and f = x⁴ has H = 0 at 0)
    def powell(x):
        return (x[0] + 10 * x[1]) ** 2 + 5 * (x[2] - x[3]) ** 2 + (x[1] - 2 * x[2]) ** 4 + 10 * (x[0] - x[3]) ** 4

    traj, _ = run(ALL[name], powell, [3.0, -1.0, 0.0, 1.0], 60)
    assert all(torch.isfinite(x).all() for x in traj)
    assert float(powell(traj[-1])) < 1e-8
    traj, _ = run(ALL[name], lambda x: (x**4).sum(), [0.0, 0.0], 3)
    assert torch.equal(traj[-1], torch.zeros(2, dtype=F64))


@pytest.mark.parametrize("name", list(ALL))
def test_non_finite_trial_losses_shrink_the_region(name):
    # a barrier: the loss is +inf (or NaN) outside the unit ball; the minimiser (0.9, 0) is near the wall
    def barrier(x):
        r2 = (x**2).sum()
        inside = -torch.log(1 - r2) + 10 * ((x[0] - 0.9) ** 2 + x[1] ** 2)
        return torch.where(r2 < 1, inside, torch.tensor(math.nan, dtype=F64))

    traj, _ = run(ALL[name], barrier, [0.0, 0.0], 60)
    for x in traj:
        assert torch.isfinite(x).all() and float((x**2).sum()) < 1
    assert math.isfinite(float(barrier(traj[-1])))


@pytest.mark.parametrize("name", ["TrustCG", "Dogleg", "LevenbergMarquardt", "CubicRegularization"])
def test_nan_hessian_gives_zero_update_without_evaluations(name):
    make = lambda: [type(ALL[name]()[0])(ExactHessian(fill=math.nan))]
    traj, opt = run(make, rosenbrock, [-1.2, 1.0], 3)
    for x in traj:
        assert torch.equal(x, torch.tensor([-1.2, 1.0], dtype=F64))
    assert opt.num_evaluations == 3  # only the Hessian evaluations


def test_nan_current_loss_accepts_any_finite_point():
    state = {"calls": 0}

    def fn(x):
        state["calls"] += 1
        at_x0 = (x.detach() - torch.tensor([-1.2, 1.0], dtype=F64)).abs().sum() == 0
        return rosenbrock(x) + torch.where(at_x0, math.nan, 0.0)

    x = torch.tensor([-1.2, 1.0], dtype=F64, requires_grad=True)
    # the gradient comes from the finite branch of `where`, the loss at x0 is NaN
    opt = tz.Modular([x], TrustCG(ExactHessian(), init=0.1))

    def closure(backward=True):
        loss = fn(x)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    opt.step(closure)
    assert torch.isfinite(x).all() and not torch.equal(x.detach(), torch.tensor([-1.2, 1.0], dtype=F64))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("name", list(ALL))
def test_tiny_radii(name, dtype):
    cls = type(ALL[name]()[0])
    x = torch.tensor([-1.2, 1.0], dtype=dtype, requires_grad=True)
    opt = tz.Modular([x], cls(ExactHessian(), init=1e-30))

    def closure(backward=True):
        loss = rosenbrock(x)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
        assert torch.isfinite(x).all()
    radius = opt.modules[0].global_state.get("trust_radius", 1e-30)
    assert math.isfinite(radius) and radius >= 2 * torch.finfo(dtype).tiny


@pytest.mark.parametrize("radius", [1e-310, 1e-200])
def test_radius_collapse_resets_to_init(radius):
    # 1e-310 is below 2·tiny: reset to init when read; at 1e-200 the CG step underflows to zero (the boundary
    # point needs Δ²), so the radius is reset to init and the attempt repeated
    fn = lambda x: ((x - 0.5) ** 2).sum()
    tr = TrustCG(ExactHessian(), init=2.0, max_attempts=2)
    tr.global_state["trust_radius"] = radius
    traj, opt = run(lambda: [tr], fn, [1.0, 1.0], 1)
    torch.testing.assert_close(traj[0], torch.full((2,), 0.5, dtype=F64))
    assert opt.modules[0].global_state["trust_radius"] >= 2.0


def test_zero_step_at_init_radius_is_a_zero_update():
    class Zero(ExactNewtonTR):
        def trust_solve(self, f, g, H, radius, params, closure, settings):
            return torch.zeros_like(g)

    traj, opt = run(lambda: [Zero(ExactHessian())], rosenbrock, [-1.2, 1.0], 2)
    assert torch.equal(traj[-1], torch.tensor([-1.2, 1.0], dtype=F64))
    assert opt.num_evaluations == 2


def test_non_scalar_loss_is_a_clear_error():
    with pytest.raises(RuntimeError, match="scalar loss"):
        run(lambda: [TrustCG(tz.m.Identity())], lambda x: x * 2, [1.0, 2.0], 1)


def test_state_dict_keeps_radius_and_operator():
    traj, opt = run(lambda: [TrustCG(ExactHessian(), update_freq=100)], rosenbrock, [-1.2, 1.0], 3)
    sd = roundtrip(opt.state_dict())
    packed = sd["modules"][0]["extra"]["H"]
    assert packed["name"] == "Dense"
    y = traj[-1].clone().requires_grad_()
    opt2 = tz.Modular([y], TrustCG(ExactHessian(), update_freq=100))
    opt2.load_state_dict(sd)
    gs, gs2 = opt.modules[0].global_state, opt2.modules[0].global_state
    assert gs2["trust_radius"] == gs["trust_radius"]
    assert isinstance(gs2["H"], Dense) and torch.equal(gs2["H"].A, gs["H"].A)


def test_unpackable_operator_is_recomputed():
    class Opaque(Dense):
        def __init__(self, A):
            super().__init__(A)
            self.fn = lambda x: x  # not plain data

    class OpaqueHessian(ExactHessian):
        def get_H(self, var):
            H = super().get_H(var)
            return None if H is None else Opaque(H.A)

    traj, opt = run(lambda: [TrustCG(OpaqueHessian(), update_freq=100)], rosenbrock, [-1.2, 1.0], 2)
    sd = roundtrip(opt.state_dict())
    assert sd["modules"][0]["extra"]["H"] is None
    y = traj[-1].clone().requires_grad_()
    opt2 = tz.Modular([y], TrustCG(OpaqueHessian(), update_freq=100))
    opt2.load_state_dict(sd)
    assert "H" not in opt2.modules[0].global_state

    def closure(backward=True):
        loss = rosenbrock(y)
        if backward:
            opt2.zero_grad()
            loss.backward()
        return loss

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt2.step(closure)  # recomputes H on this step even though update_freq=100
    assert "H" in opt2.modules[0].global_state


# --------------------------------------------------------------------------------------------------
# evaluations: the last trust region hands its accepted trial's loss and gradient to the next step
# --------------------------------------------------------------------------------------------------
def counting_run(modules: list[Module], x0: list[float], n_steps: int) -> tuple[torch.Tensor, dict[str, int]]:
    x = torch.tensor(x0, dtype=F64, requires_grad=True)
    opt = tz.Modular([x], *modules)
    calls = {"backward": 0, "no_backward": 0}

    def closure(backward=True):
        calls["backward" if backward else "no_backward"] += 1
        loss = rosenbrock(x)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    for _ in range(n_steps):
        opt.step(closure)
    return x.detach(), calls


def _total(calls: dict[str, int]) -> int:
    return calls["backward"] + calls["no_backward"]


@pytest.mark.parametrize("make", [lambda: TrustCG(BFGS()), lambda: Dogleg(SR1()),
                                  lambda: LevenbergMarquardt(BFGS(inverse=False))], ids=["TrustCG", "Dogleg", "LM"])
def test_last_trust_region_reuses_trial_evaluation(make):
    steps = 25
    x_direct, calls_direct = counting_run([make()], [-1.2, 1.0], steps)
    x_update, calls_update = counting_run([make(), tz.m.LR(1.0)], [-1.2, 1.0], steps)
    assert torch.equal(x_direct, x_update)  # the same trajectory, bit for bit
    assert float(rosenbrock(x_direct)) < float(rosenbrock(torch.tensor([-1.2, 1.0], dtype=F64)))
    assert _total(calls_update) - _total(calls_direct) == steps - 1
    assert calls_direct["no_backward"] == 0  # every trial was evaluated with its gradient


def test_trust_region_with_self_evaluating_hess_module_keeps_loss_only_trials():
    # Newton evaluates the closure at every refresh, so a gradient at the trial point would be wasted
    x_direct, calls_direct = counting_run([TrustCG(tz.m.Newton())], [-1.2, 1.0], 10)
    x_update, calls_update = counting_run([TrustCG(tz.m.Newton()), tz.m.LR(1.0)], [-1.2, 1.0], 10)
    assert torch.equal(x_direct, x_update) and calls_direct == calls_update
    # refreshed every other step: the steps in between use the handed-over gradient
    _, calls_freq2 = counting_run([TrustCG(tz.m.Newton(), update_freq=2)], [-1.2, 1.0], 10)
    _, calls_freq2_update = counting_run([TrustCG(tz.m.Newton(), update_freq=2), tz.m.LR(1.0)], [-1.2, 1.0], 10)
    assert _total(calls_freq2) < _total(calls_freq2_update)


def test_trust_region_custom_strategy_is_not_given_gradient_trials():
    def strategy(*, params, closure, d, trust_radius, **kwargs):
        from torchzero.modules.trust_region.trust_region import trial_loss
        f_plus = trial_loss(params, closure, d)
        return trust_radius, math.isfinite(f_plus)

    x_direct, calls_direct = counting_run([TrustCG(BFGS(), radius_strategy=strategy)], [-1.2, 1.0], 5)
    x_update, calls_update = counting_run([TrustCG(BFGS(), radius_strategy=strategy), tz.m.LR(1.0)], [-1.2, 1.0], 5)
    assert torch.equal(x_direct, x_update) and calls_direct == calls_update


@pytest.mark.parametrize("make", [lambda: TrustCG(BFGS()), lambda: NewtonCGSteihaug(hvp_method="forward"),
                                  lambda: NewtonCGSteihaug()], ids=["TrustCG", "Steihaug_forward", "Steihaug"])
def test_trial_gradients_do_not_overwrite_the_step_gradient(make):
    """A closure that zeroes gradients in place (``zero_grad(set_to_none=False)``) must not overwrite the gradient
    this step works with (a single parameter: the flattened update is a view of ``p.grad``)."""
    def trajectory(set_to_none: bool) -> list[torch.Tensor]:
        x = torch.tensor([-1.2, 1.0], dtype=F64, requires_grad=True)
        opt = tz.Modular([x], make())

        def closure(backward=True):
            loss = rosenbrock(x)
            if backward:
                opt.zero_grad(set_to_none=set_to_none)
                loss.backward()
            return loss

        out = []
        for _ in range(15):
            opt.step(closure)
            out.append(x.detach().clone())
        return out

    for a, b in zip(trajectory(True), trajectory(False)):
        assert torch.equal(a, b)
