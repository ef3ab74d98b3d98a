"""Debug printing: ``PrintUpdate``, ``PrintShape``, ``PrintParams``, ``PrintLoss``. Each calls
``print_fn(text + str(value))`` and returns ``var`` unchanged. Settings are read from ``defaults``."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...core import Module, Var
from ._common import require_loss


class _PrintBase(Module):
    def __init__(self, text: str, print_fn: Callable[[str], Any]):
        if not isinstance(text, str):
            raise TypeError(f"{type(self).__name__}: text must be a string, got {type(text).__name__}")
        if not callable(print_fn):
            raise TypeError(f"{type(self).__name__}: print_fn must be callable, got {type(print_fn).__name__}")
        super().__init__(dict(text=text, print_fn=print_fn))

    def _value(self, var: Var) -> Any:
        raise NotImplementedError

    def step(self, var: Var) -> Var:
        self.defaults["print_fn"](self.defaults["text"] + str(self._value(var)))
        return var


class PrintUpdate(_PrintBase):
    """Prints ``var.update`` as it is (None if no module set it yet; nothing is computed).

    Args:
        text: prefix. Defaults to ``'update = '``.
        print_fn: called with the text. Defaults to ``print``.

    Reference:
        none (debugging utility).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.PrintUpdate(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, text: str = "update = ", print_fn: Callable[[str], Any] = print):
        super().__init__(text, print_fn)

    def _value(self, var: Var) -> Any:
        return var.update


class PrintShape(_PrintBase):
    """Prints the list of shapes of ``var.update`` (None if it is not set).

    Args:
        text: prefix. Defaults to ``'shapes = '``.
        print_fn: called with the text. Defaults to ``print``.

    Reference:
        none (debugging utility).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.PrintShape(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, text: str = "shapes = ", print_fn: Callable[[str], Any] = print):
        super().__init__(text, print_fn)

    def _value(self, var: Var) -> Any:
        return None if var.update is None else [u.shape for u in var.update]


class PrintParams(_PrintBase):
    """Prints ``var.params``.

    Args:
        text: prefix. Defaults to ``'params = '``.
        print_fn: called with the text. Defaults to ``print``.

    Reference:
        none (debugging utility).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.PrintParams(), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, text: str = "params = ", print_fn: Callable[[str], Any] = print):
        super().__init__(text, print_fn)

    def _value(self, var: Var) -> Any:
        return var.params


class PrintLoss(_PrintBase):
    """Prints the loss at the current parameters, ``var.get_loss(False)`` (evaluates the closure if the loss is
    unknown). Requires a closure, or ``loss=`` passed to ``step``.

    Args:
        text: prefix. Defaults to ``'loss = '``.
        print_fn: called with the text. Defaults to ``print``.

    Reference:
        none (debugging utility).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.PrintLoss(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, text: str = "loss = ", print_fn: Callable[[str], Any] = print):
        super().__init__(text, print_fn)

    def _value(self, var: Var) -> Any:
        require_loss(self, var)
        loss = var.get_loss(False)
        return loss.detach() if isinstance(loss, torch.Tensor) else loss
