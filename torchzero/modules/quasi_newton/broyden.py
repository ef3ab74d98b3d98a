"""Non-symmetric rank-one secant updates of the Spedicato–Huang family and relatives: Broyden's good and bad
methods, Greenstadt's two methods, the inverse column-updating method, Thomas's optimal method, Pearson's and
McCormick's updates.

All H-form methods of the family share ``H ← H − (Hy − s)·cᵀ/(cᵀy)`` (so ``H₊y = s`` for any ``c``) and differ in
the choice of ``c``; ``family_update_H_`` is that formula.
"""
from __future__ import annotations

from typing import Literal

import torch

from ...core import Chainable
from .base import HessianUpdateStrategy, SecantPair, fill_doc, safe

# --------------------------------------------------------------------------------------------------
# functional forms (in place; return the matrix)
# --------------------------------------------------------------------------------------------------


def family_update_H_(H: torch.Tensor, s: torch.Tensor, y: torch.Tensor, c: torch.Tensor,
                     Hy: torch.Tensor | None = None) -> torch.Tensor:
    """Spedicato–Huang family: ``H ← H − (Hy − s)·cᵀ/safe(cᵀy)`` in place (``Hy`` may be passed if known)."""
    if Hy is None:
        Hy = H @ y
    H.addr_((s - Hy) / safe(c.dot(y)), c)
    return H


