"""``CoordinateMomentum``: a velocity whose entries are replaced by the current update at random."""
from __future__ import annotations

import torch

from ...core import Target, Transform
from ...utils.checks import check_range


def coordinate_momentum_(tensors: list[torch.Tensor], velocity_: list[torch.Tensor], p: list[float],
                         generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Overwrites each entry of ``velocity_`` by the entry of ``tensors`` with probability ``p`` (per tensor;
    independent Bernoulli draws ``U < p`` with ``U ~ uniform[0, 1)``, so ``p = 1`` always and ``p = 0`` never
    replaces). Returns ``velocity_``."""
    for v, t, pi in zip(velocity_, tensors, p):
        if pi == 0:
            continue
        if pi == 1:
            v.copy_(t)
            continue
        mask = torch.rand(v.shape, generator=generator, device=v.device, dtype=v.dtype) < pi
        torch.where(mask, t, v, out=v)
    return velocity_


class CoordinateMomentum(Transform):
    """Coordinate momentum: a velocity buffer whose entries are each replaced by the current update with
    probability ``p``, and kept otherwise.

    ``vᵢ ← uᵢ`` with probability ``p``, else ``vᵢ``; output ``v`` (a copy). ``v`` starts at zero, so an entry is
    zero until it is drawn for the first time; on average an entry is ``1/p`` steps old. Draws use the global
    random generator.

    Args:
        p: probability of replacing an entry, in ``[0, 1]`` (per parameter). Defaults to 0.1.
        target: what to transform. Defaults to ``'update'``.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.experimental.CoordinateMomentum(0.1), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, p: float = 0.1, target: Target = "update"):
        check_range("CoordinateMomentum", "p", p, 0, 1)
        super().__init__(dict(p=p), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        velocity = [s["velocity"] if "velocity" in s else s.setdefault("velocity", torch.zeros_like(t))
                    for s, t in zip(states, tensors)]
        coordinate_momentum_(tensors, velocity, self.unpack_settings(settings, "p"))
        return [v.clone() for v in velocity]
