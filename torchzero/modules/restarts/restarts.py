"""Restart strategies: modules that reset other modules (their state: history, momentum, curvature) when a test
fires. ``RestartEvery``, ``RestartOnStuck``, ``PowellRestart``, ``BirginMartinezRestart``."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Literal

import torch

from ...core import Chainable, Modular, Module, Var
from ...utils.checks import check_non_negative
from ...utils.tensorlist import TensorList


def _reset_all(optimizer: Modular, var: Var) -> None:
    """Post-step hook: resets every top-level module of the optimizer (``Module.reset`` recurses into children)."""
    for m in optimizer.modules:
        m.reset()


class RestartStrategyBase(Module, ABC):
    """Base class of restart wrappers: resets modules when ``should_reset(var)`` says so.

    Subclasses implement ``should_reset(var) -> bool``, evaluated at the beginning of each step (in ``update``, or in
    ``step``). With ``modules`` given, a positive check resets them (``Module.reset()``: clears their state and their
    children's) *before* they are stepped, in the same step, on a clone of ``var``; their output becomes the update.
    ``update`` checks and updates the wrapped modules, ``apply`` does not check again and only applies them, ``step``
    checks and steps them. With ``modules=None`` the module must sit in the main chain: it returns ``var`` unchanged
    and, on a positive check, registers a post-step hook that resets every module of the optimizer (including
    itself) after the current step has been applied.

    Args:
        defaults: default settings of the subclass. Defaults to None.
        modules: the modules to wrap, or None to reset the whole optimizer. Defaults to None.

    Reference:
        none.

    Example:
        ```python
        class RestartIfLossRose(tz.m.RestartStrategyBase):
            def should_reset(self, var):
                loss = float(var.get_loss(False))
                rose = loss > self.global_state.get("prev", math.inf)
                self.global_state["prev"] = loss
                return rose

        opt = tz.Modular(model.parameters(), RestartIfLossRose(tz.m.LBFGS()), tz.m.StrongWolfe())
        ```
    """

    def __init__(self, defaults: dict[str, Any] | None = None, modules: Chainable | None = None):
        super().__init__(defaults)
        if modules is not None:
            self.set_child("modules", modules)

    @abstractmethod
    def should_reset(self, var: Var) -> bool:
        """Whether to restart now (called once per step, before the wrapped modules run)."""

    def _check(self, var: Var) -> None:
        if not self.should_reset(var):
            return
        if "modules" in self.children:
            self.children["modules"].reset()
        else:
            var.post_step_hooks.append(_reset_all)

    def _on_clone(self, var: Var, method: Literal["update", "apply", "step"]) -> Var:
        child = self.children["modules"]
        cvar = var.clone(clone_update=False)
        if method == "update":
            child.update(cvar)
        else:
            cvar = getattr(child, method)(cvar)
            var.update = cvar.get_update()
        var.update_attrs_from_clone_(cvar)
        return var

    def update(self, var: Var) -> None:
        self._check(var)
        if "modules" in self.children:
            self._on_clone(var, "update")

    def apply(self, var: Var) -> Var:
        if "modules" not in self.children:
            return var
        return self._on_clone(var, "apply")

    def step(self, var: Var) -> Var:
        self._check(var)
        if "modules" not in self.children:
            return var
        return self._on_clone(var, "step")


class RestartEvery(RestartStrategyBase):
    """Restarts every ``steps`` steps.

    Counts steps (``global_state['count']``) and triggers on every ``steps``-th one, resetting the counter.
    ``'ndim'`` means the number of trainable scalars. With ``modules`` given, the reset happens at the start of that
    step, before the wrapped modules see it; with ``modules=None`` all modules are reset after that step.

    Args:
        modules: the modules to reset, or None for the whole optimizer.
        steps: the period, an int ≥ 1 or ``'ndim'``.

    Reference:
        none (fixed-interval restarts, Nocedal & Wright 2nd ed. §5.2).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.RestartEvery(tz.m.PolakRibiere(), "ndim"), tz.m.StrongWolfe(c2=0.1))
        ```
    """

    def __init__(self, modules: Chainable | None, steps: int | Literal["ndim"]):
        if steps != "ndim" and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"RestartEvery: steps must be a positive int or 'ndim', got {steps!r}")
        super().__init__(dict(steps=steps), modules)

    def should_reset(self, var: Var) -> bool:
        steps = self.defaults["steps"]
        if steps == "ndim":
            steps = sum(p.numel() for p in var.params)
        count = self.global_state.get("count", 0) + 1
        if count >= steps:
            self.global_state["count"] = 0
            return True
        self.global_state["count"] = count
        return False


class RestartOnStuck(RestartStrategyBase):
    """Restarts when the parameters stop moving.

    Stores the parameters each step (``prev_params``) and measures how far they moved since the previous step; a step
    with ``max|Δx| ≤ tol`` (``None`` → ``2·tiny`` of the dtype) counts as stuck, a larger move resets the count.
    After ``n_tol`` consecutive stuck steps it triggers and clears all its own state (so the next step only stores the
    parameters again). Useful behind line searches that keep returning 0. One host read of ``max|Δx|`` per step.

    Args:
        modules: the modules to reset, or None for the whole optimizer.
        tol: largest move that counts as stuck (None: ``2·tiny``). Defaults to None.
        n_tol: number of consecutive stuck steps that triggers a restart. Defaults to 10.

    Reference:
        none.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.RestartOnStuck(tz.m.LBFGS()), tz.m.StrongWolfe())
        ```
    """

    def __init__(self, modules: Chainable | None, tol: float | None = None, n_tol: int = 10):
        if tol is not None:
            check_non_negative("RestartOnStuck", "tol", tol)
        if isinstance(n_tol, bool) or not isinstance(n_tol, int) or n_tol < 1:
            raise ValueError(f"RestartOnStuck: n_tol must be a positive int, got {n_tol!r}")
        super().__init__(dict(tol=tol, n_tol=n_tol), modules)

    @torch.no_grad()
    def should_reset(self, var: Var) -> bool:
        params = var.params
        if "prev_params" not in self.state[params[0]]:
            for p in params:
                self.state[p]["prev_params"] = p.detach().clone()
            return False
        prev = [self.state[p]["prev_params"] for p in params]
        moved = float(TensorList(torch._foreach_sub(params, prev)).global_vector_norm(math.inf))
        torch._foreach_copy_(prev, params)
        tol = self.defaults["tol"]
        if tol is None:
            tol = 2 * torch.finfo(params[0].dtype).tiny
        n_bad = self.global_state.get("n_bad", 0) + 1 if moved <= tol else 0
        if n_bad >= self.defaults["n_tol"]:
            self.state.clear()
            self.global_state.clear()
            return True
        self.global_state["n_bad"] = n_bad
        return False


class PowellRestart(RestartStrategyBase):
    """Powell's restart tests for conjugate gradient methods, on the current gradient ``g``.

    First step: store ``g_prev = g``, no restart. Later steps restart if

    1. ``cond1`` is set and ``|gᵀg_prev| ≥ cond1·‖g‖²`` (consecutive gradients far from orthogonal), or otherwise
    2. ``cond2`` is set and the update ``u`` seen by this module is not sufficiently downhill:
       ``uᵀg ∉ [(1 − cond2)‖g‖², (1 + cond2)‖g‖²]`` (Powell's ``−1.2‖g‖² ≤ dᵀg ≤ −0.8‖g‖²`` with ``d = −u``).

    ``g_prev`` is refreshed every step; a restart clears all state of this module, so the step after it only stores
    ``g_prev`` again. Test 2 is meaningful with ``modules=None`` placed after the CG module (then ``u`` is the CG
    output); with ``modules`` given it sees the incoming update. One host read of three dot products per step.

    Deviation from the reference implementation: it never refreshed ``g_prev`` after the first step following a
    reset, and its test 2 fired for ``(−1 − cond2)‖g‖² < uᵀg < (−1 + cond2)‖g‖²``, i.e. only for uphill updates.

    Args:
        modules: the modules to reset, or None for the whole optimizer.
        cond1: orthogonality test threshold (None disables). Defaults to 0.2.
        cond2: descent test threshold (None disables). Defaults to 0.2.

    Reference:
        M. J. D. Powell, "Restart procedures for the conjugate gradient method", Math. Programming 12(1):241–254, 1977.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.PolakRibiere(), tz.m.PowellRestart(None),
                         tz.m.StrongWolfe(c2=0.1, a_init="first-order"))
        ```
    """

    def __init__(self, modules: Chainable | None, cond1: float | None = 0.2, cond2: float | None = 0.2):
        for name, value in (("cond1", cond1), ("cond2", cond2)):
            if value is not None:
                check_non_negative("PowellRestart", name, value)
        super().__init__(dict(cond1=cond1, cond2=cond2), modules)

    @torch.no_grad()
    def should_reset(self, var: Var) -> bool:
        cond1, cond2 = self.defaults["cond1"], self.defaults["cond2"]
        params = var.params
        g = var.get_grad()
        if "g_prev" not in self.state[params[0]]:
            for p, gi in zip(params, g):
                self.state[p]["g_prev"] = gi.detach().clone()
            return False
        g_prev = [self.state[p]["g_prev"] for p in params]
        u = var.get_update()
        gl = TensorList(g)
        gg, g_gprev, ug = torch.stack([gl.dot(g), gl.dot(g_prev), gl.dot(u)]).tolist()
        torch._foreach_copy_(g_prev, g)
        restart = cond1 is not None and abs(g_gprev) >= cond1 * gg
        if not restart and cond2 is not None:
            restart = not ((1 - cond2) * gg <= ug <= (1 + cond2) * gg)
        if restart:
            self.state.clear()
            self.global_state.clear()
        return restart


class BirginMartinezRestart(Module):
    """Birgin–Martínez restart: replaces a not sufficiently downhill update by the gradient and resets the module.

    Wraps a single module (CG or quasi-Newton). After it produces ``u``, if ``uᵀg < cond·‖u‖·‖g‖`` (``g`` the
    gradient; the angle between ``u`` and ``g`` is not acute enough), the wrapped module is reset and the output is
    replaced by a copy of ``g`` (a steepest-descent step). Implements ``update``/``apply``, so it also works inside
    trust regions. One host read of three dot products per step.

    Args:
        module: the module to wrap.
        cond: the cosine threshold. Defaults to 1e-3.

    Reference:
        E. G. Birgin, J. M. Martínez, "A spectral conjugate gradient method for unconstrained optimization",
        Appl. Math. Optim. 43(2):117–128, 2001.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.BirginMartinezRestart(tz.m.PolakRibiere()),
                         tz.m.StrongWolfe(c2=0.1))
        ```
    """

    def __init__(self, module: Module, cond: float = 0.001):
        if not isinstance(module, Module):
            raise TypeError(f"BirginMartinezRestart: module must be a Module, got {type(module).__name__}")
        check_non_negative("BirginMartinezRestart", "cond", cond)
        super().__init__(dict(cond=cond))
        self.set_child("module", module)

    def update(self, var: Var) -> None:
        cvar = var.clone(clone_update=False)
        self.children["module"].update(cvar)
        var.update_attrs_from_clone_(cvar)

    @torch.no_grad()
    def apply(self, var: Var) -> Var:
        child = self.children["module"]
        cvar = child.apply(var.clone(clone_update=False))
        var.update_attrs_from_clone_(cvar)
        u = cvar.get_update()
        g = var.get_grad()
        ul = TensorList(u)
        ug, uu, gg = torch.stack([ul.dot(g), ul.dot(u), TensorList(g).dot(g)]).tolist()
        if ug < self.defaults["cond"] * math.sqrt(uu) * math.sqrt(gg):
            child.reset()
            u = [gi.clone() for gi in g]
        var.update = u
        return var

    def step(self, var: Var) -> Var:
        self.update(var)
        return self.apply(var)
