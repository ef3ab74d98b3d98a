"""Matrix preconditioners: Shampoo, SOAP, FullMatrixAdagrad, LMAdagrad, Orthogonalize, MuonAdjustLR,
NaturalGradient.

Each is checked against an independent reference: a plain numpy/scipy loop implementation of the paper's update
(Shampoo, SOAP, full-matrix AdaGrad, GGT), closed forms (natural gradient, the catalog's checks) or
``torch.linalg.svd`` (orthogonalization); plus the shared sweep, rank-deficient statistics, extreme gradient scales
and the linear-algebra failure policies.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import scipy.linalg
import torch
from sweep import Objective, check_module, make_params

import torchzero as tz
from torchzero.modules.adaptive.full_matrix_adagrad import FullMatrixAdagrad, LMAdagrad
from torchzero.modules.adaptive.muon import MuonAdjustLR, Orthogonalize
from torchzero.modules.adaptive.natural_gradient import NaturalGradient
from torchzero.modules.adaptive.shampoo import Shampoo, merge_small_dims, unmerge_small_dims, update_factors_
from torchzero.modules.adaptive.soap import SOAP, soap_eigenbases
from torchzero.utils.linalg.linear_operator import AtA, ScaledIdentity

F64 = torch.float64

SWEEP: dict[str, Callable] = {
    "Shampoo": lambda: [Shampoo(), tz.m.LR(0.01)],
    "Shampoo_unmerged_ema": lambda: [Shampoo(merge_small=False, update_freq=2, beta=0.9, decay=0.99), tz.m.LR(0.01)],
    "Shampoo_maxdim_1d_diag": lambda: [Shampoo(max_dim=2, precondition_1d=False, exp_override=None), tz.m.LR(0.01)],
    "Shampoo_inner": lambda: [Shampoo(inner=tz.m.EMA(0.5)), tz.m.LR(0.01)],
    "SOAP": lambda: [SOAP(), tz.m.LR(0.01)],
    "SOAP_unmerged": lambda: [SOAP(merge_small=False, precond_freq=2, shampoo_beta=None, max_dim=3), tz.m.LR(0.01)],
    "SOAP_1d_diag_last": lambda: [SOAP(precondition_1d=False, bias_correction=False, alpha=0.5, precond_freq=1)],
    "FullMatrixAdagrad": lambda: [FullMatrixAdagrad(), tz.m.LR(0.01)],
    "FullMatrixAdagrad_options": lambda: [FullMatrixAdagrad(beta=0.9, decay=0.99, sqrt=False, concat_params=False,
                                                            init="zeros", divide=True, precond_freq=2), tz.m.LR(0.01)],
    "FullMatrixAdagrad_ggt_inner": lambda: [FullMatrixAdagrad(init="GGT", concat_params=False, inner=tz.m.EMA(0.5)),
                                            tz.m.LR(0.01)],
    "LMAdagrad": lambda: [LMAdagrad(history_size=3), tz.m.LR(0.01)],
    "LMAdagrad_order2": lambda: [LMAdagrad(history_size=4, order=2, U_beta=0.5, L_beta=0.5, rdamping=0.1, interval=2,
                                           concat_params=False, update_freq=2), tz.m.LR(0.01)],
    "LMAdagrad_order3_inner": lambda: [LMAdagrad(order=3, inner=tz.m.EMA(0.5)), tz.m.LR(0.01)],
    "Orthogonalize": lambda: [Orthogonalize(), tz.m.LR(0.01)],
    "Orthogonalize_svd": lambda: [Orthogonalize(method="svd", adjust_lr=True, dual_norm_correction=True),
                                  tz.m.LR(0.01)],
    "Orthogonalize_grad": lambda: [Orthogonalize(target="grad"), tz.m.HeavyBall(0.9), tz.m.LR(0.01)],
    "MuonAdjustLR": lambda: [MuonAdjustLR(0.5), tz.m.LR(0.01)],
    "NaturalGradient": lambda: [NaturalGradient(), tz.m.LR(0.01)],
    "NaturalGradient_sqrt": lambda: [NaturalGradient(sqrt=True, batched=False), tz.m.LR(0.01)],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    check_module(SWEEP[name], needs_closure=name.startswith("NaturalGradient"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_cuda(name: str) -> None:
    check_module(SWEEP[name], needs_closure=name.startswith("NaturalGradient"), device="cuda")


# ------------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------------
def _outputs(modules: Sequence[tz.core.Module], grads: Sequence[Sequence[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Feeds gradient lists to ``Modular(params, *modules)`` (params start at zero, the gradients don't depend on
    them) and returns the update of each step (``x_t − x_{t+1}``)."""
    params = [torch.zeros_like(g, requires_grad=True) for g in grads[0]]
    opt = tz.Modular(params, *modules)
    outs = []
    for gs in grads:
        before = [p.detach().clone() for p in params]
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        outs.append([b - p.detach() for b, p in zip(before, params)])
    return outs


