"""MARS variance-reduction correction."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...core import Transform
from ...utils.checks import check_non_negative, check_positive, check_range
from ...utils.foreach import Scalars, combine, scalar_or_list
from ..clipping.clipping import clip_norm_


def mars_correction_(tensors: Sequence[torch.Tensor], prev_: list[torch.Tensor], beta: Scalars, scaling: Scalars,
                     max_norm: float | None) -> list[torch.Tensor]:
    """Returns ``c = u + scaling·β/(1 − β)·(u − prev)`` as new tensors (global L2 norm clipped to ``max_norm``),
    and sets ``prev ← u``."""
    # u + k (u - prev) = lerp(prev, u, 1 + k)
    weight = combine(beta, scaling, lambda b, s: 1 + s * b / (1 - b))
    out = list(torch._foreach_lerp(prev_, tensors, weight))
    torch._foreach_copy_(prev_, tensors)
    if max_norm is not None:
        clip_norm_(out, max_norm, dim="global")
    return out


class MARSCorrection(Transform):
    """MARS correction: adds a scaled difference of consecutive updates (variance reduction), to be placed before a
    momentum-based optimizer whose momentum equals ``beta``.

    State ``'prev'``, initialised to the first input (so the first correction is 0).
    ``c = u + scaling·β/(1 − β)·(u − prev)``, ``prev ← u``; if ``max_norm`` is set, ``c`` is scaled so that its global
    L2 norm is at most ``max_norm``. With the defaults the second output is ``u₂ + 0.225·(u₂ − u₁)``.

    Args:
        beta: momentum of the following optimizer (per-parameter). Defaults to 0.9.
        scaling: γ, the weight of the correction (per-parameter). Defaults to 0.025.
        max_norm: bound on the global norm of the corrected update, or None (global: first parameter's
            setting). Defaults to 1.

    Reference:
        H. Yuan, Y. Liu, S. Wu, X. Zhou, Q. Gu, "MARS: Unleashing the Power of Variance Reduction for Training Large
        Models", 2024 (arXiv:2411.10438).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.MARSCorrection(beta=0.95), tz.m.Adam(0.95), tz.m.LR(1e-3))
        ```
    """

    _readonly_input = True

    def __init__(self, beta: float = 0.9, scaling: float = 0.025, max_norm: float | None = 1):
        check_range("MARSCorrection", "beta", beta, 0, 1, high_inclusive=False)
        check_non_negative("MARSCorrection", "scaling", scaling)
        if max_norm is not None:
            check_positive("MARSCorrection", "max_norm", max_norm)
        super().__init__(dict(beta=beta, scaling=scaling, max_norm=max_norm))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        if "prev" not in states[0]:
            for s, t in zip(states, tensors):
                s["prev"] = t.clone()
        beta, scaling = self.unpack_settings(settings, "beta", "scaling")
        return mars_correction_(tensors, [s["prev"] for s in states], scalar_or_list(beta), scalar_or_list(scaling),
                                settings[0]["max_norm"])
