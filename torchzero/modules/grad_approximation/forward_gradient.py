"""``ForwardGradient``: gradient estimates from forward-mode directional derivatives."""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from ...core import Var
from ...utils.checks import check_choice
from ...utils.derivatives import jvp, jvp_fd_central, jvp_fd_forward
from ...utils.tensorlist import Distributions
from .base import GradApproximator, GradTarget, loss_value, module_generator
from .randomized import (
    accumulate_outer_,
    check_randomized_args,
    sample_directions,
    store_perturbations_,
    stored_perturbations,
)

JVPMethod = Literal["autograd", "forward", "central"]
_JVP_METHODS = ("autograd", "forward", "central")


@torch.no_grad()
def forward_gradient(closure: Callable, params: list[torch.Tensor], directions: Callable[[int], list[torch.Tensor]],
                     n_samples: int, jvp_method: JVPMethod, h: float, loss: torch.Tensor | None = None
                     ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """``(1/N) Σᵢ uᵢ (∇f(x)ᵀuᵢ)`` with ``uᵢ = directions(i)``.

    The directional derivative is the exact forward-mode JVP (``'autograd'``, one ``closure(False)`` with dual tensors
    swapped in for the parameters, ``utils.derivatives.jvp``), or a finite difference along ``uᵢ/‖uᵢ‖`` with
    absolute step ``h``, rescaled by ``‖uᵢ‖`` (``'forward'``: ``f(x)`` shared by all samples; ``'central'``).
    Returns ``(grad, loss, loss_approx)``: ``'autograd'`` and ``'forward'`` give ``f(x)``; ``'central'`` gives the
    ``loss`` passed in and ``f(x + h·u₁/‖u₁‖)`` as the approximate loss.
    """
    device = params[0].device
    fn = lambda: closure(False)  # noqa: E731 -- the derivative helpers call it without arguments
    acc: list[torch.Tensor] | None = None
    loss_approx = None
    for i in range(n_samples):
        u = directions(i)
        if jvp_method == "autograd":
            f, d = jvp(fn, params, u)
            if loss is None:
                loss = loss_value(f, device)
        elif jvp_method == "forward":
            f, d = jvp_fd_forward(fn, params, u, h=h, v_0=loss, normalize=True)
            loss = loss_value(f, device)
        elif jvp_method == "central":
            f, d = jvp_fd_central(fn, params, u, h=h, normalize=True)
            if loss_approx is None and f is not None:
                loss_approx = loss_value(f, device)
        else:
            raise ValueError(f"ForwardGradient: unknown jvp_method {jvp_method!r}, expected one of {_JVP_METHODS}")
        acc = accumulate_outer_(acc, u, loss_value(d, device))
    assert acc is not None
    if n_samples != 1:
        torch._foreach_div_(acc, n_samples)
    if jvp_method != "central":
        loss_approx = loss
    return acc, loss, loss_approx


class ForwardGradient(GradApproximator):
    """Forward gradient: the gradient estimated from directional derivatives along random directions.

    ``ĝ = (1/N) Σᵢ uᵢ (∇f(x)ᵀuᵢ)`` for ``N = n_samples`` directions ``uᵢ`` with unit-variance entries (not scaled
    by ``h``), so ``E[ĝ] = ∇f(x)``. The directional derivative is an exact forward-mode JVP (``jvp_method='autograd'``:
    one ``closure(False)`` per direction with dual tensors substituted for the parameters, no backward pass; the
    closure's operations must support forward-mode AD) or a finite difference along the normalised direction with
    absolute step ``h`` (``'forward'``: one extra evaluation per direction plus ``f(x)`` once, ``'central'``: two).
    Directions, ``pre_generate`` (per-parameter state ``'perturbations'``) and ``seed`` are as in ``RandomizedFDM``.

    Args:
        n_samples: number of directions per estimate. Defaults to 1.
        distribution: distribution of the directions (see ``RandomizedFDM``). Defaults to ``'gaussian'``.
        pre_generate: draw the directions once per step. Defaults to True.
        jvp_method: ``'autograd'``, ``'forward'`` or ``'central'``. Defaults to ``'autograd'``.
        h: finite-difference step of ``'forward'``/``'central'`` (positive). Defaults to 1e-3.
        target: ``'closure'``, ``'grad'`` or ``'update'``, see ``GradApproximator``. Defaults to ``'closure'``.
        seed: int seed, a ``torch.Generator`` on the parameters' device, or None (global RNG). Defaults to None.

    Reference:
        A. G. Baydin, B. A. Pearlmutter, D. Syme, F. Wood, P. Torr, "Gradients without Backpropagation",
        arXiv:2202.08587, 2022.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.ForwardGradient(n_samples=4, seed=0), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, n_samples: int = 1, distribution: Distributions = "gaussian", pre_generate: bool = True,
                 jvp_method: JVPMethod = "autograd", h: float = 0.001, target: GradTarget = "closure",
                 seed: int | None | torch.Generator = None):
        check_randomized_args("ForwardGradient", h, n_samples, "central", distribution, pre_generate, seed)
        check_choice("ForwardGradient", "jvp_method", jvp_method, _JVP_METHODS)
        defaults = dict(n_samples=n_samples, distribution=distribution, pre_generate=pre_generate,
                        jvp_method=jvp_method, h=h, seed=seed)
        super().__init__(defaults, target=target)

    def _draw(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        s0 = self.settings[params[0]]
        generator = module_generator(self, params[0].device, s0["seed"])
        return sample_directions(params, s0["distribution"], 1, generator)

    def pre_step(self, var: Var) -> None:
        params = var.params
        s0 = self.settings[params[0]]
        if s0["pre_generate"]:
            store_perturbations_(self, params, [self._draw(params) for _ in range(s0["n_samples"])])

    def loss_is_exact(self, params: list[torch.Tensor]) -> bool:
        return self.settings[params[0]]["jvp_method"] != "central"

    def approximate(self, closure: Callable, params: list[torch.Tensor], loss: torch.Tensor | None
                    ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        s0 = self.settings[params[0]]
        n_samples = s0["n_samples"]
        directions = stored_perturbations(self, params, n_samples) if s0["pre_generate"] else None
        if directions is None:
            directions = lambda i: self._draw(params)
        return forward_gradient(closure, params, directions, n_samples, s0["jvp_method"], s0["h"], loss)
