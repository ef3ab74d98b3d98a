"""Limits on how fast the update may grow from one step to the next: by norm (``ClipNormGrowth``) or elementwise
(``ClipValueGrowth``).

Both remember the previous (clipped) update size and allow the new one to exceed it by at most an additive
(``add``) and/or a multiplicative (``mul``) margin. The remembered size decays by at most ``max_decay`` per step when
the update shrinks, and ``min_value`` keeps it (or, elementwise, the reference magnitude) away from zero so that
an update that was once zero can grow again.

NaN/inf: they propagate to the output; an infinite update is turned into NaN by the clipping (∞·0).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...core import Target, Transform
from ...utils.foreach import Scalars, combine, scalar_or_list
from ...utils.tensorlist import TensorList


# ----------------------------------------------------------------------------------------------- functional
def norm_growth_divisor(norm: torch.Tensor, prev: torch.Tensor, add: Any, mul: Any, min_value: Any,
                        max_decay: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Divisor ``r`` that limits the growth of ``norm`` relative to ``prev``, and the next ``prev``.

    All arguments may be 0-d tensors, vectors of per-tensor values, numbers, or None (disabled):
    ``r = 1``; if ``norm > prev + add``: ``r = norm/(prev + add)``; if ``norm > prev·mul``:
    ``r = max(r, norm/(prev·mul))``; ``r = max(r, min_value)``. Next prev: ``norm/r``, but ``prev/max_decay`` when
    ``norm/prev < 1/max_decay``; then at least ``min_value``.
    """
    r = torch.ones_like(norm)
    if add is not None:
        limit = prev + add
        r = torch.where(norm > limit, norm / limit, r)
    if mul is not None:
        limit = prev * mul
        r = torch.where(norm > limit, torch.maximum(r, norm / limit), r)
    if min_value is not None:
        r = r.clamp_min(min_value)
    new_prev = norm / r
    if max_decay is not None:
        new_prev = torch.where(norm / prev < 1 / max_decay, prev / max_decay, new_prev)
    if min_value is not None:
        new_prev = new_prev.clamp_min(min_value)
    return r, new_prev


def clip_value_growth_(tensors_: list[torch.Tensor], prev_: list[torch.Tensor], add: Scalars | None,
                       mul: Scalars | None, min_value: Scalars | None, max_decay: Scalars | None
                       ) -> list[torch.Tensor]:
    """Elementwise growth limit, in place on ``tensors_`` (u); ``prev_`` (the previous clipped update) is updated
    in place. Returns ``tensors_``.

    ``add``: ``|u|`` is capped at ``|prev| + add`` (sign kept). ``mul``: with ``p = max(|prev|, min_value)`` and
    ``ρ = max(|u|/p, 1e-8)``, ``u`` is divided by ``ρ/mul`` where ``ρ > mul``. New prev: ``prev/max_decay`` where
    ``ρ < 1/max_decay`` (ρ from before the mul clip) and the clipped ``u`` elsewhere; without ``max_decay``, the
    clipped ``u``. With ``min_value=None``, ``p`` is floored at the smallest normal number instead, so that ``0/0``
    can't occur.
    """
    abs_prev = list(torch._foreach_abs(prev_))
    if add is not None:
        cap = list(torch._foreach_add(abs_prev, add))
        torch._foreach_minimum_(tensors_, cap)
        torch._foreach_neg_(cap)
        torch._foreach_maximum_(tensors_, cap)

    rho = None
    if mul is not None or max_decay is not None:
        floor = min_value if min_value is not None else [torch.finfo(t.dtype).tiny for t in tensors_]
        torch._foreach_clamp_min_(abs_prev, floor)
        rho = list(torch._foreach_abs(tensors_))
        torch._foreach_div_(rho, abs_prev)
        torch._foreach_clamp_min_(rho, 1e-8)

    if max_decay is not None:
        assert rho is not None
        # weight 1 where ρ ≥ 1/max_decay (keep the clipped update), 0 where ρ < 1/max_decay (decay prev):
        # clamp_max(sign(ρ − thr) + 1, 1) maps (<, =, >) to (0, 1, 1)
        keep = list(torch._foreach_sub(rho, combine(1, max_decay, lambda a, b: a / b)))
        torch._foreach_sign_(keep)
        torch._foreach_add_(keep, 1)
        torch._foreach_clamp_max_(keep, 1)

    if mul is not None:
        assert rho is not None
        # u / (ρ/mul) where ρ > mul  ⇔  u · min(mul/ρ, 1)
        factor = list(torch._foreach_reciprocal(rho))
        torch._foreach_mul_(factor, mul)
        torch._foreach_clamp_max_(factor, 1)
        torch._foreach_mul_(tensors_, factor)

    if max_decay is not None:
        torch._foreach_div_(prev_, max_decay)
        torch._foreach_lerp_(prev_, tensors_, keep)  # exact endpoints for 0/1 weights
    else:
        torch._foreach_copy_(prev_, tensors_)
    return tensors_


