"""Clipping and normalization of the update: by value, by norm (per tensor, per slice or global)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypeAlias

import torch

from ...core import Target, Transform
from ...utils.foreach import scalar_or_list
from ...utils.tensorlist import Metrics, TensorList

Dim: TypeAlias = int | Sequence[int] | Literal["global"] | None

_NORM_ORDS = {"l0": 0.0, "l1": 1.0, "l2": 2.0, "l3": 3.0, "l4": 4.0, "linf": math.inf}
_TINY_NORM = 1e-12


def _as_ord(metric: Metrics) -> float | None:
    """The p of a p-norm metric, or None for the statistics ('mad', 'std', 'var', 'sum')."""
    if isinstance(metric, str):
        if metric in _NORM_ORDS:
            return _NORM_ORDS[metric]
        if metric in ("mad", "std", "var", "sum"):
            return None
        raise ValueError(f"unknown metric {metric!r}")
    return float(metric)


def tensor_metric(t: torch.Tensor, metric: Metrics, dim: tuple[int, ...] | None = None,
                  keepdim: bool = False) -> torch.Tensor:
    """``metric`` of ``t`` over ``dim`` (all dims if None): a p-norm, or 'mad' (mean |x|), 'std', 'var', 'sum'."""
    ord_ = _as_ord(metric)
    if ord_ is not None:
        return torch.linalg.vector_norm(t, ord=ord_, dim=dim, keepdim=keepdim)
    if metric == "mad":
        return t.abs().mean(dim=dim, keepdim=keepdim)
    if metric == "std":
        return t.std(dim=dim, keepdim=keepdim)
    if metric == "var":
        return t.var(dim=dim, keepdim=keepdim)
    return t.sum(dim=dim, keepdim=keepdim)


def _reduced_dims(ndim: int, dim: int | Sequence[int], inverse_dims: bool) -> tuple[int, ...]:
    dims = [dim] if isinstance(dim, int) else list(dim)
    dims = sorted({d % ndim if d < 0 else d for d in dims if -ndim <= d < ndim})
    if inverse_dims:
        dims = [d for d in range(ndim) if d not in dims]
    return tuple(dims)


def _norm_multipliers(tensors: list[torch.Tensor], target: float | list[float], ord: Metrics, dim: Dim,
                      inverse_dims: bool, min_size: int, clip: bool) -> list[torch.Tensor | float]:
    """Per-tensor (possibly per-slice) multipliers ``target / ‖slice‖`` (capped at 1 when ``clip``)."""
    n = len(tensors)
    targets = target if isinstance(target, list) else [target] * n

    if dim is None:
        norms = torch.stack(TensorList(tensors).metric(ord))
        norms = torch.where(norms <= _TINY_NORM, torch.ones_like(norms), norms)
        factors = torch.tensor(targets, dtype=norms.dtype, device=norms.device) / norms
        if clip:
            factors = factors.clamp(max=1)
        if min_size > 1:
            small = torch.tensor([max(t.numel(), 1) < min_size for t in tensors], device=norms.device)
            factors = torch.where(small, torch.ones_like(factors), factors)
        return list(factors.unbind())

    out: list[torch.Tensor | float] = []
    for t, tgt in zip(tensors, targets):
        view = t.view(1) if t.ndim == 0 else t
        dims = _reduced_dims(view.ndim, dim, inverse_dims)  # type: ignore[arg-type]
        size = math.prod(view.shape[d] for d in dims) if dims else 1
        if size < min_size or len(dims) == 0:
            out.append(1.0)
            continue
        norm = tensor_metric(view, ord, dim=dims, keepdim=True)
        norm = torch.where(norm <= _TINY_NORM, torch.ones_like(norm), norm)
        factor = tgt / norm
        if clip:
            factor = factor.clamp(max=1)
        out.append(factor.view_as(t) if t.ndim == 0 else factor)
    return out


def _apply_multipliers(tensors: list[torch.Tensor], factors: list[torch.Tensor | float], inplace: bool
                       ) -> list[torch.Tensor]:
    """``tensors * factors`` per tensor (0-d tensor, broadcastable tensor or 1.0), in place or as new tensors."""
    if all(isinstance(f, torch.Tensor) and f.ndim == 0 for f in factors):
        if inplace:
            torch._foreach_mul_(tensors, factors)  # type: ignore[arg-type]
            return tensors
        return list(torch._foreach_mul(tensors, factors))  # type: ignore[arg-type]
    out = []
    for t, f in zip(tensors, factors):
        if isinstance(f, float) and f == 1.0:
            out.append(t if inplace else t.clone())
        else:
            out.append(t.mul_(f) if inplace else t * f)
    return out


def _scale_all(tensors: list[torch.Tensor], factor: torch.Tensor, inplace: bool) -> list[torch.Tensor]:
    factors = list(factor.unbind()) if factor.ndim else factor
    if inplace:
        torch._foreach_mul_(tensors, factors)
        return tensors
    return list(torch._foreach_mul(tensors, factors))


def clip_norm(tensors: list[torch.Tensor], max_norm: float | list[float], ord: Metrics = 2, dim: Dim = None,
              inverse_dims: bool = False, min_size: int = 1, inplace: bool = False) -> list[torch.Tensor]:
    """Multiplies each slice of ``tensors`` by ``min(1, max_norm / ‖slice‖_ord)`` (in place if ``inplace``)."""
    if dim == "global":
        norm = TensorList(tensors).global_metric(ord)
        factor = (torch.as_tensor(max_norm, dtype=norm.dtype, device=norm.device) / norm).clamp(max=1)
        factor = torch.where(norm == 0, torch.ones_like(factor), factor)
        return _scale_all(tensors, factor, inplace)
    return _apply_multipliers(tensors, _norm_multipliers(tensors, max_norm, ord, dim, inverse_dims, min_size,
                                                         clip=True), inplace)


def normalize(tensors: list[torch.Tensor], norm_value: float | list[float], ord: Metrics = 2, dim: Dim = None,
              inverse_dims: bool = False, min_size: int = 1, inplace: bool = False) -> list[torch.Tensor]:
    """Multiplies each slice of ``tensors`` by ``norm_value / ‖slice‖_ord`` (in place if ``inplace``)."""
    if dim == "global":
        norm = TensorList(tensors).global_metric(ord)
        factor = torch.as_tensor(norm_value, dtype=norm.dtype, device=norm.device) / norm
        factor = torch.where(norm == 0, torch.ones_like(factor), factor)
        return _scale_all(tensors, factor, inplace)
    return _apply_multipliers(tensors, _norm_multipliers(tensors, norm_value, ord, dim, inverse_dims, min_size,
                                                         clip=False), inplace)


def _check_dim(owner: str, dim: Dim, min_size: int) -> None:
    if not (dim is None or dim == "global" or isinstance(dim, int)
            or (isinstance(dim, Sequence) and not isinstance(dim, str) and all(isinstance(d, int) for d in dim))):
        raise ValueError(f"{owner}: dim must be None, an int, a sequence of ints or 'global', got {dim!r}")
    if min_size < 0:
        raise ValueError(f"{owner}: min_size must be non-negative, got {min_size}")


class ClipValue(Transform):
    """Clips the update elementwise to ``[-value, value]``.

    ``u ← clamp(u, −value, value)``. First in the chain this equals ``torch.nn.utils.clip_grad_value_``.

    Args:
        value: the bound (per-parameter setting, non-negative).
        target: what to transform. Defaults to ``'update'``.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.ClipValue(1.0), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, value: float, target: Target = "update"):
        if value < 0:
            raise ValueError(f"ClipValue: value must be non-negative, got {value}")
        super().__init__(dict(value=value), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        value = scalar_or_list(self.unpack_settings(settings, "value"))
        neg = [-v for v in value] if isinstance(value, list) else -value
        torch._foreach_clamp_min_(tensors, neg)
        torch._foreach_clamp_max_(tensors, value)
        return tensors


class ClipNorm(Transform):
    """Clips the norm of the update: each slice is multiplied by ``min(1, max_norm / ‖slice‖_ord)``.

    Slices: ``dim=None`` → each tensor over all of its dims; an int or sequence → over those dims (indices
    ≥ ndim are ignored; one norm per remaining index); ``inverse_dims=True`` → over the complementary dims;
    ``'global'`` → all parameters as one vector (no change when that norm is 0). A tensor is skipped when the
    number of elements in a slice is below ``min_size``; 0-d tensors count as shape ``(1,)``. Norms ≤ 1e-12
    are treated as 1. ``ClipNorm(m, dim='global')`` first in the chain equals
    ``torch.nn.utils.clip_grad_norm_(params, m)`` (up to torch's 1e-6 offset of the denominator).

    Args:
        max_norm: the maximal norm (per-parameter setting).
        ord: the norm or metric: a p-norm order or 'l0'…'l4', 'linf', or 'mad', 'std', 'var', 'sum'. Defaults to 2.
        dim: slicing, see above. Defaults to None.
        inverse_dims: reduce over the complement of ``dim``. Defaults to False.
        min_size: minimal slice size to clip. Defaults to 1.
        target: what to transform. Defaults to ``'update'``.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.ClipNorm(1.0, dim="global"), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    _readonly_input = True

    def __init__(self, max_norm: float, ord: Metrics = 2, dim: Dim = None, inverse_dims: bool = False,
                 min_size: int = 1, target: Target = "update"):
        if max_norm < 0:
            raise ValueError(f"ClipNorm: max_norm must be non-negative, got {max_norm}")
        _as_ord(ord) if not isinstance(ord, torch.Tensor) else None
        _check_dim("ClipNorm", dim, min_size)
        super().__init__(dict(max_norm=max_norm, ord=ord, dim=dim, inverse_dims=inverse_dims, min_size=min_size),
                         target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        max_norm = scalar_or_list(self.unpack_settings(settings, "max_norm"))
        return clip_norm(tensors, max_norm, ord=s0["ord"], dim=s0["dim"], inverse_dims=s0["inverse_dims"],
                          min_size=s0["min_size"])


class Normalize(Transform):
    """Normalizes the update: each slice is multiplied by ``norm_value / ‖slice‖_ord``.

    Slicing and the handling of tiny norms are as in ``ClipNorm``; with ``dim='global'`` everything is multiplied
    by ``norm_value / global norm``, and an all-zero update is left unchanged (rather than producing NaN).

    Args:
        norm_value: the target norm (per-parameter setting). Defaults to 1.
        ord: the norm or metric, as in ``ClipNorm``. Defaults to 2.
        dim: slicing. Defaults to None (each tensor).
        inverse_dims: reduce over the complement of ``dim``. Defaults to False.
        min_size: minimal slice size to normalize. Defaults to 1.
        target: what to transform. Defaults to ``'update'``.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Normalize(1.0), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, norm_value: float = 1, ord: Metrics = 2, dim: Dim = None, inverse_dims: bool = False,
                 min_size: int = 1, target: Target = "update"):
        _as_ord(ord) if not isinstance(ord, torch.Tensor) else None
        _check_dim("Normalize", dim, min_size)
        super().__init__(dict(norm_value=norm_value, ord=ord, dim=dim, inverse_dims=inverse_dims,
                              min_size=min_size), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        norm_value = scalar_or_list(self.unpack_settings(settings, "norm_value"))
        return normalize(tensors, norm_value, ord=s0["ord"], dim=s0["dim"], inverse_dims=s0["inverse_dims"],
                          min_size=s0["min_size"])


def clip_norm_(tensors: list[torch.Tensor], max_norm: float | list[float], ord: Metrics = 2, dim: Dim = None,
               inverse_dims: bool = False, min_size: int = 1) -> list[torch.Tensor]:
    """``clip_norm`` in place."""
    return clip_norm(tensors, max_norm, ord, dim, inverse_dims, min_size, inplace=True)


def normalize_(tensors: list[torch.Tensor], norm_value: float | list[float], ord: Metrics = 2, dim: Dim = None,
               inverse_dims: bool = False, min_size: int = 1) -> list[torch.Tensor]:
    """``normalize`` in place."""
    return normalize(tensors, norm_value, ord, dim, inverse_dims, min_size, inplace=True)
