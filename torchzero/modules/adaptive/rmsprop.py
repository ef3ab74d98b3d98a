"""RMSprop (plain, centered, debiased, AMSGrad-style)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from ...core import Chainable
from ...utils.checks import check_choice, check_non_negative, check_positive, check_range
from ...utils.foreach import Scalars, combine, scalar_or_list
from ..step_size.lr import DirectStepTransform, div_scaled_or_step_
from .adam import adam_denominator, adam_second_moment_


def rmsprop_update_(
    tensors: Sequence[torch.Tensor],
    exp_avg_sq_: list[torch.Tensor],
    smoothing: Scalars,
    pow: float = 2,
    exp_avg_: list[torch.Tensor] | None = None,
    max_exp_avg_sq_: list[torch.Tensor] | None = None,
) -> None:
    """Updates RMSprop's statistics in place: ``v ← s v + (1 − s)|u|^pow``; with ``exp_avg_`` (centered)
    ``m ← s m + (1 − s) u``; with ``max_exp_avg_sq_`` (amsgrad) ``vmax ← max(vmax, v − m²)`` (``v`` if not centered)."""
    adam_second_moment_(tensors, exp_avg_sq_, smoothing, pow=pow)
    if exp_avg_ is not None:
        torch._foreach_lerp_(exp_avg_, tensors, combine(1, smoothing, lambda a, b: a - b))
    if max_exp_avg_sq_ is not None:
        torch._foreach_maximum_(max_exp_avg_sq_, exp_avg_sq_ if exp_avg_ is None else centered_second_moment(
            exp_avg_sq_, exp_avg_))


def centered_second_moment(exp_avg_sq: list[torch.Tensor], exp_avg: list[torch.Tensor]) -> list[torch.Tensor]:
    """``max(v − m², 0)`` as new tensors (the clamp removes negative round-off, which would make the root NaN)."""
    centered = list(torch._foreach_addcmul(exp_avg_sq, exp_avg, exp_avg, value=-1))
    torch._foreach_clamp_min_(centered, 0)
    return centered


class RMSprop(DirectStepTransform):
    """RMSprop: divides the update by the root of an exponential moving average of its squares.

    State ``'exp_avg_sq'`` v, ``'exp_avg'`` m (centered), ``'max_exp_avg_sq'`` (amsgrad). With s = ``smoothing``
    and t the number of steps (statistics always from the incoming update u):

    - with ``init='update'``, on the first step ``v = |u|^pow`` before the EMA update;
    - ``v ← s v + (1 − s)|u|^pow``; if ``centered``, ``m ← s m + (1 − s) u`` and ``q = max(v − m², 0)`` is used
      instead of v; with ``amsgrad`` the running elementwise maximum of q (``'max_exp_avg_sq'``) is used;
    - ``d = q^(1/pow)``, divided by ``(1 − sᵗ)^(1/pow)`` if ``debiased``; output ``inner(u) / (d + eps)``.

    ``Modular(p, RMSprop(), LR(lr))`` follows ``torch.optim.RMSprop(p, lr)`` (alpha=0.99, eps=1e-8), also with
    ``centered=True``. Right before a final ``LR`` it applies the step to the parameters itself (one fused
    ``addcdiv``, as torch does). Non-finite values are not checked (as in ``torch.optim``): they propagate.

    ``centered=True`` with ``init='update'`` is rejected: it sets ``m = u`` and ``v = u²`` on the first step, so
    ``v − m² = 0`` and the first output would be ``u / eps``.

    Args:
        smoothing: the EMA factor s (per-parameter). Defaults to 0.99.
        eps: added to the denominator (per-parameter). Defaults to 1e-8.
        centered: subtract the squared mean (Graves' variant). Defaults to False.
        debiased: Adam-style bias correction of the second moment. Defaults to False.
        amsgrad: use the running maximum of the second moment. Defaults to False.
        pow: power of the second moment (2 = RMSprop). Defaults to 2.
        init: ``'zeros'`` or ``'update'`` (the first second moment is ``|u|^pow``). Defaults to ``'zeros'``.
        inner: modules applied to the update before the division. Defaults to None.

    Reference:
        T. Tieleman, G. Hinton, Lecture 6.5 "RMSprop", COURSERA: Neural Networks for Machine Learning, 2012;
        centered variant: A. Graves, "Generating Sequences With Recurrent Neural Networks", 2013.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.RMSprop(0.99), tz.m.LR(1e-3))
        ```
    """

    _readonly_input = True

    def __init__(self, smoothing: float = 0.99, eps: float = 1e-8, centered: bool = False, debiased: bool = False,
                 amsgrad: bool = False, pow: float = 2, init: Literal["zeros", "update"] = "zeros",
                 inner: Chainable | None = None):
        check_range("RMSprop", "smoothing", smoothing, 0, 1)
        check_non_negative("RMSprop", "eps", eps)
        check_positive("RMSprop", "pow", pow)
        check_choice("RMSprop", "init", init, ("zeros", "update"))
        if centered and init == "update":
            raise ValueError("RMSprop: centered=True with init='update' gives v − m² = 0 on the first step "
                             "(an output of u/eps); use init='zeros' with centered=True")
        defaults = dict(smoothing=smoothing, eps=eps, centered=centered, debiased=debiased, amsgrad=amsgrad, pow=pow,
                        init=init)
        super().__init__(defaults, inner=inner)

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        step = self.global_state["step"] = self.global_state.get("step", 0) + 1
        s0 = settings[0]
        pow, centered, amsgrad = s0["pow"], s0["centered"], s0["amsgrad"]
        if "exp_avg_sq" not in states[0]:
            if s0["init"] == "update" and step == 1:
                first = torch._foreach_mul(tensors, tensors) if pow == 2 else \
                    torch._foreach_pow(torch._foreach_abs(tensors), pow)
                for s, v in zip(states, first):
                    s["exp_avg_sq"] = v
            else:
                for s, t in zip(states, tensors):
                    s["exp_avg_sq"] = torch.zeros_like(t)
        exp_avg_sq = [s["exp_avg_sq"] for s in states]
        exp_avg = [s["exp_avg"] if "exp_avg" in s else s.setdefault("exp_avg", torch.zeros_like(t))
                   for s, t in zip(states, tensors)] if centered else None
        max_exp_avg_sq = [s["max_exp_avg_sq"] if "max_exp_avg_sq" in s
                          else s.setdefault("max_exp_avg_sq", torch.zeros_like(t))
                          for s, t in zip(states, tensors)] if amsgrad else None
        smoothing = scalar_or_list(self.unpack_settings(settings, "smoothing"))
        rmsprop_update_(tensors, exp_avg_sq, smoothing, pow=pow, exp_avg_=exp_avg, max_exp_avg_sq_=max_exp_avg_sq)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        step = self.global_state.get("step", 1)
        smoothing, eps = self.unpack_settings(settings, "smoothing", "eps")
        if s0["amsgrad"]:
            second = [s["max_exp_avg_sq"] for s in states]
        elif s0["centered"]:
            second = centered_second_moment([s["exp_avg_sq"] for s in states], [s["exp_avg"] for s in states])
        else:
            second = [s["exp_avg_sq"] for s in states]
        denom = adam_denominator(second, step, scalar_or_list(smoothing), scalar_or_list(eps), s0["pow"],
                                 s0["debiased"])
        direct = self._direct_lrs
        out = div_scaled_or_step_(tensors, denom, 1.0, params if direct is not None else None, direct)
        return tensors if out is None else out
