"""``GaLore``: the sweep, a plainly written loop of the paper's algorithm (projected Adam), pass-through
equivalence with Adam, the child's projected state shapes, non-finite updates and argument validation."""
from __future__ import annotations

import pytest
import torch
from sweep import (
    Objective,
    assert_all_close,
    assert_all_equal,
    check_module,
    clone_params,
    make_params,
    roundtrip,
    step_n,
)

import torchzero as tz
from torchzero.modules.adaptive.adam import Adam
from torchzero.modules.ops.utility import Identity
from torchzero.modules.projections.galore import GaLore
from torchzero.modules.step_size.lr import LR

SHAPES = [(6, 4), (3, 8), (5, 5), (4, 2, 3), (2, 12), (7,), ()]


def test_sweep() -> None:
    check_module(lambda: [GaLore(Adam(), rank=1, update_freq=2), LR(0.01)])


def test_sweep_scaled_children_chain() -> None:
    check_module(lambda: [GaLore([tz.m.HeavyBall(0.9), Adam()], rank=1, update_freq=3, scale=0.5), LR(0.01)])


def _reference_galore_adam(x0: list[torch.Tensor], f, steps: int, rank: int, update_freq: int, scale: float,
                           lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
                           ) -> list[torch.Tensor]:
    """GaLore-Adam written plainly, one parameter at a time (Zhao et al. 2024, Algorithm 1)."""
    params = clone_params(x0)
    exp_avg: list[torch.Tensor | None] = [None] * len(params)
    exp_avg_sq: list[torch.Tensor | None] = [None] * len(params)
    projectors: list[torch.Tensor | None] = [None] * len(params)
    for t in range(steps):
        for p in params:
            p.grad = None
        f(params).backward()
        with torch.no_grad():
            for i, p in enumerate(params):
                g = p.grad.clone()
                projected = p.ndim >= 2 and min(p.shape[0], g[0].numel()) > rank
                if projected:
                    G = g.reshape(p.shape[0], -1)
                    m, n = G.shape
                    if t % update_freq == 0:
                        U, S, Vh = torch.linalg.svd(G, full_matrices=False)
                        projectors[i] = U[:, :rank] if m <= n else Vh[:rank, :].T
                    P = projectors[i]
                    R = P.T @ G if m <= n else G @ P
                else:
                    R = g
                if exp_avg[i] is None:
                    exp_avg[i] = torch.zeros_like(R)
                    exp_avg_sq[i] = torch.zeros_like(R)
                exp_avg[i] = beta1 * exp_avg[i] + (1 - beta1) * R
                exp_avg_sq[i] = beta2 * exp_avg_sq[i] + (1 - beta2) * R * R
                m_hat = exp_avg[i] / (1 - beta1 ** (t + 1))
                v_hat = exp_avg_sq[i] / (1 - beta2 ** (t + 1))
                N = m_hat / (v_hat.sqrt() + eps)
                if projected:
                    N = (P @ N if m <= n else N @ P.T).reshape(p.shape) * scale
                p -= lr * N
    return params


@pytest.mark.parametrize("use_closure", [True, False])
@pytest.mark.parametrize("rank,update_freq,scale", [(2, 3, 0.5), (1, 1, 1.0), (3, 7, 2.0)])
def test_matches_plain_loop(use_closure: bool, rank: int, update_freq: int, scale: float) -> None:
    x0 = make_params(torch.float64, shapes=SHAPES)
    f = Objective(x0)
    params = clone_params(x0)
    opt = tz.Modular(params, GaLore(Adam(), rank=rank, update_freq=update_freq, scale=scale), LR(0.05))
    step_n(opt, params, f, 20, use_closure=use_closure)
    ref = _reference_galore_adam(x0, f, 20, rank, update_freq, scale, 0.05)
    assert_all_close(params, ref, rtol=1e-6, atol=1e-12, msg="GaLore vs plain loop")
    # the projection actually changes the trajectory of the projected parameters (the test can fail)
    adam = clone_params(x0)
    step_n(tz.Modular(adam, Adam(), Identity(), LR(0.05)), adam, f, 20, use_closure=use_closure)
    assert not torch.allclose(params[0], adam[0], rtol=1e-3)
    # pass-through parameters: (2, 12) with rank >= 2, (7,), ()
    assert sum(not torch.allclose(p, a) for p, a in zip(params, adam)) >= 4


@pytest.mark.parametrize("use_closure", [True, False])
def test_full_rank_passes_through(use_closure: bool) -> None:
    x0 = make_params(torch.float64)  # the sweep shapes; every min(m, n) <= 3
    x0 += make_params(torch.float64, shapes=[(3, 5), (4, 3), (3, 3)], seed=1)
    f = Objective(x0)
    a = clone_params(x0)
    step_n(tz.Modular(a, GaLore(Adam(), rank=3, update_freq=1, scale=0.3), LR(0.1)), a, f, 15, use_closure)
    b = clone_params(x0)
    step_n(tz.Modular(b, Adam(), Identity(), LR(0.1)), b, f, 15, use_closure)
    assert_all_equal(a, b, "GaLore(Adam()) with rank >= min(m, n)")


