"""Rprop and the sign-change family: ``Rprop``, ``BacktrackOnSignChange``, ``ScaleLRBySignChange``,
``SignConsistencyLRs``, ``SignConsistencyMask``.

Sign tests are done with multi-tensor arithmetic instead of per-tensor ``torch.where``: for ``q = a·b``,
``s = sign(q)``, ``pos = max(s, 0)`` and ``neg = pos − s`` are exact 0/1 masks of ``q > 0`` and ``q < 0``, and rates
are multiplied by ``nplus^pos · nminus^neg``, which is exactly ``nplus``, ``nminus`` or 1. Masked replacements are
``x − x·mask + y·mask``, exact for finite values. Non-finite inputs are not checked (as in ``torch.optim.Rprop``):
they propagate into the state and the output.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ...core import Target, Transform
from ...utils.checks import check_non_negative, check_positive
from ...utils.foreach import Scalars, scalar_or_list


# ---------------------------------------------------------------------------------------------------- functional
def sign_masks(q: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(pos, neg)``: float masks (exactly 0 or 1) of ``q > 0`` and ``q < 0``. ``q`` is overwritten by its sign."""
    torch._foreach_sign_(q)
    pos = list(torch._foreach_clamp_min(q, 0))
    neg = list(torch._foreach_sub(pos, q))
    return pos, neg


