"""SOAP: Adam in the eigenbasis of Shampoo's Kronecker factors."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...core import Transform
from ...utils.checks import check_non_negative, check_range
from ...utils.foreach import scalar_or_list
from ...utils.linalg.matrix_funcs import compute_dtype, eigh_safe
from ..momentum.momentum import ema_
from .adam import adam_denominator, adam_second_moment_
from .shampoo import _merge, _unmerge, factored_sizes, multiply_axes, update_factors_


def soap_eigenbases(factors: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Eigenvectors of each factor, columns in descending eigenvalue order (the initial SOAP bases).

    Computed in float32 for half-precision factors (cast back). A factor whose eigendecomposition fails even in
    float64, or is not finite, gets the identity.
    """
    bases: list[torch.Tensor | None] = []
    for F in factors:
        if F is None:
            bases.append(None)
            continue
        res = eigh_safe(F)
        if res is None:
            bases.append(torch.eye(F.shape[0], dtype=F.dtype, device=F.device))
        else:
            bases.append(res[1].flip(-1).to(F.dtype))
    return bases


def soap_refresh_bases_(factors: Sequence[torch.Tensor | None], bases_: list[torch.Tensor | None],
                        exp_avg_sq: torch.Tensor) -> torch.Tensor:
    """One power-iteration + QR refresh of each basis ``Qᵢ`` of ``factors`` ``GGᵢ``; returns ``exp_avg_sq`` with the
    matching permutation of each axis.

    For each factored axis: the columns of ``Qᵢ`` are ordered by the estimated eigenvalues ``diag(QᵢᵀGGᵢQᵢ)``
    (descending), the second moment is permuted along that axis in the same way, and ``Qᵢ ← qr(GGᵢ·Qᵢ,sorted).Q``.
    The QR runs in float32 for half-precision tensors and in the tensor's own precision otherwise. A refresh that
    gives non-finite values (non-finite statistics) leaves that axis's basis and ordering unchanged.
    """
    for i, (GG, Q) in enumerate(zip(factors, bases_)):
        if GG is None:
            continue
        assert Q is not None
        dtype = compute_dtype(GG.dtype)
        GG_c, Q_c = GG.to(dtype), Q.to(dtype)
        power = GG_c @ Q_c
        est_eig = (Q_c * power).sum(0)  # diag(Qᵀ GG Q)
        sort_idx = torch.argsort(est_eig, descending=True)
        Q_new, _ = torch.linalg.qr(power[:, sort_idx])
        if not bool(torch.isfinite(Q_new).all()):
            continue
        bases_[i] = Q_new.to(GG.dtype)
        exp_avg_sq = exp_avg_sq.index_select(i, sort_idx)
    return exp_avg_sq


