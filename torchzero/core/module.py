"""``Module``: the unit optimizers are built from, and ``Chain`` of modules."""
from __future__ import annotations

import warnings
from abc import ABC
from collections import ChainMap, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, MutableSequence, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar, overload

import torch

from ..utils.params import Params, make_param_groups
from .var import Var

if TYPE_CHECKING:
    from ..utils.linalg.linear_operator import LinearOperator

ListLike = TypeVar("ListLike", bound=MutableSequence)
Init: TypeAlias = Any
"""How to initialise missing state: a callable applied to the parameter (``torch.zeros_like``), ``'param'``
or ``'grad'`` (clones), or a value (tensors are cloned)."""


# --------------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------------
_settings_version = 0
"""Incremented on every change of any settings dict; lets modules cache resolved settings between steps."""


def _bump_settings_version() -> None:
    global _settings_version
    _settings_version += 1


class SettingsDict(dict):
    """A ``dict`` that records that settings changed whenever it is modified.

    Per-parameter settings are resolved once and cached by ``Module.get_settings``; any write to a settings
    dict (``set_param_groups``, a learning rate scheduler writing ``group['lr']``, editing ``module.defaults``)
    invalidates those caches. Reads are plain ``dict`` reads.
    """

    def __setitem__(self, key: Any, value: Any) -> None:
        _bump_settings_version()
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        _bump_settings_version()
        super().__delitem__(key)

    def __ior__(self, other: Any) -> SettingsDict:  # type: ignore[override,misc]
        _bump_settings_version()
        super().update(other)
        return self

    def update(self, *args: Any, **kwargs: Any) -> None:
        _bump_settings_version()
        super().update(*args, **kwargs)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            _bump_settings_version()
        return super().setdefault(key, default)

    def pop(self, *args: Any) -> Any:
        _bump_settings_version()
        return super().pop(*args)

    def popitem(self) -> tuple[Any, Any]:
        _bump_settings_version()
        return super().popitem()

    def clear(self) -> None:
        _bump_settings_version()
        super().clear()

    def sync_from(self, values: Mapping[str, Any]) -> None:
        """Sets the items of ``values`` that differ from the stored ones (no version change if none differ)."""
        for k, v in values.items():
            if k in self:
                old = super().__getitem__(k)
                if old is v or (type(old) is type(v) and isinstance(v, (int, float, str, bool)) and old == v):
                    continue
            self[k] = v


def _new_settings(defaults: Mapping[str, Any]) -> ChainMap[str, Any]:
    # 0 - module-local per-parameter overrides (set_param_groups), highest priority
    # 1 - per-parameter-group values given to Modular (shared by the group), medium priority
    # 2 - module defaults, lowest priority
    return ChainMap(SettingsDict(), SettingsDict(), defaults)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# state access
# --------------------------------------------------------------------------------------------------
def _init_value(init: Init, param: torch.Tensor) -> Any:
    if isinstance(init, str):
        if init == "param":
            return param.clone()
        if init == "grad":
            if param.grad is None:
                raise RuntimeError("state init='grad' requested, but the parameter has no gradient")
            return param.grad.clone()
        return init
    if callable(init):
        return init(param)
    if isinstance(init, torch.Tensor):
        return init.detach().clone()
    return init


def get_state_vals(
    state: Mapping[torch.Tensor, Any],
    params: Sequence[torch.Tensor],
    key: str | list[str] | tuple[str, ...],
    key2: str | None = None,
    *keys: str,
    must_exist: bool = False,
    init: Init | Sequence[Init] = torch.zeros_like,
    cls: type[ListLike] = list,  # type: ignore[assignment]
) -> ListLike | list[ListLike]:
    """Values of ``state[p][key]`` for each parameter, creating missing ones with ``init``.

    With a single string ``key`` returns one ``cls`` of values; with several keys (``key, key2, ...`` or a
    list/tuple) returns a list with one ``cls`` per key. ``init`` may be a list/tuple: per parameter for a
    single key, per key for several keys.
    """
    if isinstance(key, str):
        all_keys: list[str] = [key] if key2 is None else [key, key2, *keys]
        single = key2 is None
    else:
        all_keys = list(key)
        if key2 is not None:
            all_keys += [key2, *keys]
        single = False

    per_key_init = (not single) and isinstance(init, (list, tuple))
    per_param_init = single and isinstance(init, (list, tuple))
    if per_key_init and len(init) != len(all_keys):
        raise ValueError(f"got {len(init)} inits for {len(all_keys)} keys")

    out: list[list[Any]] = [[] for _ in all_keys]
    for i, p in enumerate(params):
        s = state[p]
        for j, k in enumerate(all_keys):
            if k in s:
                out[j].append(s[k])
                continue
            if must_exist:
                raise KeyError(f"key '{k}' doesn't exist in state of a parameter of shape {tuple(p.shape)}")
            k_init = init[j] if per_key_init else (init[i] if per_param_init else init)
            value = s[k] = _init_value(k_init, p)
            out[j].append(value)

    if single:
        return cls(out[0])
    return [cls(o) for o in out]


