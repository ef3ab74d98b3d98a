"""Meta-modules that decide how and when their children run: ``Online``, ``Split``, ``Alternate``, ``Switch``,
``Multistep`` and ``Sequential``.

Children always run on a clone of the ``Var`` (or on a fresh ``Var`` at a moved point), so the flags
``is_last``/``stop``/``skip_update`` of the enclosing chain are never confused with the children's; a loss or
gradient a child computes at the current point is merged back into the parent ``Var`` and reused.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import torch

from ...core import Chainable, Module, Var
from ...utils.checks import check_int
from ..step_size.lr import finish_direct_step, may_move_params
from ._common import check_chainable, fresh_var

# ---------------------------------------------------------------------------------------------------- Online


class Online(Module):
    """Makes curvature-pair modules (quasi-Newton, ``HpuEstimate``...) usable with mini-batches.

    With mini-batches every ``step`` call's closure evaluates a different batch, so a difference of gradients
    taken at two steps mixes two objectives. ``Online`` re-evaluates the *current* batch at the previous point
    ``x_{k−1}`` before updating the child at the current point ``x_k``:

    - step 1: ``child.update(var)`` at ``x_1``; remember ``x_1``;
    - step k > 1: move the parameters to ``x_{k−1}``, ``child.reset_for_online()``, ``child.update`` on a fresh
      ``Var`` (evaluates the current batch at ``x_{k−1}``), move back to ``x_k``, remember it, ``child.update(var)``;
    - ``apply`` is ``child.apply(var)``.

    Every step after the first costs one extra closure evaluation. Per-parameter state ``p_prev``, global ``step``.
    The re-evaluation at ``x_{k−1}`` sees the raw gradient, so place ``Online`` where its child would receive the
    gradient (first in the chain). Children that only override ``step`` run normally (``update`` is a no-op).

    Args:
        *modules: the modules to run online (chained).

    Reference:
        N. N. Schraudolph, J. Yu, S. Günter, "A Stochastic Quasi-Newton Method for Online Convex Optimization",
        AISTATS 2007 (gradient differences on the same mini-batch).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Online(tz.m.HpuEstimate()), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, *modules: Module):
        if len(modules) == 0:
            raise ValueError("Online: at least one module is required")
        for m in modules:
            check_chainable("Online", "modules", m)
        super().__init__({})
        self.set_child("module", list(modules))

    def update(self, var: Var) -> None:
        self._require_closure(var)
        child = self.children["module"]
        params = var.params
        step = self.global_state.get("step", 0) + 1
        self.global_state["step"] = step
        states = [self.state[p] for p in params]

        if any("p_prev" not in s for s in states):
            for s, p in zip(states, params):
                s["p_prev"] = p.detach().clone()
        else:
            p_prev = [s["p_prev"] for s in states]
            current = [p.detach().clone() for p in params]
            prev_var = fresh_var(var, var.current_step)
            with torch.no_grad():
                torch._foreach_copy_(params, p_prev)
            try:
                child.reset_for_online()
                child.update(prev_var)
            finally:
                with torch.no_grad():
                    torch._foreach_copy_(params, current)
            # `current` holds the current values: it becomes the stored previous point
            for s, c in zip(states, current):
                s["p_prev"] = c

        clone = var.clone(clone_update=False)
        child.update(clone)
        var.update_attrs_from_clone_(clone)

    def apply(self, var: Var) -> Var:
        return self.children["module"].apply(var.clone(clone_update=False))


# ---------------------------------------------------------------------------------------------------- Split
Filter: TypeAlias = Any
"""``Callable[[Tensor], bool] | Tensor | Iterable[Tensor] | nn.Module | Iterable[nn.Module]``, or an iterable of
these (OR-combined)."""


