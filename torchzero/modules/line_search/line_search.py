"""``LineSearchBase``: the protocol every line search follows (trial points, evaluation budget, final step)."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from ...core import Module, Var
from ...core.var import _grads_or_zeros
from ...utils.foreach import scalar_or_list
from ...utils.tensorlist import TensorList
from ..step_size.lr import finish_direct_step

MAX_STEP = 1e36
"""Trial step sizes are clamped to ``[-MAX_STEP, MAX_STEP]``."""


class MaxLineSearchItersReached(Exception):
    """Raised by the evaluation helpers of :class:`LineSearchBase` when its ``maxiter`` budget is used up; the base
    catches it and uses the step with the lowest loss seen so far."""


def _as_float(value: Any) -> float:
    """A loss as a Python float, with every non-finite value (nan, ±inf) mapped to ``+inf`` so that comparisons
    treat it as "worse than anything"."""
    f = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    return f if math.isfinite(f) else math.inf


def check_maxiter(owner: str, name: str, value: Any, allow_none: bool = True) -> None:
    """``value`` must be an int ≥ 1 (or None when ``allow_none``)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be an int{' or None' if allow_none else ''}, got {value!r}")
    if value < 1:
        raise ValueError(f"{owner}: {name} must be at least 1, got {value}")


def _is_zero(tensors: list[torch.Tensor]) -> bool:
    """Whether all elements of all tensors are zero (one host sync)."""
    if len(tensors) == 0:
        return True
    return not bool(torch.stack(torch._foreach_norm(tensors, math.inf)).amax() > 0)


