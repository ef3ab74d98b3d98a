"""LinearOperator family against the dense torch equivalents."""
from __future__ import annotations

import pytest
import torch

from torchzero.utils.linalg.linear_operator import (
    AAT,
    AtA,
    Dense,
    DenseInverse,
    DenseWithInverse,
    Diagonal,
    ScaledIdentity,
)

torch.manual_seed(0)
N = 6
_M = torch.randn(N, N, dtype=torch.float64)
SPD = _M @ _M.T + N * torch.eye(N, dtype=torch.float64)
RECT = torch.randn(9, N, dtype=torch.float64)
DIAG = torch.rand(N, dtype=torch.float64) + 0.5


def cases():
    return {
        "Dense": (Dense(SPD), SPD),
        "DenseInverse": (DenseInverse(torch.linalg.inv(SPD)), SPD),
        "DenseWithInverse": (DenseWithInverse(SPD, torch.linalg.inv(SPD)), SPD),
        "Diagonal": (Diagonal(DIAG), torch.diag(DIAG)),
        "ScaledIdentity": (ScaledIdentity(2.5, shape=(N, N), dtype=torch.float64), 2.5 * torch.eye(N, dtype=torch.float64)),
        "AtA": (AtA(RECT), RECT.T @ RECT),
        "AAT": (AAT(RECT.T), RECT.T @ RECT),
    }


@pytest.mark.parametrize("name", list(cases()))
def test_operator_matches_dense(name):
    op, A = cases()[name]
    v = torch.randn(N, dtype=torch.float64)
    X = torch.randn(N, 3, dtype=torch.float64)
    tol = dict(rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(op.matvec(v), A @ v, **tol)
    torch.testing.assert_close(op.rmatvec(v), A.T @ v, **tol)
    torch.testing.assert_close(op.matmat(X), A @ X, **tol)
    torch.testing.assert_close(op.solve(v), torch.linalg.solve(A, v), **tol)
    torch.testing.assert_close(op.diagonal(), torch.diagonal(A), **tol)
    torch.testing.assert_close(op.to_tensor(), A, **tol)
    torch.testing.assert_close(op.to_dense().to_tensor(), A, **tol)
    torch.testing.assert_close(op.add_diagonal(0.7).solve(v), torch.linalg.solve(A + 0.7 * torch.eye(N, dtype=A.dtype), v), **tol)
    torch.testing.assert_close(op.inv().to_tensor(), torch.linalg.inv(A), **tol)
    assert op.size() == (N, N) == op.shape and op.numel() == N * N and op.ndim == 2
    x = op.solve_bounded(v, bound=1e-3)
    assert torch.linalg.vector_norm(x) <= 1e-3 + 1e-12
    torch.testing.assert_close(op.add(Dense(SPD)).to_tensor(), A + SPD, **tol)
    torch.testing.assert_close((op + torch.eye(N, dtype=A.dtype)).to_tensor(), A + torch.eye(N, dtype=A.dtype), **tol)


@pytest.mark.parametrize("name", list(cases()))
def test_scipy_linop(name):
    pytest.importorskip("scipy")
    op, A = cases()[name]
    v = torch.randn(N, dtype=torch.float64)
    lin = op.scipy_linop()
    torch.testing.assert_close(torch.as_tensor(lin.matvec(v.numpy())), A @ v, rtol=1e-9, atol=1e-9)


def test_rectangular_ata_aat_diagonals_and_sizes():
    # the reference summed the wrong axis / swapped sizes when A is not square
    A = torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(AtA(A).diagonal(), torch.diagonal(A.T @ A))
    assert AtA(A).size() == (3, 3)
    torch.testing.assert_close(AAT(A).diagonal(), torch.diagonal(A @ A.T))
    assert AAT(A).size() == (7, 7)


def test_scaled_identity_add_and_bounded():
    s = ScaledIdentity(2.0, shape=(3, 3), dtype=torch.float64)
    X = torch.arange(9, dtype=torch.float64).reshape(3, 3)
    torch.testing.assert_close(s.add(X).to_tensor(), X + 2 * torch.eye(3, dtype=torch.float64))  # not X + 2
    b = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(ScaledIdentity(0.0).solve_bounded(b, 1.0), b / 5)  # b/0 is not finite
    torch.testing.assert_close(s.solve_bounded(b, 100.0), b / 2)


def test_singular_dense_falls_back():
    A = torch.zeros(3, 3, dtype=torch.float64)
    A[0, 0] = 1
    b = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)
    x = Dense(A).solve(b)
    assert torch.isfinite(x).all()
    torch.testing.assert_close(x, torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.isfinite(Dense(A).inv().to_tensor()).all()


def test_unimplemented_names_class():
    from torchzero.utils.linalg.linear_operator import LinearOperator

    class Bare(LinearOperator):
        pass

    with pytest.raises(NotImplementedError, match="Bare"):
        Bare().matvec(torch.zeros(1))


def test_dense_solve_non_finite_matrix_gives_nan_not_crash():
    A = torch.eye(3, dtype=torch.float64)
    A[0, 1] = float("nan")
    x = Dense(A).solve(torch.ones(3, dtype=torch.float64))
    assert torch.isnan(x).all()