class ParamFilter:
    """A resolved ``Split`` filter: which parameters it selects.

    An ``nn.Module`` stands for its parameters, a tensor matches by identity (``is``), a callable is called with
    each parameter and its truthiness decides, an iterable is resolved item by item and OR-combined. This object
    is deliberately not plain data, so state dicts never store (and reload copies of) filter tensors.
    """

    def __init__(self, filter: Filter, owner: str = "Split"):
        self.items = self._normalize(filter, owner)

    @classmethod
    def _normalize(cls, f: Any, owner: str) -> Any:
        # nn.Module first: modules are callable, but stand for their parameters
        if isinstance(f, (torch.nn.Module, torch.Tensor)):
            return f
        if isinstance(f, ParamFilter):
            return f.items
        if callable(f):
            return f
        if isinstance(f, Iterable) and not isinstance(f, (str, bytes, dict)):
            return tuple(cls._normalize(item, owner) for item in f)
        raise TypeError(f"{owner}: filter must be a callable, a tensor, an nn.Module or an iterable of these, "
                        f"got {type(f).__name__}")

    def __call__(self, params: Sequence[torch.Tensor]) -> list[bool]:
        """Which of ``params`` are selected."""
        return self._match(self.items, params)

    @classmethod
    def _match(cls, f: Any, params: Sequence[torch.Tensor]) -> list[bool]:
        if isinstance(f, torch.nn.Module):
            ids = {id(q) for q in f.parameters()}
            return [id(p) in ids for p in params]
        if isinstance(f, torch.Tensor):
            return [p is f for p in params]
        if callable(f):
            return [bool(f(p)) for p in params]
        selected = [False] * len(params)
        for item in f:
            selected = [a or b for a, b in zip(selected, cls._match(item, params))]
        return selected


class Split(Module):
    """Runs ``true`` on the parameters selected by ``filter`` and ``false`` on the others.

    Each branch is stepped on a sub-``Var`` (parent link to the incoming ``Var``) whose parameters, gradient and
    update are the branch's subsets (the same tensor objects); the branch output is written back at its indices.
    Parameters without a branch keep the incoming update (or the gradient). A loss or gradient computed in a
    branch reaches the parent through the parent link and is reused by the other branch; the branches'
    ``stop``/``skip_update`` do not propagate. The filter is a setting (read from the first parameter) and is
    evaluated every step.

    Args:
        filter: selects the parameters of ``true``: a callable ``param -> bool``, a tensor (matched by identity),
            an ``nn.Module`` (its parameters), or an iterable of these (OR-combined).
        true: modules for the selected parameters, or None.
        false: modules for the other parameters, or None.

    Example:
        ```python
        # Adam on matrices, sign descent on vectors and scalars
        opt = tz.Modular(model.parameters(),
                         tz.m.Split(lambda p: p.ndim >= 2, true=tz.m.Adam(), false=tz.m.Sign()), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, filter: Filter, true: Chainable | None, false: Chainable | None):
        check_chainable("Split", "true", true, allow_none=True)
        check_chainable("Split", "false", false, allow_none=True)
        if true is None and false is None:
            raise ValueError("Split: at least one of `true` and `false` must be a module")
        super().__init__(dict(filter=ParamFilter(filter)))
        if true is not None:
            self.set_child("true", true)
        if false is not None:
            self.set_child("false", false)

    def step(self, var: Var) -> Var:
        params = var.params
        f = self.settings[params[0]]["filter"]
        if not isinstance(f, ParamFilter):  # a raw filter given as a per-group setting
            f = ParamFilter(f)
        selected = f(params)

        n = len(params)
        new_update: list[torch.Tensor | None] | None = None
        for name, want in (("true", True), ("false", False)):
            if name not in self.children:
                continue
            idx = [i for i in range(n) if selected[i] is want]
            if not idx:
                continue
            sub = var.clone(clone_update=False, parent=var)
            sub.params = [params[i] for i in idx]
            sub.grad = None if var.grad is None else [var.grad[i] for i in idx]
            sub.update = None if var.update is None else [var.update[i] for i in idx]
            sub = self.children[name].step(sub)
            if sub.should_terminate is not None:
                var.should_terminate = sub.should_terminate
            if sub.update is not None:
                if new_update is None:
                    new_update = list(var.update) if var.update is not None else [None] * n
                for i, u in zip(idx, sub.update):
                    new_update[i] = u

        if new_update is not None:
            missing = [i for i, u in enumerate(new_update) if u is None]
            if missing:  # parameters without a branch output take the gradient
                grad = var.get_grad()
                for i in missing:
                    new_update[i] = grad[i].clone()
            var.update = new_update  # type: ignore[assignment]
        return var


# ---------------------------------------------------------------------------------------------------- Alternate / Switch
def _normalize_steps(owner: str, steps: int | Iterable[int], n: int) -> int | tuple[int, ...]:
    if isinstance(steps, bool):
        raise TypeError(f"{owner}: steps must be an integer or a sequence of integers, got bool")
    if isinstance(steps, int):
        check_int(owner, "steps", steps, 1)
        return steps
    if not isinstance(steps, Iterable):
        raise TypeError(f"{owner}: steps must be an integer or a sequence of integers, got {type(steps).__name__}")
    steps = tuple(steps)
    if len(steps) != n:
        raise ValueError(f"{owner}: steps must have {n} entries, got {len(steps)}")
    for s in steps:
        check_int(owner, "each entry of steps", s, 1)
    return steps


class _ScheduleBase(Module):
    """Runs one child per step, on ``var.clone(clone_update=False)``, and returns the child's result."""

    _wrap_around = True

    def __init__(self, modules: tuple[Chainable, ...], steps: int | tuple[int, ...]):
        super().__init__(dict(steps=steps))
        self.set_children_sequence(modules)

    def _duration(self, idx: int, n: int) -> int | None:
        """Consecutive steps of module ``idx``; None means it runs forever (the last module of ``Switch``)."""
        if not self._wrap_around and idx == n - 1:
            return None
        steps = self.defaults["steps"]
        return steps if isinstance(steps, int) else steps[idx]

    def step(self, var: Var) -> Var:
        modules = self.get_children_sequence()
        n = len(modules)
        idx = self.global_state.get("current_module_idx", 0)
        to_next = self.global_state.get("steps_to_next")
        if to_next is None:
            to_next = self._duration(idx, n)

        out = modules[idx].step(var.clone(clone_update=False))

        if to_next is not None:
            to_next -= 1
            if to_next <= 0:
                idx = (idx + 1) % n if self._wrap_around else idx + 1
                to_next = self._duration(idx, n)
        self.global_state["current_module_idx"] = idx
        self.global_state["steps_to_next"] = to_next
        return out


