"""SVRG against a plainly written loop of Johnson & Zhang's algorithm (closed-form least-squares gradients) with a
full-data closure, with accumulated anchors and with per-parameter α; the catalog check (first SVRG step sees exactly
the full gradient); correction of an already known loss/gradient; evaluation counts; resets; state; the sweep."""
from __future__ import annotations

import pytest
import torch
from sweep import check_module, roundtrip

import torchzero as tz
from torchzero.core import Module, Var
from torchzero.modules.adaptive.adam import Adam
from torchzero.modules.variance_reduction.svrg import SVRG

LR = tz.m.LR

SWEEP = {
    "SVRG": lambda: [SVRG(2), LR(0.01)],
    "SVRG_accum_alpha_no_svrg_loss": lambda: [SVRG(3, accum_steps=2, svrg_loss=False, alpha=0.5), LR(0.01)],
    "SVRG_adam": lambda: [SVRG(2, accum_steps=1), Adam(), LR(0.01)],
    "SVRG_adam_no_reset": lambda: [SVRG(2, reset_before_accum=False), Adam(), LR(0.01)],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    check_module(SWEEP[name], needs_closure=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_cuda(name: str) -> None:
    check_module(SWEEP[name], needs_closure=True, device="cuda")


# --------------------------------------------------------------------------------------------------
# a finite-sum least-squares problem: parameters w (3,) and bias (), 6 mini-batches of 4 rows
# --------------------------------------------------------------------------------------------------
N_BATCHES, BATCH = 6, 4
_g = torch.Generator().manual_seed(0)
A = torch.randn(N_BATCHES * BATCH, 3, generator=_g, dtype=torch.float64)
Y = torch.randn(N_BATCHES * BATCH, generator=_g, dtype=torch.float64)
A1 = torch.cat([A, torch.ones(len(A), 1, dtype=torch.float64)], 1)  # bias column, for the closed form
ORDER = torch.randint(0, N_BATCHES, (200,), generator=_g).tolist()  # mini-batch of each step


def rows(i: int | None) -> slice:
    return slice(None) if i is None else slice(i * BATCH, (i + 1) * BATCH)


def grad_plain(i: int | None, x: torch.Tensor) -> torch.Tensor:
    """Closed-form gradient of mean((A₁x − y)²) over mini-batch i (all rows for None)."""
    a, y = A1[rows(i)], Y[rows(i)]
    return 2 * a.T @ (a @ x - y) / len(y)


def loss_plain(i: int | None, x: torch.Tensor) -> torch.Tensor:
    a, y = A1[rows(i)], Y[rows(i)]
    return ((a @ x - y) ** 2).mean()


def make_params(x: torch.Tensor) -> list[torch.Tensor]:
    return [x[:3].clone().requires_grad_(), x[3].clone().requires_grad_()]


def flat(ts) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in ts])


def closure_for(opt: torch.optim.Optimizer, params: list[torch.Tensor], i: int | None):
    def closure(backward: bool = True) -> torch.Tensor:
        loss = ((A[rows(i)] @ params[0] + params[1] - Y[rows(i)]) ** 2).mean()
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss
    return closure


X0 = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)


class Record(Module):
    """Records the gradient and loss the next module sees."""

    def __init__(self):
        super().__init__()
        self.grads: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []

    def step(self, var: Var) -> Var:
        self.grads.append(flat(var.get_grad()))
        self.losses.append(torch.as_tensor(var.get_loss(False)).detach().clone())
        return var


