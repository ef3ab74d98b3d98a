"""``ProjectionBase``: child modules optimise a projected view of the parameters (catalog section 1.8)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch

from ...core import Chainable, Module, Var
from ...core.module import unroll_modules
from ...core.var import _grads_or_zeros
from ...utils.checks import check_bool

Current = Literal["params", "grads", "update"]
"""What is being (un)projected: the parameters, the gradients, or the update."""

_CHILD_KEY = "projected_{}"
"""Key of the ``i``-th projected parameter in a projection's state dict (children's state)."""


class _RealParams:
    """Moves the real parameters to other values by re-pointing their storage (``set_``, no copy), and puts their
    own storage back."""

    def __init__(self, params: list[torch.Tensor]):
        self.params = params
        self.originals: list[torch.Tensor] | None = None

    def move_to(self, values: list[torch.Tensor]) -> None:
        with torch.no_grad():
            if self.originals is None:
                self.originals = [p.detach() for p in self.params]
            for p, v in zip(self.params, values):
                if p is not v:
                    p.set_(v)  # type: ignore[call-overload]

    def restore(self) -> None:
        if self.originals is None:
            return
        with torch.no_grad():
            for p, o in zip(self.params, self.originals):
                p.set_(o)  # type: ignore[call-overload]
        self.originals = None


class ProjectionBase(Module, ABC):
    """Base class of projections: the child modules see a different set of "parameters" (a projected view of the
    real ones), and their update is mapped back to the real parameters.

    Subclasses implement ``project(tensors, params, grads, loss, states, settings, current)`` and
    ``unproject(projected_tensors, params, grads, loss, states, settings, current)``. ``current`` is
    ``'params'``, ``'grads'`` or ``'update'``; ``params`` are always the real parameters, ``states`` are
    per-real-parameter dicts kept separately for each ``current``, and ``settings`` the per-real-parameter
    settings of the projection.

    One step:

    - The child gets a clone of ``var`` with ``parent=var``: a loss or gradient it computes at the current point
      also fills ``var.loss``/``var.grad`` of the real parameters, and a loss/gradient already known at the
      current point is reused by the child's closure instead of evaluating the objective again.
    - With ``project_params=True`` the child's parameters are the projected parameters. Its closure unprojects
      them into the real parameters (``set_``, no copy), evaluates the real closure and, with ``backward=True``,
      projects the gradients into the ``.grad`` of the projected parameters. As long as the child has not
      modified its parameters (tracked by their version counters), the closure evaluates the real parameters as
      they are, so the loss and gradient at the current point are exact also for lossy projections (a cast to a
      lower precision, FFT round trips). The incoming update is projected if there is one (and
      ``project_update``); otherwise, with a closure, the child forms its update from its projected gradient,
      which is then unprojected as ``'grads'``.
    - With ``project_params=False`` the incoming update (the gradient when there is none yet, or with
      ``project_update=False``) is projected right away, and the child's parameters are placeholders sharing the
      storage of that projected update: their *values* are not meaningful, so modules that read parameter values
      need ``project_params=True``. The child's closure may be evaluated only once (at the current point); a
      second call raises, because moving the placeholders cannot move the real parameters.
    - ``project_grad=True`` also projects ``var.grad`` when it is known.
    - After the child returns, its update is unprojected into ``var.update`` and the real parameters are restored
      (their storage is put back, also when the child raises). A child that moved its parameters itself
      (``skip_update``, needs ``project_params=True``) has them unprojected into the real parameters.

    The projected parameter objects persist across steps (re-pointed with ``set_``), so the child's per-parameter
    state survives; it is saved in the state dict under the keys ``'projected_<i>'``. Parameter-group settings
    (including learning-rate schedulers' values) reach the children when all real parameters are in one group,
    or when the projection maps parameters one to one; otherwise the children use their defaults (and
    ``set_param_groups`` overrides). ``get_H`` returns None: a child's curvature is over the projected space.

    Note: the projected parameters are leaves outside the autograd graph of the loss, so children that
    differentiate through them (``hvp_method='autograd'``, dense Hessians) do not work; finite-difference
    curvature and first-order modules do.

    Args:
        modules: the child modules (a module or a sequence of modules).
        project_update: project the incoming update for the child. If False the child always starts from its
            (projected) gradient. Defaults to True.
        project_params: give the child projected parameters and a closure over them. Defaults to False.
        project_grad: also project the known gradient ``var.grad``. Defaults to False.
        defaults: settings of the subclass.

    Example:
        ```python
        class Flip(tz.m.ProjectionBase):  # the child sees every tensor flipped along all dims
            def project(self, tensors, params, grads, loss, states, settings, current):
                return [t.flip(tuple(range(t.ndim))) for t in tensors]

            def unproject(self, projected_tensors, params, grads, loss, states, settings, current):
                return [t.flip(tuple(range(t.ndim))) for t in projected_tensors]

        opt = tz.Modular(model.parameters(), Flip(tz.m.Adam()), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, modules: Chainable, project_update: bool = True, project_params: bool = False,
                 project_grad: bool = False, defaults: dict[str, Any] | None = None):
        name = type(self).__name__
        check_bool(name, "project_update", project_update)
        check_bool(name, "project_params", project_params)
        check_bool(name, "project_grad", project_grad)
        super().__init__(defaults)
        self.set_child("modules", modules)
        self._project_update = project_update
        self._project_params = project_params
        self._project_grad = project_grad
        self._projected_params: list[torch.Tensor] | None = None
        self._projected_for: tuple[int, ...] = ()
        self._pending_children: tuple[dict[str, Any], dict[Any, torch.Tensor]] | None = None

    # ------------------------------------------------------------------ to override
    @abstractmethod
    def project(self, tensors: list[torch.Tensor], params: list[torch.Tensor], grads: list[torch.Tensor] | None,
                loss: torch.Tensor | float | None, states: list[dict[str, Any]],
                settings: Sequence[Mapping[str, Any]], current: Current) -> Iterable[torch.Tensor]:
        """Projects ``tensors`` (one per real parameter) and returns the projected tensors."""

    @abstractmethod
    def unproject(self, projected_tensors: list[torch.Tensor], params: list[torch.Tensor],
                  grads: list[torch.Tensor] | None, loss: torch.Tensor | float | None, states: list[dict[str, Any]],
                  settings: Sequence[Mapping[str, Any]], current: Current) -> Iterable[torch.Tensor]:
        """Maps projected tensors back to one tensor per real parameter (shape, dtype and device of the
        parameter)."""

    # ------------------------------------------------------------------ helpers
    def _states(self, params: list[torch.Tensor], current: Current) -> list[dict[str, Any]]:
        state = self.state
        return [s[current] if current in s else s.setdefault(current, {}) for s in (state[p] for p in params)]

    def _set_projected_params(self, params: list[torch.Tensor], new: list[torch.Tensor]) -> list[torch.Tensor]:
        """Re-points the persistent projected parameters to ``new`` (creating them on the first step or when the
        projected structure changed) and returns them."""
        pp = self._projected_params
        ids = tuple(map(id, params))
        if (pp is None or self._projected_for != ids or len(pp) != len(new)
                or any(q.dtype != t.dtype or q.device != t.device for q, t in zip(pp, new))):
            pp = [torch.empty(0, dtype=t.dtype, device=t.device) for t in new]
            self._projected_params, self._projected_for = pp, ids
            self._share_group_settings(params, pp)
        with torch.no_grad():
            for q, t in zip(pp, new):
                q.set_(t)  # type: ignore[call-overload]
                q.grad = None
        if self._pending_children is not None:
            self._load_pending_children(pp)
        return pp

    def _share_group_settings(self, params: list[torch.Tensor], pp: list[torch.Tensor]) -> None:
        """Gives the projected parameters the parameter-group settings of the real ones (see class docs)."""
        groups = [self.settings[p].maps[1] for p in params]
        if all(g is groups[0] for g in groups):
            sources = [groups[0]] * len(pp)
        elif len(groups) == len(pp):
            sources = groups
        else:
            return
        for m in unroll_modules(self.children["modules"]):
            for q, g in zip(pp, sources):
                m.settings[q].maps[1] = g

    def _project_source(self, var: Var, project: Callable) -> tuple[list[torch.Tensor], Current]:
        """The projected incoming update (the gradient if there is none yet, or with ``project_update=False``)."""
        if self._project_update:
            return project(var.get_update(), "update"), "update"
        return project([g.clone() for g in var.get_grad()], "grads"), "grads"

    def _child_closure(self, var: Var, closure: Callable, pp: list[torch.Tensor], project: Callable,
                       unproject: Callable, real: _RealParams) -> Callable[..., Any]:
        """The closure of the child (see the class docs)."""
        name = type(self).__name__
        params = var.params
        track = self._project_params
        versions = [q._version for q in pp]
        evaluated = False

        def child_closure(backward: bool = True) -> Any:
            nonlocal evaluated
            at_current_point = True
            if track:
                if any(q._version != v for q, v in zip(pp, versions)):
                    # the child moved its parameters: evaluate at their unprojection
                    real.move_to(unproject(pp, "params"))
                    at_current_point = False
                else:
                    # untouched: evaluate the real parameters themselves (exact also for lossy projections)
                    real.restore()
            else:
                if evaluated:
                    raise RuntimeError(
                        f"{name} was created with project_params=False, so the closure of its children can be "
                        "evaluated only once per step, at the current point; a child evaluated it again (e.g. a "
                        f"line search). Create {name}(..., project_params=True) for such children.")
                evaluated = True

            if at_current_point and var.loss is not None and (not backward or var.grad is not None):
                # the current point was evaluated already: reuse it instead of evaluating the objective again
                loss, grads = var.loss, var.grad
            elif not backward:
                return closure(False)
            else:
                with torch.enable_grad():
                    loss = closure()
                grads = _grads_or_zeros(params)
            if backward:
                assert grads is not None
                for q, g in zip(pp, project(grads, "grads")):
                    q.grad = g
            return loss

        return child_closure

    # ------------------------------------------------------------------ step
    def step(self, var: Var) -> Var:
        name = type(self).__name__
        params = var.params
        settings = [self.settings[p] for p in params]

        def project(tensors: list[torch.Tensor], current: Current) -> list[torch.Tensor]:
            with torch.no_grad():
                return list(self.project(list(tensors), params, var.grad, var.loss, self._states(params, current),
                                         settings, current))

        def unproject(tensors: list[torch.Tensor], current: Current) -> list[torch.Tensor]:
            with torch.no_grad():
                out = list(self.unproject(list(tensors), params, var.grad, var.loss,
                                          self._states(params, current), settings, current))
            if len(out) != len(params):
                raise RuntimeError(f"{name}.unproject returned {len(out)} tensors for {len(params)} parameters")
            return out

        closure = var.closure
        child_var = var.clone(clone_update=False, parent=var)
        child_var.update = None
        child_var.grad = None
        real = _RealParams(params)

        update_current: Current
        if self._project_params:
            pp = self._set_projected_params(params, project(params, "params"))
            if self._project_update and var.update is not None:
                child_var.update, update_current = project(var.update, "update"), "update"
            elif closure is None:
                child_var.update, update_current = self._project_source(var, project)
            else:
                update_current = "grads"  # the child forms its update from its projected gradient
        else:
            child_var.update, update_current = self._project_source(var, project)
            pp = self._set_projected_params(params, child_var.update)

        child_var.params = pp
        child_var.closure = None if closure is None else self._child_closure(var, closure, pp, project, unproject,
                                                                              real)
        if self._project_grad and var.grad is not None:
            child_var.grad = project(var.grad, "grads")
        elif var.grad is not None and child_var.closure is not None:
            # the child gets its gradient from its closure, which answers from the known loss and gradient; a
            # known loss without gradient would make the child's Var expect (and warn about) a second evaluation
            child_var.loss = None

        try:
            child_var = self.children["modules"].step(child_var)
            if child_var.skip_update:
                # the child moved its parameters itself; placeholders are not parameters
                if not self._project_params:
                    raise RuntimeError(f"a child of {name} updated its parameters directly, which needs "
                                       f"{name}(..., project_params=True)")
                new_params = unproject(pp, "params")
                real.restore()
                with torch.no_grad():
                    torch._foreach_copy_(params, new_params)
                var.update = None
                var.skip_update = True
                var.stop = True
            else:
                var.update = unproject(child_var.get_update(), update_current)
        finally:
            real.restore()

        if var.loss_approx is None:
            var.loss_approx = child_var.loss_approx
        if child_var.should_terminate is not None:
            var.should_terminate = child_var.should_terminate
        return var

    def get_H(self, var: Var) -> None:
        return None

    def reset(self) -> None:
        super().reset()
        self._pending_children = None

    # ------------------------------------------------------------------ state dict
    def _state_dict(self, key_of: Callable[[torch.Tensor], Any]) -> dict[str, Any]:
        sd = super()._state_dict(key_of)
        sd["children"] = {}
        if self._pending_children is not None:
            sd["projected_children"] = self._pending_children[0]
            return sd
        keys = {id(q): _CHILD_KEY.format(i) for i, q in enumerate(self._projected_params or [])}

        def child_key_of(p: torch.Tensor) -> Any:
            k = keys.get(id(p))
            return k if k is not None else key_of(p)

        sd["projected_children"] = {k: c._state_dict(child_key_of) for k, c in self.children.items()}
        return sd

    def _load_state_dict(self, state_dict: dict[str, Any], id_to_tensor: Mapping[Any, torch.Tensor]) -> None:
        own = dict(state_dict)
        children = own.pop("projected_children", {})
        own["children"] = {}
        super()._load_state_dict(own, id_to_tensor)
        # the children's state is keyed by projected parameters, which exist from the next step on
        self._pending_children = (children, dict(id_to_tensor))

    def _load_pending_children(self, pp: list[torch.Tensor]) -> None:
        assert self._pending_children is not None
        children, id_to_tensor = self._pending_children
        self._pending_children = None
        mapping = {**id_to_tensor, **{_CHILD_KEY.format(i): q for i, q in enumerate(pp)}}
        for k, sd in children.items():
            if k in self.children:
                self.children[k]._load_state_dict(sd, mapping)