# --------------------------------------------------------------------------------------------------
# plain-data state dicts
# --------------------------------------------------------------------------------------------------
_TYPE_TAG = "__torchzero_type__"
_PLAIN_SCALARS = (int, float, bool, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)


def to_plain(obj: Any, where: str) -> Any:
    """Converts state into data that ``torch.load(..., weights_only=True)`` loads: tensors, numbers, strings,
    lists, tuples, dicts. Generators are stored as their state tensor, deques with their ``maxlen``;
    ``ChainMap``/``defaultdict`` become plain dicts. Anything else raises ``TypeError`` naming ``where``."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, _PLAIN_SCALARS):
        return obj
    if isinstance(obj, torch.Generator):
        return {_TYPE_TAG: "generator", "device": str(obj.device), "state": obj.get_state()}
    if isinstance(obj, deque):
        return {_TYPE_TAG: "deque", "maxlen": obj.maxlen, "items": [to_plain(v, where) for v in obj]}
    if isinstance(obj, (dict, ChainMap, Mapping)):
        return {k: to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(to_plain(v, where) for v in obj)
    if isinstance(obj, list):
        return [to_plain(v, where) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return {to_plain(v, where) for v in obj}
    raise TypeError(f"{where} holds a {type(obj).__name__}, which can't be saved as plain data; "
                    "override `_extra_pack`/`_extra_unpack` to store it")


def from_plain(obj: Any, device: torch.device | None = None) -> Any:
    """Inverse of ``to_plain``. Tensors are moved to ``device`` when it is given."""
    if isinstance(obj, torch.Tensor):
        return obj if device is None or obj.device == device else obj.to(device)
    if isinstance(obj, dict):
        tag = obj.get(_TYPE_TAG)
        if tag == "generator":
            generator = torch.Generator(obj["device"])
            generator.set_state(obj["state"].cpu())
            return generator
        if tag == "deque":
            return deque((from_plain(v, device) for v in obj["items"]), maxlen=obj["maxlen"])
        return {k: from_plain(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_plain(v, device) for v in obj]
    if isinstance(obj, tuple):
        return tuple(from_plain(v, device) for v in obj)
    return obj


def _plain_or_skip(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Plain-data copy of the entries of ``mapping`` that can be stored as plain data (others are skipped)."""
    out = {}
    for k, v in mapping.items():
        try:
            out[k] = to_plain(v, k)
        except TypeError:
            continue
    return out


