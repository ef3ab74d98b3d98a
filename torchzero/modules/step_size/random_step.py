"""``RandomStepSize``: multiplies the update by a random factor."""
from __future__ import annotations

import torch

from ...core import Transform
from ...utils.checks import check_range
from ...utils.foreach import scalar_or_list, scale_


class RandomStepSize(Transform):
    """Multiplies the update by a factor drawn uniformly from ``[low, high]``.

    One factor per step, or one per parameter tensor (each with its own per-parameter ``low``/``high``) when
    ``parameterwise=True``. Draws come from a CPU ``torch.Generator`` seeded with ``seed``, created on first use and
    kept in ``global_state['generator']`` (None: the global torch RNG, so ``torch.manual_seed`` governs it). The
    factors are drawn on the CPU, so no device synchronisation happens. ``reset()`` also restarts the seeded
    generator, so a reset module continues exactly like a fresh one.

    Deviation from the reference implementation: it used a Python ``random.Random(seed)``; a torch generator is used
    here so that the state dict holds plain data (the generator state tensor) and round-trips exactly.

    Args:
        low: lower bound of the factor. Defaults to 0.
        high: upper bound of the factor. Defaults to 1.
        parameterwise: draw one factor per parameter tensor. Defaults to False.
        seed: seed of the generator (None: global RNG). Defaults to None.

    Reference:
        none.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.RandomStepSize(0, 2, seed=0), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = False

    def __init__(self, low: float = 0, high: float = 1, parameterwise: bool = False, seed: int | None = None):
        check_range("RandomStepSize", "low", low)
        check_range("RandomStepSize", "high", high, low=low)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"RandomStepSize: seed must be an int or None, got {seed!r}")
        super().__init__(dict(low=low, high=high, parameterwise=parameterwise, seed=seed))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        generator = self.get_generator("cpu", s0["seed"])
        low, high = self.unpack_settings(settings, "low", "high")
        n = len(tensors) if s0["parameterwise"] else 1
        draws = torch.rand(n, generator=generator, dtype=torch.float64).tolist()
        if s0["parameterwise"]:
            factors = [lo + (hi - lo) * r for lo, hi, r in zip(low, high, draws)]
            return scale_(tensors, scalar_or_list(factors))
        lo, hi = low[0], high[0]
        return scale_(tensors, lo + (hi - lo) * draws[0])

    def reset(self) -> None:
        super().reset()
        self.global_state.pop("generator", None)
