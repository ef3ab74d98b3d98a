"""Centralize, ClipNormByEMA, NormalizeByEMA, ClipValueByEMA, ClipNormGrowth, ClipValueGrowth: the shared sweep,
each catalog check, and slow loop references of the growth limits."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch
from sweep import assert_all_close, check_module

from torchzero.core import Module, Var
from torchzero.modules.adaptive.adam import Adam
from torchzero.modules.clipping.centralize import Centralize
from torchzero.modules.clipping.ema_clipping import ClipNormByEMA, ClipValueByEMA, NormalizeByEMA
from torchzero.modules.clipping.growth_clipping import ClipNormGrowth, ClipValueGrowth
from torchzero.modules.momentum.momentum import EMA, HeavyBall
from torchzero.modules.ops.binary import Mul
from torchzero.modules.step_size.lr import LR

SWEEP: dict[str, Callable[[], list[Module]]] = {
    "Centralize": lambda: [Centralize(), LR(0.01)],
    "Centralize_gc": lambda: [Centralize(dim=0, inverse_dims=True), LR(0.01)],
    "Centralize_dims_min_size_1": lambda: [Centralize(dim=(0, 2), min_size=1), LR(0.01)],
    "Centralize_global_grad": lambda: [Centralize(dim="global", target="grad"), Adam(), LR(0.01)],
    "ClipNormByEMA": lambda: [ClipNormByEMA(), LR(0.01)],
    "ClipNormByEMA_global_inner": lambda: [ClipNormByEMA(0.9, ord="linf", tensorwise=False, ema_init="update",
                                                         inner=Adam()), LR(0.01)],
    "ClipNormByEMA_no_growth_limit": lambda: [ClipNormByEMA(0.5, ord=1, max_ema_growth=None), LR(0.01)],
    "NormalizeByEMA": lambda: [NormalizeByEMA(), LR(0.01)],
    "NormalizeByEMA_global": lambda: [NormalizeByEMA(0.8, tensorwise=False, max_ema_growth=1.2), LR(0.01)],
    "ClipValueByEMA": lambda: [ClipValueByEMA(), LR(0.01)],
    "ClipValueByEMA_tfm_inner": lambda: [ClipValueByEMA(0.9, ema_init="update", ema_tfm=Mul(2.0),
                                                        inner=HeavyBall(0.9)), LR(0.01)],
    "ClipNormGrowth": lambda: [ClipNormGrowth(), LR(0.01)],
    "ClipNormGrowth_add_global": lambda: [ClipNormGrowth(add=0.1, mul=None, ord=1, parameterwise=False),
                                          LR(0.01)],
    "ClipNormGrowth_no_floor": lambda: [ClipNormGrowth(add=0.5, mul=1.2, min_value=None, max_decay=None),
                                        LR(0.01)],
    "ClipValueGrowth": lambda: [ClipValueGrowth(), LR(0.01)],
    "ClipValueGrowth_add_no_decay": lambda: [ClipValueGrowth(add=0.1, min_value=None, max_decay=None),
                                             LR(0.01)],
    "ClipValueGrowth_after_momentum": lambda: [EMA(0.5), ClipValueGrowth(mul=1.1, target="update"), LR(0.01)],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    check_module(SWEEP[name], n_steps=5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_cuda(name: str) -> None:
    check_module(SWEEP[name], n_steps=5, device="cuda")


# ----------------------------------------------------------------------------------------------- helpers
def _feed(module: Module, updates: Sequence[Sequence[torch.Tensor]], params: list[torch.Tensor] | None = None
          ) -> list[list[torch.Tensor]]:
    """Steps ``module`` once per entry of ``updates`` (same parameters every time); returns copies of the outputs."""
    if params is None:
        params = [torch.zeros_like(u) for u in updates[0]]
    outs = []
    for k, us in enumerate(updates):
        var = Var(params=params, closure=None, model=None, current_step=k)
        var.grad = [u.clone() for u in us]
        var.update = [u.clone() for u in us]
        outs.append([o.clone() for o in module.step(var).update])
    return outs


SCALES = [1.0, 1.0, 30.0, 1.0, 0.01, 0.5, 80.0, 2.0, 1e-3, 1.0, 5.0, 5.0, 0.2, 40.0]


def _spiky_updates(shapes=((3, 2), (4,), ()), seed: int = 0) -> list[list[torch.Tensor]]:
    """Random float64 updates whose size jumps up and down by orders of magnitude (per tensor too)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t, s in enumerate(SCALES):
        out.append([torch.randn(sh, generator=g, dtype=torch.float64) * s * (1 + i * (t % 3)) for i, sh in
                    enumerate(shapes)])
    return out


