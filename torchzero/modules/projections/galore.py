"""``GaLore``: child modules run on a low-rank projection of each matrix-shaped update (gradient low-rank
projection)."""
from __future__ import annotations

import math
from typing import Any

import torch

from ...core import Chainable, Var
from ...utils.checks import check_choice, check_int, check_range
from .projection import ProjectionBase

_SVD_DRIVERS = (None, "gesvd", "gesvdj", "gesvda")


def galore_shape(shape: torch.Size | tuple[int, ...], rank: int) -> tuple[int, int] | None:
    """The matrix shape ``(m, n) = (size(0), prod(rest))`` of a parameter that GaLore projects to rank ``rank``,
    or None when it passes through (fewer than 2 dims, or ``min(m, n) <= rank``)."""
    if len(shape) < 2:
        return None
    m = shape[0]
    n = math.prod(shape[1:])
    if min(m, n) <= rank:
        return None
    return m, n


def galore_projector(matrix: torch.Tensor, rank: int, driver: str | None = None) -> torch.Tensor | None:
    """The GaLore projector of an ``m × n`` matrix ``G``: the top-``rank`` left singular vectors ``P`` (``m × rank``)
    when ``m <= n``, else the top-``rank`` right singular vectors as rows, ``Qᴴ`` (``rank × n``). The SVD runs in at
    least float32 (half precision is cast up); the projector has the dtype of ``G``. Returns None when ``G`` is
    not finite. ``driver`` is passed to ``torch.linalg.svd`` on CUDA only (the CPU SVD has no driver choice)."""
    if not bool(torch.isfinite(matrix).all()):
        return None
    work = matrix
    if work.dtype in (torch.float16, torch.bfloat16):
        work = work.float()
    kwargs: dict[str, Any] = {"driver": driver} if (driver is not None and work.is_cuda) else {}
    U, _, Vh = torch.linalg.svd(work, full_matrices=False, **kwargs)
    m, n = matrix.shape
    proj = U[:, :rank] if m <= n else Vh[:rank, :]
    return proj.to(matrix.dtype).contiguous()


def galore_project(matrix: torch.Tensor, projector: torch.Tensor, left: bool) -> torch.Tensor:
    """``Pᴴ G`` (``rank × n``) for a left projector ``P`` (``m × rank``), else ``G Q`` (``m × rank``) for a right
    projector stored as ``Qᴴ`` (``rank × n``)."""
    return projector.mH @ matrix if left else matrix @ projector.mH


def galore_unproject(low_rank: torch.Tensor, projector: torch.Tensor, left: bool) -> torch.Tensor:
    """``P N`` for a left projector (``N`` is ``rank × n``), else ``N Qᴴ`` (``N`` is ``m × rank``)."""
    return projector @ low_rank if left else low_rank @ projector


