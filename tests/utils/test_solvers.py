"""Krylov solvers (cg, minres), Nyström approximation and solvers, x_inv.

References: ``torch.linalg.solve``/dense inverses, ``scipy.sparse.linalg.minres``, and plain loop implementations of
CG and Steihaug–Toint CG (Nocedal & Wright Alg. 5.2 / 7.2) written in this file.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch

from torchzero.utils.linalg.nystrom import (
    nystrom_approximation,
    nystrom_from_sketch,
    nystrom_pcg,
    nystrom_sketch_and_solve,
)
from torchzero.utils.linalg.solve import CG, cg, find_within_trust_radius, minres
from torchzero.utils.linalg.x_inv import x_inv
from torchzero.utils.tensorlist import TensorList

D = torch.float64


def spd(n: int, seed: int = 0, cond: float = 100.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    L = torch.logspace(0, math.log10(cond), n, dtype=D)
    return (Q * L) @ Q.T


def sym_indefinite(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    L = torch.linspace(-3, 5, n, dtype=D)
    L[L.abs() < 0.2] = 0.7
    return (Q * L) @ Q.T


def vec(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=D)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------------------------------------------------------
# plain references
# ------------------------------------------------------------------------------------------------------------------
def ref_cg(A: torch.Tensor, b: torch.Tensor, iters: int) -> torch.Tensor:
    """Nocedal & Wright Alg. 5.2, ``iters`` iterations from zero."""
    x = torch.zeros_like(b)
    r = A @ x - b
    p = -r
    for _ in range(iters):
        if r.norm() == 0:
            break
        alpha = (r @ r) / (p @ A @ p)
        x = x + alpha * p
        r_new = r + alpha * (A @ p)
        beta = (r_new @ r_new) / (r @ r)
        p = -r_new + beta * p
        r = r_new
    return x


def ref_steihaug(A: torch.Tensor, b: torch.Tensor, delta: float, tol: float = 1e-12) -> torch.Tensor:
    """Nocedal & Wright Alg. 7.2 for ``min −bᵀz + ½zᵀAz, ‖z‖ ≤ Δ`` (their ``g = −b``)."""
    def to_boundary(z, d):
        a, bb, c = d @ d, 2 * (z @ d), z @ z - delta**2
        tau = (-bb + torch.sqrt(bb * bb - 4 * a * c)) / (2 * a)
        return z + tau * d

    z = torch.zeros_like(b)
    r = -b
    d = -r
    for _ in range(len(b)):
        dAd = d @ A @ d
        if dAd <= 0:
            return to_boundary(z, d)
        alpha = (r @ r) / dAd
        z_new = z + alpha * d
        if z_new.norm() >= delta:
            return to_boundary(z, d)
        r_new = r + alpha * (A @ d)
        z = z_new
        if r_new.norm() < tol:
            return z
        d = -r_new + (r_new @ r_new) / (r @ r) * d
        r = r_new
    return z


# ------------------------------------------------------------------------------------------------------------------
# cg
# ------------------------------------------------------------------------------------------------------------------
def test_cg_matches_solve_on_spd():
    A, b = spd(8, cond=10), vec(8)
    x, solver = cg(lambda v: A @ v, b, tol=1e-14)  # at most n = 8 iterations by default
    assert rel(x, torch.linalg.solve(A, b)) < 1e-13
    assert solver.iter <= 8
    A, b = spd(8, cond=1e4), vec(8)  # rounding needs a few more iterations than n
    x, solver = cg(lambda v: A @ v, b, tol=1e-13, maxiter=100)
    assert solver.status == "converged" and rel(x, torch.linalg.solve(A, b)) < 1e-12


def test_cg_iterates_match_plain_cg():
    A, b = spd(10, cond=1e3), vec(10)
    for k in range(1, 6):
        x, solver = cg(lambda v: A @ v, b, tol=0, maxiter=k)
        assert solver.status == "maxiter" and solver.num_matvecs == k
        torch.testing.assert_close(x, ref_cg(A, b, k), rtol=1e-11, atol=1e-13)


def test_cg_tensorlist_equals_flat():
    A, b = spd(8, cond=10), vec(8)
    shapes = [(3,), (1, 5)]

    def split(v):
        return TensorList([v[:3].reshape(3), v[3:].reshape(1, 5)])

    def A_mm(v: TensorList) -> TensorList:
        return split(A @ v.to_vec())

    x, _ = cg(A_mm, split(b), tol=1e-14)
    assert isinstance(x, TensorList) and [tuple(t.shape) for t in x] == shapes
    torch.testing.assert_close(x.to_vec(), torch.linalg.solve(A, b), rtol=1e-12, atol=0)
    x2, _ = cg(A_mm, list(split(b)), tol=1e-14)  # a plain list is accepted too
    torch.testing.assert_close(TensorList(x2).to_vec(), x.to_vec(), rtol=0, atol=0)


def test_cg_reg_and_x0_and_inputs_not_modified():
    A, b = spd(8), vec(8)
    x0 = vec(8, seed=5)
    b_before, x0_before = b.clone(), x0.clone()
    x, solver = cg(lambda v: A @ v, b, x0=x0, tol=1e-13, reg=0.5, maxiter=50)
    assert rel(x, torch.linalg.solve(A + 0.5 * torch.eye(8, dtype=D), b)) < 1e-12
    assert torch.equal(b, b_before) and torch.equal(x0, x0_before)


def test_cg_trust_radius_gives_exact_norm():
    A, b = spd(8), vec(8)
    x_star = torch.linalg.solve(A, b)
    for frac in (0.05, 0.3, 0.9):
        delta = frac * float(x_star.norm())
        x, solver = cg(lambda v: A @ v, b, trust_radius=delta)
        assert solver.status == "boundary"
        assert abs(float(x.norm()) - delta) <= 1e-13 * delta
        torch.testing.assert_close(x, ref_steihaug(A, b, delta), rtol=1e-11, atol=1e-13)
    x, solver = cg(lambda v: A @ v, b, trust_radius=2 * float(x_star.norm()), tol=1e-13, maxiter=50)
    assert solver.status == "converged" and rel(x, x_star) < 1e-11


def test_cg_trust_radius_negative_curvature_goes_to_boundary():
    A, b = sym_indefinite(8), vec(8)
    x, solver = cg(lambda v: A @ v, b, trust_radius=1.5)
    assert solver.status in ("npc", "boundary")
    assert abs(float(x.norm()) - 1.5) < 1e-13
    torch.testing.assert_close(x, ref_steihaug(A, b, 1.5), rtol=1e-11, atol=1e-13)


def test_cg_npc_first_iteration_scaled_b():
    A, b = -spd(6), vec(6)
    x, solver = cg(lambda v: A @ v, b)
    assert solver.status == "npc"
    torch.testing.assert_close(x, b * abs((b @ b) / (b @ A @ b)), rtol=1e-14, atol=0)
    # zero curvature: the direction itself
    x, solver = cg(lambda v: torch.zeros_like(v), b)
    assert solver.status == "npc" and torch.equal(x, b)


def test_cg_npc_terminate_later():
    # positive curvature along b, negative along later directions
    A = torch.diag(torch.tensor([4.0, -1.0, 2.0, -3.0], dtype=D))
    b = torch.tensor([1.0, 0.1, 1.0, 0.1], dtype=D)
    x1, s1 = cg(lambda v: A @ v, b, npc_terminate=True)
    assert s1.status == "npc" and s1.iter >= 1
    torch.testing.assert_close(x1, ref_cg(A, b, s1.iter), rtol=1e-12, atol=1e-14)
    # without npc_terminate CG continues (here it reaches the solution of the indefinite system)
    x2, s2 = cg(lambda v: A @ v, b, tol=1e-12)
    assert s2.status == "converged"
    torch.testing.assert_close(x2, torch.linalg.solve(A, b), rtol=1e-10, atol=1e-12)


def test_cg_zero_rhs_and_miniter_and_tol():
    A = spd(5)
    calls = []

    def A_mm(v):
        calls.append(1)
        return A @ v

    x, solver = cg(A_mm, torch.zeros(5, dtype=D), miniter=1)
    assert torch.equal(x, torch.zeros(5, dtype=D)) and solver.status == "converged" and not calls
    b = vec(5)
    _, solver = cg(A_mm, b, tol=1e10)  # tol is absolute: satisfied at the start
    assert solver.iter == 0
    _, solver = cg(A_mm, b, tol=1e10, miniter=2)
    assert solver.iter == 2


def test_cg_preconditioner():
    A, b = spd(12, cond=1e4), vec(12)
    A_inv = torch.linalg.inv(A)
    x, solver = cg(lambda v: A @ v, b, tol=1e-10, P_mm=lambda r: A_inv @ r)
    assert solver.iter == 1 and rel(x, torch.linalg.solve(A, b)) < 1e-10
    d = A.diagonal()
    x, _ = cg(lambda v: A @ v, b, tol=1e-12, P_mm=lambda r: r / d, maxiter=500)
    assert rel(x, torch.linalg.solve(A, b)) < 1e-9


def test_cg_rtol_keyword():
    A, b = spd(10, cond=1e3), vec(10)
    x = CG(lambda v: A @ v, b, tol=0.0, rtol=1e-6, maxiter=500).solve()
    assert float((b - A @ x).norm()) <= 1e-6 * float(b.norm())


def test_find_within_trust_radius_equals_fresh_solve():
    A, b = spd(10, cond=50), vec(10)
    x_star_norm = float(torch.linalg.solve(A, b).norm())
    delta = 0.9 * x_star_norm
    _, solver = cg(lambda v: A @ v, b, trust_radius=delta, history_size=50)
    assert len(solver.history) > 0
    for frac in (0.7, 0.3, 0.05):
        smaller = frac * delta
        x_hist = find_within_trust_radius(solver.history, smaller)
        x_fresh, _ = cg(lambda v: A @ v, b, trust_radius=smaller)
        assert x_hist is not None
        torch.testing.assert_close(x_hist, x_fresh, rtol=1e-12, atol=1e-14)
    # converged run: the final iterate is returned when inside
    x_full, solver = cg(lambda v: A @ v, b, tol=1e-12, history_size=50)
    torch.testing.assert_close(find_within_trust_radius(solver.history, 2 * x_star_norm), x_full, rtol=0, atol=0)
    assert find_within_trust_radius([], 1.0) is None
    assert find_within_trust_radius([(b, float(b.norm()), b)], 1e-3 * float(b.norm())) is None


def _model_decrease(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, reg: float = 0.0) -> float:
    return float(b @ x - 0.5 * x @ (A @ x + reg * x))


@pytest.mark.parametrize("case", ["converged", "maxiter", "boundary", "npc_boundary", "npc_first", "precond", "reg"])
def test_cg_model_decrease_matches_direct_formula(case):
    A, b, kw = spd(12, cond=1e3), vec(12), {}
    if case == "converged":
        kw = dict(tol=1e-12, maxiter=200)
    elif case == "maxiter":
        kw = dict(maxiter=4)
    elif case == "boundary":
        kw = dict(trust_radius=0.3 * float(torch.linalg.solve(A, b).norm()))
    elif case == "npc_boundary":
        A, kw = sym_indefinite(12), dict(trust_radius=5.0)
    elif case == "npc_first":
        A = -spd(12)
    elif case == "precond":
        d = A.diagonal()
        kw = dict(tol=1e-12, P_mm=lambda r: r / d, maxiter=200)
    elif case == "reg":
        kw = dict(reg=0.5, maxiter=5)
    x, solver = cg(lambda v: A @ v, b, **kw)
    assert solver.model_decrease is not None and solver.model_decrease > 0
    expected = _model_decrease(A, b, x, kw.get("reg", 0.0))
    assert abs(solver.model_decrease - expected) <= 1e-10 * abs(expected)
    if "trust_radius" in kw:
        assert solver.status == ("npc" if case == "npc_boundary" else "boundary")


def test_cg_model_decrease_unknown_with_x0():
    A, b = spd(6), vec(6)
    _, solver = cg(lambda v: A @ v, b, x0=vec(6, seed=3))
    assert solver.model_decrease is None


def test_cg_within_radius_gives_point_and_model_decrease():
    A, b = sym_indefinite(10), vec(10)
    _, solver = cg(lambda v: A @ v, b, trust_radius=3.0, history_size=50)
    for radius in (2.0, 0.7, 0.1):
        found = solver.within_radius(radius)
        assert found is not None
        x, decrease = found
        torch.testing.assert_close(x, find_within_trust_radius(solver.history, radius), rtol=0, atol=0)
        torch.testing.assert_close(x, ref_steihaug(A, b, radius), rtol=1e-11, atol=1e-13)
        assert decrease is not None
        assert abs(decrease - _model_decrease(A, b, x)) <= 1e-10 * abs(decrease)


def test_cg_npc_terminate_with_radius_stops_at_current_iterate():
    A = torch.diag(torch.tensor([4.0, -1.0, 2.0, -3.0], dtype=D))
    b = torch.tensor([1.0, 0.1, 1.0, 0.1], dtype=D)
    x_stop, s_stop = cg(lambda v: A @ v, b, trust_radius=10.0, npc_terminate=True)
    assert s_stop.status == "npc" and s_stop.iter >= 1
    torch.testing.assert_close(x_stop, ref_cg(A, b, s_stop.iter), rtol=1e-12, atol=1e-14)
    assert float(x_stop.norm()) < 10.0
    x_bnd, s_bnd = cg(lambda v: A @ v, b, trust_radius=10.0)
    assert s_bnd.status == "npc" and abs(float(x_bnd.norm()) - 10.0) < 1e-12
    # non-positive curvature at the first iteration still goes to the boundary (the current iterate is zero)
    x0, s0 = cg(lambda v: -(A.abs() @ v), b, trust_radius=2.0, npc_terminate=True)
    assert s0.status == "npc" and abs(float(x0.norm()) - 2.0) < 1e-12


def test_cg_non_finite_stops_with_finite_result():
    b = vec(6)
    x, solver = cg(lambda v: torch.full_like(v, float("nan")), b)
    assert solver.status == "breakdown" and torch.isfinite(x).all()
    x, solver = cg(lambda v: v, torch.full((4,), float("inf"), dtype=D))
    assert solver.status == "breakdown" and torch.isfinite(x).all()


@pytest.mark.parametrize("kwargs", [dict(tol=-1), dict(maxiter=-1), dict(maxiter=1.5), dict(reg=float("nan")),
                                    dict(trust_radius=0), dict(miniter=-1), dict(history_size=-2)])
def test_cg_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match="cg"):
        cg(lambda v: v, vec(3), **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# minres
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["spd", "indefinite"])
def test_minres_matches_solve(kind):
    A = spd(8) if kind == "spd" else sym_indefinite(8)
    b = vec(8)
    x = minres(lambda v: A @ v, b, tol=1e-15, npc_terminate=False, maxiter=50)
    assert rel(x, torch.linalg.solve(A, b)) < 1e-12


@pytest.mark.parametrize("kind", ["spd", "indefinite"])
def test_minres_matches_scipy_iterate_by_iterate(kind):
    n = 8
    A = spd(n, cond=20) if kind == "spd" else sym_indefinite(n)
    b = vec(n)
    for k in range(1, n + 1):
        x = minres(lambda v: A @ v, b, tol=0, maxiter=k, npc_terminate=False)
        x_sp, _ = sla.minres(A.numpy(), b.numpy(), rtol=0, maxiter=k)
        assert np.abs(x.numpy() - x_sp).max() <= 1e-12 * max(1.0, np.abs(x_sp).max()), k


def test_minres_tensorlist_x0_reg():
    A, b, x0 = spd(8), vec(8), vec(8, seed=3)

    def split(v):
        return TensorList([v[:2], v[2:].reshape(2, 3)])

    x = minres(lambda v: split(A @ v.to_vec()), split(b), x0=split(x0), tol=1e-15, reg=0.3, maxiter=50)
    assert isinstance(x, TensorList)
    assert rel(x.to_vec(), torch.linalg.solve(A + 0.3 * torch.eye(8, dtype=D), b)) < 1e-12


def test_minres_relative_tolerance():
    A, b = spd(30, cond=1e4), vec(30)
    for tol in (1e-2, 1e-5):
        x = minres(lambda v: A @ v, b, tol=tol, maxiter=500)
        assert float((b - A @ x).norm()) <= tol * float(b.norm()) * (1 + 1e-8)


def test_minres_npc_returns_first_nonpositive_curvature_residual():
    n = 8
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
        A = (Q * torch.tensor([-0.2, 0.5, 1, 2, 3, 4, 5, 6], dtype=D)) @ Q.T
        b = torch.randn(n, generator=g, dtype=D)
        r = minres(lambda v, A=A: A @ v, b, tol=0)
        assert float(r @ A @ r) <= 0
        # r is the residual b − A x_k of the first MINRES iterate whose residual has non-positive curvature
        for k in range(n):
            x_k = minres(lambda v, A=A: A @ v, b, tol=0, maxiter=k, npc_terminate=False)
            r_k = b - A @ x_k
            if float(r_k @ A @ r_k) <= 0:
                torch.testing.assert_close(r, r_k, rtol=1e-9, atol=1e-12)
                break
        else:
            raise AssertionError("no residual with non-positive curvature")


def test_minres_trust_radius():
    A, b = spd(8), vec(8)
    x_star = torch.linalg.solve(A, b)
    delta = 0.4 * float(x_star.norm())
    x = minres(lambda v: A @ v, b, tol=1e-15, trust_radius=delta)
    assert abs(float(x.norm()) - delta) < 1e-12 * delta
    x = minres(lambda v: A @ v, b, tol=1e-15, trust_radius=10 * float(x_star.norm()), maxiter=50)
    assert rel(x, x_star) < 1e-12
    # non-positive curvature with a radius: boundary point
    x = minres(lambda v: -A @ v, b, tol=1e-15, trust_radius=0.7)
    assert abs(float(x.norm()) - 0.7) < 1e-12


def test_minres_zero_and_non_finite():
    x = minres(lambda v: v, torch.zeros(4, dtype=D))
    assert torch.equal(x, torch.zeros(4, dtype=D))
    x = minres(lambda v: torch.full_like(v, float("nan")), vec(4), npc_terminate=False)
    assert torch.isfinite(x).all()


def test_minres_invalid_arguments():
    with pytest.raises(ValueError, match="minres"):
        minres(lambda v: v, vec(3), tol=-1)
    with pytest.raises(ValueError, match="minres"):
        minres(lambda v: v, vec(3), trust_radius=-1.0)


# ------------------------------------------------------------------------------------------------------------------
# Nyström
# ------------------------------------------------------------------------------------------------------------------
def test_nystrom_approximation_full_rank_and_low_rank():
    n = 20
    A = spd(n, cond=1e3)
    gen = torch.Generator().manual_seed(0)
    U, L = nystrom_approximation(lambda v: A @ v, n, n, "cpu", D, gen)
    torch.testing.assert_close((U * L) @ U.T, A, rtol=0, atol=1e-9)
    assert (L[:-1] >= L[1:]).all() and (L >= 0).all()
    torch.testing.assert_close(U.T @ U, torch.eye(n, dtype=D), rtol=0, atol=1e-12)
    # exact for a rank-r matrix with rank >= r
    G = torch.randn(n, 4, generator=gen, dtype=D)
    B = G @ G.T
    U, L = nystrom_approximation(lambda v: B @ v, n, 6, "cpu", D, gen)
    torch.testing.assert_close((U * L) @ U.T, B, rtol=0, atol=1e-10)


def test_nystrom_approximation_matches_frangella_formulas():
    n, r = 15, 5
    A = spd(n)
    gen = torch.Generator().manual_seed(3)
    U, L = nystrom_approximation(lambda v: A @ v, n, r, "cpu", D, gen)
    gen = torch.Generator().manual_seed(3)
    Omega = torch.linalg.qr(torch.randn(n, r, generator=gen, dtype=D)).Q
    Y = A @ Omega
    nu = torch.finfo(D).eps * torch.linalg.matrix_norm(Y)
    Y_nu = Y + nu * Omega
    C = torch.linalg.cholesky(Omega.T @ Y_nu)
    B = Y_nu @ torch.linalg.inv(C).T
    U_ref, S, _ = torch.linalg.svd(B, full_matrices=False)
    torch.testing.assert_close(L, (S**2 - nu).clamp_min(0), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close((U * L) @ U.T, (U_ref * (S**2 - nu).clamp_min(0)) @ U_ref.T, rtol=0, atol=1e-10)


def test_nystrom_indefinite_and_zero_are_finite():
    n = 10
    A = sym_indefinite(n)
    gen = torch.Generator().manual_seed(0)
    U, L = nystrom_approximation(lambda v: A @ v, n, 4, "cpu", D, gen)
    assert torch.isfinite(U).all() and torch.isfinite(L).all() and (L >= 0).all()
    U, L = nystrom_from_sketch(torch.linalg.qr(torch.randn(n, 3, dtype=D)).Q, torch.zeros(n, 3, dtype=D))
    assert U.shape == (n, 0) and L.numel() == 0
    b = vec(n)
    x = nystrom_sketch_and_solve(lambda v: torch.zeros_like(v), b, 3, reg=0.5, generator=gen)
    torch.testing.assert_close(x, b / 0.5)


def test_nystrom_sketch_and_solve_full_rank():
    n = 16
    A, b = spd(n, cond=1e3), vec(n)
    x = nystrom_sketch_and_solve(lambda v: A @ v, b, n, reg=1e-4, generator=torch.Generator().manual_seed(0))
    assert rel(x, torch.linalg.solve(A + 1e-4 * torch.eye(n, dtype=D), b)) < 1e-10
    with pytest.raises(ValueError, match="reg"):
        nystrom_sketch_and_solve(lambda v: A @ v, b, 4, reg=0)


def test_nystrom_pcg():
    n = 30
    A, b = spd(n, cond=1e5), vec(n)
    exact = torch.linalg.solve(A + 1e-6 * torch.eye(n, dtype=D), b)
    calls = []

    def A_mm(v):
        calls.append(1)
        return A @ v

    x = nystrom_pcg(A_mm, b, n, reg=1e-6, tol=1e-10, generator=torch.Generator().manual_seed(0))
    assert len(calls) - n <= 2  # a full sketch preconditions perfectly: CG converges in 1–2 iterations
    assert rel(x, exact) < 1e-8
    for k in (5, 15):
        x = nystrom_pcg(lambda v: A @ v, b, k, reg=1e-6, tol=1e-8, maxiter=500,
                        generator=torch.Generator().manual_seed(k))
        assert float((b - A @ x - 1e-6 * x).norm()) <= 1e-8 * float(b.norm()) * (1 + 1e-6)
    x0 = torch.zeros(n, dtype=D)
    out = nystrom_pcg(lambda v: A @ v, b, 10, x0_=x0, tol=1e-8, maxiter=500,
                      generator=torch.Generator().manual_seed(0))
    assert out is x0 and float((b - A @ x0 - 1e-6 * x0).norm()) <= 1e-8 * float(b.norm()) * (1 + 1e-6)


# ------------------------------------------------------------------------------------------------------------------
# x_inv
# ------------------------------------------------------------------------------------------------------------------
def _x_matrix(d: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return torch.diag_embed(d) + torch.diag_embed(a).flip(-1)


@pytest.mark.parametrize("n", [1, 4, 5, 8])
def test_x_inv_matches_dense_inverse(n):
    g = torch.Generator().manual_seed(n)
    d = torch.randn(3, n, generator=g, dtype=D) + 3
    a = torch.randn(3, n, generator=g, dtype=D)
    yd, ya = x_inv(d, a)
    torch.testing.assert_close(_x_matrix(yd, ya), torch.linalg.inv(_x_matrix(d, a)), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="x_inv"):
        x_inv(d, a[:, None])
