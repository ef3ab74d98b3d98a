"""Accumulators: running sum, mean, product, maximum and minimum of the inputs.

Shared rules: ``decay`` (per parameter) only scales the output, ``(1 − decay)·state``; the stored state is never
decayed. State is per parameter and starts at zeros (ones for the product).
"""
from __future__ import annotations

import torch

from ...core import Target, Transform
from ...utils.foreach import combine, scalar_or_list


def _state(states: list[dict], tensors: list[torch.Tensor], key: str, init=torch.zeros_like) -> list[torch.Tensor]:
    return [s[key] if key in s else s.setdefault(key, init(t)) for s, t in zip(states, tensors)]


class _Accumulator(Transform):
    """Keeps ``state[key]`` updated by ``_accumulate_`` and outputs ``(1 − decay)·state``."""

    _readonly_input = True
    _key = ""

    def __init__(self, decay: float = 0, target: Target = "update"):
        super().__init__(dict(decay=decay), target=target)

    def _accumulate_(self, acc: list[torch.Tensor], tensors: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def _init(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def _output_scale(self) -> float:
        return 1.0

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        acc = _state(states, tensors, self._key, self._init)
        self._accumulate_(acc, tensors)
        scale = combine(1, scalar_or_list(self.unpack_settings(settings, "decay")), lambda a, b: a - b)
        scale = combine(scale, self._output_scale(), lambda a, b: a * b)
        return list(torch._foreach_mul(acc, scale))


class AccumulateSum(_Accumulator):
    """Running sum: ``sum ← sum + x``; output ``(1 − decay)·sum``.

    Args:
        decay: scales the output only (the stored sum is not decayed). Defaults to 0.
        target: what to transform. Defaults to ``'update'``.
    """

    _key = "sum"

    def _accumulate_(self, acc, tensors):
        torch._foreach_add_(acc, tensors)


class AccumulateMean(_Accumulator):
    """Running mean: ``mean ← mean + x`` (a running sum) with a step counter; output ``(1 − decay)·mean/step``.

    Args:
        decay: scales the output only. Defaults to 0.
        target: what to transform. Defaults to ``'update'``.
    """

    _key = "mean"

    def _accumulate_(self, acc, tensors):
        self.global_state["step"] = self.global_state.get("step", 0) + 1
        torch._foreach_add_(acc, tensors)

    def _output_scale(self) -> float:
        return 1 / self.global_state["step"]


class AccumulateProduct(_Accumulator):
    """Running product: ``prod ← prod·x`` starting from ones; output ``(1 − decay)·prod``.

    Args:
        decay: scales the output only. Defaults to 0.
        target: what to transform. Defaults to ``'update'``.
    """

    _key = "prod"

    def _init(self, t):
        return torch.ones_like(t)

    def _accumulate_(self, acc, tensors):
        torch._foreach_mul_(acc, tensors)


class AccumulateMaximum(_Accumulator):
    """Running elementwise maximum, starting from zeros (so never below 0); output ``(1 − decay)·maximum``.

    Args:
        decay: scales the output only. Defaults to 0.
        target: what to transform. Defaults to ``'update'``.
    """

    _key = "maximum"

    def _accumulate_(self, acc, tensors):
        torch._foreach_maximum_(acc, tensors)


class AccumulateMinimum(_Accumulator):
    """Running elementwise minimum, starting from zeros (so never above 0); output ``(1 − decay)·minimum``.

    Args:
        decay: scales the output only. Defaults to 0.
        target: what to transform. Defaults to ``'update'``.
    """

    _key = "minimum"

    def _accumulate_(self, acc, tensors):
        torch._foreach_minimum_(acc, tensors)
