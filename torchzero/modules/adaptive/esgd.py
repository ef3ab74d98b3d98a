"""ESGD: equilibrated SGD (the equilibration preconditioner ``sqrt(diag(H²))``)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...core import Chainable
from ...utils.checks import check_int, check_range
from ...utils.foreach import Scalars, scalar_or_list
from .adahessian import CurvatureTransform, HvpMethod, check_hvp_args, hvp_probe_mean


def esgd_step(tensors: Sequence[torch.Tensor], D_sq_acc: list[torch.Tensor], i: int, damping: Scalars
              ) -> list[torch.Tensor]:
    """Returns ``u / (sqrt(S / max(i, 1)) + damping)`` as new tensors."""
    denom = list(torch._foreach_div(D_sq_acc, max(i, 1)))
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, damping)
    return list(torch._foreach_div(tensors, denom))


class ESGD(CurvatureTransform):
    """ESGD: divides the update by the equilibration preconditioner ``sqrt(diag(H²))``, estimated from ``(Hz)²``.

    With step index ``k = 0, 1, …`` (global ``'step'``), when ``k % update_freq == 0`` (so step 1 updates) standard
    normal probes ``z`` give ``D² = mean_z((Hz)²)`` (``E = diag(H²)``, the squared row norms of ``H``), added to the
    accumulator ``S ← S + D²`` (``'D_sq_acc'``), and the count ``i`` (global ``'i'``) is incremented. Every step,
    with ``u' = inner(u)`` (or ``u``):

    ``output = u' / (sqrt(S / max(i, 1)) + damping)``.

    With ``damping=0``, elements without curvature divide by zero (inf/NaN are not masked).

    Args:
        damping: added to the denominator. Defaults to 1e-4.
        update_freq: update the accumulator every ``update_freq`` steps. Defaults to 20.
        hvp_method: ``'autograd'``, ``'forward'`` or ``'central'``. Defaults to ``'autograd'``.
        fd_h: finite-difference step. Defaults to 1e-3.
        n_samples: probes per update (their squares are averaged). Defaults to 1.
        seed: seed of the probe generator (None: global RNG). Defaults to None.
        inner: modules applied to the update before preconditioning. Defaults to None.

    Reference:
        Y. Dauphin, H. de Vries, Y. Bengio, "Equilibrated adaptive learning rates for non-convex optimization",
        NeurIPS 2015.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.ESGD(seed=0), tz.m.LR(0.1))
        opt.step(closure)  # closure(backward=True) is required
        ```
    """

    def __init__(self, damping: float = 0.0001, update_freq: int = 20, hvp_method: HvpMethod = "autograd",
                 fd_h: float = 0.001, n_samples: int = 1, seed: int | None = None, inner: Chainable | None = None):
        name = type(self).__name__
        check_range(name, "damping", damping, low=0)
        check_int(name, "update_freq", update_freq)
        check_hvp_args(name, hvp_method, fd_h, "fd_h", n_samples, seed)
        defaults = dict(damping=damping, update_freq=update_freq, hvp_method=hvp_method, fd_h=fd_h,
                        n_samples=n_samples, seed=seed)
        super().__init__(defaults, inner=inner)

    def update_curvature(self, var, states, settings):
        k = self.global_state.get("step", 0)
        self.global_state["step"] = k + 1
        s0 = settings[0]
        if k % s0["update_freq"] != 0:
            return
        D_sq = hvp_probe_mean(self, var, distribution="normal", statistic="Hz^2", n_samples=s0["n_samples"],
                              hvp_method=s0["hvp_method"], h=s0["fd_h"], seed=s0["seed"])
        acc = [s["D_sq_acc"] if "D_sq_acc" in s else s.setdefault("D_sq_acc", torch.zeros_like(p))
               for s, p in zip(states, var.params)]
        torch._foreach_add_(acc, D_sq)
        self.global_state["i"] = self.global_state.get("i", 0) + 1

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        acc = [s["D_sq_acc"] if "D_sq_acc" in s else s.setdefault("D_sq_acc", torch.zeros_like(t))
               for s, t in zip(states, tensors)]
        damping = scalar_or_list(self.unpack_settings(settings, "damping"))
        return esgd_step(tensors, acc, self.global_state.get("i", 0), damping)
