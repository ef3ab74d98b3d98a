"""``Var``: what flows through a chain of modules during one optimizer step."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .modular import Modular


def _grads_or_zeros(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """``p.grad`` of each parameter, with zeros for parameters that got no gradient. Sparse gradients are rejected."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if any(g.is_sparse for g in grads):
        raise RuntimeError("torchzero modules don't support sparse gradients; use dense gradients "
                           "(e.g. nn.Embedding(sparse=False))")
    return grads


def _closure_backward(closure: Callable, params: list[torch.Tensor], retain_graph: bool | None,
                      create_graph: bool) -> Any:
    """Evaluates ``closure`` with a backward pass and returns the loss.

    The plain ``closure()`` performs the backward itself. When the graph must be retained or created (for
    Hessian-vector products), the closure is evaluated with ``backward=False`` and the gradients are computed
    here with ``torch.autograd.grad`` and written into ``p.grad``.
    """
    if not (retain_graph or create_graph):
        return closure()

    for p in params:
        p.grad = None
    loss = closure(False)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError(f"the closure must return a scalar loss tensor to differentiate, got "
                         f"{type(loss).__name__}{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}")
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, create_graph=create_graph,
                                allow_unused=True)
    for p, g in zip(params, grads):
        p.grad = g
    return loss


