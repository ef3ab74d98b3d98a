"""``CD``: coordinate descent proposals from function values along one coordinate per step."""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any, Literal

import torch

from ...core import Module, Var
from ...utils.checks import check_bool, check_choice, check_positive
from ..grad_approximation.base import loss_value

CDIndex = Literal["cyclic", "cyclic2", "random"]
_INDEX = ("cyclic", "cyclic2", "random")
_H_MIN, _H_MAX = 1e-10, 1e10


def coordinate_index(step: int, n: int, index: CDIndex, rng: random.Random | None = None) -> int:
    """The coordinate visited at ``step`` (from 0) among ``n``: ``'cyclic'`` 0, 1, …, n−1, 0, …; ``'cyclic2'``
    0, …, n−1, n−1, …, 0, 0, …; ``'random'`` uniform from ``rng``."""
    if index == "cyclic":
        return step % n
    if index == "cyclic2":
        k = step % (2 * n)
        return k if k < n else 2 * n - 1 - k
    if rng is None:
        raise ValueError("coordinate_index: 'random' needs a random.Random generator")
    return rng.randrange(n)


def _unravel(flat_index: int, shape: Sequence[int]) -> tuple[int, ...]:
    out = []
    for s in reversed(shape):
        flat_index, r = divmod(flat_index, s)
        out.append(r)
    return tuple(reversed(out))


def locate(params: Sequence[torch.Tensor], flat_index: int) -> tuple[int, tuple[int, ...]]:
    """``(j, idx)`` such that entry ``flat_index`` of all parameters flattened and concatenated is ``params[j][idx]``."""
    for j, p in enumerate(params):
        n = p.numel()
        if flat_index < n:
            return j, _unravel(flat_index, p.shape)
        flat_index -= n
    raise IndexError("flat index out of range")


