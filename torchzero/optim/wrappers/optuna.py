"""Optuna's samplers as a ``torch.optim.Optimizer`` (one trial per step).

Importing this module imports optuna (an optional dependency: ``pip install torchzero[optuna]``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import optuna
import torch

from ...utils.params import Params
from ._base import Problem, WrapperOptimizer, check_box_arg

__all__ = ["OptunaSampler"]

_NAN_VALUE = 1e32


@contextmanager
def _verbosity(silence: bool) -> Iterator[None]:
    """Lowers optuna's logging to WARNING inside the block and restores the previous level afterwards."""
    if not silence:
        yield
        return
    saved = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(saved, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(saved)


class OptunaSampler(WrapperOptimizer):
    r"""An optuna sampler as a ``torch.optim.Optimizer``: **one trial per step**.

    Every scalar ``j`` of every trainable tensor ``i`` is a float hyperparameter ``trial.suggest_float(f"{i}_{j}",
    lb, ub)`` of the group's box. Each step asks the study for a trial, loads its values into the parameters,
    evaluates ``closure(False)``, tells the study the loss (NaN as ``1e32``) and returns the loss; the parameters stay
    at the trial's point. :meth:`load_best` loads the best trial. The study is not part of ``state_dict``.

    Args:
        params: parameters or parameter groups; groups may set their own ``lb``/``ub``.
        lb: lower bound of every parameter entry (finite; per-group setting).
        ub: upper bound of every parameter entry (finite; per-group setting).
        sampler: an optuna sampler instance, a sampler class (instantiated without arguments), or None for optuna's
            default (TPE). Seed it for reproducible runs, e.g. ``optuna.samplers.TPESampler(seed=0)``. Default None.
        silence: lower optuna's logging to WARNING while this optimizer calls optuna (the previous level is restored
            afterwards). Default True.

    Reference:
        Akiba, Sano, Yanase, Ohta, Koyama, "Optuna: A Next-generation Hyperparameter Optimization Framework",
        KDD (2019).

    Example:
        ```python
        opt = tz.optim.wrappers.optuna.OptunaSampler(model.parameters(), lb=-1, ub=1,
                                                     sampler=optuna.samplers.TPESampler(seed=0))
        for _ in range(200):
            loss = opt.step(closure)
        opt.load_best()
        ```
    """

    def __init__(
        self,
        params: Params | torch.nn.Module,
        lb: float,
        ub: float,
        sampler: optuna.samplers.BaseSampler | type[optuna.samplers.BaseSampler] | None = None,
        silence: bool = True,
    ):
        name = type(self).__name__
        check_box_arg(name, lb, ub, required=True)
        if isinstance(sampler, type):
            if not issubclass(sampler, optuna.samplers.BaseSampler):
                raise TypeError(f"{name}: sampler must be an optuna sampler or sampler class, got {sampler.__name__}")
            sampler = sampler()
        elif sampler is not None and not isinstance(sampler, optuna.samplers.BaseSampler):
            raise TypeError(f"{name}: sampler must be an optuna sampler or sampler class, got "
                            f"{type(sampler).__name__}")
        if not isinstance(silence, bool):
            raise TypeError(f"{name}: silence must be a bool, got {type(silence).__name__}")
        super().__init__(params, dict(lb=lb, ub=ub))
        self.sampler = sampler
        self.silence = silence
        self.study: optuna.Study | None = None
        """The optuna study (created on the first step)."""

    @torch.no_grad()
    def step(self, closure: Callable[..., Any] | None = None) -> float:  # type: ignore[override]
        """Runs one trial: suggests every parameter entry, evaluates ``closure(False)``, tells the loss and returns
        it (a float)."""
        problem = self._problem(closure)
        lb, ub = problem.box(required=True)
        sizes = problem.sizes
        with _verbosity(self.silence):
            if self.study is None:
                self.study = optuna.create_study(sampler=self.sampler)
            trial = self.study.ask()
            x = np.empty(problem.n)
            k = 0
            for i, n in enumerate(sizes):
                for j in range(n):
                    x[k] = trial.suggest_float(f"{i}_{j}", lb[k], ub[k])
                    k += 1
            try:
                loss = problem.evaluate(x)
            except BaseException:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            self.study.tell(trial, _NAN_VALUE if math.isnan(loss) else loss)
        return loss

    @torch.no_grad()
    def load_best(self) -> float:
        """Loads the best trial's values into the parameters and returns its loss. Raises ``RuntimeError`` before
        the first completed trial."""
        if self.study is None or len(self.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 0:
            raise RuntimeError(f"{type(self).__name__}.load_best: no trial has been completed yet")
        problem = Problem(self, None, require_closure=False)
        best = self.study.best_trial
        x = np.array([best.params[f"{i}_{j}"] for i, n in enumerate(problem.sizes) for j in range(n)])
        problem.load(x)
        return float(best.value)
