"""Averages over a window of past updates: ``Averaging`` (mean), ``MedianAveraging`` (elementwise median) and
``WeightedAveraging`` (weighted sum divided by the count).

Each keeps, per tensor, a ``deque`` of copies of the last ``k`` inputs in the state key ``'history'`` (saved in
state dicts like any other state). The first ``k − 1`` steps use the inputs seen so far.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import torch

from ...core import Target, Transform
from ...utils.foreach import scalar_or_list


# ----------------------------------------------------------------------------------------------- functional
def _copy(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Fresh copies of ``tensors`` in one multi-tensor op (multiplication by 1 is exact, NaN and -0.0 included)."""
    return list(torch._foreach_mul(tensors, 1))


def push_history_(histories: list[deque], tensors: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """Appends copies of ``tensors`` to the per-tensor deques; returns the entries that fell out of full deques
    (None where a deque was not full)."""
    dropped: list[torch.Tensor | None] = [h[0] if len(h) == h.maxlen else None for h in histories]
    for h, t in zip(histories, _copy(tensors)):
        h.append(t)
    return dropped


def _groups_by_length(histories: Sequence[Sequence[Any]]) -> dict[int, list[int]]:
    """Indices of the histories grouped by their length (one group unless parameters were added later)."""
    groups: dict[int, list[int]] = {}
    for i, h in enumerate(histories):
        groups.setdefault(len(h), []).append(i)
    return groups


def history_sum_(out_: list[torch.Tensor], histories: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """Writes ``Σⱼ histories[i][j]`` into ``out_[i]`` (one multi-tensor add per stored step)."""
    torch._foreach_zero_(out_)
    longest = max((len(h) for h in histories), default=0)
    for j in range(longest):
        idx = [i for i, h in enumerate(histories) if len(h) > j]
        torch._foreach_add_([out_[i] for i in idx], [histories[i][j] for i in idx])
    return out_


def weighted_history_mean(histories: Sequence[Sequence[torch.Tensor]], weights: Sequence[float]
                          ) -> list[torch.Tensor]:
    """``(1/n)·Σᵢ wᵢ uᵢ`` over the ``n`` stored inputs of each tensor (oldest first), using the last ``n`` weights.
    Zero weights skip their input."""
    out: list[torch.Tensor | None] = [None] * len(histories)
    for n, idx in _groups_by_length(histories).items():
        acc: list[torch.Tensor] | None = None
        for j, w in enumerate(weights[len(weights) - n:]):
            if w == 0:
                continue
            entries = [histories[i][j] for i in idx]
            if acc is None:
                acc = list(torch._foreach_mul(entries, w / n))
            else:
                torch._foreach_add_(acc, entries, alpha=w / n)
        if acc is None:
            acc = [torch.zeros_like(histories[i][-1]) for i in idx]
        for i, a in zip(idx, acc):
            out[i] = a
    return out  # type: ignore[return-value]


_NETWORK_MAX_HISTORY = 8
"""Up to this many stored inputs the median uses a sorting network of multi-tensor min/max operations over all
tensors at once (``n(n−1)/2`` comparators); longer histories use one ``torch.sort`` per tensor."""


def _median_network(columns: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Median over ``columns`` (``columns[j]`` = the j-th stored input of every tensor) by odd-even transposition
    sort: ``n`` rounds of compare-exchanges sort ``n`` values; each comparator is one ``_foreach_minimum`` and one
    ``_foreach_maximum`` over all tensors. Min/max are exact and propagate NaN."""
    n = len(columns)
    cols = list(columns)
    for r in range(n):
        for i in range(r % 2, n - 1, 2):
            lo = list(torch._foreach_minimum(cols[i], cols[i + 1]))
            cols[i + 1] = list(torch._foreach_maximum(cols[i], cols[i + 1]))
            cols[i] = lo
    mid = (n - 1) // 2
    if n % 2 == 1:
        return cols[mid]  # fresh tensors: with n >= 2 every position took part in a comparison
    return list(torch._foreach_lerp(cols[mid], cols[mid + 1], 0.5))


def _median_sort(history: Sequence[torch.Tensor]) -> torch.Tensor:
    """Median of one tensor's stored inputs with ``torch.sort``; NaN anywhere in an element's window gives NaN,
    as in the sorting network."""
    n = len(history)
    ordered = torch.stack(tuple(history)).sort(dim=0).values  # NaN sorts last
    mid = (n - 1) // 2
    median = ordered[mid].clone() if n % 2 == 1 else torch.lerp(ordered[mid], ordered[mid + 1], 0.5)
    return median.masked_fill_(ordered[-1].isnan(), float("nan"))


def history_median(histories: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """Elementwise median of the stored inputs of each tensor: the 0.5 quantile with linear interpolation (the
    mean of the two middle values for an even count), as ``torch.quantile`` but without its size limit. An element
    whose window contains NaN is NaN."""
    out: list[torch.Tensor | None] = [None] * len(histories)
    for n, idx in _groups_by_length(histories).items():
        if n == 1:
            medians = _copy([histories[i][0] for i in idx])
        elif n <= _NETWORK_MAX_HISTORY:
            medians = _median_network([[histories[i][j] for i in idx] for j in range(n)])
        else:
            medians = [_median_sort(histories[i]) for i in idx]  # no multi-tensor sort exists
        for i, m in zip(idx, medians):
            out[i] = m
    return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------- helpers
def _check_history_size(owner: str, history_size: Any) -> None:
    if isinstance(history_size, bool) or not isinstance(history_size, int):
        raise TypeError(f"{owner}: history_size must be an int, got {type(history_size).__name__}")
    if history_size < 1:
        raise ValueError(f"{owner}: history_size must be at least 1, got {history_size}")


def _histories(states: list[dict[str, Any]], maxlen: int) -> tuple[list[deque], bool]:
    """The ``'history'`` deques of each state, created on first use. Returns them and whether any had to be
    rebuilt because ``maxlen`` changed (then only the newest ``maxlen`` entries are kept)."""
    out = []
    rebuilt = False
    for s in states:
        h = s.get("history")
        if h is None:
            h = s["history"] = deque(maxlen=maxlen)
        elif h.maxlen != maxlen:
            h = s["history"] = deque(h, maxlen=maxlen)
            rebuilt = True
        out.append(h)
    return out, rebuilt


# ----------------------------------------------------------------------------------------------- modules
class Averaging(Transform):
    """Mean of the last ``history_size`` updates.

    Output at step t: ``(1/n) Σ_{i=t−n+1..t} uᵢ`` with ``n = min(t, history_size)``.

    State: ``'history'`` (the last ``history_size`` inputs) and ``'average'`` (their running sum, updated by adding
    the newest and subtracting the dropped input). So that rounding errors of the running sum don't accumulate
    (which matters when the updates shrink by orders of magnitude), the sum is recomputed exactly from the history
    every ``history_size`` steps; that costs one extra add per step on average.

    Args:
        history_size: number of past inputs to average.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        moving (window) average; library-specific component.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Averaging(10), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, history_size: int, target: Target = "update"):
        _check_history_size("Averaging", history_size)
        super().__init__(dict(history_size=history_size), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        k = settings[0]["history_size"]
        step = self.global_state["step"] = self.global_state.get("step", 0) + 1
        histories, rebuilt = _histories(states, k)
        sums = [s["average"] if "average" in s else s.setdefault("average", torch.zeros_like(t))
                for s, t in zip(states, tensors)]

        dropped = push_history_(histories, tensors)
        if rebuilt or step % k == 0:
            history_sum_(sums, histories)
        else:
            full = [i for i, d in enumerate(dropped) if d is not None]
            if full:
                torch._foreach_sub_([sums[i] for i in full], [dropped[i] for i in full])  # type: ignore[misc]
            torch._foreach_add_(sums, [h[-1] for h in histories])
        return list(torch._foreach_div(sums, scalar_or_list([float(len(h)) for h in histories])))


class MedianAveraging(Transform):
    """Elementwise median of the last ``history_size`` updates.

    Output: for every element, the 0.5 quantile (linear interpolation) of its last ``n = min(t, history_size)``
    values: the middle value for odd ``n``, the mean of the two middle values for even ``n``. More robust to
    outliers than ``Averaging``; NaN is not treated as an outlier but propagates (an element whose window holds a
    NaN is NaN), as in the other modules. Up to 8 stored inputs the median is computed by a sorting network of
    multi-tensor min/max operations over all tensors at once, beyond that by one sort per tensor.

    Args:
        history_size: number of past inputs.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        library-specific component (median filter over the optimization history).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.MedianAveraging(5), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, history_size: int, target: Target = "update"):
        _check_history_size("MedianAveraging", history_size)
        super().__init__(dict(history_size=history_size), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        histories, _ = _histories(states, settings[0]["history_size"])
        push_history_(histories, tensors)
        return history_median(histories)


def _as_weight_list(weights: Any) -> list[float]:
    if isinstance(weights, torch.Tensor):
        if weights.ndim > 1:
            raise ValueError(f"WeightedAveraging: weights must be one-dimensional, got shape {tuple(weights.shape)}")
        values = weights.detach().cpu().reshape(-1).tolist()
    else:
        try:
            values = list(weights)
        except TypeError:
            raise TypeError(f"WeightedAveraging: weights must be a sequence of numbers, got "
                            f"{type(weights).__name__}") from None
    out = []
    for w in values:
        if isinstance(w, torch.Tensor) and w.numel() == 1:
            w = w.item()
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise TypeError(f"WeightedAveraging: weights must be real numbers, got {w!r}")
        if not math.isfinite(w):
            raise ValueError(f"WeightedAveraging: weights must be finite, got {w!r}")
        out.append(float(w))
    if not out:
        raise ValueError("WeightedAveraging: weights must not be empty")
    return out


class WeightedAveraging(Transform):
    """Weighted sum of the last ``len(weights)`` updates, divided by their count.

    ``weights`` are ordered oldest → newest. With ``n = min(t, len(weights))`` inputs stored, the output is
    ``(1/n) Σᵢ wᵢ uᵢ`` using the last ``n`` weights (the newest input gets the last weight). The division is by
    the count, not by the sum of the weights, so ``weights=[1, 1, 1]`` equals ``Averaging(3)``.

    Args:
        weights: the weights, oldest first (a sequence of numbers or a 1-D tensor, converted to a list).
        target: what to transform. Defaults to ``'update'``.

    Reference:
        library-specific component (weighted moving average).

    Example:
        ```python
        # linearly increasing weights over the last 4 updates
        opt = tz.Modular(model.parameters(), tz.m.WeightedAveraging([0.4, 0.8, 1.2, 1.6]), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, weights: Sequence[float] | torch.Tensor | Any, target: Target = "update"):
        super().__init__(dict(weights=_as_weight_list(weights)), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        weights = settings[0]["weights"]
        histories, _ = _histories(states, len(weights))
        push_history_(histories, tensors)
        return weighted_history_mean(histories, weights)
