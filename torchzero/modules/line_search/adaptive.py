"""``AdaptiveTracking``: a loss-only search that grows or shrinks the previous step until the loss stops falling."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ...core import Var
from ...utils.checks import check_range
from .line_search import LineSearchBase, check_maxiter


def adaptive_tracking(phi: Callable[[float], float], f0: float, a0: float, nplus: float, nminus: float,
                      maxiter: int) -> float:
    """Grows or shrinks ``a0`` while the loss improves; returns the step (0 on failure).

    If ``φ(a0) > φ(0)`` or is non-finite, ``α`` is multiplied by ``nminus`` while the loss keeps decreasing (or the
    current one is non-finite); otherwise it is multiplied by ``nplus`` while the loss does not increase. At most
    ``maxiter`` trials after ``a0``. The last point before the trend reversed is returned if it is below ``φ(0)``,
    else 0. If the forward phase stopped after one extra trial (``a0`` was already the best), ``a0·nminus`` is
    returned: a smaller step that was not evaluated.
    """
    f_a = phi(a0)
    alpha = a0
    if not math.isfinite(f_a) or f_a > f0:
        for _ in range(maxiter):
            a_new = alpha * nminus
            f_new = phi(a_new)
            if not math.isfinite(f_a) or f_new < f_a:
                alpha, f_a = a_new, f_new
                continue
            break
        return alpha if f_a < f0 else 0.0

    for i in range(maxiter):
        a_new = alpha * nplus
        f_new = phi(a_new)
        if math.isfinite(f_new) and f_new <= f_a:
            alpha, f_a = a_new, f_new
            continue
        if i == 0:  # the starting step was the best: take a smaller one
            return a0 * nminus if f_a < f0 else 0.0
        break
    return alpha if f_a < f0 else 0.0


class AdaptiveTracking(LineSearchBase):
    """Loss-only line search that starts from the previous step and grows or shrinks it until the trend reverses.

    Starts at ``a₀ = a_prev·k`` (``a_prev``: last accepted step, initially ``init``; ``k``: scale carried over from
    failed searches when ``adaptive``; if ``a₀ < 2·tiny``, ``max/2`` of the dtype is used). If ``φ(a₀) > φ(0)`` or is
    non-finite it multiplies ``α`` by ``nminus`` while the loss keeps decreasing (or is non-finite); otherwise it
    multiplies by ``nplus`` while the loss does not increase. It returns the last point before the trend reversed,
    provided it is below ``φ(0)``; else 0. Special case: if the forward phase stopped after one extra trial (the
    start was already best), the returned step is ``a₀·nminus``, which was not evaluated; the parameters are then
    left at that unevaluated point (on the direct path) and the next step evaluates it.

    Success stores ``a_prev = α`` and resets ``k`` to 1; failure (α = 0, parameters stay at ``x₀``) sets
    ``k ← k·nminus^maxiter`` and ``a_prev = init``. A non-finite ``φ(0)`` ends the search with α = 0.
    State: ``global_state['a_prev']``, ``global_state['scale']`` (k).

    Args:
        init: first step size. Defaults to 1.
        nplus: growth factor (> 1). Defaults to 2.
        nminus: shrink factor, in (0, 1). Defaults to 0.5.
        maxiter: maximum number of trials after the first. Defaults to 10.
        adaptive: carry the scale of a failed search over to the next one. Defaults to True.

    Reference:
        none (a library heuristic in the spirit of Nocedal & Wright §3.5 initial-step rules).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.AdaptiveTracking(init=0.1))
        ```
    """

    def __init__(self, init: float = 1.0, nplus: float = 2, nminus: float = 0.5, maxiter: int = 10,
                 adaptive: bool = True):
        owner = "AdaptiveTracking"
        check_range(owner, "init", init, low=0, low_inclusive=False)
        check_range(owner, "nplus", nplus, low=1, low_inclusive=False)
        check_range(owner, "nminus", nminus, 0, 1, low_inclusive=False, high_inclusive=False)
        check_maxiter(owner, "maxiter", maxiter, allow_none=False)
        super().__init__(dict(init=init, nplus=nplus, nminus=nminus, maxiter=maxiter, adaptive=adaptive))

    def search(self, update: list[torch.Tensor], var: Var) -> float:
        s = self.defaults
        init, nplus, nminus, maxiter = s["init"], s["nplus"], s["nminus"], s["maxiter"]
        f0 = self.evaluate_f(0, var)
        if not math.isfinite(f0):
            return 0.0
        finfo = torch.finfo(var.params[0].dtype)
        scale = self.global_state.get("scale", 1.0) if s["adaptive"] else 1.0
        a0 = self.global_state.get("a_prev", init) * scale
        if a0 < 2 * finfo.tiny:
            a0 = finfo.max / 2

        alpha = adaptive_tracking(lambda a: self.evaluate_f(a, var), f0, a0, nplus, nminus, maxiter)
        if alpha != 0:
            self.global_state["a_prev"] = alpha
            self.global_state["scale"] = 1.0
            return alpha
        self.global_state["a_prev"] = init
        if s["adaptive"]:
            self.global_state["scale"] = scale * nminus**maxiter
        return 0.0
