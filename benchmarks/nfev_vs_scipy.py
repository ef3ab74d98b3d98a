"""Objective evaluations to solve classic unconstrained problems: torchzero chains vs ``scipy.optimize.minimize``.

Every method starts from the same point and minimises the same float64 function. A problem counts as solved at the
first evaluation with ``f - f* <= 1e-8 * max(1, |f0 - f*|)``; the number of objective evaluations up to that point is
reported (a loss-and-gradient evaluation counts as one, as scipy's ``jac=True``; a loss-only evaluation also counts
as one). The last lines give, for each torchzero method and its scipy counterpart, the ratio of total evaluations on
the problems both solve, and how many problems each solves.

    python benchmarks/nfev_vs_scipy.py [--budget 3000]
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import torchzero as tz

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unconstrained_problems import Problem, problems, reference_minimum  # noqa: E402


class Solved(Exception):
    pass


class Tracker:
    """Counts evaluations and records the first one that reaches the target."""

    def __init__(self, f0: float, f_star: float, budget: int):
        self.target = f_star + 1e-8 * max(1.0, abs(f0 - f_star))
        self.count = 0
        self.solved_at: int | None = None
        self.budget = budget

    def record(self, value: float) -> None:
        self.count += 1
        if self.solved_at is None and math.isfinite(value) and value <= self.target:
            self.solved_at = self.count
            raise Solved
        if self.count >= self.budget:
            raise Solved


def run_torchzero(problem: Problem, make_modules: Callable[[], list], tracker: Tracker) -> None:
    x = problem.x0.clone().requires_grad_()
    opt = tz.Modular([x], *make_modules())

    def closure(backward: bool = True) -> torch.Tensor:
        loss = problem.f(x)
        if backward:
            opt.zero_grad()
            loss.backward()
        tracker.record(float(loss.detach()))
        return loss

    previous = None
    stalled = 0
    try:
        while True:
            opt.step(closure)
            current = x.detach().clone()
            if previous is not None and torch.equal(previous, current):
                stalled += 1
                if stalled >= 10:
                    return
            else:
                stalled = 0
            previous = current
            if not torch.isfinite(current).all():
                return
    except Solved:
        return


def run_scipy(problem: Problem, method: str, tracker: Tracker) -> None:
    from scipy.optimize import minimize

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        value = problem.f(t)
        (g,) = torch.autograd.grad(value, t)
        tracker.record(float(value))
        return float(value), g.numpy()

    options: dict = {"maxiter": 100_000}
    if method == "L-BFGS-B":
        options.update(ftol=0.0, gtol=0.0, maxfun=tracker.budget + 10)
    elif method in ("BFGS", "CG"):
        options.update(gtol=0.0)
    try:
        minimize(fun, problem.x0.numpy(), jac=True, method=method, options=options)
    except Solved:
        return


TZ_METHODS: dict[str, Callable[[], list]] = {
    "tz LBFGS+SW": lambda: [tz.m.LBFGS(), tz.m.StrongWolfe()],
    "tz BFGS+SW": lambda: [tz.m.BFGS(), tz.m.StrongWolfe()],
    "tz PR-CG+SW": lambda: [tz.m.PolakRibiere(), tz.m.StrongWolfe(c2=0.1, a_init="first-order")],
    "tz HZ-CG+SW": lambda: [tz.m.HagerZhang(), tz.m.StrongWolfe(c2=0.1, a_init="first-order")],
}
SCIPY_METHODS = ["L-BFGS-B", "BFGS", "CG"]
PAIRS = [("tz LBFGS+SW", "L-BFGS-B"), ("tz BFGS+SW", "BFGS"), ("tz PR-CG+SW", "CG"), ("tz HZ-CG+SW", "CG")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)

    names = list(TZ_METHODS) + [f"scipy {m}" for m in SCIPY_METHODS]
    results: dict[str, dict[str, int | None]] = {n: {} for n in names}
    width = 34
    print(f"objective evaluations until f - f* <= 1e-8 max(1, |f0 - f*|) (budget {args.budget}; '-' = not solved)")
    print(f"{'problem':<{width}}" + "".join(f"{n:>15}" for n in names))
    for problem in problems():
        f_star = reference_minimum(problem)
        f0 = float(problem.f(problem.x0))
        row = f"{problem.name:<{width}}"
        for name in names:
            tracker = Tracker(f0, f_star, args.budget)
            if name in TZ_METHODS:
                run_torchzero(problem, TZ_METHODS[name], tracker)
            else:
                run_scipy(problem, name.removeprefix("scipy "), tracker)
            results[name][problem.name] = tracker.solved_at
            row += f"{tracker.solved_at if tracker.solved_at is not None else '-':>15}"
        print(row)

    print()
    for tz_name, scipy_method in PAIRS:
        sp_name = f"scipy {scipy_method}"
        both = [p for p in results[tz_name] if results[tz_name][p] is not None and results[sp_name][p] is not None]
        tz_total = sum(results[tz_name][p] for p in both)  # type: ignore[misc]
        sp_total = sum(results[sp_name][p] for p in both)  # type: ignore[misc]
        solved_tz = sum(v is not None for v in results[tz_name].values())
        solved_sp = sum(v is not None for v in results[sp_name].values())
        ratio = tz_total / sp_total if sp_total else float("nan")
        print(f"{tz_name:<14} vs {sp_name:<16} evaluations on {len(both)} problems both solve: {tz_total} vs "
              f"{sp_total}, ratio {ratio:.3f}; solved {solved_tz} vs {solved_sp} of {len(results[tz_name])}")


if __name__ == "__main__":
    main()
