"""Nonlinear conjugate gradient methods on a shared base, and Pearson's projected gradient method.

Conventions: ``g`` is the incoming update after ``inner``, ``g_prev`` and ``u_prev`` the stored previous input and
output, ``y = g − g_prev``; the output is ``u = g + β·u_prev`` (the optimizer subtracts ``u``, so ``u = −d`` for the
textbook descent direction ``d``, and each ``β`` below equals the textbook formula written with ``d``). All dot
products are global over the parameters; ``β`` stays on the device (no host syncs).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import torch

from ...core import Chainable, Transform
from ..quasi_newton.base import HessianUpdateStrategy, SecantPair, fill_doc, safe


def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Global dot product of two lists of tensors (a 0-d tensor)."""
    if len(a) == 1:
        return a[0].reshape(-1).dot(b[0].reshape(-1))
    return torch.stack([x.reshape(-1).dot(z.reshape(-1)) for x, z in zip(a, b)]).sum()


def squared_norm(a: Sequence[torch.Tensor]) -> torch.Tensor:
    """``‖a‖²`` over all tensors (one ``_foreach_norm``)."""
    return torch.stack(torch._foreach_norm(a)).square().sum()


def guarded_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num/den``, or 0 when ``|den| ≤ 2·tiny``."""
    tiny2 = 2 * torch.finfo(den.dtype).tiny
    small = den.abs() <= tiny2
    return torch.where(small, torch.zeros_like(num), num / torch.where(small, torch.ones_like(den), den))


# --------------------------------------------------------------------------------------------------
# β formulas (g, g_prev, u_prev are lists of tensors)
# --------------------------------------------------------------------------------------------------
def polak_ribiere_beta(g, g_prev, u_prev) -> torch.Tensor:
    """``β = gᵀy/‖g_prev‖²``."""
    return guarded_ratio(dot(g, torch._foreach_sub(g, g_prev)), squared_norm(g_prev))


def hestenes_stiefel_beta(g, g_prev, u_prev) -> torch.Tensor:
    """``β = −gᵀy/(u_prevᵀy)``."""
    y = torch._foreach_sub(g, g_prev)
    return guarded_ratio(-dot(g, y), dot(u_prev, y))


def dai_yuan_beta(g, g_prev, u_prev) -> torch.Tensor:
    """``β = −‖g‖²/(u_prevᵀy)``."""
    y = torch._foreach_sub(g, g_prev)
    return guarded_ratio(-squared_norm(g), dot(u_prev, y))


def liu_storey_beta(g, g_prev, u_prev) -> torch.Tensor:
    """``β = gᵀy/(u_prevᵀg_prev)``."""
    return guarded_ratio(dot(g, torch._foreach_sub(g, g_prev)), dot(u_prev, g_prev))


def conjugate_descent_beta(g, g_prev, u_prev) -> torch.Tensor:
    """``β = ‖g‖²/(u_prevᵀg_prev)``."""
    return guarded_ratio(squared_norm(g), dot(u_prev, g_prev))


def hager_zhang_beta(g, g_prev, u_prev) -> torch.Tensor:
    """``β = −(y − 2·u_prev·‖y‖²/δ)ᵀg/δ`` with ``δ = u_prevᵀy``."""
    y = torch._foreach_sub(g, g_prev)
    delta = dot(u_prev, y)
    safe_delta = torch.where(delta.abs() <= 2 * torch.finfo(delta.dtype).tiny, torch.ones_like(delta), delta)
    num = -(dot(y, g) - 2 * squared_norm(y) * dot(u_prev, g) / safe_delta)
    return guarded_ratio(num, delta)


def dyhs_beta(g, g_prev, u_prev) -> torch.Tensor:
    """``β = max(0, min(max(0, β_DY), max(0, β_HS)))`` with ``β_DY = −‖g‖²/δ``, ``β_HS = −gᵀy/δ``, ``δ = u_prevᵀy``."""
    y = torch._foreach_sub(g, g_prev)
    delta = dot(u_prev, y)
    beta_dy = guarded_ratio(-squared_norm(g), delta)
    beta_hs = guarded_ratio(-dot(g, y), delta)
    return torch.minimum(beta_dy.clamp(min=0), beta_hs.clamp(min=0)).clamp(min=0)


# --------------------------------------------------------------------------------------------------
# base
# --------------------------------------------------------------------------------------------------
class ConjugateGradientBase(Transform, ABC):
    """Base class of nonlinear conjugate gradient methods (multi-tensor, global dot products).

    State: ``g_prev`` and ``u_prev`` per parameter and ``global_state['step']``. The first step after construction
    or a reset outputs ``g`` (the incoming update after ``inner``) unchanged and stores ``g_prev = u_prev = g``.
    Later steps compute ``β = get_beta(g, g_prev, u_prev)`` (0 when its denominator is ``≤ 2·tiny`` in magnitude),
    ``β ← max(0, β)`` with ``clip_beta``, output ``u = g + β·u_prev``, and store ``u_prev ← u``, ``g_prev ← g``
    (refreshed every step, unlike torchzero 0.3.14 which kept the ``g_prev`` of the start of the cycle and so lost
    finite termination of Polak–Ribière on quadratics). After producing the step-k output, if
    ``k % restart_interval == 0`` all state is cleared (``'auto'`` = number of scalars + 1; None disables).
    All classes need a line search after them to set the step length.

    Non-finite values: a non-finite ``β`` (after a non-finite input, whose NaN then sits in the stored state, or on
    overflow) restarts the method: the output is ``g`` and the state is re-initialised from it, so one bad
    gradient does not poison later steps.

    Example:
        A subclass only defines ``get_beta``:

        ```python
        class SteepestDescent(ConjugateGradientBase):
            def get_beta(self, g, g_prev, u_prev):
                return torch.zeros((), dtype=g[0].dtype, device=g[0].device)
        ```

    Args:
        defaults: extra settings of the subclass.
        clip_beta: clip ``β`` at 0 from below. Defaults to False.
        restart_interval: restart every this many steps, ``'auto'`` or None. Defaults to None.
        inner: modules applied to the incoming update first. Defaults to None.
    """

    def __init__(self, defaults: dict[str, Any] | None = None, clip_beta: bool = False,
                 restart_interval: int | None | Literal["auto"] = None, inner: Chainable | None = None):
        name = type(self).__name__
        if not isinstance(clip_beta, bool):
            raise TypeError(f"{name}: clip_beta must be a bool, got {type(clip_beta).__name__}")
        if restart_interval is not None and restart_interval != "auto":
            if isinstance(restart_interval, bool) or not isinstance(restart_interval, int) or restart_interval < 1:
                raise ValueError(f"{name}: restart_interval must be a positive int, 'auto' or None, "
                                 f"got {restart_interval!r}")
        all_defaults = dict(clip_beta=clip_beta, restart_interval=restart_interval)
        if defaults is not None:
            all_defaults.update(defaults)
        super().__init__(all_defaults, inner=inner)

    @abstractmethod
    def get_beta(self, g: list[torch.Tensor], g_prev: list[torch.Tensor], u_prev: list[torch.Tensor]
                 ) -> torch.Tensor:
        """``β`` as a 0-d tensor, from the current input and the stored previous input and output."""

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        st = self.global_state
        step = st["step"] = st.get("step", 0) + 1
        s0 = settings[0]
        if "g_prev" not in states[0]:
            for state, t in zip(states, tensors):
                state["g_prev"] = t.clone()
                state["u_prev"] = t.clone()
            self.first_step(tensors)
        else:
            g_prev = [s["g_prev"] for s in states]
            u_prev = [s["u_prev"] for s in states]
            beta = self.get_beta(tensors, g_prev, u_prev)
            if s0["clip_beta"]:
                beta = beta.clamp(min=0)
            torch._foreach_copy_(g_prev, tensors)
            # the one host sync of the step: a non-finite β (after a non-finite input, or overflow) restarts
            if bool(torch.isfinite(beta)):
                torch._foreach_mul_(u_prev, beta)
                torch._foreach_add_(u_prev, tensors)
                torch._foreach_copy_(tensors, u_prev)
            else:
                torch._foreach_copy_(u_prev, tensors)
                self.first_step(tensors)

        restart_interval = s0["restart_interval"]
        if restart_interval == "auto":
            restart_interval = sum(t.numel() for t in tensors) + 1
        if restart_interval is not None and step % restart_interval == 0:
            self.state.clear()
            self.global_state.clear()
        return tensors

    def first_step(self, g: list[torch.Tensor]) -> None:
        """Hook called on the first step after a reset."""

    def reset_for_online(self) -> None:
        super().reset_for_online()
        self.state.clear()
        self.global_state.clear()


def _cg_doc(beta: str, clip_beta: bool, restart: str, reference: str, example: str, extra: str = "") -> str:
    return f"""{beta}

    Output ``u = g + β·u_prev`` (see ``ConjugateGradientBase``: ``g`` is the incoming update after ``inner``,
    ``y = g − g_prev``; ``g_prev`` is refreshed every step).{extra}

    Args:
        restart_interval: restart every this many steps; ``'auto'`` is the number of scalars + 1; None disables.
            Defaults to {restart}.
        clip_beta: ``β ← max(0, β)``. Defaults to {clip_beta}.
        inner: modules applied to the incoming update first. Defaults to None.

    Reference:
        {reference}

    Example:
        ```python
        {example}
        ```
    """


class PolakRibiere(ConjugateGradientBase):
    __doc__ = _cg_doc(
        "Polak–Ribière–Polyak conjugate gradient: ``β = gᵀy/‖g_prev‖²`` (0 if ``‖g_prev‖² ≤ 2·tiny``).",
        clip_beta=True, restart="'auto'",
        extra=" With the default ``clip_beta=True`` this is PR+ (negative β acts as a restart). With exact line "
              "searches on a strictly convex quadratic it reproduces linear CG and terminates in n steps.",
        reference="E. Polak, G. Ribière (1969); B. T. Polyak (1969); PR+: J. C. Gilbert, J. Nocedal, SIAM J. Optim. "
                  "2(1), 1992; Nocedal & Wright 2nd ed., §5.2 (eq. 5.44).",
        example='opt = tz.Modular(model.parameters(), tz.m.PolakRibiere(), tz.m.StrongWolfe(c2=0.1, '
                'a_init="first-order"))')

    def __init__(self, clip_beta: bool = True, restart_interval: int | None | Literal["auto"] = "auto",
                 inner: Chainable | None = None):
        super().__init__(clip_beta=clip_beta, restart_interval=restart_interval, inner=inner)

    def get_beta(self, g, g_prev, u_prev):
        return polak_ribiere_beta(g, g_prev, u_prev)


class FletcherReeves(ConjugateGradientBase):
    __doc__ = _cg_doc(
        "Fletcher–Reeves conjugate gradient: ``β = ‖g‖²/‖g_prev‖²``.",
        clip_beta=False, restart="'auto'",
        extra=" ``‖g_prev‖²`` is a scalar stored in ``global_state['prev_gg']`` and refreshed every step; β = 0 if "
              "it is ``≤ 2·tiny``. Needs a strong Wolfe line search with ``c2 < 1/2``.",
        reference="R. Fletcher, C. M. Reeves, \"Function minimization by conjugate gradients\", Computer Journal "
                  "7(2):149–154, 1964; Nocedal & Wright 2nd ed., §5.2 (eq. 5.41a).",
        example='opt = tz.Modular(model.parameters(), tz.m.FletcherReeves(), tz.m.StrongWolfe(c2=0.1))')

    def __init__(self, restart_interval: int | None | Literal["auto"] = "auto", clip_beta: bool = False,
                 inner: Chainable | None = None):
        super().__init__(clip_beta=clip_beta, restart_interval=restart_interval, inner=inner)

    def first_step(self, g):
        self.global_state["prev_gg"] = squared_norm(g)

    def get_beta(self, g, g_prev, u_prev):
        gg = squared_norm(g)
        beta = guarded_ratio(gg, self.global_state["prev_gg"])
        self.global_state["prev_gg"] = gg
        return beta


class HestenesStiefel(ConjugateGradientBase):
    __doc__ = _cg_doc(
        "Hestenes–Stiefel conjugate gradient: ``β = −gᵀy/(u_prevᵀy)`` (textbook ``gᵀy/(dᵀy)``).",
        clip_beta=False, restart="'auto'",
        extra=" Whenever β is not clipped the output satisfies the conjugacy condition ``uᵀy = 0``.",
        reference="M. R. Hestenes, E. Stiefel, J. Res. NBS 49(6), 1952; Nocedal & Wright 2nd ed., §5.2 (eq. 5.46).",
        example='opt = tz.Modular(model.parameters(), tz.m.HestenesStiefel(), tz.m.StrongWolfe(c2=0.1))')

    def __init__(self, restart_interval: int | None | Literal["auto"] = "auto", clip_beta: bool = False,
                 inner: Chainable | None = None):
        super().__init__(clip_beta=clip_beta, restart_interval=restart_interval, inner=inner)

    def get_beta(self, g, g_prev, u_prev):
        return hestenes_stiefel_beta(g, g_prev, u_prev)


class DaiYuan(ConjugateGradientBase):
    __doc__ = _cg_doc(
        "Dai–Yuan conjugate gradient: ``β = −‖g‖²/(u_prevᵀy)`` (textbook ``‖g‖²/(dᵀy)``).",
        clip_beta=False, restart="'auto'",
        extra=" With a Wolfe line search every output is a descent update.",
        reference="Y. H. Dai, Y. Yuan, \"A nonlinear conjugate gradient method with a strong global convergence "
                  "property\", SIAM J. Optim. 10(1):177–182, 1999.",
        example='opt = tz.Modular(model.parameters(), tz.m.DaiYuan(), tz.m.StrongWolfe(c2=0.1))')

    def __init__(self, restart_interval: int | None | Literal["auto"] = "auto", clip_beta: bool = False,
                 inner: Chainable | None = None):
        super().__init__(clip_beta=clip_beta, restart_interval=restart_interval, inner=inner)

    def get_beta(self, g, g_prev, u_prev):
        return dai_yuan_beta(g, g_prev, u_prev)


class LiuStorey(ConjugateGradientBase):
    __doc__ = _cg_doc(
        "Liu–Storey conjugate gradient: ``β = gᵀy/(u_prevᵀg_prev)`` (textbook ``−gᵀy/(dᵀg_prev)``).",
        clip_beta=False, restart="'auto'",
        extra=" On a quadratic with exact line searches it equals Polak–Ribière.",
        reference="Y. Liu, C. Storey, \"Efficient generalized conjugate gradient algorithms, part 1\", "
                  "J. Optim. Theory Appl. 69(1):129–137, 1991.",
        example='opt = tz.Modular(model.parameters(), tz.m.LiuStorey(), tz.m.StrongWolfe(c2=0.1))')

    def __init__(self, restart_interval: int | None | Literal["auto"] = "auto", clip_beta: bool = False,
                 inner: Chainable | None = None):
        super().__init__(clip_beta=clip_beta, restart_interval=restart_interval, inner=inner)

    def get_beta(self, g, g_prev, u_prev):
        return liu_storey_beta(g, g_prev, u_prev)


class ConjugateDescent(ConjugateGradientBase):
    __doc__ = _cg_doc(
        "Fletcher's conjugate descent: ``β = ‖g‖²/(u_prevᵀg_prev)`` (textbook ``−‖g‖²/(dᵀg_prev)``).",
        clip_beta=False, restart="'auto'",
        extra=" On a quadratic with exact line searches it equals Fletcher–Reeves.",
        reference="R. Fletcher, Practical Methods of Optimization, 2nd ed., Wiley, 1987.",
        example='opt = tz.Modular(model.parameters(), tz.m.ConjugateDescent(), tz.m.StrongWolfe(c2=0.1))')

    def __init__(self, restart_interval: int | None | Literal["auto"] = "auto", clip_beta: bool = False,
                 inner: Chainable | None = None):
        super().__init__(clip_beta=clip_beta, restart_interval=restart_interval, inner=inner)

    def get_beta(self, g, g_prev, u_prev):
        return conjugate_descent_beta(g, g_prev, u_prev)


class HagerZhang(ConjugateGradientBase):
    __doc__ = _cg_doc(
        "Hager–Zhang conjugate gradient: with ``δ = u_prevᵀy``, ``β = −(y − 2·u_prev·‖y‖²/δ)ᵀg/δ`` (textbook "
        "``(y − 2d‖y‖²/dᵀy)ᵀg/(dᵀy)``).",
        clip_beta=False, restart="'auto'",
        extra=" No lower truncation of β unless ``clip_beta``. Every unclipped output satisfies the sufficient "
              "descent bound ``uᵀg ≥ (7/8)‖g‖²`` whatever the line search.",
        reference="W. W. Hager, H. Zhang, \"A new conjugate gradient method with guaranteed descent and an "
                  "efficient line search\", SIAM J. Optim. 16(1):170–192, 2005.",
        example='opt = tz.Modular(model.parameters(), tz.m.HagerZhang(), tz.m.StrongWolfe(c2=0.1))')

    def __init__(self, restart_interval: int | None | Literal["auto"] = "auto", clip_beta: bool = False,
                 inner: Chainable | None = None):
        super().__init__(clip_beta=clip_beta, restart_interval=restart_interval, inner=inner)

    def get_beta(self, g, g_prev, u_prev):
        return hager_zhang_beta(g, g_prev, u_prev)


class DYHS(ConjugateGradientBase):
    __doc__ = _cg_doc(
        "Hybrid Dai–Yuan / Hestenes–Stiefel conjugate gradient: with ``δ = u_prevᵀy``, "
        "``β = max(0, min(max(0, β_DY), max(0, β_HS)))``, ``β_DY = −‖g‖²/δ``, ``β_HS = −gᵀy/δ``.",
        clip_beta=False, restart="'auto'",
        extra=" β is always in ``[0, β_DY⁺]``.",
        reference="Y. H. Dai, Y. Yuan, \"An efficient hybrid conjugate gradient method for unconstrained "
                  "optimization\", Annals of Operations Research 103:33–47, 2001.",
        example='opt = tz.Modular(model.parameters(), tz.m.DYHS(), tz.m.StrongWolfe(c2=0.1))')

    def __init__(self, restart_interval: int | None | Literal["auto"] = "auto", clip_beta: bool = False,
                 inner: Chainable | None = None):
        super().__init__(clip_beta=clip_beta, restart_interval=restart_interval, inner=inner)

    def get_beta(self, g, g_prev, u_prev):
        return dyhs_beta(g, g_prev, u_prev)


# --------------------------------------------------------------------------------------------------
# projected gradient (on the quasi-Newton base)
# --------------------------------------------------------------------------------------------------
def projected_gradient_H_(H: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``H ← H − (Hy)(yᵀH)/safe(yᵀHy)`` in place (``H`` symmetric), so ``H₊y = 0``."""
    Hy = H @ y
    H.addr_(Hy / safe(y.dot(Hy)), Hy, alpha=-1)
    return H


