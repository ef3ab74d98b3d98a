"""Clipping and normalization relative to an exponential moving average of past updates: ``ClipNormByEMA``,
``NormalizeByEMA`` (norms) and ``ClipValueByEMA`` (elementwise magnitudes).

Statistics are updated from the incoming update ``u`` (the update phase); the result is applied to ``inner(u)``
when ``inner`` is given, else to ``u`` (the apply phase). NaN/inf: they propagate — a non-finite update makes the
EMA (and so every later output) non-finite, as for any moving average; check the update upstream (e.g. with
``NanToNum``) if that can happen.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from ...core import Chainable, Transform, apply_transform
from ...utils.checks import check_choice, check_non_negative, check_positive, check_range
from ...utils.foreach import Scalars, scalar_or_list
from ...utils.tensorlist import Metrics, TensorList
from ..momentum.momentum import ema_
from .clipping import _as_ord

_MIN_ALLOWED_NORM = 1e-6
"""Floor of the growth-limited EMA norm, so that an EMA that was (nearly) zero can grow again."""


# ----------------------------------------------------------------------------------------------- functional
def update_ema_(states: list[dict[str, Any]], tensors: Sequence[torch.Tensor], beta: Scalars,
                ema_init: Literal["zeros", "update"], key: str = "ema") -> list[torch.Tensor]:
    """Updates the buffers ``state[key]`` with ``m ← β m + (1 − β) t`` and returns them.

    A missing buffer starts at zeros (``ema_init='zeros'``, then the rule is applied) or at a copy of ``t``
    (``ema_init='update'``, without the rule on that step).
    """
    buffers: list[torch.Tensor] = []
    blend: list[int] = []
    for i, (s, t) in enumerate(zip(states, tensors)):
        if key in s:
            blend.append(i)
        elif ema_init == "update":
            s[key] = t.clone()
        else:
            s[key] = torch.zeros_like(t)
            blend.append(i)
        buffers.append(s[key])
    if len(blend) == len(buffers):
        ema_(list(tensors), buffers, beta, 0, lerp=True)
    elif blend:
        b = [beta[i] for i in blend] if isinstance(beta, list) else beta
        ema_([tensors[i] for i in blend], [buffers[i] for i in blend], b, 0, lerp=True)
    return buffers


def _as_tensor(value: Scalars, like: torch.Tensor) -> float | torch.Tensor:
    """A per-tensor list as a vector on ``like``'s device (to broadcast against a vector of per-tensor norms)."""
    if isinstance(value, list):
        return torch.tensor(value, dtype=like.dtype, device=like.device)
    return value


def _norms(tensors: Sequence[torch.Tensor], ord: Metrics, tensorwise: bool) -> torch.Tensor:
    """A vector of per-tensor ``ord`` metrics (``tensorwise``), or the 0-d global metric."""
    tl = TensorList(tensors)
    if tensorwise:
        return torch.stack(list(tl.metric(ord)))
    return tl.global_metric(ord)


def _scale_(tensors_: list[torch.Tensor], scale: torch.Tensor) -> None:
    """Multiplies ``tensors_`` in place by a 0-d tensor, or tensor ``i`` by ``scale[i]`` for a vector."""
    if scale.ndim == 0:
        torch._foreach_mul_(tensors_, scale)
    else:
        torch._foreach_mul_(tensors_, list(scale.unbind()))


def limit_ema_growth_(exp_avg_: list[torch.Tensor], ema_norm: torch.Tensor, prev_norm: torch.Tensor,
                      max_ema_growth: float | torch.Tensor) -> torch.Tensor:
    """Limits the EMA norm to ``allowed = max(prev_norm · max_ema_growth, 1e-6)``: where ``ema_norm`` exceeds it,
    the EMA buffer (per tensor for vector norms, all of it for a 0-d norm) is scaled down in place so that its norm
    is ``allowed``. Returns the limited norms, which become the next ``prev_norm``."""
    allowed = (prev_norm * max_ema_growth).clamp_min(_MIN_ALLOWED_NORM)
    exceeded = ema_norm > allowed
    _scale_(exp_avg_, torch.where(exceeded, allowed / ema_norm, 1.0))
    return torch.where(exceeded, allowed, ema_norm)


def ema_norm_divisor(update_norm: torch.Tensor, ema_norm: torch.Tensor, eps: float | torch.Tensor,
                     clip: bool) -> torch.Tensor:
    """``‖u‖ / max(‖ema‖, eps)``, floored at 1 (``clip``: the output norm never exceeds the EMA norm) or at eps
    (normalize: the output norm is set to the EMA norm)."""
    ratio = update_norm / ema_norm.clamp_min(eps)
    return ratio.clamp_min(1.0) if clip else ratio.clamp_min(eps)


