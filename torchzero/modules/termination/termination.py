"""Termination criteria: modules that tell the training loop when to stop, without changing the update.

A criterion evaluates a raw condition each time it runs and writes the result into ``var.should_terminate``;
``Modular.step`` copies it to ``Modular.should_terminate``, which the training loop checks:

```python
opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.TerminateByGradientNorm(1e-6), tz.m.LR(1e-3))
while not opt.should_terminate:
    opt.step(closure)
```
"""
from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ...core import Module, Var
from ...utils.checks import check_non_negative, check_range
from ...utils.tensorlist import Metrics, TensorList
from ...utils.torch_tools import tofloat


def _check_count(owner: str, name: str, value: Any, low: int) -> None:
    """``value`` must be an int ≥ ``low`` (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__}")
    check_range(owner, name, value, low=low)


def _check_metric(owner: str, ord: Any) -> None:
    """``ord`` must be a metric that ``TensorList.global_metric`` understands."""
    if isinstance(ord, torch.Tensor) or (isinstance(ord, (int, float)) and not isinstance(ord, bool)):
        return
    if ord not in ("mad", "std", "var", "sum", "l0", "l1", "l2", "l3", "l4", "linf"):
        raise ValueError(f"{owner}: unknown ord {ord!r}; expected a number or one of 'mad', 'std', 'var', 'sum', "
                         "'l0'...'l4', 'linf'")


def _loss_value(module: Module, var: Var) -> float:
    """Loss at the current parameters without backward, as a Python float (an error naming ``module`` if there is
    neither a closure nor a ``loss=`` passed to ``step``)."""
    if var.loss is None:
        module._require_closure(var)
    return tofloat(var.get_loss(backward=False))


class TerminationCriteriaBase(Module, ABC):
    """Base class of termination criteria: flags ``var.should_terminate`` after ``n`` consecutive positive checks.

    Subclasses implement ``termination_criteria(var) -> bool``, the raw condition. ``should_terminate(var)``
    counts consecutive positive results in ``global_state['_n_bad']`` and returns True when the count reaches
    ``n``, resetting it to 0 (so with ``n > 1`` the flag is not sticky: a criterion that always holds gives
    F, F, T, F, F, T, ... for ``n=3``); a negative result resets the count. ``update`` writes the flag into
    ``var.should_terminate`` (False, not None, when not triggered); ``apply`` returns ``var`` unchanged, so a
    criterion never changes the update or the parameters. Settings are read from ``defaults``.

    Args:
        defaults: default values of the subclass's settings (not modified; must not contain ``'_n'``).
        n: number of consecutive evaluations the raw criterion must hold for. Defaults to 1.

    Example:
        ```python
        class TerminateOnSmallLoss(tz.m.TerminationCriteriaBase):
            def __init__(self, value: float, n: int = 1):
                super().__init__(dict(value=value), n=n)

            def termination_criteria(self, var):
                return float(var.get_loss(False)) < self.defaults["value"]

        opt = tz.Modular(model.parameters(), TerminateOnSmallLoss(1e-3), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, defaults: dict[str, Any] | None = None, n: int = 1):
        name = self.__class__.__name__
        defaults = {} if defaults is None else dict(defaults)
        if "_n" in defaults:
            raise RuntimeError(f"{name}: '_n' is reserved for the number of consecutive evaluations, "
                               "remove it from the defaults")
        _check_count(name, "n", n, low=1)
        defaults["_n"] = n
        super().__init__(defaults)

    @abstractmethod
    def termination_criteria(self, var: Var) -> bool:
        """The raw criterion at the current point (may update the criterion's own state)."""

    def should_terminate(self, var: Var) -> bool:
        """Evaluates the raw criterion once; True when it held on ``n`` consecutive evaluations."""
        if not self.termination_criteria(var):
            self.global_state["_n_bad"] = 0
            return False
        n_bad = self.global_state.get("_n_bad", 0) + 1
        if n_bad >= self.defaults["_n"]:
            self.global_state["_n_bad"] = 0
            return True
        self.global_state["_n_bad"] = n_bad
        return False

    def update(self, var: Var) -> None:
        var.should_terminate = self.should_terminate(var)

    def apply(self, var: Var) -> Var:
        return var


class TerminateAfterNSteps(TerminationCriteriaBase):
    """Terminates after a number of steps: the flag is False for the first ``steps`` steps, then True.

    The criterion has its own counter ``k`` (global ``'step'``, from 0, incremented on each evaluation) and holds
    when ``k ≥ steps`` (the value before incrementing).

    Args:
        steps: number of steps before the flag turns True (non-negative int).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.TerminateAfterNSteps(1000), tz.m.LR(1e-3))
        while not opt.should_terminate:
            opt.step(closure)
        ```
    """

    def __init__(self, steps: int):
        _check_count("TerminateAfterNSteps", "steps", steps, low=0)
        super().__init__(dict(steps=steps))

    def termination_criteria(self, var: Var) -> bool:
        k = self.global_state.get("step", 0)
        self.global_state["step"] = k + 1
        return k >= self.defaults["steps"]


class TerminateAfterNEvaluations(TerminationCriteriaBase):
    """Terminates once the objective has been evaluated ``maxevals`` times: ``optimizer.num_evaluations ≥ maxevals``.

    ``num_evaluations`` is read when the criterion runs; it counts closure calls (or one per step when ``step`` is
    called without a closure), so the criterion placed first sees the evaluations of the previous steps.

    Args:
        maxevals: the evaluation budget (non-negative int).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.TerminateAfterNEvaluations(500), tz.m.LR(1e-2))
        while not opt.should_terminate:
            opt.step(closure)
        ```
    """

    def __init__(self, maxevals: int):
        _check_count("TerminateAfterNEvaluations", "maxevals", maxevals, low=0)
        super().__init__(dict(maxevals=maxevals))

    def termination_criteria(self, var: Var) -> bool:
        if var.modular is None:
            raise RuntimeError("TerminateAfterNEvaluations reads `num_evaluations` of the optimizer, but the Var it "
                               "got has no optimizer (`var.modular` is None)")
        return var.modular.num_evaluations >= self.defaults["maxevals"]


class TerminateAfterNSeconds(TerminationCriteriaBase):
    """Terminates after a wall-clock time: ``sec_fn() − start ≥ seconds``.

    The first evaluation records ``start = sec_fn()`` (global ``'start'``) and returns False.

    Args:
        seconds: time budget in seconds (non-negative).
        sec_fn: clock returning seconds. Defaults to ``time.time``.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.TerminateAfterNSeconds(60), tz.m.LR(1e-3))
        while not opt.should_terminate:
            opt.step(closure)
        ```
    """

    def __init__(self, seconds: float, sec_fn: Callable[[], float] = time.time):
        check_non_negative("TerminateAfterNSeconds", "seconds", seconds)
        if not callable(sec_fn):
            raise TypeError(f"TerminateAfterNSeconds: sec_fn must be callable, got {type(sec_fn).__name__}")
        super().__init__(dict(seconds=seconds))
        self.sec_fn = sec_fn

    def termination_criteria(self, var: Var) -> bool:
        now = float(self.sec_fn())
        if "start" not in self.global_state:
            self.global_state["start"] = now
            return False
        return now - self.global_state["start"] >= self.defaults["seconds"]


class TerminateByGradientNorm(TerminationCriteriaBase):
    """Terminates when the gradient is small: ``metric(∇f(x)) ≤ tol`` on ``n`` consecutive steps.

    The metric is computed over all parameters as one vector (``TensorList.global_metric``); computes the gradient
    if it is not known yet. A NaN norm does not satisfy the criterion.

    Args:
        tol: tolerance (non-negative). Defaults to 1e-8.
        n: consecutive evaluations required. Defaults to 3.
        ord: the metric: a p-norm order, ``'l0'``...``'l4'``, ``'linf'``, ``'mad'``, ``'std'``, ``'var'`` or
            ``'sum'``. Defaults to 2.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.TerminateByGradientNorm(1e-6), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, tol: float = 1e-08, n: int = 3, ord: Metrics = 2):
        check_non_negative("TerminateByGradientNorm", "tol", tol)
        _check_metric("TerminateByGradientNorm", ord)
        super().__init__(dict(tol=tol, ord=ord), n=n)

    def termination_criteria(self, var: Var) -> bool:
        norm = TensorList(var.get_grad()).global_metric(self.defaults["ord"])
        return bool(norm <= self.defaults["tol"])