def _worse_if_nan(f: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(f, nan=math.inf)


def cd_entry(f_0: torch.Tensor | None, f_plus: torch.Tensor, f_minus: torch.Tensor | None, h: torch.Tensor | float,
             grad: bool) -> torch.Tensor:
    """The update entry of one coordinate.

    Three-point (``f_minus`` given): ``(f₊ − f₋)/(2h)`` if ``grad``, else the sign proposal 0 if ``f₀ < f₊`` and
    ``f₀ < f₋``, −1 if ``f₊ < f₋``, else +1. Two-point: ``(f₊ − f₀)/h`` if ``grad``, else ``sign(f₊ − f₀)``.
    Sign proposals treat a NaN value as +inf (worse than anything); differences propagate non-finite values.
    """
    if f_minus is not None:
        if grad:
            return (f_plus - f_minus) / (2 * h)
        assert f_0 is not None
        f_0, f_plus, f_minus = _worse_if_nan(f_0), _worse_if_nan(f_plus), _worse_if_nan(f_minus)
        step = torch.where(f_plus < f_minus, -1.0, 1.0).to(f_plus.dtype)
        return torch.where((f_0 < f_plus) & (f_0 < f_minus), torch.zeros_like(step), step)
    assert f_0 is not None
    if grad:
        return (f_plus - f_0) / h
    return torch.sign(_worse_if_nan(f_plus) - _worse_if_nan(f_0))


def adapt_h(h: torch.Tensor, f_0: torch.Tensor, f_plus: torch.Tensor, f_minus: torch.Tensor) -> torch.Tensor:
    """The next step of a coordinate: halved (not below 1e-10) when ``f₀`` is below both ``f₊`` and ``f₋``, doubled
    (not above 1e10) when the function looks locally linear (``|f₀ − f₋| < 1e-12`` or
    ``|(f₊ − f₀)/(f₀ − f₋) − 1| < 1e-2``), else unchanged. No host synchronisation."""
    bracketed = (f_0 < f_plus) & (f_0 < f_minus)
    d_minus = f_0 - f_minus
    linear = (d_minus.abs() < 1e-12) | (((f_plus - f_0) / d_minus - 1).abs() < 1e-2)
    h_new = torch.where(linear, (h * 2).clamp(max=_H_MAX), h)
    return torch.where(bracketed, (h / 2).clamp(min=_H_MIN), h_new)


class CD(Module):
    """Coordinate descent proposal: a finite-difference (or sign) step along one coordinate per step.

    At step t the coordinate ``i`` of all parameters flattened and concatenated (n entries) is chosen by ``index``:
    ``'cyclic'`` 0, 1, …, n−1, 0, …; ``'cyclic2'`` 0, …, n−1, n−1, …, 0, 0, …; ``'random'`` uniform from a
    ``random.Random(0)`` generator. With ``f₀ = f(x)``, ``f₊ = f(x + h eᵢ)``, ``f₋ = f(x − h eᵢ)``, the update is zero
    except entry ``i``:

    - three-point: ``(f₊ − f₋)/(2h)`` if ``grad``, else a sign proposal (0 if ``f₀`` is below both, −1 if
      ``f₊ < f₋``, else +1);
    - two-point: ``(f₊ − f₀)/h`` if ``grad``, else ``sign(f₊ − f₀)``.

    With ``adaptive`` (three-point only) every entry keeps its own step (per-parameter state ``'h_vec'``, initialised
    to ``h``): after an evaluation it is halved (≥ 1e-10) when ``f₀`` is bracketed by ``f₊`` and ``f₋``, doubled
    (≤ 1e10) when the function looks locally linear (``|f₀ − f₋| < 1e-12`` or ``|(f₊ − f₀)/(f₀ − f₋) − 1| < 1e-2``).
    Meant to be followed by a step size or a line search. Cost per step: 2 evaluations, plus ``f₀`` when it is used
    (two-point, sign proposals, ``adaptive``) and not known yet. The parameters are restored exactly. Sign proposals
    treat a NaN loss as +inf; finite differences propagate non-finite values.

    State: ``global_state['idx']`` (coordinate of the last step), ``global_state['step']``, ``'h_vec'``; the
    ``'random'`` generator is saved in state dicts and re-seeded by ``reset()``.

    Args:
        h: finite-difference step (per-parameter setting, positive); initial step with ``adaptive``. Defaults to 1e-3.
        grad: use the finite difference (True) or the sign proposal (False). Defaults to True.
        adaptive: per-entry adaptive steps (three-point only). Defaults to True.
        index: ``'cyclic'``, ``'cyclic2'`` or ``'random'``. Defaults to ``'cyclic2'``.
        threepoint: evaluate both ``x + h eᵢ`` and ``x − h eᵢ`` (True) or only ``x + h eᵢ``. Defaults to True.

    Reference:
        S. J. Wright, "Coordinate descent algorithms", Mathematical Programming 151, 2015.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.CD(), tz.m.StrongWolfe())

        def closure(backward=True):  # CD never asks for a backward pass
            return loss_fn(model(inputs), targets)
        ```
    """

    def __init__(self, h: float = 0.001, grad: bool = True, adaptive: bool = True, index: CDIndex = "cyclic2",
                 threepoint: bool = True):
        check_positive("CD", "h", h)
        check_bool("CD", "grad", grad)
        check_bool("CD", "adaptive", adaptive)
        check_choice("CD", "index", index, _INDEX)
        check_bool("CD", "threepoint", threepoint)
        super().__init__(dict(h=h, grad=grad, adaptive=adaptive, index=index, threepoint=threepoint))
        self._rng = random.Random(0)

    def reset(self) -> None:
        super().reset()
        self._rng = random.Random(0)

    def _extra_pack(self) -> Any:
        return {"rng": self._rng.getstate()}

    def _extra_unpack(self, x: Any) -> None:
        if "rng" in x:
            version, internal, gauss = x["rng"]
            self._rng.setstate((version, tuple(internal), gauss))

    @torch.no_grad()
    def step(self, var: Var) -> Var:
        closure = self._require_closure(var)
        params = var.params
        s0 = self.settings[params[0]]
        grad, adaptive, threepoint = s0["grad"], s0["adaptive"], s0["threepoint"]
        adaptive = adaptive and threepoint

        n = sum(p.numel() for p in params)
        if n == 0:
            raise RuntimeError("CD: the parameters have no entries")
        step = self.global_state.get("step", 0)
        i = coordinate_index(step, n, s0["index"], self._rng)
        self.global_state["step"] = step + 1
        self.global_state["idx"] = i
        j, idx = locate(params, i)
        p = params[j]
        device = p.device

        if adaptive:
            h_vec = self.state[p].get("h_vec")
            if h_vec is None:
                h_vec = self.state[p]["h_vec"] = torch.full_like(p, self.settings[p]["h"])
            h: torch.Tensor | float = h_vec[idx].clone()
        else:
            h = self.settings[p]["h"]

        f_0 = None
        if not threepoint or not grad or adaptive:
            f_0 = loss_value(var.get_loss(False), device)

        original = p[idx].clone()
        try:
            p[idx] = original + h
            f_plus = loss_value(closure(False), device)
            f_minus = None
            if threepoint:
                p[idx] = original - h
                f_minus = loss_value(closure(False), device)
        finally:
            p[idx] = original

        entry = cd_entry(f_0, f_plus, f_minus, h, grad)
        if adaptive:
            assert f_0 is not None and f_minus is not None and isinstance(h, torch.Tensor)
            h_vec[idx] = adapt_h(h, f_0, f_plus, f_minus)

        update = [torch.zeros_like(t) for t in params]
        update[j][idx] = entry
        var.update = update
        return var
