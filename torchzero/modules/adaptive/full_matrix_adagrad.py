"""Full-matrix AdaGrad (``FullMatrixAdagrad``) and its limited-memory GGT form (``LMAdagrad``)."""
from __future__ import annotations

from collections import deque
from typing import Any, Literal

import torch

from ...core import Chainable, Transform
from ...utils.checks import check_choice, check_non_negative, check_range
from ...utils.linalg.matrix_funcs import eigh_safe, matrix_power_eigh_safe, solve_psd_eigh

_INITS = ("identity", "zeros", "ones", "GGT")


def _check_beta(owner: str, name: str, beta: float | None) -> None:
    if beta is not None:
        check_range(owner, name, beta, 0, 1, high_inclusive=False)


def _check_int(owner: str, name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")


# ------------------------------------------------------------------------------------------------------------------
# full-matrix AdaGrad
# ------------------------------------------------------------------------------------------------------------------


def full_matrix_adagrad_update_(GG_: torch.Tensor, g: torch.Tensor, beta: float | None, decay: float | None) -> None:
    """``GG ← decay·GG`` (if given), then ``GG ← GG + ggᵀ`` (``beta=None``) or ``GG ← β GG + (1−β) ggᵀ``, as one
    rank-1 update."""
    keep = 1.0 if decay is None else decay
    if beta is None:
        GG_.addr_(g, g, beta=keep)
    else:
        GG_.addr_(g, g, beta=keep * beta, alpha=1 - beta)


def _diagonal_fallback(u: torch.Tensor, GG: torch.Tensor, sqrt: bool, reg: float) -> torch.Tensor:
    denom = GG.diagonal()
    if sqrt:
        denom = denom.sqrt()
    return (u.ravel() / (denom + max(reg, 1e-12))).view_as(u)


def full_matrix_adagrad_apply(u: torch.Tensor, GG: torch.Tensor, sqrt: bool, reg: float,
                              B: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``GG^(−1/2) u`` (``sqrt``) or ``GG⁻¹ u``, with ``reg·I`` added to ``GG``; returns ``(output, B)``.

    With ``sqrt``, ``B = (GG + reg·I)^(−1/2)`` is computed unless given (eigenvalues clipped to
    ``≥ max(2·tiny, eps·λ_max)``) and returned for caching (None when it could not be computed). Without ``sqrt``,
    ``GG⁻¹u`` is computed through the eigendecomposition with eigenvalues ``≤ d·eps·λ_max`` treated as zero
    (``solve_psd_eigh``: the minimum-norm solution when ``GG`` is singular). If the eigendecomposition fails even in
    float64 (or ``GG`` is not finite) the output is the diagonal fallback ``u / (sqrt(diag GG) + max(reg, 1e-12))``
    (``diag GG`` without the root when not ``sqrt``). A single-element ``u`` is divided by ``sqrt(GG)`` (or ``GG``)
    clipped to ``≥ 2·tiny``.
    """
    if reg != 0:
        GG = GG + torch.eye(GG.shape[0], dtype=GG.dtype, device=GG.device).mul_(reg)
    if u.numel() == 1:
        d = GG.reshape(()).clamp_min(2 * torch.finfo(GG.dtype).tiny)
        return (u / d.sqrt() if sqrt else u / d), None
    if sqrt:
        if B is None:
            B = matrix_power_eigh_safe(GG, -0.5, rtol=torch.finfo(GG.dtype).eps)
        if B is None:
            return _diagonal_fallback(u, GG, sqrt, reg), None
        return (B @ u.ravel()).view_as(u), B
    z = solve_psd_eigh(GG, u.ravel())
    if z is None:
        return _diagonal_fallback(u, GG, sqrt, reg), None
    return z.view_as(u), None


class FullMatrixAdagrad(Transform):
    """Full-matrix AdaGrad: preconditions the update by ``(Σ ggᵀ)^(−1/2)``.

    With ``concat_params=True`` all tensors form one vector (state keyed by the first parameter, output split
    back), else each tensor is handled separately. State ``'GG'`` (d×d) is created on first use as the identity,
    zeros, ones or ``ggᵀ`` (``init``; with ``'GGT'`` the first outer product is then added again).

    - Update (from the raw ``u``, flattened ``g``): ``GG ← decay·GG`` if ``decay`` is set (a multiplier); then
      ``GG ← GG + ggᵀ``, or ``GG ← β GG + (1−β) ggᵀ`` with ``beta``; counter ``'i'`` += 1.
    - Apply (to ``u' = inner(u)``): ``GG/i`` if ``divide``; ``+ reg·I``; output ``B u'`` with
      ``B = GG^(−1/2)`` (``sqrt``), recomputed when the apply counter ``'step'`` (from 0) is a multiple of
      ``precond_freq`` and cached as ``'B'`` otherwise; without ``sqrt`` the output is ``GG⁻¹u'``.
      Single-element tensors give ``u'/sqrt(GG)`` (or ``u'/GG``).

    Numerical policy: ``B`` is computed by an eigendecomposition with eigenvalues clipped from below to
    ``max(2·tiny, eps·λ_max)``, so rank-deficient statistics (``init='zeros'`` with few or zero gradients, EMA with
    ``beta``) give finite outputs and rounding noise in the null space of ``GG`` is not amplified beyond
    ``1/sqrt(eps·λ_max)``. Without ``sqrt``, ``GG⁻¹u'`` is also computed through the eigendecomposition, with
    eigenvalues ``≤ d·eps·λ_max`` treated as zero, so a singular ``GG`` gives the minimum-norm solution instead of
    the amplified rounding errors of a plain ``solve``. A failing decomposition is retried in float64 with a small
    jitter; if it still fails, or ``GG`` is not finite, the step uses the diagonal fallback
    ``u'/(sqrt(diag GG) + max(reg, 1e-12))`` (and the cached ``'B'`` is not replaced). NaN/inf in the update
    propagate into ``GG``. Memory is O(d²) and each refresh costs O(d³).

    Args:
        beta: EMA factor of ``GG``; None for sums. Defaults to None.
        decay: multiplier of ``GG`` before each update; None for no decay. Defaults to None.
        sqrt: use ``GG^(−1/2)`` (else ``GG⁻¹``). Defaults to True.
        concat_params: one preconditioner for all parameters concatenated. Defaults to True.
        precond_freq: recompute ``B`` every ``precond_freq`` steps. Defaults to 1.
        init: initial ``GG``: ``'identity'``, ``'zeros'``, ``'ones'`` or ``'GGT'``. Defaults to ``'identity'``.
        reg: added to the diagonal of ``GG`` before inverting. Defaults to 1e-12.
        divide: use the average ``GG/i`` instead of the sum. Defaults to False.
        inner: modules applied to the update before preconditioning. Defaults to None.

    Reference:
        J. Duchi, E. Hazan, Y. Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
        Optimization", JMLR 2011 (full-matrix AdaGrad).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.FullMatrixAdagrad(), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, beta: float | None = None, decay: float | None = None, sqrt: bool = True,
                 concat_params: bool = True, precond_freq: int = 1,
                 init: Literal["identity", "zeros", "ones", "GGT"] = "identity", reg: float = 1e-12,
                 divide: bool = False, inner: Chainable | None = None):
        name = "FullMatrixAdagrad"
        _check_beta(name, "beta", beta)
        if decay is not None:
            check_non_negative(name, "decay", decay)
        _check_int(name, "precond_freq", precond_freq, 1)
        check_choice(name, "init", init, _INITS)
        check_non_negative(name, "reg", reg)
        defaults = dict(beta=beta, decay=decay, sqrt=sqrt, precond_freq=precond_freq, init=init, reg=reg,
                        divide=divide)
        super().__init__(defaults, concat_params=concat_params, inner=inner)

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        init = settings[0]["init"]
        betas, decays = self.unpack_settings(settings, "beta", "decay")
        for t, state, beta, decay in zip(tensors, states, betas, decays):
            g = t.ravel()
            if "GG" not in state:
                n = g.numel()
                if init == "identity":
                    state["GG"] = torch.eye(n, dtype=t.dtype, device=t.device)
                elif init == "zeros":
                    state["GG"] = torch.zeros(n, n, dtype=t.dtype, device=t.device)
                elif init == "ones":
                    state["GG"] = torch.ones(n, n, dtype=t.dtype, device=t.device)
                else:
                    state["GG"] = torch.outer(g, g)
            full_matrix_adagrad_update_(state["GG"], g, beta, decay)
            state["i"] = state.get("i", 0) + 1

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        sqrt, divide, precond_freq = s0["sqrt"], s0["divide"], s0["precond_freq"]
        regs = self.unpack_settings(settings, "reg")
        out = []
        for t, state, reg in zip(tensors, states, regs):
            if "GG" not in state:
                raise RuntimeError("FullMatrixAdagrad: apply was called before any update")
            step = state.get("step", 0)
            state["step"] = step + 1
            GG = state["GG"]
            if divide:
                GG = GG / state.get("i", 1)
            B = None if (step % precond_freq == 0 or "B" not in state) else state["B"]
            o, B = full_matrix_adagrad_apply(t, GG, sqrt, reg, B)
            if B is not None and sqrt:
                state["B"] = B
            out.append(o)
        return out


# ------------------------------------------------------------------------------------------------------------------
# limited-memory full-matrix AdaGrad (GGT)
# ------------------------------------------------------------------------------------------------------------------


def lm_adagrad_basis(M: torch.Tensor, damping: float, rdamping: float = 0
                     ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(U, Λ)`` of the GGT preconditioner of the columns of ``M`` (d×k), or None if the eigendecomposition fails.

    ``MᵀM + damping·I = QΛQᵀ``; eigenvalues ``≤ eps·max Λ`` (numerically zero) are dropped with their vectors;
    ``U = M Q Λ^(−1/2)`` (orthonormal when ``damping = 0``); then, if ``rdamping > 0``, ``Λ ← Λ + rdamping·‖Λ‖₂``.
    ``lm_adagrad_apply(g, U, Λ) = U Λ^(−1/2) Uᵀ g``, which for ``damping = 0`` is ``(MMᵀ)^(−1/2)`` (pseudo-inverse)
    applied to ``g``. The eigendecomposition is guarded as in ``eigh_safe`` (float64 retry).
    """
    MTM = M.mT @ M
    if damping != 0:
        MTM.diagonal().add_(damping)
    res = eigh_safe(MTM)
    if res is None:
        return None
    L, Q = res
    L, Q = L.to(M.dtype), Q.to(M.dtype)
    keep = L > torch.finfo(M.dtype).eps * L.amax()
    L = L[keep]
    Q = Q[:, keep]
    U = (M @ Q) * L.rsqrt()
    if rdamping != 0:
        L = L + rdamping * torch.linalg.vector_norm(L)
    return U, L


def lm_adagrad_apply(g: torch.Tensor, U: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """``U Λ^(−1/2) Uᵀ g`` (components of ``g`` outside the span of ``U`` are discarded)."""
    return (U * L.rsqrt()) @ (U.mT @ g)


def _maybe_lerp(state: dict[str, Any], key: str, value: torch.Tensor | None, beta: float | None) -> None:
    """``state[key] ← value``, or its EMA with ``beta`` when both exist and have the same shape."""
    old = state.get(key)
    if beta is None or value is None or old is None or old.shape != value.shape:
        state[key] = value
    else:
        old.lerp_(value, 1 - beta)


class LMAdagrad(Transform):
    """Limited-memory full-matrix AdaGrad (GGT): full-matrix AdaGrad restricted to the last ``history_size``
    update vectors.

    Vectors are flattened (all parameters concatenated with ``concat_params``) and appended to the deque
    ``'history'`` on every ``interval``-th step. With ``order=1`` the vector is ``u``; with ``order ≥ 2`` it is the
    ``(order−1)``-th difference of successive inputs divided by the norm of the matching parameter difference
    (order 2: ``(uₜ − uₜ₋₁)/‖xₜ − xₜ₋₁‖``, state ``'prev_p_i'``, ``'prev_g_i'``); nothing is appended until enough
    history exists. Every ``update_freq``-th append (counter ``'step'``), with ``M`` the history as columns (d×k):
    ``MᵀM + damping·I = QΛQᵀ``, eigenvalues ``≤ eps·max Λ`` dropped, ``U = M Q Λ^(−1/2)``; if ``rdamping > 0``,
    ``Λ ← Λ + rdamping·‖Λ‖₂``; ``'U'`` and ``'L'`` are stored (EMA-blended with ``U_beta``/``L_beta`` when given and
    the shapes agree). Output: ``U Λ^(−1/2) Uᵀ u'`` with ``u' = inner(u)``: components outside the span of the
    history are discarded. Memory O(d·history_size), cost O(d·k²) per refresh.

    Numerical policy: numerically zero eigenvalues are dropped, so a rank-deficient history (repeated or zero
    vectors) is handled exactly (a zero history gives a zero output). Before any preconditioner exists, and after
    an eigendecomposition that fails even in float64 (e.g. non-finite history), the output is the conservative
    ``clamp(u', −0.1, 0.1)``.

    Args:
        history_size: number of vectors kept. Defaults to 100.
        update_freq: recompute the basis every ``update_freq`` appends. Defaults to 1.
        damping: added to the diagonal of ``MᵀM``. Defaults to 1e-4.
        rdamping: relative damping of ``Λ`` (times ``‖Λ‖₂``). Defaults to 0.
        order: 1 for update vectors, ``≥ 2`` for scaled differences. Defaults to 1.
        true_damping: accepted for compatibility, has no effect. Defaults to True.
        U_beta: EMA factor for ``U``. Defaults to None.
        L_beta: EMA factor for ``Λ``. Defaults to None.
        interval: append to the history every ``interval`` steps. Defaults to 1.
        concat_params: one preconditioner for all parameters concatenated. Defaults to True.
        inner: modules applied to the update before preconditioning. Defaults to None.

    Reference:
        N. Agarwal, B. Bullins, X. Chen, E. Hazan, K. Singh, C. Zhang, Y. Zhang, "Efficient Full-Matrix Adaptive
        Regularization", ICML 2019.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.LMAdagrad(history_size=20), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, history_size: int = 100, update_freq: int = 1, damping: float = 1e-4, rdamping: float = 0,
                 order: int = 1, true_damping: bool = True, U_beta: float | None = None, L_beta: float | None = None,
                 interval: int = 1, concat_params: bool = True, inner: Chainable | None = None):
        name = "LMAdagrad"
        _check_int(name, "history_size", history_size, 1)
        _check_int(name, "update_freq", update_freq, 1)
        check_non_negative(name, "damping", damping)
        check_non_negative(name, "rdamping", rdamping)
        _check_int(name, "order", order, 1)
        _check_beta(name, "U_beta", U_beta)
        _check_beta(name, "L_beta", L_beta)
        _check_int(name, "interval", interval, 1)
        defaults = dict(history_size=history_size, update_freq=update_freq, damping=damping, rdamping=rdamping,
                        order=order, true_damping=true_damping, U_beta=U_beta, L_beta=L_beta)
        super().__init__(defaults, concat_params=concat_params, update_freq=interval, inner=inner)

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        order, history_size, update_freq = s0["order"], s0["history_size"], s0["update_freq"]
        dampings, rdampings, U_betas, L_betas = self.unpack_settings(settings, "damping", "rdamping", "U_beta",
                                                                     "L_beta")
        for t, p, state, damping, rdamping, U_beta, L_beta in zip(tensors, params, states, dampings, rdampings,
                                                                   U_betas, L_betas):
            if "history" not in state:
                state["history"] = deque(maxlen=history_size)
            history: deque = state["history"]

            if order == 1:
                # a concatenated input is already a fresh tensor; a single tensor may be the gradient itself
                history.append(t.reshape(-1) if self._concat_params else t.reshape(-1).clone())
            else:
                cur_p, cur_g = p.detach().reshape(-1).clone(), t.reshape(-1).clone()
                for i in range(1, order):
                    if f"prev_g_{i}" not in state:
                        state[f"prev_p_{i}"], state[f"prev_g_{i}"] = cur_p, cur_g
                        break
                    s = cur_p - state[f"prev_p_{i}"]
                    y = cur_g - state[f"prev_g_{i}"]
                    state[f"prev_p_{i}"], state[f"prev_g_{i}"] = cur_p, cur_g
                    cur_p, cur_g = s, y
                    if i == order - 1:
                        history.append(cur_g / torch.linalg.vector_norm(cur_p).clamp_min(1e-8))

            if len(history) == 0:
                continue
            step = state.get("step", 0)
            if step % update_freq == 0:
                res = lm_adagrad_basis(torch.stack(tuple(history), dim=1), damping, rdamping)
                if res is None:
                    state["U"] = state["L"] = None
                else:
                    _maybe_lerp(state, "U", res[0], U_beta)
                    _maybe_lerp(state, "L", res[1], L_beta)
            state["step"] = step + 1

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        out = []
        for t, state in zip(tensors, states):
            U = state.get("U")
            if U is None:
                out.append(t.clamp(-0.1, 0.1))
            else:
                out.append(lm_adagrad_apply(t.reshape(-1), U, state["L"]).view_as(t))
        return out