class TerminateByUpdateNorm(TerminationCriteriaBase):
    """Terminates when the parameters stop moving: ``metric(x_prev − x) ≤ tol`` on ``n`` consecutive evaluations.

    Measures the actual change of the parameters between consecutive evaluations of this criterion, not
    ``var.update``. The first evaluation stores the parameters (state ``'p_prev'``) and returns False.

    Args:
        tol: tolerance (non-negative). Defaults to 1e-8.
        n: consecutive evaluations required. Defaults to 3.
        ord: the metric, as in ``TerminateByGradientNorm``. Defaults to 2.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.TerminateByUpdateNorm(1e-9), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, tol: float = 1e-08, n: int = 3, ord: Metrics = 2):
        check_non_negative("TerminateByUpdateNorm", "tol", tol)
        _check_metric("TerminateByUpdateNorm", ord)
        super().__init__(dict(tol=tol, ord=ord), n=n)

    @torch.no_grad()
    def termination_criteria(self, var: Var) -> bool:
        params = var.params
        if any("p_prev" not in self.state[p] for p in params):
            self.store(params, "p_prev", [p.clone() for p in params])
            return False
        p_prev = [self.state[p]["p_prev"] for p in params]
        norm = TensorList(torch._foreach_sub(p_prev, params)).global_metric(self.defaults["ord"])
        torch._foreach_copy_(p_prev, params)
        return bool(norm <= self.defaults["tol"])


class TerminateOnNoImprovement(TerminationCriteriaBase):
    """Terminates when the loss stops improving: ``f_min − f ≤ tol`` on ``n`` consecutive evaluations.

    ``f`` is the loss at the current parameters (evaluated without backward if unknown). The first evaluation
    stores ``f_min = f`` (global ``'f_min'``) and returns False; then ``f_min ← min(f_min, f)`` after each check.
    A NaN loss counts as no improvement and never becomes ``f_min``. To avoid a separate loss-only evaluation,
    place the criterion after the first module that computes the gradient.

    Args:
        tol: minimal decrease of the best loss that counts as an improvement (non-negative). Defaults to 1e-8.
        n: consecutive evaluations required. Defaults to 10.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.TerminateOnNoImprovement(1e-6, n=20), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, tol: float = 1e-08, n: int = 10):
        check_non_negative("TerminateOnNoImprovement", "tol", tol)
        super().__init__(dict(tol=tol), n=n)

    def termination_criteria(self, var: Var) -> bool:
        f = _loss_value(self, var)
        f_min = self.global_state.get("f_min")
        if f_min is None:
            self.global_state["f_min"] = math.inf if math.isnan(f) else f
            return False
        improved = f < f_min - self.defaults["tol"]  # False for NaN
        if f < f_min:
            self.global_state["f_min"] = f
        return not improved


