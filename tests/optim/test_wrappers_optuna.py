"""OptunaSampler against optuna's own ask/tell loop with the same seeded sampler: the same trials, one per step; the NaN
policy, logging restored, per-group boxes, best trial, errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

optuna = pytest.importorskip("optuna")

from torchzero.optim.wrappers.optuna import OptunaSampler  # noqa: E402


def f_torch(ps: list[torch.Tensor]) -> torch.Tensor:
    a, b = ps[0][0], ps[1]
    return (a - 0.3) * (a - 0.3) + 3 * (b + 0.7) * (b + 0.7) + ps[0][1] * ps[0][1]


def f_np(a0: float, a1: float, b: float) -> float:
    return float((a0 - 0.3) * (a0 - 0.3) + 3 * (b + 0.7) * (b + 0.7) + a1 * a1)


def make_closure(opt, params, f=f_torch):
    def closure(backward: bool = True) -> torch.Tensor:
        loss = f(params)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss
    return closure


def test_same_trials_as_optuna_ask_tell():
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    opt = OptunaSampler([{"params": [a]}, {"params": [b], "lb": -1.0, "ub": 0.0}], lb=-2, ub=2,
                        sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=5))
    closure = make_closure(opt, [a, b])
    points, losses = [], []
    for _ in range(25):
        losses.append(opt.step(closure))
        points.append([a[0].item(), a[1].item(), b.item()])
    assert opt.num_evaluations == 25 and len(opt.study.trials) == 25

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=5))
    for k in range(25):
        trial = study.ask()
        v = [trial.suggest_float("0_0", -2, 2), trial.suggest_float("0_1", -2, 2), trial.suggest_float("1_0", -1, 0)]
        loss = f_np(*v)
        study.tell(trial, loss)
        assert points[k] == v and losses[k] == loss

    value = opt.load_best()
    assert value == study.best_value
    assert [a[0].item(), a[1].item(), b.item()] == [study.best_params[k] for k in ("0_0", "0_1", "1_0")]


def test_nan_is_told_as_1e32_and_logging_is_restored():
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        opt = OptunaSampler([a, b], lb=-1, ub=1, sampler=optuna.samplers.RandomSampler)
        assert isinstance(opt.sampler, optuna.samplers.RandomSampler)  # a class is instantiated
        loss = opt.step(make_closure(opt, [a, b], f=lambda ps: f_torch(ps) * math.nan))
        assert math.isnan(loss) and opt.study.trials[-1].value == 1e32
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_closure_error_fails_the_trial():
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = OptunaSampler([a], lb=-1, ub=1, sampler=optuna.samplers.RandomSampler(seed=0))

    def bad(ps):
        raise RuntimeError("closure failed")

    with pytest.raises(RuntimeError, match="closure failed"):
        opt.step(make_closure(opt, [a], f=bad))
    assert opt.study.trials[-1].state == optuna.trial.TrialState.FAIL
    with pytest.raises(RuntimeError, match="OptunaSampler.load_best: no trial has been completed"):
        opt.load_best()


def test_validation():
    a = torch.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match="OptunaSampler: sampler"):
        OptunaSampler([a], lb=-1, ub=1, sampler="tpe")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="OptunaSampler: sampler"):
        OptunaSampler([a], lb=-1, ub=1, sampler=dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="OptunaSampler: ub must be finite"):
        OptunaSampler([a], lb=-1, ub=math.inf)
    with pytest.raises(TypeError, match="OptunaSampler: silence"):
        OptunaSampler([a], lb=-1, ub=1, silence=None)  # type: ignore[arg-type]
    assert np.isfinite(OptunaSampler([a], lb=-1, ub=1).param_groups[0]["lb"])
