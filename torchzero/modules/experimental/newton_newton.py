"""NewtonNewton: repeated Newton preconditioning through the Jacobian of the Newton step (experimental)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...core import Module, Var
from ...utils.checks import check_bool, check_int, check_non_negative
from ...utils.derivatives import flatten_jacobian, jacobian_wrt
from ...utils.linalg.linear_operator import Dense, LinearOperator
from ...utils.torch_tools import vec_to_tensors
from ..second_order.newton import eig_direction, flatten, set_loss_and_grad, solve_dense


class NewtonNewton(Module):
    r"""NewtonNewton: Newton's method applied again to its own step.

    ``x₁ = H₁⁻¹g`` with ``H₁ = ∇²f + reg·I``; then, keeping the autograd graph, ``H₂ = ∂x₁/∂x + reg·I`` (the
    Jacobian of the Newton step) and ``x₂ = H₂⁻¹x₁``; and so on until ``order − 1`` solves have been done. The
    update is the last ``x``. Each solve (differentiable, except the last): an eigendecomposition when
    ``search_negative`` (or ``eigval_tfm`` for the last solve; same semantics as ``Newton``'s ``search_negative``
    and ``eigval_fn``), otherwise Cholesky for ``H₁`` and LU for the (non-symmetric) later matrices, falling back to
    least squares (the eigendecomposition of a later matrix uses its symmetric part). Non-finite entries of the
    result become 0.

    ``order=2`` is exactly ``Newton(damping=reg)``. ``update`` computes everything (loss and gradient of ``var``
    included); ``apply`` sets the update. ``get_H`` returns ``Dense(H₁H₂⋯)``. Memory and time grow like
    ``O(n^order)``. State: ``global_state['x']``, ``['H']``.

    Args:
        reg: ``reg·I`` added to every matrix before solving. Defaults to 1e-6.
        order: number of solves plus one. Defaults to 3.
        search_negative: move along negative curvature in each solve (see ``Newton``). Defaults to False.
        vectorize: batch the Jacobians with vmap. Defaults to True.
        eigval_tfm: function applied to the eigenvalues of the last matrix (see ``Newton.eigval_fn``).
            Defaults to None.

    Reference:
        experimental, no published source.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.experimental.NewtonNewton(), tz.m.Backtracking())
        ```
    """

    _evaluates_closure_in_update = True

    def __init__(self, reg: float = 1e-06, order: int = 3, search_negative: bool = False, vectorize: bool = True,
                 eigval_tfm: Callable[[torch.Tensor], torch.Tensor] | None = None):
        name = type(self).__name__
        check_non_negative(name, "reg", reg)
        check_int(name, "order", order, low=2)
        check_bool(name, "search_negative", search_negative)
        check_bool(name, "vectorize", vectorize)
        if eigval_tfm is not None and not callable(eigval_tfm):
            raise TypeError(f"{name}: eigval_tfm must be callable or None, got {type(eigval_tfm).__name__}")
        super().__init__(dict(reg=reg, order=order, search_negative=search_negative, vectorize=vectorize))
        self._eigval_tfm = eigval_tfm

    def update(self, var: Var) -> None:
        closure = self._require_closure(var)
        params = var.params
        s = self.defaults
        n_solves = s["order"] - 1
        with torch.enable_grad():
            loss = closure(False)
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            x = flatten([g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)])
            set_loss_and_grad(var, loss.detach(), x.detach())
            H_prod: torch.Tensor | None = None
            for i in range(n_solves):
                last = i == n_solves - 1
                H = flatten_jacobian(jacobian_wrt(x, params, create_graph=not last, batched=s["vectorize"]))
                H = H + s["reg"] * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
                H_prod = H.detach() if H_prod is None else H_prod @ H.detach()
                x = self._solve(H, x, last, symmetric=i == 0)
        x = x.detach()
        self.global_state["x"] = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
        self.global_state["H"] = H_prod

    def _solve(self, H: torch.Tensor, x: torch.Tensor, last: bool, symmetric: bool) -> torch.Tensor:
        search_negative = self.defaults["search_negative"]
        eigval_tfm = self._eigval_tfm if last else None
        if (search_negative or eigval_tfm is not None) and bool(torch.isfinite(H).all()):
            L, Q = torch.linalg.eigh(H if symmetric else (H + H.mT) / 2)
            if eigval_tfm is not None:
                L = eigval_tfm(L)
            return eig_direction(L, Q, x, search_negative)
        return solve_dense(H, x, symmetric=symmetric)  # only H₁ is symmetric; the step Jacobians are not

    def apply(self, var: Var) -> Var:
        if "x" not in self.global_state:
            raise RuntimeError(f"{type(self).__name__}: `apply` was called before `update`")
        var.update = vec_to_tensors(self.global_state["x"].clone(), var.params)
        return var

    def get_H(self, var: Var) -> LinearOperator | None:
        H = self.global_state.get("H")
        return None if H is None else Dense(H)
