"""MADS against ``mads.orthomads`` called directly (same NumPy seed, same objective): the same points and result; the
default settings (which never stop in the package) end at the collapsed mesh; NumPy print options restored."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("mads")

from mads.mads import orthomads  # noqa: E402

from torchzero.optim.wrappers.mads import MADS  # noqa: E402


def f_torch(x: torch.Tensor) -> torch.Tensor:
    a, b = x[0], x[1]
    return (a - 0.3) * (a - 0.3) + 3 * (b + 0.7) * (b + 0.7) + a * b


def f_np(x: np.ndarray) -> float:
    a, b = x[0], x[1]
    return float((a - 0.3) * (a - 0.3) + 3 * (b + 0.7) * (b + 0.7) + a * b)


def run(opt: MADS, x: torch.Tensor, f=f_torch, seed: int = 0) -> tuple[float, list[np.ndarray]]:
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


def test_same_points_as_orthomads():
    x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = MADS([x], lb=-2, ub=2, dp_tol=1e-6)
    value, seen = run(opt, x, seed=3)

    points: list[np.ndarray] = []

    def f(v: np.ndarray) -> float:
        points.append(np.array(v, dtype=np.float64))
        return f_np(v)

    np.random.seed(3)
    ref_f, ref_x = orthomads(np.array([1.0, 1.0]), np.array([2.0, 2.0]), np.array([-2.0, -2.0]), f, 0.1, 0.01, 1e-6,
                             math.inf, False, False)
    assert len(seen) == len(points) == opt.num_evaluations
    for ours, theirs in zip(seen, points):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(x.detach().numpy(), ref_x)
    assert value == ref_f == f_torch(x.detach()).item()


def test_defaults_end_when_the_mesh_collapses():
    """``dp_tol=-inf, nitermax=inf``: the package alone would poll NaN points forever."""
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    opt = MADS([x], lb=-2, ub=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the package's divide-by-zero warnings are silenced
        value, seen = run(opt, x, f=lambda v: ((v - 0.3) ** 2).sum() + 1)
    assert all(np.isfinite(p).all() for p in seen)
    losses = [float(((p - 0.3) ** 2).sum() + 1) for p in seen]
    assert value == min(losses) == 1.0 + (x.item() - 0.3) ** 2
    assert abs(x.item() - 0.3) < 1e-6


def test_printoptions_restored_and_box():
    before = np.get_printoptions()
    x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    run(MADS([x], lb=-2, ub=2, nitermax=3), x)
    assert np.get_printoptions() == before
    assert (x.detach().abs() <= 2).all()

    y = torch.tensor([3.0, 0.0], dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="MADS starts from the current parameters"):
        run(MADS([y], lb=-2, ub=2, nitermax=3), y)


def test_validation():
    x = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="MADS: dp must be a positive finite number"):
        MADS([x], lb=-1, ub=1, dp=0.0)
    with pytest.raises(ValueError, match="MADS: nitermax"):
        MADS([x], lb=-1, ub=1, nitermax=0)
    with pytest.raises(ValueError, match="MADS: dp_tol"):
        MADS([x], lb=-1, ub=1, dp_tol=math.nan)
    with pytest.raises(TypeError, match="MADS: lb must be a finite number"):
        MADS([x], lb=None, ub=1)  # type: ignore[arg-type]
