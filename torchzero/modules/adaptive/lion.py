"""Lion: the sign of an interpolation between momentum and the update."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...core import Transform
from ...utils.checks import check_range
from ...utils.foreach import Scalars, combine, scalar_or_list


def lion_(tensors: Sequence[torch.Tensor], exp_avg_: list[torch.Tensor], beta1: Scalars, beta2: Scalars
          ) -> list[torch.Tensor]:
    """Returns ``sign(β₁ m + (1 − β₁) u)`` as new tensors, then updates ``m ← β₂ m + (1 − β₂) u`` in place."""
    out = list(torch._foreach_lerp(exp_avg_, tensors, combine(1, beta1, lambda a, b: a - b)))
    torch._foreach_sign_(out)
    torch._foreach_lerp_(exp_avg_, tensors, combine(1, beta2, lambda a, b: a - b))
    return out


class Lion(Transform):
    """Lion (EvoLved Sign Momentum): the sign of an interpolation between the momentum and the update.

    State ``'ema'`` m (zeros). Output ``sign(β₁ m + (1 − β₁) u)``, then ``m ← β₂ m + (1 − β₂) u``. There is no
    weight decay inside: put ``WeightDecay`` between ``Lion`` and ``LR`` for the decoupled form of the paper
    (``x ← x − lr·(sign(c) + λx)``). The output is a sign, so a much smaller ``LR`` than for SGD is used (3-10x
    smaller than AdamW's in the paper). Non-finite inputs are not checked; they propagate.

    Args:
        beta1: interpolation factor of the output (per-parameter). Defaults to 0.9.
        beta2: momentum factor (per-parameter). Defaults to 0.99.

    Reference:
        X. Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Lion(), tz.m.WeightDecay(1e-2), tz.m.LR(1e-4))
        ```
    """

    _readonly_input = True

    def __init__(self, beta1: float = 0.9, beta2: float = 0.99):
        check_range("Lion", "beta1", beta1, 0, 1)
        check_range("Lion", "beta2", beta2, 0, 1)
        super().__init__(dict(beta1=beta1, beta2=beta2))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        exp_avg = [s["ema"] if "ema" in s else s.setdefault("ema", torch.zeros_like(t)) for s, t in zip(states, tensors)]
        beta1, beta2 = self.unpack_settings(settings, "beta1", "beta2")
        return lion_(tensors, exp_avg, scalar_or_list(beta1), scalar_or_list(beta2))