class GaLore(ProjectionBase):
    """GaLore: the child modules optimise a rank-``rank`` projection of each matrix-shaped update.

    Each parameter with ≥ 2 dims is seen as the matrix ``G`` of shape ``(m, n) = (size(0), prod(rest))``. Every
    ``update_freq`` steps (the first step included) the projector is refreshed from the SVD ``G = U Σ Vᴴ`` of the
    incoming update (the gradient when there is none yet):

    - ``m <= n``: ``P = U[:, :r]``, the child sees ``R = Pᴴ G`` (``r × n``) and its output ``N`` becomes ``scale · P N``;
    - ``m > n``: ``Q = V[:, :r]``, the child sees ``R = G Q`` (``m × r``) and ``N`` becomes ``scale · N Qᴴ``.

    The child's state (e.g. Adam's moments) lives in the low-rank space and is kept as it is across projector
    refreshes, as in the paper. Parameters with fewer than 2 dims or with ``min(m, n) <= rank`` pass through
    unprojected: the child sees them at full size, and ``scale`` does not apply to them (as in the paper, where
    they are not GaLore parameters). The projectors are per-parameter state (``'projector'``: ``P`` or ``Qᴴ``), so
    they are saved in the state dict. The SVD runs in at least float32 (half precision is cast up).

    Non-finite updates: a refresh from a matrix with NaN/inf entries is skipped — the previous projector is kept
    (on the very first step, the first ``rank`` coordinate axes are used) and the refresh is retried on the next
    step. The non-finite values themselves still go through the projection to the child.

    The child's parameters are placeholders holding the projected update (``project_params=False`` of
    ``ProjectionBase``): children that read parameter values or evaluate the closure more than once (line
    searches) are not supported. ``rank``, ``update_freq``, ``scale`` and ``svd_driver`` are per-parameter
    settings; ``rank`` must stay fixed during a run (it sets the shape of the child's state).

    Args:
        modules: the child modules (e.g. ``tz.m.Adam()``).
        rank: rank of the projection. Defaults to 128.
        update_freq: number of steps between projector refreshes. Defaults to 200.
        scale: multiplier of the projected-back update of projected parameters. Defaults to 1.
        svd_driver: cuSOLVER driver of ``torch.linalg.svd`` (``'gesvd'``, ``'gesvdj'``, ``'gesvda'``) for CUDA
            tensors; ignored on CPU. None uses torch's default. Defaults to None.

    Reference:
        J. Zhao, Z. Zhang, B. Chen, Z. Wang, A. Anandkumar, Y. Tian, "GaLore: Memory-Efficient LLM Training by
        Gradient Low-Rank Projection", ICML 2024.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.GaLore(tz.m.Adam(), rank=128, update_freq=200, scale=0.25),
                         tz.m.LR(1e-3))
        ```
    """

    def __init__(self, modules: Chainable, rank: int = 128, update_freq: int = 200, scale: float = 1.0,
                 svd_driver: str | None = None):
        check_int("GaLore", "rank", rank)
        check_int("GaLore", "update_freq", update_freq)
        check_range("GaLore", "scale", scale)
        if not math.isfinite(scale):
            raise ValueError(f"GaLore: scale must be finite, got {scale}")
        check_choice("GaLore", "svd_driver", svd_driver, _SVD_DRIVERS)
        super().__init__(modules, project_update=True, project_params=False, project_grad=False,
                         defaults=dict(rank=rank, update_freq=update_freq, scale=scale, svd_driver=svd_driver))

    def _refresh_projectors(self, params: list[torch.Tensor], tensors: list[torch.Tensor], step: int) -> None:
        """Recomputes the projectors that are due at ``step`` (see the class docs)."""
        for p, t in zip(params, tensors):
            setting = self.settings[p]
            shape = galore_shape(p.shape, setting["rank"])
            if shape is None:
                continue
            state = self.state[p]
            if "projector" in state and step % setting["update_freq"] != 0 and not state.get("retry", False):
                continue
            m, n = shape
            rank = setting["rank"]
            proj = galore_projector(t.reshape(m, n), rank, setting["svd_driver"])
            if proj is None:
                state["retry"] = True
                if "projector" not in state:
                    eye = torch.eye(max(m, n), rank, dtype=t.dtype, device=t.device)
                    state["projector"] = eye[:m].contiguous() if m <= n else eye[:n].mT.contiguous()
            else:
                state["projector"] = proj
                state.pop("retry", None)

    def step(self, var: Var) -> Var:
        step = self.global_state.get("step", 0)
        update = var.get_update()
        with torch.no_grad():
            self._refresh_projectors(var.params, update, step)
        var = super().step(var)
        self.global_state["step"] = step + 1
        return var

    def project(self, tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        out = []
        for t, p in zip(tensors, params):
            shape = galore_shape(p.shape, self.settings[p]["rank"])
            if shape is None:
                out.append(t)
                continue
            m, n = shape
            out.append(galore_project(t.reshape(m, n), self.state[p]["projector"], left=m <= n))
        return out

    def unproject(self, projected_tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        out = []
        for u, p, setting in zip(projected_tensors, params, settings):
            shape = galore_shape(p.shape, setting["rank"])
            if shape is None:
                out.append(u)
                continue
            m, n = shape
            full = galore_unproject(u, self.state[p]["projector"], left=m <= n)
            scale = setting["scale"]
            if scale != 1:
                full.mul_(scale)
            out.append(full.view(p.shape))
        return out
