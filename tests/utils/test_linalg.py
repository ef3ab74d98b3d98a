"""utils.linalg matrix functions, orthogonalization, QR and randomized SVD against torch.linalg / scipy / closed
forms."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from torchzero.utils.linalg import (
    eigh_safe,
    eigvals_func,
    gram_schmidt,
    inv_sqrt_2x2,
    matrix_power_eigh,
    matrix_power_eigh_safe,
    orthogonalize,
    qr_householder,
    randomized_svd,
    singular_vals_func,
    svd_orthogonalize,
    zeropower_via_newtonschulz5,
)

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _spd(n: int, seed: int = 0, batch: tuple[int, ...] = (), dtype=F64) -> torch.Tensor:
    M = torch.randn(*batch, n, n, generator=_gen(seed), dtype=F64)
    return (M @ M.mT + 0.5 * torch.eye(n, dtype=F64)).to(dtype)


# ---------------------------------------------------------------------------------------------- matrix functions
@pytest.mark.parametrize("pow", [-0.5, -0.25, -1.0, 0.5, 1.0, 3.0])
def test_matrix_power_eigh_matches_scipy(pow):
    A = _spd(6, seed=1)
    ref = scipy.linalg.fractional_matrix_power(A.numpy(), pow).real
    np.testing.assert_allclose(matrix_power_eigh(A, pow).numpy(), ref, rtol=1e-9, atol=1e-11)


def test_matrix_power_eigh_batched_and_even_power():
    A = _spd(4, seed=2, batch=(3,))
    P = matrix_power_eigh(A, -0.5)
    for i in range(3):
        torch.testing.assert_close(P[i] @ P[i] @ A[i], torch.eye(4, dtype=F64), rtol=0, atol=1e-10)
    # even integer powers don't clip: an indefinite matrix squared
    S = torch.randn(5, 5, generator=_gen(3), dtype=F64)
    S = S + S.T
    torch.testing.assert_close(matrix_power_eigh(S, 2), S @ S, rtol=1e-10, atol=1e-10)


def test_matrix_power_eigh_singular_is_finite_and_floored():
    v = torch.tensor([1.0, 2.0, 2.0], dtype=F64)
    A = torch.outer(v, v)  # rank 1, eigenvalues 9, 0, 0
    P = matrix_power_eigh(A, -0.5)
    assert torch.isfinite(P).all()  # null-space eigenvalues are clipped to 2·tiny...
    assert torch.linalg.matrix_norm(P, 2) > 1e100  # ...which amplifies rounding noise enormously
    # the relative floor bounds the amplification at (eps·λ_max)^(-1/2), and the range direction is exact
    eps = torch.finfo(F64).eps
    Pr = matrix_power_eigh(A, -0.5, rtol=eps)
    assert torch.linalg.matrix_norm(Pr, 2) <= (9 * eps) ** -0.5 * (1 + 1e-6)
    torch.testing.assert_close(Pr @ v, v / 3, rtol=1e-6, atol=0)


def test_eigh_safe_matches_and_guards():
    A = _spd(5, seed=4)
    L, Q = eigh_safe(A)  # type: ignore[misc]
    L_ref = torch.linalg.eigvalsh(A)
    torch.testing.assert_close(L, L_ref)
    torch.testing.assert_close((Q * L) @ Q.T, A)
    bad = A.clone()
    bad[0, 1] = bad[1, 0] = float("nan")
    assert eigh_safe(bad) is None
    assert matrix_power_eigh_safe(bad, -0.5) is None
    inf = A.clone()
    inf[2, 2] = float("inf")
    assert matrix_power_eigh_safe(inf, -0.5) is None


def test_eigh_safe_retries_in_float64(monkeypatch):
    A = _spd(4, seed=5, dtype=torch.float32)
    real_eigh = torch.linalg.eigh
    calls = []

    def flaky_eigh(X, *args, **kwargs):
        calls.append(X.dtype)
        if X.dtype != torch.float64:
            raise torch.linalg.LinAlgError("simulated failure")
        return real_eigh(X, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", flaky_eigh)
    L, Q = eigh_safe(A)  # type: ignore[misc]
    assert calls == [torch.float32, torch.float64]
    assert L.dtype == torch.float32 and Q.dtype == torch.float32
    torch.testing.assert_close(L, real_eigh(A.double())[0].float(), rtol=1e-5, atol=1e-5)
    P = matrix_power_eigh_safe(A, -1.0)
    assert P is not None
    torch.testing.assert_close(P, torch.linalg.inv(A), rtol=1e-4, atol=1e-4)


def test_eigvals_func():
    A = _spd(5, seed=6) / 10
    torch.testing.assert_close(eigvals_func(A, torch.exp), torch.linalg.matrix_exp(A), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(eigvals_func(A, lambda x: x), A, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4), (2, 6, 3)])
def test_singular_vals_func(shape):
    A = torch.randn(*shape, generator=_gen(7), dtype=F64)
    # identity reproduces A (the reference did not)
    torch.testing.assert_close(singular_vals_func(A, lambda s: s), A, rtol=1e-10, atol=1e-12)
    # 1/σ gives the transposed pseudo-inverse
    torch.testing.assert_close(singular_vals_func(A, lambda s: 1 / s), torch.linalg.pinv(A).mT, rtol=1e-9, atol=1e-10)


def test_inv_sqrt_2x2():
    A = _spd(2, seed=8, batch=(7,))
    torch.testing.assert_close(inv_sqrt_2x2(A), matrix_power_eigh(A, -0.5), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(inv_sqrt_2x2(A, force_pd=True), matrix_power_eigh(A, -0.5), rtol=1e-10, atol=1e-12)
    # semi-definite and indefinite matrices: finite with force_pd, and equal to the shifted matrix's root
    v = torch.tensor([1.0, 3.0], dtype=F64)
    psd = torch.outer(v, v)
    out = inv_sqrt_2x2(psd, force_pd=True)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out @ v, v / 10**0.5, rtol=1e-6, atol=0)
    assert not torch.isfinite(inv_sqrt_2x2(psd)).all()
    indef = torch.tensor([[1.0, 2.0], [2.0, -1.0]], dtype=F64)
    out = inv_sqrt_2x2(indef, force_pd=True)
    assert torch.isfinite(out).all()
    # along the top eigenvector of the shifted matrix (eigenvalue λ_max − λ_min) the inverse root is exact
    w, V = torch.linalg.eigh(indef)
    top = V[:, 1]
    torch.testing.assert_close(out @ top, top / (w[1] - w[0]) ** 0.5, rtol=1e-6, atol=0)
    with pytest.raises(ValueError):
        inv_sqrt_2x2(torch.eye(3))


# ---------------------------------------------------------------------------------------------- QR, Gram-Schmidt
@pytest.mark.parametrize("shape", [(8, 3), (3, 8), (5, 5), (4, 100, 3), (2, 3, 4, 2)])
@pytest.mark.parametrize("mode", ["reduced", "complete"])
def test_qr_householder(shape, mode):
    A = torch.randn(*shape, generator=_gen(9), dtype=F64)
    Q, R = qr_householder(A, mode)
    m, n = shape[-2:]
    k = min(m, n) if mode == "reduced" else m
    assert Q.shape == (*shape[:-2], m, k) and R.shape == (*shape[:-2], k, n)
    torch.testing.assert_close(Q @ R, A, rtol=0, atol=1e-14)
    torch.testing.assert_close(Q.mT @ Q, torch.eye(k, dtype=F64).expand_as(Q.mT @ Q), rtol=0, atol=1e-14)
    assert torch.equal(R, R.triu())
    # R is unique up to the signs of its rows: compare with LAPACK's
    R_ref = torch.linalg.qr(A, mode=mode).R
    torch.testing.assert_close(R.abs(), R_ref.abs(), rtol=1e-10, atol=1e-12)


def test_qr_householder_rank_deficient():
    A = torch.randn(6, 4, generator=_gen(10), dtype=F64)
    A[:, 1] = 0
    A[:, 3] = 2 * A[:, 0]
    Q, R = qr_householder(A)
    assert torch.isfinite(Q).all() and torch.isfinite(R).all()
    torch.testing.assert_close(Q @ R, A, rtol=0, atol=1e-14)
    torch.testing.assert_close(Q.T @ Q, torch.eye(4, dtype=F64), rtol=0, atol=1e-14)
    Q0, R0 = qr_householder(torch.zeros(3, 2, dtype=F64))
    assert torch.equal(R0, torch.zeros(2, 2, dtype=F64))
    torch.testing.assert_close(Q0.T @ Q0, torch.eye(2, dtype=F64))


def test_qr_householder_bad_input():
    with pytest.raises(ValueError):
        qr_householder(torch.randn(3, 3), mode="full")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        qr_householder(torch.randn(3))


def test_gram_schmidt():
    x = torch.randn(3, 4, generator=_gen(11), dtype=F64)
    y = torch.randn(3, 4, generator=_gen(12), dtype=F64)
    x_out, y_out = gram_schmidt(x, y)
    assert x_out is x
    assert abs(torch.sum(x * y_out).item()) < 1e-12
    torch.testing.assert_close(y_out, y - (torch.sum(x * y) / torch.sum(x * x)) * x)
    _, y_same = gram_schmidt(torch.zeros(3, dtype=F64), y[0, :3])
    torch.testing.assert_close(y_same, y[0, :3])


# ---------------------------------------------------------------------------------------------- randomized SVD
@pytest.mark.parametrize("shape", [(30, 8), (8, 30), (20, 20)])
def test_randomized_svd_exact_for_low_rank(shape):
    m, n = shape
    rank = 3
    M = torch.randn(m, rank, generator=_gen(13), dtype=F64) @ torch.randn(rank, n, generator=_gen(14), dtype=F64)
    for k in (3, 5):
        U, s, Vh = randomized_svd(M, k, generator=_gen(15))
        assert U.shape == (m, k) and s.shape == (k,) and Vh.shape == (k, n)
        torch.testing.assert_close((U * s) @ Vh, M, rtol=0, atol=1e-10)
        torch.testing.assert_close(s[:rank], torch.linalg.svdvals(M)[:rank], rtol=1e-10, atol=0)
        torch.testing.assert_close(U.T @ U, torch.eye(k, dtype=F64), rtol=0, atol=1e-10)
    U1, s1, _ = randomized_svd(M, 3, generator=_gen(16))
    U2, s2, _ = randomized_svd(M, 3, generator=_gen(16))
    assert torch.equal(U1, U2) and torch.equal(s1, s2)
    with pytest.raises(ValueError):
        randomized_svd(M, 0)


# ---------------------------------------------------------------------------------------------- orthogonalization
def _svdvals(X: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(X.double())


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (50, 50), (3, 17, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_newton_schulz_singular_values(shape, dtype):
    G = torch.randn(*shape, generator=_gen(17), dtype=dtype)
    X = zeropower_via_newtonschulz5(G, 5)
    assert X.dtype == dtype and X.shape == G.shape
    s = _svdvals(X)
    assert s.min() > 0.5 and s.max() < 1.5  # the catalog's check
    if shape[-1] != shape[-2]:  # (square random matrices have a few tiny singular values that land just under 0.6)
        assert s.min() > 0.6 and s.max() < 1.25  # the tighter range of Muon's coefficients
    # it approximates U Vᵀ: same singular vectors
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    core = U.mT @ X.double() @ Vh.mT  # ≈ diagonal with entries in [0.6, 1.25]
    off = core - torch.diag_embed(torch.diagonal(core, dim1=-2, dim2=-1))
    assert off.abs().max() < 0.05


def test_newton_schulz_scale_batch_and_transpose():
    G = torch.randn(6, 4, generator=_gen(18))
    X = zeropower_via_newtonschulz5(G, 5)
    for scale in (1e-30, 1e-10, 1e10, 1e30):
        torch.testing.assert_close(zeropower_via_newtonschulz5(G * scale, 5), X, rtol=0, atol=2e-2)
    torch.testing.assert_close(zeropower_via_newtonschulz5(G.T, 5), X.T)
    # batched = per matrix (exactly in float32; bfloat16 matmul kernels round differently when batched)
    batch = torch.randn(3, 6, 4, generator=_gen(19))
    Xb = zeropower_via_newtonschulz5(batch, 5, compute_dtype=torch.float32)
    for i in range(3):
        torch.testing.assert_close(Xb[i], zeropower_via_newtonschulz5(batch[i], 5, compute_dtype=torch.float32))
        torch.testing.assert_close(zeropower_via_newtonschulz5(batch, 5)[i], zeropower_via_newtonschulz5(batch[i], 5),
                                   rtol=0, atol=6e-2)
    assert torch.equal(zeropower_via_newtonschulz5(torch.zeros(3, 5), 5), torch.zeros(3, 5))
    with pytest.raises(ValueError):
        zeropower_via_newtonschulz5(torch.randn(4), 5)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4), (2, 6, 3)])
def test_svd_orthogonalize_exact(shape):
    G = torch.randn(*shape, generator=_gen(20), dtype=F64)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    X = svd_orthogonalize(G)
    torch.testing.assert_close(X, U @ Vh, rtol=0, atol=1e-12)
    torch.testing.assert_close(_svdvals(X), torch.ones_like(_svdvals(X)), rtol=0, atol=1e-12)
    Gf = G.float()
    torch.testing.assert_close(svd_orthogonalize(Gf), (U @ Vh).float(), rtol=0, atol=1e-6)


def test_svd_orthogonalize_rank_deficient():
    a = torch.randn(5, 2, generator=_gen(21), dtype=F64)
    b = torch.randn(2, 4, generator=_gen(22), dtype=F64)
    G = a @ b  # rank 2
    X = svd_orthogonalize(G)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    torch.testing.assert_close(X, U[:, :2] @ Vh[:2], rtol=0, atol=1e-12)  # partial isometry onto the range
    torch.testing.assert_close(X @ X.T @ X, X, rtol=0, atol=1e-12)
    assert torch.equal(svd_orthogonalize(torch.zeros(4, 3)), torch.zeros(4, 3))


def test_svd_orthogonalize_fallbacks(monkeypatch):
    G = torch.randn(5, 3, generator=_gen(23))
    expected = svd_orthogonalize(G)
    real_svd = torch.linalg.svd

    def flaky(X, *args, **kwargs):
        if X.dtype != torch.float64:
            raise torch.linalg.LinAlgError("simulated failure")
        return real_svd(X, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    out = svd_orthogonalize(G)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)

    def broken(X, *args, **kwargs):
        raise torch.linalg.LinAlgError("simulated failure")

    monkeypatch.setattr(torch.linalg, "svd", broken)
    torch.testing.assert_close(svd_orthogonalize(G), zeropower_via_newtonschulz5(G, 5))


def test_orthogonalize_dispatch():
    G = torch.randn(5, 3, generator=_gen(24))
    torch.testing.assert_close(orthogonalize(G, "svd"), svd_orthogonalize(G))
    torch.testing.assert_close(orthogonalize(G, "newton-schulz", 3), zeropower_via_newtonschulz5(G, 3))
    with pytest.raises(ValueError):
        orthogonalize(G, "qr")  # type: ignore[arg-type]
