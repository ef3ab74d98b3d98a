"""Momentum: exponential moving average (``EMA``), Polyak's heavy ball (``HeavyBall``) and Nesterov's (``NAG``)."""
from __future__ import annotations

from typing import Literal

import torch

from ...core import Target, Transform, Var
from ...utils.checks import check_range
from ...utils.foreach import add_scaled_, scalar_or_list, sub_scaled_
from ..step_size.lr import finish_direct_step, lrs_for_direct_step


def ema_(
    tensors: list[torch.Tensor],
    exp_avg_: list[torch.Tensor],
    beta: float | list[float],
    dampening: float | list[float],
    lerp: bool,
) -> list[torch.Tensor]:
    """Updates the moving average ``exp_avg_`` in place and returns it; ``tensors`` are not modified.

    ``u ← (1 − dampening)·u``, then ``m ← β m + (1 − β) u`` if ``lerp`` else ``m ← β m + u``.
    """
    if isinstance(dampening, list):
        damp = [1 - d for d in dampening]
    else:
        damp = 1 - dampening
    if lerp:
        if isinstance(beta, list) or isinstance(damp, list):
            n = len(tensors)
            b = beta if isinstance(beta, list) else [beta] * n
            d = damp if isinstance(damp, list) else [damp] * n
            torch._foreach_mul_(exp_avg_, b)
            add_scaled_(exp_avg_, tensors, [(1 - bi) * di for bi, di in zip(b, d)])
        elif damp == 1:
            torch._foreach_lerp_(exp_avg_, tensors, 1 - beta)
        else:
            torch._foreach_mul_(exp_avg_, beta)
            add_scaled_(exp_avg_, tensors, (1 - beta) * damp)
    else:
        torch._foreach_mul_(exp_avg_, beta)
        add_scaled_(exp_avg_, tensors, damp)
    return exp_avg_


def _debias_scale(beta: float | list[float], step: int) -> float | list[float]:
    if isinstance(beta, list):
        return [1 / (1 - b**step) for b in beta]
    return 1 / (1 - beta**step)