def broyden_good_B_(B: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Broyden's first method, ``B ← B + (y − Bs)·sᵀ/safe(sᵀs)`` in place."""
    B.addr_((y - B @ s) / safe(s.dot(s)), s)
    return B


def broyden_bad_B_(B: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Broyden's second method in B-form, ``B ← B + (y − Bs)·yᵀ/safe(yᵀs)`` in place."""
    B.addr_((y - B @ s) / safe(y.dot(s)), y)
    return B


def icum_H_(H: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Inverse column update: ``j = argmax|y_i|``, ``H[:, j] ← H[:, j] + (s − Hy)/safe(y_j)`` in place (no sync)."""
    j = y.abs().argmax().view(1)
    column = (s - H @ y) / safe(y.index_select(0, j).squeeze(0))
    H.index_add_(1, j, column.unsqueeze(1))
    return H


def thomas_H_(H: torch.Tensor, R: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Thomas's optimal method, in place on ``H`` and ``R``: with ``σ = ‖s‖``, ``d = (R + (σ/2)I)s``,
    ``R ← (1 + σ)(σI + R − ddᵀ/safe(dᵀs))``, then the family update with ``c = Hᵀd``."""
    sigma = torch.linalg.vector_norm(s)
    d = R @ s + s * (sigma / 2)
    R.addr_(d / safe(d.dot(s)), d, alpha=-1)
    R.diagonal().add_(sigma)
    R.mul_(1 + sigma)
    return family_update_H_(H, s, y, c=d @ H)


# --------------------------------------------------------------------------------------------------
# classes
# --------------------------------------------------------------------------------------------------
class _FamilyH(HessianUpdateStrategy):
    """A member of the Spedicato–Huang family in H-form; subclasses define ``family_c``."""

    _forms = ("H",)

    def __init__(self, init_scale: float | Literal["auto"] = "auto", tol: float = 1e-32, ptol: float | None = 1e-32,
                 ptol_restart: bool = False, gtol: float | None = 1e-32, restart_interval: int | None = None,
                 beta: float | None = None, update_freq: int = 1, scale_first: bool = False,
                 concat_params: bool = True, inverse: bool = True, inner: Chainable | None = None):
        super().__init__(init_scale=init_scale, tol=tol, ptol=ptol, ptol_restart=ptol_restart, gtol=gtol,
                         restart_interval=restart_interval, beta=beta, update_freq=update_freq,
                         scale_first=scale_first, concat_params=concat_params, inverse=inverse, inner=inner)

    def family_c(self, H: torch.Tensor, Hy: torch.Tensor, pair: SecantPair) -> torch.Tensor:
        raise NotImplementedError

    def update_H(self, H, pair: SecantPair):
        Hy = H @ pair.y
        return family_update_H_(H, pair.s, pair.y, self.family_c(H, Hy, pair), Hy=Hy)


@fill_doc()
class BroydenGood(_FamilyH):
    """Broyden's first ("good") non-symmetric secant method.

    - H-form: ``H ← H − (Hy − s)·cᵀ/(cᵀy)`` with ``c = Hᵀs``;
    - B-form: ``B ← B + (y − Bs)·sᵀ/(sᵀs)``.

    The two forms are mutual inverses (Sherman–Morrison). ``B₊s = y`` and ``B₊v = Bv`` for every ``v ⊥ s``.
    A trust region or an accurate line search is advisable.

    Args:
{qn_args}

    Reference:
        C. G. Broyden, "A class of methods for solving nonlinear simultaneous equations", *Math. Comp.* 19, 1965;
        E. Spedicato, Z. Huang, *Computing* 58(1):69–89, 1997.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.BroydenGood(), tz.m.StrongWolfe())
        ```
    """

    _forms = ("H", "B")

    def family_c(self, H, Hy, pair):
        return pair.s @ H

    def update_B(self, B, pair: SecantPair):
        return broyden_good_B_(B, pair.s, pair.y)


@fill_doc()
class BroydenBad(_FamilyH):
    """Broyden's second ("bad") secant method.

    - H-form: ``H ← H + (s − Hy)·yᵀ/(yᵀy)`` (the family formula with ``c = y``);
    - B-form: ``B ← B + (y − Bs)·yᵀ/(yᵀs)``, a separate secant formula (not the inverse of the H-form).

    ``H₊y = s``, ``B₊s = y``, and ``H₊v = Hv`` for every ``v ⊥ y``.

    Args:
{qn_args}

    Reference:
        C. G. Broyden (1965); E. Spedicato, Z. Huang (1997).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.BroydenBad(), tz.m.StrongWolfe())
        ```
    """

    _forms = ("H", "B")

    def family_c(self, H, Hy, pair):
        return pair.y

    def update_B(self, B, pair: SecantPair):
        return broyden_bad_B_(B, pair.s, pair.y)


@fill_doc(inverse="H")
class Greenstadt1(_FamilyH):
    """Greenstadt's first method (H-form): ``H ← H − (Hy − s)·cᵀ/(cᵀy)`` with ``c = g_prev``, the previous
    incoming update (the one stored at the previous secant update, before it is refreshed).

    Args:
{qn_args}

    Reference:
        J. Greenstadt, "Variations on variable-metric methods", *Math. Comp.* 24, 1970; as formulated in
        E. Spedicato, Z. Huang (1997).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Greenstadt1(), tz.m.StrongWolfe())
        ```
    """

    def family_c(self, H, Hy, pair):
        return pair.g_prev


@fill_doc(inverse="H")
class Greenstadt2(_FamilyH):
    """Greenstadt's second method (H-form): ``H ← H − (Hy − s)·cᵀ/(cᵀy)`` with ``c = H·(Hy)``; for a symmetric
    ``H`` the correction is ``−(Hy − s)(H²y)ᵀ/(yᵀH²y)``.

    Args:
{qn_args}

    Reference:
        J. Greenstadt (1970); E. Spedicato, Z. Huang (1997).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Greenstadt2(), tz.m.StrongWolfe())
        ```
    """

    def family_c(self, H, Hy, pair):
        return H @ Hy


@fill_doc(inverse="H")
class ICUM(HessianUpdateStrategy):
    """Inverse column-updating method (H-form): only the column ``j = argmax_i |y_i|`` changes,

    ``H[:, j] ← H[:, j] + (s − Hy)/y_j``,

    so ``H₊y = s``. Cheaper per update than rank-one methods (O(n²) for ``Hy``, O(n) for the change).

    Args:
{qn_args}

    Reference:
        V. L. R. Lopes, J. M. Martínez, "Convergence properties of the inverse column-updating method",
        *Optimization Methods & Software* 6(2):127–144, 1995.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.ICUM(), tz.m.StrongWolfe())
        ```
    """

    _forms = ("H",)

    def __init__(self, init_scale: float | Literal["auto"] = "auto", tol: float = 1e-32, ptol: float | None = 1e-32,
                 ptol_restart: bool = False, gtol: float | None = 1e-32, restart_interval: int | None = None,
                 beta: float | None = None, update_freq: int = 1, scale_first: bool = False,
                 concat_params: bool = True, inverse: bool = True, inner: Chainable | None = None):
        super().__init__(init_scale=init_scale, tol=tol, ptol=ptol, ptol_restart=ptol_restart, gtol=gtol,
                         restart_interval=restart_interval, beta=beta, update_freq=update_freq,
                         scale_first=scale_first, concat_params=concat_params, inverse=inverse, inner=inner)

    def update_H(self, H, pair: SecantPair):
        return icum_H_(H, pair.s, pair.y)


@fill_doc(inverse="H")
class ThomasOptimalMethod(_FamilyH):
    """Thomas's "optimal" sequential-estimation quasi-Newton method (H-form).

    Keeps an auxiliary symmetric matrix ``R`` (``state['R']``, starts at ``I``). Each update, with ``σ = ‖s‖``:
    ``d = (R + (σ/2)I)·s``; ``R ← (1 + σ)·(σI + R − ddᵀ/(dᵀs))`` (using the old ``R``); then
    ``H ← H − (Hy − s)·cᵀ/(cᵀy)`` with ``c = Hᵀd``. A reset of ``H`` also discards ``R`` in every state.

    Args:
{qn_args}

    Reference:
        S. W. Thomas, *Sequential estimation techniques for quasi-Newton algorithms*, PhD thesis, Cornell
        University, 1975.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.ThomasOptimalMethod(), tz.m.StrongWolfe())
        ```
    """

    def update_H(self, H, pair: SecantPair):
        state = pair.state
        R = state.get("R")
        if R is None:
            R = state["R"] = torch.eye(H.shape[0], device=H.device, dtype=H.dtype)
        return thomas_H_(H, R, pair.s, pair.y)

    def reset_matrix(self, M, s, y, state, setting):
        super().reset_matrix(M, s, y, state, setting)
        for st in self.state.values():
            st.pop("R", None)


@fill_doc(inverse="H")
class Pearson(_FamilyH):
    """Pearson's rank-one variable-metric method (H-form): ``H ← H + (s − Hy)·(Hy)ᵀ/(yᵀHy)`` (the family formula
    with ``c = Hy``). ``H`` does not stay symmetric.

    Args:
{qn_args}

    Reference:
        J. D. Pearson, "Variable metric methods of minimisation", *Computer Journal* 12(2):171–178, 1969.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Pearson(), tz.m.StrongWolfe())
        ```
    """

    def family_c(self, H, Hy, pair):
        return Hy


@fill_doc(inverse="H")
class McCormick(_FamilyH):
    """McCormick's rank-one method (Pearson's "Algorithm 2"), H-form: ``H ← H + (s − Hy)·sᵀ/(sᵀy)`` (the family
    formula with ``c = s``). Non-symmetric; ``H₊v = Hv`` for every ``v ⊥ s``.

    Args:
{qn_args}

    Reference:
        J. D. Pearson, "Variable metric methods of minimisation", 1969, Algorithm 2 (attributed to McCormick).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.McCormick(), tz.m.StrongWolfe())
        ```
    """

    def family_c(self, H, Hy, pair):
        return pair.s
