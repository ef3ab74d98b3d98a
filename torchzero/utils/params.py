"""Normalisation of the ``params`` argument of optimizers and modules into parameter groups."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import torch

Params: TypeAlias = Iterable[torch.Tensor | tuple[str, torch.Tensor] | Mapping[str, Any]]
"""What an optimizer accepts as parameters: tensors, ``(name, tensor)`` pairs, or parameter-group dicts."""


def _split_params(params: Any, where: str) -> tuple[list[torch.Tensor], list[str] | None]:
    """Turns the ``'params'`` entry of one group into a list of tensors (and names, if given as pairs)."""
    if isinstance(params, torch.Tensor):
        return [params], None
    if isinstance(params, (str, bytes, Mapping)) or not isinstance(params, Iterable):
        raise TypeError(f"{where}: 'params' must be a tensor or an iterable of tensors, got {type(params).__name__}")

    tensors: list[torch.Tensor] = []
    names: list[str] = []
    for item in params:
        if isinstance(item, torch.Tensor):
            tensors.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], torch.Tensor):
            names.append(str(item[0]))
            tensors.append(item[1])
        else:
            raise TypeError(f"{where}: expected tensors or (name, tensor) pairs, got {type(item).__name__}")
    if names and len(names) != len(tensors):
        raise TypeError(f"{where}: either all parameters or none of them must be given as (name, tensor) pairs")
    return tensors, (names or None)


def make_param_groups(params: Params | torch.nn.Module, differentiable: bool = False) -> list[dict[str, Any]]:
    """Normalises ``params`` into a list of parameter-group dicts, each with a list under ``'params'``.

    Accepts an ``nn.Module`` (its ``parameters()``), an iterable of tensors, an iterable of ``(name, tensor)``
    pairs (names are kept under ``'param_names'``), or an iterable of dicts with a ``'params'`` key and
    per-group settings. Loose tensors and pairs mixed with dicts form one extra group. Empty groups are dropped.

    Args:
        params: the parameters.
        differentiable: if False, tensors that are not leaves (and do not retain grad) are rejected, because
            an optimizer can't update them in place.
    """
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    if isinstance(params, torch.Tensor):
        raise TypeError("params must be an iterable of tensors or dicts, got a single torch.Tensor; "
                        "wrap it in a list: [tensor]")
    if isinstance(params, (str, bytes, Mapping)) or not isinstance(params, Iterable):
        raise TypeError(f"params must be an iterable of tensors or dicts, got {type(params).__name__}")

    items = list(params)
    groups: list[dict[str, Any]] = []
    loose: list[Any] = []
    for item in items:
        if isinstance(item, Mapping):
            if "params" not in item:
                raise ValueError("a parameter group dict must have a 'params' key")
            group = dict(item)
            tensors, names = _split_params(group["params"], "parameter group")
            group["params"] = tensors
            if names is not None:
                group["param_names"] = names
            groups.append(group)
        else:
            loose.append(item)

    if loose:
        tensors, names = _split_params(loose, "params")
        group = {"params": tensors}
        if names is not None:
            group["param_names"] = names
        groups.append(group)

    for group in groups:
        for p in group["params"]:
            if not differentiable and not (p.is_leaf or p.retains_grad):
                raise ValueError("can't optimize a non-leaf tensor: use tensor.detach().requires_grad_() "
                                 "or pass the leaf tensors")

    return [g for g in groups if len(g["params"]) != 0]


_make_param_groups = make_param_groups  # name used by the reference API
