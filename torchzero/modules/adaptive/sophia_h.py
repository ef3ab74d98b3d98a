"""SophiaH: Sophia with Hutchinson estimates of the Hessian diagonal."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...core import Chainable
from ...utils.checks import check_int, check_range
from ...utils.foreach import Scalars, scalar_or_list
from ..momentum.momentum import ema_
from .adahessian import CurvatureTransform, HvpMethod, check_hvp_args, hvp_probe_mean


def sophia_h_step(
    tensors: Sequence[torch.Tensor],
    exp_avg_: list[torch.Tensor],
    h_exp_avg: list[torch.Tensor],
    beta1: Scalars,
    precond_scale: Scalars,
    clip: Scalars,
    eps: Scalars,
) -> list[torch.Tensor]:
    """``m ← β₁ m + (1 − β₁) u`` in place, returns ``clamp(m / max(precond_scale·h̄, eps), −clip, clip)``."""
    ema_(list(tensors), exp_avg_, beta1, 0.0, lerp=True)
    denom = list(torch._foreach_mul(h_exp_avg, precond_scale))
    torch._foreach_maximum_(denom, eps)
    out = list(torch._foreach_div(exp_avg_, denom))
    torch._foreach_clamp_min_(out, [-c for c in clip] if isinstance(clip, list) else -clip)
    torch._foreach_clamp_max_(out, clip)
    return out


class SophiaH(CurvatureTransform):
    """SophiaH: momentum divided elementwise by an EMA of Hutchinson Hessian-diagonal estimates, then clipped.

    ``u' = inner(u)`` (or ``u``), ``m ← β₁ m + (1 − β₁) u'`` (``'exp_avg'``). With step index ``k = 0, 1, …``
    (global ``'step'``), when ``k % update_freq == 0`` standard normal probes ``z`` give ``ĥ = mean_z(z ⊙ Hz)``
    (``E[ĥ] = diag(H)``) and ``h̄ ← β₂ h̄ + (1 − β₂) ĥ`` (``'h_exp_avg'``). Output

    ``clamp(m / max(precond_scale · h̄, eps), −clip, clip)``  (no bias correction).

    Where the curvature estimate is negative or tiny the denominator is ``eps`` and the element is clipped to
    ``±clip`` (Sophia's sign-descent fallback). NaN in the gradient or curvature is not masked (``clamp`` keeps it).

    Args:
        beta1: momentum decay. Defaults to 0.96.
        beta2: decay of the Hessian-diagonal average. Defaults to 0.99.
        update_freq: estimate the Hessian diagonal every ``update_freq`` steps. Defaults to 10.
        precond_scale: multiplier ``γ`` of the curvature. Defaults to 1.
        clip: elementwise bound of the output. Defaults to 1.
        eps: lower bound of the denominator. Defaults to 1e-12.
        hvp_method: ``'autograd'``, ``'forward'`` or ``'central'``. Defaults to ``'autograd'``.
        fd_h: finite-difference step. Defaults to 1e-3.
        n_samples: probes per estimate. Defaults to 1.
        seed: seed of the probe generator (None: global RNG). Defaults to None.
        inner: modules applied to the update before the momentum. Defaults to None.

    Reference:
        H. Liu, Z. Li, D. Hall, P. Liang, T. Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for Language
        Model Pre-training", ICLR 2024.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.SophiaH(seed=0), tz.m.LR(1e-3))
        opt.step(closure)  # closure(backward=True) is required
        ```
    """

    def __init__(self, beta1: float = 0.96, beta2: float = 0.99, update_freq: int = 10, precond_scale: float = 1,
                 clip: float = 1, eps: float = 1e-12, hvp_method: HvpMethod = "autograd", fd_h: float = 0.001,
                 n_samples: int = 1, seed: int | None = None, inner: Chainable | None = None):
        name = type(self).__name__
        check_range(name, "beta1", beta1, 0, 1, high_inclusive=False)
        check_range(name, "beta2", beta2, 0, 1, high_inclusive=False)
        check_int(name, "update_freq", update_freq)
        check_range(name, "precond_scale", precond_scale, low=0, low_inclusive=False)
        check_range(name, "clip", clip, low=0, low_inclusive=False)
        check_range(name, "eps", eps, low=0, low_inclusive=False)
        check_hvp_args(name, hvp_method, fd_h, "fd_h", n_samples, seed)
        defaults = dict(beta1=beta1, beta2=beta2, update_freq=update_freq, precond_scale=precond_scale, clip=clip,
                        eps=eps, hvp_method=hvp_method, fd_h=fd_h, n_samples=n_samples, seed=seed)
        super().__init__(defaults, inner=inner)

    def update_curvature(self, var, states, settings):
        k = self.global_state.get("step", 0)
        self.global_state["step"] = k + 1
        s0 = settings[0]
        if k % s0["update_freq"] != 0:
            return
        h_hat = hvp_probe_mean(self, var, distribution="normal", statistic="z*Hz", n_samples=s0["n_samples"],
                               hvp_method=s0["hvp_method"], h=s0["fd_h"], seed=s0["seed"])
        h_exp_avg = [s["h_exp_avg"] if "h_exp_avg" in s else s.setdefault("h_exp_avg", torch.zeros_like(p))
                     for s, p in zip(states, var.params)]
        ema_(h_hat, h_exp_avg, scalar_or_list(self.unpack_settings(settings, "beta2")), 0.0, lerp=True)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        exp_avg = [s["exp_avg"] if "exp_avg" in s else s.setdefault("exp_avg", torch.zeros_like(t))
                   for s, t in zip(states, tensors)]
        h_exp_avg = [s["h_exp_avg"] if "h_exp_avg" in s else s.setdefault("h_exp_avg", torch.zeros_like(t))
                     for s, t in zip(states, tensors)]
        beta1, precond_scale, clip, eps = self.unpack_settings(settings, "beta1", "precond_scale", "clip", "eps")
        return sophia_h_step(tensors, exp_avg, h_exp_avg, scalar_or_list(beta1), scalar_or_list(precond_scale),
                             scalar_or_list(clip), scalar_or_list(eps))
