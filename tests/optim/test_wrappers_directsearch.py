"""directsearch wrappers against the package's solvers called directly (same NumPy seed, same objective): the same
points and result; signatures and defaults; argument checks."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

directsearch = pytest.importorskip("directsearch")

from directsearch.ds import DEFAULT_PARAMS  # noqa: E402

from torchzero.optim.wrappers.directsearch import (  # noqa: E402
    DirectSearch,
    DirectSearchDS,
    DirectSearchProbabilistic,
    DirectSearchSTP,
    DirectSearchSubspace,
)

SOLVERS = {
    DirectSearch: directsearch.solve,
    DirectSearchDS: directsearch.solve_directsearch,
    DirectSearchProbabilistic: directsearch.solve_probabilistic_directsearch,
    DirectSearchSubspace: directsearch.solve_subspace_directsearch,
    DirectSearchSTP: directsearch.solve_stp,
}

ARGS = {
    DirectSearch: ["maxevals", "rho", "sketch_dim", "sketch_type", "poll_type", "alpha0", "alpha_max", "alpha_min",
                   "gamma_inc", "gamma_dec", "verbose", "print_freq", "use_stochastic_three_points", "rho_uses_normd"],
    DirectSearchDS: ["maxevals", "rho", "poll_type", "alpha0", "alpha_max", "alpha_min", "gamma_inc", "gamma_dec",
                     "verbose", "print_freq", "rho_uses_normd"],
    DirectSearchProbabilistic: ["maxevals", "rho", "alpha0", "alpha_max", "alpha_min", "gamma_inc", "gamma_dec",
                                "verbose", "print_freq", "rho_uses_normd"],
    DirectSearchSubspace: ["maxevals", "rho", "sketch_dim", "sketch_type", "poll_type", "alpha0", "alpha_max",
                           "alpha_min", "gamma_inc", "gamma_dec", "verbose", "print_freq", "rho_uses_normd"],
    DirectSearchSTP: ["maxevals", "alpha0", "alpha_min", "verbose", "print_freq"],
}


def f_torch(x: torch.Tensor) -> torch.Tensor:
    a, b, c = x[0], x[1], x[2]
    return (a - 0.3) * (a - 0.3) + 3 * (b + 0.7) * (b + 0.7) + 2 * c * c + a * b


def f_np(x: np.ndarray) -> float:
    a, b, c = x[0], x[1], x[2]
    return float((a - 0.3) * (a - 0.3) + 3 * (b + 0.7) * (b + 0.7) + 2 * c * c + a * b)


@pytest.mark.parametrize("cls", list(SOLVERS), ids=lambda c: c.__name__)
def test_signature_and_defaults(cls: type):
    params = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in params] == ["params", *ARGS[cls]]
    for p in params[1:]:
        assert p.default == DEFAULT_PARAMS[p.name], p.name


@pytest.mark.parametrize("cls", list(SOLVERS), ids=lambda c: c.__name__)
def test_same_points_as_the_package(cls: type):
    kwargs = {"maxevals": 300}
    if cls is DirectSearchSubspace:
        kwargs["sketch_dim"] = 2
    x = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = cls([x], **kwargs)
    seen: list[np.ndarray] = []

    def closure(backward: bool = True) -> torch.Tensor:
        seen.append(x.detach().numpy().copy())
        loss = f_torch(x)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    np.random.seed(7)
    value = opt.step(closure)

    ref_points: list[np.ndarray] = []

    def f(v: np.ndarray) -> float:
        ref_points.append(np.array(v, dtype=np.float64))
        return f_np(v)

    np.random.seed(7)
    ref = SOLVERS[cls](f, np.array([1.0, 1.0, 1.0]), **kwargs)
    assert len(seen) == len(ref_points) == opt.num_evaluations
    for ours, theirs in zip(seen, ref_points):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(x.detach().numpy(), ref.x)
    assert value == ref.f == f_torch(x.detach()).item()


def test_validation():
    x = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="DirectSearch: maxevals"):
        DirectSearch([x], maxevals=0)
    with pytest.raises(ValueError, match="DirectSearchDS: poll_type"):
        DirectSearchDS([x], poll_type="3n")
    with pytest.raises(ValueError, match="DirectSearchSubspace: gamma_dec must be < 1"):
        DirectSearchSubspace([x], gamma_dec=2.0)
    with pytest.raises(ValueError, match="DirectSearchProbabilistic: gamma_inc must be >= 1"):
        DirectSearchProbabilistic([x], gamma_inc=0.5)
    with pytest.raises(ValueError, match="DirectSearchSTP: alpha_min"):
        DirectSearchSTP([x], alpha_min=-1.0)
    with pytest.raises(TypeError, match="DirectSearch: rho"):
        DirectSearch([x], rho=0.1)  # type: ignore[arg-type]
