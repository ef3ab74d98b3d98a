"""``Modular``: the ``torch.optim.Optimizer`` that runs a chain of modules."""
from __future__ import annotations

import inspect
import warnings
import weakref
from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..utils.params import Params, make_param_groups
from . import module as _module
from .module import Module, SettingsDict, from_plain, to_plain, unroll_modules
from .var import Var, _grads_or_zeros


class _EvalCounterClosure:
    """Wraps the user closure: counts evaluations and records the value returned by the first call of a step."""

    __slots__ = ("modular", "closure")

    def __init__(self, modular: Modular, closure: Callable):
        self.modular = modular
        self.closure = closure

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        value = self.closure(*args, **kwargs)
        modular = self.modular
        if not modular._closure_returned:
            modular._closure_return = value
            modular._closure_returned = True
        modular.num_evaluations += 1
        return value


class Modular(torch.optim.Optimizer):
    """Chains multiple modules into an optimizer.

    Each step builds a ``Var`` (parameters, closure, lazily computed loss and gradient, the update) and passes it
    through the modules in order; then the final update is subtracted from the parameters (unless a module set
    ``var.skip_update``).

    Args:
        params: an iterable of parameters to optimize (typically ``model.parameters()``), an iterable of
            parameter group dicts with per-group settings, or a ``torch.nn.Module`` instance.
        *modules: a sequence of ``Module`` instances that define the optimization algorithm steps.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.ClipNorm(1.0), tz.m.Adam(), tz.m.WeightDecay(1e-2), tz.m.LR(1e-3))

        def closure(backward=True):
            loss = loss_fn(model(inputs), targets)
            if backward:
                opt.zero_grad()
                loss.backward()
            return loss

        loss = opt.step(closure)
        ```
    """

    # this is specifically for lr schedulers
    param_groups: list[ChainMap[str, Any]]  # type: ignore[assignment]

    def __init__(self, params: Params | torch.nn.Module, *modules: Module):
        if len(modules) == 0:
            raise RuntimeError("Empty list of modules passed to `Modular`")
        for m in modules:
            if not isinstance(m, Module):
                raise TypeError(f"Modular expects Module instances after params, got {type(m).__name__}")

        self.model: torch.nn.Module | None = None
        """The model whose parameters are being optimized, if a model instance was passed to ``__init__``."""
        if isinstance(params, torch.nn.Module):
            self.model = params
            params = params.parameters()

        self.modules = modules
        """Top-level modules provided during initialization."""

        self.unrolled_modules = unroll_modules(*self.modules)
        """A flattened list of all modules including all children."""

        param_groups = make_param_groups(params, differentiable=False)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        self._group_settings: list[SettingsDict] = []

        # warn about several learning rate modules
        lr_modules = [m for m in self.unrolled_modules if "lr" in m.defaults]
        if len(lr_modules) > 1:
            warnings.warn(f"multiple learning rate modules detected: {lr_modules}. This may lead to compounding "
                          "of learning rate multiplication with per-parameter learning rates and schedulers.",
                          stacklevel=2)

        # warn about per-group keys that more than one module reads
        for group in param_groups:
            for k in group:
                if k in ("params", "lr", "param_names"):
                    continue
                modules_with_k = [m for m in self.unrolled_modules
                                  if k in m.defaults and k not in m._overridden_keys]
                if len(modules_with_k) > 1:
                    warnings.warn(f"`params` has a `{k}` key, and multiple modules have that key: {modules_with_k}. "
                                  f"If you intended to only set `{k}` to one of them, use "
                                  "`module.set_param_groups(params)`", stacklevel=2)

        # defaults for schedulers; param groups are ChainMap(group values, defaults), so a scheduler writing
        # group['lr'] sets a group value that takes priority over the defaults
        defaults: dict[str, Any] = {}
        for m in self.unrolled_modules:
            defaults.update(m.defaults)
        super().__init__(param_groups, defaults=defaults)  # calls add_param_group for each group

        self.current_step = 0
        """Global step counter of the optimizer."""

        self.num_evaluations = 0
        """Number of times the objective has been evaluated (closure calls, or steps if closure is None)."""

        self._closure_return: Any = None
        self._closure_returned = False

        self.attrs: dict = {}
        """Custom attributes that can be set by modules, for example EMA of weights or best so far."""

        self.should_terminate = False
        """Set to True by termination criteria modules."""

        self._synced_version = -1
        self._params_cache: tuple[list[torch.Tensor], tuple[int, ...]] | None = None
        self._result_cache: tuple[weakref.ref | weakref.WeakMethod, list[torch.Tensor], tuple[int, ...], Any, Any] | None = None

    # ------------------------------------------------------------------ parameter groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a parameter group; its settings apply to every module that has them (medium priority)."""
        groups = make_param_groups([param_group], differentiable=False)
        if len(groups) == 0:
            return
        group = groups[0]
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in existing for p in group["params"]) or len({id(p) for p in group["params"]}) != len(
                group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")

        values = SettingsDict(group)
        self.param_groups.append(ChainMap(values, self.defaults))

        shared = SettingsDict({k: v for k, v in group.items() if k not in ("params", "param_names")})
        self._group_settings.append(shared)
        for p in group["params"]:
            for m in self.unrolled_modules:
                m.settings[p].maps[1] = shared
        self._params_cache = None
        _module._bump_settings_version()

    def _sync_group_settings(self) -> None:
        """Copies per-group values (including those written by lr schedulers) into the settings that modules
        read. Costs nothing unless some setting changed since the last step."""
        if self._synced_version == _module._settings_version:
            return
        for group, shared in zip(self.param_groups, self._group_settings):
            shared.sync_from({k: v for k, v in group.maps[0].items() if k not in ("params", "param_names")})
        self._synced_version = _module._settings_version

    def _trainable_params(self) -> list[torch.Tensor]:
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        ids = tuple(map(id, params))
        cache = self._params_cache
        if cache is not None and cache[1] == ids:
            return cache[0]
        self._params_cache = (params, ids)
        return params

    # ------------------------------------------------------------------ state dict
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """State of the optimizer as plain data that ``torch.load(..., weights_only=True)`` loads.

        Parameters are referred to by their position in the parameter groups (as in ``torch.optim``), so the
        state dict can be loaded into a fresh optimizer over other tensors of the same shapes.
        """
        all_params = [p for g in self.param_groups for p in g["params"]]
        id_to_idx = {id(p): i for i, p in enumerate(all_params)}

        groups = []
        for g in self.param_groups:
            values = {k: to_plain(v, f"param group [{k!r}]") for k, v in g.maps[0].items() if k != "params"}
            values["params"] = [id_to_idx[id(p)] for p in g["params"]]
            groups.append(values)

        def key_of(p: torch.Tensor) -> int | None:
            return id_to_idx.get(id(p))

        attrs = {}
        for k, v in self.attrs.items():
            try:
                attrs[k] = to_plain(v, k)
            except TypeError:
                continue

        return {
            "param_groups": groups,
            "modules": [m._state_dict(key_of) for m in self.modules],
            "current_step": self.current_step,
            "num_evaluations": self.num_evaluations,
            "should_terminate": self.should_terminate,
            "attrs": attrs,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:  # type: ignore[override]
        """Loads a state dict made by ``state_dict`` into this optimizer (which must have the same structure of
        parameter groups and modules); continues exactly where the saved optimizer stopped."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(groups)} parameter groups, optimizer has "
                             f"{len(self.param_groups)}")
        if len(state_dict["modules"]) != len(self.modules):
            raise ValueError(f"loaded state dict has {len(state_dict['modules'])} modules, optimizer has "
                             f"{len(self.modules)}")

        all_params = [p for g in self.param_groups for p in g["params"]]
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                                 "optimizer's group")
            values = group.maps[0]
            for k, v in saved.items():
                if k != "params":
                    values[k] = from_plain(v)

        idx_to_param = dict(enumerate(all_params))
        for m, sd in zip(self.modules, state_dict["modules"]):
            m._load_state_dict(sd, idx_to_param)

        self.current_step = state_dict.get("current_step", 0)
        self.num_evaluations = state_dict.get("num_evaluations", 0)
        self.should_terminate = state_dict.get("should_terminate", False)
        self.attrs.update(from_plain(state_dict.get("attrs", {})))
        self._synced_version = -1

    # ------------------------------------------------------------------ step
    def step(self, closure: Callable | None = None, loss: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        """Performs one optimization step.

        Args:
            closure: ``closure(backward=True)`` that re-evaluates the objective; with ``backward=True`` it zeroes
                the gradients, calls ``loss.backward()`` and returns the loss. Modules that need more than the
                gradient (line searches, Newton methods...) require it. Without a closure the gradients already
                in ``p.grad`` are used (missing ones count as zeros).
            loss: loss at the current point, if known.
            **kwargs: stored in ``var.storage`` for modules that use them.

        When a module of the previous step evaluated the objective at exactly the parameters that step left (a
        line search accepting a trial point), and this step is called with the same closure object and unchanged
        parameters, that loss and gradient are reused instead of evaluating the closure again. So pass a new closure
        (or none) when the objective changes between steps, e.g. with mini-batches. Parameter changes are detected
        through the tensors' version counters, which in-place operations on the parameters increment; changes made
        through ``p.data`` are not seen.

        Returns:
            the value returned by the first closure call of this step (None without a closure).
        """
        self._closure_return = None
        self._closure_returned = False
        self._sync_group_settings()

        params = self._trainable_params()
        var = Var(params=params, closure=None if closure is None else _EvalCounterClosure(self, closure),
                  model=self.model, current_step=self.current_step, modular=self, loss=loss, storage=kwargs)

        if closure is None:
            # assume backward has been called, gather grads
            var.grad = _grads_or_zeros(params)
            self.num_evaluations += 1
        elif loss is None:
            self._seed_from_previous_result(var, closure)
        self._result_cache = None

        modules = self.modules
        n_modules = len(modules)
        last_module = modules[-1]
        last_lr = last_module.defaults.get("lr", None)

        for i, module in enumerate(modules):
            if i != 0:
                var = var.clone(clone_update=False)

            # last module, or next to last module before lr
            if (i == n_modules - 1) or ((i == n_modules - 2) and (last_lr is not None)):
                if module.children:
                    var.nested_is_last = True
                else:
                    var.is_last = True
                if last_lr is not None:
                    var.last_module_lrs = last_module.get_settings(params, "lr")

            var = module.step(var)
            if var.stop:
                break

        if not var.skip_update:
            update = var.get_update()
            with torch.no_grad():
                torch._foreach_sub_(params, update)
        elif var.result_loss is not None and closure is not None:
            try:  # a weak reference: the cache must not keep a closure (and the batch it captured) alive
                closure_ref = weakref.WeakMethod(closure) if inspect.ismethod(closure) else weakref.ref(closure)
            except TypeError:
                closure_ref = None
            if closure_ref is not None:
                self._result_cache = (closure_ref, params, tuple(p._version for p in params), var.result_loss,
                                      var.result_grad)

        if var.attrs:
            self.attrs.update(var.attrs)
        if var.should_terminate is not None:
            self.should_terminate = var.should_terminate

        for hook in var.post_step_hooks:
            hook(self, var)

        self.current_step += 1
        return self._closure_return

    def _seed_from_previous_result(self, var: Var, closure: Callable) -> None:
        """Reuses the loss/gradient that the previous step evaluated at the parameters it left (see
        ``Var.set_result_evaluation``), if this step has the same closure object and the parameters are unchanged.
        """
        cache = self._result_cache
        if cache is None:
            return
        closure_ref, cached_params, versions, loss, grad = cache
        cached_closure = closure_ref()
        if cached_closure is None or cached_closure != closure or cached_params is not var.params:
            return
        if tuple(p._version for p in var.params) != versions:
            return
        var.loss = var.loss_approx = loss
        if grad is not None:
            var.grad = grad
        self._closure_return = loss
        self._closure_returned = True

    def __repr__(self) -> str:
        return f"Modular({', '.join(str(m) for m in self.modules)})"

