"""Constant step sizes: ``LR`` and ``StepSize``."""
from __future__ import annotations

from typing import Any

from ...core import Module, Transform, Var
from ...utils.checks import check_non_negative
from ...utils.foreach import scale_, sub_scaled_


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


def finish_direct_step(var: Var) -> Var:
    """Marks that the parameters were already updated by a module (see ``lrs_for_direct_step``)."""
    var.update = None
    var.stop = True
    var.skip_update = True
    return var


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
