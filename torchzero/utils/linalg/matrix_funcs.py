"""Functions of symmetric matrices through their eigendecomposition (or SVD), and guarded variants that never
raise.

The guarded functions (``eigh_safe``, ``matrix_power_eigh_safe``) implement the failure policy shared by the
matrix preconditioners (Shampoo, SOAP, full-matrix AdaGrad, ...): the decomposition is computed in the matrix's
dtype (float32 for half precision), retried once in float64 with a small diagonal jitter if it raises or returns
non-finite values, and ``None`` is returned when that also fails or the matrix itself is not finite, so that the
caller can keep its previous preconditioner. Checking the result costs one device synchronization, which
``torch.linalg.eigh`` performs anyway.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "eigh_safe",
    "eigvals_func",
    "inv_sqrt_2x2",
    "matrix_power_eigh",
    "matrix_power_eigh_safe",
    "power_from_eigh",
    "singular_vals_func",
    "solve_psd_eigh",
]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype that linear-algebra routines run in: float32 for half-precision inputs, else ``dtype``."""
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return dtype


def _is_even_integer(x: float) -> bool:
    return float(x).is_integer() and int(x) % 2 == 0


def _eig_floor(L: torch.Tensor, rtol: float) -> torch.Tensor | float:
    """``max(2·tiny, rtol·λ_max)`` (per matrix of a batch)."""
    floor = 2 * torch.finfo(L.dtype).tiny
    if rtol <= 0:
        return floor
    return (L.amax(-1, keepdim=True) * rtol).clamp_min(floor)


def power_from_eigh(L: torch.Tensor, Q: torch.Tensor, pow: float, rtol: float = 0.0) -> torch.Tensor:
    """``Q diag(λ^pow) Qᴴ`` from an eigendecomposition ``(L, Q)``.

    Unless ``pow`` is an even integer, eigenvalues are first clipped from below to ``max(2·tiny, rtol·λ_max)``
    (the matrix is treated as positive semi-definite, negative eigenvalues being rounding errors).
    """
    if not _is_even_integer(pow):
        floor = _eig_floor(L, rtol)
        L = torch.maximum(L, floor) if isinstance(floor, torch.Tensor) else L.clamp_min(floor)
    return (Q * L.pow(pow).unsqueeze(-2).to(Q.dtype)) @ Q.mH


def matrix_power_eigh(A: torch.Tensor, pow: float, *, rtol: float = 0.0) -> torch.Tensor:
    """``A^pow = Q diag(λ^pow) Qᴴ`` of a symmetric (Hermitian) positive semi-definite matrix (or batch).

    Unless ``pow`` is an even integer, eigenvalues are clipped from below to ``2·tiny`` before taking the power, so
    negative powers of singular matrices are finite. With ``rtol > 0`` the floor is ``max(2·tiny, rtol·λ_max)``:
    eigenvalues below ``eps·λ_max`` cannot be told apart from zero, and this keeps rounding noise in the null space
    of a rank-deficient matrix from being amplified by up to ``(2·tiny)^pow`` (the preconditioners pass
    ``rtol = eps`` of the dtype). Raises ``torch.linalg.LinAlgError`` if the decomposition fails, see
    ``matrix_power_eigh_safe`` for the guarded version. Computed in float32 for half-precision inputs, returned in
    ``A.dtype``.

    Args:
        A: symmetric matrix ``(..., n, n)``.
        pow: the power, e.g. ``-1/2`` for the inverse square root.
        rtol: relative eigenvalue floor. Defaults to 0.
    """
    L, Q = torch.linalg.eigh(A.to(compute_dtype(A.dtype)))
    return power_from_eigh(L, Q, pow, rtol).to(A.dtype)


