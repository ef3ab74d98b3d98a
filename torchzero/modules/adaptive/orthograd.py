"""OrthoGrad: removes the component of the update along the weights."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...core import Target, Transform
from ...utils.checks import check_non_negative
from ...utils.tensorlist import TensorList


def orthograd_(tensors_: list[torch.Tensor], params: Sequence[torch.Tensor], eps: float, renormalize: bool
               ) -> list[torch.Tensor]:
    """``u ← u − (⟨x, u⟩/(⟨x, x⟩ + eps))·x`` in place (global inner products), then, with ``renormalize``, rescales
    to the original global norm of ``u``. No device synchronisation."""
    u, x = TensorList(tensors_), TensorList(params)
    norm_before = u.global_vector_norm(2) if renormalize else None
    xx = x.global_vector_norm(2).square() + eps
    xu = x.dot(u)
    coef = torch.where(xx > 0, xu / xx, torch.zeros_like(xx)).to(tensors_[0].dtype)
    torch._foreach_sub_(tensors_, torch._foreach_mul(params, coef))
    if norm_before is not None:
        norm_after = u.global_vector_norm(2)
        factor = torch.where(norm_after > 0, norm_before / norm_after, torch.ones_like(norm_after))
        torch._foreach_mul_(tensors_, factor.to(tensors_[0].dtype))
    return tensors_


class OrthoGrad(Transform):
    """OrthoGrad: removes the component of the update along the weights (all parameters as one vector).

    ``u ← u − (⟨x, u⟩/(⟨x, x⟩ + eps))·x``; with ``renormalize`` the result is rescaled to the original global norm of
    ``u`` (an all-zero result is left as is). Then ``⟨output, x⟩ ≈ 0`` and ``‖output‖ = ‖u‖``. ``eps`` and
    ``renormalize`` are global (first parameter's settings).

    Args:
        eps: added to ``⟨x, x⟩``. Defaults to 1e-8.
        renormalize: restore the global norm of the update. Defaults to True.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        L. Prieto, M. Barsbey, P. Mediano, T. Birdal, "Grokking at the Edge of Numerical Stability", 2025
        (arXiv:2501.04697).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.OrthoGrad(), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, eps: float = 1e-8, renormalize: bool = True, target: Target = "update"):
        check_non_negative("OrthoGrad", "eps", eps)
        super().__init__(dict(eps=eps, renormalize=renormalize), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        return orthograd_(tensors, params, s0["eps"], s0["renormalize"])
