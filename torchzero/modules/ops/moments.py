"""Second-moment building blocks (EMA of squares, centered variants) and Adam-style bias corrections."""
from __future__ import annotations

import torch

from ...core import Target, Transform
from ...utils.foreach import Scalars, combine, scalar_or_list
from ..adaptive.adam import adam_second_moment_


def moment_buffers(states: list[dict], tensors: list[torch.Tensor], key: str) -> list[torch.Tensor]:
    return [s[key] if key in s else s.setdefault(key, torch.zeros_like(t)) for s, t in zip(states, tensors)]


def root_(tensors: list[torch.Tensor], pow: float) -> list[torch.Tensor]:
    """``x^(1/pow)`` in place (|x| for pow=1, sqrt for pow=2)."""
    if pow == 2:
        torch._foreach_sqrt_(tensors)
    elif pow == 1:
        torch._foreach_abs_(tensors)
    else:
        torch._foreach_pow_(tensors, 1 / pow)
    return tensors


def debias_root_(tensors: list[torch.Tensor], beta: Scalars, step: int, pow: float) -> None:
    """Divides by ``(1 − βᵏ)^(1/pow)`` in place."""
    torch._foreach_div_(tensors, combine(beta, pow, lambda b, p: (1 - b**step) ** (1 / p)))


class EMASquared(Transform):
    """EMA of squared updates: ``v ← β·v + (1 − β)·|x|^pow``; with ``amsgrad`` the running maximum of v. Outputs a
    copy.

    Args:
        beta: decay (per parameter). Defaults to 0.999.
        amsgrad: output the running maximum. Defaults to False.
        pow: power. Defaults to 2.
    """

    _readonly_input = True

    def __init__(self, beta: float = 0.999, amsgrad: bool = False, pow: float = 2):
        super().__init__(dict(beta=beta, amsgrad=amsgrad, pow=pow))

    def _second_moment(self, tensors, states, settings) -> list[torch.Tensor]:
        s0 = settings[0]
        v = moment_buffers(states, tensors, "exp_avg_sq")
        adam_second_moment_(tensors, v, scalar_or_list(self.unpack_settings(settings, "beta")), pow=s0["pow"])
        if s0["amsgrad"]:
            vmax = moment_buffers(states, tensors, "max_exp_avg_sq")
            torch._foreach_maximum_(vmax, v)
            return vmax
        return v

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return [t.clone() for t in self._second_moment(tensors, states, settings)]


class SqrtEMASquared(EMASquared):
    """Root of the EMA of squared updates: ``v^(1/pow)``, divided by ``(1 − βᵏ)^(1/pow)`` if ``debiased``.

    Args:
        beta: decay (per parameter). Defaults to 0.999.
        amsgrad: use the running maximum of v. Defaults to False.
        debiased: apply the bias correction. Defaults to False.
        pow: power. Defaults to 2.
    """

    def __init__(self, beta: float = 0.999, amsgrad: bool = False, debiased: bool = False, pow: float = 2):
        Transform.__init__(self, dict(beta=beta, amsgrad=amsgrad, debiased=debiased, pow=pow))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        step = self.global_state["step"] = self.global_state.get("step", 0) + 1
        s0 = settings[0]
        out = root_([t.clone() for t in self._second_moment(tensors, states, settings)], s0["pow"])
        if s0["debiased"]:
            debias_root_(out, scalar_or_list(self.unpack_settings(settings, "beta")), step, s0["pow"])
        return out


