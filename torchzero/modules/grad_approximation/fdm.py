"""Finite-difference stencils (shared by all finite-difference estimators) and coordinate-wise ``FDM``."""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple, TypeAlias

import torch

from ...utils.checks import check_choice, check_positive
from .base import GradApproximator, GradTarget, loss_value

FDFormula: TypeAlias = Literal["forward", "forward2", "backward", "backward2", "central", "central2", "central3",
                               "forward3", "backward3", "central4", "forward4", "forward5", "bspsa4"]


class Stencil(NamedTuple):
    """``f'(0)·h ≈ Σₖ cₖ f(kh) / denominator`` over ``offsets`` k with integer ``coefficients`` cₖ."""

    offsets: tuple[int, ...]
    coefficients: tuple[int, ...]
    denominator: int

    @property
    def uses_f0(self) -> bool:
        """Whether the stencil evaluates the current point (then it returns the exact loss)."""
        return 0 in self.offsets


_FORWARD2 = Stencil((0, 1), (-1, 1), 1)
_BACKWARD2 = Stencil((0, -1), (1, -1), 1)
_CENTRAL2 = Stencil((1, -1), (1, -1), 2)

STENCILS: dict[str, Stencil] = {
    "forward": _FORWARD2,
    "forward2": _FORWARD2,
    "backward": _BACKWARD2,
    "backward2": _BACKWARD2,
    "central": _CENTRAL2,
    "central2": _CENTRAL2,
    "central3": _CENTRAL2,
    "forward3": Stencil((0, 1, 2), (-3, 4, -1), 2),
    "backward3": Stencil((0, -1, -2), (3, -4, 1), 2),
    "central4": Stencil((1, -1, 2, -2), (8, -8, -1, 1), 12),
    "forward4": Stencil((0, 1, 2, 3), (-11, 18, -9, 2), 6),
    "forward5": Stencil((0, 1, 2, 3, 4), (-25, 48, -36, 16, -3), 12),
    # balanced four-measurement SPSA stencil: points ±δ, ±3δ, error O(h⁴) like central4 (Pachalyil et al.)
    "bspsa4": Stencil((1, -1, 3, -3), (27, -27, -1, 1), 48),
}
"""Every ``FDFormula``. Error orders: forward/backward(2) O(h); central(2/3), forward3, backward3 O(h²); forward4 O(h³);
central4, forward5, bspsa4 O(h⁴)."""
FD_FORMULAS: tuple[str, ...] = tuple(STENCILS)


