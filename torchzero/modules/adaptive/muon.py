"""Muon's orthogonalization of matrix-shaped updates (``Orthogonalize``) and its learning-rate scaling
(``MuonAdjustLR``)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from ...core import Target, Transform
from ...utils.checks import check_choice, check_range
from ...utils.foreach import scalar_or_list
from ...utils.linalg.orthogonalize import svd_orthogonalize, zeropower_via_newtonschulz5

_METHODS = ("newton-schulz", "svd")


def is_matrix(tensor: torch.Tensor) -> bool:
    """The matrix criterion of the Muon modules: ``ndim >= 2``, ``size(0) > 1`` and ``size(1) > 1``."""
    return tensor.ndim >= 2 and tensor.size(0) > 1 and tensor.size(1) > 1


def muon_lr_scale(shape: Sequence[int]) -> float:
    """``0.2·sqrt(max(A, B))`` for the first two dims ``A, B`` (Moonlight's rule matching AdamW's update RMS)."""
    return 0.2 * math.sqrt(max(shape[0], shape[1]))


def orthogonalize_tensors(tensors: Sequence[torch.Tensor], method: Literal["newton-schulz", "svd"] = "newton-schulz",
                          ns_steps: int = 5) -> list[torch.Tensor]:
    """Orthogonal factors of matrix-criterion tensors, computed as batches of equally shaped tensors.

    ``'newton-schulz'``: each slice ``t[:, :, i, j, …]`` of a tensor with more than 2 dims is orthogonalized
    separately (``zeropower_via_newtonschulz5``). ``'svd'``: the tensor is reshaped to ``(size(0), −1)`` and
    replaced by ``UVᵀ`` (``svd_orthogonalize``).
    """
    out: list[torch.Tensor | None] = [None] * len(tensors)
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.shape, t.dtype, t.device), []).append(i)
    for idxs in groups.values():
        ts = [tensors[i] for i in idxs]
        shape = ts[0].shape
        if method == "newton-schulz":
            batch = torch.stack([t.movedim((0, 1), (-2, -1)) for t in ts])
            res = zeropower_via_newtonschulz5(batch, ns_steps)
            outs = [r.movedim((-2, -1), (0, 1)) for r in res.unbind(0)]
        elif method == "svd":
            batch = torch.stack([t.reshape(shape[0], -1) for t in ts])
            outs = [r.view(shape) for r in svd_orthogonalize(batch).unbind(0)]
        else:
            raise ValueError(f"unknown orthogonalization method {method!r}, expected one of {_METHODS}")
        for i, o in zip(idxs, outs):
            out[i] = o.contiguous()
    return out  # type: ignore[return-value]


def dual_norm_correction(X: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``⟨u, X⟩·X`` per slice over the first two dims (one value per ``(i, j, …)`` of the trailing dims)."""
    return (u * X).sum(dim=(0, 1), keepdim=True) * X


