"""Centralization: subtracting the mean of each slice of the update (gradient centralization)."""
from __future__ import annotations

import math

import torch

from ...core import Target, Transform
from ...utils.tensorlist import TensorList
from .clipping import Dim, _check_dim, _reduced_dims


def centralize_(tensors_: list[torch.Tensor], dim: Dim = None, inverse_dims: bool = False,
                min_size: int = 2) -> list[torch.Tensor]:
    """Subtracts the mean of each slice of ``tensors_`` in place and returns them.

    Slices follow the shared slicing rules: ``dim=None`` → each tensor over all of its dims; an int or a sequence →
    over those dims (indices ≥ ndim ignored, one mean per remaining index); ``inverse_dims`` → over the
    complementary dims; ``'global'`` → one mean over all elements of all tensors. A tensor (or, for ``'global'``,
    everything) is left alone when its slices have fewer than ``min_size`` elements; 0-d tensors count as shape
    ``(1,)``. A slice of a single element centralizes to 0 (only reachable with ``min_size <= 1``).
    """
    if dim == "global":
        tl = TensorList(tensors_)
        numel = tl.global_numel()
        if numel == 0 or numel < min_size:
            return tensors_
        torch._foreach_add_(tensors_, tl.global_sum().div_(numel).neg_())
        return tensors_

    if dim is None:
        selected = [t for t in tensors_ if t.numel() >= max(min_size, 1)]
        if selected:
            # no multi-tensor mean exists: one reduction per tensor, then one multi-tensor subtraction
            torch._foreach_sub_(selected, [t.mean() for t in selected])
        return tensors_

    for t in tensors_:
        view = t.view(1) if t.ndim == 0 else t
        dims = _reduced_dims(view.ndim, dim, inverse_dims)  # type: ignore[arg-type]
        size = math.prod(view.shape[d] for d in dims)
        if size < min_size or t.numel() == 0:
            continue
        if len(dims) == 0:  # every slice is one element (torch.mean over dim=() would reduce everything)
            t.zero_()
        else:
            view.sub_(view.mean(dim=dims, keepdim=True))
    return tensors_


class Centralize(Transform):
    """Centralizes the update: subtracts the mean of each slice.

    ``u ← u − mean(u)`` over the reduced dims: ``dim=None`` → each tensor over all of its own dims; an int or a
    sequence → over those dims (indices ≥ ndim are ignored, one mean per index of the other dims);
    ``inverse_dims=True`` → over the complementary dims; ``'global'`` → the scalar mean of all elements of all
    parameters. Slices with fewer than ``min_size`` elements are left alone (the default 2 keeps single elements
    such as 0-d tensors and biases of size 1 from being zeroed). Gradient centralization (GC) of an
    ``(out, in, ...)`` weight, which removes the mean over each output unit's fan-in, is
    ``Centralize(dim=0, inverse_dims=True)``.

    Args:
        dim: the dims to reduce, or ``'global'``, or None (each whole tensor). Defaults to None.
        inverse_dims: reduce over the dims not in ``dim``. Defaults to False.
        min_size: minimal number of elements of a slice. Defaults to 2.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        H. Yong, J. Huang, X. Hua, L. Zhang, "Gradient Centralization: A New Optimization Technique for Deep
        Neural Networks", ECCV 2020.

    Example:
        ```python
        # gradient centralization before Adam
        opt = tz.Modular(model.parameters(), tz.m.Centralize(dim=0, inverse_dims=True), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, dim: Dim = None, inverse_dims: bool = False,
                 min_size: int = 2, target: Target = "update"):
        _check_dim("Centralize", dim, min_size)
        super().__init__(dict(dim=dim, inverse_dims=inverse_dims, min_size=min_size), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        return centralize_(tensors, dim=s0["dim"], inverse_dims=s0["inverse_dims"], min_size=s0["min_size"])
