"""Adaptive step sizes: ``PolyakStepSize``, ``BarzilaiBorwein``, ``BBStab`` and ``AdGD``.

Each computes a scalar ``α`` in its update phase (from the raw gradient when ``use_grad=True``, else from the
incoming update) and multiplies the output of ``inner`` (or the incoming update) by it. An ``α`` is *acceptable* if it
is finite and ``2·tiny ≤ α ≤ max/2`` (``finfo`` of the parameters' dtype); otherwise the module takes the *epsilon
step* ``e(u, a₀)``: the factor 1 if ``max|u| < a₀``, ``a₀/max|u|`` if ``max|u| < 1``, else ``a₀`` (a tiny step whose
largest entry is about ``a₀``). ``get_H`` returns ``ScaledIdentity(1/α)``, the curvature model ``B = I/α`` (``α = 1``
when the stored value is missing or unacceptable).

``PolyakStepSize`` and ``BarzilaiBorwein`` keep ``α`` as a 0-d tensor on the parameters' device (no host sync);
``BBStab`` and ``AdGD`` branch on it, so they read their few scalars to the host once per step.
"""
from __future__ import annotations

import math
from typing import Any, Literal, TypeAlias

import torch

from ...core import Chainable, Transform, Var
from ...utils.checks import check_choice, check_positive, check_range
from ...utils.linalg.linear_operator import ScaledIdentity
from ...utils.tensorlist import TensorList

BBType: TypeAlias = Literal["long", "short", "geom", "geom-fallback"]
_BB_TYPES = ("long", "short", "geom", "geom-fallback")


# --------------------------------------------------------------------------------------------------
# shared math
# --------------------------------------------------------------------------------------------------
def acceptable_mask(alpha: torch.Tensor) -> torch.Tensor:
    """Whether the 0-d tensor ``alpha`` is finite and within ``[2·tiny, max/2]`` (a 0-d bool tensor)."""
    finfo = torch.finfo(alpha.dtype)
    return torch.isfinite(alpha) & (alpha >= 2 * finfo.tiny) & (alpha <= finfo.max / 2)


def is_acceptable(alpha: float | None, dtype: torch.dtype) -> bool:
    """Python-float version of :func:`acceptable_mask`; None is not acceptable."""
    if alpha is None:
        return False
    finfo = torch.finfo(dtype)
    return math.isfinite(alpha) and 2 * finfo.tiny <= alpha <= finfo.max / 2


def epsilon_step(tensors: list[torch.Tensor], a0: float) -> torch.Tensor:
    """The epsilon-step factor ``e(u, a₀)`` as a 0-d tensor: 1 if ``max|u| < a₀``, ``a₀/max|u|`` if ``max|u| < 1``,
    else ``a₀``."""
    m = TensorList(tensors).global_vector_norm(math.inf)
    one = torch.ones_like(m)
    return torch.where(m < a0, one, torch.where(m < 1, a0 / m, one * a0))


def scale_by_step_size_(tensors: list[torch.Tensor], alpha: torch.Tensor | float | None, a0: float
                        ) -> list[torch.Tensor]:
    """Multiplies ``tensors`` in place by ``alpha`` where it is acceptable, else by the epsilon step ``e(u, a₀)``."""
    if alpha is None or (isinstance(alpha, float) and not is_acceptable(alpha, tensors[0].dtype)):
        factor: torch.Tensor | float = epsilon_step(tensors, a0)
    elif isinstance(alpha, torch.Tensor):
        alpha = alpha.to(tensors[0])
        factor = torch.where(acceptable_mask(alpha), alpha, epsilon_step(tensors, a0))
    else:
        factor = alpha
    torch._foreach_mul_(tensors, factor)
    return tensors


def bb_step_size(sy: torch.Tensor, yy: torch.Tensor, ss: torch.Tensor, type: str, e: float) -> torch.Tensor:
    """Barzilai–Borwein step from ``sᵀy``, ``yᵀy``, ``sᵀs`` (0-d tensors); nan where no step exists.

    ``'short'`` ``sᵀy/yᵀy`` (if ``yᵀy < e``: ``sᵀs/sᵀy``, none if also ``sᵀy < e``); ``'long'`` ``sᵀs/sᵀy`` (if
    ``sᵀy < e``: ``sᵀy/yᵀy``, none if ``yᵀy < e``); ``'geom'`` ``√(short·long)`` (none if either is none);
    ``'geom-fallback'`` whichever exists.
    """
    nan = torch.full_like(sy, math.nan)
    sy_ok, yy_ok = sy >= e, yy >= e
    short = torch.where(yy_ok, sy / yy, torch.where(sy_ok, ss / sy, nan))
    if type == "short":
        return short
    long = torch.where(sy_ok, ss / sy, torch.where(yy_ok, sy / yy, nan))
    if type == "long":
        return long
    geom = (short * long).sqrt()
    if type == "geom":
        return geom
    return torch.where(short.isnan(), long, torch.where(long.isnan(), short, geom))


