"""Inverse-free Newton: a running Newton–Schulz (hyperpower) approximation of the inverse Hessian."""
from __future__ import annotations

import torch

from ...core import Chainable, Module, Var
from ...utils.checks import check_int
from ...utils.linalg.linear_operator import DenseWithInverse, LinearOperator
from ...utils.torch_tools import vec_to_tensors
from .newton import (
    HessianMethod,
    check_hessian_args,
    finite_or_fallback,
    flatten,
    inner_update,
    loss_grad_hessian,
    set_loss_and_grad,
)


def inverse_init(H: torch.Tensor) -> torch.Tensor:
    """``Y₀ = Hᵀ / (‖H‖₁‖H‖∞)``, the classical starting point of the Newton–Schulz iteration (it makes
    ``‖I − HY₀‖₂ < 1`` for any non-singular ``H``); the denominator is clamped to ``[2·tiny, max/2]``."""
    finfo = torch.finfo(H.dtype)
    denom = torch.linalg.matrix_norm(H, 1) * torch.linalg.matrix_norm(H, float("inf"))
    return H.mT / denom.clamp(2 * finfo.tiny, finfo.max / 2)


def newton_schulz_inverse_step(H: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """One hyperpower (Newton–Schulz) correction ``Y ← Y(2I − HY)`` of an approximate inverse ``Y ≈ H⁻¹``; the
    residual ``I − HY`` is squared by it."""
    HY = H @ Y
    return 2 * Y - Y @ HY


class InverseFreeNewton(Module):
    r"""Inverse-free Newton: Newton's method with the inverse Hessian tracked by Newton–Schulz iterations.

    On the first Hessian evaluation ``Y = Hᵀ / (‖H‖₁‖H‖∞)``; on each later refresh (every ``update_freq`` steps)
    one hyperpower correction with the new Hessian, ``Y ← Y(2I − HY)``. The update is ``Y g`` for the flattened
    (optionally ``inner``-transformed) update ``g``. No matrix is ever factorized or inverted: per refresh the
    cost is one Hessian and two matrix products.

    Non-finite values: a refresh whose Hessian is not finite is skipped (``H`` and ``Y`` are kept; ``Y = I``
    before the first finite Hessian), and when the correction diverges to a non-finite ``Y`` (the Hessian changed
    too much for ``‖I − HY‖ < 1``), ``Y`` is re-initialized from the new Hessian. A non-finite update falls back
    to ``g`` with non-finite entries zeroed.

    State: ``global_state['H']``, ``['Y']``, ``['step']``. ``get_H`` returns ``DenseWithInverse(H, Y)``.

    Args:
        update_freq: refresh the Hessian and ``Y`` every this many steps. Defaults to 1.
        hessian_method: ``'autograd'``, ``'func'`` or ``'autograd.functional'`` (see ``Newton``). Defaults to
            ``'autograd'``.
        vectorize: batch the Hessian rows with vmap. Defaults to True.
        inner: modules applied to the update before preconditioning. Defaults to None.

    Reference:
        E. Massalski & M. Nockowska-Rosiak, "Inverse-free Newton's method", J. Appl. Anal. Comput. 15(4), 2025,
        2238–2257.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.InverseFreeNewton(), tz.m.Backtracking())
        ```
    """

    _evaluates_closure_in_update = True

    def __init__(self, update_freq: int = 1, hessian_method: HessianMethod = "autograd", vectorize: bool = True,
                 inner: Chainable | None = None):
        name = type(self).__name__
        check_int(name, "update_freq", update_freq)
        check_hessian_args(name, hessian_method, vectorize)
        super().__init__(dict(update_freq=update_freq, hessian_method=hessian_method, vectorize=vectorize))
        if inner is not None:
            self.set_child("inner", inner)

    def update(self, var: Var) -> None:
        closure = self._require_closure(var)
        s = self.defaults
        gs = self.global_state
        step = gs.get("step", 0)
        gs["step"] = step + 1
        if step % s["update_freq"] != 0 and "Y" in gs:
            return

        loss, g, H = loss_grad_hessian(closure, var.params, s["hessian_method"], s["vectorize"])
        set_loss_and_grad(var, loss, g)
        if not bool(torch.isfinite(H).all()):
            if "Y" not in gs:
                n = H.shape[0]
                gs["H"] = torch.eye(n, dtype=H.dtype, device=H.device)
                gs["Y"] = torch.eye(n, dtype=H.dtype, device=H.device)
            return

        gs["H"] = H
        if "Y" not in gs or not gs.get("Y_valid", False):
            gs["Y"] = inverse_init(H)
        else:
            Y = newton_schulz_inverse_step(H, gs["Y"])
            gs["Y"] = Y if bool(torch.isfinite(Y).all()) else inverse_init(H)
        gs["Y_valid"] = True

    def apply(self, var: Var) -> Var:
        if "Y" not in self.global_state:
            raise RuntimeError(f"{type(self).__name__}: `apply` was called before `update`")
        g = flatten(inner_update(self, var))
        x = finite_or_fallback(self.global_state["Y"] @ g, g)
        var.update = vec_to_tensors(x, var.params)
        return var

    def get_H(self, var: Var) -> LinearOperator | None:
        gs = self.global_state
        if "Y" not in gs:
            return None
        return DenseWithInverse(gs["H"], gs["Y"])