# --------------------------------------------------------------------------------------------------
# against plain loops
# --------------------------------------------------------------------------------------------------
def test_full_closure_matches_plain_svrg():
    """Johnson & Zhang: every m steps x̃ = x, μ = ∇F(x̃); x ← x − η(∇f_i(x) − ∇f_i(x̃) + μ)."""
    m, lr, K = 5, 0.1, 23
    x = X0.clone()
    xs_ref = []
    for k in range(K):
        if k % m == 0:
            x_tilde, mu = x.clone(), grad_plain(None, x)
        i = ORDER[k]
        x = x - lr * (grad_plain(i, x) - grad_plain(i, x_tilde) + mu)
        xs_ref.append(x)

    params = make_params(X0)
    opt = tz.Modular(params, SVRG(m), LR(lr))
    for k in range(K):
        opt.step(closure_for(opt, params, ORDER[k]), full_closure=closure_for(opt, params, None))
        torch.testing.assert_close(flat(params), xs_ref[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("accum_steps", [None, 1, 3])
def test_accumulated_anchor_matches_plain_loop(accum_steps):
    """Without a full closure, μ and F(x̃) are the means of `a` mini-batch gradients and losses at x̃ (no update
    during the first a − 1 steps); the a-th step is also the first SVRG step. Checks the parameters after every step
    and the corrected loss f_i(x) − (f_i(x̃) − F(x̃)) the next module sees, over several anchors."""
    m, lr, K = 4, 0.1, 30
    a = m if accum_steps is None else accum_steps
    x = X0.clone()
    xs_ref, losses_ref = [], []
    k = 0
    while k < K:
        x_tilde = x.clone()
        batches = ORDER[k:k + a]
        mu = sum(grad_plain(i, x_tilde) for i in batches) / a
        f_full = sum(loss_plain(i, x_tilde) for i in batches) / a
        for _ in range(a - 1):
            xs_ref.append(x)
        k += a - 1
        for _ in range(m):
            i = ORDER[k]
            losses_ref.append(loss_plain(i, x) - (loss_plain(i, x_tilde) - f_full))
            x = x - lr * (grad_plain(i, x) - grad_plain(i, x_tilde) + mu)
            xs_ref.append(x)
            k += 1

    params = make_params(X0)
    record = Record()
    opt = tz.Modular(params, SVRG(m, accum_steps=accum_steps), record, LR(lr))
    for k in range(K):
        opt.step(closure_for(opt, params, ORDER[k]))
        torch.testing.assert_close(flat(params), xs_ref[k], rtol=1e-12, atol=1e-14)
    assert len(record.losses) == len(losses_ref[:len(record.losses)]) > 2 * m
    torch.testing.assert_close(torch.stack(record.losses), torch.stack(losses_ref[:len(record.losses)]),
                               rtol=1e-12, atol=1e-14)


def test_per_parameter_alpha_and_loss_match_plain_loop():
    """g = ∇f_i(x) − α(∇f_i(x̃) − μ) with per-parameter α (parameter groups); the loss the next module sees is
    f_i(x) − α₀(f_i(x̃) − F(x̃))."""
    m, lr, K = 3, 0.1, 10
    alpha = torch.tensor([0.5, 0.5, 0.5, 0.8], dtype=torch.float64)
    x = X0.clone()
    xs_ref, losses_ref = [], []
    for k in range(K):
        if k % m == 0:
            x_tilde, mu, f_full = x.clone(), grad_plain(None, x), loss_plain(None, x)
        i = ORDER[k]
        losses_ref.append(loss_plain(i, x) - 0.5 * (loss_plain(i, x_tilde) - f_full))
        x = x - lr * (grad_plain(i, x) - alpha * (grad_plain(i, x_tilde) - mu))
        xs_ref.append(x)

    params = make_params(X0)
    record = Record()
    svrg = SVRG(m, alpha=0.5).set_param_groups([{"params": [params[1]], "alpha": 0.8}])
    opt = tz.Modular(params, svrg, record, LR(lr))
    for k in range(K):
        opt.step(closure_for(opt, params, ORDER[k]), full_closure=closure_for(opt, params, None))
        torch.testing.assert_close(flat(params), xs_ref[k], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(record.losses[k], losses_ref[k], rtol=1e-12, atol=1e-14)


def test_svrg_loss_false_returns_minibatch_loss():
    params = make_params(X0)
    record = Record()
    opt = tz.Modular(params, SVRG(3, svrg_loss=False), record, LR(0.1))
    for k in range(4):
        x = flat(params)
        opt.step(closure_for(opt, params, ORDER[k]), full_closure=closure_for(opt, params, None))
        torch.testing.assert_close(record.losses[k], loss_plain(ORDER[k], x), rtol=1e-13, atol=0)


# --------------------------------------------------------------------------------------------------
# catalog check and known values
# --------------------------------------------------------------------------------------------------
def _full_grad_autograd(params, rows_list):
    """The full gradient as the mean of the given mini-batches' autograd gradients (in that order)."""
    total = None
    for i in rows_list:
        loss = ((A[rows(i)] @ params[0] + params[1] - Y[rows(i)]) ** 2).mean()
        g = flat(torch.autograd.grad(loss, params))
        total = g if total is None else total + g
    return total / len(rows_list)


def test_first_svrg_step_sees_exact_full_gradient_full_closure():
    """Catalog check: on the first SVRG step (x = x₀) the next module sees exactly the full gradient."""
    params = make_params(X0)
    expected = _full_grad_autograd(params, [None])
    record = Record()
    opt = tz.Modular(params, SVRG(3), record, LR(0.1))
    opt.step(closure_for(opt, params, ORDER[0]), full_closure=closure_for(opt, params, None))
    torch.testing.assert_close(record.grads[0], expected, rtol=0, atol=1e-16)
    torch.testing.assert_close(record.losses[0], loss_plain(None, X0), rtol=1e-14, atol=0)


def test_first_svrg_step_sees_exact_full_gradient_accumulated():
    params = make_params(X0)
    expected = _full_grad_autograd(params, ORDER[:3])
    record = Record()
    opt = tz.Modular(params, SVRG(3), record, LR(0.1))
    for k in range(3):
        opt.step(closure_for(opt, params, ORDER[k]))
    assert len(record.grads) == 1  # the accumulation steps stop the chain
    torch.testing.assert_close(record.grads[0], expected, rtol=0, atol=1e-16)
    f_full = sum(loss_plain(i, X0) for i in ORDER[:3]) / 3
    torch.testing.assert_close(record.losses[0], f_full, rtol=1e-14, atol=0)


def test_known_loss_and_grad_are_recomputed_through_svrg_closure():
    """A loss/gradient known before SVRG steps (raw, or seeded from a previous step) is dropped, and what the next
    module gets is the corrected value, at the anchor and elsewhere; parameters are restored exactly."""
    params = make_params(X0)
    svrg = SVRG(3)
    sgd = torch.optim.SGD(params, 0.1)  # only for zero_grad in the closures

    def step_with_known(i):
        var = Var(params=params, closure=closure_for(sgd, params, i), model=None, current_step=0,
                  storage={"full_closure": closure_for(sgd, params, None)})
        x = flat(params)
        var.loss = loss_plain(i, x)
        var.grad = [g.reshape(p.shape) for g, p in zip(grad_plain(i, x).split([3, 1]), params)]
        var = svrg.step(var)
        assert var.loss is None and var.grad is None
        return flat(var.get_grad()), var.get_loss(False)

    g, f = step_with_known(ORDER[0])
    torch.testing.assert_close(g, grad_plain(None, X0), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(f, loss_plain(None, X0), rtol=1e-13, atol=0)

    with torch.no_grad():
        params[0].add_(0.1)
    x = flat(params)
    i = ORDER[1]
    g, f = step_with_known(i)
    torch.testing.assert_close(g, grad_plain(i, x) - grad_plain(i, X0) + grad_plain(None, X0), rtol=1e-12,
                               atol=1e-14)
    torch.testing.assert_close(f, loss_plain(i, x) - (loss_plain(i, X0) - loss_plain(None, X0)), rtol=1e-13, atol=0)
    torch.testing.assert_close(flat(params), x, rtol=0, atol=0)


def test_update_set_before_svrg_is_an_error():
    params = make_params(X0)
    opt = tz.Modular(params, tz.m.ClipValue(1.0), SVRG(2, accum_steps=1), LR(0.1))
    with pytest.raises(RuntimeError, match="SVRG"):
        opt.step(closure_for(opt, params, 0))


# --------------------------------------------------------------------------------------------------
# evaluations, resets, state
# --------------------------------------------------------------------------------------------------
def test_num_evaluations():
    params = make_params(X0)
    opt = tz.Modular(params, SVRG(3, accum_steps=2), LR(0.1))
    counts = []
    for k in range(9):
        before = opt.num_evaluations
        opt.step(closure_for(opt, params, ORDER[k]))
        counts.append(opt.num_evaluations - before)
    # accumulate (1), anchor = first SVRG step (1, corrected without evaluating), two SVRG steps (2 each)
    assert counts == [1, 1, 2, 2] * 2 + [1]

    params = make_params(X0)
    opt = tz.Modular(params, SVRG(2), LR(0.1))
    counts = []
    for k in range(4):
        before = opt.num_evaluations
        opt.step(closure_for(opt, params, ORDER[k]), full_closure=closure_for(opt, params, None))
        counts.append(opt.num_evaluations - before)
    assert counts == [2, 2, 2, 2]  # the full closure is not counted


@pytest.mark.parametrize("reset_before_accum", [True, False])
def test_reset_before_accum(reset_before_accum):
    params = make_params(X0)
    adam = Adam()
    opt = tz.Modular(params, SVRG(2, accum_steps=1, reset_before_accum=reset_before_accum), adam, LR(0.1))
    opt.step(closure_for(opt, params, ORDER[0]))
    assert len(adam.state) == 2  # the anchor step: SVRG step 1
    opt.step(closure_for(opt, params, ORDER[1]))  # SVRG step 2: the anchor is dropped
    assert (len(adam.state) == 0) == reset_before_accum
    assert "full_loss" not in opt.modules[0].global_state
    assert all("x_0" not in s and "full_grad" not in s for s in opt.modules[0].state.values())


@pytest.mark.parametrize("n_before", [1, 2, 3, 4, 5])
def test_state_dict_round_trip_any_phase(n_before):
    """Saved during accumulation or during the SVRG steps, a weights_only round trip continues bit-identically."""
    def make():
        params = make_params(X0)
        return params, tz.Modular(params, SVRG(3, accum_steps=2), Adam(), LR(0.05))

    pa, opt_a = make()
    for k in range(n_before):
        opt_a.step(closure_for(opt_a, pa, ORDER[k]))
    sd = roundtrip(opt_a.state_dict())
    pb, opt_b = make()
    with torch.no_grad():
        for p, q in zip(pb, pa):
            p.copy_(q)
    opt_b.load_state_dict(sd)
    for k in range(n_before, n_before + 6):
        opt_a.step(closure_for(opt_a, pa, ORDER[k]))
        opt_b.step(closure_for(opt_b, pb, ORDER[k]))
    assert all(torch.equal(a, b) for a, b in zip(pa, pb))


def test_requires_closure():
    params = make_params(X0)
    opt = tz.Modular(params, SVRG(2), LR(0.1))
    closure_for(opt, params, 0)()
    with pytest.raises(RuntimeError, match="SVRG"):
        opt.step()


@pytest.mark.parametrize("make, exc", [
    (lambda: SVRG(0), ValueError),
    (lambda: SVRG(2.5), TypeError),
    (lambda: SVRG(2, accum_steps=0), ValueError),
    (lambda: SVRG(2, reset_before_accum=1), TypeError),
    (lambda: SVRG(2, svrg_loss=None), TypeError),
    (lambda: SVRG(2, alpha=float("nan")), ValueError),
    (lambda: SVRG(2, alpha="1"), TypeError),
])
def test_invalid_arguments(make, exc):
    with pytest.raises(exc, match="SVRG"):
        make()


def test_signature_matches_catalog():
    import inspect
    assert [(p.name, p.default) for p in inspect.signature(SVRG).parameters.values()] == [
        ("svrg_steps", inspect.Parameter.empty), ("accum_steps", None), ("reset_before_accum", True),
        ("svrg_loss", True), ("alpha", 1)]