def _randn(*shape: int, seed: int, dtype=F64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _grad_seq(shape: tuple[int, ...], n: int, seed: int = 0, dtype=F64) -> list[list[torch.Tensor]]:
    return [[_randn(*shape, seed=seed * 1000 + t, dtype=dtype)] for t in range(n)]


def _mode_product(T: np.ndarray, M: np.ndarray, axis: int) -> np.ndarray:
    """Multiplies every fiber of ``T`` along ``axis`` by ``M`` (``x ↦ M x``)."""
    return np.moveaxis(np.tensordot(M, T, axes=([1], [axis])), 0, axis)


def _unfold(T: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(T, axis, 0).reshape(T.shape[axis], -1)


def _frac_power(A: np.ndarray, p: float) -> np.ndarray:
    """``A^p`` of a symmetric positive definite matrix, by numpy's eigendecomposition."""
    w, V = np.linalg.eigh((A + A.T) / 2)
    return (V * w**p) @ V.T


# ------------------------------------------------------------------------------------------------------------------
# Shampoo
# ------------------------------------------------------------------------------------------------------------------
def shampoo_reference(grads: Sequence[np.ndarray], exponent: float | None, update_freq: int = 1,
                      factored: Sequence[bool] | None = None) -> list[np.ndarray]:
    """Gupta, Koren & Singer (2018), Algorithm 2 for an order-k tensor, with H⁽ⁱ⁾₀ = I (ε = 1):
    H⁽ⁱ⁾ ← H⁽ⁱ⁾ + G₍ᵢ₎G₍ᵢ₎ᵀ, update G ×₁ (H⁽¹⁾)^(−1/e) ×₂ … ×ₖ (H⁽ᵏ⁾)^(−1/e), e = 2k (or ``exponent``); roots
    recomputed every ``update_freq`` steps; axes with ``factored[i] = False`` are left alone."""
    shape = grads[0].shape
    k = len(shape)
    factored = [True] * k if factored is None else list(factored)
    H = [np.eye(s) for s in shape]
    P = [np.eye(s) for s in shape]
    e = 2 * k if exponent is None else exponent
    outs = []
    for t, G in enumerate(grads):
        for i in range(k):
            if not factored[i]:
                continue
            Gi = _unfold(G, i)
            H[i] = H[i] + Gi @ Gi.T
            if t % update_freq == 0:
                P[i] = _frac_power(H[i], -1 / e)
        out = G
        for i in range(k):
            if factored[i]:
                out = _mode_product(out, P[i], i)
        outs.append(out)
    return outs


def test_shampoo_catalog_check():
    G = _randn(4, 3, seed=0)
    I4, I3 = np.eye(4), np.eye(3)
    Gn = G.numpy()
    for e, p in ((2, -1 / 2), (None, -1 / 4)):
        out = _outputs([Shampoo(merge_small=False, update_freq=1, reg=0, exp_override=e)], [[G]])[0][0]
        expected = _frac_power(I4 + Gn @ Gn.T, p) @ Gn @ _frac_power(I3 + Gn.T @ Gn, p)
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(4, 3), (3, 4, 5), (6,)])
@pytest.mark.parametrize("exp_override,update_freq", [(None, 1), (2, 1), (None, 3)])
def test_shampoo_matches_paper_loop(shape, exp_override, update_freq):
    grads = _grad_seq(shape, 30, seed=1)
    outs = _outputs([Shampoo(merge_small=False, update_freq=update_freq, reg=0, exp_override=exp_override)], grads)
    ref = shampoo_reference([g[0].numpy() for g in grads], exp_override, update_freq)
    for t, (o, r) in enumerate(zip(outs, ref)):
        np.testing.assert_allclose(o[0].numpy(), r, rtol=1e-6, atol=1e-12, err_msg=f"step {t}")


def test_shampoo_trajectory_on_objective():
    """Trajectory on a non-separable quadratic ½‖A W B − C‖², W (5, 4), gradients from the reference loop's own
    iterates, float64, 30 steps."""
    A, B, C = _randn(6, 5, seed=2).numpy(), _randn(4, 3, seed=3).numpy(), _randn(6, 3, seed=4).numpy()
    W0 = _randn(5, 4, seed=5)
    lr = 0.1
    # reference
    W = W0.numpy().copy()
    H = [np.eye(5), np.eye(4)]
    ref = []
    for _ in range(30):
        G = A.T @ (A @ W @ B - C) @ B.T
        H[0] += G @ G.T
        H[1] += G.T @ G
        W = W - lr * _frac_power(H[0], -1 / 4) @ G @ _frac_power(H[1], -1 / 4)
        ref.append(W.copy())
    # torchzero
    w = W0.clone().requires_grad_()
    At, Bt, Ct = (torch.from_numpy(x) for x in (A, B, C))
    opt = tz.Modular([w], Shampoo(merge_small=False, update_freq=1, reg=0, exp_override=None), tz.m.LR(lr))

    def closure(backward=True):
        loss = 0.5 * ((At @ w @ Bt - Ct) ** 2).sum()
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    for t in range(30):
        opt.step(closure)
        np.testing.assert_allclose(w.detach().numpy(), ref[t], rtol=1e-6, atol=1e-12, err_msg=f"step {t}")


def test_shampoo_unfactored_axes_keep_alignment():
    # axis 1 (size 10 >= max_dim) has no factor: axes 0 and 2 must still get their own preconditioners
    grads = _grad_seq((3, 10, 4), 5, seed=6)
    outs = _outputs([Shampoo(merge_small=False, update_freq=1, reg=0, max_dim=5, exp_override=None)], grads)
    ref = shampoo_reference([g[0].numpy() for g in grads], 6, 1, factored=[True, False, True])
    for o, r in zip(outs, ref):
        np.testing.assert_allclose(o[0].numpy(), r, rtol=1e-8, atol=1e-12)
    # a size-1 axis: same as Shampoo on the squeezed matrix
    grads = _grad_seq((1, 4, 3), 5, seed=7)
    outs = _outputs([Shampoo(merge_small=False, update_freq=1)], grads)
    outs2 = _outputs([Shampoo(merge_small=False, update_freq=1)], [[g[0][0]] for g in grads])
    for o, o2 in zip(outs, outs2):
        torch.testing.assert_close(o[0][0], o2[0], rtol=1e-12, atol=1e-14)


def test_shampoo_merge_small_equals_reshaped_tensor():
    t = _randn(2, 3, 4, seed=8)
    merged, flat_sizes, sort_idxs = merge_small_dims(t.permute(2, 0, 1), 8)  # shape (4, 2, 3) -> sorted 2, 3, 4
    assert merged.shape == (6, 4) and flat_sizes == [2, 3] and sort_idxs == [1, 2, 0]
    assert torch.equal(unmerge_small_dims(merged, flat_sizes, sort_idxs), t.permute(2, 0, 1))
    assert merge_small_dims(torch.zeros(()), 8)[1] is None
    assert merge_small_dims(torch.zeros(10, 12), 8)[0].shape == (10, 12)
    # Shampoo on (2, 3, 4) with max_dim=8 is Shampoo on the (6, 4) matrix
    grads = _grad_seq((2, 3, 4), 6, seed=9)
    outs = _outputs([Shampoo(max_dim=8, update_freq=1)], grads)
    outs2 = _outputs([Shampoo(merge_small=False, update_freq=1)], [[g[0].reshape(6, 4)] for g in grads])
    for o, o2 in zip(outs, outs2):
        torch.testing.assert_close(o[0], o2[0].reshape(2, 3, 4), rtol=1e-12, atol=1e-14)
    # small tensors are merged into one vector with a full-matrix preconditioner
    grads = _grad_seq((2, 3), 4, seed=10)
    outs = _outputs([Shampoo(update_freq=1)], grads)
    outs2 = _outputs([Shampoo(update_freq=1)], [[g[0].reshape(6)] for g in grads])
    for o, o2 in zip(outs, outs2):
        torch.testing.assert_close(o[0], o2[0].reshape(2, 3), rtol=1e-12, atol=1e-14)


