"""Shared base of the dense and diagonal quasi-Newton modules (``HessianUpdateStrategy``) and small numeric helpers.

Conventions (see the class docstring for the full step): ``g`` is the incoming update (not necessarily the raw
gradient), ``s = x − x_prev``, ``y = g − g_prev``; ``H ≈ (∇²f)⁻¹`` is stored under ``state['H']`` and applied as
``u = H g``, ``B ≈ ∇²f`` under ``state['B']`` and applied as ``u = solve(B, g)``.
"""
from __future__ import annotations

import math
from abc import ABC
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ...core import Chainable, TensorwiseTransform, Var
from ...utils.checks import check_range
from ...utils.linalg.linear_operator import Dense, DenseInverse, Diagonal, LinearOperator

# --------------------------------------------------------------------------------------------------
# numeric helpers
# --------------------------------------------------------------------------------------------------


def safe(z: torch.Tensor) -> torch.Tensor:
    """Denominator guard for a 0-d tensor: ``|z| < 2·tiny`` becomes ``2·tiny`` with the sign of ``z``
    (zero becomes ``+2·tiny``). No host synchronisation."""
    tiny2 = 2 * torch.finfo(z.dtype).tiny
    small = z.abs() < tiny2
    return torch.where(small, torch.where(z < 0, -tiny2, tiny2), z)


def first_step_scale(v: torch.Tensor, eps: float) -> torch.Tensor:
    """``σ(v) = clamp(1/‖v‖₁, min=eps/max|v|, max=1)``, and 1 when ``max|v| ≤ eps`` (a 0-d tensor, no sync).

    Mirrors the first step of ``torch.optim.LBFGS`` (``min(1, 1/‖g‖₁)``) plus a floor that keeps the largest
    entry of ``σ(v)·v`` at least ``eps``.
    """
    a = v.abs()
    l1, vmax = a.sum(), a.max()
    scale = (1 / l1).clamp(max=1)
    scale = torch.maximum(scale, eps / vmax)
    return torch.where(vmax <= eps, torch.ones_like(scale), scale)


def is_finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def loss_value(loss: Any) -> Any:
    """The loss as plain data to keep in state: a detached tensor, a number, or None."""
    if isinstance(loss, torch.Tensor):
        return loss.detach().clone()
    return loss


# --------------------------------------------------------------------------------------------------
# docstring helper: the arguments shared by all quasi-Newton classes
# --------------------------------------------------------------------------------------------------
_COMMON_ARGS = """\
        init_scale: initial matrix ``H₀ = I/c``, ``B₀ = c·I`` for a number ``c``; ``'auto'`` scales the matrix by
            ``sᵀy/yᵀy`` (H) or ``yᵀy/sᵀy`` (B) before the first secant update (Nocedal & Wright eq. 6.20).
            Defaults to {init_scale}.
        tol: {tol} Defaults to 1e-32.
        ptol: skip the update when ``max|s| ≤ ptol`` (None disables). Defaults to 1e-32.
        ptol_restart: reset the matrix when ``ptol`` triggers. Defaults to False.
        gtol: skip the update when ``max|y| ≤ gtol`` (None disables). Defaults to 1e-32.
        restart_interval: reset the matrix every this many updates; ``'auto'`` is ``n + 1``; None disables.
            Defaults to {restart_interval}.
        beta: momentum on the matrix, ``M ← β·M_old + (1 − β)·M_new`` (None or 0 disables). Defaults to None.
        update_freq: perform the secant update every this many steps. Defaults to 1.
        scale_first: scale the first step by ``σ(g) = min(1, 1/‖g‖₁)`` (with a floor). Defaults to False.
        concat_params: one matrix for all parameters concatenated (True) or one per parameter tensor
            (block-diagonal). Defaults to True.
{inverse}        inner: modules applied to the incoming update before preconditioning (the secant pair is still
            formed from the raw incoming update). Defaults to None."""

