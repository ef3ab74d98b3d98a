"""Classic unconstrained test problems (Moré, Garbow & Hillstrom, "Testing unconstrained optimization software",
ACM TOMS 7(1), 1981), written once in torch so that torchzero and scipy minimise exactly the same function.

Each problem is ``(name, f, x0, f_star)`` with ``f`` a function of one float64 vector. ``f_star`` is the known
minimum value (0 for all of these; the trigonometric function's value is computed from a tight reference run).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Objective = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Problem:
    name: str
    f: Objective
    x0: torch.Tensor
    f_star: float | None  # None: computed by `reference_minimum`

    @property
    def n(self) -> int:
        return self.x0.numel()


def extended_rosenbrock(x: torch.Tensor) -> torch.Tensor:
    odd, even = x[0::2], x[1::2]
    return (100 * (even - odd**2) ** 2 + (1 - odd) ** 2).sum()


def extended_powell_singular(x: torch.Tensor) -> torch.Tensor:
    x1, x2, x3, x4 = x[0::4], x[1::4], x[2::4], x[3::4]
    return ((x1 + 10 * x2) ** 2 + 5 * (x3 - x4) ** 2 + (x2 - 2 * x3) ** 4 + 10 * (x1 - x4) ** 4).sum()


def beale(x: torch.Tensor) -> torch.Tensor:
    y = torch.tensor([1.5, 2.25, 2.625], dtype=x.dtype)
    i = torch.arange(1, 4, dtype=x.dtype)
    return ((y - x[0] * (1 - x[1] ** i)) ** 2).sum()


def wood(x: torch.Tensor) -> torch.Tensor:
    x1, x2, x3, x4 = x
    return (100 * (x2 - x1**2) ** 2 + (1 - x1) ** 2 + 90 * (x4 - x3**2) ** 2 + (1 - x3) ** 2
            + 10.1 * ((x2 - 1) ** 2 + (x4 - 1) ** 2) + 19.8 * (x2 - 1) * (x4 - 1))


def helical_valley(x: torch.Tensor) -> torch.Tensor:
    x1, x2, x3 = x
    theta = torch.atan2(x2, x1) / (2 * math.pi)  # the branch of MGH's definition, continuous away from x1 < 0, x2 = 0
    r = torch.sqrt(x1**2 + x2**2)
    return 100 * ((x3 - 10 * theta) ** 2 + (r - 1) ** 2) + x3**2


def trigonometric(x: torch.Tensor) -> torch.Tensor:
    n = x.numel()
    i = torch.arange(1, n + 1, dtype=x.dtype)
    residuals = n - torch.cos(x).sum() + i * (1 - torch.cos(x)) - torch.sin(x)
    return (residuals**2).sum()


def broyden_tridiagonal(x: torch.Tensor) -> torch.Tensor:
    padded = torch.nn.functional.pad(x, (1, 1))
    residuals = (3 - 2 * x) * x - padded[:-2] - 2 * padded[2:] + 1
    return (residuals**2).sum()


def ill_conditioned_quadratic(condition: float) -> Objective:
    def f(x: torch.Tensor) -> torch.Tensor:
        n = x.numel()
        scales = condition ** (torch.arange(n, dtype=x.dtype) / max(n - 1, 1))
        return 0.5 * (scales * x**2).sum()
    return f


def _full(n: int, value: float) -> torch.Tensor:
    return torch.full((n,), value, dtype=torch.float64)


def _tile(pattern: list[float], n: int) -> torch.Tensor:
    return torch.tensor(pattern * (n // len(pattern)), dtype=torch.float64)


def problems() -> list[Problem]:
    """The benchmark set: several sizes of the scalable problems."""
    out = []
    for n in (2, 10, 50):
        out.append(Problem(f"ext. Rosenbrock n={n}", extended_rosenbrock, _tile([-1.2, 1.0], n), 0.0))
    for n in (4, 20):
        out.append(Problem(f"ext. Powell singular n={n}", extended_powell_singular, _tile([3.0, -1.0, 0.0, 1.0], n),
                           0.0))
    out.append(Problem("Beale", beale, torch.tensor([1.0, 1.0], dtype=torch.float64), 0.0))
    out.append(Problem("Wood", wood, torch.tensor([-3.0, -1.0, -3.0, -1.0], dtype=torch.float64), 0.0))
    out.append(Problem("helical valley", helical_valley, torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64), 0.0))
    for n in (5, 10):
        out.append(Problem(f"trigonometric n={n}", trigonometric, _full(n, 1 / n), None))
    for n in (10, 50):
        out.append(Problem(f"Broyden tridiagonal n={n}", broyden_tridiagonal, _full(n, -1.0), 0.0))
    for n, cond in ((10, 1e3), (50, 1e5)):
        out.append(Problem(f"quadratic n={n} cond={cond:.0e}", ill_conditioned_quadratic(cond), _full(n, 1.0), 0.0))
    return out


def reference_minimum(problem: Problem) -> float:
    """``f_star``, or the value of a tight scipy BFGS + Newton-polished run from ``x0`` when it is not known."""
    if problem.f_star is not None:
        return problem.f_star
    import numpy as np
    from scipy.optimize import minimize

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        value = problem.f(t)
        (g,) = torch.autograd.grad(value, t)
        return float(value), g.numpy()

    res = minimize(fun, problem.x0.numpy(), jac=True, method="BFGS", options={"gtol": 1e-14, "maxiter": 10_000})
    x = torch.tensor(res.x, dtype=torch.float64)
    for _ in range(5):  # Newton polish
        H = torch.autograd.functional.hessian(problem.f, x)
        g = torch.func.grad(problem.f)(x)
        x = x - torch.linalg.lstsq(H, g.unsqueeze(-1)).solution.squeeze(-1)
    return min(float(res.fun), float(problem.f(x)))
