"""Helpers shared by the misc modules and ``Wrap``: argument checks that name the module, the "direct path"
test of catalog 0.2, fresh ``Var`` objects for inner steps, and loss requirements."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ...core import Module, Var


def check_chainable(owner: str, name: str, value: Any, allow_none: bool = False) -> None:
    """Raises ``TypeError`` naming ``owner`` unless ``value`` is a module or a non-empty sequence of modules."""
    if value is None and allow_none:
        return
    if isinstance(value, Module):
        return
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, torch.Tensor)):
        items = list(value)
        if len(items) > 0 and all(isinstance(v, Module) or _is_module_seq(v) for v in items):
            return
    raise TypeError(f"{owner}: {name} must be a module or a sequence of modules, got {type(value).__name__}")


def _is_module_seq(value: Any) -> bool:
    return (isinstance(value, Iterable) and not isinstance(value, (str, bytes, torch.Tensor))
            and all(isinstance(v, Module) for v in value))


def fresh_var(var: Var, current_step: int) -> Var:
    """A new ``Var`` on the same parameters and closure without cached loss/gradient/update, for evaluating the
    objective at a point the parameters were moved to. ``attrs``, ``post_step_hooks`` and ``storage`` are shared
    with ``var``."""
    new = Var(params=var.params, closure=var.closure, model=var.model, current_step=current_step,
              modular=var.modular, storage=var.storage)
    new.attrs = var.attrs
    new.post_step_hooks = var.post_step_hooks
    return new


def require_loss(module: Module, var: Var) -> None:
    """Raises ``RuntimeError`` naming ``module`` if the loss is unknown and there is no closure to compute it."""
    if var.loss is None and var.closure is None:
        raise RuntimeError(f"{type(module).__name__} needs the loss: call `opt.step(closure)` with "
                           "`closure(backward=True)`, or pass the loss as `opt.step(loss=...)`.")


def as_loss_tensor(loss: Any) -> torch.Tensor:
    """The loss as a tensor (closures may return Python numbers)."""
    return loss if isinstance(loss, torch.Tensor) else torch.as_tensor(loss)