class TerminateOnLossReached(TerminationCriteriaBase):
    """Terminates when the loss at the current parameters is at most ``value`` (a NaN loss never is).

    The loss is evaluated without backward if it is not known yet; to avoid a separate loss-only evaluation,
    place the criterion after the first module that computes the gradient.

    Args:
        value: the target loss.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.TerminateOnLossReached(1e-4), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, value: float):
        check_range("TerminateOnLossReached", "value", value)
        super().__init__(dict(value=value))

    def termination_criteria(self, var: Var) -> bool:
        return _loss_value(self, var) <= self.defaults["value"]


def _check_criteria(owner: str, criteria: Sequence[Any]) -> None:
    if len(criteria) == 0:
        raise ValueError(f"{owner} needs at least one criterion")
    for c in criteria:
        if not isinstance(c, TerminationCriteriaBase):
            raise TypeError(f"{owner} expects TerminationCriteriaBase instances, got {type(c).__name__}")


class _CriteriaCombination(TerminationCriteriaBase):
    """Shared part of ``TerminateAny`` and ``TerminateAll``: the criteria are children ``module_0``, ``module_1``..."""

    def __init__(self, *criteria: TerminationCriteriaBase):
        _check_criteria(self.__class__.__name__, criteria)
        super().__init__()
        self.set_children_sequence(criteria)

    def _criteria(self) -> list[TerminationCriteriaBase]:
        return self.get_children_sequence()  # type: ignore[return-value]


class TerminateAny(_CriteriaCombination):
    """Terminates when any of the criteria holds (logical or, short-circuit).

    Calls the raw ``termination_criteria`` of the children (``module_0``, ``module_1``, ...) in order and stops at
    the first True: later children are not evaluated on that step, so their own state (counters, stored values)
    does not advance. The children's own ``n`` is ignored; this combinator fires on every step a child holds.

    Args:
        *criteria: the criteria (at least one).

    Example:
        ```python
        criteria = tz.m.TerminateAny(tz.m.TerminateAfterNSteps(1000), tz.m.TerminateByGradientNorm(1e-6))
        opt = tz.Modular(model.parameters(), tz.m.Adam(), criteria, tz.m.LR(1e-3))
        ```
    """

    def termination_criteria(self, var: Var) -> bool:
        return any(c.termination_criteria(var) for c in self._criteria())


class TerminateAll(_CriteriaCombination):
    """Terminates when all of the criteria hold (logical and, short-circuit).

    Calls the raw ``termination_criteria`` of the children in order and stops at the first False: children after
    a false one are not evaluated on that step and do not advance their state. The children's own ``n`` is
    ignored.

    Args:
        *criteria: the criteria (at least one).

    Example:
        ```python
        criteria = tz.m.TerminateAll(tz.m.TerminateAfterNSteps(100), tz.m.TerminateByGradientNorm(1e-6))
        opt = tz.Modular(model.parameters(), tz.m.Adam(), criteria, tz.m.LR(1e-3))
        ```
    """

    def termination_criteria(self, var: Var) -> bool:
        return all(c.termination_criteria(var) for c in self._criteria())


class TerminateNever(TerminationCriteriaBase):
    """A criterion that never holds; still writes ``var.should_terminate = False`` every step.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.TerminateNever(), tz.m.LR(1e-2))
        ```
    """

    def __init__(self):
        super().__init__()

    def termination_criteria(self, var: Var) -> bool:
        return False


def make_termination_criteria(
    ftol: float | None = None,
    gtol: float | None = None,
    stol: float | None = None,
    maxiter: int | None = None,
    maxeval: int | None = None,
    maxsec: float | None = None,
    target_loss: float | None = None,
    extra: TerminationCriteriaBase | Sequence[TerminationCriteriaBase] | None = None,
    n: int = 3,
) -> TerminationCriteriaBase:
    """Builds one criterion from the usual stopping rules.

    For each argument that is not None, in this order: ``TerminateOnNoImprovement(ftol, n=n)``,
    ``TerminateByGradientNorm(gtol, n=n)``, ``TerminateByUpdateNorm(stol, n=n)``, ``TerminateAfterNSteps(maxiter)``,
    ``TerminateAfterNEvaluations(maxeval)``, ``TerminateAfterNSeconds(maxsec)``,
    ``TerminateOnLossReached(target_loss)``, then ``extra`` (one criterion or a sequence). Returns
    ``TerminateNever()`` if there are none, the criterion itself if there is one, else ``TerminateAny`` of all.

    Example:
        ```python
        criteria = make_termination_criteria(gtol=1e-6, maxiter=1000)
        opt = tz.Modular(model.parameters(), tz.m.Adam(), criteria, tz.m.LR(1e-3))
        ```
    """
    criteria: list[TerminationCriteriaBase] = []
    if ftol is not None:
        criteria.append(TerminateOnNoImprovement(ftol, n=n))
    if gtol is not None:
        criteria.append(TerminateByGradientNorm(gtol, n=n))
    if stol is not None:
        criteria.append(TerminateByUpdateNorm(stol, n=n))
    if maxiter is not None:
        criteria.append(TerminateAfterNSteps(maxiter))
    if maxeval is not None:
        criteria.append(TerminateAfterNEvaluations(maxeval))
    if maxsec is not None:
        criteria.append(TerminateAfterNSeconds(maxsec))
    if target_loss is not None:
        criteria.append(TerminateOnLossReached(target_loss))
    if extra is not None:
        extra_list = [extra] if isinstance(extra, Module) else list(extra)
        _check_criteria("make_termination_criteria", extra_list)
        criteria.extend(extra_list)

    if len(criteria) == 0:
        return TerminateNever()
    if len(criteria) == 1:
        return criteria[0]
    return TerminateAny(*criteria)
