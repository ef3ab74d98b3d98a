"""Randomized Nyström approximation of a symmetric positive semi-definite operator known through products, and the
two solvers built on it: the closed-form regularized "sketch-and-solve" and Nyström-preconditioned CG.

Reference: Z. Frangella, J. A. Tropp & M. Udell, "Randomized Nyström preconditioning", SIAM J. Matrix Anal. Appl.
44(2), 2023, 718–752 (Algorithms 2.1 and 5.1).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .solve import CG

__all__ = ["nystrom_approximation", "nystrom_from_sketch", "nystrom_pcg", "nystrom_sketch_and_solve"]


def nystrom_from_sketch(Omega: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, λ)`` of the Nyström approximation ``A ≈ U diag(λ) Uᵀ`` from an orthonormal test matrix ``Ω`` (``n × r``)
    and the sketch ``Y = AΩ``.

    ``ν = eps·‖Y‖_F``, ``Y_ν = Y + νΩ``, ``C = chol(Ωᵀ Y_ν)``, ``B = Y_ν C⁻ᵀ``, ``U, Σ = svd(B)``,
    ``λ = max(Σ² − ν, 0)`` (eigenvalues in descending order).

    ``A`` is assumed positive semi-definite. If the core ``ΩᵀY_ν`` is not positive definite (an indefinite or zero
    ``A``), the Cholesky factor is replaced by the eigendecomposition of the symmetrized core restricted to its
    eigenvalues above ``eps·max|λ|``, so the result approximates the positive part of ``A`` and is always finite
    (possibly with fewer than ``r`` columns). A non-finite sketch, or a core whose eigendecomposition fails, gives an
    empty approximation (``U`` with no columns), with which the solvers below reduce to ``b/reg`` and plain CG.
    """
    eps = torch.finfo(Y.dtype).eps
    empty = (Y.new_zeros(Y.shape[0], 0), Y.new_zeros(0))
    nu = eps * torch.linalg.matrix_norm(Y)  # Frobenius norm, 0-d tensor
    if not bool(torch.isfinite(nu)):
        return empty
    Y_nu = Y + nu * Omega
    core = Omega.mT @ Y_nu
    core = (core + core.mT) / 2
    C, info = torch.linalg.cholesky_ex(core)
    if int(info) == 0:
        B = torch.linalg.solve_triangular(C, Y_nu.mT, upper=False).mT
    else:
        try:
            L, Q = torch.linalg.eigh(core)
        except torch.linalg.LinAlgError:
            return empty
        keep = L > eps * L.abs().amax().clamp_min(torch.finfo(L.dtype).tiny)
        B = (Y_nu @ Q[:, keep]) / L[keep].sqrt()
    U, S, _ = torch.linalg.svd(B, full_matrices=False)
    lambd = (S * S - nu).clamp_min(0)
    return U, lambd


def nystrom_approximation(
    A_mm: Callable[[torch.Tensor], torch.Tensor],
    ndim: int,
    rank: int,
    device: torch.types.Device,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-``rank`` randomized Nyström approximation ``A ≈ U diag(λ) Uᵀ`` of a PSD ``ndim × ndim`` operator.

    ``Ω`` = Q factor of a Gaussian ``ndim × rank`` matrix (drawn with ``generator``), ``Y = AΩ`` (``rank`` calls of
    ``A_mm`` on the columns of ``Ω``), then ``nystrom_from_sketch(Ω, Y)``. A ``rank`` above ``ndim`` is reduced to
    ``ndim``.

    Args:
        A_mm: ``A_mm(v) = A v`` for a 1-D vector ``v`` of length ``ndim``.
        ndim: size of ``A``.
        rank: sketch size.
        device: device of the test matrix.
        dtype: dtype of the test matrix. Defaults to float32.
        generator: random generator, None for the global one.

    Returns:
        ``(U, λ)``: ``U`` with orthonormal columns (``ndim × r``), ``λ`` non-negative, descending.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"nystrom_approximation: rank must be a positive int, got {rank!r}")
    rank = min(rank, ndim)
    Omega = torch.randn(ndim, rank, device=device, dtype=dtype, generator=generator)
    Omega = torch.linalg.qr(Omega).Q
    Y = torch.stack([A_mm(c) for c in Omega.mT.contiguous()], dim=1)
    return nystrom_from_sketch(Omega, Y)


def nystrom_sketch_and_solve(
    A_mm: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    rank: int,
    reg: float = 1e-3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Approximate solution of ``(A + reg·I) x = b`` from a rank-``rank`` Nyström approximation of ``A``:
    ``x = U diag(1/(λ + reg)) Uᵀb + (b − UUᵀb)/reg`` (exact for ``A = U diag(λ) Uᵀ``).

    Args:
        A_mm: ``A_mm(v) = A v`` for 1-D ``v``.
        b: 1-D right-hand side.
        rank: sketch size.
        reg: regularization, must be positive. Defaults to 1e-3.
        generator: random generator of the sketch.
    """
    if not reg > 0:
        raise ValueError(f"nystrom_sketch_and_solve: reg must be positive, got {reg!r}")
    U, lambd = nystrom_approximation(A_mm, b.numel(), rank, b.device, b.dtype, generator)
    Utb = U.mT @ b
    return U @ (Utb / (lambd + reg)) + (b - U @ Utb) / reg


def nystrom_pcg(
    A_mm: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    sketch_size: int,
    reg: float = 1e-6,
    x0_: torch.Tensor | None = None,
    tol: float = 1e-4,
    maxiter: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Solves ``(A + reg·I) x = b`` by CG preconditioned with a Nyström sketch of ``A`` of size ``sketch_size``.

    Preconditioner (applied as ``P⁻¹``): ``(λ_min + reg)·U (Λ + reg·I)⁻¹ Uᵀ + (I − UUᵀ)``, ``λ_min`` the smallest
    sketched eigenvalue. Stops when ``‖r‖ ≤ tol·‖r₀‖`` or after ``maxiter`` iterations (default ``numel(b)``).

    Args:
        A_mm: ``A_mm(v) = A v`` for 1-D ``v``.
        b: 1-D right-hand side (not modified).
        sketch_size: rank of the sketch (``sketch_size`` products).
        reg: regularization. Defaults to 1e-6.
        x0_: initial guess; if given it is overwritten with the solution (and returned). Zeros when None.
        tol: relative residual tolerance. Defaults to 1e-4.
        maxiter: maximum CG iterations.
        generator: random generator of the sketch.
    """
    if not (isinstance(reg, (int, float)) and math.isfinite(reg)):
        raise ValueError(f"nystrom_pcg: reg must be a finite number, got {reg!r}")
    U, lambd = nystrom_approximation(A_mm, b.numel(), sketch_size, b.device, b.dtype, generator)
    lambd_min = lambd[-1] if lambd.numel() > 0 else lambd.new_zeros(())
    scale = (lambd_min + reg) / (lambd + reg)

    def P_mm(r: torch.Tensor) -> torch.Tensor:
        Utr = U.mT @ r
        return r + U @ (Utr * scale - Utr)

    x = CG(A_mm, b, x0=x0_, tol=0.0, maxiter=maxiter, reg=reg, P_mm=P_mm, rtol=tol).solve()
    assert isinstance(x, torch.Tensor)
    if x0_ is not None:
        x0_.copy_(x)
        return x0_
    return x