class Var:
    """Holds parameters, gradient, update, objective function (closure) if supplied, loss, and some other info.

    Modules take in a ``Var`` object, modify it and it is passed to the next module. Loss and gradient are
    computed lazily, on the first request, and at most once: ``get_loss``, ``get_grad`` and ``get_update``
    evaluate the closure only when the value is not known yet.

    Args:
        params: all parameters with ``requires_grad=True``.
        closure: ``closure(backward=True)`` that re-evaluates the objective, or None.
        model: the ``nn.Module`` being optimized, if one was passed to ``Modular``.
        current_step: global step counter of the optimizer, starts at 0.
        parent: the ``Var`` this one is a view of (projections), see the ``parent`` attribute.
        modular: the ``Modular`` optimizer that created this ``Var``.
        loss: loss at the current parameters, if already known.
        storage: extra keyword arguments passed to ``Modular.step``.
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        closure: Callable | None,
        model: torch.nn.Module | None,
        current_step: int,
        parent: Var | None = None,
        modular: Modular | None = None,
        loss: torch.Tensor | None = None,
        storage: dict | None = None,
    ):
        self.params: list[torch.Tensor] = params
        """List of all parameters with ``requires_grad = True``."""

        self.closure = closure
        """A closure that reevaluates the model and returns the loss, None if it wasn't specified."""

        self.model = model
        """``torch.nn.Module`` object of the model, None if it wasn't specified."""

        self.current_step: int = current_step
        """Global current step, starts at 0. This may not correspond to a module's own step counter."""

        self.parent: Var | None = parent
        """Parent ``Var``. When ``self.get_grad()`` is called, it also sets ``parent.grad``; same with
        ``self.get_loss()``. Used when ``self.params`` are a view of ``parent.params`` (projections)."""

        self.modular: Modular = modular  # type: ignore[assignment]
        """``Modular`` optimizer object that created this ``Var``."""

        self.update: list[torch.Tensor] | None = None
        """Current update. It is assumed to be a transformed gradient, therefore it is subtracted from the
        parameters at the end of the step. If None, ``get_update`` initialises it to a clone of the gradient."""

        self.grad: list[torch.Tensor] | None = None
        """Gradient at the current parameters, computed lazily from the closure when needed."""

        self.loss: torch.Tensor | Any | None = loss
        """Loss at the current parameters."""

        self.loss_approx: torch.Tensor | Any | None = loss
        """Loss at a point near the current point. Some modules only evaluate the loss at perturbed points,
        whereas others require it strictly at the current point."""

        self.post_step_hooks: list[Callable[[Modular, Var], None]] = []
        """Functions ``hook(optimizer, var)`` called after the optimizer step. Modify this list in place."""

        self.is_last: bool = False
        """True for the module (without children) that is last, or next-to-last before a learning rate module.
        Never set for children."""

        self.nested_is_last: bool = False
        """Like ``is_last``, for a module that has children. Passed to children unless ``var.clone()`` is used."""

        self.last_module_lrs: list[float] | None = None
        """Per-parameter learning rates of the last module if the current module is next-to-last before a
        learning rate module, otherwise None. Only for modules that apply the update to parameters themselves."""

        self.stop: bool = False
        """If True, all following modules are skipped. For a child, only modules of the same chain are skipped."""

        self.skip_update: bool = False
        """If True, the parameters are not updated by the optimizer at the end of the step."""

        self.attrs: dict = {}
        """Attributes, ``Modular.attrs`` is updated with this after each step. Modify in place."""

        if storage is None:
            storage = {}
        self.storage: dict = storage
        """Additional keyword arguments passed to ``Modular.step``. Modify in place."""

        self.should_terminate: bool | None = None
        """Termination flag; ``Modular.should_terminate`` is set to this after each step if not None."""

        self.result_loss: torch.Tensor | Any | None = None
        """Loss at the parameters this step leaves, if a module evaluated it there (e.g. a line search that
        accepted a trial point). Set it together with ``result_grad`` via ``set_result_evaluation``."""

        self.result_grad: list[torch.Tensor] | None = None
        """Gradient at the parameters this step leaves, see ``result_loss``."""

    # ------------------------------------------------------------------ lazy evaluation
    def _require_closure(self, what: str) -> Callable:
        if self.closure is None:
            raise RuntimeError(f"{what} needs to evaluate the objective, but no closure was passed to "
                               "`step`. Call `opt.step(closure)` with `closure(backward=True)`.")
        return self.closure

    def _evaluate(self, backward: bool, retain_graph: bool | None, create_graph: bool) -> None:
        closure = self._require_closure("Var.get_loss")
        if backward:
            with torch.enable_grad():
                self.loss = self.loss_approx = _closure_backward(closure, self.params, retain_graph, create_graph)
            self.grad = _grads_or_zeros(self.params)
        else:
            self.loss = self.loss_approx = closure(False)

    def get_loss(self, backward: bool, retain_graph: bool | None = None, create_graph: bool = False
                 ) -> torch.Tensor | float:
        """Returns the loss at current parameters, computing it if it hasn't been computed already and
        assigning ``var.loss``. With ``backward=True`` the gradient is computed too and assigned to ``var.grad``
        (zeros for parameters that got none). Do not call this at perturbed parameters."""
        evaluated_plain_backward = False
        if self.loss is None:
            self._evaluate(backward, retain_graph, create_graph)
            evaluated_plain_backward = backward and not (retain_graph or create_graph)

        elif backward and self.grad is None:
            # the loss is known, but was evaluated without backward; one more evaluation is unavoidable
            warnings.warn("get_loss was called with backward=False, and then with backward=True, so the closure "
                          "was evaluated twice where it could have been evaluated once.", stacklevel=2)
            self._evaluate(True, retain_graph, create_graph)
            evaluated_plain_backward = not (retain_graph or create_graph)

        if self.parent is not None:
            # a projection's closure evaluates the real closure, which sets the real parameters' grads
            parent = self.parent
            if parent.loss is None:
                parent.loss = self.loss
            if parent.loss_approx is None:
                parent.loss_approx = self.loss
            # only a plain `closure()` call sets .grad of all the real parameters; with retain/create_graph the
            # gradient is computed for this Var's parameters only
            if evaluated_plain_backward and parent.grad is None:
                if all(p.grad is None for p in parent.params):
                    warnings.warn("Parent grad is None after backward.", stacklevel=2)
                parent.grad = _grads_or_zeros(parent.params)

        return self.loss  # type: ignore[return-value]

    def get_grad(self, retain_graph: bool | None = None, create_graph: bool = False) -> list[torch.Tensor]:
        """Returns the gradient at the current parameters, computing it if it hasn't been computed already and
        assigning ``var.grad`` and ``var.loss``. Do not call this at perturbed parameters."""
        if self.grad is None:
            self._require_closure("Var.get_grad")
            self.get_loss(backward=True, retain_graph=retain_graph, create_graph=create_graph)
        assert self.grad is not None
        return self.grad

    def get_update(self) -> list[torch.Tensor]:
        """Returns the update. If it is None, it is initialised to a clone of the gradient and assigned to
        ``var.update``; computing the gradient may assign ``var.grad`` and ``var.loss``.
        Do not call this at perturbed parameters."""
        if self.update is None:
            self.update = [g.clone() for g in self.get_grad()]
        return self.update

    def _update_or_grad(self) -> list[torch.Tensor]:
        """The update if set, else the gradient itself (not cloned). Only for code that does not modify it."""
        if self.update is not None:
            return self.update
        return self.get_grad()

    # ------------------------------------------------------------------ cloning
    def clone(self, clone_update: bool, parent: Var | None = None) -> Var:
        """Creates a shallow copy of this ``Var``; the update can optionally be deep-copied (via ``torch.clone``).

        ``is_last``, ``nested_is_last`` and ``last_module_lrs`` are not copied (they are False/None in the copy).
        ``post_step_hooks``, ``attrs`` and ``storage`` are shared with the copy.

        Set ``parent`` only if the clone's parameters are something different (a view), while its closure
        refers to the same objective.
        """
        copy = Var(params=self.params, closure=self.closure, model=self.model, current_step=self.current_step,
                   parent=parent, modular=self.modular, storage=self.storage)

        if clone_update and self.update is not None:
            copy.update = [u.clone() for u in self.update]
        else:
            copy.update = self.update

        copy.grad = self.grad
        copy.loss = self.loss
        copy.loss_approx = self.loss_approx
        copy.post_step_hooks = self.post_step_hooks
        copy.stop = self.stop
        copy.skip_update = self.skip_update
        copy.attrs = self.attrs
        copy.should_terminate = self.should_terminate
        return copy

    def update_attrs_from_clone_(self, var: Var) -> None:
        """Updates attributes of this ``Var`` from a clone that a child module has processed: a loss or
        gradient computed by the child is taken if this ``Var`` didn't have it, and ``should_terminate``
        is propagated. ``post_step_hooks`` and ``attrs`` are shared, so in-place changes propagate by
        themselves."""
        if self.loss is None:
            self.loss = var.loss
        if self.loss_approx is None:
            self.loss_approx = var.loss_approx
        if self.grad is None:
            self.grad = var.grad
        if var.should_terminate is not None:
            self.should_terminate = var.should_terminate

    def set_result_evaluation(self, loss: Any, grad: list[torch.Tensor] | None) -> None:
        """Records the loss (and gradient, if known) evaluated at exactly the parameter values this step leaves.

        ``Modular`` then seeds the next step with them instead of evaluating the closure again, provided the next
        step is called with the same closure object and the parameters were not modified in between. The values
        are copied, so later in-place changes of ``p.grad`` don't affect them.
        """
        self.result_loss = loss.detach().clone() if isinstance(loss, torch.Tensor) else loss
        self.result_grad = None if grad is None else [g.detach().clone() for g in grad]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears ``p.grad`` of all parameters (sets to None, or fills with zeros)."""
        if set_to_none:
            for p in self.params:
                p.grad = None
        else:
            grads = [p.grad for p in self.params if p.grad is not None]
            if len(grads) != 0:
                torch._foreach_zero_(grads)

    def __repr__(self) -> str:
        known = [name for name in ("loss", "grad", "update") if getattr(self, name) is not None]
        return f"Var(n_params={len(self.params)}, step={self.current_step}, known={known})"
