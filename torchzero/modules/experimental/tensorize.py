"""``TensorizeProjection``: all parameters as one zero-padded hypercube ``(s,)*d`` with sides at most ``max_side``."""
from __future__ import annotations

import torch

from ...core import Chainable
from ...utils.checks import check_int
from ...utils.torch_tools import vec_to_tensors
from ..projections.projection import ProjectionBase
from ..projections.vector import flatten_cat


def tensorized_shape(n: int, max_side: int) -> tuple[int, ...]:
    """``(s,)*d`` with ``d = ceil(log_{max_side} n)`` (the fewest dims whose sides can stay ``≤ max_side``) and
    ``s = ceil(n^(1/d))``; ``(n,)`` when ``n ≤ max_side``. Computed in integers (no rounding of logarithms)."""
    if n <= max_side:
        return (n,)
    d = 1
    while max_side**d < n:
        d += 1
    s = max(1, round(n ** (1 / d)))
    while s**d < n:
        s += 1
    while s > 1 and (s - 1) ** d >= n:
        s -= 1
    return (s,) * d


class TensorizeProjection(ProjectionBase):
    """Projection that shows the child one tensor: all parameters concatenated into a vector of length ``N``,
    zero-padded and reshaped into a hypercube ``(s,)*d``.

    ``d = ceil(log_{max_side} N)`` and ``s = ceil(N^(1/d))`` (so ``s ≤ max_side``); a vector with ``N ≤ max_side``
    stays 1-D. The number of padded zeros is kept in ``global_state['remainder']``. ``unproject`` drops the
    padding and splits the vector back into the parameters. Meant for tensor-structured preconditioners
    (Shampoo-like modules) applied to the whole parameter vector.

    Args:
        modules: the child modules.
        max_side: largest side length of the hypercube (at least 2).
        project_update: project the incoming update. Defaults to True.
        project_params: give the child the tensorized parameters and a closure over them. Defaults to False.
        project_grad: project the known gradient. Defaults to False.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.experimental.TensorizeProjection(tz.m.Shampoo(), max_side=64),
                         tz.m.LR(1e-3))
        ```
    """

    def __init__(self, modules: Chainable, max_side: int, project_update: bool = True, project_params: bool = False,
                 project_grad: bool = False):
        check_int("TensorizeProjection", "max_side", max_side, low=2)
        super().__init__(modules, project_update=project_update, project_params=project_params,
                         project_grad=project_grad, defaults=dict(max_side=max_side))

    def project(self, tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        vec = flatten_cat(tensors)
        n = vec.numel()
        shape = tensorized_shape(n, settings[0]["max_side"])
        total = 1
        for s in shape:
            total *= s
        remainder = self.global_state["remainder"] = total - n
        if remainder == 0:
            return [vec.view(shape)]
        padded = vec.new_zeros(total)
        padded[:n] = vec
        return [padded.view(shape)]

    def unproject(self, projected_tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        n = sum(p.numel() for p in params)
        return vec_to_tensors(projected_tensors[0].reshape(-1)[:n], params)
