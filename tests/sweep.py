"""Shared test helpers: the sweep every module passes, and reference trajectories.

Every module family reuses ``check_module``: parameters of many shapes (0-d to 7-d, size-1 dims), float32 and
float64, with and without closure, ``reset()`` mid-run, and a ``state_dict`` round trip through
``torch.save``/``torch.load(weights_only=True)`` that must continue bit-identically.
"""
from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

import torch

import torchzero as tz

# 0-d to 7-d, with size-1 dims
SHAPES: list[tuple[int, ...]] = [(), (1,), (5,), (2, 3), (1, 4), (3, 1, 2), (2, 1, 3, 1), (1, 2, 1, 2, 1),
                                 (2, 1, 1, 2, 1, 1), (1, 1, 2, 1, 1, 1, 2)]

ModulesFactory = Callable[[], Sequence[tz.core.Module]]


def make_params(dtype: torch.dtype = torch.float64, shapes: Sequence[tuple[int, ...]] = SHAPES, seed: int = 0,
                device: str | torch.device = "cpu") -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).to(device).requires_grad_() for s in shapes]


def clone_params(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone().requires_grad_() for p in params]


class Objective:
    """A smooth, non-separable test objective over a list of tensors: a shifted quadratic with a quartic term and
    a coupling term between consecutive tensors. Deterministic for a given ``seed``."""

    def __init__(self, params: Sequence[torch.Tensor], seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        self.scales = [(torch.rand(p.shape, generator=g, dtype=p.dtype) * 2 + 0.5).to(p.device) for p in params]
        self.shifts = [torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) for p in params]

    def __call__(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        total = params[0].new_zeros(())
        sums = []
        for p, a, c in zip(params, self.scales, self.shifts):
            d = p - c
            total = total + (a * d * d).sum() + 0.05 * (d**4).sum()
            sums.append(p.sum())
        for s1, s2 in zip(sums[:-1], sums[1:]):
            total = total + 0.1 * s1 * s2
        return total


def make_closure(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor], f: Callable,
                 set_to_none: bool = True) -> Callable:
    """``closure(backward=True)``; with ``set_to_none=False`` it zeroes the gradients in place before the backward
    (so the ``.grad`` tensors are reused from call to call)."""
    def closure(backward: bool = True) -> torch.Tensor:
        loss = f(params)
        if backward:
            opt.zero_grad(set_to_none=set_to_none)
            loss.backward()
        return loss
    return closure


def step_n(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor], f: Callable, n: int, use_closure: bool,
           set_to_none: bool = True) -> list[torch.Tensor]:
    """Runs ``n`` steps (with a closure, or with manual backward) and returns the losses."""
    losses = []
    for _ in range(n):
        if use_closure:
            losses.append(opt.step(make_closure(opt, params, f, set_to_none)))
        else:
            opt.zero_grad()
            loss = f(params)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
    return losses


