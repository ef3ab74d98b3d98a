"""``Transform``: a module that maps a list of tensors (update, gradient, parameters...) to a new list."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias, final, get_args, overload

import torch

from ..utils.torch_tools import vec_to_tensors
from .module import Chain, Chainable, ListLike, Module
from .var import Var, _grads_or_zeros

Target: TypeAlias = Literal["grad", "update", "closure", "params_direct", "params_difference", "update_difference"]
"""What a ``Transform`` transforms and where the result goes:

- ``'update'``: transforms ``var.get_update()``, the result becomes ``var.update``;
- ``'grad'``: transforms ``var.get_grad()``, the result replaces ``var.grad``;
- ``'closure'``: wraps the closure so that every gradient computed with ``backward=True`` is transformed before
  being written into ``p.grad``;
- ``'params_direct'``: transforms the parameter values and writes the result into the parameters in place;
- ``'params_difference'``: transforms a copy of the parameters ``x``, ``var.update = x - T(x)``;
- ``'update_difference'``: transforms a copy of the update ``u``, ``var.update = u - T(u)``.
"""
_TARGETS = get_args(Target)


class _KeyedSettings(Sequence):
    """Per-parameter settings of a module for ``params``, resolved lazily.

    ``Transform.unpack_settings`` recognises it and reads the module's cached settings instead of looking each
    key up in each parameter's ``ChainMap``.
    """

    __slots__ = ("module", "params", "_items")

    def __init__(self, module: Module, params: list[torch.Tensor]):
        self.module = module
        self.params = params
        self._items: list[Mapping[str, Any]] | None = None

    def _materialize(self) -> list[Mapping[str, Any]]:
        if self._items is None:
            settings = self.module.settings
            self._items = [settings[p] for p in self.params]
        return self._items

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, int) and self._items is None:
            return self.module.settings[self.params[i]]
        return self._materialize()[i]

    def __len__(self) -> int:
        return len(self.params)

    def __iter__(self):  # type: ignore[override]
        return iter(self._materialize())


def _cat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.ravel() for t in tensors])


def _cat_all(tensors: Sequence[torch.Tensor], params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor] | None
             ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor] | None]:
    """Tensors, parameters and gradients each concatenated into one vector (``concat_params``)."""
    return [_cat(tensors)], [_cat(params)], (None if grads is None else [_cat(grads)])


class Transform(Module, ABC):
    """Base class for a transform: a module that can also be applied manually to an arbitrary sequence of tensors.

    Subclasses override ``apply_tensors`` and optionally ``update_tensors``:

    - ``update_tensors`` updates the internal state of this transform; it doesn't modify ``tensors``. It may be
      called several times before ``apply_tensors``, and only every ``update_freq``-th call does anything.
    - ``apply_tensors`` applies this transform to ``tensors`` and returns the result, without modifying the
      internal state if possible. It may modify ``tensors`` in place, unless the class sets
      ``_readonly_input = True`` to declare that it never does (then the gradient is passed without a copy).

    If the update/apply split doesn't make sense for a transform, all logic can be in ``apply_tensors``.

    A transform can be applied to tensors of custom parameters with ``keyed_transform_update`` and
    ``keyed_transform_apply`` (parameters are keys of per-parameter state, so they must remain the same Python
    objects), or with explicit lists of state dicts via ``transform_update`` and ``transform_apply``.

    Args:
        defaults: dict with default values of settings.
        uses_grad: set to True if ``update_tensors``/``apply_tensors`` use the ``grads`` argument; this ensures the
            gradient is computed and is never None.
        uses_loss: set to True if they use the ``loss`` argument; this ensures the loss is evaluated.
        concat_params: if True, all tensors are concatenated into one vector before being passed to
            ``update_tensors``/``apply_tensors`` (state is then keyed by the first parameter).
        update_freq: ``update_tensors`` runs on every ``update_freq``-th call.
        inner: modules applied to the tensors before ``apply_tensors`` (statistics in ``update_tensors`` are
            still computed from the incoming tensors). Stepped with the enclosing ``Var``'s closure and loss.
        target: what to transform, see ``Target``. Defaults to ``'update'``.
    """

    _readonly_input: bool = False
    """Set to True in subclasses whose ``apply_tensors`` never modifies ``tensors`` in place."""

    def __init__(
        self,
        defaults: dict[str, Any] | None,
        uses_grad: bool = False,
        uses_loss: bool = False,
        concat_params: bool = False,
        update_freq: int = 1,
        inner: Chainable | None = None,
        target: Target = "update",
    ):
        if target not in _TARGETS:
            raise ValueError(f"{self.__class__.__name__}: invalid target {target!r}, expected one of {_TARGETS}")
        if not isinstance(update_freq, int) or update_freq < 1:
            raise ValueError(f"{self.__class__.__name__}: update_freq must be a positive integer, got {update_freq!r}")
        super().__init__(defaults)
        self._target: Target = target
        self._uses_grad = uses_grad
        self._uses_loss = uses_loss
        self._concat_params = concat_params
        self._update_freq = update_freq
        self._var: Var | None = None
        if inner is not None:
            self.set_child("inner", inner)

    @property
    def _inner(self) -> Module | None:
        return self.children.get("inner")

    # ------------------------------------------------------------------ to override
    def update_tensors(
        self,
        tensors: list[torch.Tensor],
        params: list[torch.Tensor],
        grads: list[torch.Tensor] | None,
        loss: torch.Tensor | float | None,
        states: list[dict[str, Any]],
        settings: Sequence[Mapping[str, Any]],
    ) -> None:
        """Update function, this shouldn't be called directly. Updates the state of this module."""

    @abstractmethod
    def apply_tensors(
        self,
        tensors: list[torch.Tensor],
        params: list[torch.Tensor],
        grads: list[torch.Tensor] | None,
        loss: torch.Tensor | float | None,
        states: list[dict[str, Any]],
        settings: Sequence[Mapping[str, Any]],
    ) -> Sequence[torch.Tensor]:
        """Apply function, this shouldn't be called directly. Applies the update rule to ``tensors`` and returns
        the result. If possible, this shouldn't modify the internal state of this transform."""

    def pre_step(self, var: Var) -> None:
        """Logic to run before the transform, with access to ``Var``."""

    def post_step(self, var: Var) -> None:
        """Logic to run after the transform, with access to ``Var``."""

    # ------------------------------------------------------------------ helpers for subclasses
    @overload
    def unpack_settings(self, settings: Sequence[Mapping[str, Any]], key: str, *,
                        cls: type[ListLike] = list) -> ListLike: ...  # type: ignore[assignment]
    @overload
    def unpack_settings(self, settings: Sequence[Mapping[str, Any]], key: str, key2: str, *keys: str,
                        cls: type[ListLike] = list) -> list[ListLike]: ...  # type: ignore[assignment]
    def unpack_settings(self, settings: Sequence[Mapping[str, Any]], key: str, key2: str | None = None,
                        *keys: str, cls: type[ListLike] = list) -> ListLike | list[ListLike]:  # type: ignore[assignment]
        """Per-tensor values of settings from the ``settings`` argument of ``update_tensors``/``apply_tensors``:
        one ``cls`` for a single key, a list of ``cls`` for several. Uses the module's settings cache when the
        settings are this module's own."""
        if isinstance(settings, _KeyedSettings) and settings.module is self:
            if key2 is None:
                return self.get_settings(settings.params, key, cls=cls)
            return self.get_settings(settings.params, key, key2, *keys, cls=cls)
        if key2 is None:
            return cls([s[key] for s in settings])
        return [cls([s[k] for s in settings]) for k in (key, key2, *keys)]

    # ------------------------------------------------------------------ manual application
    def _normalize_lists(self, tensors: list[torch.Tensor], states: list[dict[str, Any]],
                         settings: Sequence[Mapping[str, Any]] | None) -> tuple[list, Sequence]:
        if settings is None:
            settings = [self.defaults for _ in tensors]
        num = len(tensors)
        if len(states) != num:
            states = states[:num]
        if len(settings) != num:
            settings = list(settings)[:num]
        return states, settings

    @final
    @torch.no_grad()
    def transform_update(
        self,
        tensors: list[torch.Tensor],
        params: list[torch.Tensor],
        grads: list[torch.Tensor] | None,
        loss: torch.Tensor | float | None,
        states: list[dict[str, Any]],
        settings: Sequence[Mapping[str, Any]] | None,
    ) -> None:
        """Updates this transform from an arbitrary sequence of tensors (every ``update_freq``-th call)."""
        if self._concat_params:
            tensors, params, grads = _cat_all(tensors, params, grads)
        states, settings = self._normalize_lists(tensors, states, settings)

        step = self.global_state.get("__step", 0)
        self.global_state["__step"] = step + 1
        if step % self._update_freq == 0:
            self.update_tensors(tensors=tensors, params=params, grads=grads, loss=loss, states=states,
                                settings=settings)

    @final
    @torch.no_grad()
    def transform_apply(
        self,
        tensors: list[torch.Tensor],
        params: list[torch.Tensor],
        grads: list[torch.Tensor] | None,
        loss: torch.Tensor | float | None,
        states: list[dict[str, Any]],
        settings: Sequence[Mapping[str, Any]] | None,
    ) -> list[torch.Tensor]:
        """Applies this transform to an arbitrary sequence of tensors (after ``transform_update``)."""
        reference = tensors
        inner = self._inner
        if inner is not None:
            tensors = apply_transform(inner, tensors=tensors, params=params, grads=grads, loss=loss, var=self._var)

        if self._concat_params:
            tensors, params, grads = _cat_all(tensors, params, grads)
        states, settings = self._normalize_lists(tensors, states, settings)

        out = list(self.apply_tensors(tensors=tensors, params=params, grads=grads, loss=loss, states=states,
                                      settings=settings))
        if self._concat_params:
            out = list(vec_to_tensors(vec=out[0], reference=reference))
        return out

    def _get_keyed_states_settings(self, params: list[torch.Tensor]) -> tuple[list[dict[str, Any]], _KeyedSettings]:
        if self._concat_params:
            params = params[:1]
        state = self.state
        return [state[p] for p in params], _KeyedSettings(self, params)

    @final
    @torch.no_grad()
    def keyed_transform_update(
        self,
        tensors: list[torch.Tensor],
        params: list[torch.Tensor],
        grads: list[torch.Tensor] | None,
        loss: torch.Tensor | float | None,
    ) -> None:
        """``params`` are used as keys of per-parameter state and need to always be the same tensor objects."""
        states, settings = self._get_keyed_states_settings(params)
        self.transform_update(tensors=tensors, params=params, grads=grads, loss=loss, states=states,
                              settings=settings)

    @final
    @torch.no_grad()
    def keyed_transform_apply(
        self,
        tensors: list[torch.Tensor],
        params: list[torch.Tensor],
        grads: list[torch.Tensor] | None,
        loss: torch.Tensor | float | None,
    ) -> list[torch.Tensor]:
        """``params`` are used as keys of per-parameter state and need to always be the same tensor objects."""
        states, settings = self._get_keyed_states_settings(params)
        return self.transform_apply(tensors=tensors, params=params, grads=grads, loss=loss, states=states,
                                    settings=settings)

    # ------------------------------------------------------------------ module interface
    def _input_update(self, var: Var) -> list[torch.Tensor]:
        # the gradient itself can be passed when this transform doesn't modify its input
        if self._readonly_input and self._inner is None:
            return var._update_or_grad()
        return var.get_update()

    def _prepare(self, var: Var) -> None:
        if self._uses_grad or self._target == "grad":
            var.get_grad()
        if self._uses_loss:
            if var.loss is None:
                self._require_closure(var)
            var.get_loss(False)

    def update(self, var: Var) -> None:
        if self._target != "update":
            raise ValueError(f"{self.__class__.__name__}: target must be 'update' to use `update` and `apply` "
                             f"methods. With target={self._target!r} only `step` method can be used.")
        update = self._input_update(var)
        self._prepare(var)
        self.pre_step(var)
        self._var = var
        try:
            self.keyed_transform_update(update, var.params, var.grad, var.loss)
        finally:
            self._var = None

    def apply(self, var: Var) -> Var:
        if self._target != "update":
            raise ValueError(f"{self.__class__.__name__}: target must be 'update' to use `update` and `apply` "
                             f"methods. With target={self._target!r} only `step` method can be used.")
        update = self._input_update(var)
        self._prepare(var)
        self._var = var
        try:
            var.update = self.keyed_transform_apply(update, var.params, var.grad, var.loss)
        finally:
            self._var = None
        self.post_step(var)
        return var

    def step(self, var: Var) -> Var:
        target = self._target
        if target == "update":
            update = self._input_update(var)
        elif target == "update_difference":
            update = var.get_update()
        self._prepare(var)
        params = var.params
        self.pre_step(var)
        self._var = var
        try:
            if target == "update":
                self.keyed_transform_update(update, params, var.grad, var.loss)
                var.update = self.keyed_transform_apply(update, params, var.grad, var.loss)

            elif target == "grad":
                grad = var.get_grad()
                # var.grad may be the user's p.grad tensors: don't let the transform modify them
                grad_in = grad if self._readonly_input and self._inner is None else [g.clone() for g in grad]
                self.keyed_transform_update(grad_in, params, grad, var.loss)
                var.grad = self.keyed_transform_apply(grad_in, params, grad, var.loss)

            elif target == "params_direct":
                p_clone = [p.clone() for p in params]
                self.keyed_transform_update(p_clone, params, var.grad, var.loss)
                new_params = self.keyed_transform_apply(p_clone, params, var.grad, var.loss)
                with torch.no_grad():
                    torch._foreach_copy_(params, new_params)

            elif target == "params_difference":
                p_clone = [p.clone() for p in params]
                self.keyed_transform_update(p_clone, params, var.grad, var.loss)
                new_params = self.keyed_transform_apply(p_clone, params, var.grad, var.loss)
                var.update = list(torch._foreach_sub(params, new_params))

            elif target == "update_difference":
                u_clone = [u.clone() for u in update]
                self.keyed_transform_update(u_clone, params, var.grad, var.loss)
                new_update = self.keyed_transform_apply(u_clone, params, var.grad, var.loss)
                var.update = list(torch._foreach_sub(update, new_update))

            elif target == "closure":
                self._wrap_closure(var)
        finally:
            self._var = None

        self.post_step(var)
        return var

    def _wrap_closure(self, var: Var) -> None:
        original_closure = self._require_closure(var)
        params = var.params
        parent_var = var

        def transformed_closure(backward: bool = True) -> Any:
            if not backward:
                return original_closure(False)
            loss = original_closure()
            current_grad = _grads_or_zeros(params)
            self._var = parent_var
            try:
                self.keyed_transform_update(current_grad, params, parent_var.grad, parent_var.loss)
                transformed_grad = self.keyed_transform_apply(current_grad, params, parent_var.grad,
                                                              parent_var.loss)
            finally:
                self._var = None
            for p, g in zip(params, transformed_grad):
                p.grad = g
            return loss

        var.closure = transformed_closure