# --------------------------------------------------------------------------------------------------
# Module
# --------------------------------------------------------------------------------------------------
class Module(ABC):
    """Abstract base class for optimizer modules.

    Modules represent distinct steps or transformations within the optimization process (e.g., momentum,
    line search, gradient accumulation). A module does not store parameters, but it maintains per-parameter
    state and per-parameter settings where tensors are used as keys (same as ``torch.optim.Optimizer`` state).

    Settings are resolved with this priority: module-local overrides set with ``set_param_groups`` >
    per-group values of the param groups given to ``Modular`` (including values written by learning rate
    schedulers) > ``defaults``.

    Args:
        defaults: default values of the optimization options (used when a parameter group doesn't specify them).
    """

    _evaluates_closure_in_update: bool = False
    """Whether ``update`` evaluates the objective at the current point itself (``Newton``, ``GaussNewton``...); a
    trust region with such a ``hess_module`` then doesn't hand a gradient over from its trial point, which the next
    step would not use."""

    def __init__(self, defaults: dict[str, Any] | None = None):
        if defaults is None:
            defaults = {}
        self.defaults: dict[str, Any] = SettingsDict(defaults)
        """Default values of settings."""

        self.settings: defaultdict[torch.Tensor, ChainMap[str, Any]] = defaultdict(self._new_param_settings)
        """Per-parameter settings: ``ChainMap(local overrides, param-group values, defaults)``."""

        self.state: defaultdict[torch.Tensor, dict[str, Any]] = defaultdict(dict)
        """Per-parameter state (e.g., momentum buffers)."""

        self.global_state: dict[str, Any] = {}
        """Global state for things that are not per-parameter."""

        self.children: dict[str, Module] = {}
        """A dictionary of child modules."""

        self._overridden_keys: set[str] = set()
        """Keys overridden with ``set_param_groups``, only used to not give a warning."""

        self._settings_cache: dict[tuple, tuple[int, list[list[Any]]]] = {}

    def _new_param_settings(self) -> ChainMap[str, Any]:
        return _new_settings(self.defaults)

    # ------------------------------------------------------------------ settings
    def set_param_groups(self, param_groups: Params) -> Module:
        """Sets custom parameter groups with per-parameter settings that only this module uses
        (highest priority). Returns ``self``."""
        for group in make_param_groups(param_groups, differentiable=False):
            settings = dict(group)
            params = settings.pop("params")
            settings.pop("param_names", None)
            if not settings:
                continue
            self._overridden_keys.update(settings.keys())
            for param in params:
                self.settings[param].maps[0].update(settings)
        return self

    def _resolve_settings(self, params: Sequence[torch.Tensor], keys: Sequence[str]) -> list[list[Any]]:
        cache_key = (tuple(map(id, params)), *keys)
        cached = self._settings_cache.get(cache_key)
        if cached is not None and cached[0] == _settings_version:
            return cached[1]

        settings = self.settings
        try:
            values = [[settings[p][k] for p in params] for k in keys]
        except KeyError as e:
            raise KeyError(f"{self.__class__.__name__} has no setting {e}; its settings are "
                           f"{sorted(self.defaults)}") from None
        if len(self._settings_cache) > 64:
            self._settings_cache.clear()
        self._settings_cache[cache_key] = (_settings_version, values)
        return values

    @overload
    def get_settings(self, params: Sequence[torch.Tensor], key: str, *,
                     cls: type[ListLike] = list) -> ListLike: ...  # type: ignore[assignment]
    @overload
    def get_settings(self, params: Sequence[torch.Tensor], key: list[str] | tuple[str, ...], *,
                     cls: type[ListLike] = list) -> list[ListLike]: ...  # type: ignore[assignment]
    @overload
    def get_settings(self, params: Sequence[torch.Tensor], key: str, key2: str, *keys: str,
                     cls: type[ListLike] = list) -> list[ListLike]: ...  # type: ignore[assignment]
    def get_settings(self, params: Sequence[torch.Tensor], key: str | list[str] | tuple[str, ...],
                     key2: str | None = None, *keys: str,
                     cls: type[ListLike] = list) -> ListLike | list[ListLike]:  # type: ignore[assignment]
        """Values of settings for each parameter, like ``get_state`` with ``must_exist=True``.

        A single string key returns one ``cls`` of per-parameter values; several keys (or a list/tuple) return
        a list with one ``cls`` per key. Resolved values are cached until any setting changes, so calling this
        every step is cheap.
        """
        if isinstance(key, str):
            all_keys = [key] if key2 is None else [key, key2, *keys]
            single = key2 is None
        else:
            all_keys = list(key) + ([key2, *keys] if key2 is not None else [])
            single = False
        values = self._resolve_settings(params, all_keys)
        if single:
            return cls(values[0])
        return [cls(v) for v in values]

    # ------------------------------------------------------------------ state
    @overload
    def get_state(self, params: Sequence[torch.Tensor], key: str, *, must_exist: bool = False,
                  init: Init = torch.zeros_like, cls: type[ListLike] = list) -> ListLike: ...  # type: ignore[assignment]
    @overload
    def get_state(self, params: Sequence[torch.Tensor], key: list[str] | tuple[str, ...], *,
                  must_exist: bool = False, init: Init | Sequence[Init] = torch.zeros_like,
                  cls: type[ListLike] = list) -> list[ListLike]: ...  # type: ignore[assignment]
    @overload
    def get_state(self, params: Sequence[torch.Tensor], key: str, key2: str, *keys: str,
                  must_exist: bool = False, init: Init | Sequence[Init] = torch.zeros_like,
                  cls: type[ListLike] = list) -> list[ListLike]: ...  # type: ignore[assignment]
    def get_state(self, params: Sequence[torch.Tensor], key: str | list[str] | tuple[str, ...],
                  key2: str | None = None, *keys: str, must_exist: bool = False,
                  init: Init | Sequence[Init] = torch.zeros_like,
                  cls: type[ListLike] = list) -> ListLike | list[ListLike]:  # type: ignore[assignment]
        """Returns values of per-parameter state for the given key(s), creating missing ones with ``init``.

        Works like ``operator.itemgetter``: a single key returns one ``cls`` of per-parameter values; several
        keys (``key, key2, ...``) or a list/tuple of keys return a list with one ``cls`` per key.

        ```python
        exp_avg = self.get_state(params, "exp_avg", cls=TensorList)
        exp_avg, exp_avg_sq = self.get_state(params, "exp_avg", "exp_avg_sq", cls=TensorList)
        [exp_avg] = self.get_state(params, ["exp_avg"])
        ```

        Args:
            params: parameters to return the states for.
            key, key2, *keys: state keys.
            must_exist: if True, a missing key raises ``KeyError`` instead of being created.
            init: how to initialise a missing key: a callable applied to the parameter such as
                ``torch.zeros_like``; ``'param'`` or ``'grad'`` for a clone of the parameter or its gradient;
                any other value is used as is (tensors are cloned); a list/tuple gives one init per parameter
                (single key) or per key (several keys).
            cls: ``MutableSequence`` class of the returned lists. Defaults to ``list``.
        """
        return get_state_vals(self.state, params, key, key2, *keys, must_exist=must_exist, init=init, cls=cls)

    def clear_state_keys(self, *keys: str) -> None:
        """Deletes the given keys from the state of every parameter."""
        for s in self.state.values():
            for k in keys:
                if k in s:
                    del s[k]

    @overload
    def store(self, params: Sequence[torch.Tensor], keys: str, values: Sequence) -> None: ...
    @overload
    def store(self, params: Sequence[torch.Tensor], keys: Sequence[str], values: Sequence[Sequence]) -> None: ...
    def store(self, params: Sequence[torch.Tensor], keys: str | Sequence[str], values: Sequence) -> None:
        """Stores per-parameter values: ``store(params, 'key', values)`` sets ``state[p]['key'] = value`` for each
        parameter; ``store(params, ['k1', 'k2'], [values1, values2])`` does that for several keys."""
        if isinstance(keys, str):
            for p, v in zip(params, values):
                self.state[p][keys] = v
            return
        for p, *p_values in zip(params, *values):
            state = self.state[p]
            for k, v in zip(keys, p_values):
                state[k] = v

    # ------------------------------------------------------------------ children
    def set_child(self, key: str, module: Module | Sequence[Module]) -> None:
        """Registers a child module (a sequence is wrapped in a ``Chain``)."""
        self.children[key] = maybe_chain(module)

    def set_children_sequence(self, modules: Iterable[Module | Sequence[Module]], prefix: str = "module_") -> None:
        """Registers children ``{prefix}0``, ``{prefix}1``, ..."""
        for i, m in enumerate(list(modules)):
            self.set_child(f"{prefix}{i}", maybe_chain(m))

    def get_children_sequence(self, prefix: str = "module_") -> list[Module]:
        """Children registered with ``set_children_sequence``, in order."""
        return [self.children[f"{prefix}{i}"] for i in range(len(self.children)) if f"{prefix}{i}" in self.children]

    def __repr__(self) -> str:
        s = self.__class__.__name__
        if self.children:
            s = f"{s}({', '.join(f'{k}={v}' for k, v in self.children.items())})"
        return s

    # ------------------------------------------------------------------ state dict
    def _state_dict(self, key_of: Callable[[torch.Tensor], Any]) -> dict[str, Any]:
        name = self.__class__.__name__
        state = {}
        local = {}
        for p, s in self.state.items():
            k = key_of(p)
            if k is not None:
                state[k] = to_plain(s, f"{name}.state")
        for p, st in self.settings.items():
            k = key_of(p)
            if k is not None and len(st.maps[0]) != 0:
                local[k] = to_plain(dict(st.maps[0]), f"{name}.settings")
        return {
            "state": state,
            "settings": {"local": local},
            "defaults": _plain_or_skip(self.defaults),
            "global_state": to_plain(self.global_state, f"{name}.global_state"),
            "extra": to_plain(self._extra_pack(), f"{name}._extra_pack()"),
            "children": {k: v._state_dict(key_of) for k, v in self.children.items()},
        }

    def state_dict(self) -> dict[str, Any]:
        """State of this module and its children as plain data (tensors, numbers, strings, lists, dicts):
        per-parameter state, module-local settings overrides, defaults, global state. Parameters are keyed by
        ``id(param)``; ``Modular.state_dict`` keys them by their position instead."""
        return self._state_dict(id)

    def _load_state_dict(self, state_dict: dict[str, Any], id_to_tensor: Mapping[Any, torch.Tensor]) -> None:
        """Loads a state dict made by ``state_dict``; ``id_to_tensor`` maps its parameter keys to the tensors
        (``Modular`` passes positions)."""
        self.state.clear()
        for k, s in state_dict["state"].items():
            if k not in id_to_tensor:
                raise KeyError(f"{self.__class__.__name__}: state dict has state for an unknown parameter {k}")
            p = id_to_tensor[k]
            self.state[p] = from_plain(s, p.device)

        for st in self.settings.values():
            st.maps[0].clear()
        for k, v in state_dict["settings"]["local"].items():
            self.settings[id_to_tensor[k]].maps[0].update(from_plain(v))
        self.defaults.update(from_plain(state_dict.get("defaults", {})))

        self.global_state.clear()
        self.global_state.update(from_plain(state_dict["global_state"]))

        for k, v in state_dict["children"].items():
            if k in self.children:
                self.children[k]._load_state_dict(v, id_to_tensor)
            else:
                warnings.warn(f"State dict for {self} has child {k}, which is missing in {self}", stacklevel=2)

        self._extra_unpack(from_plain(state_dict["extra"]))
        self._settings_cache.clear()
        _bump_settings_version()

    def load_state_dict(self, state_dict: dict[str, Any], params: Sequence[torch.Tensor]) -> None:
        """Loads a state dict made by this module's ``state_dict()`` into this module, for ``params`` given in
        the same order as the parameters of the module that made it (keys are matched by order of first use)."""
        keys = _collect_param_keys(state_dict)
        if len(keys) > len(params):
            raise ValueError(f"state dict refers to {len(keys)} parameters, got {len(params)}")
        self._load_state_dict(state_dict, dict(zip(keys, params)))

    # ------------------------------------------------------------------ overridable methods
    def step(self, var: Var) -> Var:
        """Performs a step, returns new ``var`` but may update it in-place."""
        self.update(var)
        return self.apply(var)

    def update(self, var: Var) -> Any:
        """Updates the internal state of this module. This should not modify ``var.update``.

        Specifying ``update`` and ``apply`` methods is optional and allows certain meta-modules to be used,
        such as ``tz.m.Online`` or trust regions. Alternatively, simply override the ``step`` method.
        """

    def apply(self, var: Var) -> Var:
        """Applies this module to ``var.get_update()``. This should not modify the internal state of this module
        if possible.

        Specifying ``update`` and ``apply`` methods is optional and allows certain meta-modules to be used,
        such as ``tz.m.Online`` or trust regions. Alternatively, simply override the ``step`` method.
        """
        return self.step(var)

    def get_H(self, var: Var) -> LinearOperator | None:
        """Returns a ``LinearOperator`` of the Hessian or Hessian approximation over all parameters concatenated
        to a vector, or None. By default asks the children; two children answering is an error."""
        H = None
        for k, v in self.children.items():
            H_v = v.get_H(var)
            if H is not None and H_v is not None:
                raise RuntimeError(f"Two children of {self} have a hessian, second one is {k}={v}")
            if H_v is not None:
                H = H_v
        return H

    def reset(self) -> None:
        """Resets the internal state of the module (e.g. momentum) and all children.
        By default clears state and global state, keeping a random generator (``global_state['generator']``)."""
        self.state.clear()
        generator = self.global_state.get("generator")
        self.global_state.clear()
        if generator is not None:
            self.global_state["generator"] = generator
        for c in self.children.values():
            c.reset()

    def reset_for_online(self) -> None:
        """Resets buffers that depend on previous evaluation, such as previous gradient and loss, which may
        become inaccurate due to mini-batching.

        ``Online`` calls ``reset_for_online``, then ``update`` with previous parameters, then ``update`` with
        current parameters, and then ``apply``.
        """
        for c in self.children.values():
            c.reset_for_online()

    def _extra_pack(self) -> Any:
        """Extra information to store in the state dict; passed to ``_extra_unpack`` when loading."""
        return {}

    def _extra_unpack(self, x: Any) -> None:
        """Receives what ``_extra_pack`` returned, after the rest of the state dict has been loaded."""

    # ------------------------------------------------------------------ helpers
    def _require_closure(self, var: Var) -> Callable:
        """``var.closure``, or a clear error naming this module if the step was called without one."""
        if var.closure is None:
            raise RuntimeError(f"{self.__class__.__name__} requires a closure: call `opt.step(closure)` where "
                               "`closure(backward=True)` re-evaluates the loss (and calls backward if asked).")
        return var.closure

    @torch.no_grad()
    def Hvp(
        self,
        v: Sequence[torch.Tensor],
        at_x0: bool,
        var: Var,
        rgrad: Sequence[torch.Tensor] | None,
        hvp_method: Literal["autograd", "forward", "central"],
        h: float,
        normalize: bool,
        retain_grad: bool,
    ) -> tuple[Sequence[torch.Tensor], Sequence[torch.Tensor] | None]:
        """Returns ``(Hvp, rgrad)``, where ``rgrad`` is the gradient at the current parameters, possibly with
        ``create_graph=True`` (it is None with ``hvp_method='central'``). With ``at_x0`` the gradient is taken
        from / stored in ``var``. Pass ``rgrad=None`` on the first call, then what this returns.

        ```python
        D, rgrad = None, None
        for i in range(n_samples):
            v = [torch.randn_like(p) for p in params]
            Hvp, rgrad = self.Hvp(v, at_x0=True, var=var, rgrad=rgrad, hvp_method='autograd', h=1e-3,
                                  normalize=True, retain_grad=i < n_samples - 1)
            D = Hvp if D is None else torch._foreach_add(D, Hvp)
        ```

        Args:
            v: vector in the Hessian-vector product.
            at_x0: whether this is called at the original (True) or perturbed (False) parameters.
            var: ``Var``.
            rgrad: pass None initially, then what this returns.
            hvp_method: ``'autograd'`` (double backward), ``'forward'`` or ``'central'`` finite differences.
            h: finite difference step size.
            normalize: whether to normalize ``v`` for finite differences (then ``h`` is an absolute step).
            retain_grad: retain the graph of ``rgrad`` for further products (``'autograd'``).
        """
        from ..utils.derivatives import hvp, hvp_fd_central, hvp_fd_forward

        if rgrad is None and hvp_method in ("autograd", "forward"):
            create_graph = hvp_method == "autograd"
            if at_x0 and (var.grad is None or not create_graph or any(g.requires_grad for g in var.grad)):
                rgrad = var.get_grad(create_graph=create_graph)
            else:
                # at a perturbed point, or the stored gradient was computed without a graph
                closure = self._require_closure(var)
                with torch.enable_grad():
                    loss = closure(False)
                    rgrad = torch.autograd.grad(loss, var.params, create_graph=create_graph, allow_unused=True)
                rgrad = [g if g is not None else torch.zeros_like(p) for g, p in zip(rgrad, var.params)]

        if hvp_method == "autograd":
            assert rgrad is not None
            with torch.enable_grad():
                Hvp = hvp(var.params, rgrad, v, retain_graph=retain_grad)
            Hvp = [h_ if h_ is not None else torch.zeros_like(p) for h_, p in zip(Hvp, var.params)]
        elif hvp_method == "forward":
            assert rgrad is not None
            _, Hvp = hvp_fd_forward(self._require_closure(var), var.params, v, h=h, g_0=rgrad, normalize=normalize)
        elif hvp_method == "central":
            _, Hvp = hvp_fd_central(self._require_closure(var), var.params, v, h=h, normalize=normalize)
        else:
            raise ValueError(f"{self.__class__.__name__}: unknown hvp_method {hvp_method!r}, "
                             "expected 'autograd', 'forward' or 'central'")
        return Hvp, rgrad

    def get_generator(self, device: torch.types.Device, seed: int | None) -> torch.Generator | None:
        """A ``torch.Generator`` seeded with ``seed``, created on first use and kept in
        ``global_state['generator']``; None (global RNG) if ``seed`` is None."""
        if seed is None:
            return None
        if "generator" not in self.global_state:
            self.global_state["generator"] = torch.Generator(device).manual_seed(seed)
        return self.global_state["generator"]


