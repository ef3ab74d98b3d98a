"""``Reformulation``: modules that optimise a modified objective."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .module import Chainable, Module
from .var import Var


class Reformulation(Module, ABC):
    """Abstract base for modules that optimise a modified objective with the same parameters.

    Subclasses implement ``closure(backward, closure, params, var) -> (loss, grad | None)``, which evaluates the
    modified objective (it may be called many times per step, at whatever point the parameters are), and
    optionally ``pre_step(var)``, which runs once per step (e.g. to draw perturbations shared by all evaluations
    of the step).

    ``step``: runs ``pre_step``; requires a closure; with ``modules``, steps them on a clone of ``var`` whose
    closure calls the subclass ``closure`` and writes the returned gradient into ``p.grad``, then copies back only
    the children's update (the outer ``Var`` keeps the original loss and gradient); without ``modules``,
    evaluates the reformulated objective once with backward and uses its gradient as the update.

    Args:
        defaults: default values of settings.
        modules: modules that optimise the reformulated objective, or None.
    """

    def __init__(self, defaults: dict | None, modules: Chainable | None):
        super().__init__(defaults)
        if modules is not None:
            self.set_child("modules", modules)

    @abstractmethod
    def closure(self, backward: bool, closure: Callable, params: list[torch.Tensor], var: Var
                ) -> tuple[float | torch.Tensor, Sequence[torch.Tensor] | None]:
        """Evaluates the modified objective; returns ``(loss, gradient)``. With ``backward=False`` the gradient
        can be None. If the original loss/gradient at the current point are evaluated, they may be set on
        ``var``."""

    def pre_step(self, var: Var) -> Var | None:
        """Runs once before each step, whereas ``closure`` may run several times per step."""
        return var

    def step(self, var: Var) -> Var:
        ret = self.pre_step(var)
        if isinstance(ret, Var):
            var = ret

        closure = self._require_closure(var)
        params = var.params

        if "modules" in self.children:
            def modified_closure(backward: bool = True) -> Any:
                loss, grad = self.closure(backward, closure, params, var)
                if grad is not None:
                    for p, g in zip(params, grad):
                        p.grad = g
                return loss

            modified_var = var.clone(clone_update=False)
            modified_var.closure = modified_closure
            # the loss and gradient of the original objective don't apply to the reformulated one
            modified_var.loss = modified_var.loss_approx = None
            modified_var.grad = None
            modified_var.update = None
            modified_var = self.children["modules"].step(modified_var)

            var.update = modified_var.update if modified_var.skip_update else modified_var.get_update()
            var.stop = modified_var.stop
            var.skip_update = modified_var.skip_update
            if modified_var.should_terminate is not None:
                var.should_terminate = modified_var.should_terminate
            return var

        loss, grad = self.closure(True, closure, params, var)
        if grad is None:
            raise RuntimeError(f"{self.__class__.__name__}.closure returned no gradient with backward=True")
        var.update = [g.clone() if isinstance(g, torch.Tensor) else torch.as_tensor(g) for g in grad]
        var.loss_approx = loss
        return var