def _pow_base(base: Scalars, exponents: list[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(base, list):
        return [torch.pow(b, e) for b, e in zip(base, exponents)]
    return list(torch._foreach_pow(base, exponents))


def clamp_(tensors_: list[torch.Tensor], lb: Scalars | None | list, ub: Scalars | None | list) -> None:
    """Clamps in place to ``[lb, ub]``; a None bound (or a None entry of a per-tensor list) is open."""
    if isinstance(lb, list):
        lb = [-math.inf if v is None else v for v in lb]
    if isinstance(ub, list):
        ub = [math.inf if v is None else v for v in ub]
    if lb is not None:
        torch._foreach_clamp_min_(tensors_, lb)
    if ub is not None:
        torch._foreach_clamp_max_(tensors_, ub)


def scale_rates_by_sign_(rates_: list[torch.Tensor], q: list[torch.Tensor], nplus: Scalars, nminus: Scalars,
                         lb: Scalars | None, ub: Scalars | None) -> list[torch.Tensor]:
    """Rprop's step-size rule in place: ``rate ← clamp(rate · nplus)`` where ``q > 0``, ``rate · nminus`` where
    ``q < 0``, unchanged where ``q = 0``. ``q`` (e.g. current sign × previous sign) is overwritten.
    Returns the float mask of ``q < 0``."""
    pos, neg = sign_masks(q)
    torch._foreach_mul_(rates_, _pow_base(nplus, pos))
    torch._foreach_mul_(rates_, _pow_base(nminus, neg))
    clamp_(rates_, lb, ub)
    return neg


def initial_rates(like: Sequence[torch.Tensor], alpha: Scalars, lb: Scalars | None, ub: Scalars | None
                  ) -> list[torch.Tensor]:
    """Tensors filled with ``clamp(alpha, lb, ub)``."""
    n = len(like)
    a = alpha if isinstance(alpha, list) else [alpha] * n
    lo = lb if isinstance(lb, list) else [lb] * n
    hi = ub if isinstance(ub, list) else [ub] * n
    out = []
    for t, ai, l, h in zip(like, a, lo, hi):
        v = ai if l is None else max(ai, l)
        v = v if h is None else min(v, h)
        out.append(torch.full_like(t, v))
    return out


def rprop_step_(tensors: Sequence[torch.Tensor], magnitudes_: list[torch.Tensor], prev_: list[torch.Tensor],
                allowed_: list[torch.Tensor], nplus: Scalars, nminus: Scalars, lb: Scalars, ub: Scalars,
                backtrack: bool) -> list[torch.Tensor]:
    """One Rprop step after the first, in place on the state; returns the output as new tensors.

    ``q = sign(u)·prev·allowed``; magnitudes Δ scaled by ``nplus``/``nminus`` where ``q > 0``/``q < 0`` and clamped
    to ``[lb, ub]``; output ``Δ·sign(u)``, except where ``q < 0``: ``−prev`` (``backtrack``) or 0;
    ``allowed ← q ≥ 0``; ``prev ← output``.
    """
    out = list(torch._foreach_sign(tensors))
    q = list(torch._foreach_mul(out, prev_))
    torch._foreach_mul_(q, allowed_)
    neg = scale_rates_by_sign_(magnitudes_, q, nplus, nminus, lb, ub)
    torch._foreach_mul_(out, magnitudes_)
    torch._foreach_addcmul_(out, out, neg, value=-1)  # 0 where the sign flipped
    if backtrack:
        torch._foreach_addcmul_(out, prev_, neg, value=-1)  # undo the previous step there
    torch._foreach_sub_(neg, 1)  # -1 (allowed) where q >= 0, 0 where q < 0
    torch._foreach_copy_(allowed_, neg)
    torch._foreach_copy_(prev_, out)
    return out


def _check_rates(owner: str, nplus: float, nminus: float, lb: float | None, ub: float | None, alpha: float) -> None:
    check_positive(owner, "nplus", nplus)
    check_positive(owner, "nminus", nminus)
    check_positive(owner, "alpha", alpha)
    if lb is not None:
        check_non_negative(owner, "lb", lb)
    if ub is not None:
        check_positive(owner, "ub", ub)
    if lb is not None and ub is not None and lb > ub:
        raise ValueError(f"{owner}: lb must not exceed ub, got lb={lb}, ub={ub}")


# ---------------------------------------------------------------------------------------------------- Rprop
class Rprop(Transform):
    """Rprop: per-element step sizes adapted from the sign agreement of consecutive updates; only the sign of the
    update is used.

    State ``'magnitudes'`` Δ, ``'prev'`` (the previous output), ``'allowed'`` (bool, initially True).
    Step 1: ``Δ = clamp(alpha, lb, ub)``, output ``Δ·sign(u)``. Later, with ``q = sign(u)·prev·allowed``:
    ``Δ ← Δ·nplus`` where ``q > 0``, ``Δ·nminus`` where ``q < 0``, unchanged where ``q = 0``, clamped to
    ``[lb, ub]``; output ``Δ·sign(u)``, except where ``q < 0``: ``−prev`` with ``backtrack`` (undoes the previous
    step) else 0; then ``allowed ← (q ≥ 0)`` and ``prev ← output``.

    ``alpha`` is the initial step size, so no ``LR`` is needed: ``Modular(p, Rprop(backtrack=False, alpha=lr))``
    equals ``torch.optim.Rprop(p, lr)`` exactly. Non-finite inputs are not checked; they propagate.

    Args:
        nplus: step-size multiplier when the sign is kept (per-parameter). Defaults to 1.2.
        nminus: step-size multiplier when the sign flips (per-parameter). Defaults to 0.5.
        lb: smallest step size (per-parameter). Defaults to 1e-6.
        ub: largest step size (per-parameter). Defaults to 50.
        backtrack: on a sign flip, undo the previous step (Rprop with weight backtracking) instead of not moving
            (Rprop⁻, torch's variant). Defaults to True.
        alpha: initial step size (per-parameter). Defaults to 1.

    Reference:
        M. Riedmiller, H. Braun, "A direct adaptive method for faster backpropagation learning: the RPROP
        algorithm", IEEE ICNN 1993.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Rprop(alpha=1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, nplus: float = 1.2, nminus: float = 0.5, lb: float = 1e-6, ub: float = 50,
                 backtrack: bool = True, alpha: float = 1):
        _check_rates("Rprop", nplus, nminus, lb, ub, alpha)
        super().__init__(dict(nplus=nplus, nminus=nminus, lb=lb, ub=ub, backtrack=backtrack, alpha=alpha))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        nplus, nminus, lb, ub = (scalar_or_list(v) for v in self.unpack_settings(settings, "nplus", "nminus",
                                                                                     "lb", "ub"))
        if "magnitudes" not in states[0]:
            magnitudes = initial_rates(tensors, scalar_or_list(self.unpack_settings(settings, "alpha")), lb, ub)
            out = list(torch._foreach_sign(tensors))
            torch._foreach_mul_(out, magnitudes)
            for s, m, o in zip(states, magnitudes, out):
                s["magnitudes"] = m
                s["prev"] = o.clone()
                s["allowed"] = torch.ones_like(o, dtype=torch.bool)
            return out
        return rprop_step_(tensors, [s["magnitudes"] for s in states], [s["prev"] for s in states],
                           [s["allowed"] for s in states], nplus, nminus, lb, ub, settings[0]["backtrack"])


# ---------------------------------------------------------------------------------------------------- sign changes
def _tracked(module: Transform, tensors: list[torch.Tensor], grads: list[torch.Tensor] | None, use_grad: bool
             ) -> Sequence[torch.Tensor]:
    if not use_grad:
        return tensors
    if grads is None:
        raise RuntimeError(f"{type(module).__name__}: use_grad=True needs the gradient; pass use_grad=True to the "
                           "constructor (setting it only in a parameter group doesn't request the gradient)")
    return grads


class BacktrackOnSignChange(Transform):
    """Where the tracked quantity changed sign since the last step, replaces the update by the previous tracked
    value (or by 0).

    Tracks ``c``: the raw gradient (``use_grad=True``) or the incoming update. First call: stores ``c`` as
    ``'prev'`` and returns ``u``. Later: ``mask = c·prev < 0`` (a strict sign flip); masked entries of ``u`` become
    ``prev`` with ``backtrack``, else 0; then ``prev ← c`` (taken after the replacement when ``c`` is the update).
    The replacement is the previous value itself, not its negation (kept from the reference library).

    Args:
        use_grad: track the raw gradient instead of the update. Defaults to False.
        backtrack: replace flipped entries by the previous value; if False set them to 0. Defaults to True.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        part of the Rprop family (M. Riedmiller, H. Braun, IEEE ICNN 1993).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.HeavyBall(), tz.m.BacktrackOnSignChange(), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, use_grad: bool = False, backtrack: bool = True, target: Target = "update"):
        super().__init__(dict(use_grad=use_grad, backtrack=backtrack), uses_grad=use_grad, target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        tracked = _tracked(self, tensors, grads, s0["use_grad"])
        if "prev" not in states[0]:
            for s, c in zip(states, tracked):
                s["prev"] = c.clone()
            return tensors
        prev = [s["prev"] for s in states]
        m = list(torch._foreach_mul(tracked, prev))
        torch._foreach_clamp_max_(m, 0)
        torch._foreach_sign_(m)  # -1 where the sign flipped, else 0
        torch._foreach_addcmul_(tensors, tensors, m)  # 0 there
        if s0["backtrack"]:
            torch._foreach_addcmul_(tensors, prev, m, value=-1)  # prev there
        torch._foreach_copy_(prev, tracked)
        return tensors


class ScaleLRBySignChange(Transform):
    """Multiplies the update by per-element rates that grow while the tracked sign is kept and shrink when it flips
    (Rprop's step-size rule applied to any update).

    State ``'lrs'`` (rates, starting at ``clamp(alpha, lb, ub)``) and ``'prev'`` (the previous sign of the tracked
    quantity: the raw gradient with ``use_grad``, else the incoming update). From the second call: rates ``×nplus``
    where the tracked sign agrees with the previous one, ``×nminus`` where it flips, unchanged where either is 0;
    clamped to ``[lb, ub]``; then the new sign is stored. Output ``u ⊙ rates``.

    Args:
        nplus: multiplier when the sign is kept (per-parameter). Defaults to 1.2.
        nminus: multiplier when the sign flips (per-parameter). Defaults to 0.5.
        lb: smallest rate (per-parameter). Defaults to 1e-6.
        ub: largest rate (per-parameter). Defaults to 50.
        alpha: initial rate (per-parameter). Defaults to 1.
        use_grad: track the sign of the raw gradient instead of the update. Defaults to False.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        the step-size rule of Rprop (M. Riedmiller, H. Braun, IEEE ICNN 1993).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.ScaleLRBySignChange(), tz.m.LR(1e-3))
        ```
    """

    _readonly_input = True

    def __init__(self, nplus: float = 1.2, nminus: float = 0.5, lb: float = 1e-6, ub: float = 50.0,
                 alpha: float = 1.0, use_grad: bool = False, target: Target = "update"):
        _check_rates("ScaleLRBySignChange", nplus, nminus, lb, ub, alpha)
        super().__init__(dict(nplus=nplus, nminus=nminus, lb=lb, ub=ub, alpha=alpha, use_grad=use_grad),
                         uses_grad=use_grad, target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        tracked = _tracked(self, tensors, grads, settings[0]["use_grad"])
        lrs = _sign_consistency_rates(self, tracked, states, settings)
        return list(torch._foreach_mul(tensors, lrs))


def _sign_consistency_rates(module: Transform, tracked: Sequence[torch.Tensor], states: list[dict],
                            settings: Sequence) -> list[torch.Tensor]:
    """Updates and returns the rates ``'lrs'`` of ``ScaleLRBySignChange``/``SignConsistencyLRs`` from the sign of
    ``tracked`` and the stored previous sign ``'prev'``."""
    nplus, nminus, lb, ub = (scalar_or_list(v) for v in module.unpack_settings(settings, "nplus", "nminus", "lb",
                                                                                  "ub"))
    cur = list(torch._foreach_sign(tracked))
    if "lrs" not in states[0]:
        lrs = initial_rates(tracked, scalar_or_list(module.unpack_settings(settings, "alpha")), lb, ub)
        for s, r, c in zip(states, lrs, cur):
            s["lrs"] = r
            s["prev"] = c
        return lrs
    lrs = [s["lrs"] for s in states]
    q = list(torch._foreach_mul(cur, [s["prev"] for s in states]))
    scale_rates_by_sign_(lrs, q, nplus, nminus, lb, ub)
    for s, c in zip(states, cur):
        s["prev"] = c
    return lrs


class SignConsistencyLRs(Transform):
    """Outputs per-element rates (not multiplied by the update) that grow while consecutive input signs agree and
    shrink when they flip; use e.g. ``Mul(SignConsistencyLRs())``.

    State ``'lrs'`` (starting at ``alpha``, clamped) and ``'prev'`` (the previous input sign). From the second call
    the rates are multiplied by ``nplus`` where the sign is kept and by ``nminus`` where it flips (unchanged where
    either sign is 0), then clamped to ``[lb, ub]`` (None = open). Returns a copy of the rates.

    Args:
        nplus: multiplier when the sign is kept (per-parameter). Defaults to 1.2.
        nminus: multiplier when the sign flips (per-parameter). Defaults to 0.5.
        lb: smallest rate, or None (per-parameter). Defaults to 1e-6.
        ub: largest rate, or None (per-parameter). Defaults to 50.
        alpha: initial rate (per-parameter). Defaults to 1.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        the step-size rule of Rprop (M. Riedmiller, H. Braun, IEEE ICNN 1993).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Mul(tz.m.SignConsistencyLRs()), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, nplus: float = 1.2, nminus: float = 0.5, lb: float | None = 1e-6, ub: float | None = 50,
                 alpha: float = 1, target: Target = "update"):
        _check_rates("SignConsistencyLRs", nplus, nminus, lb, ub, alpha)
        super().__init__(dict(nplus=nplus, nminus=nminus, lb=lb, ub=ub, alpha=alpha), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        lrs = _sign_consistency_rates(self, tensors, states, settings)
        torch._foreach_copy_(tensors, lrs)
        return tensors


class SignConsistencyMask(Transform):
    """Outputs a float mask: 1 where the input and the previous input have the same strict sign, else 0.

    State ``'prev'`` (zeros at the start, so the first mask is all zeros); after computing the mask
    ``1[u·prev > 0]``, the input is stored. The mask is a new tensor (it doesn't alias the state).

    Args:
        target: what to transform. Defaults to ``'update'``.

    Example:
        ```python
        # zero the components whose sign changed
        opt = tz.Modular(model.parameters(), tz.m.Mul(tz.m.SignConsistencyMask()), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, target: Target = "update"):
        super().__init__({}, target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        prev = [s["prev"] if "prev" in s else s.setdefault("prev", torch.zeros_like(t))
                for s, t in zip(states, tensors)]
        mask = list(torch._foreach_mul(tensors, prev))
        torch._foreach_sign_(mask)
        torch._foreach_clamp_min_(mask, 0)
        torch._foreach_copy_(prev, tensors)
        return mask
