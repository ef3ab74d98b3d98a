"""Homotopies: optimize a monotone transform ``T(L)`` of the loss instead of the loss ``L``."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from ...core import Module, Var
from ._common import as_loss_tensor


def homotopy_closure(closure: Callable[..., Any], params: list[torch.Tensor],
                     transform: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., Any]:
    """A closure for the objective ``T(L)``: returns ``transform(closure(False))``; with ``backward=True`` it also
    writes ``∇T(L)`` into ``p.grad`` (computed by autograd; parameters that don't affect the loss get None)."""

    def transformed_closure(backward: bool = True) -> torch.Tensor:
        if not backward:
            return transform(as_loss_tensor(closure(False)))
        with torch.enable_grad():
            value = transform(as_loss_tensor(closure(False)))
            grads = torch.autograd.grad(value, params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = g
        return value.detach()

    return transformed_closure


class HomotopyBase(Module, ABC):
    """Base of the homotopies: the objective becomes ``T(L)``.

    A known ``var.loss`` is replaced by ``T(loss)``; ``var.closure`` is replaced by one that returns ``T(L)`` and,
    with ``backward=True``, writes ``∇T(L)`` into ``p.grad``. The incoming update and an already computed gradient
    are not touched, so place homotopies before the modules that evaluate the objective. ``Modular.step`` still
    returns the untransformed loss of the first closure call. Requires a closure.

    Subclasses implement ``loss_transform(loss) -> Tensor`` (differentiable by autograd).
    """

    def __init__(self, defaults: dict[str, Any] | None = None):
        super().__init__(defaults)

    @abstractmethod
    def loss_transform(self, loss: torch.Tensor) -> torch.Tensor:
        """``T(L)``."""

    def step(self, var: Var) -> Var:
        closure = self._require_closure(var)
        if var.loss is not None:
            with torch.no_grad():
                transformed = self.loss_transform(as_loss_tensor(var.loss))
            if var.loss_approx is var.loss:
                var.loss_approx = transformed
            var.loss = transformed
        var.closure = homotopy_closure(closure, var.params, self.loss_transform)
        return var


class SquareHomotopy(HomotopyBase):
    """Homotopy with ``T(L) = sign(L)·L²`` (so ``∇T = 2|L|·∇L``).

    Reference:
        none (loss reformulation utility).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.SquareHomotopy(), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self):
        super().__init__()

    def loss_transform(self, loss: torch.Tensor) -> torch.Tensor:
        return loss.sign() * loss.square()


class SqrtHomotopy(HomotopyBase):
    """Homotopy with ``T(L) = sqrt(L + 1e-12)`` (so ``∇T = ∇L / (2·sqrt(L + 1e-12))``); for non-negative losses.

    Reference:
        none (loss reformulation utility).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.SqrtHomotopy(), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self):
        super().__init__()

    def loss_transform(self, loss: torch.Tensor) -> torch.Tensor:
        return (loss + 1e-12).sqrt()


class ExpHomotopy(HomotopyBase):
    """Homotopy with ``T(L) = exp(L)`` (so ``∇T = exp(L)·∇L``).

    Reference:
        none (loss reformulation utility).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.ExpHomotopy(), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self):
        super().__init__()

    def loss_transform(self, loss: torch.Tensor) -> torch.Tensor:
        return loss.exp()


class LogHomotopy(HomotopyBase):
    """Homotopy with ``T(L) = log(L + 1e-12)`` (so ``∇T = ∇L / (L + 1e-12)``); for non-negative losses.

    Reference:
        none (loss reformulation utility).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.LogHomotopy(), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self):
        super().__init__()

    def loss_transform(self, loss: torch.Tensor) -> torch.Tensor:
        return (loss + 1e-12).log()


class LambdaHomotopy(HomotopyBase):
    """Homotopy with a custom ``T = fn`` (stored in ``defaults``; must be differentiable by autograd).

    Args:
        fn: ``fn(loss: Tensor) -> Tensor``.

    Reference:
        none (loss reformulation utility).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.LambdaHomotopy(torch.log1p), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        if not callable(fn):
            raise TypeError(f"LambdaHomotopy: fn must be callable, got {type(fn).__name__}")
        super().__init__(dict(fn=fn))

    def loss_transform(self, loss: torch.Tensor) -> torch.Tensor:
        return self.defaults["fn"](loss)