class CenteredEMASquared(Transform):
    """Centered second moment: ``c = v − m²`` with ``m ← β·m + (1 − β)·x`` and v as in ``EMASquared``.

    With ``amsgrad`` the max buffer absorbs v first and then c, so the output is the running maximum of the
    uncentered EMA (kept as in the reference API).

    Args:
        beta: decay (per parameter). Defaults to 0.99.
        amsgrad: see above. Defaults to False.
        pow: power. Defaults to 2.
    """

    _readonly_input = True

    def __init__(self, beta: float = 0.99, amsgrad: bool = False, pow: float = 2):
        super().__init__(dict(beta=beta, amsgrad=amsgrad, pow=pow))

    def _centered(self, tensors, states, settings) -> list[torch.Tensor]:
        s0 = settings[0]
        beta = scalar_or_list(self.unpack_settings(settings, "beta"))
        v = moment_buffers(states, tensors, "exp_avg_sq")
        m = moment_buffers(states, tensors, "exp_avg")
        adam_second_moment_(tensors, v, beta, pow=s0["pow"])
        torch._foreach_lerp_(m, tensors, combine(1, beta, lambda a, b: a - b))
        if s0["amsgrad"]:
            vmax = moment_buffers(states, tensors, "max_exp_avg_sq")
            torch._foreach_maximum_(vmax, v)
            c = torch._foreach_addcmul(vmax, m, m, value=-1)
            torch._foreach_maximum_(vmax, c)
            return [t.clone() for t in vmax]
        return list(torch._foreach_addcmul(v, m, m, value=-1))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return self._centered(tensors, states, settings)


class CenteredSqrtEMASquared(CenteredEMASquared):
    """Root of the centered second moment, divided by ``(1 − βᵏ)^(1/pow)`` if ``debiased``.

    Args:
        beta: decay (per parameter). Defaults to 0.99.
        amsgrad: as in ``CenteredEMASquared``. Defaults to False.
        debiased: apply the bias correction. Defaults to False.
        pow: power. Defaults to 2.
    """

    def __init__(self, beta: float = 0.99, amsgrad: bool = False, debiased: bool = False, pow: float = 2):
        Transform.__init__(self, dict(beta=beta, amsgrad=amsgrad, debiased=debiased, pow=pow))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        step = self.global_state["step"] = self.global_state.get("step", 0) + 1
        s0 = settings[0]
        out = root_(self._centered(tensors, states, settings), s0["pow"])
        if s0["debiased"]:
            debias_root_(out, scalar_or_list(self.unpack_settings(settings, "beta")), step, s0["pow"])
        return out


class Debias(Transform):
    """Adam-style bias correction as a multiplier: ``x·s`` with ``s = alpha``, ``s ← s/(1 − β1ᵏ)`` if beta1 is given,
    ``s ← s·(1 − β2ᵏ)^(1/pow)`` if beta2 is given (k = 1 on the first step).

    Args:
        beta1: first-moment decay or None. Defaults to None.
        beta2: second-moment decay or None. Defaults to None.
        alpha: multiplier. Defaults to 1.
        pow: power of the second moment. Defaults to 2.
        target: what to transform. Defaults to ``'update'``.
    """

    def __init__(self, beta1: float | None = None, beta2: float | None = None, alpha: float = 1, pow: float = 2,
                 target: Target = "update"):
        super().__init__(dict(beta1=beta1, beta2=beta2, alpha=alpha, pow=pow), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        step = self.global_state["step"] = self.global_state.get("step", 0) + 1
        pow = settings[0]["pow"]
        alpha, beta1, beta2 = self.unpack_settings(settings, "alpha", "beta1", "beta2")
        scale: Scalars = scalar_or_list(alpha)
        if beta1[0] is not None:
            scale = combine(scale, scalar_or_list(beta1), lambda s, b: s / (1 - b**step))
        if beta2[0] is not None:
            scale = combine(scale, scalar_or_list(beta2), lambda s, b: s * (1 - b**step) ** (1 / pow))
        torch._foreach_mul_(tensors, scale)
        return tensors


class Debias2(Transform):
    """Second-moment bias correction only: ``x / (1 − βᵏ)^(1/pow)``.

    Args:
        beta: decay (per parameter). Defaults to 0.999.
        pow: power. Defaults to 2.
        target: what to transform. Defaults to ``'update'``.
    """

    def __init__(self, beta: float = 0.999, pow: float = 2, target: Target = "update"):
        super().__init__(dict(beta=beta, pow=pow), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        step = self.global_state["step"] = self.global_state.get("step", 0) + 1
        debias_root_(tensors, scalar_or_list(self.unpack_settings(settings, "beta")), step, settings[0]["pow"])
        return tensors
