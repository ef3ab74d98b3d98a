"""Warm-up schedules: ``Warmup`` (learning rate ramp) and ``WarmupNormClip`` (norm-clip ramp)."""
from __future__ import annotations

from typing import Any

from ...core import Transform
from ...utils.checks import check_non_negative
from ...utils.foreach import combine, scalar_or_list, scale_
from ..clipping.clipping import clip_norm_


def _check_steps(owner: str, steps: Any) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"{owner}: steps must be a non-negative int, got {steps!r}")


def warmup_factor(k: int, steps: int, start: float, end: float) -> float:
    """``start + (end − start)·min(k, steps)/steps`` (``end`` when ``steps = 0``)."""
    if steps == 0:
        return end
    return start + (end - start) * min(k, steps) / steps


class Warmup(Transform):
    """Linear learning-rate warm-up: multiplies the update by a factor that ramps from ``start_lr`` to ``end_lr``.

    ``u ← u·(start_lr + (end_lr − start_lr)·min(k, steps)/steps)``, where ``k = 0, 1, 2, …`` counts calls
    (``global_state['step']``); after ``steps`` calls the factor stays ``end_lr``. ``start_lr`` and ``end_lr`` are
    per-parameter settings.

    Args:
        steps: length of the ramp. Defaults to 100.
        start_lr: factor on the first call. Defaults to 1e-5.
        end_lr: factor from call ``steps`` on. Defaults to 1.

    Reference:
        P. Goyal et al., "Accurate, large minibatch SGD: training ImageNet in 1 hour", arXiv:1706.02677, 2017
        (gradual warm-up).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.Warmup(steps=1000), tz.m.LR(1e-3))
        ```
    """

    _readonly_input = False

    def __init__(self, steps: int = 100, start_lr: float = 1e-05, end_lr: float = 1):
        _check_steps("Warmup", steps)
        check_non_negative("Warmup", "start_lr", start_lr)
        check_non_negative("Warmup", "end_lr", end_lr)
        super().__init__(dict(steps=steps, start_lr=start_lr, end_lr=end_lr))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        k = self.global_state.get("step", 0)
        self.global_state["step"] = k + 1
        steps = settings[0]["steps"]
        start, end = self.unpack_settings(settings, "start_lr", "end_lr")
        factor = combine(scalar_or_list(start), scalar_or_list(end), lambda a, b: warmup_factor(k, steps, a, b))
        return scale_(tensors, factor)


class WarmupNormClip(Transform):
    """Norm-clipping warm-up: clips the global norm of the update to a bound that ramps from ``start_norm`` to
    ``end_norm``, then switches clipping off.

    For calls ``k = 0 … steps`` the update is rescaled to global (L2) norm
    ``m_k = start_norm + (end_norm − start_norm)·k/steps`` if its norm exceeds ``m_k``; after that the update passes
    through untouched and the counter (``global_state['step']``) stops.

    Args:
        steps: length of the ramp. Defaults to 100.
        start_norm: bound on the first call. Defaults to 1e-5.
        end_norm: bound on call ``steps``. Defaults to 1.

    Reference:
        none.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.WarmupNormClip(steps=100), tz.m.LR(1e-3))
        ```
    """

    _readonly_input = False

    def __init__(self, steps: int = 100, start_norm: float = 1e-05, end_norm: float = 1):
        _check_steps("WarmupNormClip", steps)
        check_non_negative("WarmupNormClip", "start_norm", start_norm)
        check_non_negative("WarmupNormClip", "end_norm", end_norm)
        super().__init__(dict(steps=steps, start_norm=start_norm, end_norm=end_norm))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        steps = s0["steps"]
        k = self.global_state.get("step", 0)
        if k > steps:
            return tensors
        self.global_state["step"] = k + 1
        return clip_norm_(tensors, warmup_factor(k, steps, s0["start_norm"], s0["end_norm"]), dim="global")
