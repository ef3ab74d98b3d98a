"""Step-length interpolation for line searches: cubic, quadratic, bisection and polynomial (minFunc ``polyinterp``).

All functions work on Python floats (values of φ(α) and φ'(α) along a search line) and return a trial step inside
``bounds = (low, high)``. When the data can't give a minimiser (non-finite values, a model that isn't convex,
a degenerate bracket) they return the midpoint of the bounds, so a caller always gets a finite point to try.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Point = tuple[float, float, float | None]
"""``(α, φ(α), φ'(α) or None)``: one evaluated point of a line search."""


def _midpoint(low: float, high: float) -> float:
    return (low + high) / 2.0


def _ordered_bounds(x1: float, x2: float, bounds: tuple[float, float] | None) -> tuple[float, float]:
    if bounds is not None:
        return bounds[0], bounds[1]
    return (x1, x2) if x1 <= x2 else (x2, x1)


def cubic_interpolate(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
                      bounds: tuple[float, float] | None = None) -> float:
    """Minimiser of the cubic Hermite interpolant of ``(x1, f1, g1)`` and ``(x2, f2, g2)``, clamped to ``bounds``
    (defaults to the interval between the points).

    The same formula, in the same order of operations, as ``torch.optim.lbfgs._cubic_interpolate`` (Nocedal &
    Wright eq. 3.59): ``d1 = g1 + g2 − 3(f1 − f2)/(x1 − x2)``, ``d2 = √(d1² − g1 g2)``,
    ``x = x2 − (x2 − x1)(g2 + d2 − d1)/(g2 − g1 + 2 d2)`` for ``x1 ≤ x2`` (mirrored otherwise; the result does not
    depend on the order of the points). Without a real minimiser (``d1² < g1 g2``), or with non-finite data, the
    midpoint of the bounds is returned.
    """
    low, high = _ordered_bounds(x1, x2, bounds)
    if x1 == x2 or not all(math.isfinite(v) for v in (x1, f1, g1, x2, f2, g2)):
        return _midpoint(low, high)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    if not d2_square >= 0:
        return _midpoint(low, high)
    d2 = math.sqrt(d2_square)
    if x1 <= x2:
        denom = g2 - g1 + 2 * d2
        min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / denom) if denom != 0 else math.nan
    else:
        denom = g1 - g2 + 2 * d2
        min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / denom) if denom != 0 else math.nan
    if not math.isfinite(min_pos):
        return _midpoint(low, high)
    return min(max(min_pos, low), high)


def quadratic_interpolate(x1: float, f1: float, g1: float, x2: float, f2: float,
                          bounds: tuple[float, float] | None = None) -> float:
    """Minimiser of the quadratic through ``f1``, ``g1`` (value and slope at ``x1``) and ``f2`` (value at ``x2``),
    clamped to ``bounds`` (defaults to the interval between the points).

    ``q(x) = f1 + g1 (x − x1) + c (x − x1)²`` with ``c = (f2 − f1 − g1 (x2 − x1)) / (x2 − x1)²``; the minimiser is
    ``x1 − g1 / (2c)`` (Nocedal & Wright eq. 3.57, written for any ``x1``, not only ``x1 = 0``). If ``c ≤ 0`` (the
    quadratic is not convex) or the data are not finite, the midpoint of the bounds is returned.
    """
    low, high = _ordered_bounds(x1, x2, bounds)
    dx = x2 - x1
    if dx == 0 or not all(math.isfinite(v) for v in (x1, f1, g1, x2, f2)):
        return _midpoint(low, high)
    c = (f2 - f1 - g1 * dx) / (dx * dx)
    if not (math.isfinite(c) and c > 0):
        return _midpoint(low, high)
    x = x1 - g1 / (2 * c)
    if not math.isfinite(x):
        return _midpoint(low, high)
    return min(max(x, low), high)


def bisection(low: float, high: float) -> float:
    """Midpoint of ``[low, high]``."""
    return _midpoint(low, high)


def _fit(points: Sequence[Point], center: float, scale: float) -> np.ndarray | None:
    """Coefficients (highest power first, in the scaled variable ``t = (α − center)/scale``) of the Hermite
    polynomial through the values and known slopes of ``points``; None if there are fewer than 2 conditions."""
    rows: list[np.ndarray] = []
    rhs: list[float] = []
    n_conditions = sum(1 + (g is not None) for _, _, g in points)
    order = n_conditions - 1
    if order < 1:
        return None
    powers = np.arange(order, -1, -1, dtype=np.float64)
    for x, f, _ in points:
        t = (x - center) / scale
        rows.append(t**powers)
        rhs.append(f)
    for x, _, g in points:
        if g is None:
            continue
        t = (x - center) / scale
        # d/dt of t^k is k t^(k-1); the slope in t is scale·φ'(α)
        row = np.zeros(order + 1)
        row[:-1] = powers[:-1] * t ** (powers[:-1] - 1)
        rows.append(row)
        rhs.append(g * scale)
    A = np.stack(rows)
    b = np.asarray(rhs, dtype=np.float64)
    coeffs, *_ = np.linalg.lstsq(A, b, rcond=None)
    if not np.all(np.isfinite(coeffs)):
        return None
    return coeffs


