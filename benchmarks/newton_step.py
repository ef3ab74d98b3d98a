"""Cost of one ``Newton`` step against a hand-written ``torch.func`` Newton step.

Problems (n = 300, float64): ``f(x) = logsumexp(Ax − b) + ½·μ‖x‖²`` with a random ``300 × 300`` matrix ``A`` (a
smooth strictly convex function with a dense Hessian), and the extended Rosenbrock function (elementwise operations,
block-diagonal Hessian). Compared, one step each:

- ``tz.Modular([x], tz.m.Newton(...))`` stepped with a closure;
- the hand-written step ``g = torch.func.grad(f)(x)``, ``H = torch.func.hessian(f)(x)``,
  ``x -= torch.linalg.solve(H, g)``.

The two are timed interleaved (A B A B ...), each round timing a block of steps, and the median of the per-round
ratios tz/reference is printed (< 1 means faster). Both start from the same point and follow the same trajectory
(checked at the end).

    python benchmarks/newton_step.py [--rounds 30] [--steps 5] [--threads 1]

Goal: ratio <= 1.1. Measured on this CPU (1 thread, 15 rounds): the default ``Newton()`` (``hessian_method=
'autograd'``: one closure evaluation, the gradient with a graph, then its Jacobian in one ``torch.func.vmap``-batched
reverse pass) 0.26 on the dense problem and 0.50 on Rosenbrock; ``Newton(hessian_method='func')`` (loss, gradient
and Hessian from one forward-over-reverse ``torch.func`` pass) 0.44 and 1.03. Both solve by Cholesky.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import torchzero as tz
from torchzero.modules.second_order.newton import Newton

N = 300
MU = 1e-2


def make_logsumexp(seed: int = 0) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, N, generator=g, dtype=torch.float64) / N**0.5
    b = torch.randn(N, generator=g, dtype=torch.float64)
    x0 = torch.randn(N, generator=g, dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(A @ x - b, 0) + 0.5 * MU * x.dot(x)

    return f, x0


def make_rosenbrock(seed: int = 0) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """Extended Rosenbrock (n = 300) from (-1.2, 1, ...): a sparse (block-diagonal) Hessian built from elementwise
    operations."""
    x0 = torch.tensor([-1.2, 1.0] * (N // 2), dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        odd, even = x[0::2], x[1::2]
        return (100 * (even - odd**2) ** 2 + (1 - odd) ** 2).sum()

    return f, x0


PROBLEMS: dict[str, Callable[..., tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]]] = {
    "logsumexp(Ax - b) + mu/2 |x|^2 (dense A)": make_logsumexp,
    "extended Rosenbrock": make_rosenbrock,
}


class TzNewton:
    def __init__(self, f: Callable, x0: torch.Tensor, **newton_kwargs):
        self.x = x0.clone().requires_grad_()
        self.opt = tz.Modular([self.x], Newton(**newton_kwargs))
        x, opt = self.x, self.opt

        def closure(backward: bool = True) -> torch.Tensor:
            loss = f(x)
            if backward:
                opt.zero_grad()
                loss.backward()
            return loss

        self.closure = closure

    def step(self) -> None:
        self.opt.step(self.closure)


class FuncNewton:
    def __init__(self, f: Callable, x0: torch.Tensor):
        self.x = x0.clone()
        self.grad = torch.func.grad(f)
        self.hessian = torch.func.hessian(f)

    def step(self) -> None:
        x = self.x
        x -= torch.linalg.solve(self.hessian(x), self.grad(x))


def time_steps(obj, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        obj.step()
    return time.perf_counter() - start


def compare(name: str, make_problem: Callable, newton_kwargs: dict, rounds: int, steps: int) -> float:
    f, x0 = make_problem()
    a, b = TzNewton(f, x0, **newton_kwargs), FuncNewton(f, x0)
    for _ in range(3):  # warm up
        a.step()
        b.step()
    ratios, a_times, b_times = [], [], []
    for _ in range(rounds):
        t_a = time_steps(a, steps)
        t_b = time_steps(b, steps)
        ratios.append(t_a / t_b)
        a_times.append(t_a / steps)
        b_times.append(t_b / steps)
    diff = (a.x.detach() - b.x).abs().max().item()
    ratio = statistics.median(ratios)
    print(f"{name:<38} tz {statistics.median(a_times) * 1e3:7.2f} ms   torch.func {statistics.median(b_times) * 1e3:7.2f} ms"
          f"   ratio {ratio:.3f}   (max |x_tz - x_ref| = {diff:.1e})")
    return ratio


CASES: dict[str, dict] = {
    "Newton() [hessian_method='autograd']": {},
    "Newton(hessian_method='func')": {"hessian_method": "func"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), n = {N}, float64, {args.rounds} interleaved rounds of "
          f"{args.steps} steps; ratio = median(tz / torch.func)")
    for problem, make_problem in PROBLEMS.items():
        print(f"\n{problem}")
        for name, kwargs in CASES.items():
            compare(name, make_problem, kwargs, args.rounds, args.steps)


if __name__ == "__main__":
    main()
