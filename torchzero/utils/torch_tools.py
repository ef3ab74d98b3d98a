"""Small helpers for tensors: vector <-> tensor list conversion, storage replacement, type conversions and
unpacking of per-parameter state/setting dictionaries."""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "vec_to_tensors",
    "vec_to_tensors_",
    "set_storage_",
    "tofloat",
    "tonumpy",
    "totensor",
    "tolist",
    "flatten",
    "unpack_states",
    "unpack_dicts",
]


def _check_numel(vec: torch.Tensor, tensors: Sequence[torch.Tensor]) -> None:
    total = sum(t.numel() for t in tensors)
    if vec.numel() != total:
        raise ValueError(f"vector has {vec.numel()} elements, but the tensors have {total} in total")


def vec_to_tensors(vec: torch.Tensor, reference: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Splits a 1-D ``vec`` into tensors shaped like each ``reference`` tensor (in order).

    The results are views into ``vec`` (no copy, same dtype and device as ``vec``); writing to them writes
    to ``vec``. Raises ``ValueError`` if the total number of elements differs."""
    reference = list(reference)
    vec = vec.reshape(-1)
    _check_numel(vec, reference)
    out = []
    cur = 0
    for ref in reference:
        n = ref.numel()
        out.append(vec[cur : cur + n].view(ref.shape))
        cur += n
    return out


def vec_to_tensors_(vec: torch.Tensor, tensors_: Iterable[torch.Tensor]) -> None:
    """Makes every tensor in ``tensors_`` use the matching slice of the 1-D ``vec`` as its storage
    (``set_``, under ``torch.no_grad()`` so that it also works on parameters).

    The tensors keep their identity and shape, but afterwards share memory with ``vec``: changing ``vec``
    changes them and vice versa. A slice whose dtype differs from the tensor's is converted first (that tensor
    then uses a converted copy). Raises ``ValueError`` if the total number of elements differs."""
    tensors_ = list(tensors_)
    views = vec_to_tensors(vec, tensors_)
    with torch.no_grad():
        for t, v in zip(tensors_, views):
            t.set_(v.to(t.dtype))  # type: ignore[call-overload]


def set_storage_(param: torch.Tensor, new: torch.Tensor) -> None:
    """Replaces the values of ``param`` by making it use ``new``'s storage (``param.set_(new)``) under
    ``torch.no_grad()``. ``param`` keeps its identity (optimizer state keyed by it stays valid) but takes
    ``new``'s shape, strides and memory."""
    with torch.no_grad():
        param.set_(new)  # type: ignore[call-overload]


def tofloat(x: Any) -> float:
    """A Python float from a number, a one-element tensor or NumPy value (tensors synchronize)."""
    if isinstance(x, torch.Tensor):
        return float(x.detach().item())
    if isinstance(x, np.ndarray):
        return float(x.item())
    return float(x)


def tonumpy(x: Any) -> np.ndarray:
    """A NumPy array from a tensor (detached and moved to the CPU), an array (returned as is) or anything
    ``np.asarray`` accepts."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def totensor(x: Any, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A tensor from a tensor (converted with ``.to`` only if ``device``/``dtype`` are given), a NumPy array
    (shares memory when no conversion is needed) or anything ``torch.as_tensor`` accepts."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x).to(device=device, dtype=dtype)
    return torch.as_tensor(x, device=device, dtype=dtype)


def tolist(x: Any) -> Any:
    """A Python list from a tensor or array (``.tolist()``, so a 0-d one gives a number) or any iterable."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().tolist()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return list(x)


def flatten(iterable: Any) -> list[Any]:
    """Recursively flattens nested lists and tuples into one flat list; other objects (tensors, strings,
    dicts...) are kept as single items, and a non-list argument gives ``[iterable]``."""
    if not isinstance(iterable, (list, tuple)):
        return [iterable]
    out: list[Any] = []
    for item in iterable:
        out.extend(flatten(item))
    return out


def _initial_value(tensor: torch.Tensor, init: Any, tensor_index: int) -> Any:
    """Initial state value for ``tensor`` from ``init``: a callable is applied to the tensor, a tensor is cloned,
    a list/tuple holds one init per tensor, and anything else (a number) is used as is."""
    if callable(init):
        return init(tensor)
    if isinstance(init, torch.Tensor):
        return init.detach().clone()
    if isinstance(init, (list, tuple)):
        return _initial_value(tensor, init[tensor_index], tensor_index)
    return init


def unpack_states(
    states: Sequence[MutableMapping[str, Any]],
    tensors: Sequence[torch.Tensor],
    *keys: str,
    init: Callable[[torch.Tensor], Any] | Any = torch.zeros_like,
    cls: Callable[[list[Any]], Any] = list,
) -> Any:
    """Reads per-tensor state values, creating missing ones.

    ``states[i]`` is the state dictionary of ``tensors[i]``. For each key this collects ``states[i][key]`` over
    all tensors into ``cls`` (e.g. ``TensorList``); a missing value is created from ``init``, stored in the
    state and returned.

    Args:
        states: one mutable mapping per tensor.
        tensors: the tensors the states belong to (used to create initial values).
        *keys: one or more state keys.
        init: how to create a missing value: a callable applied to the tensor (default ``torch.zeros_like``),
            a tensor (cloned) or other value (used as is). With several keys a list/tuple gives one init per
            key; with a single key, or inside a per-key list, a list/tuple gives one init per tensor.
        cls: the container of each key's values.

    Returns:
        ``cls`` of values for a single key, otherwise a list with one ``cls`` per key.

    Example:
        >>> exp_avg, exp_avg_sq = unpack_states(states, params, "exp_avg", "exp_avg_sq", cls=TensorList)
    """
    if len(keys) == 0:
        raise ValueError("unpack_states needs at least one key")
    if isinstance(init, (list, tuple)) and len(keys) > 1:
        if len(init) != len(keys):
            raise ValueError(f"init has {len(init)} elements, expected one per key ({len(keys)})")
        inits = list(init)
    else:
        inits = [init] * len(keys)

    values: list[list[Any]] = [[] for _ in keys]
    for i, (state, tensor) in enumerate(zip(states, tensors, strict=True)):
        for k, key in enumerate(keys):
            if key not in state:
                state[key] = _initial_value(tensor, inits[k], i)
            values[k].append(state[key])

    if len(keys) == 1:
        return cls(values[0])
    return [cls(v) for v in values]


def unpack_dicts(
    dicts: Iterable[MutableMapping[str, Any]], key: str, *keys: str, cls: Callable[[list[Any]], Any] = list
) -> Any:
    """Collects ``d[key]`` of every dictionary: ``cls([d[key] for d in dicts])`` for one key, a list with one
    ``cls`` per key for several.

    Example:
        >>> lrs, betas = unpack_dicts(settings, "lr", "beta", cls=NumberList)
    """
    dicts = list(dicts)
    if not keys:
        return cls([d[key] for d in dicts])
    return [cls([d[k] for d in dicts]) for k in (key, *keys)]
