"""Limited-memory SR1: the recursion, its operator and the ``LSR1`` module."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from ...core import Chainable
from ...utils.linalg.linear_operator import LinearOperator
from .damping import DampingStrategy
from .limited_memory import LimitedMemoryBase


def lsr1_corrections(a_history: Sequence[torch.Tensor], b_history: Sequence[torch.Tensor]
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Rank-one corrections of SR1 applied to the pairs oldest-first from the identity, for ``M b_k ≈ a_k``.

    Returns ``(w, c)`` with ``w_k = a_k − M_{k−1} b_k`` (computed recursively) and ``c_k = 1/(w_kᵀb_k)``, or
    ``c_k = 0`` (the pair is omitted) when ``|w_kᵀb_k| < 2·tiny``; then ``M x = x + Σ_k w_k·c_k·(w_kᵀx)``.
    H-form: ``(s, y)``; B-form: ``(y, s)``. O(m²) dot products, no host syncs."""
    ws: list[torch.Tensor] = []
    cs: list[torch.Tensor] = []
    for a, b in zip(a_history, b_history):
        w = a - b
        for wj, cj in zip(ws, cs):
            w.addcmul_(wj, wj.dot(b) * cj, value=-1)
        wb = w.dot(b)
        tiny2 = 2 * torch.finfo(wb.dtype).tiny
        cs.append(torch.where(wb.abs() < tiny2, torch.zeros_like(wb), 1 / wb))
        ws.append(w)
    return ws, cs


def lsr1_apply_(x: torch.Tensor, ws: Sequence[torch.Tensor], cs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``x + Σ_k w_k·c_k·(w_kᵀx)`` in place on ``x`` (all dot products with the original ``x``)."""
    coefs = [w.dot(x) * c for w, c in zip(ws, cs)]
    for w, coef in zip(ws, coefs):
        x.addcmul_(w, coef)
    return x


class LSR1Operator(LinearOperator):
    """The L-SR1 curvature model: ``solve(b) = H b`` and ``matvec(x) = B x``, both SR1 recursions over the stored
    pairs from the identity (``B`` with ``s`` and ``y`` swapped). Identity with an empty history."""

    def __init__(self, s_history: Sequence[torch.Tensor], y_history: Sequence[torch.Tensor], n: int,
                 device: torch.device, dtype: torch.dtype,
                 H_corrections: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None):
        self.s_history = list(s_history)
        self.y_history = list(y_history)
        self.n = n
        self.device = device
        self.dtype = dtype
        self._H = H_corrections
        self._B: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        if self._H is None:
            self._H = lsr1_corrections(self.s_history, self.y_history)
        return lsr1_apply_(b.clone(), *self._H)

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        if self._B is None:
            self._B = lsr1_corrections(self.y_history, self.s_history)
        return lsr1_apply_(x.clone(), *self._B)

    def to_tensor(self) -> torch.Tensor:
        eye = torch.eye(self.n, device=self.device, dtype=self.dtype)
        return torch.stack([self.matvec(c) for c in eye.unbind(1)], 1)

    def size(self) -> tuple[int, int]:
        return (self.n, self.n)


class LSR1(LimitedMemoryBase):
    """Limited-memory symmetric rank-one method.

    Keeps the ``history_size`` newest pairs (every pair passing the optional ``ptol``/``gtol`` tests is stored; there
    is no curvature test). ``u = H g``, where ``H`` is SR1 applied to the stored pairs oldest-first starting from
    ``H₀ = I`` (no scaling): ``w_k = s_k − H_{k−1}y_k`` (recursively), then ``H g = g + Σ_k w_k·(w_kᵀg)/(w_kᵀy_k)``,
    omitting any pair with ``|w_kᵀy_k| < 2·tiny``. The corrections ``w_k`` are recomputed only when the history
    changes (``global_state['w_history']``, ``['wy_inv_history']``). With ``m`` pairs ``(s_k, A s_k)`` this equals
    dense ``SR1(init_scale=1, tol=0)`` fed the same pairs, and with n independent pairs ``H = A⁻¹``.

    ``get_H`` returns an ``LSR1Operator`` (``solve`` = ``H b``, ``matvec`` = the same recursion with ``s`` and ``y``
    swapped, ``B₀ = I``). The result can be indefinite, so a trust region (e.g. ``TrustCG``) is the intended
    pairing. Pair tests, damping, restarts and ``scale_first`` are described in ``LimitedMemoryBase``.

    Args:
        history_size: number of stored pairs. Defaults to 10.
        ptol: drop pairs with ``max|s| ≤ ptol`` (None disables). Defaults to None.
        ptol_restart: clear the history when ``ptol`` triggers. Defaults to False.
        gtol: drop pairs with ``max|y| ≤ gtol`` (None disables). Defaults to None.
        gtol_restart: clear the history when ``gtol`` triggers. Defaults to False.
        scale_first: scale the first output by ``σ(u) = min(1, 1/‖u‖₁)`` (floored). Defaults to False.
        update_freq: update the history every this many steps. Defaults to 1.
        damping: ``'powell'``, ``'double'`` or a callable ``(s, y, g, H) -> (s, y)``. Defaults to None.
        inner: modules applied to the incoming update before preconditioning. Defaults to None.

    Reference:
        Nocedal & Wright 2nd ed., §7.2 (limited-memory SR1); R. H. Byrd, J. Nocedal, R. B. Schnabel,
        "Representations of quasi-Newton matrices and their use in limited memory methods", *Math. Programming*
        63, 1994.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.TrustCG(tz.m.LSR1()))
        ```
    """

    def __init__(self, history_size: int = 10, ptol: float | None = None, ptol_restart: bool = False,
                 gtol: float | None = None, gtol_restart: bool = False, scale_first: bool = False,
                 update_freq: int = 1, damping: Literal["powell", "double"] | DampingStrategy | None = None,
                 inner: Chainable | None = None):
        super().__init__({}, history_size=history_size, ptol=ptol, ptol_restart=ptol_restart, gtol=gtol,
                         gtol_restart=gtol_restart, scale_first=scale_first, update_freq=update_freq,
                         damping=damping, inner=inner)

    def accept_pair(self, s: torch.Tensor, y: torch.Tensor, sy: torch.Tensor, sy_f: float,
                    settings: dict[str, Any]) -> None:
        self.global_state["s_history"].append(s)
        self.global_state["y_history"].append(y)
        self.on_history_change()

    def on_history_change(self) -> None:
        st = self.global_state
        ws, cs = lsr1_corrections(st["s_history"], st["y_history"])
        st["w_history"], st["wy_inv_history"] = ws, cs

    def make_operator(self, n: int, device: torch.device, dtype: torch.dtype) -> LSR1Operator:
        st = self.global_state
        H = (st["w_history"], st["wy_inv_history"]) if "w_history" in st else None
        return LSR1Operator(st.get("s_history", ()), st.get("y_history", ()), n, device, dtype, H_corrections=H)

    def precondition_(self, g: torch.Tensor) -> torch.Tensor:
        st = self.global_state
        return lsr1_apply_(g, st.get("w_history", ()), st.get("wy_inv_history", ()))