def _minimise_fit(coeffs: np.ndarray, points: Sequence[Point], low: float, high: float, center: float,
                  scale: float) -> tuple[float, bool]:
    """Minimum of the fitted polynomial over ``[low, high]`` among the bounds, the points and the real roots of its
    derivative. Returns ``(α, interior)`` where ``interior`` tells that the minimum is a critical point strictly
    inside the bounds."""
    t_low, t_high = (low - center) / scale, (high - center) / scale
    candidates = [(t_low, False), (t_high, False)]
    candidates += [((x - center) / scale, False) for x, _, _ in points]
    if len(coeffs) > 2:
        d1 = np.polyder(coeffs)
        d2 = np.polyder(d1)
        for r in np.roots(d1):
            if abs(r.imag) > 1e-8 * max(1.0, abs(r.real)):
                continue
            t = float(r.real)
            for _ in range(2):  # polish the eigenvalue-based root with Newton steps on the derivative
                curvature = float(np.polyval(d2, t))
                if curvature == 0 or not math.isfinite(curvature):
                    break
                t -= float(np.polyval(d1, t)) / curvature
            if math.isfinite(t):
                candidates.append((t, True))
    best_t, best_v, best_interior = None, math.inf, False
    for t, critical in candidates:
        if not (t_low <= t <= t_high):
            continue
        v = float(np.polyval(coeffs, t))
        if math.isfinite(v) and v < best_v:
            best_t, best_v, best_interior = t, v, critical and t_low < t < t_high
    if best_t is None:
        return _midpoint(low, high), False
    return min(max(center + best_t * scale, low), high), best_interior


def polynomial_interpolate(points: Sequence[Point], bounds: tuple[float, float]) -> float:
    """Minimiser over ``bounds`` of the Hermite polynomial through all finite ``points`` (minFunc ``polyinterp``).

    Each point contributes its value and, when known, its slope; the polynomial has one coefficient per condition.
    It is fitted in the scaled variable ``t = (α − c)/s`` (c, s: centre and half-width of the points and bounds) by
    least squares, which keeps the fit usable with many points, and minimised among the bounds, the points and the
    real critical points inside the bounds. Fewer than 2 conditions give the midpoint.
    """
    low, high = bounds
    pts = [p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])]
    pts = [(x, f, g if g is not None and math.isfinite(g) else None) for x, f, g in pts]
    if len(pts) == 0 or not (math.isfinite(low) and math.isfinite(high)):
        return _midpoint(low, high)
    xs = [x for x, _, _ in pts] + [low, high]
    center = (max(xs) + min(xs)) / 2
    scale = (max(xs) - min(xs)) / 2
    if scale == 0:
        return _midpoint(low, high)
    coeffs = _fit(pts, center, scale)
    if coeffs is None:
        return _midpoint(low, high)
    return _minimise_fit(coeffs, pts, low, high, center, scale)[0]


def polynomial_interpolate_retry(points: Sequence[Point], bounds: tuple[float, float]) -> float:
    """Like :func:`polynomial_interpolate`, but retries lower-order fits when the minimiser of the fit is not an
    interior critical point (i.e. the fit's own minimiser lies outside the bounds).

    The points are sorted by distance from the middle of the bounds and the farthest one is dropped at each retry,
    down to two points; the first fit whose minimum over the bounds is an interior critical point is used. If none
    is, the fit of the two nearest points decides (clamped to the bounds).
    """
    low, high = bounds
    pts = [p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])]
    pts = [(x, f, g if g is not None and math.isfinite(g) else None) for x, f, g in pts]
    if len(pts) == 0 or not (math.isfinite(low) and math.isfinite(high)):
        return _midpoint(low, high)
    mid = (low + high) / 2
    pts.sort(key=lambda p: abs(p[0] - mid))
    last: float | None = None
    for n in range(len(pts), 0, -1):
        subset = pts[:n]
        xs = [x for x, _, _ in subset] + [low, high]
        center = (max(xs) + min(xs)) / 2
        scale = (max(xs) - min(xs)) / 2
        if scale == 0:
            continue
        coeffs = _fit(subset, center, scale)
        if coeffs is None:
            continue
        alpha, interior = _minimise_fit(coeffs, subset, low, high, center, scale)
        if interior:
            return alpha
        last = alpha
        if n <= 2:
            break
    return _midpoint(low, high) if last is None else last