# ----------------------------------------------------------------------------------------------- helpers
def _optional_settings(owner: Transform, settings: Sequence[Any], *keys: str) -> list[Scalars | None]:
    """Per-parameter values of settings that may be None (disabled): None if the first parameter's value is None,
    else a scalar or per-tensor list (all of them must then be numbers)."""
    out: list[Scalars | None] = []
    for key in keys:
        values = owner.unpack_settings(settings, key)
        if values[0] is None:
            out.append(None)
        elif any(v is None for v in values):
            raise ValueError(f"{type(owner).__name__}: {key} is None for some parameters and not for others")
        else:
            out.append(scalar_or_list(values))
    return out


def _as_vector(value: Scalars | None, like: torch.Tensor) -> float | torch.Tensor | None:
    """A per-tensor list as a vector on ``like``'s device, to broadcast against a vector of per-tensor norms."""
    if isinstance(value, list):
        return torch.tensor(value, dtype=like.dtype, device=like.device)
    return value


def _check_growth_args(owner: str, add: float | None, mul: float | None, min_value: float | None,
                       max_decay: float | None) -> None:
    for name, value, low, inclusive in (("add", add, 0, True), ("mul", mul, 0, False),
                                        ("min_value", min_value, 0, True), ("max_decay", max_decay, 1, True)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{owner}: {name} must be a number or None, got {type(value).__name__}")
        if value < low or (value == low and not inclusive):
            raise ValueError(f"{owner}: {name} must be {'>=' if inclusive else '>'} {low} or None, got {value}")


# ----------------------------------------------------------------------------------------------- modules
class ClipNormGrowth(Transform):
    """Limits how fast the norm of the update may grow between steps.

    Per tensor (state ``'prev_norm'``, ``'prev_denom'``) or for all parameters as one vector
    (``parameterwise=False``, global state). First step: ``prev = max(‖u‖, min_value)``, output ``u``. Later, with
    ``n = ‖u‖_ord``: ``r = 1``; if ``add`` and ``n > prev + add``: ``r = n/(prev + add)``; if ``mul`` and
    ``n > prev·mul``: ``r = max(r, n/(prev·mul))``; if ``min_value``: ``r = max(r, min_value)``; output ``u/r``.
    Then ``prev ← n/r`` (the clipped norm), or ``prev/max_decay`` when ``n/prev < 1/max_decay`` (the remembered
    norm decays by at most ``max_decay`` per step); finally ``prev ← max(prev, min_value)``. ``'prev_denom'`` holds
    the last ``r``. With ``add`` and ``mul`` both None the module is the identity.

    With ``min_value=None`` and ``add=None`` a zero update makes the allowed norm zero for good.

    Args:
        add: allowed additive growth of the norm per step, or None. Defaults to None.
        mul: allowed multiplicative growth of the norm per step, or None. Defaults to 1.5.
        min_value: floor of the remembered norm (and of ``r``), or None. Defaults to 1e-4.
        max_decay: largest factor by which the remembered norm may decrease per step (≥ 1), or None. Defaults to 2.
        ord: order of the norm. Defaults to 2.
        parameterwise: one norm per tensor (True) or one for all parameters (False). Defaults to True.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        library-specific.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.ClipNormGrowth(mul=1.5), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, add: float | None = None, mul: float | None = 1.5, min_value: float | None = 0.0001,
                 max_decay: float | None = 2, ord: float = 2, parameterwise: bool = True, target: Target = "update"):
        _check_growth_args("ClipNormGrowth", add, mul, min_value, max_decay)
        if isinstance(ord, bool) or not isinstance(ord, (int, float)):
            raise TypeError(f"ClipNormGrowth: ord must be a number, got {type(ord).__name__}")
        super().__init__(dict(add=add, mul=mul, min_value=min_value, max_decay=max_decay, ord=ord,
                              parameterwise=parameterwise), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        add, mul, min_value, max_decay = _optional_settings(self, settings, "add", "mul", "min_value", "max_decay")
        if add is None and mul is None:
            return tensors

        if not s0["parameterwise"]:
            # one norm for all parameters: the settings of the first parameter apply
            add, mul, min_value, max_decay = (s0[k] for k in ("add", "mul", "min_value", "max_decay"))
            norm = TensorList(tensors).global_vector_norm(s0["ord"])
            gs = self.global_state
            if "prev_norm" not in gs:
                gs["prev_norm"] = norm if min_value is None else norm.clamp_min(min_value)
                gs["prev_denom"] = torch.ones_like(norm)
                return tensors
            r, gs["prev_norm"] = norm_growth_divisor(norm, gs["prev_norm"], add, mul, min_value, max_decay)
            gs["prev_denom"] = r
            torch._foreach_div_(tensors, r)
            return tensors

        norms = torch.stack(list(TensorList(tensors).norm(s0["ord"])))
        add, mul, min_value, max_decay = (_as_vector(v, norms) for v in (add, mul, min_value, max_decay))
        floored = norms if min_value is None else norms.clamp_min(min_value)
        if all("prev_norm" not in s for s in states):
            for s, p in zip(states, floored.unbind()):
                s["prev_norm"] = p
                s["prev_denom"] = torch.ones_like(p)
            return tensors
        # a parameter without state (added later) starts from its own norm
        prev = torch.stack([s["prev_norm"] if "prev_norm" in s else p for s, p in zip(states, floored.unbind())])
        r, new_prev = norm_growth_divisor(norms, prev, add, mul, min_value, max_decay)
        for s, p, d in zip(states, new_prev.unbind(), r.unbind()):
            s["prev_norm"] = p
            s["prev_denom"] = d
        torch._foreach_div_(tensors, list(r.unbind()))
        return tensors


class ClipValueGrowth(Transform):
    """Limits how fast each element of the update may grow between steps.

    State ``'prev'`` (the previous clipped update). First step: store a copy, output ``u``. Later:

    - ``add``: where ``|u| − |prev| > add``, ``|u|`` is shrunk to ``|prev| + add`` keeping its sign;
    - ``mul``: with ``p = max(|prev|, min_value)`` and ``ρ = max(|u|/p, 1e-8)``, ``u`` is divided by ``ρ/mul`` where
      ``ρ > mul`` (so ``|u| ≤ mul·p``);
    - new ``prev``: ``prev/max_decay`` where ``ρ < 1/max_decay`` (ρ before the mul clip; computed the same way when
      ``mul`` is None), the clipped ``u`` elsewhere; without ``max_decay`` the clipped ``u``.

    With ``min_value=None``, ``p`` is floored at the smallest normal number of the dtype instead (no 0/0); an
    element that was zero then stays within ``mul`` times that number of zero under ``mul`` alone.

    Args:
        add: allowed additive growth of each magnitude per step, or None. Defaults to None.
        mul: allowed multiplicative growth of each magnitude per step, or None. Defaults to 1.5.
        min_value: floor of the reference magnitude ``|prev|`` used by ``mul``, or None. Defaults to 1e-4.
        max_decay: largest factor by which the remembered value may decrease per step (≥ 1), or None. Defaults to 2.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        library-specific.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.ClipValueGrowth(mul=2.0), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, add: float | None = None, mul: float | None = 1.5, min_value: float | None = 0.0001,
                 max_decay: float | None = 2, target: Target = "update"):
        _check_growth_args("ClipValueGrowth", add, mul, min_value, max_decay)
        super().__init__(dict(add=add, mul=mul, min_value=min_value, max_decay=max_decay), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        add, mul, min_value, max_decay = _optional_settings(self, settings, "add", "mul", "min_value", "max_decay")
        fresh = [i for i, s in enumerate(states) if "prev" not in s]
        if fresh:
            for i, copy in zip(fresh, torch._foreach_mul([tensors[i] for i in fresh], 1)):
                states[i]["prev"] = copy
            if len(fresh) == len(states):
                return tensors
            # parameters added later start now; the others are clipped as usual
            fresh_set = set(fresh)
            known = [i for i in range(len(states)) if i not in fresh_set]
            sub = lambda v: [v[i] for i in known] if isinstance(v, list) else v
            clip_value_growth_([tensors[i] for i in known], [states[i]["prev"] for i in known], sub(add), sub(mul),
                               sub(min_value), sub(max_decay))
            return tensors
        return clip_value_growth_(tensors, [s["prev"] for s in states], add, mul, min_value, max_decay)