def _collect_param_keys(state_dict: Mapping[str, Any]) -> list[Any]:
    """Parameter keys of a module state dict, in order of first appearance (recursively through children)."""
    seen: dict[Any, None] = {}

    def visit(sd: Mapping[str, Any]) -> None:
        for k in sd["state"]:
            seen.setdefault(k, None)
        for k in sd["settings"]["local"]:
            seen.setdefault(k, None)
        for child in sd["children"].values():
            visit(child)

    visit(state_dict)
    return list(seen)


Chainable: TypeAlias = Module | Sequence[Module]
"""A module or a sequence of modules (turned into a ``Chain``)."""


def _flatten_modules(modules: Iterable[Any]) -> list[Module]:
    flat: list[Module] = []
    for m in modules:
        if isinstance(m, Module):
            flat.append(m)
        elif isinstance(m, Iterable) and not isinstance(m, (str, bytes)):
            flat.extend(_flatten_modules(m))
        else:
            raise TypeError(f"expected a Module or a sequence of modules, got {type(m).__name__}")
    return flat


class Chain(Module):
    """Chain of modules, mostly used internally: steps its children one after another."""

    def __init__(self, *modules: Module | Iterable[Module]):
        super().__init__()
        for i, module in enumerate(_flatten_modules(modules)):
            self.set_child(f"module_{i}", module)

    def update(self, var: Var) -> Var:
        # `update` and `apply` of a chain update all modules, then apply all modules; this is only meaningful
        # in specific cases, like a Chain used as the hessian module of a trust region
        for i in range(len(self.children)):
            self.children[f"module_{i}"].update(var)
            if var.stop:
                break
        return var

    def apply(self, var: Var) -> Var:
        for i in range(len(self.children)):
            var = self.children[f"module_{i}"].apply(var)
            if var.stop:
                break
        return var

    def step(self, var: Var) -> Var:
        for i in range(len(self.children)):
            var = self.children[f"module_{i}"].step(var)
            if var.stop:
                break
        return var

    def __repr__(self) -> str:
        s = self.__class__.__name__
        if self.children:
            if s == "Chain":
                s = "C"
            s = f"{s}({', '.join(str(m) for m in self.children.values())})"
        return s


def maybe_chain(*modules: Chainable) -> Module:
    """Returns a single module directly if only one is provided, otherwise wraps them in a ``Chain``."""
    flat = _flatten_modules(modules)
    if len(flat) == 0:
        raise ValueError("maybe_chain got no modules")
    if len(flat) == 1:
        return flat[0]
    return Chain(*flat)


def unroll_modules(*modules: Chainable) -> list[Module]:
    """All modules including all children, depth first, each module once."""
    out: list[Module] = []
    seen: set[int] = set()

    def visit(m: Module) -> None:
        if id(m) in seen:
            return
        seen.add(id(m))
        out.append(m)
        for c in m.children.values():
            visit(c)

    for m in _flatten_modules(modules):
        visit(m)
    return out


def __getattr__(name: str) -> Any:
    # `torchzero.core.module.Modular` is a documented import path; Modular lives in core/modular.py
    if name == "Modular":
        from .modular import Modular
        return Modular
    raise AttributeError(name)