class SOAP(Transform):
    """SOAP: Adam run in the eigenbasis of Shampoo's preconditioner.

    Per tensor (after ``merge_small``, as in ``Shampoo``), every axis with ``1 < s < max_dim`` has a factor ``GGᵢ``
    (state ``'GG'``, zeros) and a basis ``Qᵢ`` (state ``'Q'``). ``project`` multiplies each factored axis by
    ``Qᵢᵀ``, ``project_back`` by ``Qᵢ``.

    - First call: ``GGᵢ`` accumulated from ``u``, ``Qᵢ`` = eigenvectors of ``GGᵢ`` (descending eigenvalues), output
      ``clamp(u, −0.1, 0.1)``.
    - Later calls, ``k = 1, 2, …`` (state ``'step'``): ``ũ = project(u)``; ``m ← β₁ m + (1−β₁) u`` (``'exp_avg'``,
      original space); ``v ← β₂ v + (1−β₂) ũ²`` (``'exp_avg_sq_projected'``); output
      ``project_back(project(m) / (sqrt(v) + eps)) · alpha·sqrt(1−β₂ᵏ)/(1−β₁ᵏ)`` (``· alpha`` without
      ``bias_correction``). Then ``GGᵢ ← GGᵢ + U₍ᵢ₎U₍ᵢ₎ᵀ`` (EMA with ``shampoo_beta``), and every ``precond_freq``-th
      ``k`` each ``Qᵢ`` is refreshed by one power iteration + QR: columns ordered by ``diag(QᵢᵀGGᵢQᵢ)`` descending,
      ``v`` permuted along that axis to match, ``Qᵢ ← qr(GGᵢ Qᵢ).Q``.

    Tensors without a factored axis (0-d, 1-d with ``precondition_1d=False``, all axes of size 1 or ``≥ max_dim``) get
    plain Adam with the same formula. The elementwise Adam parts (``ema_``, ``adam_second_moment_``,
    ``adam_denominator``) are shared with ``Adam`` and run as one multi-tensor operation over all tensors; note that
    ``eps`` is added to ``sqrt(v)`` before the bias correction, as in the SOAP paper (``Adam`` uses torch's placement).

    Unlike the reference, an axis without a factor does not shift the later bases to the wrong axes (the reference
    raised a shape error for, e.g., a ``(1, n)`` tensor with ``merge_small=False``), and the QR refresh runs in
    float64 for float64 tensors (the reference always used float32).

    Numerical policy: bases are orthogonal matrices, so SOAP never inverts an ill-conditioned matrix. An
    eigendecomposition that fails is retried in float64 with a small jitter, then falls back to the identity; a QR
    refresh with non-finite values keeps the previous basis. NaN/inf in the update propagate to the output and the
    moments. With rank-deficient statistics in float32 (e.g. exactly rank-1 gradients), rounding puts components of
    size ``~eps·‖u‖`` in the null-space directions of the bases, which Adam's elementwise normalization scales up
    like any other coordinate when they exceed ``eps``: that is inherent to the algorithm; use float64 or a larger
    ``eps`` for such problems.

    Args:
        beta1: first moment decay. Defaults to 0.95.
        beta2: second moment decay. Defaults to 0.95.
        shampoo_beta: EMA factor of the Kronecker factors; None for sums. Defaults to 0.95.
        precond_freq: refresh the bases every ``precond_freq`` steps. Defaults to 10.
        merge_small: merge small dims, see ``Shampoo``. Defaults to True.
        max_dim: axes of this size or larger get no basis; also the merge limit. Defaults to 2000.
        precondition_1d: rotate 1-d tensors too (else they get plain Adam). Defaults to True.
        eps: added to the root of the second moment. Defaults to 1e-8.
        decay: accepted for compatibility, has no effect. Defaults to None.
        alpha: multiplier of the output. Defaults to 1.
        bias_correction: Adam's bias correction of the moments. Defaults to True.

    Reference:
        N. Vyas, D. Morwani, R. Zhao, I. Shapira, D. Brandfonbrener, L. Janson, S. Kakade, "SOAP: Improving and
        Stabilizing Shampoo using Adam", 2024 (arXiv:2409.11321).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.SOAP(), tz.m.LR(3e-3))
        ```
    """

    _readonly_input = True

    def __init__(self, beta1: float = 0.95, beta2: float = 0.95, shampoo_beta: float | None = 0.95,
                 precond_freq: int = 10, merge_small: bool = True, max_dim: int = 2000, precondition_1d: bool = True,
                 eps: float = 1e-8, decay: float | None = None, alpha: float = 1, bias_correction: bool = True):
        name = "SOAP"
        check_range(name, "beta1", beta1, 0, 1, high_inclusive=False)
        check_range(name, "beta2", beta2, 0, 1, high_inclusive=False)
        if shampoo_beta is not None:
            check_range(name, "shampoo_beta", shampoo_beta, 0, 1, high_inclusive=False)
        if not isinstance(precond_freq, int) or isinstance(precond_freq, bool) or precond_freq < 1:
            raise ValueError(f"{name}: precond_freq must be a positive integer, got {precond_freq!r}")
        if not isinstance(max_dim, int) or isinstance(max_dim, bool) or max_dim < 1:
            raise ValueError(f"{name}: max_dim must be a positive integer, got {max_dim!r}")
        check_non_negative(name, "eps", eps)
        check_range(name, "alpha", alpha)
        defaults = dict(beta1=beta1, beta2=beta2, shampoo_beta=shampoo_beta, precond_freq=precond_freq,
                        merge_small=merge_small, max_dim=max_dim, precondition_1d=precondition_1d, eps=eps,
                        decay=decay, alpha=alpha, bias_correction=bias_correction)
        super().__init__(defaults)

    @staticmethod
    def _init_state(merged: torch.Tensor, state: dict[str, Any], max_dim: int, precondition_1d: bool,
                    shampoo_beta: float | None) -> None:
        state["exp_avg"] = torch.zeros_like(merged)
        state["exp_avg_sq_projected"] = torch.zeros_like(merged)
        factored = factored_sizes(merged, max_dim, precondition_1d)
        if any(factored):
            GG = [torch.zeros(s, s, dtype=merged.dtype, device=merged.device) if f else None
                  for s, f in zip(merged.shape, factored)]
            update_factors_(merged, GG, shampoo_beta)
            state["GG"] = GG
            state["Q"] = soap_eigenbases(GG)
        else:
            state["GG"] = None
        state["step"] = 0

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        merge_small, max_dim, precondition_1d = s0["merge_small"], s0["max_dim"], s0["precondition_1d"]
        precond_freq, bias_correction = s0["precond_freq"], s0["bias_correction"]
        beta1s, beta2s, shampoo_betas, epss, alphas = self.unpack_settings(
            settings, "beta1", "beta2", "shampoo_beta", "eps", "alpha")

        out: list[torch.Tensor] = list(tensors)
        idx: list[int] = []  # tensors past their first call
        merged_list: list[torch.Tensor] = []
        for i, (t, state) in enumerate(zip(tensors, states)):
            merged = _merge(t, state, merge_small, max_dim)
            if "step" not in state:
                self._init_state(merged, state, max_dim, precondition_1d, shampoo_betas[i])
                out[i] = t.clamp(-0.1, 0.1)
                continue
            idx.append(i)
            merged_list.append(merged)
        if not idx:
            return out

        sts = [states[i] for i in idx]
        exp_avg = [s["exp_avg"] for s in sts]
        exp_avg_sq = [s["exp_avg_sq_projected"] for s in sts]
        projected = [u if s["GG"] is None else multiply_axes(u, s["Q"], transpose=True)
                     for u, s in zip(merged_list, sts)]
        beta1 = scalar_or_list([beta1s[i] for i in idx])
        beta2 = scalar_or_list([beta2s[i] for i in idx])
        ema_(merged_list, exp_avg, beta1, 0.0, lerp=True)
        adam_second_moment_(projected, exp_avg_sq, beta2)

        steps = []
        for s in sts:
            s["step"] += 1
            steps.append(s["step"])
        k = steps[0]
        denom = adam_denominator(exp_avg_sq, k, beta2, scalar_or_list([epss[i] for i in idx]), 2, debiased=False)
        numer = [m if s["GG"] is None else multiply_axes(m, s["Q"], transpose=True) for m, s in zip(exp_avg, sts)]
        upd = list(torch._foreach_div(numer, denom))
        if bias_correction:
            scales = [alphas[i] * (1 - beta2s[i] ** kk) ** 0.5 / (1 - beta1s[i] ** kk)
                      for i, kk in zip(idx, steps)]
        else:
            scales = [alphas[i] for i in idx]
        scale = scalar_or_list(scales)
        if isinstance(scale, list) or scale != 1:
            torch._foreach_mul_(upd, scale)

        for i, s, u_merged, v in zip(idx, sts, merged_list, upd):
            if s["GG"] is not None:
                v = multiply_axes(v, s["Q"], transpose=False)
            out[i] = _unmerge(v, s, merge_small)
            # statistics for the next basis, after the step (the current update was projected with the old basis)
            if s["GG"] is not None:
                update_factors_(u_merged, s["GG"], shampoo_betas[i])
                if s["step"] % precond_freq == 0:
                    s["exp_avg_sq_projected"] = soap_refresh_bases_(s["GG"], s["Q"], s["exp_avg_sq_projected"])
        return out
