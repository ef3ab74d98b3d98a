"""Adan: adaptive Nesterov momentum."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...utils.checks import check_non_negative, check_range
from ...utils.foreach import Scalars, combine, scalar_or_list
from ..step_size.lr import DirectStepTransform, div_scaled_or_step_
from .adam import _pow_scalar, adam_denominator, adam_second_moment_


def _one_minus(x: Scalars) -> Scalars:
    return combine(1, x, lambda a, b: a - b)


def adan_step(
    tensors: Sequence[torch.Tensor],
    g_prev_: list[torch.Tensor],
    m_: list[torch.Tensor],
    v_: list[torch.Tensor],
    n_: list[torch.Tensor],
    step: int,
    beta1: Scalars,
    beta2: Scalars,
    beta3: Scalars,
    eps: Scalars,
    params_: list[torch.Tensor] | None = None,
    lrs: Sequence[float] | None = None,
) -> list[torch.Tensor] | None:
    """One Adan step (betas are the "keep" factors, 1 minus the paper's); the state is updated in place.

    ``m ← β₁ m + (1 − β₁) u``; at t = 1 ``w = u``, later ``δ = u − g_prev``, ``v ← β₂ v + (1 − β₂) δ``,
    ``w = u + β₂ δ``; ``n ← β₃ n + (1 − β₃) w²``; output ``(m̂ + β₂ v̂) / (sqrt(n̂) + eps)`` with the bias-corrected
    ``m̂ = m/(1 − β₁ᵗ)``, ``v̂ = v/(1 − β₂ᵗ)``, ``n̂ = n/(1 − β₃ᵗ)``; finally ``g_prev ← u``. With ``params_`` and
    ``lrs`` the step ``params_ -= lr · output`` is applied in place (one ``addcdiv``) and None is returned.
    """
    torch._foreach_lerp_(m_, tensors, _one_minus(beta1))
    if step == 1:
        w: Sequence[torch.Tensor] = tensors
    else:
        delta = list(torch._foreach_sub(tensors, g_prev_))
        torch._foreach_lerp_(v_, delta, _one_minus(beta2))
        if isinstance(beta2, list):
            torch._foreach_mul_(delta, beta2)
            torch._foreach_add_(delta, tensors)
            w = delta
        else:
            w = list(torch._foreach_add(tensors, delta, alpha=beta2))
    adam_second_moment_(w, n_, beta3)
    denom = adam_denominator(n_, step, beta3, eps, 2, debiased=True)

    bc1 = _one_minus(_pow_scalar(beta1, step))
    num = list(torch._foreach_div(m_, bc1))
    if step != 1:  # v = 0 on the first step
        v_scale = combine(beta2, _one_minus(_pow_scalar(beta2, step)), lambda b, c: b / c)
        if isinstance(v_scale, list):
            torch._foreach_add_(num, torch._foreach_mul(v_, v_scale))
        else:
            torch._foreach_add_(num, v_, alpha=v_scale)
    torch._foreach_copy_(g_prev_, tensors)
    return div_scaled_or_step_(num, denom, 1.0, params_, lrs)


class Adan(DirectStepTransform):
    """Adan: Adam-like step on a Nesterov-style momentum that includes gradient differences.

    State ``'g_prev'``, ``'m'``, ``'v'``, ``'n'`` (zeros). With t the number of steps:
    ``m ← β₁ m + (1 − β₁) u``; at t = 1 ``w = u`` (v untouched), later ``δ = u − g_prev``,
    ``v ← β₂ v + (1 − β₂) δ``, ``w = u + β₂ δ``; ``n ← β₃ n + (1 − β₃) w²``; output
    ``(m̂ + β₂ v̂) / (sqrt(n̂) + eps)`` with ``m̂ = m/(1 − β₁ᵗ)``, ``v̂ = v/(1 − β₂ᵗ)``, ``n̂ = n/(1 − β₃ᵗ)``; then
    ``g_prev ← u``. The betas are the "keep" factors, i.e. 1 minus the paper's β₁, β₂, β₃ (0.02, 0.08, 0.01).
    No weight decay inside (put ``WeightDecay`` before ``LR``). The first output is ``g/(|g| + eps)``. Right before a
    final ``LR`` it applies the step to the parameters itself (one fused ``addcdiv``). Non-finite values are not
    checked; they propagate.

    Args:
        beta1: first moment factor (per-parameter). Defaults to 0.98.
        beta2: gradient-difference factor (per-parameter). Defaults to 0.92.
        beta3: second moment factor (per-parameter). Defaults to 0.99.
        eps: added to the denominator (per-parameter). Defaults to 1e-8.

    Reference:
        X. Xie, P. Zhou, H. Li, Z. Lin, S. Yan, "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
        Deep Models", IEEE TPAMI 2024 (arXiv:2208.06677).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adan(), tz.m.LR(1e-3))
        ```
    """

    _readonly_input = True

    def __init__(self, beta1: float = 0.98, beta2: float = 0.92, beta3: float = 0.99, eps: float = 1e-8):
        for name, value in (("beta1", beta1), ("beta2", beta2), ("beta3", beta3)):
            check_range("Adan", name, value, 0, 1, high_inclusive=False)
        check_non_negative("Adan", "eps", eps)
        super().__init__(dict(beta1=beta1, beta2=beta2, beta3=beta3, eps=eps))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        step = self.global_state["step"] = self.global_state.get("step", 0) + 1
        if "m" not in states[0]:
            for s, t in zip(states, tensors):
                for k in ("g_prev", "m", "v", "n"):
                    s[k] = torch.zeros_like(t)
        beta1, beta2, beta3, eps = (scalar_or_list(v) for v in self.unpack_settings(settings, "beta1", "beta2",
                                                                                      "beta3", "eps"))
        direct = self._direct_lrs
        out = adan_step(tensors, [s["g_prev"] for s in states], [s["m"] for s in states], [s["v"] for s in states],
                        [s["n"] for s in states], step, beta1, beta2, beta3, eps,
                        params_=params if direct is not None else None, lrs=direct)
        return tensors if out is None else out
