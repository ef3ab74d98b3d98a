"""``Optimizer``: a ``torch.optim.Optimizer`` with helpers for reading parameters, per-group settings and state.

It is the base of the wrappers of other libraries (``torchzero.optim.wrappers``) and is handy for writing a
one-off optimizer quickly; the modular optimizers (``Modular``) do not use it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias, TypeVar

import torch

from .numberlist import NumberList
from .params import Params
from .tensorlist import TensorList
from .torch_tools import unpack_states

__all__ = ["Optimizer", "ParamFilter", "get_params", "get_group_vals", "get_state_vals"]

ParamFilter: TypeAlias = Literal["requires_grad", "has_grad", "all"] | Callable[[torch.Tensor], bool]
"""Which parameters to take: ``'requires_grad'`` (trainable), ``'has_grad'`` (trainable with a ``.grad``),
``'all'``, or a predicate called on each parameter."""

_T = TypeVar("_T")

_MODES = ("requires_grad", "has_grad", "all")


def _param_filter(mode: ParamFilter) -> Callable[[torch.Tensor], bool]:
    if callable(mode):
        return mode
    if mode == "requires_grad":
        return lambda p: p.requires_grad
    if mode == "has_grad":
        return lambda p: p.requires_grad and p.grad is not None
    if mode == "all":
        return lambda p: True
    raise ValueError(f"unknown parameter filter {mode!r}, expected one of {_MODES} or a callable")


def get_params(param_groups: Iterable[Mapping[str, Any]], mode: ParamFilter = "requires_grad",
               cls: Callable[[list[torch.Tensor]], _T] = TensorList) -> _T:  # type: ignore[assignment]
    """The parameters of all ``param_groups`` (in order) that pass ``mode``, collected into ``cls``."""
    keep = _param_filter(mode)
    return cls([p for g in param_groups for p in g["params"] if keep(p)])


def get_group_vals(param_groups: Iterable[Mapping[str, Any]], key: str | Sequence[str], key2: str | None = None,
                   *keys: str, mode: ParamFilter = "requires_grad",
                   cls: Callable[[list[Any]], Any] = NumberList) -> Any:
    """Group settings repeated once per parameter that passes ``mode``: ``cls([group[key] for each param])``.

    With one key returns one ``cls``; with several (``key, key2, ...`` or a list/tuple of keys) a list of them.
    A key missing from a group raises ``KeyError`` naming the key.
    """
    if isinstance(key, str):
        all_keys = [key] if key2 is None else [key, key2, *keys]
        single = key2 is None
    else:
        all_keys = list(key) + ([] if key2 is None else [key2, *keys])
        single = False

    keep = _param_filter(mode)
    values: list[list[Any]] = [[] for _ in all_keys]
    for g in param_groups:
        n = sum(1 for p in g["params"] if keep(p))
        if n == 0:
            continue
        for vals, k in zip(values, all_keys):
            if k not in g:
                raise KeyError(f"parameter group has no setting {k!r}")
            vals.extend([g[k]] * n)

    if single:
        return cls(values[0])
    return [cls(v) for v in values]


def get_state_vals(state: Mapping[torch.Tensor, Any], params: Sequence[torch.Tensor], key: str | Sequence[str],
                   key2: str | None = None, *keys: str, init: Any = torch.zeros_like,
                   cls: Callable[[list[Any]], Any] = TensorList) -> Any:
    """Per-parameter state values ``state[p][key]`` for ``params``, creating missing ones from ``init``
    (a callable applied to the parameter, a tensor that is cloned, or a value; a list/tuple gives one init per key
    when there are several keys, else one per parameter). One key gives one ``cls``, several give a list."""
    all_keys = [key] if isinstance(key, str) else list(key)
    if key2 is not None:
        all_keys += [key2, *keys]
    states = [state[p] for p in params]  # a defaultdict creates missing entries
    if len(all_keys) == 1 and isinstance(key, str):
        return unpack_states(states, params, all_keys[0], init=init, cls=cls)
    out = unpack_states(states, params, *all_keys, init=init, cls=cls)
    return out if len(all_keys) > 1 else [out]


class Optimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` with helpers for reading parameters, per-group settings and state.

    Args:
        params: an iterable of tensors or of parameter-group dicts (as for any ``torch.optim.Optimizer``), or an
            ``nn.Module`` (its ``parameters()``).
        defaults: default values of the per-group settings.
        **_defaults: more defaults, merged over ``defaults`` (``defaults`` itself is not modified).

    Example:
        ```python
        class SignSGD(tz.utils.Optimizer):
            def __init__(self, params, lr=1e-3):
                super().__init__(params, lr=lr)

            @torch.no_grad()
            def step(self, closure=None):
                loss = None
                if closure is not None:
                    with torch.enable_grad():
                        loss = closure()
                params = self.get_params("has_grad")
                params.sub_(params.grad.sign().mul_(self.group_vals("lr", mode="has_grad")))
                return loss
        ```
    """

    def __init__(self, params: Params | torch.nn.Module, defaults: dict[str, Any] | None = None, **_defaults: Any):
        merged = dict(defaults) if defaults is not None else {}
        merged.update(_defaults)
        if isinstance(params, torch.nn.Module):
            params = params.parameters()
        super().__init__(params, merged)  # type: ignore[arg-type]

    @property
    def global_state(self) -> dict[str, Any]:
        """Optimizer-wide state, stored as the state of the first parameter (as ``torch.optim.LBFGS`` does), so it
        is saved by ``state_dict`` and survives ``load_state_dict`` (which replaces ``self.state``)."""
        return self.state[self.param_groups[0]["params"][0]]

    def get_params(self, mode: ParamFilter = "requires_grad",
                   cls: Callable[[list[torch.Tensor]], _T] = TensorList) -> _T:  # type: ignore[assignment]
        """Parameters of all groups that pass ``mode`` (``'requires_grad'``, ``'has_grad'``, ``'all'`` or a
        predicate), as ``cls`` (a ``TensorList`` by default)."""
        return get_params(self.param_groups, mode, cls)

    def group_vals(self, key: str | Sequence[str], key2: str | None = None, *keys: str,
                   mode: ParamFilter = "requires_grad", cls: Callable[[list[Any]], Any] = NumberList) -> Any:
        """A group setting repeated once per parameter of :meth:`get_params` (``mode``), as ``cls`` (a
        ``NumberList`` by default); several keys give a list with one ``cls`` per key.

        Example:
            >>> lrs, betas = self.group_vals("lr", "beta")
        """
        return get_group_vals(self.param_groups, key, key2, *keys, mode=mode, cls=cls)

    def state_vals(self, key: str | Sequence[str], key2: str | None = None, *keys: str,
                   mode: ParamFilter = "requires_grad", init: Any = torch.zeros_like,
                   cls: Callable[[list[Any]], Any] = TensorList) -> Any:
        """Per-parameter state ``self.state[p][key]`` for the parameters of :meth:`get_params` (``mode``),
        creating missing values from ``init`` (default ``torch.zeros_like``), as ``cls`` (a ``TensorList`` by
        default); several keys give a list with one ``cls`` per key.

        Example:
            >>> exp_avg, exp_avg_sq = self.state_vals("exp_avg", "exp_avg_sq")
        """
        return get_state_vals(self.state, self.get_params(mode, cls=list), key, key2, *keys, init=init, cls=cls)
