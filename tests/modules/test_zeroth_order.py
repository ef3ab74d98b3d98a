"""CD: the index sequences, every proposal rule and the adaptive steps against a plainly written loop of the algorithm
(Python floats), evaluation counts, state, and the shared sweep."""
from __future__ import annotations

import math
import random

import pytest
import torch
from sweep import check_module, roundtrip

import torchzero as tz
from torchzero.modules.zeroth_order.cd import CD, adapt_h, coordinate_index

LR = tz.m.LR

SWEEP = {
    "CD": lambda: [CD(), LR(0.1)],
    "CD_cyclic_not_adaptive": lambda: [CD(index="cyclic", adaptive=False), LR(0.1)],
    "CD_random": lambda: [CD(index="random"), LR(0.1)],
    "CD_sign": lambda: [CD(grad=False), LR(0.01)],
    "CD_twopoint": lambda: [CD(threepoint=False), LR(0.1)],
    "CD_twopoint_sign": lambda: [CD(threepoint=False, grad=False, index="random"), LR(0.01)],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    check_module(SWEEP[name], needs_closure=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_cuda(name: str) -> None:
    check_module(SWEEP[name], needs_closure=True, device="cuda")


def test_index_sequences():
    """Catalog check: for n=3, 'cyclic2' visits 0,1,2,2,1,0,0,1,…; 'cyclic' 0,1,2,0,…; 'random' follows
    random.Random(0)."""
    assert [coordinate_index(t, 3, "cyclic2") for t in range(10)] == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2]
    assert [coordinate_index(t, 3, "cyclic") for t in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert [coordinate_index(t, 1, "cyclic2") for t in range(3)] == [0, 0, 0]
    rng, ref = random.Random(0), random.Random(0)
    assert [coordinate_index(t, 5, "random", rng) for t in range(20)] == [ref.randrange(5) for _ in range(20)]


def _f(v: list[float]) -> float:
    """A smooth, non-separable function of a plain list (the plain loop's objective)."""
    s = sum(v)
    return sum((vi - 0.3 * i) ** 2 + 0.1 * vi**4 for i, vi in enumerate(v)) + 0.2 * math.sin(s) + 0.05 * s**2


def _tz_f(params: list[torch.Tensor]) -> torch.Tensor:
    v = torch.cat([p.reshape(-1) for p in params])
    i = torch.arange(v.numel(), dtype=v.dtype)
    s = v.sum()
    return ((v - 0.3 * i) ** 2 + 0.1 * v**4).sum() + 0.2 * torch.sin(s) + 0.05 * s**2


def _plain_cd(x: list[float], n_steps: int, lr: float, h: float, grad: bool, adaptive: bool, index: str,
              threepoint: bool) -> tuple[list[float], list[float], list[int]]:
    """CD followed by LR(lr), written as a plain loop over Python floats from the catalog's description."""
    x = list(x)
    n = len(x)
    h_vec = [h] * n
    rng = random.Random(0)
    visited = []
    for t in range(n_steps):
        if index == "cyclic":
            i = t % n
        elif index == "cyclic2":
            k = t % (2 * n)
            i = k if k < n else 2 * n - 1 - k
        else:
            i = rng.randrange(n)
        visited.append(i)
        hi = h_vec[i] if (adaptive and threepoint) else h
        f0 = _f(x)
        xp = list(x)
        xp[i] += hi
        fp = _f(xp)
        if threepoint:
            xm = list(x)
            xm[i] -= hi
            fm = _f(xm)
            if grad:
                entry = (fp - fm) / (2 * hi)
            elif f0 < fp and f0 < fm:
                entry = 0.0
            else:
                entry = -1.0 if fp < fm else 1.0
            if adaptive:
                if f0 < fp and f0 < fm:
                    h_vec[i] = max(hi / 2, 1e-10)
                elif abs(f0 - fm) < 1e-12 or abs((fp - f0) / (f0 - fm) - 1) < 1e-2:
                    h_vec[i] = min(hi * 2, 1e10)
        else:
            entry = (fp - f0) / hi if grad else float((fp > f0) - (fp < f0))
        x[i] -= lr * entry
    return x, h_vec, visited


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("index", ["cyclic", "cyclic2", "random"])
@pytest.mark.parametrize("threepoint", [True, False])
def test_cd_matches_plain_loop(grad, adaptive, index, threepoint):
    lr = 0.05 if grad else 0.2
    h = 0.3 if adaptive else 1e-2  # a large initial step makes the adaptive rule halve/double during the run
    x0 = [0.5, -1.0, 2.0, 0.1, 1.2]
    v = torch.tensor(x0, dtype=torch.float64)
    params = [v[:2].clone(), v[2].clone(), v[3:].reshape(1, 2).clone()]  # shapes (2,), (), (1, 2)
    params = [p.requires_grad_() for p in params]
    module = CD(h=h, grad=grad, adaptive=adaptive, index=index, threepoint=threepoint)
    opt = tz.Modular(params, module, LR(lr))
    visited = []
    for _ in range(40):
        opt.step(lambda backward=True: _tz_f(params))
        visited.append(module.global_state["idx"])
    x_ref, h_ref, visited_ref = _plain_cd(x0, 40, lr, h, grad, adaptive, index, threepoint)
    assert visited == visited_ref and len(set(visited)) == 5
    x = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close(x, torch.tensor(x_ref, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    if adaptive and threepoint:
        h_vec = torch.cat([module.state[p]["h_vec"].reshape(-1) for p in params])
        assert len(set(h_ref)) > 1  # the rule changed some steps
        torch.testing.assert_close(h_vec, torch.tensor(h_ref, dtype=torch.float64), rtol=1e-12, atol=0)
    else:
        assert all("h_vec" not in module.state[p] for p in params)


def test_adapt_h_rule():
    """Halve when f₀ is bracketed, double when locally linear (|f₀ − f₋| < 1e-12 or |(f₊ − f₀)/(f₀ − f₋) − 1| < 1e-2),
    else keep; clamped to [1e-10, 1e10]."""
    t = lambda v: torch.tensor(v, dtype=torch.float64)

    def new_h(h, f0, fp, fm):
        return adapt_h(t(h), t(f0), t(fp), t(fm)).item()

    assert new_h(0.1, 1.0, 0.0, 3.0) == 0.1  # not bracketed, ratio (0 − 1)/(1 − 3) = 0.5
    assert new_h(0.1, 0.0, 1.0, 1.0) == 0.05  # bracketed
    assert new_h(1.5e-10, 0.0, 1.0, 1.0) == 1e-10
    assert new_h(0.1, 1.0, 2.0, 0.0) == 0.2  # exactly linear: ratio 1
    assert new_h(0.1, 1.0, 2.009, 0.0) == 0.2  # ratio 1.009
    assert new_h(0.1, 1.0, 2.011, 0.0) == 0.1  # ratio 1.011
    assert new_h(0.1, 1.0, 1.0 + 0.05, 1.0 - 0.5e-12) == 0.2  # |f₀ − f₋| < 1e-12
    assert new_h(0.1, 1.0, 1.0 + 0.05, 1.0 - 2e-12) == 0.1
    assert new_h(0.8e10, 1.0, 2.0, 0.0) == 1e10
    assert new_h(0.1, 1.0, float("nan"), 0.0) == 0.1


def test_cd_entry_is_central_difference():
    """Catalog check: with grad=True the single non-zero entry is the central difference along that coordinate."""
    params = [torch.tensor([[0.5, -1.0], [2.0, 0.1]], dtype=torch.float64, requires_grad=True)]
    module = CD(h=1e-3, adaptive=False)
    for t in range(3):
        var = tz.core.Var(params=params, closure=lambda backward=True: _tz_f(params), model=None, current_step=t)
        update = module.step(var).update[0].reshape(-1)
        i = module.global_state["idx"]
        assert i == t
        x = params[0].detach().reshape(-1).tolist()
        xp, xm = list(x), list(x)
        xp[i] += 1e-3
        xm[i] -= 1e-3
        expected = torch.zeros(4, dtype=torch.float64)
        expected[i] = (_f(xp) - _f(xm)) / 2e-3
        torch.testing.assert_close(update, expected, rtol=1e-10, atol=0)


def test_sign_proposal_cases_and_nan_policy():
    def entry(f, x=0.0, **kw):
        p = torch.tensor([x], dtype=torch.float64, requires_grad=True)
        var = tz.core.Var(params=[p], closure=lambda backward=True: f(p[0]), model=None, current_step=0)
        out = CD(h=0.1, grad=False, adaptive=False, **kw).step(var).update[0].item()
        assert p.item() == x
        return out

    assert entry(lambda x: x**2) == 0.0  # f₀ bracketed: no proposal
    assert entry(lambda x: (x - 1) ** 2) == -1.0  # f₊ < f₋: the update −1 moves x up
    assert entry(lambda x: (x + 1) ** 2) == 1.0
    # a NaN is treated as worse than anything
    assert entry(lambda x: torch.where(x < 0, torch.nan, -x)) == -1.0
    assert entry(lambda x: torch.where(x > 0, torch.nan, x)) == 1.0
    assert entry(lambda x: (x - 1) ** 2, threepoint=False) == -1.0
    assert entry(lambda x: (x + 1) ** 2, threepoint=False) == 1.0


@pytest.mark.parametrize("kw, expected", [
    (dict(adaptive=False), 2),  # f₊, f₋ (f₀ is not needed)
    (dict(), 3),  # adaptive needs f₀
    (dict(grad=False, adaptive=False), 3),
    (dict(threepoint=False), 2),
])
def test_num_evaluations(kw, expected):
    params = [torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)]
    opt = tz.Modular(params, CD(**kw), LR(0.1))
    for _ in range(3):
        before = opt.num_evaluations
        opt.step(lambda backward=True: _tz_f(params))
        assert opt.num_evaluations - before == expected


def test_params_restored_and_grad_untouched():
    params = [torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)]
    x0 = params[0].detach().clone()
    var = tz.core.Var(params=params, closure=lambda backward=True: _tz_f(params), model=None, current_step=0)
    CD(h=0.1).step(var)
    assert torch.equal(params[0].detach(), x0)
    assert params[0].grad is None


def test_random_index_state_dict_and_reset():
    """The random generator's state is saved and restored; reset() re-seeds it (so a reset optimizer equals a fresh
    one)."""
    def run(opt, params, n):
        for _ in range(n):
            opt.step(lambda backward=True: _tz_f(params))

    make = lambda: [torch.tensor([0.5, -1.0, 2.0, 0.3, 0.7], dtype=torch.float64, requires_grad=True)]
    pa = make()
    ma = CD(index="random")
    opt_a = tz.Modular(pa, ma, LR(0.1))
    run(opt_a, pa, 4)
    sd = roundtrip(opt_a.state_dict())
    pb = [pa[0].detach().clone().requires_grad_()]
    mb = CD(index="random")
    opt_b = tz.Modular(pb, mb, LR(0.1))
    opt_b.load_state_dict(sd)
    seq_a, seq_b = [], []
    for _ in range(6):
        run(opt_a, pa, 1)
        run(opt_b, pb, 1)
        seq_a.append(ma.global_state["idx"])
        seq_b.append(mb.global_state["idx"])
    assert seq_a == seq_b and len(set(seq_a)) > 1
    assert torch.equal(pa[0], pb[0])

    ma.reset()
    pc = [pa[0].detach().clone().requires_grad_()]
    mc = CD(index="random")
    opt_c = tz.Modular(pc, mc, LR(0.1))
    run(opt_a, pa, 3)
    run(opt_c, pc, 3)
    assert torch.equal(pa[0], pc[0])


@pytest.mark.parametrize("make, exc", [
    (lambda: CD(h=0), ValueError),
    (lambda: CD(h=-1.0), ValueError),
    (lambda: CD(index="shuffle"), ValueError),
    (lambda: CD(grad=1), TypeError),
    (lambda: CD(threepoint="yes"), TypeError),
    (lambda: CD(adaptive=None), TypeError),
])
def test_invalid_arguments(make, exc):
    with pytest.raises(exc, match="CD"):
        make()


def test_signature_matches_catalog():
    import inspect
    assert [(p.name, p.default) for p in inspect.signature(CD).parameters.values()] == [
        ("h", 0.001), ("grad", True), ("adaptive", True), ("index", "cyclic2"), ("threepoint", True)]