class TensorwiseTransform(Transform, ABC):
    """Base class for a parameter-wise transform: subclasses override ``apply_tensor`` and optionally
    ``update_tensor``, which receive one tensor at a time.

    Args:
        defaults: dict with default values.
        uses_grad: set to True if the ``grad`` argument is used; ensures it is computed and not None.
        uses_loss: set to True if the ``loss`` argument is used.
        concat_params: concatenate all tensors into one vector.
        update_freq: ``update_tensor`` runs on every ``update_freq``-th call.
        inner: modules applied to the tensors before ``apply_tensor``.
        target: what to set on var. Defaults to ``'update'``.
    """

    def __init__(
        self,
        defaults: dict[str, Any] | None,
        uses_grad: bool = False,
        uses_loss: bool = False,
        concat_params: bool = False,
        update_freq: int = 1,
        inner: Chainable | None = None,
        target: Target = "update",
    ):
        super().__init__(defaults=defaults, uses_grad=uses_grad, uses_loss=uses_loss, concat_params=concat_params,
                         update_freq=update_freq, inner=inner, target=target)

    def update_tensor(
        self,
        tensor: torch.Tensor,
        param: torch.Tensor,
        grad: torch.Tensor | None,
        loss: torch.Tensor | float | None,
        state: dict[str, Any],
        setting: Mapping[str, Any],
    ) -> None:
        """Updates this transform. By default does nothing - if logic is in ``apply_tensor``."""

    @abstractmethod
    def apply_tensor(
        self,
        tensor: torch.Tensor,
        param: torch.Tensor,
        grad: torch.Tensor | None,
        loss: torch.Tensor | float | None,
        state: dict[str, Any],
        setting: Mapping[str, Any],
    ) -> torch.Tensor:
        """Applies the update rule to ``tensor``."""

    @final
    def update_tensors(self, tensors, params, grads, loss, states, settings) -> None:  # type: ignore[override]
        if grads is None:
            grads = [None] * len(tensors)
        for t, p, g, state, setting in zip(tensors, params, grads, states, settings):
            self.update_tensor(t, p, g, loss, state, setting)

    @final
    def apply_tensors(self, tensors, params, grads, loss, states, settings) -> list[torch.Tensor]:  # type: ignore[override]
        if grads is None:
            grads = [None] * len(tensors)
        return [self.apply_tensor(t, p, g, loss, state, setting)
                for t, p, g, state, setting in zip(tensors, params, grads, states, settings)]