def bb_step_size_float(sy: float, yy: float, ss: float, type: str, e: float) -> float | None:
    """:func:`bb_step_size` on Python floats; None where no step exists."""
    def short() -> float | None:
        if yy >= e:
            return sy / yy
        return ss / sy if sy >= e else None

    def long() -> float | None:
        if sy >= e:
            return ss / sy
        return sy / yy if yy >= e else None

    if type == "short":
        return short()
    if type == "long":
        return long()
    a, b = short(), long()
    if a is not None and b is not None:
        prod = a * b
        return math.sqrt(prod) if prod >= 0 else None
    if type == "geom":
        return None
    return a if a is not None else b


def _secant_pair(states: list[dict[str, Any]], params: list[torch.Tensor], g: list[torch.Tensor]
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
    """``(s, y) = (x − x_prev, g − g_prev)`` and refreshes ``x_prev``, ``g_prev`` in the states (None, and the
    buffers created, on the first call)."""
    if "x_prev" not in states[0]:
        for st, p, gi in zip(states, params, g):
            st["x_prev"] = p.detach().clone()
            st["g_prev"] = gi.detach().clone()
        return None
    x_prev = [st["x_prev"] for st in states]
    g_prev = [st["g_prev"] for st in states]
    s = torch._foreach_sub(params, x_prev)
    y = torch._foreach_sub(g, g_prev)
    torch._foreach_copy_(x_prev, params)
    torch._foreach_copy_(g_prev, g)
    return list(s), list(y)


class _ScalarStepSize(Transform):
    """Common parts: the stored ``global_state['alpha']``, ``get_H`` and the reset of the secant buffers."""

    _readonly_input = False

    def _source(self, tensors: list[torch.Tensor], grads: list[torch.Tensor] | None) -> list[torch.Tensor]:
        if self.defaults["use_grad"]:
            assert grads is not None
            return grads
        return tensors

    def get_H(self, var: Var) -> ScaledIdentity:
        params = var.params
        n = sum(p.numel() for p in params)
        alpha = self.global_state.get("alpha")
        device, dtype = params[0].device, params[0].dtype
        if isinstance(alpha, torch.Tensor):
            alpha = alpha.to(device=device, dtype=dtype)
            s: float | torch.Tensor = torch.where(acceptable_mask(alpha), 1 / alpha, torch.ones_like(alpha))
        else:
            s = 1 / alpha if is_acceptable(alpha, dtype) else 1.0
        return ScaledIdentity(s, shape=(n, n), device=device, dtype=dtype)

    def reset_for_online(self) -> None:
        self.clear_state_keys("x_prev", "g_prev")
        super().reset_for_online()


# --------------------------------------------------------------------------------------------------
# Polyak
# --------------------------------------------------------------------------------------------------
class PolyakStepSize(_ScalarStepSize):
    """Polyak's step size ``α = (f − f*)/(uᵀg)``.

    ``f`` is the current loss, ``u`` the incoming update and ``g`` the raw gradient (``use_grad=True``); with
    ``use_grad=False`` the denominator is ``uᵀu``. If ``f_star`` is None the target is ``f_best − y_k`` (``f_best``
    the lowest loss seen, ``y_k = y·(1 − y_decay)^k``, ``k`` counting steps from 0). A denominator ``≤ 2·tiny`` gives
    ``α = 0``; ``max`` caps ``α``. The output is ``inner(u)·α·alpha``; an unacceptable ``α`` (including 0 or
    negative) uses the epsilon step with ``a₀ = 1e-7`` instead. ``get_H`` gives ``I/(α·alpha)``.
    State: ``global_state['alpha']`` (the multiplier used), ``'f_best'``, ``'step'``.

    Args:
        f_star: the optimal value, or None to estimate it from the best loss. Defaults to 0.
        y: initial offset below the best loss when ``f_star`` is None. Defaults to 1.
        y_decay: decay of the offset per step. Defaults to 1e-3.
        max: largest step size (None: no cap). Defaults to None.
        use_grad: use the raw gradient in the denominator (else the update). Defaults to True.
        alpha: multiplier of the step. Defaults to 1.
        inner: modules applied to the update before it is scaled. Defaults to None.

    Reference:
        B. T. Polyak, *Introduction to Optimization*, 1987, §5.3; E. Hazan, S. Kakade, "Revisiting the Polyak step
        size", arXiv:1905.00313, 2019.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.PolyakStepSize(f_star=0.0))
        ```
    """

    def __init__(self, f_star: float | None = 0, y: float = 1, y_decay: float = 0.001, max: float | None = None,
                 use_grad: bool = True, alpha: float = 1, inner: Chainable | None = None):
        owner = "PolyakStepSize"
        if f_star is not None:
            check_range(owner, "f_star", f_star)
        check_range(owner, "y", y, low=0)
        check_range(owner, "y_decay", y_decay, 0, 1, high_inclusive=False)
        if max is not None:
            check_positive(owner, "max", max)
        check_positive(owner, "alpha", alpha)
        defaults = dict(f_star=f_star, y=y, y_decay=y_decay, max=max, use_grad=use_grad, alpha=alpha)
        super().__init__(defaults, uses_grad=use_grad, uses_loss=True, inner=inner)

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        s = self.defaults
        gs = self.global_state
        k = gs.get("step", 0)
        gs["step"] = k + 1
        ref = tensors[0]
        tiny = torch.finfo(ref.dtype).tiny
        f = torch.as_tensor(loss.detach() if isinstance(loss, torch.Tensor) else loss, dtype=ref.dtype,
                            device=ref.device)
        if s["f_star"] is None:
            f_best = gs.get("f_best")
            f_best = f if f_best is None else torch.minimum(f_best.to(f), f)
            gs["f_best"] = f_best
            target = f_best - s["y"] * (1 - s["y_decay"]) ** k
        else:
            target = s["f_star"]
        denom = TensorList(tensors).dot(self._source(tensors, grads))
        alpha = torch.where(denom > 2 * tiny, (f - target) / denom, torch.zeros_like(denom))
        if s["max"] is not None:
            alpha = alpha.clamp(max=s["max"])
        gs["alpha"] = alpha * s["alpha"]

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return scale_by_step_size_(tensors, self.global_state.get("alpha"), 1e-7)

    def _prepare(self, var: Var) -> None:
        if var.loss is None:
            self._require_closure(var)  # the loss is needed: an error naming this module
        super()._prepare(var)


# --------------------------------------------------------------------------------------------------
# Barzilai-Borwein
# --------------------------------------------------------------------------------------------------
class BarzilaiBorwein(_ScalarStepSize):
    """Barzilai–Borwein two-point step size.

    From ``s = x − x_prev``, ``y = g − g_prev`` (``g`` the raw gradient if ``use_grad``, else the incoming update),
    ``e = 2·tiny``: ``'short'`` ``sᵀy/yᵀy`` (if ``yᵀy < e``: ``sᵀs/sᵀy``, or none if also ``sᵀy < e``); ``'long'``
    ``sᵀs/sᵀy`` (if ``sᵀy < e``: ``sᵀy/yᵀy``, or none if ``yᵀy < e``); ``'geom'`` ``√(short·long)`` (none if either
    is none); ``'geom-fallback'`` whichever exists. The output is the incoming update (or the ``inner`` output) times
    ``α``; the first step, and any step with an unacceptable ``α``, uses the epsilon step with ``a₀ = alpha_0``.
    ``get_H`` gives ``I/α``. State: ``x_prev``, ``g_prev`` per parameter, ``global_state['alpha']`` (0-d tensor).

    Args:
        type: which BB step. Defaults to ``'geom'``.
        alpha_0: size of the epsilon step. Defaults to 1e-7.
        use_grad: form ``y`` from the raw gradient (else from the update). Defaults to True.
        inner: modules applied to the update before it is scaled. Defaults to None.

    Reference:
        J. Barzilai, J. M. Borwein, "Two-point step size gradient methods", IMA J. Numer. Anal. 8(1):141–148, 1988.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.BarzilaiBorwein())
        ```
    """

    def __init__(self, type: BBType = "geom", alpha_0: float = 1e-07, use_grad: bool = True,
                 inner: Chainable | None = None):
        check_choice("BarzilaiBorwein", "type", type, _BB_TYPES)
        check_positive("BarzilaiBorwein", "alpha_0", alpha_0)
        super().__init__(dict(type=type, alpha_0=alpha_0, use_grad=use_grad), uses_grad=use_grad, inner=inner)

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        s = self.defaults
        pair = _secant_pair(states, params, self._source(tensors, grads))
        if pair is None:
            self.global_state.pop("alpha", None)
            return
        sv, yv = TensorList(pair[0]), TensorList(pair[1])
        e = 2 * torch.finfo(tensors[0].dtype).tiny
        self.global_state["alpha"] = bb_step_size(sv.dot(yv), yv.dot(yv), sv.dot(sv), s["type"], e)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return scale_by_step_size_(tensors, self.global_state.get("alpha"), self.defaults["alpha_0"])


class BBStab(_ScalarStepSize):
    """Stabilised Barzilai–Borwein step: the BB step capped so that the step length is at most ``Δ``.

    ``α = min(α_BB, Δ/‖g‖)`` with ``α_BB`` as in ``BarzilaiBorwein`` but with ``e = tiny``. With a fixed ``delta``,
    ``Δ = delta``. With ``delta=None``, counting only steps where ``α_BB`` exists: the first such step is unclipped and
    ignored, the next ``inf_iters`` steps are unclipped while recording ``‖s‖_min`` (the smallest step norm), and
    from then on ``Δ = c·‖s‖_min``. A step with no valid ``α_BB`` keeps the previous ``α``. The first step, and any
    step with an unacceptable ``α``, uses the epsilon step with ``a₀ = alpha_0``; ``get_H`` gives ``I/α``.
    State: ``x_prev``, ``g_prev`` per parameter; ``global_state['alpha']``, ``'n_valid'``, ``'s_min'``.

    Args:
        c: multiplier of ``‖s‖_min`` giving ``Δ`` when ``delta`` is None. Defaults to 0.2.
        delta: fixed cap ``Δ`` on the step length (None: estimated). Defaults to None.
        type: which BB step. Defaults to ``'geom'``.
        alpha_0: size of the epsilon step. Defaults to 1e-7.
        use_grad: form ``y`` and ``‖g‖`` from the raw gradient (else from the update). Defaults to True.
        inf_iters: number of unclipped steps recording ``‖s‖_min``. Defaults to 3.
        inner: modules applied to the update before it is scaled. Defaults to None.

    Reference:
        O. Burdakov, Y.-H. Dai, N. Huang, "Stabilized Barzilai–Borwein method", J. Comput. Math. 37(6), 2019
        (arXiv:1907.06409).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.BBStab())
        ```
    """

    def __init__(self, c: float = 0.2, delta: float | None = None, type: BBType = "geom", alpha_0: float = 1e-07,
                 use_grad: bool = True, inf_iters: int = 3, inner: Chainable | None = None):
        owner = "BBStab"
        check_positive(owner, "c", c)
        if delta is not None:
            check_positive(owner, "delta", delta)
        check_choice(owner, "type", type, _BB_TYPES)
        check_positive(owner, "alpha_0", alpha_0)
        if isinstance(inf_iters, bool) or not isinstance(inf_iters, int) or inf_iters < 1:
            raise ValueError(f"{owner}: inf_iters must be a positive int, got {inf_iters!r}")
        defaults = dict(c=c, delta=delta, type=type, alpha_0=alpha_0, use_grad=use_grad, inf_iters=inf_iters)
        super().__init__(defaults, uses_grad=use_grad, inner=inner)

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        s = self.defaults
        gs = self.global_state
        g = self._source(tensors, grads)
        pair = _secant_pair(states, params, g)
        if pair is None:
            return
        sv, yv = TensorList(pair[0]), TensorList(pair[1])
        sy, yy, ss, gg = torch.stack([sv.dot(yv), yv.dot(yv), sv.dot(sv), TensorList(g).dot(g)]).tolist()
        alpha_bb = bb_step_size_float(sy, yy, ss, s["type"], torch.finfo(tensors[0].dtype).tiny)
        if alpha_bb is None or not math.isfinite(alpha_bb):
            return  # keep the previous alpha
        n_valid = gs.get("n_valid", 0) + 1
        gs["n_valid"] = n_valid
        g_norm = math.sqrt(gg)
        if s["delta"] is not None:
            delta: float | None = s["delta"]
        elif n_valid == 1:
            delta = None
        elif n_valid <= 1 + s["inf_iters"]:
            gs["s_min"] = min(gs.get("s_min", math.inf), math.sqrt(ss))
            delta = None
        else:
            delta = s["c"] * gs["s_min"]
        alpha = alpha_bb
        if delta is not None and g_norm > 0:
            alpha = min(alpha, delta / g_norm)
        gs["alpha"] = alpha

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return scale_by_step_size_(tensors, self.global_state.get("alpha"), self.defaults["alpha_0"])


# --------------------------------------------------------------------------------------------------
# AdGD
# --------------------------------------------------------------------------------------------------
def adgd_step_size(alpha: float, theta: float, L: float, variant: int, sqrt: bool, tiny: float) -> float:
    """The next AdGD step from the previous ``alpha``, ``theta`` and the local smoothness estimate ``L``.

    Variant 1: ``min(√(1+θ)·α, 1/(√2·L))`` (``1/(2L)`` if not ``sqrt``; no bound when ``L ≤ 2·tiny``).
    Variant 2: ``min(√(2/3+θ)·α, α/√max(2·tiny, 2α²L² − 1))``.
    """
    if variant == 1:
        grow = math.sqrt(1 + theta) * alpha
        if L <= 2 * tiny:
            return grow
        return min(grow, 1 / (math.sqrt(2) * L) if sqrt else 1 / (2 * L))
    grow = math.sqrt(2 / 3 + theta) * alpha
    return min(grow, alpha / math.sqrt(max(2 * tiny, 2 * alpha * alpha * L * L - 1)))


class AdGD(_ScalarStepSize):
    """Adaptive gradient descent (Malitsky & Mishchenko): step size from the local smoothness estimate.

    ``L = ‖g − g_prev‖/‖x − x_prev‖`` (``g`` the raw gradient if ``use_grad``, else the incoming update). The first
    step uses ``α = alpha_0``; ``θ`` starts at 0 (variant 1) or 1/3 (variant 2). Then

    - variant 1: ``α ← min(√(1+θ)·α, 1/(√2·L))`` (``1/(2L)`` if ``sqrt=False``; no bound when ``L ≤ 2·tiny``);
    - variant 2: ``α ← min(√(2/3+θ)·α, α/√max(2·tiny, 2α²L² − 1))``;

    and ``θ ← α_new/α_old``; a new ``α ≤ 2·tiny`` (or not finite) is discarded, keeping ``α`` and ``θ``. A step
    with ``x = x_prev`` carries no information and keeps them too. If the stored ``α`` becomes unacceptable, all
    state is cleared and the epsilon step with ``a₀ = alpha_0`` is used. ``get_H`` gives ``I/α``.
    State: ``x_prev``, ``g_prev`` per parameter; ``global_state['alpha']``, ``'theta'``.

    Args:
        variant: 1 (ICML 2020) or 2 (2023 version). Defaults to 2.
        alpha_0: first step size and size of the epsilon step. Defaults to 1e-7.
        sqrt: variant 1 bound ``1/(√2 L)`` (else ``1/(2L)``). Defaults to True.
        use_grad: use the raw gradient (else the update). Defaults to True.
        inner: modules applied to the update before it is scaled. Defaults to None.

    Reference:
        Y. Malitsky, K. Mishchenko, "Adaptive gradient descent without descent", ICML 2020; Y. Malitsky,
        K. Mishchenko, "Adaptive proximal gradient method for convex optimization", arXiv:2308.02261, 2023.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.AdGD())
        ```
    """

    def __init__(self, variant: Literal[1, 2] = 2, alpha_0: float = 1e-07, sqrt: bool = True, use_grad: bool = True,
                 inner: Chainable | None = None):
        check_choice("AdGD", "variant", variant, (1, 2))
        check_positive("AdGD", "alpha_0", alpha_0)
        super().__init__(dict(variant=variant, alpha_0=alpha_0, sqrt=sqrt, use_grad=use_grad), uses_grad=use_grad,
                         inner=inner)

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        s = self.defaults
        gs = self.global_state
        dtype = tensors[0].dtype
        tiny = torch.finfo(dtype).tiny
        pair = _secant_pair(states, params, self._source(tensors, grads))
        if pair is None:
            gs["alpha"] = float(s["alpha_0"])
            gs["theta"] = 0.0 if s["variant"] == 1 else 1 / 3
            return
        ss, yy = torch.stack([TensorList(pair[0]).dot(pair[0]), TensorList(pair[1]).dot(pair[1])]).tolist()
        alpha, theta = gs["alpha"], gs["theta"]
        if ss > 0:
            L = math.sqrt(yy) / math.sqrt(ss)
            new = adgd_step_size(alpha, theta, L, s["variant"], s["sqrt"], tiny)
            if math.isfinite(new) and new > 2 * tiny:
                gs["theta"] = new / alpha
                gs["alpha"] = alpha = new
        if not is_acceptable(alpha, dtype):
            self.state.clear()
            gs.clear()

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return scale_by_step_size_(tensors, self.global_state.get("alpha"), self.defaults["alpha_0"])
