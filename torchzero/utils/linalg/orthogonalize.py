"""Orthogonalization of matrices: the Newton–Schulz iteration of Muon and the exact SVD polar factor."""
from __future__ import annotations

from typing import Literal

import torch

from .matrix_funcs import compute_dtype as _linalg_dtype

__all__ = ["NS_COEFFS", "orthogonalize", "svd_orthogonalize", "zeropower_via_newtonschulz5"]

NS_COEFFS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
"""Coefficients ``(a, b, c)`` of the quintic Newton–Schulz iteration ``X ← aX + (bA + cA²)X``, ``A = XXᵀ``."""


def _normalize_frobenius(X: torch.Tensor) -> torch.Tensor:
    """``X / ‖X‖_F`` over the last two dims, computed without overflow or underflow of the squared norm: first
    divided by ``max|X|`` (so the largest entry is ±1), then by the Frobenius norm (≥ 1 unless the matrix is zero).
    A zero matrix stays zero."""
    amax = X.abs().amax(dim=(-2, -1), keepdim=True)
    X = X / amax.clamp_min(torch.finfo(X.dtype).tiny)
    norm = torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True)
    return X / norm.clamp_min(1)


def zeropower_via_newtonschulz5(G: torch.Tensor, steps: int = 5, *,
                                compute_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Approximate orthogonalization ``≈ UVᵀ`` (``G = UΣVᵀ``) of the last two dims by the quintic Newton–Schulz
    iteration of Muon.

    The matrix is transposed if it is tall (so that ``XXᵀ`` is the smaller Gram matrix), scaled to unit Frobenius
    norm, cast to ``compute_dtype`` (bfloat16 by default, as in Muon), and iterated ``steps`` times:
    ``A = XXᵀ``, ``X ← aX + (bA + cA²)X`` with ``(a, b, c) = (3.4445, −4.7750, 2.0315)``. The coefficients trade
    exactness for speed: after 5 steps the singular values are roughly in ``[0.6, 1.2]``, not exactly 1; zero
    singular values stay zero. The result is returned in ``G.dtype``.

    The reference divides by ``‖G‖_F + 1e-7``, which stops orthogonalizing matrices whose norm is not much larger
    than 1e-7 and overflows for huge ones; here the scaling is exact for any magnitude (a zero matrix gives zero)
    and is done in ``G``'s dtype before the cast. Non-finite inputs give non-finite outputs.

    Args:
        G: tensor with at least 2 dims; leading dims are batch dims.
        steps: number of iterations. Defaults to 5.
        compute_dtype: dtype of the iteration. Defaults to bfloat16.
    """
    if G.ndim < 2:
        raise ValueError(f"zeropower_via_newtonschulz5 expects a tensor with at least 2 dims, got shape "
                         f"{tuple(G.shape)}")
    a, b, c = NS_COEFFS
    transpose = G.size(-2) > G.size(-1)
    X = G.mT if transpose else G
    X = _normalize_frobenius(X).to(compute_dtype)
    for _ in range(steps):
        A = X @ X.mT
        B = (A @ A).mul_(c).add_(A, alpha=b)
        X = (B @ X).add_(X, alpha=a)
    if transpose:
        X = X.mT
    return X.to(G.dtype)


def svd_orthogonalize(G: torch.Tensor) -> torch.Tensor:
    """Exact orthogonalization of the last two dims: ``U Vᴴ`` from the thin SVD ``G = U diag(σ) Vᴴ``.

    Singular values below ``max(m, n)·eps·σ_max`` are numerically zero; their singular vectors are dropped
    (``U diag(σ > tol) Vᴴ``, the partial isometry onto the range of ``G``, which is also the limit of the
    Newton–Schulz iteration), so a zero or rank-deficient input does not get arbitrary directions added. If the
    SVD fails to converge it is retried in float64, and if that fails too (e.g. non-finite input) the Newton–Schulz
    approximation is returned instead. Computed in float32 for half-precision inputs, returned in ``G.dtype``.
    """
    if G.ndim < 2:
        raise ValueError(f"svd_orthogonalize expects a tensor with at least 2 dims, got shape {tuple(G.shape)}")
    X = G.to(_linalg_dtype(G.dtype))
    try:
        U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    except (torch.linalg.LinAlgError, RuntimeError):
        try:
            U, S, Vh = torch.linalg.svd(X.to(torch.float64), full_matrices=False)
        except (torch.linalg.LinAlgError, RuntimeError):
            return zeropower_via_newtonschulz5(G, 5)
    tol = S.amax(-1, keepdim=True) * (max(G.shape[-2:]) * torch.finfo(S.dtype).eps)
    keep = (S > tol).to(U.dtype)
    return ((U * keep.unsqueeze(-2)) @ Vh).to(G.dtype)


def orthogonalize(G: torch.Tensor, method: Literal["newton-schulz", "svd"] = "newton-schulz",
                  steps: int = 5) -> torch.Tensor:
    """Orthogonalizes the last two dims of ``G`` with ``zeropower_via_newtonschulz5`` (``steps`` iterations) or
    ``svd_orthogonalize``."""
    if method == "newton-schulz":
        return zeropower_via_newtonschulz5(G, steps)
    if method == "svd":
        return svd_orthogonalize(G)
    raise ValueError(f"unknown orthogonalization method {method!r}, expected 'newton-schulz' or 'svd'")