def _per_tensor_or_global(seq: list[list[torch.Tensor]], tensorwise: bool, reference: Callable
                          ) -> list[list[torch.Tensor]]:
    """Runs a reference written for a sequence of 1-D vectors per tensor, or on all tensors concatenated."""
    shapes = [t.shape for t in seq[0]]
    if tensorwise:
        per_tensor = [reference([us[i].reshape(-1) for us in seq]) for i in range(len(shapes))]
        return [[per_tensor[i][t].view(shapes[i]) for i in range(len(shapes))] for t in range(len(seq))]
    outs = reference([torch.cat([u.reshape(-1) for u in us]) for us in seq])
    result = []
    for vec in outs:
        parts, offset = [], 0
        for sh in shapes:
            n = math.prod(sh)
            parts.append(vec[offset:offset + n].view(sh))
            offset += n
        result.append(parts)
    return result


# ----------------------------------------------------------------------------------------------- Centralize
def test_centralize_gc_check():
    W = torch.randn(5, 7, dtype=torch.float64)
    (out,) = _feed(Centralize(dim=0, inverse_dims=True), [[W]])[0]
    torch.testing.assert_close(out, W - W.mean(dim=1, keepdim=True))
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(5, dtype=torch.float64), atol=1e-15, rtol=0)


def test_centralize_slicing():
    a, b, c = torch.randn(6, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64), \
        torch.randn((), dtype=torch.float64)
    one = torch.randn(1, dtype=torch.float64)
    # dim=None: each tensor over all of its own dims; a 1-D first tensor doesn't change later slicing;
    # 0-d and one-element tensors are below min_size=2 and untouched
    out = _feed(Centralize(), [[a, b, c, one]])[0]
    torch.testing.assert_close(out[0], a - a.mean())
    torch.testing.assert_close(out[1], b - b.mean())
    assert torch.equal(out[2], c) and torch.equal(out[3], one)
    # an int dim, dims beyond ndim ignored, a sequence of dims
    out = _feed(Centralize(dim=(1, 5)), [[a, b]])[0]
    torch.testing.assert_close(out[1], b - b.mean(dim=1, keepdim=True))
    assert torch.equal(out[0], a)  # a 1-D tensor has no dim 1: its slices are single elements (< min_size)
    out = _feed(Centralize(dim=[0, 2]), [[b]])[0]
    torch.testing.assert_close(out[0], b - b.mean(dim=(0, 2), keepdim=True))
    out = _feed(Centralize(dim=[0, 2], inverse_dims=True), [[b]])[0]
    torch.testing.assert_close(out[0], b - b.mean(dim=1, keepdim=True))
    # min_size: slices of 2 elements are skipped with min_size=3
    out = _feed(Centralize(dim=0, min_size=3), [[b]])[0]
    assert torch.equal(out[0], b)
    # with min_size=1 single elements are centralized to 0
    out = _feed(Centralize(min_size=1), [[c, one]])[0]
    assert torch.equal(out[0], torch.zeros(())) and torch.equal(out[1], torch.zeros(1, dtype=torch.float64))


