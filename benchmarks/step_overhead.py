"""Per-step overhead of ``Modular`` against ``torch.optim`` on many small tensors.

Times ``tz.Modular(p, tz.m.Adam(), tz.m.LR(1e-3))`` against ``torch.optim.Adam(p, 1e-3, foreach=True)`` on 200
tensors (100 of 32x32, 100 of 32) with one thread. The two optimizers are timed interleaved (A B A B ...), each
round timing a block of steps, and the median of the per-round ratios tz/torch is printed (< 1 means faster).

    python benchmarks/step_overhead.py [--rounds 30] [--steps 20]
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import torchzero as tz


def make_params(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(32, 32, generator=g, requires_grad=True) for _ in range(100)]
    params += [torch.randn(32, generator=g, requires_grad=True) for _ in range(100)]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-2
    return params


def time_steps(opt: torch.optim.Optimizer, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        opt.step()
    return time.perf_counter() - start


def compare(name: str, make_tz: Callable, make_ref: Callable, rounds: int, steps: int) -> float:
    tz_opt = make_tz(make_params())
    ref_opt = make_ref(make_params())
    for _ in range(5):  # warm up
        tz_opt.step()
        ref_opt.step()
    ratios, tz_times, ref_times = [], [], []
    for _ in range(rounds):
        t_tz = time_steps(tz_opt, steps)
        t_ref = time_steps(ref_opt, steps)
        ratios.append(t_tz / t_ref)
        tz_times.append(t_tz / steps)
        ref_times.append(t_ref / steps)
    ratio = statistics.median(ratios)
    print(f"{name:<44} tz {statistics.median(tz_times) * 1e6:8.0f} us   torch {statistics.median(ref_times) * 1e6:8.0f} us"
          f"   ratio {ratio:.3f}")
    return ratio


class ClippedAdamW(torch.optim.AdamW):
    """``torch.nn.utils.clip_grad_norm_(foreach=True)`` followed by an AdamW step: the torch equivalent of
    ``ClipNorm(dim='global') -> Adam -> WeightDecay -> LR``. The clipping factor is applied to ``p.grad`` in place, so
    the gradients shrink a little more each step; that doesn't change the cost measured here."""

    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        return super().step(closure)


CASES: dict[str, tuple[Callable, Callable]] = {
    "Adam + LR  vs  torch.optim.Adam": (
        lambda p: tz.Modular(p, tz.m.Adam(), tz.m.LR(1e-3)),
        lambda p: torch.optim.Adam(p, 1e-3, foreach=True)),
    # there is no Lion in torch.optim: SGD with momentum is the closest (one elementwise op less: no sign)
    "Lion + LR  vs  SGD(momentum) (no torch Lion)": (
        lambda p: tz.Modular(p, tz.m.Lion(), tz.m.LR(1e-4)),
        lambda p: torch.optim.SGD(p, 1e-4, momentum=0.9, foreach=True)),
    "RMSprop + LR  vs  torch.optim.RMSprop": (
        lambda p: tz.Modular(p, tz.m.RMSprop(), tz.m.LR(1e-3)),
        lambda p: torch.optim.RMSprop(p, 1e-3, foreach=True)),
    "Adagrad + LR  vs  torch.optim.Adagrad": (
        lambda p: tz.Modular(p, tz.m.Adagrad(), tz.m.LR(1e-2)),
        lambda p: torch.optim.Adagrad(p, 1e-2, foreach=True)),
    "HeavyBall + LR  vs  SGD(momentum=0.9)": (
        lambda p: tz.Modular(p, tz.m.HeavyBall(0.9), tz.m.LR(1e-2)),
        lambda p: torch.optim.SGD(p, 1e-2, momentum=0.9, foreach=True)),
    "ClipNorm+Adam+WD+LR  vs  clip_grad_norm_+AdamW": (
        lambda p: tz.Modular(p, tz.m.ClipNorm(1.0, dim="global"), tz.m.Adam(), tz.m.WeightDecay(1e-2), tz.m.LR(1e-3)),
        lambda p: ClippedAdamW(p, 1e-3, weight_decay=1e-2, foreach=True)),
    "ClipNorm+Adam+WD+LR  vs  AdamW (no clipping)": (
        lambda p: tz.Modular(p, tz.m.ClipNorm(1.0, dim="global"), tz.m.Adam(), tz.m.WeightDecay(1e-2), tz.m.LR(1e-3)),
        lambda p: torch.optim.AdamW(p, 1e-3, weight_decay=1e-2, foreach=True)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, 200 tensors (100 x 32x32, 100 x 32), "
          f"{args.rounds} interleaved rounds of {args.steps} steps; ratio = median(tz / torch)")
    for name, (make_tz, make_ref) in CASES.items():
        compare(name, make_tz, make_ref, args.rounds, args.steps)


if __name__ == "__main__":
    main()