# ----------------------------------------------------------------------------------------------- norm modules
class _EMANormBase(Transform):
    """``ClipNormByEMA`` and ``NormalizeByEMA``: they differ in the floor of the divisor."""

    _clip: bool = True

    def __init__(self, beta: float, ord: Metrics, eps: float, tensorwise: bool, max_ema_growth: float | None,
                 ema_init: Literal["zeros", "update"], inner: Chainable | None):
        name = type(self).__name__
        check_range(name, "beta", beta, 0, 1)
        if not isinstance(ord, torch.Tensor):
            try:
                _as_ord(ord)
            except (ValueError, TypeError):
                raise ValueError(f"{name}: unknown ord {ord!r}") from None
        check_non_negative(name, "eps", eps)
        if max_ema_growth is not None:
            check_positive(name, "max_ema_growth", max_ema_growth)
        check_choice(name, "ema_init", ema_init, ("zeros", "update"))
        defaults = dict(beta=beta, ord=ord, eps=eps, tensorwise=tensorwise, max_ema_growth=max_ema_growth,
                        ema_init=ema_init)
        super().__init__(defaults, inner=inner)

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        tensorwise = s0["tensorwise"]
        beta, eps = self.unpack_settings(settings, "beta", "eps")
        exp_avg = update_ema_(states, tensors, scalar_or_list(beta), s0["ema_init"])

        ema_norm = _norms(exp_avg, s0["ord"], tensorwise)
        update_norm = _norms(tensors, s0["ord"], tensorwise)
        if tensorwise:
            eps_ = _as_tensor(scalar_or_list(eps), ema_norm)
        else:
            eps_ = s0["eps"]

        if s0["max_ema_growth"] is not None:
            if tensorwise:
                growth = _as_tensor(scalar_or_list(self.unpack_settings(settings, "max_ema_growth")), ema_norm)
                prev = torch.stack([s["prev_ema_norm"] if "prev_ema_norm" in s else n
                                    for s, n in zip(states, ema_norm.unbind())])
            else:
                growth = s0["max_ema_growth"]
                prev = self.global_state.get("prev_ema_norm", ema_norm)
            ema_norm = limit_ema_growth_(exp_avg, ema_norm, prev, growth)
            if tensorwise:
                for s, n in zip(states, ema_norm.unbind()):
                    s["prev_ema_norm"] = n
            else:
                self.global_state["prev_ema_norm"] = ema_norm

        divisor = ema_norm_divisor(update_norm, ema_norm, eps_, clip=self._clip)
        if tensorwise:
            for s, d in zip(states, divisor.unbind()):
                s["divisor"] = d
        else:
            self.global_state["divisor"] = divisor

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        if settings[0]["tensorwise"]:
            torch._foreach_div_(tensors, [s["divisor"] for s in states])
        else:
            torch._foreach_div_(tensors, self.global_state["divisor"])
        return tensors