def stencil_derivative(stencil: Stencil, evaluate: Callable[[int], torch.Tensor], f_0: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Applies ``stencil`` along one direction δ.

    ``evaluate(k)`` must return ``f(x + k·δ)``; ``f_0 = f(x)`` is evaluated only if the stencil needs it and it is
    not given (the current point is always evaluated first). Returns ``(Σₖ cₖ f(x + kδ) / denominator, f_0, f_1)``:
    the first ≈ ``∇f(x)ᵀδ``; ``f_1 = f(x + δ)`` if evaluated, else None.
    """
    total: torch.Tensor | None = None
    f_1 = None
    for k, c in zip(stencil.offsets, stencil.coefficients):
        if k == 0:
            if f_0 is None:
                f_0 = evaluate(0)
            f = f_0
        else:
            f = evaluate(k)
            if k == 1:
                f_1 = f
        term = f * c
        total = term if total is None else total + term
    assert total is not None
    return total / stencil.denominator, f_0, f_1


def stencil_losses(stencil: Stencil, loss: torch.Tensor | None, f_0: torch.Tensor | None, f_1: torch.Tensor | None
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(loss, loss_approx)`` an estimator returns: stencils through the current point return ``f(x)`` for both;
    the others return the ``loss`` they were given and ``f(x + δ)`` as the approximate loss."""
    if stencil.uses_f0:
        return f_0, f_0
    return loss, f_1


@torch.no_grad()
def fd_gradient(closure: Callable, params: Sequence[torch.Tensor], h: Sequence[float], formulas: Sequence[str],
                loss: torch.Tensor | None = None
                ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """Coordinate-wise finite-difference gradient: for each scalar entry of each parameter ``params[j]``, the stencil
    ``formulas[j]`` along that coordinate with step ``h[j]``.

    Each entry is set to ``x + k·h`` and restored to its saved value (bit-exact), also if the closure raises.
    ``f(x)`` (``loss`` if given) is shared by all coordinates. Returns ``(grad, loss, loss_approx)`` as in
    ``stencil_losses``; costs ``numel × (evaluations of the stencil outside x)`` evaluations, plus one for ``f(x)``
    when a stencil needs it and ``loss`` is None.
    """
    device = params[0].device if len(params) > 0 else None
    grads: list[torch.Tensor] = []
    f_1 = None
    uses_f0 = False
    for p, h_p, formula in zip(params, h, formulas):
        stencil = STENCILS[formula]
        uses_f0 |= stencil.uses_f0
        if p.numel() == 0:
            grads.append(torch.zeros_like(p))
            continue
        derivatives = []
        for idx in itertools.product(*(range(s) for s in p.shape)):
            original = p[idx].clone()

            def evaluate(k: int, p: torch.Tensor = p, idx: tuple = idx, original: torch.Tensor = original,
                         h_p: float = h_p) -> torch.Tensor:
                p[idx] = original + k * h_p
                return loss_value(closure(False), device)

            try:
                d, loss, f_1_idx = stencil_derivative(stencil, evaluate, loss)
            finally:
                p[idx] = original
            if f_1_idx is not None:
                f_1 = f_1_idx
            derivatives.append(d / h_p)
        grads.append(torch.stack(derivatives).to(dtype=p.dtype, device=p.device).reshape(p.shape))

    if uses_f0:
        return grads, loss, loss
    return grads, loss, f_1


class FDM(GradApproximator):
    """Coordinate-wise finite-difference gradient approximation.

    For every scalar entry ``xᵢ`` of every parameter, the chosen stencil along that coordinate with the parameter's own
    step ``h`` (``fₖ = f(x + k·h·eᵢ)``):

    - ``'forward'``/``'forward2'``: ``(f₁ − f₀)/h``; ``'backward'``/``'backward2'``: ``(f₀ − f₋₁)/h`` (error O(h));
    - ``'central'``/``'central2'``/``'central3'``: ``(f₁ − f₋₁)/(2h)`` (O(h²));
    - ``'forward3'``: ``(−3f₀ + 4f₁ − f₂)/(2h)``; ``'backward3'``: ``(f₋₂ − 4f₋₁ + 3f₀)/(2h)`` (O(h²));
    - ``'forward4'``: ``(2f₃ − 9f₂ + 18f₁ − 11f₀)/(6h)`` (O(h³));
    - ``'central4'``: ``(f₋₂ − 8f₋₁ + 8f₁ − f₂)/(12h)``; ``'forward5'``:
      ``(−3f₄ + 16f₃ − 36f₂ + 48f₁ − 25f₀)/(12h)``; ``'bspsa4'``: ``(27(f₁ − f₋₁) − (f₃ − f₋₃))/(48h)`` (O(h⁴)).

    Cost: ``n × (evaluations per stencil)`` for ``n`` scalar entries; ``f₀`` is evaluated once and shared. Stencils
    through ``x`` return ``f₀`` as the exact loss; central ones return ``f₁`` as the approximate loss (see
    ``GradApproximator`` for what happens to the loss with each ``target``). Each entry is restored bit-exactly.

    Args:
        h: finite-difference step (per-parameter setting, positive). Defaults to 1e-3.
        formula: the stencil, one of ``FDFormula``. Defaults to ``'central'``.
        target: ``'closure'``, ``'grad'`` or ``'update'``, see ``GradApproximator``. Defaults to ``'closure'``.

    Reference:
        B. Fornberg, "Generation of Finite Difference Formulas on Arbitrarily Spaced Grids", Math. Comp. 51(184), 1988;
        ``'bspsa4'``: S. Pachalyil, S. Bhatnagar et al., "Generalized simultaneous perturbation-based gradient search
        with reduced estimator bias", IEEE Trans. Automatic Control, 2025.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.FDM(h=1e-4, formula="central4"), tz.m.LBFGS(), tz.m.StrongWolfe())

        def closure(backward=True):  # never calls backward
            return loss_fn(model(inputs), targets)

        opt.step(closure)
        ```
    """

    def __init__(self, h: float = 0.001, formula: FDFormula = "central", target: GradTarget = "closure"):
        check_positive("FDM", "h", h)
        check_choice("FDM", "formula", formula, FD_FORMULAS)
        super().__init__(dict(h=h, formula=formula), target=target)

    def loss_is_exact(self, params: list[torch.Tensor]) -> bool:
        return any(STENCILS[f].uses_f0 for f in self.get_settings(params, "formula"))

    def approximate(self, closure: Callable, params: list[torch.Tensor], loss: torch.Tensor | None
                    ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        h, formulas = self.get_settings(params, "h", "formula")
        for f in formulas:
            check_choice("FDM", "formula", f, FD_FORMULAS)
        return fd_gradient(closure, params, h, formulas, loss)
