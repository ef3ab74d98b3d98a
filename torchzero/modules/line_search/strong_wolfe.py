"""``StrongWolfe``: bracketing + zoom line search for the strong Wolfe conditions (Nocedal & Wright Alg. 3.5/3.6)."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, TypeAlias

import torch

from ...core import Var
from ...utils.checks import check_choice, check_range
from ...utils.tensorlist import TensorList
from .interpolation import (
    Point,
    bisection,
    cubic_interpolate,
    polynomial_interpolate,
    polynomial_interpolate_retry,
    quadratic_interpolate,
)
from .line_search import LineSearchBase, MaxLineSearchItersReached, check_maxiter

Interpolation: TypeAlias = Literal["quadratic", "cubic", "bisection", "polynomial", "polynomial2"]
InitialStep: TypeAlias = Literal["first-order", "quadratic", "quadratic-clip", "previous", "fixed"]
_INTERPOLATIONS = ("quadratic", "cubic", "bisection", "polynomial", "polynomial2")
_A_INITS = ("first-order", "quadratic", "quadratic-clip", "previous", "fixed")


def _finite(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def interpolate_step(method: str, a1: float, f1: float, d1: float, a2: float, f2: float, d2: float,
                     bounds: tuple[float, float], points: Callable[[], Sequence[Point]]) -> float:
    """A trial step inside ``bounds`` from the two points ``(a1, f1, d1)``, ``(a2, f2, d2)`` (value and slope):
    ``'cubic'`` Hermite cubic minimiser; ``'quadratic'`` minimiser of the quadratic through the value and slope of
    the lower point and the value of the other (midpoint if not convex); ``'bisection'`` midpoint; ``'polynomial'``
    / ``'polynomial2'`` polynomial fit through all ``points()`` (see ``interpolation.py``)."""
    if method == "cubic":
        return cubic_interpolate(a1, f1, d1, a2, f2, d2, bounds)
    if method == "quadratic":
        if f1 <= f2:
            return quadratic_interpolate(a1, f1, d1, a2, f2, bounds)
        return quadratic_interpolate(a2, f2, d2, a1, f1, bounds)
    if method == "bisection":
        return bisection(*bounds)
    if method == "polynomial":
        return polynomial_interpolate(points(), bounds)
    return polynomial_interpolate_retry(points(), bounds)


def strong_wolfe_search(
    phi_d: Callable[[float], tuple[float, float]],
    f0: float,
    d0: float,
    a0: float,
    c1: float = 1e-4,
    c2: float = 0.9,
    a_max: float = 1e12,
    maxiter: int = 25,
    maxzoom: int = 10,
    tol_change: float = 1e-9,
    u_norm: Callable[[], float] = lambda: 1.0,
    interpolation: str = "cubic",
    points: Callable[[], Sequence[Point]] = lambda: [],
) -> tuple[float, bool]:
    """Bracketing + zoom search for ``φ(α) ≤ φ(0) + c1·α·φ'(0)`` and ``|φ'(α)| ≤ c2·|φ'(0)|``, for ``φ'(0) < 0``.

    Returns ``(α, wolfe)``: ``wolfe`` tells that both conditions hold at ``α``. Otherwise ``α`` is the best point of
    the final bracket, which satisfies sufficient decrease (or is 0), or ``a_max`` if the slope was still negative
    there.

    *Bracketing* (at most ``maxiter`` trials from ``min(a0, a_max)``): zoom on ``[α_{i−1}, α_i]`` if sufficient
    decrease fails, ``φ(α_i) > φ(α_{i−1})`` or a value is not finite; accept if the strong curvature test holds; zoom
    on ``[α_i, α_{i−1}]`` if ``φ'(α_i) ≥ 0``; else extrapolate by interpolation within
    ``[α_i + 0.01(α_i − α_{i−1}), min(10α_i, a_max)]``. If the trials run out, zoom on ``[0, α_last]``.

    *Zoom* (at most ``maxzoom`` trials; ``lo`` is the best point satisfying sufficient decrease): stop when the
    bracket width times ``u_norm()`` is below ``tol_change``; the trial is interpolated between the endpoints
    (ordered by α), or is the midpoint when an endpoint is not finite; a trial within 10% of the bracket width from an
    end (twice in a row, or outside) is moved to 10% from the nearer end, as in ``torch.optim.LBFGS``; then
    Nocedal–Wright Algorithm 3.6 updates the bracket.
    """
    armijo_slope = c1 * d0
    curvature = -c2 * d0

    def zoom(lo: tuple[float, float, float], hi: tuple[float, float, float]) -> tuple[float, bool]:
        insufficient_progress = False
        for _ in range(maxzoom):
            (a_lo, f_lo, _), (a_hi, f_hi, d_hi) = lo, hi
            low, high = (a_lo, a_hi) if a_lo <= a_hi else (a_hi, a_lo)
            if (high - low) * u_norm() < tol_change:
                break
            if not _finite(f_hi, d_hi):
                a = bisection(low, high)
            else:
                first, second = (lo, hi) if a_lo <= a_hi else (hi, lo)
                a = interpolate_step(interpolation, *first, *second, bounds=(low, high), points=points)
            eps = 0.1 * (high - low)
            if min(high - a, a - low) < eps:
                if insufficient_progress or a >= high or a <= low:
                    a = high - eps if abs(a - high) < abs(a - low) else low + eps
                    insufficient_progress = False
                else:
                    insufficient_progress = True
            else:
                insufficient_progress = False

            f, d = phi_d(a)
            if not _finite(f, d) or f > f0 + a * armijo_slope or f >= f_lo:
                hi = (a, f, d)
            else:
                if abs(d) <= curvature:
                    return a, True
                if d * (a_hi - a_lo) >= 0:
                    hi = lo
                lo = (a, f, d)
        return lo[0], False

    prev = (0.0, f0, d0)
    a = min(a0, a_max)
    for _ in range(maxiter):
        f, d = phi_d(a)
        if not _finite(f, d) or f > f0 + a * armijo_slope or f > prev[1]:
            return zoom(prev, (a, f, d))
        if abs(d) <= curvature:
            return a, True
        if d >= 0:
            return zoom((a, f, d), prev)
        if a >= a_max:
            return a, False
        bounds = (a + 0.01 * (a - prev[0]), min(10 * a, a_max))
        a_next = interpolate_step(interpolation, *prev, a, f, d, bounds=bounds, points=points)
        prev = (a, f, d)
        a = a_next
    # trials ran out: the last point satisfies sufficient decrease and is lower than φ(0)
    return zoom(prev, (0.0, f0, d0))


def initial_step(a_init: str, init_value: float, f0: float, d0: float, a_prev: float | None,
                 f0_prev: float | None, d0_prev: float | None, tiny: float) -> float:
    """The first trial step (Nocedal & Wright eqs. 3.60–3.61): ``'fixed'`` ``init_value``; ``'previous'`` the last
    accepted step; ``'first-order'`` ``α_prev·φ'_prev(0)/φ'(0)``; ``'quadratic'`` ``2(φ(0) − φ_prev(0))/φ'(0)`` (only if
    the loss decreased); ``'quadratic-clip'`` ``min(1, 1.01·quadratic)``. Each falls back to ``init_value`` without
    history, when ``φ'(0) ≥ −2·tiny`` (first-order and quadratic rules), when ``φ'_prev(0) ≥ 0`` (first-order), or
    when the result is not a positive finite number."""
    a0: float | None = None
    descent = d0 < -2 * tiny
    if a_init == "fixed":
        a0 = init_value
    elif a_init == "previous":
        a0 = a_prev
    elif a_init == "first-order":
        if a_prev is not None and d0_prev is not None and d0_prev < 0 and descent:
            a0 = a_prev * d0_prev / d0
    elif f0_prev is not None and descent and f0 < f0_prev:
        a0 = 2 * (f0 - f0_prev) / d0
        if a_init == "quadratic-clip":
            a0 = min(1.0, 1.01 * a0)
    if a0 is None or not math.isfinite(a0) or a0 <= 0:
        a0 = init_value
    return a0


class StrongWolfe(LineSearchBase):
    """Line search for a step satisfying the strong Wolfe conditions, by bracketing and zoom.

    The step is ``x ← x − α·u`` with ``α`` satisfying ``φ(α) ≤ φ(0) + c1·α·φ'(0)`` and ``|φ'(α)| ≤ c2·|φ'(0)|``
    (``φ(α) = f(x − α·u)``, ``φ'(α) = −∇f(x − α·u)ᵀu``); every trial evaluates loss and gradient, and evaluations are
    cached by ``α``.

    *Initial step* (``a_init``): ``'fixed'`` uses ``init_value``; ``'previous'`` the last accepted step;
    ``'first-order'`` ``α_prev·φ'_prev(0)/φ'(0)``; ``'quadratic'`` ``2(φ(0) − φ_prev(0))/φ'(0)`` (only if the loss
    decreased); ``'quadratic-clip'`` ``min(1, 1.01·quadratic)``; each falls back to ``init_value`` without history.
    The result is multiplied by ``initial_scale`` when ``adaptive`` and capped at ``a_max``. With ``'fixed'`` and the
    default ``init_value=1`` a quasi-Newton step is tried first and accepted at once if it satisfies the conditions.

    *Bracketing* (≤ ``maxiter`` trials) and *zoom* (≤ ``maxzoom`` trials) follow Nocedal & Wright Algorithms 3.5 and
    3.6 with the safeguards of ``torch.optim.LBFGS`` (see :func:`strong_wolfe_search`): the zoom stops when
    ``(hi − lo)·max|u| < tol_change`` (torch's measure), a trial within 10% of the bracket width from an end (twice in
    a row, or outside) is moved to 10% from the nearer end, and a non-finite endpoint makes the next trial the
    midpoint. With the defaults (``'cubic'``, ``c1=1e-4``, ``c2=0.9``, ``tol_change=1e-9``) this is the line search of
    ``torch.optim.LBFGS(line_search_fn='strong_wolfe')`` (same trials, same result), with three differences that only
    matter in unusual cases: the bracket is closed as soon as ``φ(α_i) > φ(α_{i−1})`` (torch: ``≥``, and only from
    the third trial on), the low end of the zoom bracket is the best point that satisfies sufficient decrease
    (torch: the lowest point), and the zoom has its own budget (torch shares ``max_ls = 25``).

    *Interpolation*: ``'cubic'`` Hermite cubic (as torch); ``'quadratic'`` quadratic through the value and slope of
    the lower point and the value of the other (midpoint if not convex); ``'bisection'`` midpoint; ``'polynomial'``
    Hermite polynomial through all finite points of this search minimised over the bounds (minFunc ``polyinterp``);
    ``'polynomial2'`` the same, retrying lower-order fits when the minimiser leaves the bounds.

    *Result*: a result with ``φ(α) > φ(0)`` or non-finite is rejected; with ``fallback=True`` the lowest evaluated
    point below ``φ(0)`` is used instead, else 0. If the zoom runs out of trials, its best point (which satisfies
    sufficient decrease but not the curvature condition) is returned. A non-finite ``φ(0)`` or ``φ'(0)`` gives 0.
    *Non-descent directions* (``φ'(0) ≥ 0``): the search returns 0 without evaluating, unless ``plus_minus=True`` and
    ``φ'(0) > 0``, in which case it searches along ``+u`` and returns a negative ``α``.
    Success stores ``α``, ``φ(0)``, ``φ'(0)`` (``global_state['a_prev']``, ``'phi_0_prev'``, ``'dphi_0_prev'``) and
    resets ``global_state['initial_scale']`` to 1; a failed search returns 0 (parameters stay at ``x₀``) and, if
    ``adaptive``, halves ``initial_scale`` (reset to ``max/2`` below ``2·tiny``). ``maxeval`` caps the number of
    evaluations (then the lowest point seen is used).

    Where the parameters end up: see ``LineSearchBase``. On the direct path the accepted trial's loss and gradient
    are handed to the optimizer (``Var.set_result_evaluation``) so that the next step need not evaluate them again.

    Args:
        c1: sufficient decrease constant. Defaults to 1e-4.
        c2: curvature constant, ``c1 < c2 < 1`` (0.9 for quasi-Newton, 0.1 for conjugate gradient). Defaults to 0.9.
        a_init: initial step strategy, see above. Defaults to ``'fixed'``.
        a_max: largest step. Defaults to 1e12.
        init_value: initial step for ``'fixed'`` and the fallback of the other strategies. Defaults to 1.
        maxiter: maximum number of bracketing trials. Defaults to 25.
        maxzoom: maximum number of zoom trials. Defaults to 10.
        maxeval: maximum number of evaluations in total (None: no cap). Defaults to None.
        tol_change: the zoom stops when the bracket width times ``max|u|`` is below this. Defaults to 1e-9.
        interpolation: ``'cubic'``, ``'quadratic'``, ``'bisection'``, ``'polynomial'`` or ``'polynomial2'``.
            Defaults to ``'cubic'``.
        adaptive: halve the initial step after a failed search. Defaults to True.
        fallback: on a rejected result, use the lowest evaluated point below ``φ(0)``. Defaults to False.
        plus_minus: search along ``+u`` when ``u`` points uphill. Defaults to False.

    Reference:
        J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., §3.5: Algorithms 3.5 and 3.6, interpolation
        eq. 3.59, initial step eqs. 3.60–3.61; M. Schmidt, minFunc ``polyinterp``.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.LBFGS(), tz.m.StrongWolfe())
        cg = tz.Modular(model.parameters(), tz.m.PolakRibiere(), tz.m.StrongWolfe(c2=0.1, a_init="first-order"))
        ```
    """

    def __init__(self, c1: float = 0.0001, c2: float = 0.9, a_init: InitialStep = "fixed",
                 a_max: float = 1000000000000.0, init_value: float = 1, maxiter: int = 25, maxzoom: int = 10,
                 maxeval: int | None = None, tol_change: float = 1e-09, interpolation: Interpolation = "cubic",
                 adaptive: bool = True, fallback: bool = False, plus_minus: bool = False):
        owner = "StrongWolfe"
        check_range(owner, "c1", c1, 0, 1, low_inclusive=False, high_inclusive=False)
        check_range(owner, "c2", c2, c1, 1, low_inclusive=False, high_inclusive=False)
        check_choice(owner, "a_init", a_init, _A_INITS)
        check_choice(owner, "interpolation", interpolation, _INTERPOLATIONS)
        check_range(owner, "a_max", a_max, low=0, low_inclusive=False)
        check_range(owner, "init_value", init_value, low=0, low_inclusive=False)
        check_maxiter(owner, "maxiter", maxiter, allow_none=False)
        check_maxiter(owner, "maxzoom", maxzoom, allow_none=False)
        check_range(owner, "tol_change", tol_change, low=0)
        defaults = dict(c1=c1, c2=c2, a_init=a_init, a_max=a_max, init_value=init_value, maxiter=maxiter,
                        maxzoom=maxzoom, maxeval=maxeval, tol_change=tol_change, interpolation=interpolation,
                        adaptive=adaptive, fallback=fallback, plus_minus=plus_minus)
        super().__init__(defaults, maxiter=maxeval)

    def search(self, update: list[torch.Tensor], var: Var) -> float:
        s = self.defaults
        finfo = torch.finfo(var.params[0].dtype)
        f0, d0 = self.evaluate_f_d(0, var)
        if not (math.isfinite(f0) and math.isfinite(d0)):
            return 0.0
        sign = 1.0
        if d0 >= 0:
            if not (s["plus_minus"] and d0 > 0):
                return 0.0
            sign, d0 = -1.0, -d0

        gs = self.global_state
        a0 = initial_step(s["a_init"], s["init_value"], f0, d0, gs.get("a_prev"), gs.get("phi_0_prev"),
                          gs.get("dphi_0_prev"), finfo.tiny)
        initial_scale = gs.get("initial_scale", 1.0)
        if s["adaptive"]:
            a0 *= initial_scale

        def phi_d(alpha: float) -> tuple[float, float]:
            f, d = self.evaluate_f_d(sign * alpha, var)
            return f, sign * d

        def points() -> list[Point]:
            return [(sign * a, f, None if d is None else sign * d) for a, f, d in self.evaluated_points()]

        u_norm_cache: list[float] = []

        def u_norm() -> float:
            if not u_norm_cache:
                u_norm_cache.append(float(TensorList(update).global_vector_norm(math.inf)))
            return u_norm_cache[0]

        try:
            alpha, _ = strong_wolfe_search(phi_d, f0, d0, a0, c1=s["c1"], c2=s["c2"], a_max=s["a_max"],
                                           maxiter=s["maxiter"], maxzoom=s["maxzoom"], tol_change=s["tol_change"],
                                           u_norm=u_norm, interpolation=s["interpolation"], points=points)
        except MaxLineSearchItersReached:  # `maxeval` used up: the lowest point seen
            alpha = sign * self._best_alpha

        f_alpha = self.evaluate_f(sign * alpha, var) if alpha != 0 else f0
        if alpha == 0 or not math.isfinite(alpha) or not math.isfinite(f_alpha) or f_alpha > f0:
            alpha = 0.0
            if s["fallback"]:
                best = min(((a, f) for a, f, _ in points() if a > 0 and f < f0), key=lambda p: p[1], default=None)
                if best is not None:
                    alpha = best[0]

        if alpha == 0:
            if s["adaptive"]:
                initial_scale /= 2
                gs["initial_scale"] = initial_scale if initial_scale >= 2 * finfo.tiny else finfo.max / 2
            return 0.0
        gs["a_prev"] = alpha
        gs["phi_0_prev"] = f0
        gs["dphi_0_prev"] = d0
        gs["initial_scale"] = 1.0
        return sign * alpha