def _all_finite(*tensors: torch.Tensor) -> bool:
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def eigh_safe(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``torch.linalg.eigh(A)`` that never raises: returns ``(L, Q)`` or None.

    Tries ``A``'s dtype (float32 for half precision); if that raises or gives non-finite values, retries in float64
    on the symmetrized matrix with a diagonal jitter of ``eps₆₄·max|A|`` (the result is cast back). Returns None if
    ``A`` is not finite or the retry fails too. Eigenvalues are in ascending order, as in ``torch.linalg.eigh``.
    """
    dtype = compute_dtype(A.dtype)
    try:
        L, Q = torch.linalg.eigh(A.to(dtype))
        if _all_finite(L, Q):
            return L, Q
    except (torch.linalg.LinAlgError, RuntimeError):
        pass
    if not bool(torch.isfinite(A).all()):
        return None
    A64 = A.to(torch.float64 if not A.is_complex() else torch.complex128)
    A64 = (A64 + A64.mH) / 2
    jitter = torch.finfo(torch.float64).eps * A64.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-300)
    A64 = A64 + jitter * torch.eye(A.shape[-1], dtype=A64.dtype, device=A.device)
    try:
        L, Q = torch.linalg.eigh(A64)
    except (torch.linalg.LinAlgError, RuntimeError):
        return None
    if not _all_finite(L, Q):
        return None
    return L.to(dtype.to_real()), Q.to(dtype)


def matrix_power_eigh_safe(A: torch.Tensor, pow: float, *, rtol: float = 0.0) -> torch.Tensor | None:
    """``matrix_power_eigh(A, pow, rtol=rtol)`` through ``eigh_safe``: None instead of an exception (or of a
    non-finite result) when the eigendecomposition fails even in float64, or ``A`` is not finite."""
    res = eigh_safe(A)
    if res is None:
        return None
    L, Q = res
    out = power_from_eigh(L, Q, pow, rtol)
    if not bool(torch.isfinite(out).all()):
        return None
    return out.to(A.dtype)


def solve_psd_eigh(A: torch.Tensor, b: torch.Tensor, rtol: float | None = None) -> torch.Tensor | None:
    """``A⁺b`` for a symmetric positive semi-definite ``A`` (n×n) through its eigendecomposition: eigenvalues
    ``≤ rtol·λ_max`` are treated as zero (default ``rtol = n·eps``), so a singular or numerically singular ``A``
    gives the minimum-norm solution instead of amplified rounding errors; for a well-conditioned ``A`` this is
    ``solve(A, b)``. ``b`` may be a vector or an ``(n, k)`` matrix. Guarded as ``eigh_safe``: returns None if the
    decomposition fails even in float64 or ``A`` is not finite.
    """
    res = eigh_safe(A)
    if res is None:
        return None
    L, Q = res
    if rtol is None:
        rtol = A.shape[-1] * torch.finfo(L.dtype).eps
    keep = L > rtol * L.amax().clamp_min(0)
    inv_L = torch.where(keep, 1 / torch.where(keep, L, 1), 0)
    Qb = Q.mT @ b.to(Q.dtype)
    out = Q @ (inv_L.unsqueeze(-1) * Qb if b.ndim > 1 else inv_L * Qb)
    return out.to(b.dtype)


def eigvals_func(A: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``Q diag(fn(λ)) Qᴴ`` for a symmetric (Hermitian) matrix ``A = Q diag(λ) Qᴴ`` (or a batch of them).

    Computed in float32 for half-precision inputs, returned in ``A.dtype``.
    """
    L, Q = torch.linalg.eigh(A.to(compute_dtype(A.dtype)))
    return ((Q * fn(L).unsqueeze(-2).to(Q.dtype)) @ Q.mH).to(A.dtype)


def singular_vals_func(A: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``U diag(fn(σ)) Vᴴ`` for ``A = U diag(σ) Vᴴ`` (thin SVD, any shape, batched).

    With ``fn`` the identity this reproduces ``A`` (the reference multiplied by the transpose of ``Vᴴ`` instead,
    which it does not). Computed in float32 for half-precision inputs, returned in ``A.dtype``.
    """
    U, S, Vh = torch.linalg.svd(A.to(compute_dtype(A.dtype)), full_matrices=False)
    return ((U * fn(S).unsqueeze(-2).to(U.dtype)) @ Vh).to(A.dtype)


def inv_sqrt_2x2(A: torch.Tensor, force_pd: bool = False) -> torch.Tensor:
    """Closed-form inverse square root of symmetric positive definite 2×2 matrices ``(..., 2, 2)``.

    ``A^(-1/2) = adj(A + sI) / (s·τ)`` with ``s = √det A`` and ``τ = √(tr A + 2s)`` (then ``√A = (A + sI)/τ``).
    Without ``force_pd``, a matrix that is not positive definite gives non-finite entries.

    With ``force_pd``, the diagonal is first shifted by ``max(floor − λ_min, 0)`` with
    ``floor = eps·|λ_max| + tiny`` (``λ`` the eigenvalues), so that semi-definite and indefinite matrices give finite
    results, and ``det`` is computed from the shifted eigenvalues. (The reference shifts by the negative part of
    ``λ_min`` plus ``tiny`` only, which leaves a singular matrix numerically singular: ``ad − bc`` cancels to 0 and
    the result is infinite.) For a positive definite matrix the shift changes the result by ``O(eps)`` at most.

    Args:
        A: tensor of shape ``(..., 2, 2)``.
        force_pd: shift the diagonal to make every matrix positive definite. Defaults to False.
    """
    if A.shape[-2:] != (2, 2):
        raise ValueError(f"inv_sqrt_2x2 expects matrices of shape (..., 2, 2), got {tuple(A.shape)}")
    a, b = A[..., 0, 0], A[..., 0, 1]
    c, d = A[..., 1, 0], A[..., 1, 1]
    if force_pd:
        finfo = torch.finfo(A.dtype)
        half_tr = (a + d) / 2
        disc = torch.sqrt(((a - d) / 2) ** 2 + b * c).nan_to_num(0.0)
        lmax, lmin = half_tr + disc, half_tr - disc
        shift = (finfo.eps * lmax.abs() + finfo.tiny - lmin).clamp_min(0)
        a, d = a + shift, d + shift
        det = (lmax + shift) * (lmin + shift)
    else:
        det = a * d - b * c
    s = torch.sqrt(det)
    tau = torch.sqrt(a + d + 2 * s)
    denom = s * tau
    row0 = torch.stack([d + s, -b], -1)
    row1 = torch.stack([-c, a + s], -1)
    return torch.stack([row0, row1], -2) / denom[..., None, None]