class Alternate(_ScheduleBase):
    """Alternates between modules: module i runs for ``steps[i]`` consecutive steps, then the next one, wrapping
    around after the last.

    Only the current module runs (on a clone of the ``Var``); its result is returned. Global state
    ``current_module_idx`` and ``steps_to_next``; ``steps`` from ``defaults``.

    Args:
        *modules: the modules (each may be a sequence, chained).
        steps: consecutive steps of each module: one integer for all, or one per module. Defaults to 1.

    Reference:
        none (a scheduling utility).

    Example:
        ```python
        # one Adam step, then two sign-descent steps, repeated
        opt = tz.Modular(model.parameters(), tz.m.Alternate(tz.m.Adam(), tz.m.Sign(), steps=(1, 2)), tz.m.LR(1e-3))
        ```
    """

    _wrap_around = True

    def __init__(self, *modules: Chainable, steps: int | Iterable[int] = 1):
        if len(modules) == 0:
            raise ValueError("Alternate: at least one module is required")
        for m in modules:
            check_chainable("Alternate", "modules", m)
        super().__init__(modules, _normalize_steps("Alternate", steps, len(modules)))


class Switch(_ScheduleBase):
    """Runs modules one after another: module i runs for ``steps[i]`` consecutive steps, the last one forever.

    Like ``Alternate`` without wrap-around. ``steps`` are durations, not absolute step indices.

    Args:
        *modules: the modules (each may be a sequence, chained).
        steps: durations of all modules but the last: one integer for all, or ``len(modules) − 1`` integers.

    Reference:
        none (a scheduling utility).

    Example:
        ```python
        # 100 steps of Adam, then sign descent forever
        opt = tz.Modular(model.parameters(), tz.m.Switch([tz.m.Adam(), tz.m.LR(1e-3)], tz.m.Sign(), steps=100))
        ```
    """

    _wrap_around = False

    def __init__(self, *modules: Chainable, steps: int | Iterable[int]):
        if len(modules) == 0:
            raise ValueError("Switch: at least one module is required")
        for m in modules:
            check_chainable("Switch", "modules", m)
        super().__init__(modules, _normalize_steps("Switch", steps, len(modules) - 1))


