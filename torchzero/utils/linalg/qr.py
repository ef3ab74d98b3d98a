"""QR by Householder reflections, and one Gram–Schmidt step."""
from __future__ import annotations

from typing import Literal

import torch

__all__ = ["gram_schmidt", "qr_householder"]


def qr_householder(A: torch.Tensor, mode: Literal["complete", "reduced"] = "reduced"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched QR decomposition of real matrices ``(..., m, n)`` by Householder reflections.

    Written with fixed-shape tensor operations only (no data-dependent control flow), so it can be compiled with
    ``torch.compile``; aimed at very tall thin matrices, where the ``min(m, n)`` reflections are cheap. A zero column
    gives no reflection (the QR of a rank-deficient matrix is still a valid factorization with orthogonal ``Q``).

    Args:
        A: real tensor of shape ``(..., m, n)``.
        mode: ``'reduced'`` returns ``Q`` ``(..., m, k)`` and ``R`` ``(..., k, n)`` with ``k = min(m, n)``;
            ``'complete'`` returns ``Q`` ``(..., m, m)`` and ``R`` ``(..., m, n)``. Defaults to ``'reduced'``.

    Returns:
        ``(Q, R)`` with ``Q R = A``, orthonormal columns of ``Q`` and upper-triangular ``R``.
    """
    if mode not in ("complete", "reduced"):
        raise ValueError(f"qr_householder: mode must be 'complete' or 'reduced', got {mode!r}")
    if A.ndim < 2:
        raise ValueError(f"qr_householder expects a tensor with at least 2 dims, got shape {tuple(A.shape)}")
    if A.is_complex():
        raise TypeError("qr_householder supports real matrices only")
    m, n = A.shape[-2:]
    k = min(m, n)
    R = A.clone()
    reflectors: list[tuple[torch.Tensor, torch.Tensor]] = []
    for j in range(k):
        x = R[..., j:, j]
        alpha = x[..., 0]
        norm = torch.linalg.vector_norm(x, dim=-1)
        sign = torch.where(alpha >= 0, 1.0, -1.0).to(A.dtype)
        v = x.clone()
        v[..., 0] = alpha + sign * norm
        vnorm2 = (v * v).sum(-1)
        tau = torch.where(vnorm2 > 0, 2 / vnorm2.clamp_min(torch.finfo(A.dtype).tiny), 0.0)
        # R[j:, j:] -= tau v (vᵀ R[j:, j:])
        block = R[..., j:, j:]
        R[..., j:, j:] = block - (tau[..., None, None] * v[..., :, None]) * (v[..., None, :] @ block)
        reflectors.append((v, tau))

    ncols = k if mode == "reduced" else m
    Q = torch.eye(m, ncols, dtype=A.dtype, device=A.device).expand(*A.shape[:-2], m, ncols).clone()
    for j in reversed(range(k)):
        v, tau = reflectors[j]
        block = Q[..., j:, :]
        Q[..., j:, :] = block - (tau[..., None, None] * v[..., :, None]) * (v[..., None, :] @ block)

    R = R[..., :ncols, :] if mode == "reduced" else R
    return Q, R.triu()


def gram_schmidt(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One Gram–Schmidt step: returns ``(x, y − (⟨x, y⟩ / ⟨x, x⟩)·x)``, ``y`` with its component along ``x``
    removed (inner products over all elements; the denominator is clamped at ``2·tiny``, so a zero ``x`` leaves
    ``y`` unchanged).

    The reference computed an elementwise expression ``y − (x⊙y)/(x⊙x)`` instead; this is the projection.
    """
    xx = torch.vdot(x.ravel(), x.ravel()).real
    xy = torch.vdot(x.ravel(), y.ravel())
    coef = xy / xx.clamp_min(2 * torch.finfo(xx.dtype).tiny)
    return x, y - coef * x