def roundtrip(state_dict: dict) -> dict:
    """``torch.save`` then ``torch.load(weights_only=True)``."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def snapshot(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def assert_all_equal(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], msg: str = "") -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert torch.equal(x, y), f"{msg}: tensor {i} differs, max diff {(x - y).abs().max().item()}"


def assert_all_close(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], rtol: float, atol: float = 0.0,
                     msg: str = "") -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=lambda m, i=i: f"{msg}: tensor {i}: {m}")


def check_module(
    factory: ModulesFactory,
    *,
    needs_closure: bool = False,
    n_steps: int = 4,
    deterministic: bool = True,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    shapes: Sequence[tuple[int, ...]] = SHAPES,
    device: str | torch.device = "cpu",
    check_reset: bool = True,
) -> None:
    """The sweep every module passes. ``factory()`` returns fresh modules (the whole chain).

    - all shapes and dtypes: parameters stay finite, keep shape and dtype, and move;
    - closure vs. manual backward give the same trajectory (or a clear error naming the module if
      ``needs_closure``); the user's ``p.grad`` is not modified by the step;
    - a closure that zeroes the gradients in place (``zero_grad(set_to_none=False)``) gives the same trajectory;
    - ``reset()`` mid-run: the next steps equal those of a fresh optimizer started from the same point (skipped
      with ``check_reset=False``, e.g. for seeded modules whose generator survives ``reset()``);
    - ``state_dict`` → ``torch.save`` → ``torch.load(weights_only=True)`` → ``load_state_dict`` into a fresh
      optimizer continues bit-identically.
    """
    for dtype in dtypes:
        params = make_params(dtype, shapes, device=device)
        f = Objective(params)
        x0 = snapshot(params)
        opt = tz.Modular(params, *factory())
        losses = step_n(opt, params, f, n_steps, use_closure=True)
        for p, p0 in zip(params, x0):
            assert p.dtype == dtype and p.shape == p0.shape
            assert torch.isfinite(p).all(), f"non-finite parameters after steps ({dtype})"
        assert any(not torch.equal(p, p0) for p, p0 in zip(params, x0)), "parameters did not move"
        assert all(math.isfinite(float(l.detach())) for l in losses if l is not None)
        for m in opt.unrolled_modules:
            for p, s in m.state.items():
                for k, v in s.items():
                    if isinstance(v, torch.Tensor) and v.shape == p.shape and v.is_floating_point():
                        assert v.dtype == p.dtype, f"{type(m).__name__} state {k} has dtype {v.dtype}"
                        assert v.device == p.device, f"{type(m).__name__} state {k} is on {v.device}"

        # ---- without closure
        params_nc = clone_params(x0)
        opt_nc = tz.Modular(params_nc, *factory())
        if needs_closure:
            opt_nc.zero_grad()
            f(params_nc).backward()
            try:
                opt_nc.step()
            except RuntimeError as e:
                names = {type(m).__name__ for m in opt_nc.unrolled_modules}
                assert any(n in str(e) for n in names), f"error doesn't name the module: {e}"
            else:
                raise AssertionError("a module that needs a closure stepped without one")
        else:
            step_n(opt_nc, params_nc, f, n_steps, use_closure=False)
            if deterministic:
                assert_all_close(params_nc, snapshot(params), rtol=1e-5 if dtype == torch.float32 else 1e-10,
                                 atol=1e-6 if dtype == torch.float32 else 1e-12, msg="closure vs no closure")
            # the user's gradients are not modified by the step
            opt_nc.zero_grad()
            f(params_nc).backward()
            grads_before = [p.grad.clone() for p in params_nc]
            opt_nc.step()
            assert_all_equal([p.grad for p in params_nc], grads_before, "step modified p.grad")

        if not deterministic:
            continue

        # ---- a closure that zeroes the gradients in place gives the same trajectory (modules must not keep
        # references to `.grad` tensors across closure calls)
        params_z = clone_params(x0)
        opt_z = tz.Modular(params_z, *factory())
        step_n(opt_z, params_z, f, n_steps, use_closure=True, set_to_none=False)
        assert_all_equal(params_z, snapshot(params), "closure that zeroes gradients in place")

        # ---- reset mid-run equals a fresh optimizer from the same point
        if check_reset:
            _check_reset(factory, x0, f)

        # ---- state dict round trip continues bit-identically
        params_a = clone_params(x0)
        opt_a = tz.Modular(params_a, *factory())
        step_n(opt_a, params_a, f, 3, use_closure=True)
        sd = roundtrip(opt_a.state_dict())
        params_b = clone_params(snapshot(params_a))
        opt_b = tz.Modular(params_b, *factory())
        opt_b.load_state_dict(sd)
        step_n(opt_a, params_a, f, 3, use_closure=True)
        step_n(opt_b, params_b, f, 3, use_closure=True)
        assert_all_equal(params_a, params_b, "state_dict round trip")
        assert opt_b.current_step == opt_a.current_step


def _check_reset(factory: ModulesFactory, x0: list[torch.Tensor], f: Callable) -> None:
    """After ``reset()`` mid-run, the next steps equal those of a fresh optimizer started from the same point."""
    params_a = clone_params(x0)
    opt_a = tz.Modular(params_a, *factory())
    step_n(opt_a, params_a, f, 2, use_closure=True)
    for m in opt_a.modules:
        m.reset()
    params_b = clone_params(snapshot(params_a))
    opt_b = tz.Modular(params_b, *factory())
    step_n(opt_a, params_a, f, 2, use_closure=True)
    step_n(opt_b, params_b, f, 2, use_closure=True)
    assert_all_close(params_a, params_b, rtol=0, atol=0, msg="after reset()")