class LineSearchBase(Module, ABC):
    """Base class of line searches: finds a step size ``α`` along the incoming update ``u`` and applies it.

    The search looks at ``x(α) = x₀ − α·u`` with ``φ(α) = f(x(α))`` and ``φ'(α) = −∇f(x(α))ᵀu``. Subclasses
    implement ``search(update, var) -> α`` using the helpers below; the base handles everything else.

    - **Trial points** are written as ``x₀ − α·u`` from a saved copy of ``x₀`` (never by accumulating
      increments), and the closure is called: ``closure(False)`` under ``torch.no_grad()`` for the loss only,
      ``closure()`` (with backward) when a derivative is needed. Steps are clamped to ``[−1e36, 1e36]``; a
      non-finite step is not evaluated (its loss is taken as ``+inf``). Every evaluation is cached by ``α``, so
      asking again for a point already evaluated costs nothing. Non-finite losses are reported as ``+inf``.
    - ``φ(0)`` and ``φ'(0)`` reuse the loss and gradient already known at ``x₀`` (computed then if missing) and do
      not count as evaluations.
    - **Budget**: with ``maxiter`` set, each evaluation at ``α ≠ 0`` counts; asking for one more after ``maxiter``
      interrupts the search, and the step with the lowest loss seen so far (``0`` if none was below ``φ(0)``) is
      used.
    - **Where the parameters end up.** If the search is the last module, or is followed only by a module with an
      ``lr`` setting (such as ``LR``), the parameters are written directly to ``x₀ − α·lr_p·u`` (``lr_p`` the
      per-parameter value, else 1), the chain stops and the optimizer subtracts nothing ("direct path"); with
      ``lr_p = 1`` this is the evaluated trial point (bit for bit), with another ``lr`` it is a point the search
      did not evaluate. Otherwise the parameters are restored exactly to ``x₀`` and the update is multiplied in
      place by ``α``, so later modules see ``α·u``. A failed search (``α = 0``) leaves the parameters at ``x₀`` on
      both paths. If the search raises, the parameters are restored to ``x₀`` before the error propagates.
    - **Reusing the last evaluation.** On the direct path with ``lr_p = 1``, when the objective was evaluated with
      gradient at the final point (the accepted trial, or ``x₀`` when ``α = 0``), the loss and gradient there are
      recorded with ``Var.set_result_evaluation``, so that the optimizer uses them as the next step's loss and
      gradient (same closure object, parameters unchanged) instead of evaluating the objective there again. Loss-only
      searches know no gradient at the accepted point and record nothing.
    - If ``var.loss_approx`` is unset it becomes the lowest loss seen during the search.

    All line searches require a closure: without one, ``step`` raises a ``RuntimeError`` naming the class.

    Args:
        defaults: default settings of the subclass.
        maxiter: cap on the number of objective evaluations of one search (None: no cap). Defaults to None.

    Reference:
        J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., Springer 2006, chapter 3.

    Example:
        ```python
        class GridSearch(tz.m.LineSearchBase):
            def __init__(self):
                super().__init__(defaults=None)

            def search(self, update, var):
                f0 = self.evaluate_f(0, var)
                grid = [0.1 * k for k in range(1, 11)]
                losses = [self.evaluate_f(a, var) for a in grid]
                best = min(range(len(grid)), key=losses.__getitem__)
                return grid[best] if losses[best] < f0 else 0.0

        opt = tz.Modular(model.parameters(), GridSearch())
        ```
    """

    def __init__(self, defaults: dict[str, Any] | None, maxiter: int | None = None):
        check_maxiter(type(self).__name__, "maxiter", maxiter)
        super().__init__(defaults)
        self._maxiter = maxiter
        self._clear_search()

    # ------------------------------------------------------------------ per-search data
    def _clear_search(self) -> None:
        self._var: Var | None = None
        self._closure: Callable | None = None
        self._params: list[torch.Tensor] = []
        self._x0: list[torch.Tensor] | None = None
        self._u: list[torch.Tensor] = []
        self._evals: dict[float, tuple[float, float | None]] = {}
        self._num_evals = 0
        self._best_f = math.inf
        self._best_alpha = 0.0
        self._best_loss: Any = None
        self._best_grad: list[torch.Tensor] | None = None
        self._current_alpha: float | None = None  # step whose point is in the parameters; None: x₀
        self._current_loss: Any = None
        self._current_grad: list[torch.Tensor] | None = None
        self._any_backward = False

    @property
    def num_evaluations(self) -> int:
        """Number of objective evaluations (at ``α ≠ 0``) of the current search."""
        return self._num_evals

    def evaluated_points(self) -> list[tuple[float, float, float | None]]:
        """All points evaluated in the current search, including ``α = 0`` when known: ``(α, φ(α), φ'(α) or
        None)``, in order of increasing ``α``."""
        return sorted((a, f, d) for a, (f, d) in self._evals.items())

    # ------------------------------------------------------------------ trial points
    def _write_params(self, alpha: float | list[float]) -> None:
        """``params ← x₀ − α·u`` from the saved copy of ``x₀`` (per-tensor ``α`` when a list)."""
        assert self._x0 is not None
        params = self._params
        with torch.no_grad():
            torch._foreach_copy_(params, self._x0)
            if isinstance(alpha, list):
                torch._foreach_sub_(params, torch._foreach_mul(self._u, alpha))
            elif alpha != 0:
                torch._foreach_sub_(params, self._u, alpha=alpha)
        self._current_alpha = None if alpha == 0 else (alpha if not isinstance(alpha, list) else math.nan)

    def _restore_x0(self) -> None:
        if self._current_alpha is not None and self._x0 is not None:
            with torch.no_grad():
                torch._foreach_copy_(self._params, self._x0)
            self._current_alpha = None

    def _slope(self, grad: list[torch.Tensor]) -> float:
        d = -float(TensorList(grad).dot(self._u))
        return d if math.isfinite(d) else math.nan

    def _record(self, alpha: float, f: float, d: float | None, loss: Any, grad: list[torch.Tensor] | None) -> None:
        old = self._evals.get(alpha)
        if d is None and old is not None:
            d = old[1]
        self._evals[alpha] = (f, d)
        if f < self._best_f:
            self._best_f, self._best_alpha, self._best_loss, self._best_grad = f, alpha, loss, grad
        elif alpha == self._best_alpha and grad is not None:  # the best point evaluated again, with gradient
            self._best_loss, self._best_grad = loss, grad

    def _evaluate_at_zero(self, backward: bool) -> tuple[float, float | None, list[torch.Tensor] | None]:
        var = self._var
        assert var is not None
        self._restore_x0()
        cached = self._evals.get(0.0)
        if cached is not None and (not backward or cached[1] is not None):
            return cached[0], cached[1], var.grad if backward else None
        if backward:
            grad = var.get_grad()
            f = _as_float(var.loss)
            d = self._slope(grad)
            self._record(0.0, f, d, var.loss, grad)
            return f, d, grad
        loss = var.get_loss(backward=False)
        f = _as_float(loss)
        self._record(0.0, f, None, loss, var.grad)
        return f, None, None

    def _evaluate(self, alpha: float, backward: bool) -> tuple[float, float | None, list[torch.Tensor] | None]:
        if self._var is None:
            raise RuntimeError(f"{type(self).__name__}: the evaluation helpers can only be used inside `search`")
        alpha = float(alpha)
        if not math.isfinite(alpha):
            return math.inf, (math.nan if backward else None), None
        alpha = min(max(alpha, -MAX_STEP), MAX_STEP)
        if alpha == 0:
            return self._evaluate_at_zero(backward)

        cached = self._evals.get(alpha)
        if cached is not None and (not backward or cached[1] is not None):
            grad = self._current_grad if (backward and self._current_alpha == alpha) else None
            return cached[0], cached[1], grad

        if self._maxiter is not None and self._num_evals >= self._maxiter:
            raise MaxLineSearchItersReached
        closure = self._closure
        assert closure is not None
        self._write_params(alpha)
        if backward:
            with torch.enable_grad():
                loss = closure()
            grad: list[torch.Tensor] | None = _grads_or_zeros(self._params)
            self._any_backward = True
        else:
            with torch.no_grad():
                loss = closure(False)
            grad = None
        self._num_evals += 1
        f = _as_float(loss)
        d = self._slope(grad) if grad is not None else None
        self._current_loss, self._current_grad = loss, grad
        self._record(alpha, f, d, loss, grad)
        return f, d, grad

    # ------------------------------------------------------------------ public helpers
    def evaluate_f(self, alpha: float, var: Var, backward: bool = False) -> float:
        """``φ(α)``, the loss at ``x₀ − α·u`` (``+inf`` if not finite). With ``backward=True`` the gradient is
        computed too (and cached, so a later ``evaluate_f_d`` at the same ``α`` is free)."""
        return self._evaluate(alpha, backward)[0]

    def evaluate_f_d(self, alpha: float, var: Var) -> tuple[float, float]:
        """``(φ(α), φ'(α))`` with ``φ'(α) = −∇f(x₀ − α·u)ᵀu`` (nan if not finite)."""
        f, d, _ = self._evaluate(alpha, True)
        assert d is not None
        return f, d

    def evaluate_f_d_g(self, alpha: float, var: Var) -> tuple[float, float, list[torch.Tensor]]:
        """``(φ(α), φ'(α), ∇f(x₀ − α·u))``. The gradient tensors are the parameters' ``.grad`` after the
        evaluation (zeros where a parameter got none); do not modify them."""
        f, d, g = self._evaluate(alpha, True)
        assert d is not None
        if g is None:  # cached at a point that is no longer in the parameters: evaluate again
            self._evals.pop(float(alpha), None)
            f, d, g = self._evaluate(alpha, True)
        assert d is not None and g is not None
        return f, d, g

    def make_objective(self, var: Var, backward: bool = False) -> Callable[[float], float]:
        """``α ↦ φ(α)`` for external scalar solvers."""
        return lambda alpha: self.evaluate_f(alpha, var, backward=backward)

    def make_objective_with_derivative(self, var: Var) -> Callable[[float], tuple[float, float]]:
        """``α ↦ (φ(α), φ'(α))`` for external scalar solvers."""
        return lambda alpha: self.evaluate_f_d(alpha, var)

    def make_objective_with_derivative_and_gradient(
            self, var: Var) -> Callable[[float], tuple[float, float, list[torch.Tensor]]]:
        """``α ↦ (φ(α), φ'(α), ∇f)`` for external solvers."""
        return lambda alpha: self.evaluate_f_d_g(alpha, var)

    @abstractmethod
    def search(self, update: list[torch.Tensor], var: Var) -> float:
        """Finds the step size along ``update`` (α = 0 means failure: no step). Use ``evaluate_f``,
        ``evaluate_f_d``, ``evaluate_f_d_g`` to evaluate the objective; they restore nothing, the base does."""

    # ------------------------------------------------------------------ step
    def _direct_lrs(self, var: Var) -> list[float] | None:
        """Per-parameter learning rates if this search ends the chain (possibly before a module with an ``lr``
        setting), so that it writes the final parameters itself; None otherwise."""
        if not var.is_last or var.skip_update:
            return None
        if var.last_module_lrs is not None:
            return list(var.last_module_lrs)
        return [1.0] * len(var.params)

    def _result_evaluation(self, var: Var, alpha: float) -> tuple[Any, list[torch.Tensor]] | None:
        """``(loss, grad)`` at the point ``x₀ − α·u`` if both are known and the gradient tensors are intact."""
        params = self._params
        if alpha == 0:
            loss, grad = var.loss, var.grad
        elif self._current_alpha == alpha and self._current_grad is not None:
            return self._current_loss, self._current_grad
        elif self._best_alpha == alpha and self._best_grad is not None:
            loss, grad = self._best_loss, self._best_grad
        else:
            return None
        if loss is None or grad is None:
            return None
        # a closure that zeroes `.grad` in place (zero_grad(set_to_none=False)) overwrote older gradients
        if self._any_backward and any(g is p.grad for g, p in zip(grad, params)):
            return None
        return loss, grad

    def _finish(self, var: Var, update: list[torch.Tensor], alpha: float) -> Var:
        lrs = self._direct_lrs(var)
        if lrs is None:
            self._restore_x0()
            if alpha != 1:
                torch._foreach_mul_(update, alpha)
            var.update = update
            return var

        lr = scalar_or_list(lrs)
        if alpha == 0:
            self._restore_x0()
        elif isinstance(lr, list):
            self._write_params([alpha * l for l in lr])
        elif self._current_alpha != alpha * lr:
            self._write_params(alpha * lr)

        if lr == 1 or alpha == 0:
            end = self._result_evaluation(var, alpha)
            if end is not None:
                var.set_result_evaluation(*end)
        return finish_direct_step(var)

    def step(self, var: Var) -> Var:
        closure = self._require_closure(var)
        update = var.get_update()
        params = var.params
        self._clear_search()
        self._var, self._closure, self._params, self._u = var, closure, params, update
        x0 = [torch.empty_like(p) for p in params]
        with torch.no_grad():
            torch._foreach_copy_(x0, params)
        self._x0 = x0
        if var.loss is not None:
            self._record(0.0, _as_float(var.loss), None, var.loss, var.grad)

        try:
            try:
                # a zero direction (e.g. at a minimum) has nothing to search along: no evaluation
                alpha = 0.0 if _is_zero(update) else float(self.search(update, var))
            except MaxLineSearchItersReached:
                alpha = self._best_alpha
            if not math.isfinite(alpha):
                alpha = 0.0
            alpha = min(max(alpha, -MAX_STEP), MAX_STEP)
            if var.loss_approx is None and self._best_loss is not None:
                var.loss_approx = self._best_loss
            return self._finish(var, update, alpha)
        except BaseException:
            self._restore_x0()
            raise
        finally:
            self._clear_search()
