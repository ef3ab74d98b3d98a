"""Backtracking line searches: ``Backtracking`` and ``AdaptiveBacktracking`` (learned initial step)."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, TypeAlias

import torch

from ...core import Var
from ...utils.checks import check_choice, check_range
from .line_search import LineSearchBase, check_maxiter

Condition: TypeAlias = Literal["armijo", "curvature", "strong_curvature", "wolfe", "strong_wolfe", "goldstein",
                               "decrease"]
_USABLE = ("armijo", "goldstein", "decrease")
_NEED_DERIVATIVE = ("curvature", "strong_curvature", "wolfe", "strong_wolfe")


def sufficient_decrease(condition: str, f_a: float, f0: float, alpha: float, d0: float, c: float) -> bool:
    """Whether the loss ``f_a`` at step ``alpha`` passes ``condition`` (``m = min(φ'(0), 0)``):

    - ``'armijo'``: ``φ(α) < φ(0) + c·α·m``;
    - ``'decrease'``: ``φ(α) < φ(0)``;
    - ``'goldstein'``: ``φ(0) + (1 − c)·α·m < φ(α) < φ(0) + c·α·m``.

    A non-finite ``f_a`` never passes.
    """
    if not math.isfinite(f_a):
        return False
    if condition == "decrease":
        return f_a < f0
    m = min(d0, 0.0)
    if condition == "armijo":
        return f_a < f0 + c * alpha * m
    if condition == "goldstein":
        return f0 + (1 - c) * alpha * m < f_a < f0 + c * alpha * m
    raise ValueError(f"unknown condition {condition!r}")


def backtracking_search(phi: Callable[[float], float], f0: float, d0: float, init: float, beta: float, c: float,
                        condition: str, maxiter: int) -> tuple[float | None, int]:
    """Tries ``α = init, init·β, init·β², …`` (at most ``maxiter`` values) and returns ``(α, trials)`` for the first
    ``α`` that passes ``condition`` (see :func:`sufficient_decrease`), or ``(None, maxiter)`` if none does. A
    non-finite ``φ(α)`` just shrinks ``α``."""
    alpha = init
    for i in range(maxiter):
        if sufficient_decrease(condition, phi(alpha), f0, alpha, d0, c):
            return alpha, i + 1
        alpha *= beta
    return None, maxiter


def _check_backtracking_args(owner: str, init: float, beta: float, c: float, condition: str, maxiter: int) -> None:
    check_range(owner, "init", init, low=0, low_inclusive=False)
    check_range(owner, "beta", beta, 0, 1, low_inclusive=False, high_inclusive=False)
    check_choice(owner, "condition", condition, _USABLE + _NEED_DERIVATIVE)
    if condition in _NEED_DERIVATIVE:
        raise ValueError(f"{owner}: condition {condition!r} needs φ'(α) at trial points, which a backtracking search "
                         f"does not compute; use one of {_USABLE}, or StrongWolfe for curvature conditions")
    if condition == "goldstein":
        check_range(owner, "c", c, 0, 0.5, low_inclusive=False, high_inclusive=False)
    else:
        check_range(owner, "c", c, 0, 1, high_inclusive=False)
    check_maxiter(owner, "maxiter", maxiter, allow_none=False)


def _initial_values(ls: LineSearchBase, var: Var, c: float, condition: str) -> tuple[float, float] | None:
    """``(φ(0), φ'(0))``, the slope only when the condition uses it (``c ≠ 0``), else 0; None if not finite."""
    if c != 0 and condition in ("armijo", "goldstein"):
        f0, d0 = ls.evaluate_f_d(0, var)
    else:
        f0, d0 = ls.evaluate_f(0, var), 0.0
    if not (math.isfinite(f0) and math.isfinite(d0)):
        return None
    return f0, d0


class Backtracking(LineSearchBase):
    """Backtracking line search: shrinks the step by ``beta`` until a sufficient-decrease condition holds.

    The step is ``x ← x − α·u``. It tries ``α = init·k, init·k·β, init·k·β², …`` (``k``: scale carried over from
    failed searches, 1 normally) for at most ``maxiter`` loss-only evaluations and accepts the first ``α`` with
    (``φ(α) = f(x − α·u)``, ``m = min(φ'(0), 0)``, ``φ'(0) = −∇f(x)ᵀu``):

    - ``'armijo'``: ``φ(α) < φ(0) + c·α·m``;
    - ``'decrease'``: ``φ(α) < φ(0)``;
    - ``'goldstein'``: ``φ(0) + (1 − c)·α·m < φ(α) < φ(0) + c·α·m`` (needs ``0 < c < 1/2``).

    The gradient at ``x`` is requested only when ``c ≠ 0`` and the condition uses the slope; otherwise the slope is
    taken as 0. Every accepted step satisfies its condition. A non-finite ``φ(α)`` just shrinks ``α``; a non-finite
    ``φ(0)`` or ``φ'(0)`` ends the search at once with ``α = 0``. With a non-descent direction (``φ'(0) ≥ 0``)
    ``m = 0`` and the test is plain decrease, which small uphill steps fail, so the search normally ends with
    ``α = 0``. On success ``k`` is reset to 1; on failure the step is 0 (the parameters stay at ``x₀``) and, if
    ``adaptive``, ``k ← k·β^maxiter`` so that the next search resumes where this one stopped (``k`` is reset to
    ``max/2`` of the dtype once it falls below ``2·tiny``). State: ``global_state['scale']`` (k).

    The curvature conditions (``'curvature'``, ``'strong_curvature'``, ``'wolfe'``, ``'strong_wolfe'``) need
    ``φ'(α)``, which backtracking does not compute; they raise ``ValueError`` here (use ``StrongWolfe``).

    Where the parameters end up: see ``LineSearchBase`` (written to ``x₀ − α·lr·u`` when last or before ``LR``, else
    restored to ``x₀`` with the update scaled by ``α``). Trials are loss-only, so the next step evaluates the
    gradient at the accepted point.

    Deviation from the reference implementation: it also returned the previous trial when the loss rose again while
    the previous trial was below ``φ(0)``; that trial fails the condition, so it is not done here.

    Args:
        init: initial step size. Defaults to 1.
        beta: multiplier of the step after each rejected trial, in (0, 1). Defaults to 0.5.
        c: sufficient decrease constant. Defaults to 1e-4.
        condition: acceptance test, see above. Defaults to ``'armijo'``.
        maxiter: maximum number of trial evaluations. Defaults to 10.
        adaptive: carry the scale of a failed search over to the next one. Defaults to True.

    Reference:
        L. Armijo, "Minimization of functions having Lipschitz continuous first partial derivatives", Pacific J.
        Math. 16(1), 1966; J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., Algorithm 3.1, eqs. 3.4
        and 3.11.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.LBFGS(), tz.m.Backtracking())
        ```
    """

    def __init__(self, init: float = 1.0, beta: float = 0.5, c: float = 0.0001, condition: Condition = "armijo",
                 maxiter: int = 10, adaptive: bool = True):
        _check_backtracking_args("Backtracking", init, beta, c, condition, maxiter)
        super().__init__(dict(init=init, beta=beta, c=c, condition=condition, maxiter=maxiter, adaptive=adaptive))

    def search(self, update: list[torch.Tensor], var: Var) -> float:
        s = self.defaults
        init, beta, c, condition, maxiter = s["init"], s["beta"], s["c"], s["condition"], s["maxiter"]
        values = _initial_values(self, var, c, condition)
        if values is None:
            return 0.0
        f0, d0 = values
        finfo = torch.finfo(var.params[0].dtype)
        scale = self.global_state.get("scale", 1.0)

        alpha, _ = backtracking_search(lambda a: self.evaluate_f(a, var), f0, d0, init * scale, beta, c, condition,
                                       maxiter)
        if alpha is not None:
            self.global_state["scale"] = 1.0
            return alpha
        if s["adaptive"]:
            scale *= beta**maxiter
            self.global_state["scale"] = scale if scale >= 2 * finfo.tiny else finfo.max / 2
        return 0.0


class AdaptiveBacktracking(LineSearchBase):
    """Backtracking line search with an initial step and shrink factor learned from previous searches.

    State ``global_state['initial_scale']`` (1) and ``global_state['beta_scale']`` (1); each search backtracks
    from ``init_eff = init·initial_scale`` with factor ``β_eff = beta·beta_scale`` for at most ``maxiter`` loss-only
    trials, accepting as ``Backtracking`` does. After a success with step ``α``:

    - if ``α = init_eff`` (first trial accepted) and ``target_iters > 0``:
      ``initial_scale ← min(initial_scale·nplus^target_iters, max/2)``;
    - otherwise the start that would have needed ``target_iters`` reductions is ``α/β_eff^target_iters``, and
      ``initial_scale ← lerp(initial_scale, α/(β_eff^target_iters·init), 1 − scale_beta)``;
    - ``beta_scale ← min(1, beta_scale·√1.5)``.

    A failure returns 0 (the parameters stay at ``x₀``) and sets ``beta_scale ← beta_scale/1.5``.
    Non-finite values and non-descent directions are handled as in ``Backtracking``.

    Deviation from the reference implementation: it divided the target by ``init_eff`` instead of ``init`` and
    used a single factor ``1/β_eff`` whatever ``target_iters``, which makes ``initial_scale`` oscillate.

    Args:
        init: initial step size before scaling. Defaults to 1.
        beta: shrink factor, in (0, 1). Defaults to 0.5.
        c: sufficient decrease constant. Defaults to 1e-4.
        condition: ``'armijo'``, ``'goldstein'`` or ``'decrease'`` (see ``Backtracking``). Defaults to ``'armijo'``.
        maxiter: maximum number of trials per search. Defaults to 20.
        target_iters: number of reductions the next search should need. Defaults to 1.
        nplus: growth of ``initial_scale`` per target iteration when the first trial is accepted. Defaults to 2.
        scale_beta: momentum of ``initial_scale`` updates (0: jump to the target). Defaults to 0.

    Reference:
        J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., §3.1 and §3.5 (initial step heuristics).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.AdaptiveBacktracking())
        ```
    """

    def __init__(self, init: float = 1.0, beta: float = 0.5, c: float = 0.0001, condition: Condition = "armijo",
                 maxiter: int = 20, target_iters: int = 1, nplus: float = 2.0, scale_beta: float = 0.0):
        owner = "AdaptiveBacktracking"
        _check_backtracking_args(owner, init, beta, c, condition, maxiter)
        if isinstance(target_iters, bool) or not isinstance(target_iters, int) or target_iters < 0:
            raise ValueError(f"{owner}: target_iters must be a non-negative int, got {target_iters!r}")
        check_range(owner, "nplus", nplus, low=1)
        check_range(owner, "scale_beta", scale_beta, 0, 1, high_inclusive=False)
        super().__init__(dict(init=init, beta=beta, c=c, condition=condition, maxiter=maxiter,
                              target_iters=target_iters, nplus=nplus, scale_beta=scale_beta))

    def search(self, update: list[torch.Tensor], var: Var) -> float:
        s = self.defaults
        init, beta, c, condition, maxiter = s["init"], s["beta"], s["c"], s["condition"], s["maxiter"]
        target_iters, nplus, scale_beta = s["target_iters"], s["nplus"], s["scale_beta"]
        values = _initial_values(self, var, c, condition)
        if values is None:
            return 0.0
        f0, d0 = values
        finfo = torch.finfo(var.params[0].dtype)
        initial_scale = self.global_state.get("initial_scale", 1.0)
        beta_scale = self.global_state.get("beta_scale", 1.0)
        init_eff = init * initial_scale
        beta_eff = beta * beta_scale

        alpha, trials = backtracking_search(lambda a: self.evaluate_f(a, var), f0, d0, init_eff, beta_eff, c,
                                            condition, maxiter)
        if alpha is None:
            self.global_state["beta_scale"] = beta_scale / 1.5
            return 0.0

        if trials == 1 and target_iters > 0:
            initial_scale = min(initial_scale * nplus**target_iters, finfo.max / 2)
        else:
            target = alpha / beta_eff**target_iters
            initial_scale = initial_scale + (1 - scale_beta) * (target / init - initial_scale)
        self.global_state["initial_scale"] = initial_scale
        self.global_state["beta_scale"] = min(1.0, beta_scale * math.sqrt(1.5))
        return alpha