# ---------------------------------------------------------------------------------------------------- Multistep
def run_inner_steps(owner: Module, var: Var, sequence: Sequence[Module]) -> Var:
    """Performs one inner optimization step with each module of ``sequence`` in turn, moving the parameters.

    The first module is stepped on a clone of ``var`` (its loss and gradient at the starting point are merged
    into ``var``); every later one on a fresh ``Var`` at the point the previous inner update moved to. An inner
    update is not applied if its ``skip_update`` is set. Then, on the direct path (catalog 0.2) the parameters stay
    moved and ``stop = skip_update = True``; otherwise ``var.update = start − end`` and the parameters are restored.
    """
    if len(sequence) > 1:
        owner._require_closure(var)
    params = var.params
    start = [p.detach().clone() for p in params]
    for i, module in enumerate(sequence):
        inner = var.clone(clone_update=False) if i == 0 else fresh_var(var, var.current_step + i)
        inner = module.step(inner)
        if i == 0:
            var.update_attrs_from_clone_(inner)
        elif inner.should_terminate is not None:
            var.should_terminate = inner.should_terminate
        if not inner.skip_update:
            with torch.no_grad():
                torch._foreach_sub_(params, inner.get_update())

    if may_move_params(owner, var):
        return finish_direct_step(var)
    with torch.no_grad():
        var.update = list(torch._foreach_sub(start, params))
        torch._foreach_copy_(params, start)
    return var


class Multistep(Module):
    """Performs ``steps`` inner optimization steps with ``module`` inside one outer step.

    ``x_0 = x``; for i = 1…steps: ``x_i = x_{i−1} − module(x_{i−1})`` (each inner step on a fresh evaluation of the
    objective at ``x_{i−1}``). As the last module the parameters are left at ``x_steps``; otherwise the update is
    ``x_0 − x_steps`` (so a following ``LR`` scales the whole inner trajectory) and the parameters are restored.
    ``steps`` is read from the first parameter's settings.

    Args:
        module: the inner modules (a sequence is chained).
        steps: number of inner steps (a closure is required when it is more than 1).

    Reference:
        none (inner loop utility; with a first-order ``module`` it is the "lookahead" inner loop,
        M. R. Zhang et al., "Lookahead Optimizer: k steps forward, 1 step back", NeurIPS 2019).

    Example:
        ```python
        # three Adam steps per outer step, the total displacement then halved
        opt = tz.Modular(model.parameters(), tz.m.Multistep([tz.m.Adam(), tz.m.LR(1e-3)], steps=3), tz.m.LR(0.5))
        ```
    """

    def __init__(self, module: Chainable, steps: int):
        check_chainable("Multistep", "module", module)
        check_int("Multistep", "steps", steps, 1)
        super().__init__(dict(steps=steps))
        self.set_child("module", module)

    def step(self, var: Var) -> Var:
        steps = self.settings[var.params[0]]["steps"]
        check_int("Multistep", "steps", steps, 1)
        return run_inner_steps(self, var, [self.children["module"]] * steps)


class Sequential(Module):
    """Performs one inner step with each of ``modules`` in turn, the whole sequence repeated ``steps`` times,
    inside one outer step (m0, m1, …, m0, m1, …); mechanics as in ``Multistep``.

    Args:
        modules: the inner modules (each may be a sequence, chained).
        steps: number of repetitions of the sequence. Defaults to 1.

    Reference:
        none (inner loop utility).

    Example:
        ```python
        # a gradient step followed by a sign step, in every outer step
        opt = tz.Modular(model.parameters(), tz.m.Sequential([[tz.m.LR(1e-2)], [tz.m.Sign(), tz.m.LR(1e-3)]]))
        ```
    """

    def __init__(self, modules: Iterable[Chainable], steps: int = 1):
        if not isinstance(modules, (Module, Iterable)) or isinstance(modules, (str, bytes)):
            raise TypeError(f"Sequential: modules must be a sequence of modules, got {type(modules).__name__}")
        modules = [modules] if isinstance(modules, Module) else list(modules)
        check_chainable("Sequential", "modules", modules)
        check_int("Sequential", "steps", steps, 1)
        super().__init__(dict(steps=steps))
        self.set_children_sequence(modules)

    def step(self, var: Var) -> Var:
        steps = self.settings[var.params[0]]["steps"]
        check_int("Sequential", "steps", steps, 1)
        return run_inner_steps(self, var, self.get_children_sequence() * steps)


__all__: list[str] = ["Online", "Split", "Alternate", "Switch", "Multistep", "Sequential", "ParamFilter"]
