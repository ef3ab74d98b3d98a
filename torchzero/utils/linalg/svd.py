"""Randomized SVD."""
from __future__ import annotations

import torch

__all__ = ["randomized_svd"]


def randomized_svd(M: torch.Tensor, k: int, driver: str | None = None, *,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank-``k`` randomized SVD ``M ≈ U diag(s) Vh`` (Halko–Martinsson–Tropp range finder).

    ``k`` Gaussian test vectors, no oversampling and no power iterations: ``Y = MΩ``, ``Q = qr(Y)``,
    ``B = QᴴM``, ``Ub, s, Vh = svd(B)``, ``U = Q Ub``. A wide matrix is handled through its transpose, so the random
    sketch is always of the smaller dimension's complement. The factorization is exact (up to rounding) when
    ``rank(M) ≤ k``; ``k`` larger than ``min(m, n)`` is reduced to it.

    Args:
        M: matrix ``(..., m, n)``.
        k: number of singular triplets.
        driver: ``driver`` of ``torch.linalg.svd`` (cuSOLVER only); None for the default.
        generator: random generator for the test matrix; None for the global RNG.

    Returns:
        ``(U, s, Vh)`` of shapes ``(..., m, k)``, ``(..., k)``, ``(..., k, n)``.

    Reference:
        N. Halko, P.-G. Martinsson, J. A. Tropp, "Finding structure with randomness: Probabilistic algorithms for
        constructing approximate matrix decompositions", SIAM Review 2011.
    """
    if M.ndim < 2:
        raise ValueError(f"randomized_svd expects a tensor with at least 2 dims, got shape {tuple(M.shape)}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"randomized_svd: k must be a positive integer, got {k!r}")
    m, n = M.shape[-2:]
    transpose = m < n
    if transpose:
        M = M.mH
        m, n = n, m
    k = min(k, n)
    omega = torch.randn(*M.shape[:-2], n, k, dtype=M.dtype, device=M.device, generator=generator)
    Q, _ = torch.linalg.qr(M @ omega)
    B = Q.mH @ M
    kwargs = {} if driver is None else {"driver": driver}
    Ub, s, Vh = torch.linalg.svd(B, full_matrices=False, **kwargs)
    U = Q @ Ub
    if transpose:
        return Vh.mH, s, U.mH
    return U, s, Vh
