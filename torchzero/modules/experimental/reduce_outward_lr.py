"""``ReduceOutwardLR``: smaller steps for entries that move a weight away from zero."""
from __future__ import annotations

import torch

from ...core import Target, Transform
from ...utils.checks import check_bool, check_range
from ...utils.foreach import Scalars, combine, scalar_or_list


def reduce_outward_(tensors_: list[torch.Tensor], params: list[torch.Tensor], test: list[torch.Tensor], mul: Scalars,
                    invert: bool = False) -> list[torch.Tensor]:
    """Multiplies in place by ``mul`` the entries of ``tensors_`` where ``param·test < 0`` (``> 0`` if ``invert``)
    and returns ``tensors_``.

    Branch-free over all tensors (a few foreach ops instead of a ``where`` per tensor): with
    ``σ = min(sign(p·t), 0)`` the factor is ``1 + (1 − mul)·σ`` (inverted: ``σ = max(sign(p·t), 0)``, factor
    ``1 + (mul − 1)·σ``). Entries with ``p·t = 0`` are kept; a NaN in ``p·t`` makes the entry NaN.
    """
    sign = torch._foreach_mul(params, test)
    torch._foreach_sign_(sign)
    if invert:
        torch._foreach_clamp_min_(sign, 0)  # sign ∈ {0, 1}: factor = 1 + (mul − 1)·sign
        scale = combine(1, mul, lambda a, b: b - a)
    else:
        torch._foreach_clamp_max_(sign, 0)  # sign ∈ {−1, 0}: factor = 1 + (1 − mul)·sign
        scale = combine(1, mul, lambda a, b: a - b)
    torch._foreach_mul_(sign, scale)
    torch._foreach_add_(sign, 1)
    torch._foreach_mul_(tensors_, sign)
    return tensors_


class ReduceOutwardLR(Transform):
    """Multiplies by ``mul`` the update entries whose step moves the weight away from zero.

    The optimizer subtracts the update, so entry ``i`` moves ``xᵢ`` outward when ``xᵢ·uᵢ < 0``:

    ``uᵢ ← mul·uᵢ`` if ``xᵢ·tᵢ < 0`` (``xᵢ·tᵢ > 0`` with ``invert``), else ``uᵢ``; ``t = u``, or the gradient with
    ``use_grad``.

    A mild implicit regulariser towards small weights (the reverse with ``invert``).

    Args:
        mul: multiplier of outward entries, ``≥ 0`` (per parameter). Defaults to 0.5.
        use_grad: test the sign with the gradient instead of the update. Defaults to False.
        invert: reduce the inward entries instead. Defaults to False.
        target: what to transform. Defaults to ``'update'``.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.experimental.ReduceOutwardLR(0.5), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, mul: float = 0.5, use_grad: bool = False, invert: bool = False, target: Target = "update"):
        check_range("ReduceOutwardLR", "mul", mul, low=0)
        check_bool("ReduceOutwardLR", "use_grad", use_grad)
        check_bool("ReduceOutwardLR", "invert", invert)
        super().__init__(dict(mul=mul, use_grad=use_grad, invert=invert), uses_grad=use_grad, target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        test = grads if s0["use_grad"] else tensors
        assert test is not None
        mul = scalar_or_list(self.unpack_settings(settings, "mul"))
        return reduce_outward_(tensors, params, test, mul, invert=s0["invert"])
