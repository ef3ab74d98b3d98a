"""``SVRG``: stochastic variance-reduced gradient."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ...core import Modular, Module, Var
from ...utils.checks import check_bool, check_int, check_range
from ...utils.derivatives import loss_and_grad
from ...utils.foreach import Scalars, add_scaled_, scalar_or_list


def _detached(loss: Any) -> Any:
    return loss.detach() if isinstance(loss, torch.Tensor) else loss


def svrg_grad_(g_x: list[torch.Tensor], g_x0: Sequence[torch.Tensor], full_grad: Sequence[torch.Tensor],
               alpha: Scalars) -> list[torch.Tensor]:
    """``g_b(x) − α(g_b(x₀) − g_f(x₀))`` written into ``g_x`` and returned, computed as
    ``(g_b(x) − α g_b(x₀)) + α g_f(x₀)``, which equals ``g_f(x₀)`` exactly at ``x = x₀`` when ``α = 1``."""
    add_scaled_(g_x, g_x0, [-a for a in alpha] if isinstance(alpha, list) else -alpha)
    add_scaled_(g_x, full_grad, alpha)
    return g_x


def svrg_loss(f_x: Any, f_x0: Any, full_loss: Any, alpha: float) -> Any:
    """``f_b(x) − α(f_b(x₀) − f_f(x₀))``."""
    return _detached(f_x) - alpha * (_detached(f_x0) - full_loss)


class SVRG(Module):
    """Stochastic variance-reduced gradient (SVRG): corrects mini-batch gradients with a full gradient at an anchor.

    When there is no anchor, the full loss and gradient ``f_f(x₀), g_f(x₀)`` at the current point ``x₀`` are obtained
    either from ``full_closure``, passed as a keyword to ``Modular.step`` (``opt.step(closure, full_closure=fc)``, a
    closure over the whole data set; its evaluations are not counted in ``num_evaluations``), or by averaging
    the mini-batch losses and gradients of ``accum_steps`` consecutive steps (default ``svrg_steps``), during which
    the parameters are not updated (``var.stop``, ``var.skip_update``). For the next ``svrg_steps`` steps (the first
    one being the step that completes the anchor), the closure is replaced by one that evaluates the mini-batch at
    ``x`` and at ``x₀`` (two evaluations per call) and returns

    ``f_b(x) − α₀(f_b(x₀) − f_f(x₀))`` (``f_b(x)`` if not ``svrg_loss``), with gradient ``g_b(x) − α(g_b(x₀) − g_f(x₀))``

    (per-parameter ``α``; ``α₀`` is the first parameter's). At ``x = x₀`` with ``α = 1`` the corrected gradient is
    exactly ``g_f(x₀)``; on the step that completes an accumulated anchor it is formed from that step's mini-batch
    gradient without another evaluation. Otherwise a loss or gradient already known when the module steps is
    dropped and recomputed through the new closure (it may come from the raw closure, or be seeded by ``Modular``
    from the previous step and already corrected). Afterwards the anchor is dropped; with ``reset_before_accum``
    every other module of the optimizer is reset after that step.

    Place it first (after a gradient approximator with ``target='closure'``, if any): an update set by an earlier
    module raises an error, since SVRG cannot correct it. Requires a closure.

    State: per-parameter ``'full_grad'``, ``'x_0'``, ``'accumulator'``; ``global_state['full_loss']``,
    ``'loss_accumulator'``, ``'accum_step'`` and ``'svrg_step'`` counters.

    Args:
        svrg_steps: number of steps per anchor. Required.
        accum_steps: number of mini-batch steps averaged for the full gradient when no ``full_closure`` is given;
            None uses ``svrg_steps``. Defaults to None.
        reset_before_accum: reset the other modules whenever the anchor is dropped. Defaults to True.
        svrg_loss: return the corrected loss rather than the mini-batch loss at ``x``. Defaults to True.
        alpha: coefficient α of the correction (per-parameter setting; 1 is plain SVRG, smaller values as in α-SVRG).
            Defaults to 1.

    Reference:
        R. Johnson, T. Zhang, "Accelerating stochastic gradient descent using predictive variance reduction",
        NeurIPS 2013; Y. Yin, Z. Xu, Z. Li, T. Darrell, Z. Liu, "A Coefficient Makes SVRG Effective",
        arXiv:2311.05589 (α).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.SVRG(svrg_steps=len(loader)), tz.m.LR(1e-2))
        for inputs, targets in loader:
            def closure(backward=True):
                loss = loss_fn(model(inputs), targets)
                if backward:
                    opt.zero_grad()
                    loss.backward()
                return loss
            opt.step(closure, full_closure=full_data_closure)  # or without full_closure: accumulate
        ```
    """

    def __init__(self, svrg_steps: int, accum_steps: int | None = None, reset_before_accum: bool = True,
                 svrg_loss: bool = True, alpha: float = 1):
        check_int("SVRG", "svrg_steps", svrg_steps, 1)
        if accum_steps is not None:
            check_int("SVRG", "accum_steps", accum_steps, 1)
        check_bool("SVRG", "reset_before_accum", reset_before_accum)
        check_bool("SVRG", "svrg_loss", svrg_loss)
        check_range("SVRG", "alpha", alpha)
        if not math.isfinite(alpha):
            raise ValueError(f"SVRG: alpha must be finite, got {alpha}")
        super().__init__(dict(svrg_steps=svrg_steps, accum_steps=accum_steps, reset_before_accum=reset_before_accum,
                              svrg_loss=svrg_loss, alpha=alpha))
        self._keep_own_state = False

    # ------------------------------------------------------------------ anchor
    def _anchor_from_full_closure(self, full_closure: Callable, params: list[torch.Tensor]) -> None:
        full_loss, full_grad = loss_and_grad(full_closure, params)
        self.global_state["full_loss"] = _detached(full_loss)
        for p, g in zip(params, full_grad):
            self.state[p]["full_grad"] = g
            self.state[p]["x_0"] = p.detach().clone()

    def _accumulate(self, var: Var, params: list[torch.Tensor], accum_steps: int) -> bool:
        """Adds this step's mini-batch loss and gradient; returns True when the anchor is complete."""
        grad = var.get_grad()
        loss = _detached(var.get_loss(False))
        accumulator = self.get_state(params, "accumulator")
        torch._foreach_add_(accumulator, grad)
        self.global_state["loss_accumulator"] = self.global_state.get("loss_accumulator", 0) + loss
        step = self.global_state.get("accum_step", 0) + 1
        if step < accum_steps:
            self.global_state["accum_step"] = step
            return False

        torch._foreach_div_(accumulator, accum_steps)
        self.global_state["full_loss"] = self.global_state.pop("loss_accumulator") / accum_steps
        self.global_state.pop("accum_step", None)
        for p, g in zip(params, accumulator):
            self.state[p]["full_grad"] = g
            self.state[p]["x_0"] = p.detach().clone()
        self.clear_state_keys("accumulator")
        return True

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, var: Var) -> Var:
        closure = self._require_closure(var)
        if var.update is not None:
            raise RuntimeError("SVRG: an earlier module already set the update, which SVRG cannot correct; place "
                               "SVRG first (after a gradient approximator with target='closure', if any)")
        params = var.params
        s0 = self.settings[params[0]]

        # the loss and gradient this step evaluated at x = x₀ with the raw closure while completing an anchor
        accumulated = False
        if "full_loss" not in self.global_state:
            full_closure = var.storage.get("full_closure")
            if full_closure is not None:
                self._anchor_from_full_closure(full_closure, params)
            else:
                accum_steps = s0["accum_steps"] if s0["accum_steps"] is not None else s0["svrg_steps"]
                if not self._accumulate(var, params, accum_steps):
                    var.update = None
                    var.stop = True
                    var.skip_update = True
                    return var
                accumulated = True

        x_0 = [self.state[p]["x_0"] for p in params]
        full_grad = [self.state[p]["full_grad"] for p in params]
        full_loss = self.global_state["full_loss"]
        alpha = scalar_or_list(self.get_settings(params, "alpha"))
        alpha_0 = alpha[0] if isinstance(alpha, list) else alpha
        use_svrg_loss = s0["svrg_loss"]

        def at_x0(backward: bool) -> tuple[Any, list[torch.Tensor] | None]:
            """Loss (and gradient) of the mini-batch at x₀; the parameters are restored exactly."""
            with torch.no_grad():  # the closure runs outside of `step`
                x = [p.clone() for p in params]
                torch._foreach_copy_(params, x_0)
            try:
                if backward:
                    return loss_and_grad(closure, params)
                return closure(False), None
            finally:
                with torch.no_grad():
                    torch._foreach_copy_(params, x)

        def svrg_closure(backward: bool = True) -> Any:
            if backward:
                f_x, g_x = loss_and_grad(closure, params)
                f_x0, g_x0 = at_x0(True)
                assert g_x0 is not None
                for p, g in zip(params, svrg_grad_(g_x, g_x0, full_grad, alpha)):
                    p.grad = g
                return svrg_loss(f_x, f_x0, full_loss, alpha_0) if use_svrg_loss else f_x
            f_x = closure(False)
            if not use_svrg_loss:
                return f_x
            f_x0, _ = at_x0(False)
            return svrg_loss(f_x, f_x0, full_loss, alpha_0)

        if accumulated:
            # at x = x₀ the correction needs no evaluation: g_b(x₀) − α(g_b(x₀) − g_f(x₀))
            assert var.grad is not None
            var.grad = svrg_grad_([g.clone() for g in var.grad], var.grad, full_grad, alpha)
            if use_svrg_loss:
                var.loss = var.loss_approx = svrg_loss(var.loss, var.loss, full_loss, alpha_0)
        else:
            # values known before this module stepped (from the raw closure, or seeded by `Modular` from the previous
            # step's evaluation, which may already be corrected) are recomputed through the SVRG closure
            var.loss = var.loss_approx = None
            var.grad = None
        var.closure = svrg_closure

        svrg_step = self.global_state.get("svrg_step", 0) + 1
        if svrg_step < s0["svrg_steps"]:
            self.global_state["svrg_step"] = svrg_step
        else:  # the last step of this anchor: drop it (the closure above keeps what it needs)
            for key in ("svrg_step", "full_loss"):
                self.global_state.pop(key, None)
            self.clear_state_keys("x_0", "full_grad")
            if s0["reset_before_accum"]:
                var.post_step_hooks.append(self._reset_others)
        return var

    # ------------------------------------------------------------------ reset
    def _reset_others(self, optimizer: Modular, var: Var) -> None:
        """Post-step hook: resets every module of the optimizer except this one."""
        self._keep_own_state = True
        try:
            for m in optimizer.modules:
                m.reset()
        finally:
            self._keep_own_state = False

    def reset(self) -> None:
        if not self._keep_own_state:
            super().reset()