class Orthogonalize(Transform):
    """Muon's orthogonalization: replaces matrix-shaped updates by their orthogonal factor ``≈ UVᵀ``.

    Applies to tensors meeting the matrix criterion (``ndim ≥ 2``, ``size(0) > 1``, ``size(1) > 1``) whose
    per-parameter setting ``orthogonalize`` is True (the default; set it False in a parameter group to skip
    parameters); others pass unchanged.

    - ``'newton-schulz'``: ``X = M/‖M‖_F`` (transposed so rows ≤ cols) in bfloat16, then ``ns_steps`` times
      ``A = XXᵀ``, ``X ← aX + (bA + cA²)X`` with ``(a, b, c) = (3.4445, −4.7750, 2.0315)``; tensors with more than two
      dims are handled slice by slice (``u[:, :, i, j, …]``). Singular values land roughly in ``[0.6, 1.2]``.
    - ``'svd'``: the tensor reshaped to ``(size(0), −1)`` becomes ``UVᵀ`` exactly.

    Then optionally ``dual_norm_correction`` (``X ← ⟨u, X⟩·X`` per slice) and ``adjust_lr``
    (``X ← 0.2·sqrt(max(size(0), size(1)))·X``). Equally shaped tensors are orthogonalized as one batch.
    Muon = momentum (``HeavyBall``/``NAG``) → ``Orthogonalize`` → ``LR`` on hidden matrices, with another optimizer
    on the other parameters (e.g. through ``Split``).

    Numerical policy: the scaling to unit norm is exact at any magnitude and a zero update stays zero. With
    ``'svd'``, numerically zero singular values are dropped (rank-deficient updates give the partial isometry
    onto their range, the limit of the Newton–Schulz iteration, instead of arbitrary directions); an SVD that fails
    is retried in float64, then replaced by Newton–Schulz. NaN/inf in the update propagate to the output.

    Args:
        ns_steps: Newton–Schulz iterations. Defaults to 5.
        adjust_lr: scale by ``0.2·sqrt(max(size(0), size(1)))`` (see ``MuonAdjustLR``). Defaults to False.
        dual_norm_correction: scale by ``⟨u, X⟩`` per slice. Defaults to False.
        method: ``'newton-schulz'`` or ``'svd'``. Defaults to ``'newton-schulz'``.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        K. Jordan, Y. Jin, V. Boza, J. You, F. Cesista, L. Newhouse, J. Bernstein, "Muon: An optimizer for hidden
        layers in neural networks", 2024; SVD variant: M. Tuddenham, A. Prügel-Bennett, J. Hare, "Orthogonalising
        gradients to speed up neural network optimisation", 2022 (arXiv:2202.07052).

    Example:
        ```python
        hidden = [p for p in model.parameters() if p.ndim >= 2]
        opt = tz.Modular(model.parameters(),
                         tz.m.Split(hidden, true=[tz.m.NAG(0.95), tz.m.Orthogonalize(), tz.m.LR(2e-2)],
                                    false=[tz.m.Adam(), tz.m.LR(1e-3)]))
        ```
    """

    def __init__(self, ns_steps: int = 5, adjust_lr: bool = False, dual_norm_correction: bool = False,
                 method: Literal["newton-schulz", "svd"] = "newton-schulz", target: Target = "update"):
        name = "Orthogonalize"
        if not isinstance(ns_steps, int) or isinstance(ns_steps, bool) or ns_steps < 0:
            raise ValueError(f"{name}: ns_steps must be a non-negative integer, got {ns_steps!r}")
        method = method.lower() if isinstance(method, str) else method  # type: ignore[assignment]
        check_choice(name, "method", method, _METHODS)
        defaults = dict(orthogonalize=True, ns_steps=ns_steps, adjust_lr=adjust_lr,
                        dual_norm_correction=dual_norm_correction, method=method)
        super().__init__(defaults, target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        orth, ns_steps, adjust_lr, dnc, method = self.unpack_settings(
            settings, "orthogonalize", "ns_steps", "adjust_lr", "dual_norm_correction", "method")
        out = list(tensors)
        groups: dict[tuple, list[int]] = {}
        for i, t in enumerate(tensors):
            if orth[i] and is_matrix(t):
                groups.setdefault((method[i], ns_steps[i]), []).append(i)

        scaled: list[int] = []
        for (meth, steps), idxs in groups.items():
            Xs = orthogonalize_tensors([tensors[i] for i in idxs], meth, steps)
            for i, X in zip(idxs, Xs):
                out[i] = dual_norm_correction(X, tensors[i]) if dnc[i] else X
                if adjust_lr[i]:
                    scaled.append(i)
        if scaled:
            torch._foreach_mul_([out[i] for i in scaled], scalar_or_list([muon_lr_scale(out[i].shape) for i in scaled]))
        return out


class MuonAdjustLR(Transform):
    """Muon's learning-rate adjustment: multiplies matrix-shaped updates by ``alpha·0.2·sqrt(max(A, B))``.

    ``A, B`` are the first two dims; tensors that do not meet the matrix criterion (``ndim ≥ 2``, ``size(0) > 1``,
    ``size(1) > 1``) pass unchanged. This is the Moonlight rule that matches the update RMS of AdamW, the same
    scaling as ``Orthogonalize(adjust_lr=True)`` but placeable anywhere in the chain.

    Update rule: ``u ← alpha·0.2·sqrt(max(A, B))·u`` for matrices.

    Args:
        alpha: extra multiplier. Defaults to 1.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        J. Liu et al., "Muon is Scalable for LLM Training", 2025 (arXiv:2502.16982).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.NAG(0.95), tz.m.Orthogonalize(), tz.m.MuonAdjustLR(),
                         tz.m.LR(1e-3))
        ```
    """

    def __init__(self, alpha: float = 1, target: Target = "update"):
        check_range("MuonAdjustLR", "alpha", alpha)
        super().__init__(dict(alpha=alpha), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        alphas = self.unpack_settings(settings, "alpha")
        idxs = [i for i, t in enumerate(tensors) if is_matrix(t)]
        if idxs:
            torch._foreach_mul_([tensors[i] for i in idxs],
                                scalar_or_list([alphas[i] * muon_lr_scale(tensors[i].shape) for i in idxs]))
        return tensors
