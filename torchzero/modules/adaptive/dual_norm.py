"""Dual-norm correction of (orthogonalized) matrix updates, as a standalone module (``Orthogonalize`` has it
built in as ``dual_norm_correction=True``; both use ``muon.dual_norm_correction``)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...core import Target, Transform
from .muon import dual_norm_correction, is_matrix


def dual_norm_correction_(tensors_: list[torch.Tensor], grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Replaces each matrix-criterion tensor ``X`` of ``tensors_`` by ``⟨G, X⟩·X`` (summed over dims 0 and 1, one
    value per index of the trailing dims), with ``G`` the matching gradient; other tensors are unchanged.
    Returns ``tensors_``."""
    for i, (x, g) in enumerate(zip(tensors_, grads)):
        if is_matrix(x):
            tensors_[i] = dual_norm_correction(x, g)
    return tensors_


class DualNormCorrection(Transform):
    """Scales matrix updates by their inner product with the gradient: ``X ← ⟨G, X⟩·X``.

    For tensors meeting the matrix criterion (``ndim ≥ 2``, ``size(0) > 1``, ``size(1) > 1``), ``G`` is the raw
    gradient and the inner product sums over dims 0 and 1 separately for every index of the trailing dims (a
    single scalar for 2-D). Other tensors pass unchanged. Meant to follow orthogonalisation: when ``X`` is the
    orthogonal factor ``UVᵀ`` of ``G``, ``⟨G, X⟩`` is the nuclear norm of ``G`` (the dual of the spectral norm). When
    the update is ``G`` itself the output is ``‖G‖_F²·G``.

    Args:
        target: what to transform. Defaults to ``'update'``.

    Reference:
        F. L. Cesista, "adaptive Muon" dual-norm scaling, 2025 (github.com/leloykun/adaptive-muon).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.HeavyBall(), tz.m.Orthogonalize(), tz.m.DualNormCorrection(),
                         tz.m.LR(1e-3))
        ```
    """

    def __init__(self, target: Target = "update"):
        super().__init__({}, uses_grad=True, target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        assert grads is not None
        return dual_norm_correction_(list(tensors), grads)
