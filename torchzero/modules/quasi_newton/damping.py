"""Damping of secant pairs for the limited-memory methods (``LBFGS``, ``LSR1``): inverse-form Powell damping and
its double variant (Goldfarb, Ren & Bahamou 2020), or a user callable."""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeAlias

import torch

from ...utils.linalg.linear_operator import LinearOperator
from .base import safe

DampingStrategy: TypeAlias = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, LinearOperator],
                                      tuple[torch.Tensor, torch.Tensor]]
"""``damping(s, y, g, H) -> (s, y)`` on flattened vectors; ``H`` is the module's current ``get_H()`` operator
(``H.solve`` applies the inverse approximation)."""


def powell_damping(s: torch.Tensor, y: torch.Tensor, g: torch.Tensor, H: LinearOperator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-form Powell damping (μ₁ = 0.2): with ``Hy = H⁻¹y`` (the inverse approximation applied to ``y``) and
    ``q = yᵀHy``, if ``sᵀy < 0.2·q`` then ``s ← φ·s + (1 − φ)·Hy`` with ``φ = 0.8·q/(q − sᵀy)``, so that
    ``sᵀy = 0.2·q``. Decided on the device (no host sync).

    This is the inverse form throughout; torchzero 0.3.14 mixed the forms for L-BFGS/L-SR1 (``s ← φs + (1 − φ)·Bs``
    with ``q = sᵀBs``)."""
    Hy = H.solve(y)
    q = y.dot(Hy)
    sy = s.dot(y)
    phi = torch.where(sy < 0.2 * q, 0.8 * q / safe(q - sy), torch.ones_like(q))
    return s * phi + Hy * (1 - phi), y


def double_damping(s: torch.Tensor, y: torch.Tensor, g: torch.Tensor, H: LinearOperator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Powell damping followed by the second stage with ``B = I`` (μ₂ = 1/3): if ``sᵀy < sᵀs/3`` then
    ``y ← ψ·y + (1 − ψ)·s`` with ``ψ = (2/3)·sᵀs/(sᵀs − sᵀy)``, which guarantees ``sᵀy ≥ sᵀs/3 > 0``."""
    s, y = powell_damping(s, y, g, H)
    ss = s.dot(s)
    sy = s.dot(y)
    psi = torch.where(sy < ss / 3, (2 / 3) * ss / safe(ss - sy), torch.ones_like(ss))
    return s, y * psi + s * (1 - psi)


def apply_damping(damping: Literal["powell", "double"] | DampingStrategy, s: torch.Tensor, y: torch.Tensor,
                  g: torch.Tensor, H: LinearOperator) -> tuple[torch.Tensor, torch.Tensor]:
    """Applies ``damping`` (a name or a callable) to the pair ``(s, y)``."""
    if damping == "powell":
        return powell_damping(s, y, g, H)
    if damping == "double":
        return double_damping(s, y, g, H)
    return damping(s, y, g, H)  # type: ignore[operator]


def check_damping(owner: str, damping: object) -> None:
    if damping is None or damping in ("powell", "double") or callable(damping):
        return
    raise ValueError(f"{owner}: damping must be None, 'powell', 'double' or a callable (s, y, g, H) -> (s, y), "
                     f"got {damping!r}")
