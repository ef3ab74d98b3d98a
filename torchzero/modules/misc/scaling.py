"""Sign, loss and parameter scaling helpers: ``GradSign``, ``UpdateSign``, ``Relative``, ``NoiseSign``,
``FillLoss``, ``MulByLoss``, ``DivByLoss``."""
from __future__ import annotations

from typing import Any

import torch

from ...core import Module, Target, Transform, Var
from ...utils.checks import check_choice
from ...utils.foreach import scalar_or_list, scale_
from ...utils.tensorlist import Distributions, TensorList
from ._common import as_loss_tensor, require_loss


class GradSign(Transform):
    """``|x|·sign(g)``: the magnitude of ``x`` with the sign of the gradient (``copysign(x, g)``).

    Args:
        target: what to transform. Defaults to ``'update'``.

    Reference:
        none (sign correction, cf. L. Liang et al., "Cautious Optimizers", arXiv:2411.16085, 2024).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.GradSign(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, target: Target = "update"):
        super().__init__({}, uses_grad=True, target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return TensorList(tensors).copysign_(grads)


class UpdateSign(Transform):
    """``|g|·sign(x)``: the magnitude of the gradient with the sign of ``x`` (``copysign(g, x)``); the gradient
    itself is not modified.

    Args:
        target: what to transform. Defaults to ``'update'``.

    Reference:
        none (sign/magnitude decomposition).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.UpdateSign(), tz.m.LR(1e-3))
        ```
    """

    _readonly_input = True

    def __init__(self, target: Target = "update"):
        super().__init__({}, uses_grad=True, target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return TensorList(grads).copysign(tensors)


class Relative(Transform):
    """``x · max(|p|, min_value)``: steps relative to the size of each weight.

    Args:
        min_value: lower bound of ``|p|`` (per parameter). Defaults to 1e-4.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        none (relative step sizes, cf. N. Shazeer, M. Stern, "Adafactor", ICML 2018, relative step size).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Sign(), tz.m.Relative(), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, min_value: float = 0.0001, target: Target = "update"):
        super().__init__(dict(min_value=min_value), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        scale = torch._foreach_abs(params)
        torch._foreach_clamp_min_(scale, scalar_or_list(self.unpack_settings(settings, "min_value")))
        torch._foreach_mul_(tensors, scale)
        return tensors


class NoiseSign(Transform):
    """A random sample with the sign of the update: ``copysign(r, u)``, ``r`` drawn per catalog 0.7 (``'normal'``:
    ``N(0,1)·variance``; ``'uniform'``: variance ``variance``; ``'sphere'``: joint norm ``variance·√n``;
    ``'rademacher'``: ``±variance``; None means the unit version). ``distribution`` from the first parameter,
    ``variance`` per parameter; global RNG.

    Args:
        distribution: distribution of ``r``. Defaults to ``'normal'``.
        variance: spread of ``r``. Defaults to None.

    Reference:
        none (random magnitudes with the update's signs, a randomized sign descent).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.NoiseSign(), tz.m.LR(1e-3))
        ```
    """

    _readonly_input = True

    def __init__(self, distribution: Distributions = "normal", variance: float | None = None):
        check_choice("NoiseSign", "distribution", distribution, ("normal", "gaussian", "uniform", "sphere",
                                                                 "rademacher"))
        super().__init__(dict(distribution=distribution, variance=variance))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        variance: Any = self.unpack_settings(settings, "variance")
        variance = None if variance[0] is None else scalar_or_list(variance)
        sample = TensorList(tensors).sample_like(settings[0]["distribution"], variance=variance)
        return sample.copysign_(tensors)


def _loss_factor(module: Module, var: Var) -> tuple[torch.Tensor, list[Any]]:
    """``(loss, per-parameter alpha)``; the loss as a tensor on the first parameter's device."""
    require_loss(module, var)
    loss = var.get_loss(module.defaults["backward"])
    p0 = var.params[0]
    loss_t = as_loss_tensor(loss).detach().to(device=p0.device)
    return loss_t, module.get_settings(var.params, "alpha")


class FillLoss(Module):
    """Sets the update to tensors filled with ``loss·alpha``.

    ``alpha`` per parameter, ``backward`` from ``defaults``. Requires a closure, or ``loss=`` passed to ``step``.

    Args:
        alpha: multiplier of the loss. Defaults to 1.
        backward: evaluate the loss with a backward pass (so a gradient needed later comes from the same
            evaluation). Defaults to True.

    Reference:
        none (loss-valued update, useful as an operand).

    Example:
        ```python
        # a Polyak-like step: the gradient scaled by the loss
        opt = tz.Modular(model.parameters(), tz.m.Mul(tz.m.FillLoss()), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, alpha: float = 1, backward: bool = True):
        super().__init__(dict(alpha=alpha, backward=backward))

    @torch.no_grad()
    def step(self, var: Var) -> Var:
        loss, alpha = _loss_factor(self, var)
        out = [torch.zeros_like(p) for p in var.params]
        torch._foreach_add_(out, loss)
        var.update = scale_(out, alpha)
        return var


class _ScaleByLoss(Module):
    def __init__(self, alpha: float, min_value: float, backward: bool):
        super().__init__(dict(alpha=alpha, min_value=min_value, backward=backward))

    def _apply_factor_(self, update: list[torch.Tensor], factor: torch.Tensor | list[torch.Tensor]) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, var: Var) -> Var:
        update = var.get_update()  # first: a needed gradient and the loss come from one evaluation
        loss, alpha = _loss_factor(self, var)
        min_value = self.get_settings(var.params, "min_value")
        a, m = scalar_or_list(alpha), scalar_or_list(min_value)
        if isinstance(a, list) or isinstance(m, list):
            n = len(update)
            a_ = a if isinstance(a, list) else [a] * n
            m_ = m if isinstance(m, list) else [m] * n
            factor: Any = [(loss * ai).clamp_min(mi) for ai, mi in zip(a_, m_)]
        else:
            factor = (loss * a).clamp_min(m)
        self._apply_factor_(update, factor)
        return var


class MulByLoss(_ScaleByLoss):
    """``u · max(loss·alpha, min_value)``.

    ``alpha`` and ``min_value`` per parameter, ``backward`` from ``defaults``. Requires a closure, or ``loss=``
    passed to ``step``.

    Args:
        alpha: multiplier of the loss. Defaults to 1.
        min_value: lower bound of the factor. Defaults to 1e-8.
        backward: evaluate the loss with a backward pass. Defaults to True.

    Reference:
        none (loss-proportional step size, cf. B. T. Polyak, "Introduction to Optimization", 1987, §5.3).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.MulByLoss(), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, alpha: float = 1, min_value: float = 1e-08, backward: bool = True):
        super().__init__(alpha, min_value, backward)

    def _apply_factor_(self, update, factor):
        torch._foreach_mul_(update, factor)


class DivByLoss(_ScaleByLoss):
    """``u / max(loss·alpha, min_value)``.

    ``alpha`` and ``min_value`` per parameter, ``backward`` from ``defaults``. Requires a closure, or ``loss=``
    passed to ``step``.

    Args:
        alpha: multiplier of the loss. Defaults to 1.
        min_value: lower bound of the divisor. Defaults to 1e-8.
        backward: evaluate the loss with a backward pass. Defaults to True.

    Reference:
        none (loss-normalised step).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.DivByLoss(), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, alpha: float = 1, min_value: float = 1e-08, backward: bool = True):
        super().__init__(alpha, min_value, backward)

    def _apply_factor_(self, update, factor):
        torch._foreach_div_(update, factor)
