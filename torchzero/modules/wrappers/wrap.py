"""``Wrap``: any ``torch.optim.Optimizer`` as a module."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...core import Module, Var
from ...utils.params import Params
from ..step_size.lr import finish_direct_step


def _is_optimizer_like(obj: Any) -> bool:
    return isinstance(obj, torch.optim.Optimizer) or (
        hasattr(obj, "step") and hasattr(obj, "param_groups") and hasattr(obj, "state"))


class Wrap(Module):
    """Uses a ``torch.optim.Optimizer`` as a module: the incoming update is fed to it as the gradient.

    Each step every ``p.grad`` is saved and replaced by the update ``u``, then:

    - **direct path**: if this module is last (``var.is_last``), or next-to-last before a learning-rate module whose
      per-parameter lrs are all equal to one value ℓ while the optimizer has an ``lr`` default, ``optimizer.step()``
      moves the parameters itself (every group's lr temporarily multiplied by ℓ) and ``stop = skip_update = True``.
      So ``Modular(p, Wrap(torch.optim.Adam, lr=1e-3))`` follows ``torch.optim.Adam(p, lr=1e-3)``;
    - **difference path** otherwise: ``optimizer.step()`` is run from saved parameter values, the update becomes
      ``x_before − x_after`` and the parameters are restored.

    The saved ``p.grad`` tensors are put back in both cases. If ``opt_fn`` is an optimizer instance it is used as
    is; otherwise it is built on the first step as ``opt_fn(param_groups, *args, **kwargs)`` with the groups given
    to ``set_param_groups`` (as passed) or else the parameters; parameter-group settings given to ``Modular`` are
    ignored. The wrapped optimizer's ``state_dict()`` is stored in this module's state dict as plain data (it is
    loaded when the optimizer exists, i.e. right away or on the first step); ``reset()`` clears its per-parameter
    state. Optimizers whose ``step`` needs a closure (``LBFGS``) are not supported.

    Args:
        opt_fn: an optimizer class or factory ``opt_fn(params, *args, **kwargs)``, or an optimizer instance.
        *args: positional arguments of ``opt_fn``.
        **kwargs: keyword arguments of ``opt_fn``.

    Reference:
        none (adapter to ``torch.optim``).

    Example:
        ```python
        # gradient clipping, then torch's Adagrad
        opt = tz.Modular(model.parameters(), tz.m.ClipNorm(1.0), tz.m.Wrap(torch.optim.Adagrad, lr=1e-2))
        ```
    """

    def __init__(self, opt_fn: Callable[..., torch.optim.Optimizer] | torch.optim.Optimizer, *args: Any,
                 **kwargs: Any):
        super().__init__({})
        if _is_optimizer_like(opt_fn) and not isinstance(opt_fn, type):
            if args or kwargs:
                raise ValueError("Wrap: arguments were given together with an optimizer instance; pass either an "
                                 "optimizer class/factory with its arguments, or an instance alone")
            self.optimizer: torch.optim.Optimizer | None = opt_fn  # type: ignore[assignment]
            self._opt_fn: Callable[..., torch.optim.Optimizer] | None = None
        elif callable(opt_fn):
            self.optimizer = None
            self._opt_fn = opt_fn
        else:
            raise TypeError(f"Wrap: opt_fn must be an optimizer class/factory or an optimizer instance, "
                            f"got {type(opt_fn).__name__}")
        self._args = args
        self._kwargs = kwargs
        self._param_groups: list[Any] | None = None
        self._pending_state: dict[str, Any] | None = None

    def set_param_groups(self, param_groups: Params) -> Wrap:
        """Parameter groups the wrapped optimizer is built with (stored as passed). Returns ``self``."""
        if isinstance(param_groups, torch.nn.Module):
            param_groups = param_groups.parameters()
        self._param_groups = list(param_groups)
        return self

    def _get_optimizer(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        if self.optimizer is None:
            assert self._opt_fn is not None
            groups = self._param_groups if self._param_groups is not None else list(params)
            self.optimizer = self._opt_fn(groups, *self._args, **self._kwargs)
            if not _is_optimizer_like(self.optimizer):
                raise TypeError(f"Wrap: opt_fn returned {type(self.optimizer).__name__}, not an optimizer")
        if self._pending_state is not None:
            self.optimizer.load_state_dict(self._pending_state)
            self._pending_state = None
        return self.optimizer

    def _direct_lr(self, var: Var, optimizer: torch.optim.Optimizer) -> float | None:
        """ℓ for the direct path (1 when no lr module follows), or None for the difference path."""
        if not var.is_last or var.skip_update:
            return None
        lrs = var.last_module_lrs
        modular = var.modular
        if lrs is None:
            return 1.0 if modular is None or modular.modules[-1] is self else None
        if modular is not None and (len(modular.modules) < 2 or modular.modules[-2] is not self):
            return None
        if "lr" not in optimizer.defaults or any(lr != lrs[0] for lr in lrs):
            return None
        return lrs[0]

    def step(self, var: Var) -> Var:
        params = var.params
        optimizer = self._get_optimizer(params)
        update = var.get_update()
        saved_grads = [p.grad for p in params]
        lr_scale = self._direct_lr(var, optimizer)
        try:
            for p, u in zip(params, update):
                p.grad = u
            if lr_scale is not None:
                saved_lrs = [g["lr"] for g in optimizer.param_groups] if lr_scale != 1 else None
                if saved_lrs is not None:
                    for g in optimizer.param_groups:
                        g["lr"] = g["lr"] * lr_scale
                try:
                    optimizer.step()
                finally:
                    if saved_lrs is not None:
                        for g, lr in zip(optimizer.param_groups, saved_lrs):
                            g["lr"] = lr
            else:
                with torch.no_grad():
                    before = [p.clone() for p in params]
                optimizer.step()
                with torch.no_grad():
                    var.update = list(torch._foreach_sub(before, params))
                    torch._foreach_copy_(params, before)
        finally:
            for p, g in zip(params, saved_grads):
                p.grad = g

        if lr_scale is not None:
            return finish_direct_step(var)
        return var

    def reset(self) -> None:
        super().reset()
        self._pending_state = None
        if self.optimizer is not None:
            self.optimizer.state.clear()

    def _extra_pack(self) -> dict[str, Any]:
        if self.optimizer is None:
            return {} if self._pending_state is None else {"optimizer": self._pending_state}
        return {"optimizer": self.optimizer.state_dict()}

    def _extra_unpack(self, x: Any) -> None:
        state = x.get("optimizer") if isinstance(x, dict) else None
        if state is None:
            return
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state)
        else:
            self._pending_state = state