@fill_doc(init_scale="1", restart_interval="'auto'", inverse="none")
class ProjectedGradientMethod(HessianUpdateStrategy):
    """Pearson's projected-gradient conjugate-direction method, on the quasi-Newton base (H-form, O(n²) memory).

    ``H`` starts at ``I`` and is a projector updated by ``H ← H − (Hy)(yᵀH)/(yᵀHy)`` (so ``H₊y = 0``); the output
    ``u = H g`` is the gradient projected onto the subspace conjugate to past gradient differences. Reset to ``I``
    every ``n + 1`` updates by default. Not a projection onto a feasible set. With exact line searches on a strictly
    convex quadratic it terminates within n steps.

    Args:
{qn_args}

    Reference:
        J. D. Pearson, "Variable metric methods of minimisation", *Computer Journal* 12(2), 1969, Algorithm 5.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.ProjectedGradientMethod(),
                         tz.m.StrongWolfe(c2=0.1, a_init="first-order"))
        ```
    """

    _forms = ("H",)

    def __init__(self, init_scale: float | Literal["auto"] = 1, tol: float = 1e-32, ptol: float | None = 1e-32,
                 ptol_restart: bool = False, gtol: float | None = 1e-32,
                 restart_interval: int | None | Literal["auto"] = "auto", beta: float | None = None,
                 update_freq: int = 1, scale_first: bool = False, concat_params: bool = True,
                 inner: Chainable | None = None):
        super().__init__(init_scale=init_scale, tol=tol, ptol=ptol, ptol_restart=ptol_restart, gtol=gtol,
                         restart_interval=restart_interval, beta=beta, update_freq=update_freq,
                         scale_first=scale_first, concat_params=concat_params, inverse=True, inner=inner)

    def update_H(self, H, pair: SecantPair):
        return projected_gradient_H_(H, pair.y)