_INVERSE_BOTH = """\
        inverse: keep the inverse ``H`` and output ``H g`` (True) or keep ``B`` and output ``solve(B, g)`` (False).
            Defaults to {default}.
"""
_INVERSE_ONLY = """\
        inverse: only {only} is implemented; the other value raises ``NotImplementedError``. Defaults to {default}.
"""


def qn_args_doc(tol: str = "unused by this class (denominators are only guarded).", init_scale: str = "'auto'",
                restart_interval: str = "None", inverse: Literal["both", "H", "B", "none"] = "both",
                inverse_default: bool = True) -> str:
    """The ``Args:`` lines of the arguments shared by quasi-Newton classes (inserted at ``{qn_args}``)."""
    if inverse == "both":
        inv = _INVERSE_BOTH.format(default=inverse_default)
    elif inverse == "none":
        inv = ""
    else:
        inv = _INVERSE_ONLY.format(only="``inverse=True`` (H-form)" if inverse == "H" else "``inverse=False`` (B-form)",
                                   default=inverse_default)
    return _COMMON_ARGS.format(init_scale=init_scale, tol=tol, restart_interval=restart_interval, inverse=inv)


def fill_doc(**kwargs: Any):
    """Class decorator replacing ``{qn_args}`` in the docstring by ``qn_args_doc(**kwargs)``."""
    def deco(cls):
        if cls.__doc__ is not None:
            cls.__doc__ = cls.__doc__.replace("{qn_args}", qn_args_doc(**kwargs))
        return cls
    return deco


# --------------------------------------------------------------------------------------------------
# the base
# --------------------------------------------------------------------------------------------------
@dataclass
class SecantPair:
    """What a secant formula may read. All vectors are flattened; ``sy = sᵀy`` (0-d tensor) and ``sy_f`` (float)
    are computed once by the base. ``g_prev`` is the previous incoming update (before refreshing)."""


    s: torch.Tensor
    y: torch.Tensor
    sy: torch.Tensor
    sy_f: float
    x: torch.Tensor
    g: torch.Tensor
    g_prev: torch.Tensor
    loss: Any
    f_prev: Any
    state: dict[str, Any]
    setting: Mapping[str, Any]
    auto_scaled: bool = False
    """Whether the matrix was just scaled by the automatic initial scale (``init_scale='auto'``, step 2)."""