def test_child_state_has_projected_shape() -> None:
    x0 = make_params(torch.float64, shapes=SHAPES)
    f = Objective(x0)
    params = clone_params(x0)
    adam = Adam()
    galore = GaLore(adam, rank=2, update_freq=2)
    opt = tz.Modular(params, galore, LR(0.01))
    step_n(opt, params, f, 3, use_closure=True)
    expected = [(6, 2), (2, 8), (2, 5), (2, 6), (2, 12), (7,), ()]
    shapes = [tuple(adam.state[q]["exp_avg"].shape) for q in galore._projected_params]
    assert shapes == expected
    assert [tuple(adam.state[q]["exp_avg_sq"].shape) for q in galore._projected_params] == expected
    projectors = [galore.state[p].get("projector") for p in params]
    assert [None if P is None else tuple(P.shape) for P in projectors] == [(2, 4), (3, 2), (5, 2), (4, 2),
                                                                           None, None, None]
    for P in projectors[:4]:
        torch.testing.assert_close(P @ P.mT if P.shape[0] == 2 else P.mT @ P, torch.eye(2, dtype=torch.float64))


def test_projector_refreshed_every_update_freq_steps_and_saved() -> None:
    x0 = make_params(torch.float64, shapes=[(4, 6)])
    f = Objective(x0)
    params = clone_params(x0)
    galore = GaLore(Adam(), rank=2, update_freq=3)
    opt = tz.Modular(params, galore, LR(0.1))
    seen = []
    for _ in range(7):
        step_n(opt, params, f, 1, use_closure=True)
        seen.append(galore.state[params[0]]["projector"].clone())
    changed = [not torch.equal(a, b) for a, b in zip(seen[:-1], seen[1:])]
    assert changed == [False, False, True, False, False, True]  # refreshes at steps 0, 3, 6
    sd = roundtrip(opt.state_dict())
    torch.testing.assert_close(sd["modules"][0]["state"][0]["projector"], seen[-1], rtol=0, atol=0)
    # a fresh optimizer loaded mid-period keeps the saved projector (no refresh at step 7) and continues identically
    params2 = clone_params(params)
    galore2 = GaLore(Adam(), rank=2, update_freq=3)
    opt2 = tz.Modular(params2, galore2, LR(0.1))
    opt2.load_state_dict(sd)
    step_n(opt, params, f, 1, use_closure=True)
    step_n(opt2, params2, f, 1, use_closure=True)
    assert torch.equal(galore2.state[params2[0]]["projector"], seen[-1])
    assert_all_equal(params, params2, "after state dict round trip")


def test_non_finite_update_keeps_projector_and_retries() -> None:
    p = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    galore = GaLore(Identity(), rank=2, update_freq=100)
    opt = tz.Modular([p], galore, LR(0.1))
    # first step non-finite: the first coordinate axes are used, retried next step
    p.grad = torch.full_like(p, float("nan"))
    opt.step()
    torch.testing.assert_close(galore.state[p]["projector"], torch.eye(4, 2, dtype=torch.float64))
    assert galore.state[p]["retry"]
    g = torch.randn(4, 6, dtype=torch.float64)
    p.data = torch.randn(4, 6, dtype=torch.float64)
    p.grad = g.clone()
    before = p.detach().clone()
    opt.step()
    P = torch.linalg.svd(g, full_matrices=False)[0][:, :2]
    torch.testing.assert_close(galore.state[p]["projector"], P)
    torch.testing.assert_close(p.detach(), before - 0.1 * P @ P.T @ g)
    assert "retry" not in galore.state[p]
    # a later non-finite refresh (forced by retry semantics) keeps the previous projector
    galore.state[p]["retry"] = True
    p.grad = g.clone()
    p.grad[0, 0] = float("inf")
    opt.step()
    torch.testing.assert_close(galore.state[p]["projector"], P)
    assert galore.state[p]["retry"]


def test_half_precision_svd_in_float32() -> None:
    p = torch.randn(8, 5, dtype=torch.bfloat16, requires_grad=True)
    galore = GaLore(Adam(), rank=2, update_freq=1)
    opt = tz.Modular([p], galore, LR(0.01))
    p.grad = torch.randn_like(p)
    opt.step()
    P = galore.state[p]["projector"]
    assert P.dtype == torch.bfloat16 and P.shape == (2, 5)
    assert torch.isfinite(p).all()


@pytest.mark.parametrize("kwargs,exc", [
    (dict(rank=0), ValueError), (dict(rank=2.0), TypeError), (dict(update_freq=0), ValueError),
    (dict(update_freq=True), TypeError), (dict(scale="1"), TypeError), (dict(scale=float("nan")), ValueError),
    (dict(scale=float("inf")), ValueError), (dict(svd_driver="qr"), ValueError),
])
def test_invalid_arguments(kwargs: dict, exc: type) -> None:
    with pytest.raises(exc, match="GaLore"):
        GaLore(Adam(), **kwargs)
