"""Shared machinery of the limited-memory quasi-Newton modules (``LBFGS``, ``LSR1``).

Storage layout: the history of ``s`` and ``y`` is kept as *flattened* vectors (all parameters concatenated), in
deques in ``global_state``. This is faster here than per-parameter lists with foreach ops: the two-loop recursion
is a chain of ``2m`` dot products and ``2m`` axpys, each of which is one kernel on a contiguous vector, whereas with
k parameter tensors every dot product is k per-tensor reductions plus a stack and a sum (foreach has no dot), and
every axpy is a multi-tensor launch. Flattening costs one concatenation of the incoming update and of the
parameters per step and one split of the output (views, no copy). It also makes the dot products identical to
those of the same method run on a single flattened parameter (e.g. under ``VectorProjection``). Parameters must
therefore share a device.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

import torch

from ...core import Chainable, Transform, Var
from ...utils.checks import check_range
from ...utils.linalg.linear_operator import LinearOperator
from ...utils.torch_tools import vec_to_tensors
from .base import first_step_scale, is_finite
from .damping import DampingStrategy, apply_damping, check_damping


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """All tensors raveled and concatenated into a new 1-D tensor (always a copy)."""
    return torch.cat([t.reshape(-1) for t in tensors])


class LimitedMemoryBase(Transform, ABC):
    """Base of ``LBFGS`` and ``LSR1``: history of secant pairs, tolerance tests, damping, first-step scaling.

    ``global_state`` holds ``x_prev``, ``g_prev`` (flattened), ``step`` (update calls since the last clear; the
    first call is 1), and the deques ``s_history``, ``y_history`` (plus what subclasses add).

    Each update (every ``update_freq``-th call): the first call (and the call after a clear) only stores ``x_prev``,
    ``g_prev``. Later calls form ``s = x − x_prev``, ``y = g − g_prev``, apply ``damping``, then

    - a pair with a non-finite ``max|s|``, ``max|y|`` or ``sᵀy`` is dropped, and ``x_prev``, ``g_prev`` are refreshed
      (so a single non-finite gradient does not poison the following pairs);
    - ``max|s| ≤ ptol`` or ``max|y| ≤ gtol`` drops the pair *without* refreshing ``x_prev``, ``g_prev`` (the next pair
      spans from the last accepted point); with ``ptol_restart``/``gtol_restart`` the history is cleared and this
      call acts as a first call;
    - otherwise ``x_prev``, ``g_prev`` are refreshed and ``accept_pair`` decides whether to store it.

    The output is ``precondition_(g)`` on a flattened copy of the incoming update (after ``inner``); with
    ``scale_first`` it is multiplied by ``σ(u) = min(1, 1/‖u‖₁)`` (floored at ``max(1e-7, eps)/max|u|``) while
    ``step == 1``.

    Args:
        defaults: extra settings of the subclass.
        history_size: number of stored pairs.
        ptol, gtol: drop pairs with ``max|s| ≤ ptol`` / ``max|y| ≤ gtol`` (None disables).
        ptol_restart, gtol_restart: clear the history when the corresponding test triggers.
        scale_first: scale the first output by ``σ(u)``.
        update_freq: update the history every this many steps.
        damping: ``'powell'``, ``'double'`` or a callable ``(s, y, g, H) -> (s, y)``.
        inner: modules applied to the incoming update before preconditioning.

    Reference:
        J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., §7.2.

    Example:
        Subclasses implement ``accept_pair``, ``make_operator`` and ``precondition_``; see ``LBFGS`` and ``LSR1``.
    """

    _readonly_input = True

    def __init__(self, defaults: dict[str, Any], history_size: int, ptol: float | None, ptol_restart: bool,
                 gtol: float | None, gtol_restart: bool, scale_first: bool, update_freq: int,
                 damping: Literal["powell", "double"] | DampingStrategy | None, inner: Chainable | None):
        name = type(self).__name__
        if isinstance(history_size, bool) or not isinstance(history_size, int) or history_size < 1:
            raise ValueError(f"{name}: history_size must be a positive int, got {history_size!r}")
        if ptol is not None:
            check_range(name, "ptol", ptol, 0)
        if gtol is not None:
            check_range(name, "gtol", gtol, 0)
        for flag, value in (("ptol_restart", ptol_restart), ("gtol_restart", gtol_restart),
                            ("scale_first", scale_first)):
            if not isinstance(value, bool):
                raise TypeError(f"{name}: {flag} must be a bool, got {type(value).__name__}")
        check_damping(name, damping)
        if isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1:
            raise ValueError(f"{name}: update_freq must be a positive integer, got {update_freq!r}")
        defaults = dict(defaults, history_size=history_size, ptol=ptol, ptol_restart=ptol_restart, gtol=gtol,
                        gtol_restart=gtol_restart, scale_first=scale_first, damping=damping)
        super().__init__(defaults, update_freq=update_freq, inner=inner)

    # ------------------------------------------------------------------ to override
    @abstractmethod
    def accept_pair(self, s: torch.Tensor, y: torch.Tensor, sy: torch.Tensor, sy_f: float,
                    settings: dict[str, Any]) -> None:
        """Stores the pair (or not) in the history."""

    @abstractmethod
    def make_operator(self, n: int, device: torch.device, dtype: torch.dtype) -> LinearOperator:
        """The curvature operator built from the current history."""

    @abstractmethod
    def precondition_(self, g: torch.Tensor) -> torch.Tensor:
        """``H g`` computed in place on the flattened copy ``g`` (may return a new tensor)."""

    def on_history_change(self) -> None:
        """Called after the history changed (cached quantities derived from it must be recomputed)."""

    # ------------------------------------------------------------------ history
    def _histories(self, history_size: int) -> tuple[deque, ...]:
        st = self.global_state
        keys = self._history_keys
        if keys[0] not in st:
            for k in keys:
                st[k] = deque(maxlen=history_size)
        return tuple(st[k] for k in keys)

    _history_keys: tuple[str, ...] = ("s_history", "y_history")

    def _clear(self, x: torch.Tensor, g: torch.Tensor) -> None:
        """Clears the history and the step counter; the current point becomes the first point."""
        for k in self._history_keys:
            self.global_state[k].clear()
        self.global_state["x_prev"], self.global_state["g_prev"] = x, g
        self.global_state["step"] = 1
        self.on_history_change()

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        st = self.global_state
        s0 = settings[0]
        self._histories(s0["history_size"])
        x, g = flatten([p.detach() for p in params]), flatten(tensors)
        if "x_prev" not in st:
            st["x_prev"], st["g_prev"] = x, g
            st["step"] = st.get("step", 0) + 1
            return
        st["step"] += 1

        s = x - st["x_prev"]
        y = g - st["g_prev"]
        damping = s0["damping"]
        if damping is not None:
            s, y = apply_damping(damping, s, y, g, self.make_operator(x.numel(), x.device, x.dtype))
        sy = s.dot(y)
        smax, ymax, sy_f = torch.stack([s.abs().max(), y.abs().max(), sy]).tolist()
        if not is_finite(smax, ymax, sy_f):
            st["x_prev"], st["g_prev"] = x, g
            return
        ptol, gtol = s0["ptol"], s0["gtol"]
        if ptol is not None and smax <= ptol:
            if s0["ptol_restart"]:
                self._clear(x, g)
            return
        if gtol is not None and ymax <= gtol:
            if s0["gtol_restart"]:
                self._clear(x, g)
            return
        st["x_prev"], st["g_prev"] = x, g
        self.accept_pair(s, y, sy, sy_f, s0)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        u = self.precondition_(flatten(tensors))
        if settings[0]["scale_first"] and self.global_state.get("step") == 1:
            u.mul_(first_step_scale(u, max(1e-7, torch.finfo(u.dtype).eps)))
        return vec_to_tensors(u, tensors)

    def reset_for_online(self) -> None:
        super().reset_for_online()
        self.global_state.pop("x_prev", None)
        self.global_state.pop("g_prev", None)

    def get_H(self, var: Var) -> LinearOperator:
        p = var.params[0]
        n = sum(t.numel() for t in var.params)
        return self.make_operator(n, p.device, p.dtype)
