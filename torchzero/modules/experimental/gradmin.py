"""``GradMin``: minimise the gradient magnitude (optionally mixed with the loss) by double backpropagation."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch

from ...core import Chainable, Var
from ...core.reformulation import Reformulation
from ...utils.checks import check_bool, check_choice, check_range

_MODES = (None, "loss_to_grad", "grad_to_loss")


class GradMin(Reformulation):
    """Reformulation whose objective is the size of the gradient, optionally combined with the loss; the child
    modules minimise it, using its gradient computed by double backpropagation.

    With ``g = ∇f(x)`` and ``G = mean(|g|)`` (``sum`` if not ``mean``; ``g²`` instead of ``|g|`` with ``square``):

    - ``relative='grad_to_loss'``: ``G ← G·f``;
    - ``graft='grad_to_loss'``: ``G ← G·sg(|f| / G)`` (value ``|f|``, direction of ``∇G``; ``sg`` = no gradient);
    - ``maximize_grad``: ``G ← −G``;
    - loss term (when ``loss_term`` is not None or 0): ``L = c·f`` with ``c = loss_term``, or ``c = loss_term·G``
      with ``relative='loss_to_grad'``; ``graft='loss_to_grad'``: ``L ← L·sg(|G| / |L|)`` (value ``|G|``);
    - objective ``F = G + L``.

    The children get ``∇F`` as the gradient, and ``F`` as the loss with ``modify_loss`` (the original ``f``
    otherwise); the optimizer still reports ``f``. Zero denominators of the grafting scales are clamped to the
    smallest normal number.

    Args:
        modules: the child modules that minimise ``F``.
        loss_term: weight of the loss in the objective, None for none. Defaults to 0.
        relative: None, ``'loss_to_grad'`` or ``'grad_to_loss'`` (see above). Defaults to None.
        graft: None, ``'loss_to_grad'`` or ``'grad_to_loss'`` (see above). Defaults to None.
        square: use ``g²`` instead of ``|g|``. Defaults to False.
        mean: mean over all elements instead of the sum. Defaults to True.
        maximize_grad: maximise the gradient term instead. Defaults to False.
        create_graph: keep the autograd graph of the returned gradient (for children that differentiate it once
            more). Defaults to False.
        modify_loss: the children see ``F`` as the loss (else ``f``). Defaults to True.

    Example:
        ```python
        # find a stationary point (any: minimum, maximum or saddle) with L-BFGS on mean|∇f|
        opt = tz.Modular(model.parameters(), tz.m.experimental.GradMin([tz.m.LBFGS(), tz.m.Backtracking()]))
        ```
    """

    def __init__(self, modules: Chainable, loss_term: float | None = 0,
                 relative: Literal["loss_to_grad", "grad_to_loss"] | None = None,
                 graft: Literal["loss_to_grad", "grad_to_loss"] | None = None, square: bool = False,
                 mean: bool = True, maximize_grad: bool = False, create_graph: bool = False, modify_loss: bool = True):
        if loss_term is not None:
            check_range("GradMin", "loss_term", loss_term)
        check_choice("GradMin", "relative", relative, _MODES)
        check_choice("GradMin", "graft", graft, _MODES)
        for name, value in (("square", square), ("mean", mean), ("maximize_grad", maximize_grad),
                            ("create_graph", create_graph), ("modify_loss", modify_loss)):
            check_bool("GradMin", name, value)
        if relative is not None and graft is not None:
            warnings.warn("GradMin: both `relative` and `graft` are set; the grafting scale is computed after the "
                          "relative product", stacklevel=2)
        defaults = dict(loss_term=loss_term, relative=relative, graft=graft, square=square, mean=mean,
                        maximize_grad=maximize_grad, create_graph=create_graph, modify_loss=modify_loss)
        super().__init__(defaults, modules)

    @staticmethod
    def objective(loss: torch.Tensor, grads: Sequence[torch.Tensor], s: Mapping[str, Any]) -> torch.Tensor:
        """The objective ``F`` from the loss ``f``, the graph-carrying gradient ``g`` and the settings ``s`` (see the
        class docs)."""
        terms = list(torch._foreach_mul(grads, grads) if s["square"] else torch._foreach_abs(grads))
        G = torch.stack([t.sum() for t in terms]).sum()
        if s["mean"]:
            G = G / sum(t.numel() for t in terms)
        tiny = torch.finfo(G.dtype).tiny
        if s["relative"] == "grad_to_loss":
            G = G * loss
        if s["graft"] == "grad_to_loss":
            G = G * (loss.detach().abs() / G.detach().abs().clamp(min=tiny))
        if s["maximize_grad"]:
            G = -G
        loss_term = s["loss_term"]
        if loss_term is None or loss_term == 0:
            return G
        L = (loss_term * G if s["relative"] == "loss_to_grad" else loss_term) * loss
        if s["graft"] == "loss_to_grad":
            L = L * (G.detach().abs() / L.detach().abs().clamp(min=tiny))
        return G + L

    def closure(self, backward: bool, closure: Callable, params: list[torch.Tensor], var: Var
                ) -> tuple[Any, Sequence[torch.Tensor] | None]:
        settings = self.settings[params[0]]
        modify_loss = settings["modify_loss"]
        if not backward and not modify_loss:
            return closure(False), None
        with torch.enable_grad():
            loss = closure(False)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError("GradMin: the closure must return a scalar loss tensor")
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
            F = self.objective(loss, grads, settings)
            if not backward:
                return F.detach(), None
            create_graph = settings["create_graph"]
            if not F.requires_grad:  # e.g. a loss that is linear in the parameters: ∇F = 0
                new_grads = [torch.zeros_like(p) for p in params]
            else:
                new_grads = torch.autograd.grad(F, params, create_graph=create_graph, allow_unused=True)
                new_grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(new_grads, params)]
        if not create_graph:
            new_grads = [g.detach() for g in new_grads]
        return (F if create_graph else F.detach()) if modify_loss else loss.detach(), new_grads
