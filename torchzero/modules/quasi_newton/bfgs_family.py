"""Symmetric rank-two quasi-Newton updates: BFGS, DFP, Oren–Spedicato SSVM, Hoshino, Fletcher's VMM and the
Moghrabi–Hassan–Askar self-scaling update (``NewSSM``).

All formulas act on a symmetric ``H`` (or ``B``), so ``yᵀH`` is computed as ``(Hy)ᵀ``; each is a couple of
rank-one ``addr_`` calls (O(n²), no n×n temporaries).
"""
from __future__ import annotations

import math
from typing import Literal

import torch

from ...core import Chainable
from .base import HessianUpdateStrategy, SecantPair, fill_doc, is_finite, safe

# --------------------------------------------------------------------------------------------------
# functional forms (in place; return the matrix)
# --------------------------------------------------------------------------------------------------


def bfgs_H_(H: torch.Tensor, s: torch.Tensor, y: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """BFGS inverse update ``H ← H + (ρ + yᵀHy)·ssᵀ/ρ² − (Hy sᵀ + s yᵀH)/ρ`` with ``ρ = sᵀy`` (in place).

    This is the expanded product form ``(I − syᵀ/ρ) H (I − ysᵀ/ρ) + ssᵀ/ρ`` (N&W eq. 6.17)."""
    Hy = H @ y
    coef = (sy + y.dot(Hy)) / (sy * sy)
    Hy_rho = Hy / sy
    H.addr_(s * coef - Hy_rho, s)
    H.addr_(s, Hy_rho, alpha=-1)
    return H


def bfgs_B_(B: torch.Tensor, s: torch.Tensor, y: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """BFGS direct update ``B ← B + yyᵀ/(sᵀy) − (Bs)(Bs)ᵀ/safe(sᵀBs)`` (in place, N&W eq. 6.19)."""
    Bs = B @ s
    B.addr_(y / sy, y)
    B.addr_(Bs / safe(s.dot(Bs)), Bs, alpha=-1)
    return B


def dfp_H_(H: torch.Tensor, s: torch.Tensor, y: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """DFP inverse update ``H ← H + ssᵀ/(sᵀy) − (Hy)(yᵀH)/safe(yᵀHy)`` (in place, N&W eq. 6.16)."""
    Hy = H @ y
    H.addr_(s / sy, s)
    H.addr_(Hy / safe(y.dot(Hy)), Hy, alpha=-1)
    return H


def dfp_B_(B: torch.Tensor, s: torch.Tensor, y: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """DFP direct update ``B ← (I − ρ y sᵀ) B (I − ρ s yᵀ) + ρ yyᵀ``, ``ρ = 1/sᵀy`` (in place, N&W eq. 6.15), expanded
    as ``B − ρ y(Bs)ᵀ − ρ (Bs)yᵀ + (ρ² sᵀBs + ρ) yyᵀ``."""
    rho = 1 / sy
    Bs = B @ s
    B.addr_(y * (rho * rho * s.dot(Bs) + rho) - Bs * rho, y)
    B.addr_(y, Bs * rho, alpha=-1)
    return B


def ssvm_H_(H: torch.Tensor, s: torch.Tensor, y: torch.Tensor, g: torch.Tensor,
            switch: tuple[float, float] | int) -> torch.Tensor | None:
    """Oren–Spedicato self-scaling update ``H ← u·(H − (Hy)(yᵀH)/τ + θ vvᵀ) + ssᵀ/ω`` (in place); None when the
    scalars are not finite (e.g. the square root of a negative ``ε/τ`` with switch 2)."""
    Hy = H @ y
    omega, tau_raw, gs, gHy = torch.stack([s.dot(y), y.dot(Hy), g.dot(s), g.dot(Hy)]).tolist()
    tiny2 = 2 * torch.finfo(H.dtype).tiny

    def sf(z: float) -> float:  # safe() for Python floats
        return z if abs(z) >= tiny2 else math.copysign(tiny2, z if z != 0 else 1.0)

    omega, tau = sf(omega), sf(tau_raw)
    eps = gs / sf(gHy)
    if isinstance(switch, tuple):
        phi, theta = switch
    elif switch in (1, 3):
        if eps / omega <= 1:
            phi, theta = eps / omega, 0.0
        elif omega / tau >= 1:
            phi, theta = omega / tau, 1.0
        else:
            phi = 1.0
            num = eps - omega if switch == 1 else tau - omega
            theta = omega * num / sf(eps * tau - omega**2)
    elif switch == 2:
        eps = sf(eps)
        ratio, prod = eps / tau, tau * eps / omega**2
        if ratio < 0 or prod < 0:
            return None
        phi, theta = math.sqrt(ratio), 1 / (1 + math.sqrt(prod))
    else:  # 4
        phi, theta = eps / tau, 0.5
    u = phi * eps + (1 - phi) * omega / tau
    if not is_finite(u, theta, phi):
        return None
    # θ·vvᵀ = θτ·wwᵀ with w = s/ω − Hy/τ (no square root of τ needed)
    w = s / omega - Hy / tau
    H.addr_(Hy, Hy, alpha=-1 / tau)
    if theta != 0:
        H.addr_(w, w, alpha=theta * tau)
    H.mul_(u)
    H.addr_(s, s, alpha=1 / omega)
    return H


def horisho_H_(H: torch.Tensor, s: torch.Tensor, y: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """Hoshino's update ``H ← H + [(1 + 2τ/ω) ssᵀ − s(yᵀH) − (Hy)sᵀ − (Hy)(yᵀH)]/safe(ω + τ)``, ``ω = yᵀs``,
    ``τ = yᵀHy`` (in place)."""
    Hy = H @ y
    tau = y.dot(Hy)
    den = safe(sy + tau)
    coef = (1 + 2 * tau / sy) / den
    Hy_den = Hy / den
    H.addr_(s * coef - Hy_den, s)
    H.addr_(s + Hy, Hy_den, alpha=-1)
    return H


def newssm_H_(H: torch.Tensor, s: torch.Tensor, y: torch.Tensor, sy: torch.Tensor, f: torch.Tensor,
              f_prev: torch.Tensor, type: Literal[1, 2]) -> torch.Tensor:
    """Self-scaling BFGS-type update ``H ← H − (Hy sᵀ + s yᵀH)/ω + (1/ρ + yᵀHy/ω)·ssᵀ/ω`` with ``ω = sᵀy`` and
    ``ρ = (2ω + 2(f − f_prev))/ω`` (type 1) or ``ρ = (f_prev − f + 1/(2ω))/ω`` (type 2); in place."""
    if type == 1:
        rho = (2 * sy + 2 * (f - f_prev)) / sy
    else:
        rho = (f_prev - f + 1 / (2 * sy)) / sy
    Hy = H @ y
    coef = (1 / safe(rho) + y.dot(Hy) / sy) / sy
    Hy_w = Hy / sy
    H.addr_(s * coef - Hy_w, s)
    H.addr_(s, Hy_w, alpha=-1)
    return H


# --------------------------------------------------------------------------------------------------
# classes
# --------------------------------------------------------------------------------------------------
@fill_doc(tol="curvature condition: the update is skipped when ``sᵀy ≤ tol`` (B-form: ``sᵀy < tol``).")
class BFGS(HessianUpdateStrategy):
    """Dense Broyden–Fletcher–Goldfarb–Shanno quasi-Newton method.

    With ``ρ = sᵀy``:

    - H-form: ``H ← H + (ρ + yᵀHy)·ssᵀ/ρ² − (H y sᵀ + s yᵀH)/ρ``, output ``u = H g``;
    - B-form: ``B ← B + yyᵀ/(sᵀy) − (Bs)(Bs)ᵀ/(sᵀBs)``, output ``u = solve(B, g)``.

    Both forms are exact inverses of each other. With exact line searches on a strictly convex quadratic it
    terminates in n steps and recovers ``H = A⁻¹``. O(n²) memory; pair it with a line search or use it inside a
    trust region with ``inverse=False``. The shared quasi-Newton step is described in ``HessianUpdateStrategy``.

    Args:
{qn_args}

    Reference:
        Broyden (1970), Fletcher (1970), Goldfarb (1970), Shanno (1970); J. Nocedal, S. J. Wright, *Numerical
        Optimization*, 2nd ed., §6.1 (eqs. 6.17, 6.19, 6.20).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.BFGS(), tz.m.StrongWolfe())
        ```
    """

    def __init__(self, init_scale: float | Literal["auto"] = "auto", tol: float = 1e-32, ptol: float | None = 1e-32,
                 ptol_restart: bool = False, gtol: float | None = 1e-32, restart_interval: int | None = None,
                 beta: float | None = None, update_freq: int = 1, scale_first: bool = False,
                 concat_params: bool = True, inverse: bool = True, inner: Chainable | None = None):
        super().__init__(init_scale=init_scale, tol=tol, ptol=ptol, ptol_restart=ptol_restart, gtol=gtol,
                         restart_interval=restart_interval, beta=beta, update_freq=update_freq,
                         scale_first=scale_first, concat_params=concat_params, inverse=inverse, inner=inner)

    def update_H(self, H, pair: SecantPair):
        if pair.sy_f <= pair.setting["tol"]:
            return None
        return bfgs_H_(H, pair.s, pair.y, pair.sy)

    def update_B(self, B, pair: SecantPair):
        if pair.sy_f < pair.setting["tol"]:
            return None
        return bfgs_B_(B, pair.s, pair.y, pair.sy)


@fill_doc(tol="the update is skipped when ``|sᵀy| ≤ tol``.")
class DFP(HessianUpdateStrategy):
    """Dense Davidon–Fletcher–Powell quasi-Newton method.

    - H-form: ``H ← H + ssᵀ/(sᵀy) − (Hy)(yᵀH)/(yᵀHy)``;
    - B-form: ``B ← (I − y sᵀ/sᵀy)·B·(I − s yᵀ/sᵀy) + yyᵀ/(sᵀy)`` (the inverse of the H-form).

    Accurate line searches or a trust region are advisable; O(n²) memory.

    Args:
{qn_args}

    Reference:
        W. C. Davidon (1959); R. Fletcher, M. J. D. Powell (1963); Nocedal & Wright 2nd ed., §6.1 (eqs. 6.15–6.16).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.DFP(), tz.m.StrongWolfe())
        ```
    """

    def __init__(self, init_scale: float | Literal["auto"] = "auto", tol: float = 1e-32, ptol: float | None = 1e-32,
                 ptol_restart: bool = False, gtol: float | None = 1e-32, restart_interval: int | None = None,
                 beta: float | None = None, update_freq: int = 1, scale_first: bool = False,
                 concat_params: bool = True, inverse: bool = True, inner: Chainable | None = None):
        super().__init__(init_scale=init_scale, tol=tol, ptol=ptol, ptol_restart=ptol_restart, gtol=gtol,
                         restart_interval=restart_interval, beta=beta, update_freq=update_freq,
                         scale_first=scale_first, concat_params=concat_params, inverse=inverse, inner=inner)

    def update_H(self, H, pair: SecantPair):
        if abs(pair.sy_f) <= pair.setting["tol"]:
            return None
        return dfp_H_(H, pair.s, pair.y, pair.sy)

    def update_B(self, B, pair: SecantPair):
        if abs(pair.sy_f) <= pair.setting["tol"]:
            return None
        return dfp_B_(B, pair.s, pair.y, pair.sy)


@fill_doc(tol="the update is skipped when ``sᵀy < tol``.", inverse="none")
class SSVM(HessianUpdateStrategy):
    """Oren–Spedicato self-scaling variable metric method (H-form).

    With ``ω = sᵀy``, ``τ = yᵀHy``, ``ε = gᵀs/(gᵀHy)`` (``g`` the current incoming update) and
    ``v = √τ·(s/ω − Hy/τ)``:

    ``H ← u·(H − (Hy)(yᵀH)/τ + θ·vvᵀ) + ssᵀ/ω``,  ``u = φ·ε + (1 − φ)·ω/τ``.

    ``switch`` picks ``(φ, θ)``: a tuple gives them directly; 1 or 3: if ``ε/ω ≤ 1`` then ``φ = ε/ω, θ = 0``,
    elif ``ω/τ ≥ 1`` then ``φ = ω/τ, θ = 1``, else ``φ = 1`` and ``θ = ω(ε − ω)/(ετ − ω²)`` (1) or
    ``θ = ω(τ − ω)/(ετ − ω²)`` (3); 2: ``φ = √(ε/τ)``, ``θ = 1/(1 + √(τε/ω²))``; 4: ``φ = ε/τ``, ``θ = 1/2``.
    Denominators are guarded; an update whose scalars are not finite (e.g. the square root of a negative ``ε/τ``
    with switch 2) is skipped. ``H₊y = s`` holds for every switch.

    Args:
        switch: the ``(φ, θ)`` rule, a tuple or 1, 2, 3, 4. Defaults to 3.
{qn_args}

    Reference:
        S. S. Oren, E. Spedicato, "Optimal conditioning of self-scaling variable metric algorithms",
        *Mathematical Programming* 10(1):70–90, 1976.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.SSVM(switch=3), tz.m.StrongWolfe())
        ```
    """

    _forms = ("H",)

    def __init__(self, switch: tuple[float, float] | Literal[1, 2, 3, 4] = 3,
                 init_scale: float | Literal["auto"] = "auto", tol: float = 1e-32, ptol: float | None = 1e-32,
                 ptol_restart: bool = False, gtol: float | None = 1e-32, restart_interval: int | None = None,
                 beta: float | None = None, update_freq: int = 1, scale_first: bool = False,
                 concat_params: bool = True, inner: Chainable | None = None):
        if isinstance(switch, (tuple, list)):
            if len(switch) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in switch):
                raise ValueError(f"SSVM: switch tuple must be two numbers (phi, theta), got {switch!r}")
            switch = (float(switch[0]), float(switch[1]))
        elif isinstance(switch, bool) or switch not in (1, 2, 3, 4):
            raise ValueError(f"SSVM: switch must be 1, 2, 3, 4 or a (phi, theta) tuple, got {switch!r}")
        super().__init__(dict(switch=switch), init_scale=init_scale, tol=tol, ptol=ptol, ptol_restart=ptol_restart,
                         gtol=gtol, restart_interval=restart_interval, beta=beta, update_freq=update_freq,
                         scale_first=scale_first, concat_params=concat_params, inverse=True, inner=inner)

    def update_H(self, H, pair: SecantPair):
        if pair.sy_f < pair.setting["tol"]:
            return None
        switch = pair.setting["switch"]
        if isinstance(switch, list):  # a tuple comes back from a state dict as a list
            switch = tuple(switch)
        return ssvm_H_(H, pair.s, pair.y, pair.g, switch)


@fill_doc(tol="the update is skipped when ``|yᵀs| ≤ tol``.", inverse="H")
class Horisho(HessianUpdateStrategy):
    """Hoshino's symmetric variable-metric method (H-form; the class name keeps the reference spelling).

    With ``ω = yᵀs``, ``τ = yᵀHy``:

    ``H ← H + [(1 + 2τ/ω)·ssᵀ − s(yᵀH) − (Hy)sᵀ − (Hy)(yᵀH)] / (ω + τ)``.

    It satisfies ``H₊y = s`` and differs from both BFGS and DFP.

    Args:
{qn_args}

    Reference:
        S. Hoshino, "A formulation of variable metric methods", *IMA J. Appl. Math.* 10(3):394–403, 1972.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Horisho(), tz.m.StrongWolfe())
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
        if abs(pair.sy_f) <= pair.setting["tol"]:
            return None
        return horisho_H_(H, pair.s, pair.y, pair.sy)


@fill_doc(tol="the update is skipped when ``|sᵀy| < tol`` (negative curvature pairs are applied).", inverse="H")
class FletcherVMM(HessianUpdateStrategy):
    """Fletcher's 1970 variable-metric method (H-form): the BFGS inverse formula

    ``H ← H − (s(yᵀH) + (Hy)sᵀ)/ω + (1 + yᵀHy/ω)·ssᵀ/ω``,  ``ω = sᵀy``,

    but the skip test is ``|sᵀy| < tol``, so pairs with negative curvature are applied too.

    Args:
{qn_args}

    Reference:
        R. Fletcher, "A new approach to variable metric algorithms", *Computer Journal* 13(3):317–322, 1970.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.FletcherVMM(), tz.m.StrongWolfe())
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
        if abs(pair.sy_f) < pair.setting["tol"]:
            return None
        return bfgs_H_(H, pair.s, pair.y, pair.sy)


@fill_doc(tol="the update is skipped when ``sᵀy < tol``.", inverse="none")
class NewSSM(HessianUpdateStrategy):
    """Moghrabi–Hassan–Askar self-scaling BFGS-type method (H-form) using loss values.

    With ``ω = sᵀy`` and the losses ``f`` (current) and ``f_prev`` (at the previous update):
    type 1 ``ρ = (2ω + 2(f − f_prev))/ω``; type 2 ``ρ = (f_prev − f + 1/(2ω))/ω``; then

    ``H ← H − (Hy sᵀ + s yᵀH)/ω + (1/ρ + yᵀHy/ω)·ssᵀ/ω``,

    which satisfies the scaled secant equation ``H₊y = s/ρ`` and reduces to BFGS for ``ρ = 1``. It needs the loss
    every step (a closure, or ``loss=`` passed to ``step``) and a line search such as ``StrongWolfe`` for stability.

    Args:
        type: 1 or 2, the formula of ``ρ``. Defaults to 1.
{qn_args}

    Reference:
        I. A. R. Moghrabi, B. A. Hassan, A. Askar, "New self-scaling quasi-Newton methods for unconstrained
        optimization", *Int. J. Math. Comput. Sci.* 17, 2022.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.NewSSM(), tz.m.StrongWolfe())
        ```
    """

    _forms = ("H",)

    def __init__(self, type: Literal[1, 2] = 1, init_scale: float | Literal["auto"] = "auto", tol: float = 1e-32,
                 ptol: float | None = 1e-32, ptol_restart: bool = False, gtol: float | None = 1e-32,
                 restart_interval: int | None = None, beta: float | None = None, update_freq: int = 1,
                 scale_first: bool = False, concat_params: bool = True, inner: Chainable | None = None):
        if isinstance(type, bool) or type not in (1, 2):
            raise ValueError(f"NewSSM: type must be 1 or 2, got {type!r}")
        super().__init__(dict(type=type), init_scale=init_scale, tol=tol, ptol=ptol, ptol_restart=ptol_restart,
                         gtol=gtol, restart_interval=restart_interval, beta=beta, update_freq=update_freq,
                         scale_first=scale_first, concat_params=concat_params, inverse=True, inner=inner,
                         uses_loss=True)

    def update_H(self, H, pair: SecantPair):
        if pair.sy_f < pair.setting["tol"]:
            return None
        if pair.loss is None or pair.f_prev is None:
            raise RuntimeError("NewSSM requires the loss at every step: pass a closure or `loss=` to `step`")
        f = torch.as_tensor(pair.loss, dtype=H.dtype, device=H.device)
        f_prev = torch.as_tensor(pair.f_prev, dtype=H.dtype, device=H.device)
        return newssm_H_(H, pair.s, pair.y, pair.sy, f, f_prev, pair.setting["type"])
