"""``To`` (run children in another dtype / on another device) and ``ViewAsReal`` (complex parameters as real)."""
from __future__ import annotations

import torch

from ...core import Chainable
from .projection import ProjectionBase


class To(ProjectionBase):
    """Projection that casts parameters, gradients and updates to ``dtype`` and/or ``device`` for the child.

    ``project(T) = T.to(dtype, device)`` (the original dtype and device of each tensor are recorded in the
    projection's per-parameter state), ``unproject`` casts the child's results back. Typical use: run a
    curvature or quasi-Newton chain in float64 on float32 parameters. A ``None`` dtype/device keeps that of the
    tensor. Both are per-parameter settings, so ``set_param_groups`` can send only some parameters elsewhere.
    Tensors that already have the target dtype and device are passed without a copy.

    Args:
        modules: the child modules.
        dtype: the dtype the child works in, or None.
        device: the device the child works on, or None. Defaults to None.

    Example:
        ```python
        # L-BFGS with a line search in float64 on a float32 model
        opt = tz.Modular(model.parameters(), tz.m.To([tz.m.LBFGS(), tz.m.Backtracking()], dtype=torch.float64))
        ```
    """

    def __init__(self, modules: Chainable, dtype: torch.dtype | None, device: torch.device | str | int | None = None):
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f"To: dtype must be a torch.dtype or None, got {type(dtype).__name__}")
        if device is not None:
            try:
                device = torch.device(device)
            except (RuntimeError, TypeError) as e:
                raise ValueError(f"To: invalid device {device!r}: {e}") from None
        super().__init__(modules, project_update=True, project_params=True, project_grad=True,
                         defaults=dict(dtype=dtype, device=device))

    def project(self, tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        out = []
        for t, state, setting in zip(tensors, states, settings):
            state["dtype"] = t.dtype
            state["device"] = t.device
            out.append(t.to(dtype=setting["dtype"], device=setting["device"]))
        return out

    def unproject(self, projected_tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        return [t.to(dtype=state["dtype"], device=state["device"]) for t, state in zip(projected_tensors, states)]


class ViewAsReal(ProjectionBase):
    """Projection that makes complex parameters optimisable by any module: each complex tensor is shown to the
    child as its ``torch.view_as_real`` view (a trailing dimension of size 2 holding real and imaginary parts);
    real tensors pass unchanged.

    For a real loss ``f(z)``, PyTorch's gradient of a complex ``z = x + iy`` is ``∂f/∂x + i ∂f/∂y``, so the real
    view of the gradient is the gradient with respect to ``(x, y)``: the child optimises ``f`` as a function of
    ``2n`` real numbers, as ``torch.optim`` does with complex parameters. ``unproject`` converts back with
    ``view_as_complex``. The per-parameter state records which tensors were complex.

    Args:
        modules: the child modules.

    Example:
        ```python
        z = torch.randn(10, dtype=torch.complex128, requires_grad=True)
        opt = tz.Modular([z], tz.m.ViewAsReal(tz.m.Adam()), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, modules: Chainable):
        super().__init__(modules, project_update=True, project_params=True, project_grad=True)

    def project(self, tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        out = []
        for t, state in zip(tensors, states):
            is_complex = state["complex"] = t.is_complex()
            out.append(torch.view_as_real(t.resolve_conj()) if is_complex else t)
        return out

    def unproject(self, projected_tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        return [_as_complex(t) if state["complex"] else t for t, state in zip(projected_tensors, states)]


def _as_complex(t: torch.Tensor) -> torch.Tensor:
    """``view_as_complex``, copying first when the layout of ``t`` doesn't allow a view."""
    try:
        return torch.view_as_complex(t)
    except RuntimeError:
        return torch.view_as_complex(t.contiguous())