class ClipNormByEMA(_EMANormBase):
    """Clips the norm of the update to the norm of an exponential moving average of past updates.

    Update phase, from the incoming update ``u``: ``m ← β m + (1 − β) u`` (state ``'ema'``, starting at zeros, or at
    ``u`` with ``ema_init='update'``); ``nₑ = ‖m‖_ord`` per tensor (``tensorwise``) or over all parameters. With
    ``max_ema_growth``, ``nₑ`` may grow by at most that factor per step: with the previous value ``prev``
    (``'prev_ema_norm'``, initialised to the first ``nₑ``) and ``allowed = max(prev · max_ema_growth, 1e-6)``, an
    ``nₑ`` above ``allowed`` scales the EMA buffer (and ``nₑ``) down to ``allowed``; then ``prev ← nₑ``. The divisor
    is ``r = max(‖u‖_ord / max(nₑ, eps), 1)``. The 1e-6 floor of ``allowed`` applies to the global norm as well
    (the reference applied it per tensor only, so one zero first update froze a global EMA at zero forever).

    Apply phase: the output is ``u' / r`` with ``u' = inner(u)`` (or ``u``). Without ``inner`` the output norm never
    exceeds the (growth-limited) EMA norm: sudden spikes of the update are clipped, while steady growth is
    followed at a rate limited by ``max_ema_growth``.

    Args:
        beta: EMA factor. Defaults to 0.99.
        ord: the norm or metric (as in ``ClipNorm``). Defaults to 2.
        eps: lower bound of the EMA norm in the divisor. Defaults to 1e-6.
        tensorwise: one norm per tensor (True) or one for all parameters (False). Defaults to True.
        max_ema_growth: the largest factor by which the EMA norm may grow in one step, or None for no limit.
            Defaults to 1.5.
        ema_init: ``'zeros'`` (first output is ``(1 − β) u``) or ``'update'``. Defaults to ``'zeros'``.
        inner: modules whose output is clipped instead of ``u`` (the statistics still see ``u``). Defaults to None.

    Reference:
        library-specific.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.ClipNormByEMA(), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    _clip = True

    def __init__(self, beta: float = 0.99, ord: Metrics = 2, eps: float = 1e-06, tensorwise: bool = True,
                 max_ema_growth: float | None = 1.5, ema_init: Literal["zeros", "update"] = "zeros",
                 inner: Chainable | None = None):
        super().__init__(beta=beta, ord=ord, eps=eps, tensorwise=tensorwise, max_ema_growth=max_ema_growth,
                         ema_init=ema_init, inner=inner)


class NormalizeByEMA(_EMANormBase):
    """Normalizes the update to the norm of an exponential moving average of past updates.

    Same statistics as ``ClipNormByEMA`` (EMA ``'ema'``, growth limit with ``'prev_ema_norm'``), but the divisor is
    ``r = max(‖u‖_ord / max(nₑ, eps), eps)`` instead of being floored at 1, so the output ``u' / r`` has the
    growth-limited EMA norm: small updates are enlarged as well as large ones shrunk.

    Args:
        beta: EMA factor. Defaults to 0.99.
        ord: the norm or metric (as in ``ClipNorm``). Defaults to 2.
        eps: lower bound of the EMA norm and of the divisor. Defaults to 1e-6.
        tensorwise: one norm per tensor (True) or one for all parameters (False). Defaults to True.
        max_ema_growth: the largest factor by which the EMA norm may grow in one step, or None. Defaults to 1.5.
        ema_init: ``'zeros'`` or ``'update'``. Defaults to ``'zeros'``.
        inner: modules whose output is rescaled instead of ``u``. Defaults to None.

    Reference:
        library-specific.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.NormalizeByEMA(), tz.m.LR(1e-2))
        ```
    """

    _clip = False

    def __init__(self, beta: float = 0.99, ord: Metrics = 2, eps: float = 1e-06, tensorwise: bool = True,
                 max_ema_growth: float | None = 1.5, ema_init: Literal["zeros", "update"] = "zeros",
                 inner: Chainable | None = None):
        super().__init__(beta=beta, ord=ord, eps=eps, tensorwise=tensorwise, max_ema_growth=max_ema_growth,
                         ema_init=ema_init, inner=inner)


# ----------------------------------------------------------------------------------------------- value module
class ClipValueByEMA(Transform):
    """Clips the update elementwise to an exponential moving average of past magnitudes.

    Update phase: ``m ← β m + (1 − β)|u|`` (state ``'ema'``, starting at zeros, or at ``|u|`` with
    ``ema_init='update'``). Apply phase: the bound is ``b = ema_tfm(copy of m)`` if ``ema_tfm`` is given, else
    ``m``; the output is ``clamp(u', −b, b)`` with ``u' = inner(u)`` (or ``u``).

    Args:
        beta: EMA factor. Defaults to 0.99.
        ema_init: ``'zeros'`` (first output is ``(1 − β) u``) or ``'update'``. Defaults to ``'zeros'``.
        ema_tfm: modules applied to a copy of the EMA to get the bound (e.g. ``Mul(2)`` to allow twice the average
            magnitude); the EMA itself is not changed. Defaults to None.
        inner: modules whose output is clipped instead of ``u`` (the EMA still sees ``u``). Defaults to None.

    Reference:
        library-specific.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.ClipValueByEMA(ema_tfm=tz.m.Mul(3.0)), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, beta: float = 0.99, ema_init: Literal["zeros", "update"] = "zeros",
                 ema_tfm: Chainable | None = None, inner: Chainable | None = None):
        check_range("ClipValueByEMA", "beta", beta, 0, 1)
        check_choice("ClipValueByEMA", "ema_init", ema_init, ("zeros", "update"))
        super().__init__(dict(beta=beta, ema_init=ema_init), inner=inner)
        if ema_tfm is not None:
            self.set_child("ema_tfm", ema_tfm)

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        beta = scalar_or_list(self.unpack_settings(settings, "beta"))
        update_ema_(states, list(torch._foreach_abs(tensors)), beta, settings[0]["ema_init"])

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        bound = [s["ema"] for s in states]
        ema_tfm = self.children.get("ema_tfm")
        if ema_tfm is not None:
            copies = list(torch._foreach_mul(bound, 1))  # one multi-tensor copy; ema_tfm may work in place
            bound = apply_transform(ema_tfm, tensors=copies, params=params, grads=grads, loss=loss, var=self._var)
        torch._foreach_maximum_(tensors, torch._foreach_neg(bound))
        torch._foreach_minimum_(tensors, bound)
        return tensors
