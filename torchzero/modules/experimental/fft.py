"""``FFTProjection``: children work on real-FFT coefficients of the parameters/update."""
from __future__ import annotations

from typing import Literal

import torch

from ...core import Chainable
from ...utils.checks import check_bool, check_choice
from ...utils.torch_tools import vec_to_tensors
from ..projections.cast import _as_complex
from ..projections.projection import ProjectionBase
from ..projections.vector import flatten_cat

_NORMS = (None, "backward", "forward", "ortho")


class FFTProjection(ProjectionBase):
    """Projection into the real-FFT domain: the child sees the (real views of the) FFT coefficients.

    With ``one_d=True`` all tensors are concatenated into a vector ``v`` of length ``N`` and the child sees
    ``view_as_real(rfft(v))`` (shape ``(N//2 + 1, 2)``); ``unproject`` is ``irfft(·, n=N)``. Otherwise each tensor
    with more than one element is shown as ``view_as_real(rfftn(T))`` and restored with ``irfftn(·, s=T.shape)``;
    tensors with one element pass unchanged. ``rfft``/``irfft`` are inverse to rounding for the coefficients of
    a real signal, so a child that leaves its update alone gives back the update. With ``norm='ortho'`` the
    transform is orthogonal (up to the real-view doubling of the non-self-conjugate coefficients).

    Args:
        modules: the child modules.
        one_d: one FFT of the concatenated vector instead of one N-D FFT per tensor. Defaults to False.
        norm: the ``torch.fft`` normalisation: None (same as ``'backward'``), ``'forward'`` or ``'ortho'``.
            Defaults to None.
        project_update: project the incoming update. Defaults to True.
        project_params: give the child FFT coefficients of the parameters and a closure over them.
            Defaults to False.
        project_grad: project the known gradient. Defaults to False.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.experimental.FFTProjection(tz.m.Adam()), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, modules: Chainable, one_d: bool = False, norm: Literal["backward", "forward", "ortho"] | None = None,
                 project_update: bool = True, project_params: bool = False, project_grad: bool = False):
        check_bool("FFTProjection", "one_d", one_d)
        check_choice("FFTProjection", "norm", norm, _NORMS)
        super().__init__(modules, project_update=project_update, project_params=project_params,
                         project_grad=project_grad, defaults=dict(one_d=one_d, norm=norm))

    def project(self, tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        s0 = settings[0]
        norm = s0["norm"]
        if s0["one_d"]:
            return [torch.view_as_real(torch.fft.rfft(flatten_cat(tensors), norm=norm))]
        return [torch.view_as_real(torch.fft.rfftn(t, norm=norm)) if t.numel() > 1 else t
                for t in tensors]

    def unproject(self, projected_tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        s0 = settings[0]
        norm = s0["norm"]
        if s0["one_d"]:
            n = sum(p.numel() for p in params)
            vec = torch.fft.irfft(_as_complex(projected_tensors[0]), n=n, norm=norm)
            return vec_to_tensors(vec, params)
        return [torch.fft.irfftn(_as_complex(t), s=p.shape, norm=norm) if p.numel() > 1 else t
                for t, p in zip(projected_tensors, params)]
