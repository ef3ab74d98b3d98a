"""Nonlinear least squares: Gauss–Newton, and the sum-of-squares closure shared with ``SumOfSquares``.

Both modules take a closure that returns the residual vector ``r(x)`` (any shape; it is flattened) and turn it into
the scalar objective ``f(x) = ‖r(x)‖² = Σ rᵢ²``, whose gradient is ``2Jᵀr`` and whose Gauss–Newton Hessian is
``2JᵀJ`` (``J`` the Jacobian of ``r``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ...core import Modular, Module, Var
from ...utils.checks import check_bool, check_non_negative
from ...utils.derivatives import flatten_jacobian, jacobian_wrt
from ...utils.linalg.linear_operator import AtA
from ...utils.torch_tools import vec_to_tensors

__all__ = ["GaussNewton", "SumOfSquares", "gauss_newton_step", "sum_of_squares", "sum_of_squares_closure"]


def sum_of_squares(value: Any) -> Any:
    """``Σ vᵢ²`` of a residual tensor (or the square of a number)."""
    if isinstance(value, torch.Tensor):
        return value.pow(2).sum()
    return value * value


def sum_of_squares_closure(closure: Callable, params: Sequence[torch.Tensor]) -> Callable:
    """A closure returning ``Σ rᵢ²`` for a residual closure ``closure(False) = r``. With ``backward=True`` it clears
    the gradients of ``params`` and back-propagates the sum (the residual closure is only ever called with
    ``False``)."""
    params = list(params)

    def sos_closure(backward: bool = True) -> Any:
        if not backward:
            return sum_of_squares(closure(False))
        with torch.enable_grad():
            loss = sum_of_squares(closure(False))
        for p in params:
            p.grad = None
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.backward()
        return loss

    return sos_closure


def _cholesky_solve(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) != 0:
        return None
    x = torch.cholesky_solve(b.unsqueeze(-1), L).squeeze(-1)
    return x if bool(torch.isfinite(x).all()) else None


def gauss_newton_step(J: torch.Tensor, r: torch.Tensor, reg: float) -> torch.Tensor:
    """Least-squares solution of ``(JᵀJ + reg·I) v = Jᵀr`` for ``J`` of shape ``(m, n)``.

    Uses the smaller of the two normal systems: for ``m < n`` and ``reg > 0`` the push-through identity
    ``(JᵀJ + reg·I)⁻¹Jᵀ = Jᵀ(JJᵀ + reg·I)⁻¹`` (an ``m × m`` solve), otherwise the ``n × n`` system. Cholesky, falling
    back to the pseudo-inverse (minimum-norm solution) when the system is singular. For full-column-rank ``J`` and
    ``reg = 0`` this is ``lstsq(J, r)``."""
    m, n = J.shape
    if m < n and reg > 0:
        A = J @ J.mT
        A.diagonal().add_(reg)
        y = _cholesky_solve(A, r)
        if y is None:
            y = torch.linalg.pinv(A, hermitian=True) @ r
        return J.mT @ y
    A = J.mT @ J
    if reg != 0:
        A.diagonal().add_(reg)
    b = J.mT @ r
    v = _cholesky_solve(A, b)
    if v is None:
        v = torch.linalg.pinv(A, hermitian=True) @ b
    return v


class GaussNewton(Module):
    """Gauss–Newton for nonlinear least squares, with a closure that returns the residual vector.

    For ``f(x) = ‖r(x)‖²`` with Jacobian ``J`` of the (flattened) residuals ``r``, the update is the Gauss–Newton
    step, the least-squares solution of ``(JᵀJ + reg·I) v = Jᵀr`` (``x ← x − v``).

    ``update`` evaluates ``r = closure(False)`` once, computes ``J`` (``m`` reverse passes, vmap-batched when
    ``batched``) and stores ``global_state['G'] = J``, ``['Gtf'] = Jᵀr`` and ``['r'] = r``; it sets
    ``var.loss = ‖r‖²``, ``var.grad = 2Jᵀr`` (the gradient of that loss) and replaces ``var.closure`` by one that
    returns ``‖r‖²`` (and back-propagates it when asked), so that line searches and trust regions after this module
    see a scalar objective. ``get_H`` returns ``AtA(√2·J)``, the matrix-free Gauss–Newton Hessian ``2JᵀJ`` of the same
    loss (memory ``m·n``), so a trust region's model ``f − gᵀd + ½dᵀHd`` is consistent with the actual reduction of
    ``‖r‖²``. ``apply`` solves the ``m × m`` system when there are fewer residuals than parameters. A non-finite
    solution (non-finite residuals or Jacobian) gives a zero update.

    The reference stored ``var.grad = Jᵀr`` (the gradient of ``½‖r‖²``) next to ``var.loss = ‖r‖²``, so line searches
    and the trust-region ratio saw a loss and a gradient that differ by a factor 2; here both belong to ``‖r‖²``
    (the loss that ``SumOfSquares`` gives), and ``Gtf`` keeps ``Jᵀr`` as in the reference.

    Args:
        reg: ``reg·I`` added to ``JᵀJ`` in ``apply``. Defaults to 1e-8.
        batched: compute the Jacobian with one vmap-batched backward pass (True) or ``m`` separate ones.
            Defaults to True.

    Reference:
        J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., chapter 10.

    Example:
        ```python
        def closure(backward=True):
            return model(inputs) - targets  # the residuals; never differentiated by the closure itself

        opt = tz.Modular(model.parameters(), tz.m.GaussNewton(), tz.m.Backtracking())
        opt = tz.Modular(model.parameters(), tz.m.LevenbergMarquardt(tz.m.GaussNewton()))
        ```
    """

    _evaluates_closure_in_update = True

    def __init__(self, reg: float = 1e-08, batched: bool = True):
        check_non_negative("GaussNewton", "reg", reg)
        check_bool("GaussNewton", "batched", batched)
        super().__init__(dict(reg=reg, batched=batched))

    @torch.no_grad()
    def update(self, var: Var) -> None:
        closure = self._require_closure(var)
        params = var.params
        with torch.enable_grad():
            residuals = closure(False)
            if not isinstance(residuals, torch.Tensor):
                raise TypeError(f"GaussNewton: the closure must return a tensor of residuals, got "
                                f"{type(residuals).__name__}")
            r = residuals.reshape(-1)
            J = flatten_jacobian(jacobian_wrt([r], params, batched=self.settings[params[0]]["batched"]))
        r = r.detach()
        Jtr = J.mT @ r
        self.global_state["G"] = J
        self.global_state["Gtf"] = Jtr
        self.global_state["r"] = r

        var.loss = var.loss_approx = r.dot(r)
        var.grad = vec_to_tensors(Jtr * 2, params)
        var.closure = sum_of_squares_closure(closure, params)

    @torch.no_grad()
    def apply(self, var: Var) -> Var:
        if "G" not in self.global_state:
            raise RuntimeError("GaussNewton: apply was called before update")
        J, r = self.global_state["G"], self.global_state["r"]
        v = gauss_newton_step(J, r, self.settings[var.params[0]]["reg"])
        if not bool(torch.isfinite(v).all()):
            v = torch.zeros_like(v)
        var.update = vec_to_tensors(v, var.params)
        return var

    def get_H(self, var: Var) -> AtA | None:
        J = self.global_state.get("G")
        if J is None:
            return None
        return AtA(J * math.sqrt(2))


class SumOfSquares(Module):
    """Turns a closure that returns residuals ``r`` into the scalar objective ``Σ rᵢ²``.

    The new closure returns ``closure(False).pow(2).sum()`` and, with ``backward=True``, clears the gradients and
    back-propagates that sum; already known ``var.loss`` / ``var.loss_approx`` (residuals) are squared and summed too.
    This lets ordinary optimisers run on the same residual closure as ``GaussNewton`` (both see the loss ``‖r‖²``
    with gradient ``2Jᵀr``).

    A loss that ``Modular`` seeds from the previous step (a line search that ended at the current point) is
    already the sum of squares: this module remembers the loss the previous step ended with and doesn't square it
    again.

    Example:
        ```python
        def closure(backward=True):
            return model(inputs) - targets

        opt = tz.Modular(model.parameters(), tz.m.SumOfSquares(), tz.m.LBFGS(), tz.m.StrongWolfe())
        ```
    """

    def __init__(self):
        super().__init__({})
        self._result_loss: Any = None

    def reset(self) -> None:
        super().reset()
        self._result_loss = None

    def _record_result(self, modular: Modular, var: Var) -> None:
        self._result_loss = var.result_loss

    def step(self, var: Var) -> Var:
        closure = self._require_closure(var)
        seeded = self._result_loss
        self._result_loss = None
        if var.loss is not None and var.loss is not seeded:
            var.loss = sum_of_squares(var.loss)
        if var.loss_approx is not None and var.loss_approx is not seeded:
            var.loss_approx = sum_of_squares(var.loss_approx)
        var.closure = sum_of_squares_closure(closure, var.params)
        var.post_step_hooks.append(self._record_result)
        return var
