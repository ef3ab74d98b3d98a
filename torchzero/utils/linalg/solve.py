"""Krylov solvers for symmetric systems ``(A + reg·I) x = b`` given only products with ``A``: (preconditioned,
Steihaug–Toint) conjugate gradient and MINRES with non-positive-curvature detection.

Vectors are either one tensor (of any shape) or a ``TensorList`` (a plain list of tensors is converted), so the
solvers run directly on lists of parameter-shaped tensors without flattening; ``A_mm`` receives and returns the
same kind of vector. Scalars of the recurrences (step lengths, residual norms) are Python floats: every iteration
needs them anyway for its stopping and curvature tests, so each iteration synchronizes with the device a couple of
times and nothing more.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

import torch

from ..tensorlist import TensorList

__all__ = ["CG", "cg", "find_within_trust_radius", "minres"]

Vec: TypeAlias = torch.Tensor | TensorList
"""One tensor, or a list of tensors treated as one vector."""
MatVec: TypeAlias = Callable[[Any], Any]
"""``A_mm(v)``: the product ``A v`` for a vector of the same kind as ``b``."""


# --------------------------------------------------------------------------------------------------
# vector helpers over a tensor or a TensorList
# --------------------------------------------------------------------------------------------------
def _as_vec(x: Any) -> Vec:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, TensorList):
        return x
    if isinstance(x, Sequence):
        return TensorList(x)
    raise TypeError(f"expected a tensor or a sequence of tensors, got {type(x).__name__}")


def _dot(a: Vec, b: Vec) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return torch.dot(a.reshape(-1), b.reshape(-1))  # type: ignore[union-attr]
    return a.dot(b)


def _norm(a: Vec) -> float:
    return math.sqrt(max(float(_dot(a, a)), 0.0))


def _numel(a: Vec) -> int:
    return a.numel() if isinstance(a, torch.Tensor) else a.global_numel()


def _clone(a: Vec) -> Vec:
    return a.clone()


def _zeros_like(a: Vec) -> Vec:
    return torch.zeros_like(a) if isinstance(a, torch.Tensor) else a.zeros_like()


def _axpy_(y: Vec, alpha: float, x: Vec) -> Vec:
    """``y += alpha·x`` in place."""
    if isinstance(y, torch.Tensor):
        return y.add_(x, alpha=alpha)  # type: ignore[arg-type]
    torch._foreach_add_(y, x, alpha=alpha)
    return y


def _axpy(y: Vec, alpha: float, x: Vec) -> Vec:
    """``y + alpha·x`` (new vector)."""
    if isinstance(y, torch.Tensor):
        return torch.add(y, x, alpha=alpha)  # type: ignore[arg-type]
    return TensorList(torch._foreach_add(y, x, alpha=alpha))


def _scale(x: Vec, alpha: float) -> Vec:
    """``alpha·x`` (new vector)."""
    if isinstance(x, torch.Tensor):
        return x * alpha
    return TensorList(torch._foreach_mul(x, alpha))


def _xpby_(d: Vec, beta: float, z: Vec) -> Vec:
    """``d ← z + beta·d`` in place."""
    if isinstance(d, torch.Tensor):
        return d.mul_(beta).add_(z)  # type: ignore[arg-type]
    torch._foreach_mul_(d, beta)
    torch._foreach_add_(d, z)
    return d


def _matvec(A_mm: MatVec, x: Vec, reg: float) -> Vec:
    """``A x + reg·x`` as a new vector (the result of ``A_mm`` is never modified in place)."""
    Ax = A_mm(x)
    if not isinstance(x, torch.Tensor) and not isinstance(Ax, TensorList):
        Ax = TensorList(Ax)
    if reg != 0:
        Ax = _axpy(Ax, reg, x)
    return Ax


def _boundary_tau(x: Vec, d: Vec, trust_radius: float) -> float:
    """The positive root ``τ`` of ``‖x + τd‖ = Δ`` (``x`` inside the ball), computed without cancellation."""
    xx, xd, dd = (float(v) for v in torch.stack([_dot(x, x), _dot(x, d), _dot(d, d)]).tolist())
    if dd <= 0 or not math.isfinite(dd):
        return 0.0
    c = xx - trust_radius**2  # <= 0 inside the ball
    disc = math.sqrt(max(xd * xd - dd * c, 0.0))
    if xd >= 0:
        denom = xd + disc
        return -c / denom if denom > 0 else 0.0
    return (-xd + disc) / dd


def _to_boundary(x: Vec, d: Vec, trust_radius: float) -> Vec:
    """``x + τd`` with ``‖x + τd‖ = Δ``, ``τ ≥ 0``."""
    return _axpy(x, _boundary_tau(x, d, trust_radius), d)


def _check_common(owner: str, tol: Any, maxiter: Any, reg: Any, trust_radius: Any) -> None:
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not tol >= 0:
        raise ValueError(f"{owner}: tol must be a non-negative number, got {tol!r}")
    if maxiter is not None and (isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 0):
        raise ValueError(f"{owner}: maxiter must be None or a non-negative int, got {maxiter!r}")
    if not isinstance(reg, (int, float)) or isinstance(reg, bool) or not math.isfinite(reg):
        raise ValueError(f"{owner}: reg must be a finite number, got {reg!r}")
    if trust_radius is not None and (isinstance(trust_radius, bool) or not isinstance(trust_radius, (int, float))
                                     or not trust_radius > 0):
        raise ValueError(f"{owner}: trust_radius must be None or a positive number, got {trust_radius!r}")


# --------------------------------------------------------------------------------------------------
# conjugate gradient
# --------------------------------------------------------------------------------------------------
CGStatus = Literal["running", "converged", "maxiter", "boundary", "npc", "breakdown"]


class CG:
    r"""Preconditioned conjugate gradient on ``(A + reg·I) x = b`` with Steihaug–Toint trust-region handling,
    one iteration per ``step()`` call (``cg`` runs it to the end).

    With ``r = b − (A + reg·I)x``, ``z = P r`` (``P = P_mm``, an approximation of the inverse; identity by default)
    and ``d`` the search direction, iteration ``k`` is

    ``α = rᵀz / dᵀ(A + reg·I)d``, ``x ← x + αd``, ``r ← r − α(A + reg·I)d``, ``z ← P r``,
    ``β = rᵀz_new / rᵀz_old``, ``d ← z + βd``.

    Stopping and special cases (``status`` tells which one ended the solve):

    - ``'converged'``: ``‖r‖ < tol`` (absolute; checked after at least ``miniter`` iterations) or, with ``rtol``,
      ``‖r‖ ≤ rtol·‖r₀‖``; a residual that is exactly zero always stops (e.g. ``b = 0`` gives ``x = x0``).
    - ``'maxiter'``: ``maxiter`` iterations (default ``numel(b)``).
    - ``'boundary'``: with ``trust_radius`` ``Δ``, an iterate leaving the ball is replaced by the boundary point
      ``x + τd`` (positive root of ``‖x + τd‖ = Δ``); ``x0`` must lie inside the ball (one outside it is
      projected onto the boundary and returned).
    - ``'npc'``: non-positive curvature ``dᵀ(A + reg·I)d ≤ 0``. With a radius the boundary point along ``d`` is
      returned (or, with ``npc_terminate`` after the first iteration, the current iterate); without one, at the
      first iteration ``x0 + |rᵀz / dᵀAd|·d`` is returned (``b·|bᵀb/bᵀAb|`` for ``x0 = 0`` and no preconditioner; ``x0 + d`` when the curvature is exactly zero), at later iterations the
      current iterate is returned if ``npc_terminate`` (or the curvature is exactly zero), otherwise the
      iteration continues.
    - ``'breakdown'``: a non-finite curvature or residual; the last finite iterate is returned.

    With ``history_size > 0`` every iterate is kept as ``(x_k, ‖x_k‖, d_k)`` (``d_k`` the direction taken from
    ``x_k``; ``None`` for the final iterate of a solve that did not stop on the boundary), in a ``deque`` of that
    length, for ``find_within_trust_radius`` (and ``within_radius``).

    Model decrease: started from ``x0 = None``, the solver tracks ``model_decrease = bᵀx − ½xᵀ(A + reg·I)x`` of its
    current ``x`` (the reduction of the quadratic model ``−bᵀx + ½xᵀ(A + reg·I)x`` from ``x = 0``, positive for any
    iterate) without extra products: moving by ``τd`` changes it by ``τ·rᵀz − ½τ²·dᵀ(A + reg·I)d`` (CG's residual
    satisfies ``dᵀr = rᵀz``). It is None when ``x0`` is given.

    Args:
        A_mm: ``A_mm(v) = A v`` for a vector of the same kind as ``b``.
        b: right-hand side, a tensor or a ``TensorList``/sequence of tensors (not modified).
        x0: initial guess (not modified), zeros when None.
        tol: absolute residual tolerance. Defaults to 1e-8.
        maxiter: maximum number of iterations, ``numel(b)`` when None.
        reg: ``reg·I`` is added to ``A``. Defaults to 0.
        trust_radius: L2 radius ``Δ`` of the Steihaug–Toint trust region, None for an unconstrained solve.
        npc_terminate: stop at the current iterate on non-positive curvature after the first iteration (also with a
            radius). Defaults to False.
        miniter: the tolerance is only checked after this many iterations. Defaults to 0.
        history_size: how many iterates to keep for ``find_within_trust_radius``. Defaults to 0.
        P_mm: ``P_mm(r)``, the preconditioner (an approximation of ``(A + reg·I)⁻¹``), None for none.
        rtol: additional relative tolerance ``‖r‖ ≤ rtol·‖r₀‖`` (keyword only), None to disable.

    Reference:
        Nocedal & Wright, *Numerical Optimization*, 2nd ed., Alg. 5.3 (preconditioned CG) and Alg. 7.2 (CG–Steihaug);
        T. Steihaug, "The conjugate gradient method and trust regions in large scale optimization",
        SIAM J. Numer. Anal. 20(3), 1983.
    """

    def __init__(
        self,
        A_mm: MatVec,
        b: Vec | Sequence[torch.Tensor],
        x0: Vec | Sequence[torch.Tensor] | None = None,
        tol: float = 1e-8,
        maxiter: int | None = None,
        reg: float = 0,
        trust_radius: float | None = None,
        npc_terminate: bool = False,
        miniter: int = 0,
        history_size: int = 0,
        P_mm: MatVec | None = None,
        *,
        rtol: float | None = None,
    ):
        _check_common("cg", tol, maxiter, reg, trust_radius)
        if isinstance(miniter, bool) or not isinstance(miniter, int) or miniter < 0:
            raise ValueError(f"cg: miniter must be a non-negative int, got {miniter!r}")
        if isinstance(history_size, bool) or not isinstance(history_size, int) or history_size < 0:
            raise ValueError(f"cg: history_size must be a non-negative int, got {history_size!r}")
        if rtol is not None and not rtol >= 0:
            raise ValueError(f"cg: rtol must be None or non-negative, got {rtol!r}")

        self.A_mm = A_mm
        self.P_mm = P_mm
        self.b: Vec = _as_vec(b)
        self.tol = float(tol)
        self.rtol = rtol
        self.maxiter = _numel(self.b) if maxiter is None else maxiter
        self.reg = float(reg)
        self.trust_radius = None if trust_radius is None else float(trust_radius)
        self.npc_terminate = npc_terminate
        self.miniter = miniter
        self.history: deque[tuple[Vec, float, Vec | None]] = deque(maxlen=history_size)
        self.history_size = history_size
        self._history_model: deque[tuple[float | None, float, float]] = deque(maxlen=history_size)
        """Aligned with ``history``: ``(model_decrease at x_k, rᵀz, dᵀAd at x_k)``."""
        self.model_decrease: float | None = 0.0 if x0 is None else None
        """``bᵀx − ½xᵀ(A + reg·I)x`` of the current ``x`` (None when started from a given ``x0``)."""

        self.iter = 0
        """Iterations done."""
        self.num_matvecs = 0
        """Products with ``A`` done."""
        self.status: CGStatus = "running"

        if x0 is None:
            self.x: Vec = _zeros_like(self.b)
            self.r: Vec = _clone(self.b)
        else:
            self.x = _clone(_as_vec(x0))
            self.r = _axpy(self.b, -1.0, self._A(self.x))
            if self.trust_radius is not None:
                x_norm = _norm(self.x)
                if x_norm >= self.trust_radius:
                    self.x = _scale(self.x, self.trust_radius / x_norm)
                    self.status = "boundary"
                    return

        self.z: Vec = self.r if P_mm is None else _as_vec(P_mm(self.r))
        self.d: Vec = _clone(self.z)
        if P_mm is None:
            self.rr = self.rz = float(_dot(self.r, self.r))
        else:
            self.rr, self.rz = (float(v) for v in torch.stack([_dot(self.r, self.r), _dot(self.r, self.z)]).tolist())
        self.r0_norm = math.sqrt(max(self.rr, 0.0))

        if not (math.isfinite(self.rr) and math.isfinite(self.rz)):
            self.status = "breakdown"
        elif self.rr == 0 or (self.miniter == 0 and self._small_residual()):
            self.status = "converged"
        elif self.maxiter == 0:
            self.status = "maxiter"
        if self.status != "running":
            self._record_final()

    # ------------------------------------------------------------------ internals
    def _A(self, v: Vec) -> Vec:
        self.num_matvecs += 1
        return _matvec(self.A_mm, v, self.reg)

    def _small_residual(self) -> bool:
        r_norm = math.sqrt(max(self.rr, 0.0))
        if r_norm < self.tol:
            return True
        return self.rtol is not None and r_norm <= self.rtol * self.r0_norm

    def _record(self, d: Vec | None, dAd: float = 0.0) -> None:
        if self.history_size > 0:
            self.history.append((_clone(self.x), _norm(self.x), None if d is None else _clone(d)))
            self._history_model.append((self.model_decrease, self.rz, dAd))

    def _move(self, tau: float, d: Vec, dAd: float, x_new: Vec | None = None) -> None:
        """``x ← x + τd`` (``x_new`` if already computed), updating ``model_decrease``."""
        self.x = _axpy(self.x, tau, d) if x_new is None else x_new
        if self.model_decrease is not None:
            self.model_decrease = _decrease_after(self.model_decrease, tau, self.rz, dAd)

    def _record_final(self) -> None:
        if self.status in ("converged", "maxiter"):
            self._record(None)

    def _finish(self, status: CGStatus) -> tuple[Vec, bool]:
        self.status = status
        self._record_final()
        return self.x, True

    # ------------------------------------------------------------------ public
    @property
    def done(self) -> bool:
        return self.status != "running"

    def step(self) -> tuple[Vec, bool]:
        """One iteration; returns ``(x, done)``."""
        if self.done:
            return self.x, True

        d = self.d
        Ad = self._A(d)
        dAd = float(_dot(d, Ad))
        if not math.isfinite(dAd):
            return self._finish("breakdown")

        if dAd <= 0:
            self._record(d, dAd)
            if self.trust_radius is not None and not (self.npc_terminate and self.iter > 0):
                self._move(_boundary_tau(self.x, d, self.trust_radius), d, dAd)
                return self._finish("npc")
            if self.iter == 0:
                self._move(abs(self.rz / dAd) if dAd != 0 else 1.0, d, dAd)
                return self._finish("npc")
            if self.npc_terminate or dAd == 0:
                return self._finish("npc")

        alpha = self.rz / dAd
        if self.trust_radius is not None:
            x_new = _axpy(self.x, alpha, d)
            self._record(d, dAd)
            if _norm(x_new) >= self.trust_radius:
                self._move(_boundary_tau(self.x, d, self.trust_radius), d, dAd)
                return self._finish("boundary")
            self._move(alpha, d, dAd, x_new=x_new)
        else:
            self._record(d, dAd)
            self._move(alpha, d, dAd, x_new=_axpy_(self.x, alpha, d))

        _axpy_(self.r, -alpha, Ad)  # without a preconditioner z aliases r; d has its own storage
        self.iter += 1

        if self.P_mm is None:
            rr = float(_dot(self.r, self.r))
            rz_new = rr
            self.z = self.r
        else:
            self.z = _as_vec(self.P_mm(self.r))
            rr, rz_new = (float(v) for v in torch.stack([_dot(self.r, self.r), _dot(self.r, self.z)]).tolist())
        self.rr = rr
        if not (math.isfinite(rr) and math.isfinite(rz_new)):
            return self._finish("breakdown")
        if rr == 0 or (self.iter >= self.miniter and self._small_residual()):
            return self._finish("converged")
        if self.iter >= self.maxiter:
            return self._finish("maxiter")

        beta = rz_new / self.rz
        self.rz = rz_new
        _xpby_(self.d, beta, self.z)
        return self.x, False

    def solve(self) -> Vec:
        """Runs ``step`` until done; returns ``x``."""
        while not self.done:
            self.step()
        return self.x

    def within_radius(self, trust_radius: float) -> tuple[Vec, float | None] | None:
        """``find_within_trust_radius(self.history, trust_radius)`` together with the model decrease
        ``bᵀp − ½pᵀ(A + reg·I)p`` of the returned point ``p`` (None if not tracked); None if no stored iterate lies
        inside the radius."""
        found = _last_inside(self.history, trust_radius)
        if found is None:
            return None
        i, tau = found
        x, _, d = self.history[i]
        decrease, rz, dAd = self._history_model[i]
        if d is None:
            return _clone(x), decrease
        return _axpy(x, tau, d), None if decrease is None else _decrease_after(decrease, tau, rz, dAd)


def cg(
    A_mm: MatVec,
    b: Vec | Sequence[torch.Tensor],
    x0: Vec | Sequence[torch.Tensor] | None = None,
    tol: float = 1e-8,
    maxiter: int | None = None,
    reg: float = 0,
    trust_radius: float | None = None,
    npc_terminate: bool = False,
    miniter: int = 0,
    history_size: int = 0,
    P_mm: MatVec | None = None,
) -> tuple[Vec, CG]:
    """Solves ``(A + reg·I) x = b`` by (preconditioned, Steihaug–Toint) conjugate gradient; returns ``(x, solver)``.

    See ``CG`` for the iteration, the stopping rules, the trust-region and non-positive-curvature handling;
    ``solver.status``, ``solver.iter``, ``solver.num_matvecs`` and ``solver.history`` describe the run. ``x`` has
    the kind of ``b`` (a tensor, or a ``TensorList`` for a sequence of tensors).

    Example:
        ```python
        A = torch.randn(8, 8, dtype=torch.float64); A = A @ A.T + torch.eye(8, dtype=torch.float64)
        b = torch.randn(8, dtype=torch.float64)
        x, solver = cg(lambda v: A @ v, b, tol=1e-12)
        x_tr, _ = cg(lambda v: A @ v, b, trust_radius=0.1)  # ‖x_tr‖ = 0.1 if ‖A⁻¹b‖ > 0.1
        ```
    """
    solver = CG(A_mm, b, x0=x0, tol=tol, maxiter=maxiter, reg=reg, trust_radius=trust_radius,
                npc_terminate=npc_terminate, miniter=miniter, history_size=history_size, P_mm=P_mm)
    return solver.solve(), solver


def find_within_trust_radius(history: Sequence[tuple[Vec, float, Vec | None]], trust_radius: float) -> Vec | None:
    """The Steihaug–Toint solution for a smaller radius, from the iterates of an earlier CG run on the same system.

    Looks for the last stored iterate ``x_k`` with ``‖x_k‖ < Δ`` (CG iterates started from zero grow in norm) and
    returns its extension ``x_k + τd_k`` to the boundary ``‖·‖ = Δ`` along the direction taken from it (or a copy of
    ``x_k`` itself if it is the final iterate, which has no direction). Returns None when no stored iterate lies
    inside the radius (for example if the history was truncated), in which case CG has to be run again.
    """
    found = _last_inside(history, trust_radius)
    if found is None:
        return None
    i, tau = found
    x, _, d = history[i]
    return _clone(x) if d is None else _axpy(x, tau, d)


def _decrease_after(decrease: float, tau: float, rz: float, dAd: float) -> float:
    """The model decrease ``bᵀx − ½xᵀAx`` after ``x ← x + τd``, from its value at ``x``, ``rᵀz`` (``= dᵀr`` for a CG
    direction) and ``dᵀAd``."""
    return decrease + tau * rz - 0.5 * tau * tau * dAd


def _last_inside(history: Sequence[tuple[Vec, float, Vec | None]], trust_radius: float) -> tuple[int, float] | None:
    """``(i, τ)``: the index of the last stored iterate with ``‖x_i‖ < Δ`` and the step ``τ`` to the boundary along
    its direction (0 for a final iterate without direction); None if there is none."""
    for i in range(len(history) - 1, -1, -1):
        x, x_norm, d = history[i]
        if x_norm < trust_radius:
            return i, (0.0 if d is None else _boundary_tau(x, d, trust_radius))
    return None


# --------------------------------------------------------------------------------------------------
# MINRES
# --------------------------------------------------------------------------------------------------
def minres(
    A_mm: MatVec,
    b: Vec | Sequence[torch.Tensor],
    x0: Vec | Sequence[torch.Tensor] | None = None,
    tol: float = 1e-4,
    maxiter: int | None = None,
    reg: float = 0,
    npc_terminate: bool = True,
    trust_radius: float | None = None,
) -> Vec:
    r"""Solves the symmetric (possibly indefinite) system ``(A + reg·I) x = b`` by MINRES.

    The standard Paige–Saunders recurrence: Lanczos vectors ``v_k`` with coefficients ``α_k, β_k``, a Givens QR of
    the tridiagonal matrix (``c_k, s_k``), and the three-term update of the directions
    ``w_k = (v_k − ε_k w_{k−2} − δ_k w_{k−1}) / γ_k``, ``x_k = x_{k−1} + τ_k w_k``; ``φ_k`` is the residual norm.
    Stops when ``φ_k/‖b‖ ≤ tol`` (relative), on a Lanczos breakdown (``β_{k+1} = 0``: exact solution), or after
    ``maxiter`` iterations (default ``numel(b)``).

    Non-positive curvature is detected as in Liu & Roosta, ``c_{k−1}γ_k^{(1)} ≥ 0`` (equivalent to
    ``r_{k−1}ᵀAr_{k−1} ≤ 0`` for the residual ``r_{k−1} = b − Ax_{k−1}``, which is updated by the recurrence
    ``r_k = s_k² r_{k−1} − φ_k c_k v_{k+1}``). Then, with ``trust_radius`` the boundary point along ``r_{k−1}`` is
    returned, otherwise with ``npc_terminate`` the residual ``r_{k−1}`` itself (a direction of non-positive
    curvature that, subtracted, decreases ``−bᵀx + ½xᵀAx``); otherwise the iteration continues (MINRES handles
    indefinite systems). With ``trust_radius`` an iterate leaving the ball is replaced by the boundary point along
    the last update (MINRES iterates grow in norm before non-positive curvature is met).

    Non-finite values stop the iteration and return the last finite iterate. ``b`` and ``x0`` are not modified.

    Args:
        A_mm: ``A_mm(v) = A v`` (``A`` symmetric) for a vector of the same kind as ``b``.
        b: right-hand side, a tensor or a ``TensorList``/sequence of tensors.
        x0: initial guess, zeros when None.
        tol: relative residual tolerance. Defaults to 1e-4.
        maxiter: maximum number of iterations, ``numel(b)`` when None.
        reg: ``reg·I`` is added to ``A``. Defaults to 0.
        npc_terminate: return the residual on non-positive curvature. Defaults to True.
        trust_radius: L2 trust-region radius, None for an unconstrained solve.

    Returns:
        the solution, of the kind of ``b``.

    Reference:
        C. C. Paige & M. A. Saunders, "Solution of sparse indefinite systems of linear equations", SIAM J. Numer.
        Anal. 12(4), 1975; Y. Liu & F. Roosta, "MINRES: From negative curvature detection to monotonicity
        properties", SIAM J. Optim. 32(4), 2022.
    """
    _check_common("minres", tol, maxiter, reg, trust_radius)
    b = _as_vec(b)
    n = _numel(b)
    maxiter = n if maxiter is None else maxiter
    eps = torch.finfo(b.dtype if isinstance(b, torch.Tensor) else b[0].dtype).eps

    def A(v: Vec) -> Vec:
        return _matvec(A_mm, v, reg)

    if x0 is None:
        x = _zeros_like(b)
        r1 = _clone(b)
    else:
        x = _clone(_as_vec(x0))
        r1 = _axpy(b, -1.0, A(x))
        if trust_radius is not None:
            x_norm = _norm(x)
            if x_norm >= trust_radius:
                return _scale(x, trust_radius / x_norm)

    b_norm = _norm(b)
    beta1 = _norm(r1)
    if beta1 == 0 or not math.isfinite(beta1):
        return x
    if b_norm == 0:
        b_norm = beta1

    track_residual = npc_terminate or trust_radius is not None
    r = r1  # residual r_{k-1}; replaced (never modified in place) by the recurrence
    y = r1
    r2 = r1
    oldb = 0.0
    beta = beta1
    dbar = 0.0
    epsln = 0.0
    phibar = beta1
    cs, sn = -1.0, 0.0
    w = _zeros_like(b)
    w2 = _zeros_like(b)

    for itn in range(maxiter):
        v = _scale(y, 1.0 / beta)
        y = A(v)
        if itn > 0:
            y = _axpy(y, -beta / oldb, r1)
        alfa = float(_dot(v, y))
        y = _axpy(y, -alfa / beta, r2)
        r1, r2 = r2, y
        oldb = beta
        beta = _norm(y)
        if not (math.isfinite(alfa) and math.isfinite(beta)):
            break

        oldeps = epsln
        delta = cs * dbar + sn * alfa
        gbar = sn * dbar - cs * alfa
        if cs * gbar >= 0:  # non-positive curvature along r_{k-1}
            if trust_radius is not None:
                return _to_boundary(x, r, trust_radius)
            if npc_terminate:
                return _clone(r)

        epsln = sn * beta
        dbar = -cs * beta
        gamma = max(math.hypot(gbar, beta), eps)
        cs = gbar / gamma
        sn = beta / gamma
        phi = cs * phibar
        phibar = sn * phibar

        w1, w2 = w2, w
        w = _scale(v, 1.0 / gamma)
        if oldeps != 0:
            _axpy_(w, -oldeps / gamma, w1)
        if delta != 0:
            _axpy_(w, -delta / gamma, w2)

        if trust_radius is not None:
            x_new = _axpy(x, phi, w)
            if _norm(x_new) >= trust_radius:
                return _to_boundary(x, w if phi >= 0 else _scale(w, -1.0), trust_radius)
            x = x_new
        else:
            _axpy_(x, phi, w)

        if track_residual:
            r = _scale(r, sn * sn)
            if beta > 0:
                _axpy_(r, -phibar * cs / beta, y)

        if phibar / b_norm <= tol or beta == 0:
            break
    return x