def apply_transform(
    tfm: Chainable,
    tensors: list[torch.Tensor],
    params: list[torch.Tensor],
    grads: list[torch.Tensor] | None,
    loss: torch.Tensor | float | None = None,
    var: Var | None = None,
    update: bool = True,
) -> list[torch.Tensor]:
    """Applies a module or a sequence of modules to ``tensors`` as if they were the update, and returns the result.

    ``Transform``s with ``target='update'`` are applied directly to ``tensors``; other modules are stepped on a
    clone of ``var`` (a new ``Var`` without closure if ``var`` is None) whose update is ``tensors``, and a loss or
    gradient they compute is propagated back to ``var``. With ``update=False`` only ``apply`` is called.
    """
    if var is None:
        var = Var(params=params, closure=None, model=None, current_step=-1)
        var.loss = loss
        if grads is not None:
            var.grad = grads

    if isinstance(tfm, Transform) and tfm._target == "update":
        if tfm._uses_grad and grads is None:
            grads = var.get_grad()
        if tfm._uses_loss and loss is None:
            loss = var.get_loss(False)
        previous = tfm._var
        tfm._var = var
        try:
            if update:
                tfm.keyed_transform_update(tensors, params, grads, loss)
            return list(tfm.keyed_transform_apply(tensors, params, grads, loss))
        finally:
            tfm._var = previous

    if isinstance(tfm, Chain):
        tfm = tfm.get_children_sequence()

    if isinstance(tfm, Sequence) and not isinstance(tfm, (str, bytes)):
        for module in tfm:
            tensors = apply_transform(module, tensors=tensors, params=params, grads=grads, loss=loss, var=var,
                                      update=update)
        return tensors

    if isinstance(tfm, Module):
        cvar = var.clone(clone_update=False)
        cvar.update = tensors
        cvar = tfm.step(cvar) if update else tfm.apply(cvar)
        var.update_attrs_from_clone_(cvar)
        return cvar.get_update()

    raise TypeError(f"apply_transform expects a Module or a sequence of modules, got {type(tfm).__name__}")
