"""Second-moment variants: ``PrecenteredEMASquared``, ``NesterovEMASquared``, ``SqrtNesterovEMASquared``."""
from __future__ import annotations

import torch

from ...core import Target, Transform
from ...utils.checks import check_bool, check_int, check_range
from ...utils.foreach import Scalars, scalar_or_list
from ..adaptive.adam import adam_second_moment_
from ..momentum.momentum import ema_
from ..ops.moments import debias_root_, moment_buffers, root_


def _abs_pow(tensors: list[torch.Tensor], pow: float) -> list[torch.Tensor]:
    """``|u|^pow`` as new tensors."""
    if pow == 2:
        return list(torch._foreach_mul(tensors, tensors))
    if pow == 1:
        return list(torch._foreach_abs(tensors))
    return list(torch._foreach_pow(torch._foreach_abs(tensors), pow))


def precentered_ema_sq_(tensors: list[torch.Tensor], exp_avg_: list[torch.Tensor], exp_avg_sq_: list[torch.Tensor],
                        beta1: Scalars, beta2: Scalars, step: int, min_step: int, pow: float = 2,
                        max_exp_avg_sq_: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """``m ← β₁ m + u`` (no ``1 − β₁`` factor), then ``v ← β₂ v + (1 − β₂)|c|^pow`` with ``c = u − m`` from
    ``step ≥ min_step`` on and ``c = u`` before; all in place. Returns ``v``, or its running maximum
    ``max_exp_avg_sq_`` (updated in place) when given."""
    ema_(tensors, exp_avg_, beta1, 0.0, lerp=False)
    centered = tensors if step < min_step else list(torch._foreach_sub(tensors, exp_avg_))
    adam_second_moment_(centered, exp_avg_sq_, beta2, pow=pow)
    if max_exp_avg_sq_ is None:
        return exp_avg_sq_
    torch._foreach_maximum_(max_exp_avg_sq_, exp_avg_sq_)
    return max_exp_avg_sq_


def nesterov_ema_sq_(tensors: list[torch.Tensor], exp_avg_sq_: list[torch.Tensor], beta: Scalars, pow: float = 2,
                     max_exp_avg_sq_: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """``v ← β v + (1 − β)|u|^pow`` in place; returns ``|u|^pow + v`` as new tensors, or the running maximum of it
    (``max_exp_avg_sq_``, updated in place) when given."""
    powered = _abs_pow(tensors, pow)
    adam_second_moment_(tensors, exp_avg_sq_, beta, pow=pow)
    torch._foreach_add_(powered, exp_avg_sq_)
    if max_exp_avg_sq_ is None:
        return powered
    torch._foreach_maximum_(max_exp_avg_sq_, powered)
    return max_exp_avg_sq_


def sqrt_nesterov_ema_sq_(tensors: list[torch.Tensor], exp_avg_sq_: list[torch.Tensor], beta: Scalars,
                          pow: float = 2, max_exp_avg_sq_: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """``v ← β (v + |u|^pow)`` in place; returns ``|u|^pow + v`` (or its running maximum, ``max_exp_avg_sq_``,
    updated in place) to the power ``1/pow``, as new tensors."""
    powered = _abs_pow(tensors, pow)
    torch._foreach_add_(exp_avg_sq_, powered)
    torch._foreach_mul_(exp_avg_sq_, beta)
    torch._foreach_add_(powered, exp_avg_sq_)
    if max_exp_avg_sq_ is not None:
        torch._foreach_maximum_(max_exp_avg_sq_, powered)
        torch._foreach_copy_(powered, max_exp_avg_sq_)
    return root_(powered, pow)


class PrecenteredEMASquared(Transform):
    """Second moment of the update centered by a running sum: meant as a denominator (e.g. with ``Div``).

    State ``'exp_avg'`` m, ``'exp_avg_sq'`` v (and ``'max_exp_avg_sq'`` with ``amsgrad``). With ``t`` the step
    (starting at 1):

    ``m ← β₁ m + u``  (a sum, no ``(1 − β₁)`` factor);
    ``c = u − m`` if ``t ≥ min_step`` else ``c = u``;
    ``v ← β₂ v + (1 − β₂)|c|^pow``;  output a copy of ``v`` (of its running maximum with ``amsgrad``).

    Note that ``m`` already contains ``u`` when ``c`` is formed (``c = −β₁ m_{t−1}``), as in the reference API.
    The first ``min_step − 1`` steps use the raw update so that the denominator does not start near zero.

    Args:
        beta1: decay of m (per parameter). Defaults to 0.99.
        beta2: decay of v (per parameter). Defaults to 0.99.
        min_step: first step that uses the centered value. Defaults to 2.
        amsgrad: output the running maximum of v. Defaults to False.
        pow: power. Defaults to 2.
        target: what to transform. Defaults to ``'update'``.

    Example:
        ```python
        opt = tz.Modular(model.parameters(),
                         tz.m.Div([tz.m.experimental.PrecenteredEMASquared(), tz.m.Sqrt(), tz.m.Add(1e-8)]),
                         tz.m.LR(1e-3))
        ```
    """

    _readonly_input = True

    def __init__(self, beta1: float = 0.99, beta2: float = 0.99, min_step: int = 2, amsgrad: bool = False,
                 pow: float = 2, target: Target = "update"):
        check_range("PrecenteredEMASquared", "beta1", beta1, 0, 1)
        check_range("PrecenteredEMASquared", "beta2", beta2, 0, 1)
        check_int("PrecenteredEMASquared", "min_step", min_step, low=1)
        check_bool("PrecenteredEMASquared", "amsgrad", amsgrad)
        check_range("PrecenteredEMASquared", "pow", pow, low=0, low_inclusive=False)
        super().__init__(dict(beta1=beta1, beta2=beta2, min_step=min_step, amsgrad=amsgrad, pow=pow), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        step = self.global_state["step"] = self.global_state.get("step", 0) + 1
        s0 = settings[0]
        beta1, beta2 = self.unpack_settings(settings, "beta1", "beta2")
        out = precentered_ema_sq_(
            tensors, moment_buffers(states, tensors, "exp_avg"), moment_buffers(states, tensors, "exp_avg_sq"),
            scalar_or_list(beta1), scalar_or_list(beta2), step, s0["min_step"], pow=s0["pow"],
            max_exp_avg_sq_=moment_buffers(states, tensors, "max_exp_avg_sq") if s0["amsgrad"] else None)
        return [t.clone() for t in out]


class NesterovEMASquared(Transform):
    """EMA of squared updates with a Nesterov-style look-ahead: the current ``|u|^pow`` is counted once more.

    State ``'exp_avg_sq'`` v (and ``'max_exp_avg_sq'`` with ``amsgrad``):

    ``v ← β v + (1 − β)|u|^pow``;  output ``|u|^pow + v`` (the running maximum of it with ``amsgrad``).

    Args:
        beta: decay (per parameter). Defaults to 0.999.
        amsgrad: output the running maximum. Defaults to False.
        pow: power. Defaults to 2.

    Example:
        ```python
        opt = tz.Modular(model.parameters(),
                         tz.m.Div([tz.m.experimental.NesterovEMASquared(), tz.m.Sqrt(), tz.m.Add(1e-8)]),
                         tz.m.LR(1e-3))
        ```
    """

    _readonly_input = True

    def __init__(self, beta: float = 0.999, amsgrad: bool = False, pow: float = 2):
        check_range("NesterovEMASquared", "beta", beta, 0, 1)
        check_bool("NesterovEMASquared", "amsgrad", amsgrad)
        check_range("NesterovEMASquared", "pow", pow, low=0, low_inclusive=False)
        super().__init__(dict(beta=beta, amsgrad=amsgrad, pow=pow))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        beta = scalar_or_list(self.unpack_settings(settings, "beta"))
        if s0["amsgrad"]:
            vmax = moment_buffers(states, tensors, "max_exp_avg_sq")
            out = nesterov_ema_sq_(tensors, moment_buffers(states, tensors, "exp_avg_sq"), beta, s0["pow"], vmax)
            return [t.clone() for t in out]
        return nesterov_ema_sq_(tensors, moment_buffers(states, tensors, "exp_avg_sq"), beta, s0["pow"])


class SqrtNesterovEMASquared(Transform):
    """Root of a Nesterov-style accumulated second moment: an Adam-like denominator that includes the current
    update.

    State ``'exp_avg_sq'`` v (and ``'max_exp_avg_sq'`` with ``amsgrad``), ``t`` the step:

    ``v ← β (v + |u|^pow)``;  ``d = |u|^pow + v`` (its running maximum with ``amsgrad``);
    output ``d^(1/pow)``, divided by ``(1 − βᵗ)^(1/pow)`` if ``debiased``.

    Args:
        beta: decay (per parameter). Defaults to 0.999.
        amsgrad: use the running maximum of d. Defaults to False.
        debiased: apply the bias correction. Defaults to False.
        pow: power. Defaults to 2.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Div([tz.m.experimental.SqrtNesterovEMASquared(), tz.m.Add(1e-8)]),
                         tz.m.LR(1e-3))
        ```
    """

    _readonly_input = True

    def __init__(self, beta: float = 0.999, amsgrad: bool = False, debiased: bool = False, pow: float = 2):
        check_range("SqrtNesterovEMASquared", "beta", beta, 0, 1)
        check_bool("SqrtNesterovEMASquared", "amsgrad", amsgrad)
        check_bool("SqrtNesterovEMASquared", "debiased", debiased)
        if debiased and beta == 1:
            raise ValueError("SqrtNesterovEMASquared: debiased=True needs beta < 1 (the correction divides by "
                             "1 - beta^t)")
        check_range("SqrtNesterovEMASquared", "pow", pow, low=0, low_inclusive=False)
        super().__init__(dict(beta=beta, amsgrad=amsgrad, debiased=debiased, pow=pow))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        step = self.global_state["step"] = self.global_state.get("step", 0) + 1
        s0 = settings[0]
        beta = scalar_or_list(self.unpack_settings(settings, "beta"))
        out = sqrt_nesterov_ema_sq_(tensors, moment_buffers(states, tensors, "exp_avg_sq"), beta, s0["pow"],
                                    moment_buffers(states, tensors, "max_exp_avg_sq") if s0["amsgrad"] else None)
        if s0["debiased"]:
            debias_root_(out, beta, step, s0["pow"])
        return out
