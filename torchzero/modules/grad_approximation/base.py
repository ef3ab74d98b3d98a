"""``GradApproximator``: the base of modules that estimate the gradient from loss values only (catalog 1.7, 6)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

import torch

from ...core import Module, Var
from ...utils.checks import check_choice

GradTarget: TypeAlias = Literal["update", "grad", "closure"]
"""Where a gradient approximator puts its estimate: a wrapped closure (``'closure'``), ``var.grad`` or ``var.update``."""
_GRAD_TARGETS = ("update", "grad", "closure")


def loss_value(value: Any, device: torch.device | None = None) -> torch.Tensor:
    """A closure's return value as a detached 0-d tensor: per-sample losses (a tensor with several elements) are
    averaged, Python numbers become tensors (on ``device`` if given)."""
    if not isinstance(value, torch.Tensor):
        return torch.as_tensor(value, device=device)
    value = value.detach()
    if value.numel() != 1:
        value = value.mean()
    elif value.ndim != 0:
        value = value.reshape(())
    if device is not None and value.device != device:
        value = value.to(device)
    return value


def check_seed(owner: str, seed: Any) -> None:
    """Raises ``TypeError`` naming ``owner`` unless ``seed`` is an int, a ``torch.Generator`` or None."""
    if seed is None or isinstance(seed, torch.Generator):
        return
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{owner}: seed must be an int, a torch.Generator or None, got {type(seed).__name__}")


def module_generator(module: Module, device: torch.device, seed: int | torch.Generator | None
                     ) -> torch.Generator | None:
    """The module's random generator (``global_state['generator']``, kept by ``reset()`` and saved in state dicts):
    created from an int ``seed`` on first use, or the given ``torch.Generator`` itself (it must be on the
    parameters' device); None (the global RNG) for ``seed=None``."""
    if isinstance(seed, torch.Generator):
        return module.global_state.setdefault("generator", seed)
    return module.get_generator(device, seed)


class GradApproximator(Module, ABC):
    """Base class of gradient approximators: modules that estimate the gradient from ``closure(False)`` evaluations.

    Subclasses implement ``approximate(closure, params, loss) -> (grad, loss, loss_approx)``: it may move the
    parameters in place to evaluate ``closure(False)`` at other points but must restore them exactly; ``loss`` is the
    loss at the current point if known (else None); it returns the estimate (one new tensor per parameter), the loss
    at the current point if it evaluated it (else the ``loss`` it was given) and a loss at a nearby point (or None).
    ``pre_step(var)`` runs once per step, before anything else (e.g. to draw perturbations that every evaluation of
    that step shares). ``loss_is_exact(params)`` says whether ``approximate`` evaluates the loss at the current point
    itself.

    Where the estimate goes (``target``):

    - ``'closure'`` (default): ``var.closure`` is replaced by a wrapper. ``closure(False)`` passes straight through;
      ``closure(True)`` runs the estimator at the current parameters, writes the estimate into each ``p.grad`` and
      returns the loss at the current point. So every later module (line searches included) sees estimated
      gradients wherever it evaluates. When the estimator does not evaluate the current point itself (central
      differences), the wrapper evaluates ``closure(False)`` there first, so that ``Modular.step`` returns the loss
      at the current point.
    - ``'grad'`` / ``'update'``: the estimate is computed once, at the current point, and stored in ``var.grad`` /
      ``var.update``; the losses it produced go to ``var.loss`` / ``var.loss_approx``. No extra evaluation is made
      for the loss, so with central differences ``var.loss`` stays unknown (later modules evaluate it if needed).

    Evaluations run under ``torch.no_grad()``; the closure is never asked for a backward pass, so it may be a plain
    function of the parameters that never calls ``backward``. A closure returning per-sample losses (a tensor with
    several elements) is treated as returning their mean. Non-finite losses are not filtered: they propagate into
    the estimate as they would into an autograd gradient.

    Args:
        defaults: default values of settings.
        target: ``'closure'``, ``'grad'`` or ``'update'``, see above. Defaults to ``'closure'``.

    Reference:
        J. Nocedal, S. J. Wright, "Numerical Optimization", 2nd ed., Springer 2006, chapter 8 (derivative-free
        gradient approximations); A. R. Conn, K. Scheinberg, L. N. Vicente, "Introduction to Derivative-Free
        Optimization", SIAM 2009.

    Example:
        ```python
        class TrueGradient(tz.m.GradApproximator):
            def approximate(self, closure, params, loss):
                with torch.enable_grad():
                    loss = closure(False)
                    grad = torch.autograd.grad(loss, params)
                return list(grad), loss.detach(), None

        opt = tz.Modular(model.parameters(), TrueGradient(), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, defaults: dict[str, Any] | None = None, target: GradTarget = "closure"):
        check_choice(self.__class__.__name__, "target", target, _GRAD_TARGETS)
        super().__init__(defaults)
        self._target: GradTarget = target

    @abstractmethod
    def approximate(self, closure: Callable, params: list[torch.Tensor], loss: torch.Tensor | None
                    ) -> tuple[Sequence[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        """Returns ``(grad, loss, loss_approx)``; must restore the parameters to their original values."""

    def pre_step(self, var: Var) -> None:
        """Runs once per step before the estimator (which may run several times per step when later modules
        evaluate gradients at several points), e.g. to draw the perturbations all evaluations of the step share."""

    def loss_is_exact(self, params: list[torch.Tensor]) -> bool:
        """Whether ``approximate`` returns the loss at the current point even when it is not given one. Default True."""
        return True

    def step(self, var: Var) -> Var:
        closure = self._require_closure(var)
        self.pre_step(var)
        params = var.params

        if self._target == "closure":
            var.closure = self._wrap_closure(closure, params)
            return var

        grad, loss, loss_approx = self.approximate(closure, params, var.loss)
        if loss_approx is not None:
            var.loss_approx = loss_approx
        if loss is not None:
            var.loss = var.loss_approx = loss
        if self._target == "grad":
            var.grad = list(grad)
        else:
            var.update = list(grad)
        return var

    def _wrap_closure(self, closure: Callable, params: list[torch.Tensor]) -> Callable:
        def approx_closure(backward: bool = True) -> Any:
            if not backward:
                return closure(False)
            loss = None
            if not self.loss_is_exact(params):
                with torch.no_grad():
                    loss = closure(False)
            grad, est_loss, _ = self.approximate(closure, params, None if loss is None else loss_value(loss))
            for p, g in zip(params, grad):
                p.grad = g
            if loss is not None:
                return loss
            if est_loss is None:  # an estimator that did not evaluate the current point after all
                with torch.no_grad():
                    est_loss = closure(False)
            return est_loss

        return approx_closure