def test_centralize_global():
    ts = [torch.randn(3, 2, dtype=torch.float64) + 5, torch.randn(4, dtype=torch.float64) - 1]
    mean = torch.cat([t.ravel() for t in ts]).mean()
    out = _feed(Centralize(dim="global"), [ts])[0]
    assert_all_close(out, [t - mean for t in ts], rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(torch.cat([o.ravel() for o in out]).mean(), torch.zeros((), dtype=torch.float64),
                               atol=1e-14, rtol=0)


# ----------------------------------------------------------------------------------------------- EMA norms
def _reference_ema_norm(seq: list[torch.Tensor], beta: float, eps: float, growth: float | None, ema_init: str,
                        clip: bool, ord: float = 2) -> list[torch.Tensor]:
    """ClipNormByEMA / NormalizeByEMA on one vector, written plainly from the catalog."""
    ema, prev, out = None, None, []
    for u in seq:
        if ema is None and ema_init == "update":
            ema = u.clone()
        else:
            ema = beta * (torch.zeros_like(u) if ema is None else ema) + (1 - beta) * u
        n_ema = float(torch.linalg.vector_norm(ema, ord))
        if growth is not None:
            if prev is None:
                prev = n_ema
            allowed = max(prev * growth, 1e-6)
            if n_ema > allowed:
                ema = ema * (allowed / n_ema)
                n_ema = allowed
            prev = n_ema
        r = float(torch.linalg.vector_norm(u, ord)) / max(n_ema, eps)
        r = max(r, 1.0) if clip else max(r, eps)
        out.append(u / r)
    return out


@pytest.mark.parametrize("cls", [ClipNormByEMA, NormalizeByEMA])
@pytest.mark.parametrize("tensorwise", [True, False])
@pytest.mark.parametrize("kwargs", [{}, {"ema_init": "update", "max_ema_growth": 1.2, "beta": 0.7},
                                    {"max_ema_growth": None, "beta": 0.5, "ord": 1}])
def test_ema_norm_matches_loop_reference(cls, tensorwise, kwargs):
    seq = _spiky_updates()
    module = cls(tensorwise=tensorwise, **kwargs)
    outs = _feed(module, seq)
    ref = lambda s: _reference_ema_norm(s, beta=kwargs.get("beta", 0.99), eps=1e-6,
                                        growth=kwargs.get("max_ema_growth", 1.5), ema_init=kwargs.get("ema_init", "zeros"),
                                        clip=cls is ClipNormByEMA, ord=kwargs.get("ord", 2))
    expected = _per_tensor_or_global(seq, tensorwise, ref)
    for t, (o, e) in enumerate(zip(outs, expected)):
        assert_all_close(o, e, rtol=1e-10, atol=1e-13, msg=f"step {t}")


def test_clip_norm_by_ema_checks():
    u = [torch.randn(3, 2, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    out = _feed(ClipNormByEMA(), [u])[0]
    assert_all_close(out, [0.01 * t for t in u], rtol=1e-12)
    for out in _feed(ClipNormByEMA(ema_init="update"), [u] * 4):
        assert_all_close(out, u, rtol=1e-12)


def test_clip_norm_by_ema_never_exceeds_ema_norm_and_limits_growth():
    module = ClipNormByEMA(beta=0.5)
    params = [torch.zeros(4, dtype=torch.float64)]
    prev_norm = None
    for s in SCALES:
        u = torch.randn(4, dtype=torch.float64) * s
        (out,) = _feed(module, [[u]], params=params)[0]
        ema_norm = float(module.state[params[0]]["ema"].norm())
        assert float(out.norm()) <= ema_norm * (1 + 1e-12)
        if prev_norm is not None:
            assert ema_norm <= max(prev_norm * 1.5, 1e-6) * (1 + 1e-12)
        prev_norm = ema_norm
        torch.testing.assert_close(module.state[params[0]]["prev_ema_norm"], torch.tensor(ema_norm, dtype=torch.float64))


def test_normalize_by_ema_check():
    u = torch.randn(6, dtype=torch.float64)
    outs = _feed(NormalizeByEMA(ema_init="update"), [[u], [10 * u]])
    torch.testing.assert_close(outs[0][0].norm(), u.norm())
    torch.testing.assert_close(outs[1][0].norm(), 1.09 * u.norm())


def test_ema_norm_inner_sees_statistics_of_raw_update():
    """Statistics come from u; the divisor is applied to inner(u) (here 3u via LR(3))."""
    seq = _spiky_updates(shapes=((4,),))
    outs = _feed(ClipNormByEMA(beta=0.6, inner=LR(3.0)), seq)
    ref = _per_tensor_or_global(seq, True, lambda s: _reference_ema_norm(s, 0.6, 1e-6, 1.5, "zeros", clip=True))
    for o, e in zip(outs, ref):
        assert_all_close(o, [3 * x for x in e], rtol=1e-10)


def test_ema_norm_zero_first_update_can_recover():
    """A zero first update must not freeze the EMA at zero, also for one global norm (the 1e-6 floor)."""
    for tensorwise in (True, False):
        outs = _feed(ClipNormByEMA(beta=0.5, tensorwise=tensorwise), [[torch.zeros(3)]] + [[torch.ones(3)]] * 60)
        assert all(torch.isfinite(o[0]).all() for o in outs)
        # the allowed norm grows 1.5x per step from the 1e-6 floor: ~1 after ~35 steps
        torch.testing.assert_close(outs[-1][0], torch.ones(3), rtol=1e-4, atol=0)


# ----------------------------------------------------------------------------------------------- EMA values
def test_clip_value_by_ema_matches_reference():
    seq = _spiky_updates()
    outs = _feed(ClipValueByEMA(beta=0.8, ema_tfm=LR(2.0)), seq)
    ema = None
    for t, us in enumerate(seq):
        ema = [0.2 * u.abs() if ema is None else 0.8 * m + 0.2 * u.abs() for m, u in zip(ema or [None] * len(us), us)]
        expected = [torch.clamp(u, -2 * m, 2 * m) for u, m in zip(us, ema)]
        assert_all_close(outs[t], expected, rtol=1e-12, atol=1e-15, msg=f"step {t}")


def test_clip_value_by_ema_checks():
    u = torch.randn(5, dtype=torch.float64)
    (out,) = _feed(ClipValueByEMA(), [[u]])[0]
    torch.testing.assert_close(out, 0.01 * u)
    module = ClipValueByEMA(ema_init="update", ema_tfm=LR(0.5), inner=LR(10.0))
    params = [torch.zeros(5, dtype=torch.float64)]
    (out,) = _feed(module, [[u]], params=params)[0]
    torch.testing.assert_close(out, 0.5 * u)  # clamp(10u, ±0.5|u|)
    torch.testing.assert_close(module.state[params[0]]["ema"], u.abs())  # ema_tfm worked on a copy


# ----------------------------------------------------------------------------------------------- growth
def _reference_norm_growth(seq: list[torch.Tensor], add, mul, min_value, max_decay, ord: float = 2
                           ) -> list[torch.Tensor]:
    prev, out = None, []
    for u in seq:
        n = float(torch.linalg.vector_norm(u, ord))
        if prev is None:
            prev = n if min_value is None else max(n, min_value)
            out.append(u.clone())
            continue
        r = 1.0
        if add is not None and n > prev + add:
            r = n / (prev + add)
        if mul is not None and n > prev * mul:
            r = max(r, n / (prev * mul))
        if min_value is not None:
            r = max(r, min_value)
        out.append(u / r)
        new_prev = n / r
        if max_decay is not None and n / prev < 1 / max_decay:
            new_prev = prev / max_decay
        if min_value is not None:
            new_prev = max(new_prev, min_value)
        prev = new_prev
    return out


GROWTH_SETTINGS = [
    dict(add=None, mul=1.5, min_value=1e-4, max_decay=2),
    dict(add=0.3, mul=None, min_value=1e-4, max_decay=None),
    dict(add=0.5, mul=2.0, min_value=0.05, max_decay=1.5),
    dict(add=1.0, mul=1.1, min_value=None, max_decay=3),
]


@pytest.mark.parametrize("settings", GROWTH_SETTINGS)
@pytest.mark.parametrize("parameterwise", [True, False])
@pytest.mark.parametrize("ord", [2, 1, math.inf])
def test_clip_norm_growth_matches_loop_reference(settings, parameterwise, ord):
    seq = _spiky_updates()
    outs = _feed(ClipNormGrowth(**settings, ord=ord, parameterwise=parameterwise), seq)
    expected = _per_tensor_or_global(seq, parameterwise, lambda s: _reference_norm_growth(s, **settings, ord=ord))
    for t, (o, e) in enumerate(zip(outs, expected)):
        assert_all_close(o, e, rtol=1e-10, atol=1e-13, msg=f"step {t}")


def test_clip_norm_growth_checks():
    u = [torch.randn(3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    for parameterwise in (True, False):
        outs = _feed(ClipNormGrowth(parameterwise=parameterwise), [u, [10 * t for t in u]])
        assert_all_close(outs[0], u, rtol=0)
        assert_all_close(outs[1], [1.5 * t for t in u], rtol=1e-12)
    seq = _spiky_updates()
    for o, us in zip(_feed(ClipNormGrowth(add=None, mul=None), seq), seq):
        assert_all_equal_lists(o, us)


def assert_all_equal_lists(a, b):
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def _reference_value_growth(seq: list[list[float]], add, mul, min_value, max_decay) -> list[list[float]]:
    prev, out = None, []
    for u in seq:
        if prev is None:
            prev = list(u)
            out.append(list(u))
            continue
        new_u, new_prev = [], []
        for ui, pi in zip(u, prev):
            if add is not None and abs(ui) - abs(pi) > add:
                ui = math.copysign(abs(pi) + add, ui)
            p = max(abs(pi), min_value) if min_value is not None else abs(pi)
            rho = max(abs(ui) / p, 1e-8)
            if mul is not None and rho > mul:
                ui = ui / (rho / mul)
            new_u.append(ui)
            new_prev.append(pi / max_decay if max_decay is not None and rho < 1 / max_decay else ui)
        out.append(new_u)
        prev = new_prev
    return out


@pytest.mark.parametrize("settings", GROWTH_SETTINGS)
def test_clip_value_growth_matches_loop_reference(settings):
    seq = _spiky_updates(shapes=((3, 2), (5,)))
    outs = _feed(ClipValueGrowth(**settings), seq)
    for i in range(2):
        ref = _reference_value_growth([us[i].reshape(-1).tolist() for us in seq], **settings)
        for t, (o, e) in enumerate(zip(outs, ref)):
            torch.testing.assert_close(o[i].reshape(-1), torch.tensor(e, dtype=torch.float64), rtol=1e-12,
                                       atol=1e-15, msg=lambda m, t=t: f"step {t}: {m}")


def test_clip_value_growth_check():
    u = torch.tensor([1.0, -2.0, 1e-4, -0.5], dtype=torch.float64)
    outs = _feed(ClipValueGrowth(), [[u], [10 * u]])
    assert torch.equal(outs[0][0], u)
    torch.testing.assert_close(outs[1][0], 1.5 * u, rtol=1e-14, atol=0)


def test_clip_value_growth_zero_reference_without_min_value_is_finite():
    outs = _feed(ClipValueGrowth(min_value=None), [[torch.zeros(3)], [torch.tensor([0.0, 1.0, -1.0])]])
    # an element that was 0 may only grow by a factor: it stays within mul·tiny of 0, and no 0/0 occurs
    assert torch.isfinite(outs[1][0]).all()
    assert float(outs[1][0].abs().max()) <= 1.5 * torch.finfo(torch.float32).tiny


# ----------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("make", [
    lambda: Centralize(dim="rows"), lambda: Centralize(min_size=-1), lambda: Centralize(target="x"),
    lambda: ClipNormByEMA(beta=1.5), lambda: ClipNormByEMA(ord="l7"), lambda: ClipNormByEMA(eps=-1),
    lambda: ClipNormByEMA(max_ema_growth=0), lambda: ClipNormByEMA(ema_init="ones"),
    lambda: NormalizeByEMA(beta=-0.1), lambda: ClipValueByEMA(beta=2), lambda: ClipValueByEMA(ema_init="x"),
    lambda: ClipNormGrowth(add=-1), lambda: ClipNormGrowth(mul=0), lambda: ClipNormGrowth(min_value=-1),
    lambda: ClipNormGrowth(max_decay=0.5), lambda: ClipNormGrowth(ord="2"), lambda: ClipValueGrowth(mul=-1),
    lambda: ClipValueGrowth(add="a"), lambda: ClipValueGrowth(target="x"),
])
def test_invalid_arguments_fail_at_construction(make):
    with pytest.raises((ValueError, TypeError)):
        make()


def test_errors_name_the_class():
    with pytest.raises(ValueError, match="ClipNormByEMA"):
        ClipNormByEMA(beta=2)
    with pytest.raises(ValueError, match="NormalizeByEMA"):
        NormalizeByEMA(ord="l7")
    with pytest.raises(ValueError, match="ClipValueGrowth"):
        ClipValueGrowth(max_decay=0.1)
