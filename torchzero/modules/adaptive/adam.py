"""Adam and AMSGrad."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...core import Chainable
from ...utils.foreach import Scalars, combine, scalar_or_list
from ..step_size.lr import DirectStepTransform, div_scaled_or_step_


def _pow_scalar(x: Scalars, p: float) -> Scalars:
    return [xi**p for xi in x] if isinstance(x, list) else x**p


def adam_second_moment_(tensors: Sequence[torch.Tensor], exp_avg_sq_: list[torch.Tensor], beta2: Scalars,
                        pow: float = 2) -> None:
    """``v ← β₂ v + (1 − β₂)|u|^pow`` in place."""
    torch._foreach_mul_(exp_avg_sq_, beta2)
    w = combine(1, beta2, lambda a, b: a - b)
    if pow == 2:
        if isinstance(w, list):
            torch._foreach_addcmul_(exp_avg_sq_, tensors, tensors, w)
        else:
            torch._foreach_addcmul_(exp_avg_sq_, tensors, tensors, value=w)
    else:
        powered = torch._foreach_pow(torch._foreach_abs(tensors), pow)
        if isinstance(w, list):
            torch._foreach_mul_(powered, w)
            torch._foreach_add_(exp_avg_sq_, powered)
        else:
            torch._foreach_add_(exp_avg_sq_, powered, alpha=w)


def adam_denominator(exp_avg_sq: list[torch.Tensor], step: int, beta2: Scalars, eps: Scalars, pow: float,
                     debiased: bool) -> list[torch.Tensor]:
    """Returns ``d̂ + eps`` with ``d̂ = v^(1/pow) / (1 − β₂ᵗ)^(1/pow)``
    (torch's placement of eps: after the bias-corrected root)."""
    denom = list(torch._foreach_sqrt(exp_avg_sq) if pow == 2 else torch._foreach_pow(exp_avg_sq, 1 / pow))
    if debiased:
        bc2_root = _pow_scalar(combine(1, _pow_scalar(beta2, step), lambda a, b: a - b), 1 / pow)
        torch._foreach_div_(denom, bc2_root)
    torch._foreach_add_(denom, eps)
    return denom


def adam_step(
    tensors: Sequence[torch.Tensor],
    exp_avg_: list[torch.Tensor],
    exp_avg_sq: list[torch.Tensor],
    step: int,
    beta1: Scalars,
    beta2: Scalars,
    eps: Scalars,
    alpha: Scalars = 1.0,
    pow: float = 2,
    debiased: bool = True,
    params_: list[torch.Tensor] | None = None,
    lrs: Sequence[float] | None = None,
) -> list[torch.Tensor] | None:
    """The Adam direction from the first moment, given the (already updated) second moment ``exp_avg_sq``.

    ``m ← β₁ m + (1 − β₁) u`` in place, then the output is ``alpha · m̂ / (d̂ + eps)`` with ``m̂ = m / (1 − β₁ᵗ)``
    and ``d̂ = v^(1/pow) / (1 − β₂ᵗ)^(1/pow)`` when ``debiased``. If ``params_`` and ``lrs`` are given, the step
    ``params_ -= lr · output`` is applied directly (one fused ``addcdiv``, as ``torch.optim.Adam``) and None is
    returned; otherwise the output is returned as new tensors.
    """
    torch._foreach_lerp_(exp_avg_, tensors, combine(1, beta1, lambda a, b: a - b))
    denom = adam_denominator(exp_avg_sq, step, beta2, eps, pow, debiased)
    bc1 = combine(1, _pow_scalar(beta1, step), lambda a, b: a - b) if debiased else 1.0
    step_size = combine(alpha, bc1, lambda a, b: a / b)

    return div_scaled_or_step_(exp_avg_, denom, step_size, params_=params_, lrs=lrs)


class Adam(DirectStepTransform):
    """Adam: adaptive moment estimation (and AMSGrad), with torch's formula.

    State ``'exp_avg'`` m, ``'exp_avg_sq'`` v, ``'max_exp_avg_sq'`` (amsgrad). Each step, with t the number of steps:

    - ``v ← β₂ v + (1 − β₂)|u|^pow`` (always from the incoming update u); with ``amsgrad``,
      ``vmax ← max(vmax, v)`` replaces v below;
    - ``u' = inner(u)`` (or u), ``m ← β₁ m + (1 − β₁) u'``;
    - output ``alpha · m̂ / (d̂ + eps)`` with ``m̂ = m / (1 − β₁ᵗ)``, ``d̂ = v^(1/pow) / (1 − β₂ᵗ)^(1/pow)`` when
      ``debiased`` (else ``m̂ = m``, ``d̂ = v^(1/pow)``). eps is added after the bias-corrected root, as in torch.

    ``Modular(p, Adam(b1, b2), LR(lr))`` follows ``torch.optim.Adam(p, lr, betas=(b1, b2))``; with
    ``WeightDecay(wd)`` before Adam it is Adam's L2 ``weight_decay``, after it (before LR) it is ``AdamW``.
    Right before a final ``LR``, Adam applies the step to the parameters itself in one fused operation.

    Args:
        beta1: first moment decay. Defaults to 0.9.
        beta2: second moment decay. Defaults to 0.999.
        eps: added to the denominator. Defaults to 1e-8.
        amsgrad: use the maximum of past second moments. Defaults to False.
        alpha: constant multiplier of the output. Defaults to 1.
        pow: power of the second moment (2 = Adam). Defaults to 2.
        debiased: apply bias correction. Defaults to True.
        inner: modules applied to the update before the first moment. Defaults to None.

    Reference:
        D. P. Kingma, J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
        S. Reddi, S. Kale, S. Kumar, "On the Convergence of Adam and Beyond", ICLR 2018 (AMSGrad).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(0.9, 0.999), tz.m.LR(1e-3))
        adamw = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.WeightDecay(1e-2), tz.m.LR(1e-3))
        ```
    """

    _readonly_input = True

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, amsgrad: bool = False,
                 alpha: float = 1.0, pow: float = 2, debiased: bool = True, inner: Chainable | None = None):
        for name, value in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= value < 1:
                raise ValueError(f"Adam: {name} must be in [0, 1), got {value}")
        if eps < 0:
            raise ValueError(f"Adam: eps must be non-negative, got {eps}")
        if pow <= 0:
            raise ValueError(f"Adam: pow must be positive, got {pow}")
        defaults = dict(beta1=beta1, beta2=beta2, eps=eps, amsgrad=amsgrad, alpha=alpha, pow=pow, debiased=debiased)
        super().__init__(defaults, uses_grad=False, inner=inner)

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        self.global_state["step"] = self.global_state.get("step", 0) + 1
        s0 = settings[0]
        exp_avg_sq = [s["exp_avg_sq"] if "exp_avg_sq" in s else s.setdefault("exp_avg_sq", torch.zeros_like(t))
                      for s, t in zip(states, tensors)]
        adam_second_moment_(tensors, exp_avg_sq, scalar_or_list(self.unpack_settings(settings, "beta2")), pow=s0["pow"])
        if s0["amsgrad"]:
            max_exp_avg_sq = [s["max_exp_avg_sq"] if "max_exp_avg_sq" in s
                              else s.setdefault("max_exp_avg_sq", torch.zeros_like(t)) for s, t in zip(states, tensors)]
            torch._foreach_maximum_(max_exp_avg_sq, exp_avg_sq)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        step = self.global_state.get("step", 1)
        exp_avg = [s["exp_avg"] if "exp_avg" in s else s.setdefault("exp_avg", torch.zeros_like(t))
                   for s, t in zip(states, tensors)]
        second_moment_key = "max_exp_avg_sq" if s0["amsgrad"] else "exp_avg_sq"
        exp_avg_sq = [s[second_moment_key] for s in states]
        beta1, beta2, eps, alpha = self.unpack_settings(settings, "beta1", "beta2", "eps", "alpha")
        direct = self._direct_lrs
        out = adam_step(tensors, exp_avg, exp_avg_sq, step, beta1=scalar_or_list(beta1), beta2=scalar_or_list(beta2),
                        eps=scalar_or_list(eps), alpha=scalar_or_list(alpha), pow=s0["pow"], debiased=s0["debiased"],
                        params_=params if direct is not None else None, lrs=direct)
        return tensors if out is None else out
