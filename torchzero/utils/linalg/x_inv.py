"""Inverse of an "X-shaped" matrix: one whose only non-zero entries lie on the diagonal and the anti-diagonal."""
from __future__ import annotations

import torch

__all__ = ["x_inv"]


def x_inv(diag: torch.Tensor, antidiag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Inverse of ``M = diag(d) + antidiag(a)``, returned in the same form ``(y_d, y_a)``.

    ``M[i, i] = d[i]`` and ``M[i, n−1−i] = a[i]``; for odd ``n`` the centre entry is ``d[m] + a[m]``
    (``m = (n − 1)/2``). ``M`` decouples into the 2×2 blocks of rows/columns ``{i, n−1−i}``, so

    ``y_d[i] = d[n−1−i]/Δᵢ``, ``y_a[i] = −a[i]/Δᵢ``, ``Δᵢ = d[i]d[n−1−i] − a[i]a[n−1−i]``

    (for the centre, ``y_d[m] + y_a[m] = 1/(d[m] + a[m])``). Works on the last dimension of batched inputs. A zero
    ``Δᵢ`` (singular block) gives ``inf``/``nan`` in that block, like any inverse of a singular matrix.

    Args:
        diag: ``d``, shape ``(..., n)``.
        antidiag: ``a``, shape ``(..., n)``.

    Returns:
        ``(y_d, y_a)`` of the same shape.
    """
    if diag.shape != antidiag.shape:
        raise ValueError(f"x_inv: diag and antidiag must have the same shape, got {tuple(diag.shape)} and "
                         f"{tuple(antidiag.shape)}")
    d_rev = diag.flip(-1)
    det = diag * d_rev - antidiag * antidiag.flip(-1)
    return d_rev / det, -antidiag / det
