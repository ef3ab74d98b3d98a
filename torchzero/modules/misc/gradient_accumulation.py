"""Gradient accumulation: apply one step per ``n`` calls, on the sum or mean of the incoming updates."""
from __future__ import annotations

import torch

from ...core import Module, Var
from ...utils.checks import check_int


def accumulate_(accumulator_: list[torch.Tensor], tensors: list[torch.Tensor]) -> None:
    """``accumulator_ += tensors`` in place."""
    torch._foreach_add_(accumulator_, tensors)


class GradientAccumulation(Module):
    """Accumulates the incoming update over ``n`` steps and releases it on every ``n``-th step.

    ``a ← a + u`` each step (state ``accumulator``, global counter ``step``). On steps k ≡ 0 (mod n) the update is
    ``a / n`` (``mean=True``) or ``a``, and the accumulator starts again from zero. On the other steps, with
    ``stop=True`` the update is None and ``stop = skip_update = True`` (later modules don't run, the parameters
    don't move); with ``stop=False`` the incoming update passes through unchanged. Place it first to accumulate
    raw gradients: ``[GradientAccumulation(n), *modules]`` performs ``modules`` on the mean gradient of ``n``
    mini-batches. Settings are read from ``defaults``.

    Args:
        n: number of steps to accumulate.
        mean: divide the accumulated sum by ``n``. Defaults to True.
        stop: skip the remaining modules and the parameter update on accumulation steps. Defaults to True.

    Reference:
        none (standard practice of large-batch training on limited memory).

    Example:
        ```python
        # Adam on the mean gradient of 4 mini-batches
        opt = tz.Modular(model.parameters(), tz.m.GradientAccumulation(4), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, n: int, mean: bool = True, stop: bool = True):
        check_int("GradientAccumulation", "n", n, 1)
        super().__init__(dict(n=n, mean=mean, stop=stop))

    @torch.no_grad()
    def step(self, var: Var) -> Var:
        n, mean, stop = self.defaults["n"], self.defaults["mean"], self.defaults["stop"]
        params = var.params
        update = var._update_or_grad()
        states = [self.state[p] for p in params]
        if all("accumulator" in s for s in states):
            acc = [s["accumulator"] for s in states]
            accumulate_(acc, update)
        else:  # first step of a round: the accumulator is a copy of the update
            acc = [s["accumulator"].add_(u) if "accumulator" in s else s.setdefault("accumulator", u.clone())
                   for s, u in zip(states, update)]

        step = self.global_state.get("step", 0) + 1
        self.global_state["step"] = step
        if step % n == 0:
            if mean and n != 1:
                torch._foreach_div_(acc, n)
            for s in states:
                del s["accumulator"]
            var.update = acc
        elif stop:
            var.update = None
            var.stop = True
            var.skip_update = True
        return var