def test_shampoo_diagonal_fallback_is_adagrad():
    grads = [[_randn(seed=20 + t), _randn(5, seed=40 + t), _randn(1, 1, seed=60 + t)] for t in range(6)]
    outs = _outputs([Shampoo(precondition_1d=False, adagrad_eps=1e-8, update_freq=1)], grads)
    acc = [torch.zeros_like(g) for g in grads[0]]
    for gs, o in zip(grads, outs):
        for j, g in enumerate(gs):
            acc[j] = acc[j] + g * g
            torch.testing.assert_close(o[j], g / (acc[j].sqrt() + 1e-8), rtol=1e-12, atol=0)
    # with beta: EMA accumulator; with decay: accumulator scaled after use
    outs = _outputs([Shampoo(precondition_1d=False, beta=0.9, decay=0.5, adagrad_eps=1e-8)], [[g[1]] for g in grads])
    a = torch.zeros(5, dtype=F64)
    for gs, o in zip(grads, outs):
        a = 0.9 * a + 0.1 * gs[1] ** 2
        torch.testing.assert_close(o[0], gs[1] / (a.sqrt() + 1e-8), rtol=1e-12, atol=0)
        a = a * 0.5


def test_shampoo_inner_and_decay():
    # statistics from the raw gradients, preconditioners applied to inner's output
    grads = _grad_seq((4, 3), 5, seed=11)
    outs = _outputs([Shampoo(merge_small=False, update_freq=1, inner=tz.m.EMA(0.5))], grads)
    m = np.zeros((4, 3))
    H0, H1 = np.eye(4), np.eye(3)
    for o, g in zip(outs, grads):
        gn = g[0].numpy()
        m = 0.5 * m + 0.5 * gn
        H0, H1 = H0 + gn @ gn.T, H1 + gn.T @ gn
        expected = _frac_power(H0, -0.5) @ m @ _frac_power(H1, -0.5)
        np.testing.assert_allclose(o[0].numpy(), expected, rtol=1e-8, atol=1e-12)
    # decay multiplies each preconditioner after its use: between refreshes (every 3 steps) the output of a matrix
    # shrinks by decay² per step
    grads = _grad_seq((4, 3), 6, seed=12)
    outs = _outputs([Shampoo(merge_small=False, update_freq=3, decay=0.9)], grads)
    ref = shampoo_reference([g[0].numpy() for g in grads], 2, 3)
    for t, (o, r) in enumerate(zip(outs, ref)):
        np.testing.assert_allclose(o[0].numpy(), r * 0.9 ** (2 * (t % 3)), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shampoo_rank_deficient_gradients(dtype):
    a, b = _randn(6, seed=12, dtype=dtype), _randn(5, seed=13, dtype=dtype)
    # rank-1 gradients for many steps with an EMA (the identity initialisation decays away)
    grads = [[torch.outer(a, b) * (1 + (t % 3))] for t in range(300)]
    outs = _outputs([Shampoo(merge_small=False, beta=0.9, update_freq=1)], grads)
    expected = torch.outer(a / a.norm(), b / b.norm())  # (GGᵀ)^(-1/2) G (GᵀG)^(-1/2) for rank-1 G = abᵀ
    for o in outs[-20:]:
        assert torch.isfinite(o[0]).all()
        cos = (o[0] * expected).sum() / o[0].norm()
        # rounding errors of G in the joint null space of both factors are amplified by at most eps^(-1/2) (with the
        # reference's 2·tiny floor this is garbage: cos ≈ 0.95 in float32)
        assert cos > 1 - (1e-4 if dtype == torch.float32 else 1e-10)
        assert o[0].norm() < 1 + 1e-3
    # all-zero gradients: zero output, finite
    outs = _outputs([Shampoo(merge_small=False, beta=0.9, update_freq=1)], [[torch.zeros(6, 5, dtype=dtype)]] * 50)
    assert all(torch.equal(o[0], torch.zeros(6, 5, dtype=dtype)) for o in outs)


@pytest.mark.parametrize("dtype,scales", [(torch.float32, (1e-30, 1e-10, 1e10, 1e15)),
                                          (torch.float64, (1e-150, 1e-30, 1e30, 1e100))])
def test_shampoo_extreme_scales(dtype, scales):
    for scale in scales:
        grads = [[g[0] * scale] for g in _grad_seq((4, 3), 15, seed=14, dtype=dtype)]
        for mod in (Shampoo(merge_small=False, update_freq=2), Shampoo(beta=0.5, update_freq=1)):
            outs = _outputs([mod], grads)
            assert all(torch.isfinite(o[0]).all() for o in outs), f"scale {scale}"


def _direct(module: tz.core.Module, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Steps ``module`` alone on a sequence of single-tensor updates (parameters fixed) and returns its outputs."""
    params = [torch.zeros_like(grads[0])]
    outs = []
    for g in grads:
        var = tz.core.Var(params=params, closure=None, model=None, current_step=0)
        var.grad = [g.clone()]
        outs.append(module.step(var).get_update()[0])
    return outs


def test_shampoo_failure_keeps_previous_preconditioner(monkeypatch):
    grads = [g[0] for g in _grad_seq((4, 3), 4, seed=15)]
    # a NaN gradient propagates to its output; later outputs use the last finite preconditioners
    bad = [g.clone() for g in grads]
    bad[1][0, 0] = float("nan")
    mod = Shampoo(merge_small=False, update_freq=1)
    outs = _direct(mod, bad)
    assert torch.isnan(outs[1]).any()
    assert torch.isfinite(outs[2]).all() and torch.isfinite(outs[3]).all()
    P0, P1 = _first_preconditioners(grads[0])
    torch.testing.assert_close(outs[0], P0 @ grads[0] @ P1)
    torch.testing.assert_close(outs[3], P0 @ grads[3] @ P1)  # preconditioners frozen at step 0
    # an eigendecomposition that always fails leaves the identity preconditioners: output = input
    monkeypatch.setattr(torch.linalg, "eigh", lambda *a, **k: (_ for _ in ()).throw(torch.linalg.LinAlgError("x")))
    for o, g in zip(_direct(Shampoo(merge_small=False, update_freq=1), grads), grads):
        torch.testing.assert_close(o, g)


def _first_preconditioners(g: torch.Tensor) -> list[torch.Tensor]:
    gn = g.numpy()
    return [torch.from_numpy(_frac_power(np.eye(4) + gn @ gn.T, -0.5)),
            torch.from_numpy(_frac_power(np.eye(3) + gn.T @ gn, -0.5))]


# ------------------------------------------------------------------------------------------------------------------
# SOAP
# ------------------------------------------------------------------------------------------------------------------
def soap_reference(grads: Sequence[np.ndarray], beta1: float, beta2: float, shampoo_beta: float | None,
                   precond_freq: int, eps: float, initial_bases: Sequence[np.ndarray] | None = None
                   ) -> list[np.ndarray]:
    """SOAP (Vyas et al. 2024, Algorithm 3 / official implementation) for one tensor of any order, all axes
    factored: first step only builds the factors; then Adam in the eigenbasis of the factors, factors updated
    after the step, bases refreshed by one power iteration + QR every ``precond_freq`` steps.

    ``initial_bases`` replaces the first eigendecomposition (for rank-deficient first factors, whose null-space
    basis is arbitrary)."""
    shape = grads[0].shape
    k = len(shape)
    GG = [np.zeros((s, s)) for s in shape]

    def acc(G):
        for i in range(k):
            Gi = _unfold(G, i)
            outer = Gi @ Gi.T
            GG[i] = GG[i] + outer if shampoo_beta is None else shampoo_beta * GG[i] + (1 - shampoo_beta) * outer

    def project(T, Q, back=False):
        for i in range(k):
            T = _mode_product(T, Q[i] if back else Q[i].T, i)
        return T

    m = np.zeros(shape)
    v = np.zeros(shape)
    Q: list[np.ndarray] = []
    outs = []
    for t, G in enumerate(grads):
        if t == 0:
            acc(G)
            Q = [np.linalg.eigh(F)[1][:, ::-1] for F in GG] if initial_bases is None else list(initial_bases)
            outs.append(np.clip(G, -0.1, 0.1))
            continue
        Gp = project(G, Q)
        m = beta1 * m + (1 - beta1) * G
        v = beta2 * v + (1 - beta2) * Gp**2
        u = project(project(m, Q) / (np.sqrt(v) + eps), Q, back=True)
        outs.append(u * np.sqrt(1 - beta2**t) / (1 - beta1**t))
        acc(G)
        if t % precond_freq == 0:
            for i in range(k):
                est = np.diag(Q[i].T @ GG[i] @ Q[i])
                order = np.argsort(-est, kind="stable")
                v = np.take(v, order, axis=i)
                Q[i] = np.linalg.qr(GG[i] @ Q[i][:, order])[0]
    return outs


@pytest.mark.parametrize("shape", [(4, 4), (2, 3, 4), (3, 5)])
@pytest.mark.parametrize("shampoo_beta,precond_freq", [(0.95, 2), (None, 3)])
def test_soap_matches_paper_loop(shape, shampoo_beta, precond_freq):
    # the factors of (4, 4) and (2, 3, 4) are full rank after the first step, so the eigenbases are unique up to
    # signs (which SOAP is invariant to); for (3, 5) the 5×5 factor is rank 3 at first, and the loop is given the
    # same initial bases as the module (the null-space basis of the first eigendecomposition is arbitrary)
    grads = _grad_seq(shape, 12, seed=16)
    mod = SOAP(beta1=0.9, beta2=0.95, shampoo_beta=shampoo_beta, precond_freq=precond_freq, merge_small=False)
    outs = _outputs([mod], grads)
    GG0 = [torch.zeros(n, n, dtype=F64) for n in shape]
    update_factors_(grads[0][0], GG0, shampoo_beta)
    Q0 = [Q.numpy() for Q in soap_eigenbases(GG0)]  # type: ignore[union-attr]
    ref = soap_reference([g[0].numpy() for g in grads], 0.9, 0.95, shampoo_beta, precond_freq, 1e-8, Q0)
    for t, (o, r) in enumerate(zip(outs, ref)):
        np.testing.assert_allclose(o[0].numpy(), r, rtol=1e-6, atol=1e-10, err_msg=f"step {t}")


def test_soap_catalog_check_1d_is_adam():
    grads = _grad_seq((7,), 20, seed=17)
    outs = _outputs([SOAP(precondition_1d=False)], grads)
    torch.testing.assert_close(outs[0][0], grads[0][0].clamp(-0.1, 0.1), rtol=0, atol=0)
    adam = _outputs([tz.m.Adam(beta1=0.95, beta2=0.95)], grads[1:])
    for o, a in zip(outs[1:], adam):
        # (SOAP adds eps before the bias correction, Adam after it: a relative difference of order eps/|g|)
        torch.testing.assert_close(o[0], a[0], rtol=1e-6, atol=1e-12)


def test_soap_unfactored_axis_and_merge():
    # (1, 4) with merge_small=False crashed in the reference (factor applied to the size-1 axis)
    grads = _grad_seq((1, 4), 8, seed=18)
    outs = _outputs([SOAP(merge_small=False, precond_freq=2)], grads)
    outs2 = _outputs([SOAP(merge_small=False, precond_freq=2)], [[g[0][0]] for g in grads])
    for o, o2 in zip(outs, outs2):
        torch.testing.assert_close(o[0][0], o2[0], rtol=1e-12, atol=1e-14)
    # merged: a (2, 3, 4) tensor with max_dim=8 is the (6, 4) matrix (sorted dims 2, 3 merged)
    grads = _grad_seq((2, 3, 4), 8, seed=19)
    outs = _outputs([SOAP(precond_freq=2, max_dim=8)], grads)
    outs2 = _outputs([SOAP(precond_freq=2, merge_small=False)], [[g[0].reshape(6, 4)] for g in grads])
    for o, o2 in zip(outs, outs2):
        torch.testing.assert_close(o[0], o2[0].reshape(2, 3, 4), rtol=1e-12, atol=1e-14)


def test_soap_rank_deficient_and_scales():
    # zero gradients: zero output
    outs = _outputs([SOAP(merge_small=False, precond_freq=2)], [[torch.zeros(5, 4, dtype=F64)]] * 30)
    assert all(torch.equal(o[0], torch.zeros(5, 4, dtype=F64)) for o in outs)
    a, b = _randn(6, seed=21), _randn(5, seed=22)
    for dtype in (torch.float32, torch.float64):
        grads = [[(torch.outer(a, b) * (1 + t % 3)).to(dtype)] for t in range(60)]
        outs = _outputs([SOAP(merge_small=False, precond_freq=3)], grads)
        assert all(torch.isfinite(o[0]).all() for o in outs)
        if dtype == torch.float64:  # exact rank 1: the update stays along the gradient
            G = grads[-1][0]
            cos = (outs[-1][0] * G).sum() / (outs[-1][0].norm() * G.norm())
            assert cos > 1 - 1e-6
    for dtype, scales in ((torch.float32, (1e-30, 1e15)), (F64, (1e-150, 1e100))):
        for scale in scales:
            grads = [[g[0] * scale] for g in _grad_seq((4, 3), 12, seed=23, dtype=dtype)]
            outs = _outputs([SOAP(merge_small=False, precond_freq=2)], grads)
            assert all(torch.isfinite(o[0]).all() for o in outs), f"{dtype} {scale}"


def test_soap_failure_policy(monkeypatch):
    grads = _grad_seq((4, 3), 6, seed=24)
    monkeypatch.setattr(torch.linalg, "eigh", lambda *a, **k: (_ for _ in ()).throw(torch.linalg.LinAlgError("x")))
    outs = _outputs([SOAP(merge_small=False, precond_freq=100)], grads)  # identity bases: plain SOAP-style Adam
    adam = _outputs([SOAP(merge_small=False, precondition_1d=False, max_dim=1, precond_freq=100)], grads)
    for o, a in zip(outs, adam):
        torch.testing.assert_close(o[0], a[0])


# ------------------------------------------------------------------------------------------------------------------
# FullMatrixAdagrad
# ------------------------------------------------------------------------------------------------------------------
def fma_reference(grads: Sequence[np.ndarray], init: str = "identity", beta: float | None = None,
                  decay: float | None = None, sqrt: bool = True, reg: float = 1e-12, divide: bool = False,
                  precond_freq: int = 1) -> list[np.ndarray]:
    d = grads[0].size
    GG = None
    B = None
    outs = []
    for t, g in enumerate(grads):
        g = g.ravel()
        if GG is None:
            GG = {"identity": np.eye(d), "zeros": np.zeros((d, d)), "ones": np.ones((d, d)),
                  "GGT": np.outer(g, g)}[init]
        if decay is not None:
            GG = decay * GG
        GG = GG + np.outer(g, g) if beta is None else beta * GG + (1 - beta) * np.outer(g, g)
        A = (GG / (t + 1) if divide else GG) + reg * np.eye(d)
        if sqrt:
            if t % precond_freq == 0:
                B = np.linalg.inv(scipy.linalg.sqrtm(A).real)
            outs.append(B @ g)
        else:
            outs.append(np.linalg.solve(A, g))
    return outs


def test_fma_catalog_check():
    g = _randn(3, 2, seed=30)
    out = _outputs([FullMatrixAdagrad()], [[g]])[0][0]
    torch.testing.assert_close(out, g / (1 + g.norm() ** 2).sqrt(), rtol=1e-7, atol=0)


@pytest.mark.parametrize("kwargs", [dict(), dict(init="zeros", beta=0.9), dict(decay=0.95, divide=True, init="ones"),
                                    dict(sqrt=False), dict(init="GGT"), dict(precond_freq=3)])
def test_fma_matches_loop(kwargs):
    grads = _grad_seq((5,), 20, seed=31)
    outs = _outputs([FullMatrixAdagrad(**kwargs)], grads)
    ref = fma_reference([g[0].numpy() for g in grads], **kwargs)
    for t, (o, r) in enumerate(zip(outs, ref)):
        np.testing.assert_allclose(o[0].numpy(), r, rtol=1e-6, atol=1e-10, err_msg=f"step {t}")


def test_fma_trajectory_concat_params():
    """Σggᵀ over all parameters concatenated, on the sweep objective, float64, 30 steps, against a plain loop."""
    x0 = make_params(F64, shapes=[(3,), (2, 2), ()])
    f = Objective(x0)
    lr = 0.1
    # reference loop: gradient by autograd, preconditioner by scipy
    xs = [p.detach().clone().requires_grad_() for p in x0]
    GG = np.eye(8)
    ref = []
    for _ in range(30):
        grads = torch.autograd.grad(f(xs), xs)
        g = torch.cat([gr.ravel() for gr in grads]).numpy()
        GG = GG + np.outer(g, g)
        step = np.linalg.inv(scipy.linalg.sqrtm(GG + 1e-12 * np.eye(8)).real) @ g
        with torch.no_grad():
            offset = 0
            for x in xs:
                x -= lr * torch.from_numpy(step[offset: offset + x.numel()]).view_as(x)
                offset += x.numel()
        ref.append([x.detach().clone() for x in xs])
    params = [p.detach().clone().requires_grad_() for p in x0]
    opt = tz.Modular(params, FullMatrixAdagrad(), tz.m.LR(lr))
    for t in range(30):
        opt.zero_grad()
        f(params).backward()
        opt.step()
        for p, r in zip(params, ref[t]):
            torch.testing.assert_close(p.detach(), r, rtol=1e-6, atol=1e-12, msg=lambda m, t=t: f"step {t}: {m}")


def test_fma_separate_tensors_and_single_element():
    grads = [[_randn(3, seed=32 + t), _randn(seed=50 + t)] for t in range(5)]
    outs = _outputs([FullMatrixAdagrad(concat_params=False)], grads)
    ref = fma_reference([g[0].numpy() for g in grads])
    acc = 1.0
    for o, r, g in zip(outs, ref, grads):
        np.testing.assert_allclose(o[0].numpy(), r, rtol=1e-8)
        acc = acc + g[1].item() ** 2
        torch.testing.assert_close(o[1], g[1] / (acc + 1e-12) ** 0.5, rtol=1e-12, atol=0)
    # a zero single-element accumulator gives 0, not NaN
    outs = _outputs([FullMatrixAdagrad(concat_params=False, init="zeros", reg=0)], [[torch.zeros((), dtype=F64)]] * 3)
    assert all(torch.equal(o[0], torch.zeros((), dtype=F64)) for o in outs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fma_rank_deficient(dtype):
    # zeros init + rank-1 gradients for many steps: the output is g/‖g‖·(‖g‖/sqrt(Σcₜ²‖v‖²))
    v = _randn(8, seed=33, dtype=dtype)
    cs = [1.0 + (t % 4) for t in range(200)]
    outs = _outputs([FullMatrixAdagrad(init="zeros")], [[c * v] for c in cs])
    for t in (0, 10, 199):
        expected = cs[t] * v / (sum(c * c for c in cs[: t + 1]) ** 0.5 * v.norm())
        torch.testing.assert_close(outs[t][0], expected, rtol=5e-3 if dtype == torch.float32 else 1e-6, atol=0)
    outs = _outputs([FullMatrixAdagrad(init="zeros", reg=0)], [[torch.zeros(8, dtype=dtype)]] * 20)
    assert all(torch.equal(o[0], torch.zeros(8, dtype=dtype)) for o in outs)


@pytest.mark.parametrize("dtype,scales", [(torch.float32, (1e-30, 1e-10, 1e10, 1e15)),
                                          (torch.float64, (1e-150, 1e100))])
def test_fma_extreme_scales(dtype, scales):
    for scale in scales:
        grads = [[g[0] * scale] for g in _grad_seq((6,), 10, seed=34, dtype=dtype)]
        for mod in (FullMatrixAdagrad(), FullMatrixAdagrad(init="zeros", beta=0.9), FullMatrixAdagrad(sqrt=False)):
            outs = _outputs([mod], grads)
            assert all(torch.isfinite(o[0]).all() for o in outs), f"{dtype} {scale}"


def test_fma_fallback(monkeypatch):
    grads = _grad_seq((4,), 3, seed=35)
    monkeypatch.setattr(torch.linalg, "eigh", lambda *a, **k: (_ for _ in ()).throw(torch.linalg.LinAlgError("x")))
    outs = _outputs([FullMatrixAdagrad(reg=1e-3)], grads)
    GG = torch.eye(4, dtype=F64)
    for o, g in zip(outs, grads):
        GG = GG + torch.outer(g[0], g[0])
        torch.testing.assert_close(o[0], g[0] / ((GG.diagonal() + 1e-3).sqrt() + 1e-3))
    outs = _outputs([FullMatrixAdagrad(sqrt=False, init="zeros", reg=0)], grads[:1])
    g = grads[0][0]
    torch.testing.assert_close(outs[0][0], g / (g * g + 1e-12))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fma_singular_solve_is_minimum_norm(dtype):
    # zeros init, reg=0, sqrt=False: GG = Σggᵀ is singular; the output is GG⁺g, not amplified rounding noise
    v, w = _randn(6, seed=36, dtype=dtype), _randn(6, seed=37, dtype=dtype)
    grads = [[v], [w], [v + w]]
    outs = _outputs([FullMatrixAdagrad(sqrt=False, init="zeros", reg=0)], grads)
    GG = torch.zeros(6, 6, dtype=F64)
    for o, g in zip(outs, grads):
        GG = GG + torch.outer(g[0].double(), g[0].double())
        expected = torch.linalg.pinv(GG, hermitian=True, rtol=1e-6) @ g[0].double()
        torch.testing.assert_close(o[0].double(), expected, rtol=1e-4 if dtype == torch.float32 else 1e-9, atol=0)


# ------------------------------------------------------------------------------------------------------------------
# LMAdagrad
# ------------------------------------------------------------------------------------------------------------------
def test_lmadagrad_catalog_check():
    g = _randn(6, seed=40)
    out = _outputs([LMAdagrad()], [[g]])[0][0]
    n2 = g.norm() ** 2
    torch.testing.assert_close(out, g * n2 / (n2 + 1e-4) ** 1.5, rtol=1e-10, atol=0)


@pytest.mark.parametrize("damping,history_size", [(0.0, 3), (1e-2, 3), (1e-4, 50)])
def test_lmadagrad_matches_ggt_closed_form(damping, history_size):
    """Output = M(MᵀM + δI)^(−3/2)Mᵀg over the last ``history_size`` gradients; for δ = 0 that is
    (MMᵀ)^(+1/2)-pseudo-inverse applied to g, full-matrix AdaGrad over the window."""
    grads = _grad_seq((10,), 12, seed=41)
    outs = _outputs([LMAdagrad(history_size=history_size, damping=damping)], grads)
    for t, o in enumerate(outs):
        M = np.stack([g[0].numpy() for g in grads[max(0, t + 1 - history_size): t + 1]], 1)
        g = grads[t][0].numpy()
        expected = M @ _frac_power(M.T @ M + damping * np.eye(M.shape[1]), -1.5) @ M.T @ g
        np.testing.assert_allclose(o[0].numpy(), expected, rtol=1e-6, atol=1e-10, err_msg=f"step {t}")
        if damping == 0:
            S = M @ M.T
            w, V = np.linalg.eigh(S)
            inv_sqrt = np.where(w > 1e-10 * w.max(), 1 / np.sqrt(np.clip(w, 1e-300, None)), 0)
            np.testing.assert_allclose(o[0].numpy(), V @ (inv_sqrt * (V.T @ g)), rtol=1e-6, atol=1e-10)


def test_lmadagrad_order2_and_options():
    grads = _grad_seq((5,), 6, seed=42)
    params = [torch.zeros(5, dtype=F64, requires_grad=True)]
    mod = LMAdagrad(order=2, damping=0.0, rdamping=0.5)
    opt = tz.Modular(params, mod)
    xs, outs = [], []
    for g in grads:
        xs.append(params[0].detach().clone())
        params[0].grad = g[0].clone()
        opt.step()
        outs.append(xs[-1] - params[0].detach())
    torch.testing.assert_close(outs[0], grads[0][0].clamp(-0.1, 0.1))  # no history yet
    hist = []
    for t in range(1, 6):
        y = (grads[t][0] - grads[t - 1][0]).numpy()
        s = (xs[t] - xs[t - 1]).numpy()
        hist.append(y / max(np.linalg.norm(s), 1e-8))
        M = np.stack(hist, 1)
        L, Q = np.linalg.eigh(M.T @ M)
        keep = L > np.finfo(np.float64).eps * L.max()
        L, Q = L[keep], Q[:, keep]
        U = M @ Q / np.sqrt(L)
        L = L + 0.5 * np.linalg.norm(L)
        expected = U @ ((U.T @ grads[t][0].numpy()) / np.sqrt(L))
        np.testing.assert_allclose(outs[t].numpy(), expected, rtol=1e-6, atol=1e-12)


def test_lmadagrad_rank_deficient_and_failure(monkeypatch):
    # the same vector repeated (rank 1): output = g/‖g‖·‖g‖/sqrt(k‖g‖²)-like GGT result, finite
    v = _randn(7, seed=43)
    outs = _outputs([LMAdagrad(history_size=5, damping=0)], [[v]] * 10)
    torch.testing.assert_close(outs[-1][0], v / (5**0.5 * v.norm()), rtol=1e-10, atol=1e-14)
    outs = _outputs([LMAdagrad(damping=0)], [[torch.zeros(7, dtype=F64)]] * 5)
    assert all(torch.equal(o[0], torch.zeros(7, dtype=F64)) for o in outs)
    for scale in (1e-150, 1e100):
        outs = _outputs([LMAdagrad()], [[g[0] * scale] for g in _grad_seq((7,), 5, seed=44)])
        assert all(torch.isfinite(o[0]).all() for o in outs)
    monkeypatch.setattr(torch.linalg, "eigh", lambda *a, **k: (_ for _ in ()).throw(torch.linalg.LinAlgError("x")))
    grads = _grad_seq((7,), 3, seed=45)
    for o, g in zip(_outputs([LMAdagrad()], grads), grads):
        torch.testing.assert_close(o[0], g[0].clamp(-0.1, 0.1))


# ------------------------------------------------------------------------------------------------------------------
# Orthogonalize, MuonAdjustLR
# ------------------------------------------------------------------------------------------------------------------
def test_orthogonalize_svd_catalog_check():
    g = _randn(5, 3, seed=50)
    out = _outputs([Orthogonalize(method="svd")], [[g]])[0][0]
    U, _, Vh = torch.linalg.svd(g, full_matrices=False)
    torch.testing.assert_close(out, U @ Vh, rtol=0, atol=1e-6)


def test_orthogonalize_newton_schulz():
    gs = [_randn(16, 8, seed=51, dtype=torch.float32), _randn(5, seed=52, dtype=torch.float32),
          _randn(1, 4, seed=53, dtype=torch.float32), _randn(4, 6, 2, 3, seed=54, dtype=torch.float32)]
    outs = _outputs([Orthogonalize()], [gs])[0]
    s = torch.linalg.svdvals(outs[0].double())
    assert s.min() > 0.6 and s.max() < 1.25
    assert torch.equal(outs[1], gs[1]) and torch.equal(outs[2], gs[2])  # not matrices
    # ≥3-d: each slice u[:, :, i, j] is orthogonalized separately, and equals the 2-d result of that slice
    for i in range(2):
        for j in range(3):
            single = _outputs([Orthogonalize()], [[gs[3][:, :, i, j].contiguous()]])[0][0]
            torch.testing.assert_close(outs[3][:, :, i, j], single, rtol=0, atol=0.1)  # bfloat16 rounding
            sv = torch.linalg.svdvals(outs[3][:, :, i, j].double())
            assert sv.min() > 0.5 and sv.max() < 1.5


def test_orthogonalize_svd_3d_dual_norm_and_adjust_lr():
    g = _randn(4, 3, 2, seed=55)
    out = _outputs([Orthogonalize(method="svd", dual_norm_correction=True, adjust_lr=True)], [[g]])[0][0]
    U, _, Vh = torch.linalg.svd(g.reshape(4, 6), full_matrices=False)
    X = (U @ Vh).reshape(4, 3, 2)
    X = (g * X).sum(dim=(0, 1), keepdim=True) * X
    torch.testing.assert_close(out, X * 0.2 * 4**0.5, rtol=1e-10, atol=1e-12)


def test_orthogonalize_param_group_setting_and_muon():
    a = torch.zeros(6, 4, dtype=F64, requires_grad=True)
    b = torch.zeros(6, 4, dtype=F64, requires_grad=True)
    opt = tz.Modular([{"params": [a]}, {"params": [b], "orthogonalize": False}], Orthogonalize(method="svd"))
    ga, gb = _randn(6, 4, seed=56), _randn(6, 4, seed=57)
    a.grad, b.grad = ga.clone(), gb.clone()
    opt.step()
    U, _, Vh = torch.linalg.svd(ga, full_matrices=False)
    torch.testing.assert_close(-a.detach(), U @ Vh)
    torch.testing.assert_close(-b.detach(), gb)
    # Muon: Nesterov momentum, then orthogonalization, then the step size, against a plain loop
    grads = _grad_seq((6, 4), 5, seed=58)
    outs = _outputs([tz.m.NAG(0.9), Orthogonalize(method="svd"), tz.m.LR(0.02)], grads)
    buf = torch.zeros(6, 4, dtype=F64)
    for o, g in zip(outs, grads):
        buf = 0.9 * buf + g[0]
        d = g[0] + 0.9 * buf
        U, _, Vh = torch.linalg.svd(d, full_matrices=False)
        torch.testing.assert_close(o[0], 0.02 * U @ Vh)


def test_orthogonalize_extreme_scales_and_zero():
    g = _randn(6, 4, seed=59, dtype=torch.float32)
    ref = _outputs([Orthogonalize()], [[g]])[0][0]
    for scale in (1e-30, 1e-12, 1e12, 1e30):
        out = _outputs([Orthogonalize()], [[g * scale]])[0][0]
        torch.testing.assert_close(out, ref, rtol=0, atol=2e-2)
        out = _outputs([Orthogonalize(method="svd")], [[g * scale]])[0][0]
        sv = torch.linalg.svdvals(out.double())
        torch.testing.assert_close(sv, torch.ones_like(sv), rtol=0, atol=1e-5)
    for method in ("newton-schulz", "svd"):
        out = _outputs([Orthogonalize(method=method)], [[torch.zeros(6, 4)]])[0][0]  # type: ignore[arg-type]
        assert torch.equal(out, torch.zeros(6, 4))


def test_muon_adjust_lr():
    outs = _outputs([MuonAdjustLR()], [[_randn(4, 9, seed=60), _randn(5, seed=61), _randn(1, 7, seed=62)]])[0]
    gs = [_randn(4, 9, seed=60), _randn(5, seed=61), _randn(1, 7, seed=62)]
    torch.testing.assert_close(outs[0], 0.6 * gs[0])
    assert torch.equal(outs[1], gs[1]) and torch.equal(outs[2], gs[2])
    out = _outputs([MuonAdjustLR(alpha=2.0)], [[_randn(3, 16, 2, seed=63)]])[0][0]
    torch.testing.assert_close(out, 2.0 * 0.2 * 4.0 * _randn(3, 16, 2, seed=63))


# ------------------------------------------------------------------------------------------------------------------
# NaturalGradient
# ------------------------------------------------------------------------------------------------------------------
def _least_squares_problem(n: int = 5, d: int = 3, seed: int = 70):
    A = _randn(n, d, seed=seed)
    y = _randn(n, seed=seed + 1)
    w = _randn(d, seed=seed + 2).requires_grad_()
    return A, y, w


@pytest.mark.parametrize("n,d", [(3, 5), (5, 3)])
def test_natural_gradient_catalog_check(n, d):
    A, y, w = _least_squares_problem(n=n, d=d)
    w0 = w.detach().clone()
    opt = tz.Modular([w], NaturalGradient(reg=1e-8), tz.m.LR(1.0))
    loss = opt.step(lambda backward=True: (A @ w - y) ** 2)
    assert loss.shape == (n,)
    G = 2 * (A @ w0 - y)[:, None] * A  # per-sample gradients
    ones = torch.ones(n, dtype=F64)
    if n <= d:
        expected = G.T @ torch.linalg.solve(G @ G.T + 1e-8 * torch.eye(n, dtype=F64), ones)
    else:  # the same vector, from the well-conditioned d×d system
        expected = torch.linalg.solve(G.T @ G + 1e-8 * torch.eye(d, dtype=F64), G.T @ ones)
    torch.testing.assert_close(w0 - w.detach(), expected, rtol=1e-8, atol=1e-10)
    mod = opt.modules[0]
    torch.testing.assert_close(mod.global_state["G"], G)
    torch.testing.assert_close(mod.global_state["g"], G.sum(0))


def test_natural_gradient_sqrt_gn_grad_and_loss_argument():
    A, y, w = _least_squares_problem(n=4, d=6, seed=71)
    w0 = w.detach().clone()
    f = (A @ w - y) ** 2
    opt = tz.Modular([w], NaturalGradient(reg=1e-3, sqrt=True, gn_grad=True), tz.m.LR(1.0))
    opt.step(loss=f)  # no closure: the loss vector with its graph
    G = (2 * (A @ w0 - y)[:, None] * A).numpy()
    g = G.T @ f.detach().numpy()
    expected = G.T @ _frac_power(G @ G.T + 1e-3 * np.eye(4), -1.5) @ G @ g
    np.testing.assert_allclose((w0 - w.detach()).numpy(), expected, rtol=1e-7, atol=1e-10)


def test_natural_gradient_var_and_closure():
    A, y, w = _least_squares_problem(seed=72)
    seen = {}

    class Probe(tz.core.Module):
        def step(self, var):
            seen["loss"] = var.get_loss(False)
            seen["grad"] = [g.clone() for g in var.get_grad()]
            seen["closure_value"] = var.closure(False)
            seen["closure_backward"] = var.closure(True)
            seen["p_grad"] = w.grad.clone()
            return var

    opt = tz.Modular([w], NaturalGradient(), Probe(), tz.m.LR(0.0))
    opt.step(lambda backward=True: (A @ w - y) ** 2)
    f = ((A @ w - y) ** 2).detach()
    torch.testing.assert_close(seen["loss"], f.sum())
    torch.testing.assert_close(seen["grad"][0], (2 * (A @ w - y)[:, None] * A).sum(0).detach())
    torch.testing.assert_close(seen["closure_value"], f.sum())
    torch.testing.assert_close(seen["p_grad"], seen["grad"][0])


def test_natural_gradient_singular_and_get_H():
    # more samples than parameters and reg=0: GGᵀ is singular, the step is the minimum-norm solution
    A, y, w = _least_squares_problem(n=8, d=2, seed=73)
    w0 = w.detach().clone()
    mod = NaturalGradient(reg=0)
    opt = tz.Modular([w], mod, tz.m.LR(1.0))
    H0 = mod.get_H(tz.core.Var([w], None, None, 0))
    assert isinstance(H0, ScaledIdentity)
    opt.step(lambda backward=True: (A @ w - y) ** 2)
    G = 2 * (A @ w0 - y)[:, None] * A
    expected = G.T @ torch.linalg.pinv(G @ G.T, hermitian=True) @ torch.ones(8, dtype=F64)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w0 - w.detach(), expected, rtol=1e-6, atol=1e-8)
    H = mod.get_H(tz.core.Var([w], None, None, 1))
    assert isinstance(H, AtA)
    v = _randn(2, seed=74)
    torch.testing.assert_close(H.matvec(v), G.T @ G @ v)


def test_natural_gradient_errors():
    A, y, w = _least_squares_problem(seed=75)
    opt = tz.Modular([w], NaturalGradient(), tz.m.LR(1.0))
    ((A @ w - y) ** 2).sum().backward()
    with pytest.raises(RuntimeError, match="NaturalGradient"):
        opt.step()
    with pytest.raises(RuntimeError, match="NaturalGradient"):
        opt.step(loss=((A @ w - y) ** 2).detach())


# ------------------------------------------------------------------------------------------------------------------
# invalid arguments
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: Shampoo(beta=1.0), lambda: Shampoo(reg=-1), lambda: Shampoo(update_freq=0), lambda: Shampoo(max_dim=0),
    lambda: Shampoo(exp_override=0), lambda: Shampoo(adagrad_eps=-1), lambda: Shampoo(decay=-0.1),
    lambda: SOAP(beta1=1.0), lambda: SOAP(beta2=-0.1), lambda: SOAP(shampoo_beta=1.5), lambda: SOAP(precond_freq=0),
    lambda: SOAP(eps=-1), lambda: SOAP(max_dim=0),
    lambda: FullMatrixAdagrad(beta=1.0), lambda: FullMatrixAdagrad(init="eye"), lambda: FullMatrixAdagrad(reg=-1),
    lambda: FullMatrixAdagrad(precond_freq=0), lambda: FullMatrixAdagrad(decay=-1),
    lambda: LMAdagrad(history_size=0), lambda: LMAdagrad(damping=-1), lambda: LMAdagrad(order=0),
    lambda: LMAdagrad(U_beta=1.0), lambda: LMAdagrad(interval=0), lambda: LMAdagrad(update_freq=0),
    lambda: Orthogonalize(ns_steps=-1), lambda: Orthogonalize(method="qr"), lambda: Orthogonalize(target="x"),
    lambda: MuonAdjustLR(alpha="a"), lambda: NaturalGradient(reg=-1),
])
def test_invalid_arguments(make):
    with pytest.raises((ValueError, TypeError)) as info:
        make()
    assert any(n in str(info.value) for n in ("Shampoo", "SOAP", "FullMatrixAdagrad", "LMAdagrad", "Orthogonalize",
                                              "MuonAdjustLR", "NaturalGradient"))
