"""Constant step sizes: ``LR`` and ``StepSize``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...core import Module, Transform, Var
from ...utils.checks import check_non_negative
from ...utils.foreach import Scalars, scale_, sub_scaled_


def lrs_for_direct_step(module: Module, var: Var) -> list[float] | None:
    """Per-parameter learning rates if ``module`` may apply its update to the parameters itself.

    That is the case when ``module`` is next-to-last, right before an ``LR`` that ends the top-level chain
    (``var.is_last`` with ``var.last_module_lrs`` set): the module can then write ``params -= lr * update``
    directly, fused with its last operation, and set ``var.stop = var.skip_update = True``. Returns None otherwise.
    """
    if not var.is_last or var.last_module_lrs is None or var.skip_update:
        return None
    modular = var.modular
    if modular is None or not modular.modules:
        return None
    last = modular.modules[-1]
    if type(last) is not LR or last is module:
        return None
    return var.last_module_lrs


def may_move_params(module: Module, var: Var) -> bool:
    """Whether ``module`` may leave the parameters moved itself (the "direct path" of catalog ops_misc 0.2).

    True when the optimizer marked the module as last (``var.is_last`` for a module without children,
    ``var.nested_is_last`` for one with children), no learning-rate module follows it
    (``var.last_module_lrs is None``) and it is the last top-level module of the ``Modular`` (so a module nested
    in a ``Chain`` that merely inherits the flag from the chain does not qualify).
    """
    if not (var.is_last or var.nested_is_last) or var.skip_update or var.last_module_lrs is not None:
        return False
    modular = var.modular
    if modular is None:
        return True
    return modular.modules[-1] is module


def finish_direct_step(var: Var) -> Var:
    """Marks that the parameters were already updated by a module (see ``lrs_for_direct_step``)."""
    var.update = None
    var.stop = True
    var.skip_update = True
    return var


def div_scaled_or_step_(
    num: Sequence[torch.Tensor],
    denom: list[torch.Tensor],
    scale: Scalars,
    params_: list[torch.Tensor] | None = None,
    lrs: Sequence[float] | None = None,
) -> list[torch.Tensor] | None:
    """``scale · num / denom`` as new tensors, or, if ``params_`` and ``lrs`` are given, the step
    ``params_ -= lr · scale · num / denom`` applied in place with one ``addcdiv`` (then None is returned)."""
    if params_ is not None:
        assert lrs is not None
        if isinstance(scale, list):
            scalars = [-(lr * s) for lr, s in zip(lrs, scale)]
        else:
            scalars = [-(lr * scale) for lr in lrs]
        torch._foreach_addcdiv_(params_, num, denom, scalars)
        return None
    out = list(torch._foreach_div(num, denom))
    scale_(out, scale)
    return out


class DirectStepTransform(Transform):
    """A ``Transform`` that may apply its step to the parameters itself when it is right before a final ``LR``
    (see ``step_size.lr.lrs_for_direct_step``). During such a step ``self._direct_lrs`` holds the per-parameter
    learning rates; ``apply_tensors`` then updates the parameters (e.g. with ``div_scaled_or_step_``) and may
    return anything. Without ``inner`` and with ``target='update'`` only."""

    _direct_lrs: list[float] | None = None

    def step(self, var: Var) -> Var:
        lrs = lrs_for_direct_step(self, var) if self._inner is None and self._target == "update" else None
        if lrs is None:
            return super().step(var)
        self._direct_lrs = lrs
        try:
            super().step(var)
        finally:
            self._direct_lrs = None
        return finish_direct_step(var)


class LR(Transform):
    """Learning rate: multiplies the update by ``lr``.

    ``lr`` is a per-parameter setting, so values in parameter groups and ``torch.optim.lr_scheduler`` schedulers
    (which edit the optimizer's ``param_groups[i]['lr']``) take effect. The multiplication is skipped when ``lr``
    is exactly 1. When ``LR`` ends the chain it subtracts ``lr * update`` from the parameters in one fused
    multi-tensor operation instead of scaling the update first (``var.update`` then keeps the unscaled update).

    Update rule: ``u ← lr · u``.

    Args:
        lr: learning rate (non-negative).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.LR(1e-3))
        scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
        ```
    """

    _readonly_input = False

    def __init__(self, lr: float):
        check_non_negative("LR", "lr", lr)
        super().__init__(dict(lr=lr))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return scale_(tensors, self.unpack_settings(settings, "lr"))

    def step(self, var: Var) -> Var:
        modular = var.modular
        if var.is_last and not var.skip_update and modular is not None and modular.modules[-1] is self:
            # last module: apply lr * update to the parameters directly
            update = var._update_or_grad()
            sub_scaled_(var.params, update, self.get_settings(var.params, "lr"))
            var.skip_update = True
            return var
        return super().step(var)


class StepSize(Transform):
    """Step size stored under a custom settings key: multiplies the update by the setting named ``key``.

    Same as ``LR``, but the value can be overridden per parameter group under ``key`` without clashing with
    another module's ``lr``.

    Args:
        step_size: the multiplier.
        key: name of the setting. Defaults to ``'step_size'``.

    Example:
        ```python
        opt = tz.Modular([{"params": a, "alpha": 0.5}, {"params": b}], tz.m.StepSize(0.1, key="alpha"))
        ```
    """

    def __init__(self, step_size: float, key: str = "step_size"):
        if not isinstance(key, str) or key == "key":
            raise ValueError(f"StepSize: key must be a string other than 'key', got {key!r}")
        defaults: dict[str, Any] = {"key": key, key: step_size}
        super().__init__(defaults)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        key = settings[0]["key"]
        return scale_(tensors, self.unpack_settings(settings, key))
