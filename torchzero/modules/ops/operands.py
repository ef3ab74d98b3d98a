"""Operands that are numbers or modules (catalog ops_misc 0.5), shared by the operation bases."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...core import Module, Var


def is_module_operand(value: Any) -> bool:
    """A module or a sequence of modules is a module operand; anything else (numbers, None) is a constant."""
    if isinstance(value, Module):
        return True
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) > 0 and all(
        isinstance(v, Module) for v in value)


def evaluate_operand(module: Module, var: Var) -> list[torch.Tensor]:
    """Steps ``module`` on a clone of ``var`` (with a copy of the update) and returns the clone's update.

    A loss or gradient the operand computes is merged back into ``var``, so the next operand reuses it; the
    clone's ``stop``/``skip_update`` never propagate.
    """
    clone = var.clone(clone_update=True)
    clone = module.step(clone)
    var.update_attrs_from_clone_(clone)
    return clone.get_update()


def register_operands(module: Module, operands: dict[str, Any]) -> dict[str, Any]:
    """Registers module operands as children of ``module`` under their names; returns ``{name: constant}`` with
    None for the module operands. Raises ``TypeError`` naming ``module`` for other values."""
    constants: dict[str, Any] = {}
    for name, value in operands.items():
        if is_module_operand(value):
            module.set_child(name, value)
            constants[name] = None
        elif value is None or isinstance(value, (int, float, torch.Tensor)):
            constants[name] = value
        else:
            raise TypeError(f"{type(module).__name__}: operand {name!r} must be a number or a module, "
                            f"got {type(value).__name__}")
    return constants


def evaluate_operands(module: Module, constants: dict[str, Any], var: Var,
                      order: Sequence[str] | None = None) -> dict[str, Any]:
    """Values of all operands: constants as they are, module operands evaluated (in ``order``, default the
    declaration order) with ``evaluate_operand``."""
    values = dict(constants)
    for name in (order if order is not None else constants):
        if name in module.children:
            values[name] = evaluate_operand(module.children[name], var)
    return values
