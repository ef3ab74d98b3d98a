"""FcmaesWrapper: the in-process retry loop equals fcmaes' optimizers run directly with the same generator; results,
value_limit, stop_fitness, capacity, statistics; no import side effects; logging state restored; errors."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("fcmaes")

import fcmaes.optimizer  # noqa: E402
from scipy.optimize import Bounds  # noqa: E402

from torchzero.optim.wrappers.fcmaes import FcmaesWrapper  # noqa: E402


def f_torch(x: torch.Tensor) -> torch.Tensor:
    a, b = x[0], x[1]
    return (a - 0.3) * (a - 0.3) + 3 * (b + 0.7) * (b + 0.7) + 0.5 * torch.sin(5 * a) * torch.sin(5 * a)


def f_np(x: np.ndarray) -> float:
    a, b = x[0], x[1]
    return float((a - 0.3) * (a - 0.3) + 3 * (b + 0.7) * (b + 0.7) + 0.5 * np.sin(5 * a) * np.sin(5 * a))


def run(opt: FcmaesWrapper, x: torch.Tensor, f=f_torch, seed: int = 0) -> tuple[float, list[np.ndarray]]:
    seen: list[np.ndarray] = []

    def closure(backward: bool = True) -> torch.Tensor:
        seen.append(x.detach().numpy().copy())
        loss = f(x)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    np.random.seed(seed)
    return opt.step(closure), seen


def test_equals_fcmaes_optimizers_run_directly():
    x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = FcmaesWrapper([x], lb=-2, ub=2, max_evaluations=600, popsize=8, num_retries=3)
    value, seen = run(opt, x, seed=5)

    np.random.seed(5)
    optimizer = fcmaes.optimizer.de_cma(600, 8, -np.inf)
    rg = np.random.Generator(np.random.PCG64DXSM(np.random.randint(0, 2**63 - 1, dtype=np.int64)))
    points: list[np.ndarray] = []

    def f(v: np.ndarray) -> float:
        points.append(np.array(v, dtype=np.float64))
        return f_np(v)

    results = []
    for _ in range(3):
        xr, yr, _ = optimizer.minimize(f, Bounds([-2.0, -2.0], [2.0, 2.0]), None, [rg.uniform(0.05, 0.1)] * 2, rg,
                                       None)
        results.append((yr, xr))
    assert len(seen) == len(points) == opt.num_evaluations
    for ours, theirs in zip(seen, points):
        np.testing.assert_array_equal(ours, theirs)
    best_y, best_x = min(results, key=lambda r: r[0])
    np.testing.assert_array_equal(x.detach().numpy(), best_x)
    assert value == best_y == f_torch(x.detach()).item()
    assert [r[0] for r in opt.results] == sorted(r[0] for r in results)
    np.testing.assert_allclose(x.detach().numpy(), [0.0, -0.7], atol=0.1)  # global minimum near a = 0


def test_reproducible_with_numpy_seed():
    x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    v1, s1 = run(FcmaesWrapper([x], lb=-2, ub=2, max_evaluations=300), x, seed=1)
    x1 = x.detach().clone()
    x.data.fill_(1.0)
    v2, s2 = run(FcmaesWrapper([x], lb=-2, ub=2, max_evaluations=300), x, seed=1)
    assert v1 == v2 and torch.equal(x1, x.detach()) and len(s1) == len(s2)


def test_stop_fitness_capacity_and_statistics():
    x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = FcmaesWrapper([x], lb=-2, ub=2, max_evaluations=400, num_retries=4, capacity=2, statistic_num=5)
    run(opt, x, f=lambda v: ((v - 0.5) ** 2).sum())
    assert len(opt.results) == 2 and opt.results[0][0] <= opt.results[1][0]
    assert 0 < len(opt.statistics) <= 5
    evals, values = zip(*opt.statistics)
    assert list(evals) == sorted(evals) and list(values) == sorted(values, reverse=True)

    x.data.fill_(1.0)
    opt = FcmaesWrapper([x], lb=-2, ub=2, max_evaluations=400, num_retries=4, stop_fitness=1e-3)
    value, _ = run(opt, x, f=lambda v: ((v - 0.5) ** 2).sum())
    assert len(opt.results) == 1 and value <= 1e-3


def test_value_limit_not_reached_uses_best_evaluated_point():
    x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = FcmaesWrapper([x], lb=-2, ub=2, max_evaluations=200, value_limit=-1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value, seen = run(opt, x)
    assert any("value_limit" in str(w.message) for w in caught)
    losses = [f_np(p) for p in seen]
    assert value == min(losses) == f_torch(x.detach()).item() and opt.results == []


def test_custom_optimizer():
    x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = FcmaesWrapper([x], lb=-2, ub=2, optimizer=fcmaes.optimizer.Cma_cpp(1500))
    value, _ = run(opt, x, f=lambda v: ((v - 0.5) ** 2).sum())
    assert value < 1e-8 and opt.num_evaluations <= 1500


def test_loguru_state_is_restored():
    from loguru import logger

    logger.disable("fcmaes.retry")
    before = (list(logger._core.activation_list), dict(logger._core.enabled))
    try:
        x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
        run(FcmaesWrapper([x], lb=-2, ub=2, max_evaluations=100), x)
        assert (list(logger._core.activation_list), dict(logger._core.enabled)) == before
    finally:
        logger.enable("fcmaes.retry")


def test_import_has_no_side_effects():
    code = (
        "import os, numpy as np\n"
        "before = (np.get_printoptions(), os.environ.get('MKL_NUM_THREADS'), os.environ.get('OPENBLAS_NUM_THREADS'))\n"
        "import torchzero.optim.wrappers.fcmaes\n"
        "import fcmaes.optimizer\n"  # already imported by the wrapper: nothing runs again
        "after = (np.get_printoptions(), os.environ.get('MKL_NUM_THREADS'), os.environ.get('OPENBLAS_NUM_THREADS'))\n"
        "assert before == after, (before, after)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env["MKL_NUM_THREADS"] = "3"
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_validation():
    x = torch.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match="FcmaesWrapper: optimizer"):
        FcmaesWrapper([x], lb=-1, ub=1, optimizer="de")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="FcmaesWrapper: num_retries"):
        FcmaesWrapper([x], lb=-1, ub=1, num_retries=0)
    with pytest.raises(ValueError, match="FcmaesWrapper: value_limit"):
        FcmaesWrapper([x], lb=-1, ub=1, value_limit=math.nan)
    with pytest.raises(ValueError, match="FcmaesWrapper: lb must be finite"):
        FcmaesWrapper([x], lb=-math.inf, ub=1)
