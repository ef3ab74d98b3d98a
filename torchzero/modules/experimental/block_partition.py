"""``BlockPartition``: large tensors are split into blocks of at most ``max_size`` elements for the child."""
from __future__ import annotations

import math

import torch

from ...core import Chainable
from ...utils.checks import check_bool, check_int
from ..projections.projection import ProjectionBase


def _num_chunks(numel: int, max_size: int) -> int:
    """How many tensors ``torch.chunk(flat, ceil(numel / max_size))`` returns (it may be fewer than requested)."""
    requested = math.ceil(numel / max_size)
    chunk_size = math.ceil(numel / requested)
    return math.ceil(numel / chunk_size)


class BlockPartition(ProjectionBase):
    """Projection that splits every tensor with more than ``max_size`` elements into blocks, each a separate
    parameter of the child; smaller tensors pass unchanged.

    A large tensor is flattened and split with ``torch.chunk`` into ``ceil(numel / max_size)`` chunks (each of at
    most ``max_size`` elements). With ``batched=True`` it is instead shown as one 2-D tensor of shape
    ``(ceil(numel / max_size), max_size)``, the last row zero-padded; the padding of the child's result is
    dropped. ``unproject`` concatenates the blocks (or drops the padding) and restores the shape. This bounds the
    size of what per-tensor modules (full-matrix preconditioners, per-tensor norms) see.

    Fixes the reference, whose ``batched=True`` computed a negative padding length and failed unless ``max_size``
    divided the number of elements.

    Args:
        modules: the child modules.
        max_size: largest number of elements of a block (per-parameter setting).
        batched: one padded 2-D tensor of blocks per large tensor instead of separate blocks (per-parameter
            setting). Defaults to False.
        project_update: project the incoming update. Defaults to True.
        project_params: give the child blocks of the parameters and a closure over them. Defaults to False.
        project_grad: project the known gradient. Defaults to False.

    Example:
        ```python
        # full-matrix Adagrad on blocks of at most 256 elements
        opt = tz.Modular(model.parameters(), tz.m.experimental.BlockPartition(tz.m.FullMatrixAdagrad(), 256),
                         tz.m.LR(1e-2))
        ```
    """

    def __init__(self, modules: Chainable, max_size: int, batched: bool = False, project_update: bool = True,
                 project_params: bool = False, project_grad: bool = False):
        check_int("BlockPartition", "max_size", max_size)
        check_bool("BlockPartition", "batched", batched)
        super().__init__(modules, project_update=project_update, project_params=project_params,
                         project_grad=project_grad, defaults=dict(max_size=max_size, batched=batched))

    def project(self, tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for t, setting in zip(tensors, settings):
            max_size = setting["max_size"]
            numel = t.numel()
            if numel <= max_size:
                out.append(t)
                continue
            flat = t.reshape(-1)
            n = math.ceil(numel / max_size)
            if setting["batched"]:
                padded = flat.new_zeros(n * max_size)
                padded[:numel] = flat
                out.append(padded.view(n, max_size))
            else:
                out.extend(torch.chunk(flat, n))
        return out

    def unproject(self, projected_tensors, params, grads, loss, states, settings, current) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        i = 0
        for p, setting in zip(params, settings):
            max_size = setting["max_size"]
            numel = p.numel()
            if numel <= max_size:
                out.append(projected_tensors[i])
                i += 1
            elif setting["batched"]:
                out.append(projected_tensors[i].reshape(-1)[:numel].view(p.shape))
                i += 1
            else:
                n = _num_chunks(numel, max_size)
                out.append(torch.cat([c.reshape(-1) for c in projected_tensors[i:i + n]]).view(p.shape))
                i += n
        return out
