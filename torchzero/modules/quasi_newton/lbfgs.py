"""Limited-memory BFGS: the two-loop recursion, its compact-representation operator, and the ``LBFGS`` module."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from ...core import Chainable
from ...utils.checks import check_range
from ...utils.linalg.linear_operator import LinearOperator
from .damping import DampingStrategy
from .limited_memory import LimitedMemoryBase


def lbfgs_Hx_(q: torch.Tensor, s_history: Sequence[torch.Tensor], y_history: Sequence[torch.Tensor],
              sy_history: Sequence[torch.Tensor]) -> torch.Tensor:
    """Two-loop recursion ``H q`` (N&W Algorithm 7.4), computed in place on ``q`` and returned.

    The initial matrix is ``γI`` with ``γ = sᵀy/yᵀy`` of the newest pair; ``q`` is returned unchanged for an empty
    history. The arithmetic follows ``torch.optim.LBFGS`` (``ρ = 1/sᵀy``, ``α = ρ·sᵀq``, ``β = ρ·yᵀr``), with the
    scalars kept on the device (no host syncs)."""
    m = len(s_history)
    if m == 0:
        return q
    rho = [1 / sy for sy in sy_history]
    alpha: list[torch.Tensor] = [q] * m  # placeholders
    for i in range(m - 1, -1, -1):
        alpha[i] = s_history[i].dot(q) * rho[i]
        q.addcmul_(y_history[i], alpha[i], value=-1)
    y_new = y_history[-1]
    q.mul_(sy_history[-1] / y_new.dot(y_new))
    for i in range(m):
        beta = y_history[i].dot(q) * rho[i]
        q.addcmul_(s_history[i], alpha[i] - beta)
    return q


class LBFGSOperator(LinearOperator):
    """The L-BFGS curvature model from a history of pairs (flattened vectors, oldest first).

    ``solve(b) = H b`` is the two-loop recursion; ``matvec(x) = B x`` uses the compact representation (Byrd,
    Nocedal & Schnabel 1994): ``B = δI − W M⁻¹ Wᵀ`` with ``δ = yᵀy/sᵀy`` (newest pair), ``W = [δS, Y]`` and
    ``M = [[δSᵀS, L], [Lᵀ, −D]]`` (``L`` the strictly lower part of ``SᵀY``, ``D`` its diagonal), the ``2m × 2m``
    system solved by LU. With an empty history both are the identity.
    """

    def __init__(self, s_history: Sequence[torch.Tensor], y_history: Sequence[torch.Tensor],
                 sy_history: Sequence[torch.Tensor], n: int, device: torch.device, dtype: torch.dtype):
        self.s_history = list(s_history)
        self.y_history = list(y_history)
        self.sy_history = list(sy_history)
        self.n = n
        self.device = device
        self.dtype = dtype
        self._compact: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        return lbfgs_Hx_(b.clone(), self.s_history, self.y_history, self.sy_history)

    def _compact_form(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._compact is None:
            S = torch.stack(self.s_history, 1)
            Y = torch.stack(self.y_history, 1)
            y, sy = self.y_history[-1], self.sy_history[-1]
            delta = y.dot(y) / sy
            SY = S.mT @ Y
            L = SY.tril(-1)
            M = torch.cat([torch.cat([delta * (S.mT @ S), L], 1),
                           torch.cat([L.mT, -torch.diag(SY.diagonal())], 1)], 0)
            W = torch.cat([S * delta, Y], 1)
            self._compact = (delta, W, M)
        return self._compact

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.s_history) == 0:
            return x.clone()
        delta, W, M = self._compact_form()
        return x * delta - W @ torch.linalg.solve(M, W.mT @ x)

    def matmat(self, X: torch.Tensor) -> torch.Tensor:
        if len(self.s_history) == 0:
            return X.clone()
        delta, W, M = self._compact_form()
        return X * delta - W @ torch.linalg.solve(M, W.mT @ X)

    def to_tensor(self) -> torch.Tensor:
        return self.matmat(torch.eye(self.n, device=self.device, dtype=self.dtype))

    def inv(self) -> LinearOperator:
        return _LBFGSInverse(self)

    def size(self) -> tuple[int, int]:
        return (self.n, self.n)


class _LBFGSInverse(LinearOperator):
    """``H = B⁻¹`` of an ``LBFGSOperator`` (matvec and solve swapped)."""

    def __init__(self, op: LBFGSOperator):
        self.op = op
        self.device = op.device
        self.dtype = op.dtype

    def matvec(self, x):
        return self.op.solve(x)

    def solve(self, b):
        return self.op.matvec(b)

    def inv(self):
        return self.op

    def to_tensor(self):
        return torch.stack([self.op.solve(c) for c in torch.eye(self.op.n, device=self.device,
                                                                 dtype=self.dtype).unbind(1)], 1)

    def size(self):
        return self.op.size()


class LBFGS(LimitedMemoryBase):
    """Limited-memory BFGS.

    Keeps the ``history_size`` newest secant pairs ``(s, y)`` with ``sᵀy > sy_tol`` (and their ``sᵀy``) as
    flattened vectors in ``global_state`` (``s_history``, ``y_history``, ``sy_history``). The output is the two-loop
    recursion ``u = H g`` with initial matrix ``γI``, ``γ = sᵀy/yᵀy`` of the newest pair (the input is returned
    unchanged while the history is empty). With ``scale_first`` the first output is multiplied by
    ``σ(u) = min(1, 1/‖u‖₁)`` (floored so that ``max|σu| ≥ max(1e-7, eps)``), as the first step of
    ``torch.optim.LBFGS``. Pair tests, damping and restarts are described in ``LimitedMemoryBase``; a pair failing
    only the curvature test ``sᵀy > sy_tol`` is not stored but ``x_prev``, ``g_prev`` are refreshed (as in
    ``torch.optim.LBFGS``).

    ``get_H`` returns an ``LBFGSOperator``: ``solve(b)`` is the two-loop product ``H b`` and ``matvec(x)`` is ``B x``
    from the compact representation.

    Args:
        history_size: number of stored pairs. Defaults to 10.
        ptol: drop pairs with ``max|s| ≤ ptol`` (None disables). Defaults to 1e-32.
        ptol_restart: clear the history when ``ptol`` triggers. Defaults to False.
        gtol: drop pairs with ``max|y| ≤ gtol`` (None disables). Defaults to 1e-32.
        gtol_restart: clear the history when ``gtol`` triggers. Defaults to False.
        sy_tol: store a pair only if ``sᵀy > sy_tol``. Defaults to 1e-32.
        scale_first: scale the first output by ``σ(u)``. Defaults to True.
        update_freq: update the history every this many steps. Defaults to 1.
        damping: ``'powell'``, ``'double'`` or a callable ``(s, y, g, H) -> (s, y)`` modifying each pair before the
            tests (see ``damping.py``). Defaults to None.
        inner: modules applied to the incoming update before preconditioning (the pairs are formed from the raw
            incoming update). Defaults to None.

    Reference:
        J. Nocedal, "Updating quasi-Newton matrices with limited storage", *Math. Comp.* 35:773–782, 1980;
        D. C. Liu, J. Nocedal (1989); Nocedal & Wright 2nd ed., §7.2 (Algorithm 7.4, eq. 7.20); R. H. Byrd,
        J. Nocedal, R. B. Schnabel, "Representations of quasi-Newton matrices and their use in limited memory
        methods", *Math. Programming* 63, 1994 (compact form).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.LBFGS(history_size=10), tz.m.StrongWolfe())
        ```
    """

    _history_keys = ("s_history", "y_history", "sy_history")

    def __init__(self, history_size: int = 10, ptol: float | None = 1e-32, ptol_restart: bool = False,
                 gtol: float | None = 1e-32, gtol_restart: bool = False, sy_tol: float = 1e-32,
                 scale_first: bool = True, update_freq: int = 1,
                 damping: Literal["powell", "double"] | DampingStrategy | None = None,
                 inner: Chainable | None = None):
        check_range("LBFGS", "sy_tol", sy_tol, 0)
        super().__init__(dict(sy_tol=sy_tol), history_size=history_size, ptol=ptol, ptol_restart=ptol_restart,
                         gtol=gtol, gtol_restart=gtol_restart, scale_first=scale_first, update_freq=update_freq,
                         damping=damping, inner=inner)

    def accept_pair(self, s: torch.Tensor, y: torch.Tensor, sy: torch.Tensor, sy_f: float,
                    settings: dict[str, Any]) -> None:
        if sy_f > settings["sy_tol"]:
            st = self.global_state
            st["s_history"].append(s)
            st["y_history"].append(y)
            st["sy_history"].append(sy)

    def make_operator(self, n: int, device: torch.device, dtype: torch.dtype) -> LBFGSOperator:
        st = self.global_state
        return LBFGSOperator(st.get("s_history", ()), st.get("y_history", ()), st.get("sy_history", ()), n,
                             device, dtype)

    def precondition_(self, g: torch.Tensor) -> torch.Tensor:
        st = self.global_state
        return lbfgs_Hx_(g, st.get("s_history", ()), st.get("y_history", ()), st.get("sy_history", ()))
