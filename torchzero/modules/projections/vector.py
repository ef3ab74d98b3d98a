"""``VectorProjection`` (all parameters as one vector) and ``ScalarProjection`` (every element a parameter)."""
from __future__ import annotations

from typing import Any

import torch

from ...core import Chainable
from ...utils.torch_tools import vec_to_tensors
from .projection import ProjectionBase


def flatten_cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """All tensors flattened and concatenated into one 1-D tensor (a new tensor)."""
    return torch.cat([t.reshape(-1) for t in tensors])


class VectorProjection(ProjectionBase):
    """Projection that shows the child one parameter: all tensors flattened and concatenated into a vector.

    ``project(T) = [cat(vec(T₁), …, vec(Tₙ))]``; ``unproject`` splits the vector back into views shaped like the
    parameters. Useful for modules that treat each tensor separately (per-tensor norms, matrix-shaped
    preconditioners) to make them act on the whole parameter vector.

    Args:
        modules: the child modules.
        project_update: project the incoming update. Defaults to True.
        project_params: give the child the concatenated parameters and a closure over them. Defaults to True.
        project_grad: project the known gradient. Defaults to True.

    Example:
        ```python
        # per-tensor normalization becomes normalization of the whole update
        opt = tz.Modular(model.parameters(), tz.m.VectorProjection(tz.m.Normalize()), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, modules: Chainable, project_update: bool = True, project_params: bool = True,
                 project_grad: bool = True):
        super().__init__(modules, project_update=project_update, project_params=project_params,
                         project_grad=project_grad)

    def project(self, tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        return [flatten_cat(tensors)]

    def unproject(self, projected_tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        return vec_to_tensors(projected_tensors[0], params)


class ScalarProjection(ProjectionBase):
    """Projection that shows the child every element as a separate 0-d parameter.

    ``project(T) = [T₁[0], T₁[1], …, Tₙ[-1]]`` (views of the flattened tensors); ``unproject`` stacks the scalars
    back into the parameter shapes. Mostly a test of elementwise behaviour: an elementwise child gives the same
    result as without the projection, while per-tensor statistics become per-element ones. One foreach call over
    ``n`` scalars is much slower than over whole tensors, so use it on small problems.

    Args:
        modules: the child modules.
        project_update: project the incoming update. Defaults to True.
        project_params: give the child the scalar parameters and a closure over them. Defaults to True.
        project_grad: project the known gradient. Defaults to True.

    Example:
        ```python
        # per-element normalization instead of per-tensor normalization
        opt = tz.Modular(params, tz.m.ScalarProjection(tz.m.Normalize()), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, modules: Chainable, project_update: bool = True, project_params: bool = True,
                 project_grad: bool = True):
        super().__init__(modules, project_update=project_update, project_params=project_params,
                         project_grad=project_grad)

    def project(self, tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        return [s for t in tensors for s in t.reshape(-1).unbind(0)]

    def unproject(self, projected_tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        out: list[Any] = []
        i = 0
        for p in params:
            n = p.numel()
            out.append(torch.stack(projected_tensors[i:i + n]).view(p.shape))
            i += n
        return out
