"""Shampoo: Kronecker-factored full-matrix AdaGrad, and the tensor-factor helpers it shares with SOAP."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...core import Chainable, Transform
from ...utils.checks import check_non_negative, check_range
from ...utils.foreach import scalar_or_list
from ...utils.linalg.matrix_funcs import matrix_power_eigh_safe
from .adam import adam_second_moment_

# ------------------------------------------------------------------------------------------------------------------
# merging small dims
# ------------------------------------------------------------------------------------------------------------------


def merge_small_dims(tensor: torch.Tensor, max_dim: int) -> tuple[torch.Tensor, list[int] | None, list[int] | None]:
    """Permutes the dims of ``tensor`` into ascending size order (stable) and flattens the leading ones while
    their product stays ``≤ max_dim``.

    Returns ``(merged, flat_sizes, sort_idxs)``; ``unmerge_small_dims(merged, flat_sizes, sort_idxs)`` restores the
    original shape. A 0-d tensor, or one whose smallest dim exceeds ``max_dim``, is returned unchanged with
    ``flat_sizes = sort_idxs = None``. A tensor with at most ``max_dim`` elements becomes one vector.
    """
    if tensor.ndim == 0:
        return tensor, None, None
    shape = tensor.shape
    sort_idxs = sorted(range(tensor.ndim), key=lambda i: shape[i])
    if shape[sort_idxs[0]] > max_dim:
        return tensor, None, None
    tensor = tensor.permute(*sort_idxs)
    flat_sizes: list[int] = []
    numel = 1
    for size in tensor.shape:
        if numel * size > max_dim:
            break
        numel *= size
        flat_sizes.append(size)
    if len(flat_sizes) > 1:
        tensor = tensor.flatten(end_dim=len(flat_sizes) - 1)
    return tensor, flat_sizes, sort_idxs


def unmerge_small_dims(tensor: torch.Tensor, flat_sizes: Sequence[int] | None,
                       sort_idxs: Sequence[int] | None) -> torch.Tensor:
    """Inverse of ``merge_small_dims``."""
    if flat_sizes is None or sort_idxs is None:
        return tensor
    tensor = tensor.unflatten(0, tuple(flat_sizes))
    inverse = [0] * len(sort_idxs)
    for i, s in enumerate(sort_idxs):
        inverse[s] = i
    return tensor.permute(*inverse)


def _merge(tensor: torch.Tensor, state: dict[str, Any], merge_small: bool, max_dim: int) -> torch.Tensor:
    """Merges ``tensor`` if ``merge_small`` and records ``'flat_sizes'``/``'sort_idxs'`` in ``state``."""
    if not merge_small:
        return tensor
    merged, state["flat_sizes"], state["sort_idxs"] = merge_small_dims(tensor, max_dim)
    return merged


def _unmerge(tensor: torch.Tensor, state: dict[str, Any], merge_small: bool) -> torch.Tensor:
    if not merge_small:
        return tensor
    return unmerge_small_dims(tensor, state["flat_sizes"], state["sort_idxs"]).contiguous()


# ------------------------------------------------------------------------------------------------------------------
# Kronecker factors
# ------------------------------------------------------------------------------------------------------------------


def factored_sizes(tensor: torch.Tensor, max_dim: int, precondition_1d: bool) -> list[bool]:
    """Which axes of ``tensor`` get a factor: those with ``1 < size < max_dim`` (none for a 0-d tensor, or for a
    1-d one when ``precondition_1d`` is False)."""
    if tensor.ndim == 0 or (tensor.ndim == 1 and not precondition_1d):
        return [False] * tensor.ndim
    return [1 < s < max_dim for s in tensor.shape]


def update_factors_(tensor: torch.Tensor, factors_: Sequence[torch.Tensor | None], beta: float | None) -> None:
    """For each axis ``i`` with a factor: ``Fᵢ ← Fᵢ + T₍ᵢ₎T₍ᵢ₎ᵀ`` (``beta=None``) or ``Fᵢ ← β Fᵢ + (1−β) T₍ᵢ₎T₍ᵢ₎ᵀ``,
    where ``T₍ᵢ₎T₍ᵢ₎ᵀ`` contracts ``tensor`` with itself over all other axes."""
    ndim = tensor.ndim
    for i, F in enumerate(factors_):
        if F is None:
            continue
        axes = [a for a in range(ndim) if a != i]
        outer = torch.tensordot(tensor, tensor, dims=(axes, axes))
        if beta is None:
            F.add_(outer)
        else:
            F.lerp_(outer, 1 - beta)


def multiply_axes(tensor: torch.Tensor, mats: Sequence[torch.Tensor | None], transpose: bool) -> torch.Tensor:
    """Multiplies every axis ``i`` of ``tensor`` that has a matrix ``Mᵢ`` by it: each fiber ``x`` along axis ``i``
    becomes ``Mᵢx`` (or ``Mᵢᵀx`` with ``transpose``); axes whose matrix is None are left alone.

    Each axis is contracted at the front and its result moved to the back, so after all axes the original order is
    restored; an axis without a matrix is just moved (the reference skipped it without moving it, which applied
    every later factor to the wrong axis).
    """
    if len(mats) != tensor.ndim:
        raise ValueError(f"multiply_axes got {len(mats)} matrices for a tensor with {tensor.ndim} dims")
    for M in mats:
        if M is None:
            tensor = tensor.movedim(0, -1)
        else:
            tensor = torch.tensordot(tensor, M, dims=([0], [0 if transpose else 1]))
    return tensor


def _eye_like(size: int, ref: torch.Tensor) -> torch.Tensor:
    return torch.eye(size, dtype=ref.dtype, device=ref.device)


# ------------------------------------------------------------------------------------------------------------------
# Shampoo
# ------------------------------------------------------------------------------------------------------------------


def shampoo_eig_rtol(dtype: torch.dtype, exponent: float, n_factors: int) -> float:
    """Relative eigenvalue floor of Shampoo's inverse roots: ``eps^min(1, e/(2k))`` for root ``e`` and ``k``
    factored axes.

    Eigenvalues below ``eps·λ_max`` are rounding noise, so the floor is at least that. A component of the update
    lying in the (numerical) null space of all ``k`` factors is amplified by ``(λ_max/floor)^(k/e)`` relative to the
    leading direction; with this floor that is at most ``eps^(-1/2)``, so the ``eps``-sized rounding errors of the
    gradient in those directions stay ``≤ sqrt(eps)`` relative. With the paper's root ``e = 2·ndim`` (or one factor
    and ``e = 2``) the floor is ``eps``; with the default ``e = 2`` on a matrix it is ``sqrt(eps)`` (1.5e-8 in
    float64, 3.5e-4 in float32), where smaller eigenvalues have no correct digits in float32 anyway.
    """
    eps = torch.finfo(dtype).eps
    return eps ** min(1.0, exponent / (2 * max(n_factors, 1)))


def shampoo_preconditioners_(accumulators: Sequence[torch.Tensor | None],
                             preconditioners_: list[torch.Tensor | None], exponent: float, reg: float) -> None:
    """``Pᵢ ← (Aᵢ + reg·I)^(−1/exponent)`` for each factored axis.

    Eigenvalues are clipped from below to ``max(2·tiny, rtol·λ_max)`` with ``rtol = shampoo_eig_rtol(...)``; when
    the eigendecomposition fails even in float64 (or the accumulator is not finite) ``Pᵢ`` keeps its previous value.
    """
    n_factors = sum(A is not None for A in accumulators)
    for i, A in enumerate(accumulators):
        if A is None:
            continue
        if reg != 0:
            A = A + _eye_like(A.shape[0], A).mul_(reg)
        P = matrix_power_eigh_safe(A, -1 / exponent, rtol=shampoo_eig_rtol(A.dtype, exponent, n_factors))
        if P is not None:
            preconditioners_[i] = P


class Shampoo(Transform):
    """Shampoo: full-matrix AdaGrad with one Kronecker factor per tensor axis.

    Per tensor (after ``merge_small``, see below), every axis ``i`` with ``1 < sᵢ < max_dim`` has an accumulator
    ``Aᵢ`` and a preconditioner ``Pᵢ`` (state ``'accumulators'``, ``'preconditioners'``, both starting at the
    identity). Each step, from the incoming update ``u`` (matricized along axis ``i`` as ``U₍ᵢ₎``):

    - ``Aᵢ ← Aᵢ + U₍ᵢ₎U₍ᵢ₎ᵀ`` (or ``Aᵢ ← β Aᵢ + (1−β) U₍ᵢ₎U₍ᵢ₎ᵀ`` with ``beta``);
    - when the per-tensor counter ``'step'`` (from 0) is a multiple of ``update_freq``:
      ``Pᵢ = (Aᵢ + reg·I)^(−1/e)`` with ``e = exp_override``, or ``e = 2·ndim`` when it is None;
    - output: ``u' = inner(u)`` (or ``u``) with every factored axis multiplied by its ``Pᵢ``, i.e. for a matrix
      ``P₁ u' P₂``. With ``decay``, each ``Pᵢ`` is multiplied by ``decay`` after use.

    ``merge_small`` permutes the dims into ascending size order and flattens the leading ones while their product
    stays ``≤ max_dim`` (so a tensor with at most ``max_dim`` elements gets a single full-matrix preconditioner);
    state ``'flat_sizes'``, ``'sort_idxs'`` undo it. Tensors without a factored axis (0-d tensors, 1-d ones with
    ``precondition_1d=False``, or tensors whose axes all have size 1 or ``≥ max_dim``) use diagonal AdaGrad:
    ``'diagonal_accumulator'`` ``+u²`` (EMA with ``beta``), output ``u'/(sqrt(acc) + adagrad_eps)``, ``decay``
    scaling the accumulator. Shampoo is commonly grafted onto Adam's magnitude.

    Unlike the reference, an axis without a factor does not shift the later factors to the wrong axes, and a tensor
    with no factored axis gets the diagonal fallback instead of no preconditioning.

    Numerical policy: the inverse roots are computed by an eigendecomposition whose eigenvalues are clipped from
    below to ``max(2·tiny, rtol·λ_max)``, where ``rtol = eps^min(1, e/(2k))`` for ``k`` factored axes (``eps`` for the
    paper's root and for vectors, ``sqrt(eps)`` for matrices with the default ``e = 2``, see ``shampoo_eig_rtol``):
    rank-deficient accumulators (zero or rank-1 gradients, EMA with ``beta``) then give finite preconditioners, and
    rounding errors of the gradient in their joint null space are amplified to at most ``sqrt(eps)`` relative to
    the leading direction (the reference's floor of ``2·tiny`` amplifies them by up to ``1e19``). If the
    decomposition fails it is retried in float64 with a small jitter; if that also fails (or an accumulator is not
    finite) the previous preconditioner is kept. Gradients with NaN/inf propagate to that step's output (as in
    ``torch.optim``) and make the accumulators non-finite; the preconditioners then stay at their last finite value.
    The accumulators are sums of squares, so gradients whose squares overflow the dtype (``|g| ≳ 1e19`` in float32)
    overflow them.

    Args:
        decay: multiplier applied to the preconditioners (diagonal accumulator) after every use. Defaults to None.
        beta: EMA factor of the accumulators; None for AdaGrad-style sums. Defaults to None.
        reg: added to the diagonal of each accumulator before the inverse root. Defaults to 1e-12.
        update_freq: recompute the preconditioners every ``update_freq`` steps. Defaults to 10.
        exp_override: the root ``e`` of ``Pᵢ = Aᵢ^(−1/e)``; None for ``2·ndim`` (the paper's choice). Defaults
            to 2.
        merge_small: merge small dims as described above. Defaults to True.
        max_dim: axes of this size or larger are not preconditioned; also the merge limit. Defaults to 2000.
        precondition_1d: full-matrix preconditioning of 1-d tensors (else diagonal AdaGrad). Defaults to True.
        adagrad_eps: epsilon of the diagonal fallback. Defaults to 1e-8.
        inner: modules applied to the update before preconditioning (statistics still use the raw update).
            Defaults to None.

    Reference:
        V. Gupta, T. Koren, Y. Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization", ICML 2018.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Shampoo(update_freq=10), tz.m.LR(1e-2))
        # grafted onto Adam's update magnitude
        opt = tz.Modular(model.parameters(), tz.m.GraftModules(tz.m.Shampoo(), tz.m.Adam()), tz.m.LR(1e-3))
        ```
    """

    _readonly_input = True

    def __init__(self, decay: float | None = None, beta: float | None = None, reg: float = 1e-12,
                 update_freq: int = 10, exp_override: int | None = 2, merge_small: bool = True, max_dim: int = 2000,
                 precondition_1d: bool = True, adagrad_eps: float = 1e-8, inner: Chainable | None = None):
        name = "Shampoo"
        if decay is not None:
            check_non_negative(name, "decay", decay)
        if beta is not None:
            check_range(name, "beta", beta, 0, 1, high_inclusive=False)
        check_non_negative(name, "reg", reg)
        if not isinstance(update_freq, int) or isinstance(update_freq, bool) or update_freq < 1:
            raise ValueError(f"{name}: update_freq must be a positive integer, got {update_freq!r}")
        if exp_override is not None:
            check_range(name, "exp_override", exp_override, 0, low_inclusive=False)
        if not isinstance(max_dim, int) or isinstance(max_dim, bool) or max_dim < 1:
            raise ValueError(f"{name}: max_dim must be a positive integer, got {max_dim!r}")
        check_non_negative(name, "adagrad_eps", adagrad_eps)
        defaults = dict(decay=decay, beta=beta, reg=reg, update_freq=update_freq, exp_override=exp_override,
                        merge_small=merge_small, max_dim=max_dim, precondition_1d=precondition_1d,
                        adagrad_eps=adagrad_eps)
        super().__init__(defaults, inner=inner)

    def _init_state(self, merged: torch.Tensor, tensor: torch.Tensor, state: dict[str, Any], max_dim: int,
                    precondition_1d: bool) -> None:
        state["step"] = 0
        factored = factored_sizes(merged, max_dim, precondition_1d)
        if any(factored):
            state["accumulators"] = [_eye_like(s, merged) if f else None for s, f in zip(merged.shape, factored)]
            state["preconditioners"] = [_eye_like(s, merged) if f else None for s, f in zip(merged.shape, factored)]
        else:
            state["diagonal_accumulator"] = torch.zeros_like(tensor)

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        merge_small, max_dim, precondition_1d = s0["merge_small"], s0["max_dim"], s0["precondition_1d"]
        update_freq, exp_override = s0["update_freq"], s0["exp_override"]
        betas, regs = self.unpack_settings(settings, "beta", "reg")

        diag_sum: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        diag_ema: tuple[list[torch.Tensor], list[torch.Tensor], list[float]] = ([], [], [])
        for t, state, beta, reg in zip(tensors, states, betas, regs):
            merged = _merge(t, state, merge_small, max_dim)
            if "step" not in state:
                self._init_state(merged, t, state, max_dim, precondition_1d)
            if "diagonal_accumulator" in state:
                if beta is None:
                    diag_sum[0].append(t)
                    diag_sum[1].append(state["diagonal_accumulator"])
                else:
                    diag_ema[0].append(t)
                    diag_ema[1].append(state["diagonal_accumulator"])
                    diag_ema[2].append(beta)
                continue
            update_factors_(merged, state["accumulators"], beta)
            if state["step"] % update_freq == 0:
                exponent = 2 * merged.ndim if exp_override is None else exp_override
                shampoo_preconditioners_(state["accumulators"], state["preconditioners"], exponent, reg)

        if diag_sum[0]:
            torch._foreach_addcmul_(diag_sum[1], diag_sum[0], diag_sum[0])
        if diag_ema[0]:
            adam_second_moment_(diag_ema[0], diag_ema[1], scalar_or_list(diag_ema[2]))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        merge_small, max_dim, precondition_1d = s0["merge_small"], s0["max_dim"], s0["precondition_1d"]
        decays, epss = self.unpack_settings(settings, "decay", "adagrad_eps")

        out: list[torch.Tensor] = list(tensors)
        diag_idx: list[int] = []
        for i, (t, state, decay) in enumerate(zip(tensors, states, decays)):
            if "step" not in state:  # apply without a previous update: statistics start now
                self._init_state(_merge(t, state, merge_small, max_dim), t, state, max_dim, precondition_1d)
            if "diagonal_accumulator" in state:
                diag_idx.append(i)
            else:
                merged = _merge(t, state, merge_small, max_dim)
                preconditioners = state["preconditioners"]
                out[i] = _unmerge(multiply_axes(merged, preconditioners, transpose=False), state, merge_small)
                if decay is not None:
                    for P in preconditioners:
                        if P is not None:
                            P.mul_(decay)
            state["step"] += 1

        if diag_idx:
            accs = [states[i]["diagonal_accumulator"] for i in diag_idx]
            denom = torch._foreach_sqrt(accs)
            torch._foreach_add_(denom, scalar_or_list([epss[i] for i in diag_idx]))
            diag_out = torch._foreach_div([tensors[i] for i in diag_idx], denom)
            for i, o in zip(diag_idx, diag_out):
                out[i] = o
            decayed = [(states[i]["diagonal_accumulator"], decays[i]) for i in diag_idx if decays[i] is not None]
            if decayed:
                torch._foreach_mul_([a for a, _ in decayed], scalar_or_list([d for _, d in decayed]))
        return out