class EMA(Transform):
    """Exponential moving average of the update.

    Buffer ``'exp_avg'`` ``m``, initialised to zeros (``ema_init='zeros'``) or to a copy of the first input
    (``ema_init='update'``, then ``m₁ = u₁``). Each later step:

    ``u ← (1 − dampening)·u``;  ``m ← β m + (1 − β) u`` if ``lerp`` else ``m ← β m + u``;
    output ``m``, or ``m / (1 − βᵗ)`` if ``debiased`` (t = number of steps of this module).

    Args:
        momentum: β. Defaults to 0.9.
        dampening: multiplier ``1 − dampening`` of the input. Defaults to 0.
        debiased: divide by ``1 − βᵗ`` (Adam-style bias correction for zero initialisation). Defaults to False.
        lerp: use ``(1 − β)`` weighting of the input (an average) instead of plain accumulation. Defaults to True.
        ema_init: ``'zeros'`` or ``'update'``. Defaults to ``'zeros'``.
        target: what to transform. Defaults to ``'update'``.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.EMA(0.9), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, momentum: float = 0.9, dampening: float = 0, debiased: bool = False, lerp: bool = True,
                 ema_init: Literal["zeros", "update"] = "zeros", target: Target = "update"):
        check_range(type(self).__name__, "momentum", momentum, 0, 1)
        check_range(type(self).__name__, "dampening", dampening, 0, 1)
        if ema_init not in ("zeros", "update"):
            raise ValueError(f"{type(self).__name__}: ema_init must be 'zeros' or 'update', got {ema_init!r}")
        defaults = dict(momentum=momentum, dampening=dampening, debiased=debiased, lerp=lerp, ema_init=ema_init)
        super().__init__(defaults, target=target)

    def _update_buffer(self, tensors, states, settings) -> tuple[list[torch.Tensor], int]:
        step = self.global_state["step"] = self.global_state.get("step", 0) + 1
        s0 = settings[0]
        beta, dampening = self.unpack_settings(settings, "momentum", "dampening")
        if s0["ema_init"] == "update" and "exp_avg" not in states[0]:
            exp_avg = [t.clone() for t in tensors]
            for state, m in zip(states, exp_avg):
                state["exp_avg"] = m
            return exp_avg, step
        exp_avg = [s["exp_avg"] if "exp_avg" in s else _zeros_into(s, t) for s, t in zip(states, tensors)]
        ema_(tensors, exp_avg, scalar_or_list(beta), scalar_or_list(dampening), lerp=s0["lerp"])
        return exp_avg, step

    def _output_scale(self, settings, step: int) -> float | list[float]:
        if not settings[0]["debiased"]:
            return 1.0
        return _debias_scale(scalar_or_list(self.unpack_settings(settings, "momentum")), step)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        exp_avg, step = self._update_buffer(tensors, states, settings)
        return torch._foreach_mul(exp_avg, self._output_scale(settings, step))

    def step(self, var: Var) -> Var:
        lrs = lrs_for_direct_step(self, var) if self._target == "update" else None
        if lrs is None:
            return super().step(var)
        # right before the final LR: params -= lr * m, without materialising the output
        params = var.params
        states, settings = self._get_keyed_states_settings(params)
        with torch.no_grad():
            exp_avg, step = self._update_buffer(var._update_or_grad(), states, settings)
            scale = self._output_scale(settings, step)
            if isinstance(scale, list):
                sub_scaled_(params, exp_avg, [lr * s for lr, s in zip(lrs, scale)])
            else:
                sub_scaled_(params, exp_avg, [lr * scale for lr in lrs])
        return finish_direct_step(var)


def _zeros_into(state: dict, like: torch.Tensor) -> torch.Tensor:
    m = state["exp_avg"] = torch.zeros_like(like)
    return m


class HeavyBall(EMA):
    """Polyak's heavy ball momentum, exactly as ``torch.optim.SGD(momentum=...)``.

    ``m₁ = u₁`` (with the default ``ema_init='update'``), then ``mₜ = β mₜ₋₁ + (1 − dampening) uₜ``; output ``m``.
    With ``ema_init='zeros'``, ``m₀ = 0`` and the rule applies from step 1. This is ``EMA`` with ``lerp=False``.

    Args:
        momentum: β. Defaults to 0.9.
        dampening: Defaults to 0.
        debiased: divide by ``1 − βᵗ``. Defaults to False.
        lerp: use ``(1 − β)`` weighting of the input. Defaults to False.
        ema_init: ``'update'`` or ``'zeros'``. Defaults to ``'update'``.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        B. T. Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.HeavyBall(0.9), tz.m.LR(1e-2))  # == SGD(lr=1e-2, momentum=0.9)
        ```
    """

    def __init__(self, momentum: float = 0.9, dampening: float = 0, debiased: bool = False, lerp: bool = False,
                 ema_init: Literal["zeros", "update"] = "update", target: Target = "update"):
        super().__init__(momentum=momentum, dampening=dampening, debiased=debiased, lerp=lerp, ema_init=ema_init,
                         target=target)


def nag_(tensors: list[torch.Tensor], velocity_: list[torch.Tensor], momentum: float | list[float],
         dampening: float | list[float], lerp: bool) -> list[torch.Tensor]:
    """Nesterov momentum: ``v ← μ(v + u)`` (or ``v ← μ v + (1 − μ) u`` with ``lerp``); returns ``u + (1 − d)·v``
    as new tensors. ``velocity_`` is updated in place."""
    if lerp:
        if isinstance(momentum, list):
            torch._foreach_lerp_(velocity_, tensors, [1 - m for m in momentum])
        else:
            torch._foreach_lerp_(velocity_, tensors, 1 - momentum)
    else:
        torch._foreach_add_(velocity_, tensors)
        torch._foreach_mul_(velocity_, momentum)
    if isinstance(dampening, list):
        return list(torch._foreach_add(tensors, torch._foreach_mul(velocity_, [1 - d for d in dampening])))
    return list(torch._foreach_add(tensors, velocity_, alpha=1 - dampening))


class NAG(Transform):
    """Nesterov accelerated gradient, exactly as ``torch.optim.SGD(momentum=..., nesterov=True)``.

    State ``'velocity'`` v (zeros). ``v ← μ(v + u)`` (or ``v ← μ v + (1 − μ) u`` with ``lerp``);
    output ``u + (1 − dampening)·v``.

    Args:
        momentum: μ. Defaults to 0.9.
        dampening: Defaults to 0.
        lerp: use ``(1 − μ)`` weighting of the input. Defaults to False.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        Y. Nesterov, "A method for solving the convex programming problem with convergence rate O(1/k²)", 1983;
        I. Sutskever, J. Martens, G. Dahl, G. Hinton, "On the importance of initialization and momentum in deep
        learning", ICML 2013.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.NAG(0.9), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, momentum: float = 0.9, dampening: float = 0, lerp: bool = False, target: Target = "update"):
        check_range("NAG", "momentum", momentum, 0, 1)
        check_range("NAG", "dampening", dampening, 0, 1)
        super().__init__(dict(momentum=momentum, dampening=dampening, lerp=lerp), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        velocity = [s["velocity"] if "velocity" in s else s.setdefault("velocity", torch.zeros_like(t))
                    for s, t in zip(states, tensors)]
        momentum, dampening = self.unpack_settings(settings, "momentum", "dampening")
        return nag_(tensors, velocity, scalar_or_list(momentum), scalar_or_list(dampening), lerp=settings[0]["lerp"])
