"""``CurveBall``: a momentum-like iterate that runs one gradient step per step on the Newton system."""
from __future__ import annotations

from typing import Literal

import torch

from ...core import Chainable, Module, Var, apply_transform
from ...utils.checks import check_non_negative, check_range
from ...utils.foreach import Scalars, add_scaled_, scalar_or_list
from ..adaptive.adahessian import check_hvp_args, release_grad_graph_


def curveball_(z_: list[torch.Tensor], Hz: list[torch.Tensor] | None, g: list[torch.Tensor], momentum: Scalars,
               precond_lr: Scalars) -> list[torch.Tensor]:
    """``z ← momentum·z − precond_lr·(Hz + g)`` in place (``Hz = None`` means a zero product); returns ``z``."""
    if Hz is None:
        delta = list(torch._foreach_mul(g, precond_lr))
    else:
        delta = list(torch._foreach_add(Hz, g))
        torch._foreach_mul_(delta, precond_lr)
    torch._foreach_mul_(z_, momentum)
    torch._foreach_sub_(z_, delta)
    return z_


class CurveBall(Module):
    """CurveBall: keeps an estimate ``z`` of the (negative) Newton step and improves it by one gradient step on the
    quadratic model ``½zᵀ(H + reg·I)z + gᵀz`` per optimizer step, with momentum.

    State ``'z'`` (zeros initially) and ``'Hz'`` (the last product). Each step, with ``g`` the update (after
    ``inner``) and ``H`` the Hessian at the current point:

    ``Hz = H z + reg·z``;  ``z ← momentum·z − precond_lr·(Hz + g)``;  update ``−z``.

    One Hessian-vector product per step (none on the first step, where ``z = 0``). The automatic tuning of
    ``momentum`` and ``precond_lr`` of the paper is not implemented; they are fixed hyperparameters.

    Args:
        precond_lr: step size ``β`` of the inner gradient step (per parameter). Defaults to 0.001.
        momentum: momentum ``ρ`` of ``z`` (per parameter). Defaults to 0.9.
        hvp_method: ``'autograd'``, ``'forward'`` or ``'central'`` (catalog section 1.2). Defaults to
            ``'autograd'``.
        h: finite-difference step for the finite-difference products. Defaults to 0.001.
        reg: Tikhonov damping ``λ`` added to the Hessian (per parameter). Defaults to 1.
        inner: modules applied to the update before it enters ``z`` (e.g. momentum). Defaults to None.

    Reference:
        J. F. Henriques, S. Ehrhardt, S. Albanie, A. Vedaldi, "Small steps and giant leaps: Minimal Newton solvers
        for deep learning", ICCV 2019, arXiv:1805.08095.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.experimental.CurveBall(precond_lr=1e-2), tz.m.LR(1.0))
        ```
    """

    def __init__(self, precond_lr: float = 0.001, momentum: float = 0.9,
                 hvp_method: Literal["autograd", "forward", "central"] = "autograd", h: float = 0.001,
                 reg: float = 1, inner: Chainable | None = None):
        check_range("CurveBall", "precond_lr", precond_lr, low=0)
        check_range("CurveBall", "momentum", momentum, 0, 1)
        check_hvp_args("CurveBall", hvp_method, h, h_name="h")
        check_non_negative("CurveBall", "reg", reg)
        super().__init__(dict(precond_lr=precond_lr, momentum=momentum, hvp_method=hvp_method, h=h, reg=reg))
        if inner is not None:
            self.set_child("inner", inner)

    def step(self, var: Var) -> Var:
        self._require_closure(var)
        params = var.params
        s0 = self.settings[params[0]]
        precond_lr, momentum, reg = self.get_settings(params, "precond_lr", "momentum", "reg")
        states = [self.state[p] for p in params]

        Hz: list[torch.Tensor] | None = None
        if "z" in states[0]:
            z = [s["z"] for s in states]
            with torch.no_grad():
                Hz_, _ = self.Hvp(z, at_x0=True, var=var, rgrad=None, hvp_method=s0["hvp_method"], h=s0["h"],
                                  normalize=True, retain_grad=False)
                release_grad_graph_(var)
                Hz = list(Hz_)
                add_scaled_(Hz, z, scalar_or_list(reg))
                for s, hz in zip(states, Hz):
                    s["Hz"] = hz
        else:
            z = [s.setdefault("z", torch.zeros_like(p)) for s, p in zip(states, params)]

        update = var.get_update()
        if "inner" in self.children:
            update = apply_transform(self.children["inner"], update, params=params, grads=var.grad, loss=var.loss,
                                     var=var)
        with torch.no_grad():
            curveball_(z, Hz, update, scalar_or_list(momentum), scalar_or_list(precond_lr))
            var.update = list(torch._foreach_neg(z))
        return var