@fill_doc()
class HessianUpdateStrategy(TensorwiseTransform, ABC):
    """Base class of the dense and diagonal quasi-Newton modules (a tensor-wise transform).

    A subclass implements ``update_H(H, pair)`` (inverse form) and/or ``update_B(B, pair)`` (direct form): they
    return the updated matrix (usually ``H``/``B`` edited in place) or None to skip the update, and list the
    forms in ``_forms``. Diagonal subclasses set ``_diagonal = True`` (a vector instead of a matrix).

    Each step:

    - *First call*: creates ``H₀ = I/c`` or ``B₀ = c·I`` (ones for diagonal classes; ``c`` a numeric
      ``init_scale``), stores ``x_prev``, ``g_prev``, ``f_prev`` and ``step = 1``.
    - *Later calls* (every ``update_freq``-th call): ``s = x − x_prev``, ``y = g − g_prev``; ``x_prev``, ``g_prev``,
      ``f_prev`` are refreshed (always, even if the update is then skipped); ``step += 1``; then
      1. every ``restart_interval`` steps the matrix is reset and the update skipped;
      2. ``max|s| ≤ ptol`` skips (resetting first with ``ptol_restart``); 3. ``max|y| ≤ gtol`` skips;
      4. on ``step == 2`` with ``init_scale='auto'`` the matrix is multiplied by ``sᵀy/yᵀy`` (H) or
      ``yᵀy/sᵀy`` (B) when that factor is finite and positive; 5. the class formula; 6. with ``beta`` the stored
      matrix becomes ``β·M_old + (1 − β)·M_new``.
    - *Reset*: the matrix is overwritten in place by the initial matrix and scaled by ``c`` (or ``yᵀy/sᵀy`` for
      ``'auto'``) only if that factor is ``≥ 1``.
    - *Output*: ``u = H g`` or ``u = solve(B, g)`` (LU); with ``scale_first`` the input is multiplied by ``σ(g)``
      while ``step == 1``.

    Non-finite values policy: a secant pair with a non-finite ``max|s|``, ``max|y|`` or ``sᵀy`` is skipped (the
    matrix is kept); an update whose result has non-finite entries resets the matrix to its initial value; a dense
    ``solve(B, g)`` that fails (singular ``B`` or non-finite result) clears all state of the module and outputs the
    safe scaled gradient ``σ(g)·g``; a diagonal ``B`` divides by 1 where ``|B_i| < 2·tiny``. NaN in the incoming
    update is therefore never stored in the matrix.

    ``get_H`` returns ``DenseInverse(H)`` / ``Dense(B)`` / ``Diagonal(1/H)`` / ``Diagonal(B)``; with
    ``concat_params=False`` the per-parameter blocks are assembled block-diagonally.

    Args:
        defaults: extra settings of the subclass.
{qn_args}
        uses_loss: whether the subclass reads the loss (``SecantPair.loss``, ``f_prev``). Defaults to False.

    Reference:
        J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., chapter 6.

    Example:
        A subclass implements the formulas it supports:

        ```python
        class MyBFGS(HessianUpdateStrategy):
            def update_H(self, H, pair):
                return bfgs_H_(H, pair.s, pair.y, pair.sy) if pair.sy_f > pair.setting["tol"] else None

        opt = tz.Modular(model.parameters(), MyBFGS(), tz.m.StrongWolfe())
        ```
    """

    _readonly_input = True
    _forms: tuple[str, ...] = ("H", "B")
    _diagonal: bool = False

    def __init__(
        self,
        defaults: dict[str, Any] | None = None,
        init_scale: float | Literal["auto"] = "auto",
        tol: float = 1e-32,
        ptol: float | None = 1e-32,
        ptol_restart: bool = False,
        gtol: float | None = 1e-32,
        restart_interval: int | None | Literal["auto"] = None,
        beta: float | None = None,
        update_freq: int = 1,
        scale_first: bool = False,
        concat_params: bool = True,
        inverse: bool = True,
        inner: Chainable | None = None,
        uses_loss: bool = False,
    ):
        name = type(self).__name__
        if init_scale != "auto":
            check_range(name, "init_scale", init_scale, 0, low_inclusive=False)
        check_range(name, "tol", tol, 0)
        if ptol is not None:
            check_range(name, "ptol", ptol, 0)
        if gtol is not None:
            check_range(name, "gtol", gtol, 0)
        if restart_interval is not None and restart_interval != "auto":
            if isinstance(restart_interval, bool) or not isinstance(restart_interval, int) or restart_interval < 1:
                raise ValueError(f"{name}: restart_interval must be a positive int, 'auto' or None, "
                                 f"got {restart_interval!r}")
        if beta is not None:
            check_range(name, "beta", beta, 0, 1, high_inclusive=False)
        for flag, value in (("ptol_restart", ptol_restart), ("scale_first", scale_first),
                            ("concat_params", concat_params), ("inverse", inverse)):
            if not isinstance(value, bool):
                raise TypeError(f"{name}: {flag} must be a bool, got {type(value).__name__}")
        self._check_form(inverse)
        if not isinstance(update_freq, int) or isinstance(update_freq, bool) or update_freq < 1:
            raise ValueError(f"{name}: update_freq must be a positive integer, got {update_freq!r}")

        all_defaults = dict(init_scale=init_scale, tol=tol, ptol=ptol, ptol_restart=ptol_restart, gtol=gtol,
                            restart_interval=restart_interval, beta=beta, scale_first=scale_first, inverse=inverse)
        if defaults is not None:
            all_defaults.update(defaults)
        super().__init__(all_defaults, uses_loss=uses_loss, concat_params=concat_params, update_freq=update_freq,
                         inner=inner)

    # ------------------------------------------------------------------ to override
    def update_H(self, H: torch.Tensor, pair: SecantPair) -> torch.Tensor | None:
        """Updates the inverse approximation; returns it (may be ``H`` edited in place) or None to skip."""
        raise NotImplementedError(f"{type(self).__name__} doesn't implement the inverse form (inverse=True)")

    def update_B(self, B: torch.Tensor, pair: SecantPair) -> torch.Tensor | None:
        """Updates the Hessian approximation; returns it (may be ``B`` edited in place) or None to skip."""
        raise NotImplementedError(f"{type(self).__name__} doesn't implement the direct form (inverse=False)")

    def initial_matrix(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """The initial matrix before ``init_scale``: the identity (ones for diagonal classes)."""
        if self._diagonal:
            return torch.ones(n, device=like.device, dtype=like.dtype)
        return torch.eye(n, device=like.device, dtype=like.dtype)

    def modify_B(self, B: torch.Tensor, setting: Mapping[str, Any]) -> torch.Tensor:
        """Modification applied to a stored ``B`` before use and in ``get_H`` (e.g. truncation); identity here."""
        return B

    def reset_matrix(self, M: torch.Tensor, s: torch.Tensor, y: torch.Tensor, state: dict[str, Any],
                     setting: Mapping[str, Any]) -> None:
        """Restart: overwrite ``M`` in place by the initial matrix, scaled by the factor ``c`` (or ``yᵀy/sᵀy``
        with ``'auto'``) only when it is ``≥ 1``."""
        if self._diagonal:
            M.fill_(1)
        else:
            M.zero_()
            M.diagonal().fill_(1)
        init_scale = setting["init_scale"]
        if init_scale == "auto":
            factor = y.dot(y) / s.dot(y)
            factor = torch.where(torch.isfinite(factor) & (factor >= 1), factor, torch.ones_like(factor))
        elif init_scale >= 1:
            factor = init_scale
        else:
            return
        if setting["inverse"]:
            M.div_(factor)
        else:
            M.mul_(factor)

    # ------------------------------------------------------------------ internals
    def _check_form(self, inverse: bool) -> None:
        form = "H" if inverse else "B"
        if form not in self._forms:
            raise NotImplementedError(f"{type(self).__name__} only implements inverse={self._forms == ('H',)} "
                                      f"(got inverse={inverse})")

    def _apply_initial_scale(self, M: torch.Tensor, setting: Mapping[str, Any]) -> None:
        c = setting["init_scale"]
        if c != "auto" and c != 1:
            if setting["inverse"]:
                M.div_(c)
            else:
                M.mul_(c)

    def _auto_scale(self, M: torch.Tensor, pair: SecantPair, inverse: bool) -> bool:
        """Nocedal–Wright eq. 6.20 (once, on step 2). A non-finite or non-positive factor (``sᵀy ≤ 0``) is not
        applied, since it would flip the sign of the matrix. Returns whether the matrix was scaled."""
        yy = pair.y.dot(pair.y)
        factor = pair.sy / yy if inverse else yy / pair.sy
        f = factor.item()
        if not (math.isfinite(f) and f > 0):
            return False
        M.mul_(factor)
        return True

    def update_tensor(self, tensor, param, grad, loss, state, setting):
        inverse: bool = setting["inverse"]
        self._check_form(inverse)
        key = "H" if inverse else "B"
        # with concat_params the base passes freshly concatenated vectors, otherwise views of the parameter and
        # of the incoming update, which must be copied before being stored
        x = param.detach().reshape(-1)
        g = tensor.reshape(-1)
        if not self._concat_params:
            x = x.clone()
            g = g.clone()

        M = state.get(key)
        if M is None or "x_prev" not in state:
            if M is None:
                M = self.initial_matrix(x.numel(), x)
                self._apply_initial_scale(M, setting)
                state[key] = M
                state["step"] = 0
            state["x_prev"], state["g_prev"], state["f_prev"] = x, g, loss_value(loss)
            state["step"] = state.get("step", 0) + 1
            return

        g_prev = state["g_prev"]
        s = x - state["x_prev"]
        y = g - g_prev
        f_prev = state["f_prev"]
        state["x_prev"], state["g_prev"], state["f_prev"] = x, g, loss_value(loss)
        step = state["step"] = state["step"] + 1

        restart_interval = setting["restart_interval"]
        if restart_interval == "auto":
            restart_interval = x.numel() + 1
        if restart_interval is not None and step % restart_interval == 0:
            self.reset_matrix(M, s, y, state, setting)
            return

        sy = s.dot(y)
        # one host sync for all branches of the base
        smax, ymax, sy_f = torch.stack([s.abs().max(), y.abs().max(), sy]).tolist()
        if not is_finite(smax, ymax, sy_f):
            return
        ptol = setting["ptol"]
        if ptol is not None and smax <= ptol:
            if setting["ptol_restart"]:
                self.reset_matrix(M, s, y, state, setting)
            return
        gtol = setting["gtol"]
        if gtol is not None and ymax <= gtol:
            return

        pair = SecantPair(s=s, y=y, sy=sy, sy_f=sy_f, x=x, g=g, g_prev=g_prev, loss=loss, f_prev=f_prev,
                          state=state, setting=setting)
        if step == 2 and setting["init_scale"] == "auto":
            pair.auto_scaled = self._auto_scale(M, pair, inverse)

        beta = setting["beta"]
        work = M.clone() if beta else M
        new = self.update_H(work, pair) if inverse else self.update_B(work, pair)
        if new is None:
            return
        if not bool(torch.isfinite(new).all()):
            # overflow: `work` may be M itself, so start over from the initial matrix
            self.reset_matrix(M, s, y, state, setting)
            return
        if beta:
            M.lerp_(new, 1 - beta)
        elif new is not M:
            state[key] = new

    def apply_tensor(self, tensor, param, grad, loss, state, setting):
        inverse: bool = setting["inverse"]
        M = state.get("H" if inverse else "B")
        if M is None:  # apply without any update (e.g. after a failed solve): identity
            return tensor.clone()
        g = tensor.reshape(-1)
        if setting["scale_first"] and state.get("step") == 1:
            g = g * first_step_scale(g, torch.finfo(g.dtype).eps)
        if inverse:
            u = M * g if self._diagonal else M @ g
            return u.view_as(tensor)

        B = self.modify_B(M, setting)
        if self._diagonal:
            tiny2 = 2 * torch.finfo(B.dtype).tiny
            return (g / torch.where(B.abs() < tiny2, torch.ones_like(B), B)).view_as(tensor)
        u, info = torch.linalg.solve_ex(B, g)
        if bool((info != 0) | ~torch.isfinite(u).all()):
            # singular B: clear everything (the next call starts over) and take a safe scaled gradient step
            self.state.clear()
            self.global_state.clear()
            u = g * first_step_scale(g, torch.finfo(g.dtype).eps)
        return u.view_as(tensor)

    def reset_for_online(self) -> None:
        super().reset_for_online()
        self.clear_state_keys("x_prev", "g_prev", "f_prev")

    # ------------------------------------------------------------------ curvature as an operator
    def get_H(self, var: Var) -> LinearOperator | None:
        params = var.params
        if self._concat_params:
            params = params[:1]
        if len(params) == 0:
            return None
        inverse = self.settings[params[0]]["inverse"]
        key = "H" if inverse else "B"
        mats = []
        for p in params:
            state = self.state.get(p)
            if state is None or key not in state:
                return None
            M = state[key]
            if not inverse:
                M = self.modify_B(M, self.settings[p])
            mats.append(M)

        if self._diagonal:
            d = mats[0] if len(mats) == 1 else torch.cat(mats)
            return Diagonal(1 / d) if inverse else Diagonal(d)
        M = mats[0] if len(mats) == 1 else torch.block_diag(*mats)
        return DenseInverse(M) if inverse else Dense(M)
