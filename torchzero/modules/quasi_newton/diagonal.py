"""Diagonal quasi-Newton methods: a vector ``H`` (output ``H∘g``) or ``B`` (output ``g/B``) starting at ones, on the
shared ``HessianUpdateStrategy`` base. All updates are elementwise vector operations without host syncs."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch

from ...core import Chainable
from ...utils.checks import check_range
from .base import HessianUpdateStrategy, SecantPair, fill_doc, safe

# --------------------------------------------------------------------------------------------------
# functional forms (in place; return the vector)
# --------------------------------------------------------------------------------------------------


def diagonal_bfgs_H_(H: torch.Tensor, s: torch.Tensor, y: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """``H_i ← H_i + (ω + H_i y_i²)·s_i²/safe(ω²) − 2·H_i y_i s_i/ω`` with ``ω = sᵀy`` (in place)."""
    Hy = H * y
    delta = (sy + Hy * y) * (s * s) / safe(sy * sy) - 2 * Hy * s / sy
    return H.add_(delta)


def diagonal_sr1_(M: torch.Tensor, a: torch.Tensor, b: torch.Tensor, tol: float) -> torch.Tensor:
    """Diagonal SR1 in place (H-form ``(H, s, y)``, B-form ``(B, y, s)``): ``z = a − M∘b``;
    ``M ← M + z∘z/safe(zᵀb)`` if ``|zᵀb| > tol·‖b‖·‖z‖``, else unchanged (decided on the device)."""
    z = a - M * b
    zb = z.dot(b)
    skip = zb.abs() <= tol * torch.linalg.vector_norm(b) * torch.linalg.vector_norm(z)
    coef = torch.where(skip, torch.zeros_like(zb), 1 / safe(zb))
    return M.addcmul_(z, z * coef)


def diagonal_quasi_cauchy_B_(B: torch.Tensor, s: torch.Tensor, y: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """Zhu–Nazareth–Wolkowicz: ``B ← B + s∘s·(sᵀy − sᵀ(B∘s))/safe(Σ s_i⁴)`` (in place), so ``sᵀ(B₊∘s) = sᵀy``."""
    s2 = s * s
    return B.add_(s2 * ((sy - s2.dot(B)) / safe(s2.dot(s2))))


def diagonal_weighted_quasi_cauchy_B_(B: torch.Tensor, s: torch.Tensor, y: torch.Tensor,
                                      sy: torch.Tensor) -> torch.Tensor:
    """Leong–Enshaei–Kek: with ``E = s∘s∘B∘B``, ``B ← B + E·(sᵀy − sᵀ(B∘s))/safe(Σ s_i E_i s_i)`` (in place)."""
    s2 = s * s
    E = s2 * B * B
    return B.add_(E * ((sy - s2.dot(B)) / safe(s2.dot(E))))


def new_dqn_B_(B: torch.Tensor, s: torch.Tensor, y: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """Nosrati–Amini: ``B ← B + s∘s·(sᵀy)/safe(Σ s_i⁴)`` (in place)."""
    s2 = s * s
    return B.add_(s2 * (sy / safe(s2.dot(s2))))


def truncate(B: torch.Tensor, lb: float, ub: float) -> torch.Tensor:
    """A copy of ``B`` with every entry not strictly inside ``(lb, ub)`` replaced by 1."""
    return torch.where((B > lb) & (B < ub), B, torch.ones_like(B))


# --------------------------------------------------------------------------------------------------
# classes
# --------------------------------------------------------------------------------------------------
class _Diagonal(HessianUpdateStrategy):
    _diagonal = True

    def __init__(self, defaults: dict[str, Any] | None = None, init_scale: float | Literal["auto"] = "auto",
                 tol: float = 1e-32, ptol: float | None = 1e-32, ptol_restart: bool = False,
                 gtol: float | None = 1e-32, restart_interval: int | None | Literal["auto"] = None,
                 beta: float | None = None, update_freq: int = 1, scale_first: bool = False,
                 concat_params: bool = True, inverse: bool = True, inner: Chainable | None = None):
        super().__init__(defaults, init_scale=init_scale, tol=tol, ptol=ptol, ptol_restart=ptol_restart, gtol=gtol,
                         restart_interval=restart_interval, beta=beta, update_freq=update_freq,
                         scale_first=scale_first, concat_params=concat_params, inverse=inverse, inner=inner)


@fill_doc(tol="the update is skipped when ``sᵀy < tol``.", inverse="H")
class DiagonalBFGS(_Diagonal):
    """Diagonal analogue of the BFGS inverse update (vector ``H`` starting at ones, output ``H∘g``).

    Elementwise, with ``ω = sᵀy``: ``H_i ← H_i + (ω + H_i y_i²)·s_i²/ω² − 2·H_i y_i s_i/ω``. The term ``H_i y_i²``
    is per element (not the scalar ``yᵀHy`` of true BFGS), so the secant equation is not satisfied.

    Args:
{qn_args}

    Reference:
        None (a heuristic diagonal restriction of BFGS).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.DiagonalBFGS(), tz.m.Backtracking())
        ```
    """

    _forms = ("H",)

    def __init__(self, init_scale: float | Literal["auto"] = "auto", tol: float = 1e-32, ptol: float | None = 1e-32,
                 ptol_restart: bool = False, gtol: float | None = 1e-32, restart_interval: int | None = None,
                 beta: float | None = None, update_freq: int = 1, scale_first: bool = False,
                 concat_params: bool = True, inverse: bool = True, inner: Chainable | None = None):
        super().__init__(None, init_scale=init_scale, tol=tol, ptol=ptol, ptol_restart=ptol_restart, gtol=gtol,
                         restart_interval=restart_interval, beta=beta, update_freq=update_freq,
                         scale_first=scale_first, concat_params=concat_params, inverse=inverse, inner=inner)

    def update_H(self, H, pair: SecantPair):
        if pair.sy_f < pair.setting["tol"]:
            return None
        return diagonal_bfgs_H_(H, pair.s, pair.y, pair.sy)


@fill_doc(tol="the update is skipped when ``|zᵀy| ≤ tol·‖y‖·‖z‖`` (B-form: ``|zᵀs| ≤ tol·‖s‖·‖z‖``).")
class DiagonalSR1(_Diagonal):
    """Diagonal analogue of SR1 (vector starting at ones).

    H-form: ``z = s − H∘y``, ``H ← H + z∘z/(zᵀy)``; B-form swaps ``s`` and ``y``. Output ``H∘g`` or ``g/B``.
    Entries can become zero or negative (no safeguard on the update; a zero ``B_i`` divides by 1 in the output).
    As for ``SR1``, the H-form correction right after the automatic initial scaling is degenerate (``zᵀy = 0`` in
    exact arithmetic) and is skipped.

    Args:
{qn_args}

    Reference:
        None (diagonal restriction of SR1; skip rule from Nocedal & Wright §6.2).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.DiagonalSR1(), tz.m.Backtracking())
        ```
    """

    def __init__(self, init_scale: float | Literal["auto"] = "auto", tol: float = 1e-32, ptol: float | None = 1e-32,
                 ptol_restart: bool = False, gtol: float | None = 1e-32, restart_interval: int | None = None,
                 beta: float | None = None, update_freq: int = 1, scale_first: bool = False,
                 concat_params: bool = True, inverse: bool = True, inner: Chainable | None = None):
        super().__init__(None, init_scale=init_scale, tol=tol, ptol=ptol, ptol_restart=ptol_restart, gtol=gtol,
                         restart_interval=restart_interval, beta=beta, update_freq=update_freq,
                         scale_first=scale_first, concat_params=concat_params, inverse=inverse, inner=inner)

    def update_H(self, H, pair: SecantPair):
        if pair.auto_scaled:  # zᵀy = 0 in exact arithmetic after the automatic scaling, as for SR1
            return None
        return diagonal_sr1_(H, pair.s, pair.y, pair.setting["tol"])

    def update_B(self, B, pair: SecantPair):
        return diagonal_sr1_(B, pair.y, pair.s, pair.setting["tol"])


@fill_doc(inverse="B", inverse_default=False)
class DiagonalQuasiCauchi(_Diagonal):
    """Zhu–Nazareth–Wolkowicz diagonal update enforcing the weak secant (quasi-Cauchy) relation ``sᵀBs = sᵀy``
    (B-form only): ``B ← B + s∘s·(sᵀy − sᵀ(B∘s))/Σ s_i⁴``. Output ``g/B`` (no positivity safeguard).

    Args:
{qn_args}

    Reference:
        M. Zhu, J. L. Nazareth, H. Wolkowicz, "The quasi-Cauchy relation and diagonal updating",
        *SIAM J. Optim.* 9(4):1192–1204, 1999.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.DiagonalQuasiCauchi(), tz.m.Backtracking())
        ```
    """

    _forms = ("B",)

    def __init__(self, init_scale: float | Literal["auto"] = "auto", tol: float = 1e-32, ptol: float | None = 1e-32,
                 ptol_restart: bool = False, gtol: float | None = 1e-32, restart_interval: int | None = None,
                 beta: float | None = None, update_freq: int = 1, scale_first: bool = False,
                 concat_params: bool = True, inverse: bool = False, inner: Chainable | None = None):
        super().__init__(None, init_scale=init_scale, tol=tol, ptol=ptol, ptol_restart=ptol_restart, gtol=gtol,
                         restart_interval=restart_interval, beta=beta, update_freq=update_freq,
                         scale_first=scale_first, concat_params=concat_params, inverse=inverse, inner=inner)

    def update_B(self, B, pair: SecantPair):
        return diagonal_quasi_cauchy_B_(B, pair.s, pair.y, pair.sy)


@fill_doc(inverse="B", inverse_default=False)
class DiagonalWeightedQuasiCauchi(_Diagonal):
    """Least-change diagonal update in a weighted Frobenius norm (B-form only).

    With ``E = s∘s∘B∘B``: ``B ← B + E·(sᵀy − sᵀ(B∘s))/Σ s_i E_i s_i``. Satisfies the weak secant relation
    ``sᵀ(B₊∘s) = sᵀy``; changes are proportional to the current ``B²`` (entries with ``B_i = 0`` never change).

    Args:
{qn_args}

    Reference:
        W. J. Leong, S. Enshaei, S. L. Kek, "Diagonal quasi-Newton methods via least change updating principle
        with weighted Frobenius norm", *Numerical Algorithms* 86:1225–1241, 2021.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.DiagonalWeightedQuasiCauchi(), tz.m.Backtracking())
        ```
    """

    _forms = ("B",)

    def __init__(self, init_scale: float | Literal["auto"] = "auto", tol: float = 1e-32, ptol: float | None = 1e-32,
                 ptol_restart: bool = False, gtol: float | None = 1e-32, restart_interval: int | None = None,
                 beta: float | None = None, update_freq: int = 1, scale_first: bool = False,
                 concat_params: bool = True, inverse: bool = False, inner: Chainable | None = None):
        super().__init__(None, init_scale=init_scale, tol=tol, ptol=ptol, ptol_restart=ptol_restart, gtol=gtol,
                         restart_interval=restart_interval, beta=beta, update_freq=update_freq,
                         scale_first=scale_first, concat_params=concat_params, inverse=inverse, inner=inner)

    def update_B(self, B, pair: SecantPair):
        return diagonal_weighted_quasi_cauchy_B_(B, pair.s, pair.y, pair.sy)


class _Truncated(_Diagonal):
    """Diagonal B-form with the ``(lb, ub)`` truncation-to-1 applied before use and in ``get_H``."""

    _forms = ("B",)

    def __init__(self, lb: float = 0.01, ub: float = 100000.0, init_scale: float | Literal["auto"] = "auto",
                 tol: float = 1e-32, ptol: float | None = 1e-32, ptol_restart: bool = False,
                 gtol: float | None = 1e-32, restart_interval: int | None | Literal["auto"] = None,
                 beta: float | None = None, update_freq: int = 1, scale_first: bool = False,
                 concat_params: bool = True, inner: Chainable | None = None):
        name = type(self).__name__
        check_range(name, "lb", lb)
        check_range(name, "ub", ub)
        if not lb < ub:
            raise ValueError(f"{name}: lb must be smaller than ub, got lb={lb}, ub={ub}")
        super().__init__(dict(lb=lb, ub=ub), init_scale=init_scale, tol=tol, ptol=ptol, ptol_restart=ptol_restart,
                         gtol=gtol, restart_interval=restart_interval, beta=beta, update_freq=update_freq,
                         scale_first=scale_first, concat_params=concat_params, inverse=False, inner=inner)

    def modify_B(self, B: torch.Tensor, setting: Mapping[str, Any]) -> torch.Tensor:
        return truncate(B, setting["lb"], setting["ub"])


@fill_doc(inverse="none")
class DNRTR(_Truncated):
    """Andrei's diagonal quasi-Newton method with truncation (B-form only).

    The stored diagonal is updated with the weighted quasi-Cauchy formula of ``DiagonalWeightedQuasiCauchi``,
    ``B ← B + E·(sᵀy − sᵀ(B∘s))/Σ s_i E_i s_i`` with ``E = s∘s∘B∘B``; before use (and in ``get_H``) every entry not
    strictly inside ``(lb, ub)`` is replaced by 1 and the output is ``g/B_trunc``. The stored ``B`` itself is not
    truncated. (The reference 0.3.14 also defines an unused alternative update; the weighted formula is the one
    that is applied, as here.)

    Args:
        lb: lower truncation bound. Defaults to 0.01.
        ub: upper truncation bound. Defaults to 1e5.
{qn_args}

    Reference:
        N. Andrei, "A diagonal quasi-Newton updating method for unconstrained optimization",
        *Numerical Algorithms* 81(2):575–590, 2019.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.DNRTR(), tz.m.Backtracking())
        ```
    """

    def update_B(self, B, pair: SecantPair):
        return diagonal_weighted_quasi_cauchy_B_(B, pair.s, pair.y, pair.sy)


@fill_doc(inverse="none")
class NewDQN(_Truncated):
    """Nosrati–Amini diagonal quasi-Newton method (B-form only).

    ``B ← B + s∘s·(sᵀy)/Σ s_i⁴``, with the ``(lb, ub)`` truncation-to-1 of ``DNRTR`` applied before use and in
    ``get_H``.

    Args:
        lb: lower truncation bound. Defaults to 0.01.
        ub: upper truncation bound. Defaults to 1e5.
{qn_args}

    Reference:
        S. Nosrati, K. Amini, "A new diagonal quasi-Newton algorithm for unconstrained optimization problems",
        *Applications of Mathematics* 69(4):501–512, 2024.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.NewDQN(), tz.m.Backtracking())
        ```
    """

    def update_B(self, B, pair: SecantPair):
        return new_dqn_B_(B, pair.s, pair.y, pair.sy)
