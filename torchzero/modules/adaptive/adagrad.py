"""AdaGrad (per-element accumulator) and AdaGrad-Norm (one scalar accumulator)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...core import Chainable, Transform
from ...utils.checks import check_non_negative, check_positive, check_range
from ...utils.foreach import Scalars, combine, scalar_or_list
from ...utils.tensorlist import TensorList
from ..step_size.lr import DirectStepTransform, div_scaled_or_step_


# ---------------------------------------------------------------------------------------------------- shared helpers
def accumulate_power_(tensors: Sequence[torch.Tensor], acc_: list[torch.Tensor], keep: Scalars, weight: Scalars,
                      pow: float = 2) -> None:
    """``acc ← keep · acc + weight · |u|^pow`` in place (``keep = 1, weight = 1`` is AdaGrad's sum)."""
    if isinstance(keep, list) or keep != 1:
        torch._foreach_mul_(acc_, keep)
    if pow == 2:
        if isinstance(weight, list):
            torch._foreach_addcmul_(acc_, tensors, tensors, weight)
        else:
            torch._foreach_addcmul_(acc_, tensors, tensors, value=weight)
        return
    powered = torch._foreach_pow(torch._foreach_abs(tensors), pow)
    if isinstance(weight, list):
        torch._foreach_mul_(powered, weight)
        torch._foreach_add_(acc_, powered)
    else:
        torch._foreach_add_(acc_, powered, alpha=weight)


def accumulator_factors(beta: float | None | list[float | None], decay: float | None | list[float | None],
                        first: bool) -> tuple[Scalars, Scalars]:
    """``(keep, weight)`` of AdaGrad's accumulator update ``acc ← keep · acc + weight · |u|^pow``.

    The sum (``keep = weight = 1``) on the first step or where ``beta`` is None, else the EMA
    (``keep = β, weight = 1 − β``); a ``decay`` multiplies both by ``1 − decay`` (it scales the result)."""
    def one(b: float | None, d: float | None) -> tuple[float, float]:
        keep, weight = (1.0, 1.0) if (first or b is None) else (b, 1 - b)
        if d is not None:
            keep, weight = keep * (1 - d), weight * (1 - d)
        return keep, weight

    if isinstance(beta, list) or isinstance(decay, list):
        n = len(beta) if isinstance(beta, list) else len(decay)  # type: ignore[arg-type]
        b_ = beta if isinstance(beta, list) else [beta] * n
        d_ = decay if isinstance(decay, list) else [decay] * n
        pairs = [one(b, d) for b, d in zip(b_, d_)]
        return scalar_or_list([p[0] for p in pairs]), scalar_or_list([p[1] for p in pairs])
    return one(beta, decay)


def adagrad_denominator(sq_sum: list[torch.Tensor], step: int, eps: Scalars, pow: float, use_sqrt: bool,
                        divide: bool) -> list[torch.Tensor]:
    """``(s/t)^(1/pow) + eps`` (``use_sqrt``) or ``s/t + eps``, where ``/t`` only with ``divide``; new tensors."""
    if use_sqrt:
        denom = list(torch._foreach_sqrt(sq_sum) if pow == 2 else torch._foreach_pow(sq_sum, 1 / pow))
        if divide and step != 1:
            torch._foreach_div_(denom, step ** (1 / pow))
        torch._foreach_add_(denom, eps)
        return denom
    if divide and step != 1:
        denom = list(torch._foreach_div(sq_sum, step))
        torch._foreach_add_(denom, eps)
        return denom
    return list(torch._foreach_add(sq_sum, eps))


def _decayed_lr(alpha: Scalars, lr_decay: Scalars, step: int) -> Scalars:
    """``alpha / (1 + (t − 1)·lr_decay)`` (torch's placement: no decay on the first step)."""
    return combine(alpha, lr_decay, lambda a, d: a / (1 + (step - 1) * d) if d != 0 else a)


def _check_adagrad_args(owner: str, lr_decay: float, initial_accumulator_value: float, eps: float, pow: float,
                        beta: float | None, decay: float | None) -> None:
    check_non_negative(owner, "lr_decay", lr_decay)
    check_non_negative(owner, "initial_accumulator_value", initial_accumulator_value)
    check_non_negative(owner, "eps", eps)
    check_positive(owner, "pow", pow)
    if beta is not None:
        check_range(owner, "beta", beta, 0, 1)
    if decay is not None:
        check_range(owner, "decay", decay, 0, 1)


# ---------------------------------------------------------------------------------------------------- Adagrad
class Adagrad(DirectStepTransform):
    """AdaGrad: divides the update by the root of the per-element sum of its past powers.

    State ``'sq_sum'`` s, set to ``initial_accumulator_value`` on the first step. With t the number of steps:

    - ``s ← s + |u|^pow`` (on the first step, or when ``beta`` is None), else ``s ← β s + (1 − β)|u|^pow``;
      then, if ``decay`` is set, ``s ← (1 − decay)·s``;
    - ``u' = inner(u)`` (or u); the denominator is ``(s/t)^(1/pow) + eps`` with ``use_sqrt`` (``s/t + eps`` without),
      where ``/t`` is only applied with ``divide`` (not stored);
    - output ``clr · u' / denominator`` with ``clr = alpha / (1 + (t − 1)·lr_decay)``.

    ``Modular(p, Adagrad(lr_decay=d, initial_accumulator_value=a), LR(lr))`` follows
    ``torch.optim.Adagrad(p, lr, lr_decay=d, initial_accumulator_value=a, eps=1e-10)``. Right before a final ``LR``
    it applies the step to the parameters itself (one fused ``addcdiv``, as torch does). Non-finite values are not
    checked (as in ``torch.optim``): they propagate into the accumulator and the output.

    Args:
        lr_decay: decay of the built-in step size ``clr`` (per-parameter). Defaults to 0.
        initial_accumulator_value: initial value of ``s`` (per-parameter). Defaults to 0.
        eps: added to the denominator (per-parameter). Defaults to 1e-10.
        alpha: constant multiplier of the output (per-parameter). Defaults to 1.
        pow: power of the accumulated values; the denominator is the ``pow``-th root. Defaults to 2.
        use_sqrt: take the root of the accumulator; if False divide by ``s`` itself. Defaults to True.
        divide: use the mean ``s/t`` instead of the sum. Defaults to False.
        beta: if set, the accumulator is an EMA with this factor after the first step (per-parameter).
            Defaults to None.
        decay: if set, the accumulator is multiplied by ``1 − decay`` every step (per-parameter). Defaults to None.
        inner: modules applied to the update before the division (the accumulator sees the raw update).
            Defaults to None.

    Reference:
        J. Duchi, E. Hazan, Y. Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
        Optimization", JMLR 2011.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adagrad(), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, lr_decay: float = 0, initial_accumulator_value: float = 0, eps: float = 1e-10,
                 alpha: float = 1, pow: float = 2, use_sqrt: bool = True, divide: bool = False,
                 beta: float | None = None, decay: float | None = None, inner: Chainable | None = None):
        _check_adagrad_args("Adagrad", lr_decay, initial_accumulator_value, eps, pow, beta, decay)
        check_range("Adagrad", "alpha", alpha)
        defaults = dict(lr_decay=lr_decay, initial_accumulator_value=initial_accumulator_value, eps=eps, alpha=alpha,
                        pow=pow, use_sqrt=use_sqrt, divide=divide, beta=beta, decay=decay)
        super().__init__(defaults, inner=inner)

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        step = self.global_state["step"] = self.global_state.get("step", 0) + 1
        if "sq_sum" not in states[0]:
            init = self.unpack_settings(settings, "initial_accumulator_value")
            for s, t, a in zip(states, tensors, init):
                s["sq_sum"] = torch.full_like(t, a)
        sq_sum = [s["sq_sum"] for s in states]
        beta, decay = self.unpack_settings(settings, "beta", "decay")
        keep, weight = accumulator_factors(scalar_or_list(beta), scalar_or_list(decay), first=step == 1)
        accumulate_power_(tensors, sq_sum, keep, weight, pow=settings[0]["pow"])

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        step = self.global_state.get("step", 1)
        eps, alpha, lr_decay = self.unpack_settings(settings, "eps", "alpha", "lr_decay")
        denom = adagrad_denominator([s["sq_sum"] for s in states], step, scalar_or_list(eps), s0["pow"],
                                    s0["use_sqrt"], s0["divide"])
        clr = _decayed_lr(scalar_or_list(alpha), scalar_or_list(lr_decay), step)
        direct = self._direct_lrs
        out = div_scaled_or_step_(tensors, denom, clr, params if direct is not None else None, direct)
        return tensors if out is None else out


# ---------------------------------------------------------------------------------------------------- AdagradNorm
class AdagradNorm(Transform):
    """AdaGrad-Norm: AdaGrad with one scalar accumulator of squared global norms for the whole module.

    Global state ``'accumulator'`` A (a 0-d tensor), starting at ``initial_accumulator_value``. With
    ``q = Σ u²`` over all parameters and t the number of steps:

    - ``A ← A + q`` (first step, or ``beta`` None), else ``A ← β A + (1 − β) q``; with ``decay``, ``A ← (1 − decay)·A``;
    - ``u' = inner(u)``; output ``clr · u' / (eps + sqrt(A))`` (``use_sqrt``) or ``clr · u' / (eps + A)``, with
      ``A/t`` in place of A when ``divide`` (not stored) and ``clr = alpha / (1 + (t − 1)·lr_decay)``.

    Feeding a constant ``g`` gives ``g / (‖g‖·sqrt(t))`` at step t. ``pow`` is accepted for signature compatibility
    with ``Adagrad`` and ignored. The accumulator is global, so ``initial_accumulator_value``, ``beta`` and
    ``decay`` are read from the first parameter's settings; ``eps``, ``alpha`` and ``lr_decay`` are per-parameter.
    No device synchronisation: A stays a tensor on the parameters' device. Non-finite values are not checked; they
    propagate.

    Args:
        lr_decay: decay of the built-in step size ``clr``. Defaults to 0.
        initial_accumulator_value: initial A. Defaults to 0.
        eps: added to the denominator. Defaults to 1e-10.
        alpha: constant multiplier of the output. Defaults to 1.
        pow: ignored. Defaults to 2.
        use_sqrt: divide by ``sqrt(A)``; if False by A. Defaults to True.
        divide: use ``A/t``. Defaults to False.
        beta: EMA factor of the accumulator after the first step; None sums. Defaults to None.
        decay: multiply A by ``1 − decay`` every step. Defaults to None.
        inner: modules applied to the update before scaling (A sees the raw update). Defaults to None.

    Reference:
        R. Ward, X. Wu, L. Bottou, "AdaGrad Stepsizes: Sharp Convergence over Nonconvex Landscapes", ICML 2019.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.AdagradNorm(), tz.m.LR(1e-1))
        ```
    """

    _readonly_input = True

    def __init__(self, lr_decay: float = 0, initial_accumulator_value: float = 0, eps: float = 1e-10,
                 alpha: float = 1, pow: float = 2, use_sqrt: bool = True, divide: bool = False,
                 beta: float | None = None, decay: float | None = None, inner: Chainable | None = None):
        _check_adagrad_args("AdagradNorm", lr_decay, initial_accumulator_value, eps, pow, beta, decay)
        check_range("AdagradNorm", "alpha", alpha)
        defaults = dict(lr_decay=lr_decay, initial_accumulator_value=initial_accumulator_value, eps=eps, alpha=alpha,
                        pow=pow, use_sqrt=use_sqrt, divide=divide, beta=beta, decay=decay)
        super().__init__(defaults, inner=inner)

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        step = self.global_state["step"] = self.global_state.get("step", 0) + 1
        s0 = settings[0]
        q = TensorList(tensors).global_vector_norm(2).square()
        acc = self.global_state.get("accumulator")
        if acc is None:
            acc = torch.full((), s0["initial_accumulator_value"], dtype=q.dtype, device=q.device)
        keep, weight = accumulator_factors(s0["beta"], s0["decay"], first=step == 1)
        assert not isinstance(keep, list) and not isinstance(weight, list)
        self.global_state["accumulator"] = acc * keep + q * weight

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        step = self.global_state.get("step", 1)
        acc = self.global_state["accumulator"]
        if s0["divide"]:
            acc = acc / step
        root = acc.sqrt() if s0["use_sqrt"] else acc
        eps, alpha, lr_decay = self.unpack_settings(settings, "eps", "alpha", "lr_decay")
        clr = _decayed_lr(scalar_or_list(alpha), scalar_or_list(lr_decay), step)
        eps_ = scalar_or_list(eps)
        if isinstance(clr, list) or isinstance(eps_, list):
            factors = combine(clr, eps_, lambda c, e: c / (root + e))
            return list(torch._foreach_mul(tensors, factors))  # type: ignore[arg-type]
        return list(torch._foreach_mul(tensors, clr / (root + eps_)))
