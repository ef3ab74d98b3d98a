"""Tests of torchzero.utils.derivatives against closed forms and torch.autograd.functional.

The test objective is ``f(x) = ½ xᵀAx + Σ sin(x)`` with ``x`` the concatenation of several parameter
tensors of different shapes, so ``∇f = Ax + cos x``, ``∇²f = A − diag(sin x)``.
"""

import math

import pytest
import torch

from torchzero.utils.derivatives import (
    flatten_jacobian,
    hessian,
    hessian_mat,
    hvp,
    hvp_fd_central,
    hvp_fd_forward,
    jacobian_and_hessian_mat_wrt,
    jacobian_and_hessian_wrt,
    jacobian_wrt,
    jvp,
    jvp_fd_central,
    jvp_fd_forward,
)

SHAPES = [(), (3,), (2, 2), (2, 1, 2), (1, 2, 1, 1)]  # 0-d, 1-d, 2-d, 3-d, 4-d with size-1 dims


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def split_like(vec, params):
    sizes = [p.numel() for p in params]
    return [c.view(p.shape) for c, p in zip(torch.split(vec, sizes), params)]


class Problem:
    """``f = ½ xᵀAx + Σ sin x`` split across parameters of different shapes, with a counting closure."""

    def __init__(self, dtype=torch.float64, seed=0, shapes=SHAPES):
        gen = torch.Generator().manual_seed(seed)
        self.n = sum(math.prod(s) for s in shapes)
        B = torch.randn(self.n, self.n, generator=gen, dtype=dtype)
        self.A = (B + B.T) / 2
        self.params = [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]
        self.num_calls = 0
        self.num_backward = 0

    def flat_fn(self, x):
        # (x * (A @ x)).sum() rather than x @ A @ x: the legacy vmap used by
        # autograd.functional's forward-mode outer Jacobian mishandles vector @ matrix @ vector
        return 0.5 * (x * (self.A @ x)).sum() + x.sin().sum()

    def f(self):
        return self.flat_fn(flat(self.params))

    def closure(self, backward=True):
        self.num_calls += 1
        if backward:
            self.num_backward += 1
            for p in self.params:
                p.grad = None
            loss = self.f()
            loss.backward()
            return loss
        return self.f()

    # closed forms at the current parameters
    def x(self):
        return flat(self.params).detach()

    def grad(self):
        x = self.x()
        return self.A @ x + x.cos()

    def hess(self):
        x = self.x()
        return self.A - torch.diag(x.sin())

    def hvp(self, v_flat):
        return self.A @ v_flat - self.x().sin() * v_flat

    def random_vec(self, seed=1):
        gen = torch.Generator().manual_seed(seed)
        return [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in self.params]


def bits(t):
    return t.detach().clone().view(torch.int64 if t.dtype == torch.float64 else torch.int32)


# --------------------------------------------------------------------------------------------
# hvp (autograd)
# --------------------------------------------------------------------------------------------


def test_hvp_matches_closed_form():
    pb = Problem()
    grads = torch.autograd.grad(pb.f(), pb.params, create_graph=True)
    for seed in (1, 2):  # several products from the same graph
        v = pb.random_vec(seed)
        Hv = hvp(pb.params, grads, v, retain_graph=True)
        assert [h.shape for h in Hv] == [p.shape for p in pb.params]
        torch.testing.assert_close(flat(Hv), pb.hvp(flat(v)), rtol=1e-12, atol=1e-12)


def test_hvp_create_graph_gives_third_derivative():
    pb = Problem()
    grads = torch.autograd.grad(pb.f(), pb.params, create_graph=True)
    v = pb.random_vec()
    Hv = hvp(pb.params, grads, v, create_graph=True)
    # d/dx of Σ (Hv)_i = d/dx Σ (A v − sin(x) v) = −cos(x) ⊙ v
    third = torch.autograd.grad(flat(Hv).sum(), pb.params)
    torch.testing.assert_close(flat(third), -pb.x().cos() * flat(v), rtol=1e-12, atol=1e-12)


def test_hvp_linear_and_constant_gradients_give_zeros():
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 3, dtype=torch.float64)
    loss = (x**3).sum() + (c * y).sum()  # y enters linearly: its gradient carries no graph
    grads = torch.autograd.grad(loss, [x, y], create_graph=True)
    assert not grads[1].requires_grad
    vx, vy = torch.randn(4, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    Hx, Hy = hvp([x, y], grads, [vx, vy])
    torch.testing.assert_close(Hx, 6 * x.detach() * vx)
    assert torch.equal(Hy, torch.zeros_like(y))

    grads_lin = torch.autograd.grad((c * y).sum(), [y], create_graph=True)
    (H,) = hvp([y], grads_lin, [vy])
    assert torch.equal(H, torch.zeros_like(y))


# --------------------------------------------------------------------------------------------
# finite-difference products
# --------------------------------------------------------------------------------------------


def _hvp_forward(pb, v, h, normalize):
    return hvp_fd_forward(pb.closure, pb.params, v, h=h, normalize=normalize)


def _hvp_central(pb, v, h, normalize):
    return hvp_fd_central(pb.closure, pb.params, v, h=h, normalize=normalize)


def _jvp_forward(pb, v, h, normalize):
    return jvp_fd_forward(pb.f, pb.params, v, h=h, normalize=normalize)


def _jvp_central(pb, v, h, normalize):
    return jvp_fd_central(pb.f, pb.params, v, h=h, normalize=normalize)


FD_FUNCS = {
    "hvp_forward": (_hvp_forward, 1),
    "hvp_central": (_hvp_central, 2),
    "jvp_forward": (_jvp_forward, 1),
    "jvp_central": (_jvp_central, 2),
}


def _fd_error(pb, name, v, h, normalize):
    fd, _ = FD_FUNCS[name]
    _, res = fd(pb, v, h, normalize)
    if name.startswith("hvp"):
        return (flat(res) - pb.hvp(flat(v))).norm().item()
    return (res - pb.grad() @ flat(v)).abs().item()


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("name", list(FD_FUNCS))
def test_fd_error_order(name, normalize):
    """Dividing h by 10 divides the error by ~10 (first order) or ~100 (second order)."""
    pb = Problem()
    v = pb.random_vec()
    order = FD_FUNCS[name][1]
    e1 = _fd_error(pb, name, v, 1e-2, normalize)
    e2 = _fd_error(pb, name, v, 1e-3, normalize)
    ratio = e1 / e2
    expected = 10**order
    assert expected / 2 < ratio < expected * 2, (e1, e2, ratio)
    # and the error is small in absolute terms: C·h^order with a moderate constant
    assert e2 < 50 * (1e-3) ** order


def test_hvp_fd_forward_with_and_without_g0():
    pb = Problem()
    v = pb.random_vec()
    loss, Hv = hvp_fd_forward(pb.closure, pb.params, v, h=1e-4, normalize=True)
    assert pb.num_backward == 2
    torch.testing.assert_close(loss.detach(), pb.f().detach())  # loss at x when g_0 was evaluated
    g0 = split_like(pb.grad(), pb.params)
    loss2, Hv2 = hvp_fd_forward(pb.closure, pb.params, v, h=1e-4, g_0=g0, normalize=True)
    assert pb.num_backward == 3  # only the shifted point
    torch.testing.assert_close(flat(Hv2), flat(Hv), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(flat(Hv), pb.hvp(flat(v)), rtol=1e-3, atol=1e-3)


def test_normalize_makes_h_an_absolute_step():
    """With normalize=True the result does not depend on the scale of v beyond linearity."""
    pb = Problem()
    v = pb.random_vec()
    v_big = [t * 1000 for t in v]
    _, Hv = hvp_fd_central(pb.closure, pb.params, v, h=1e-3, normalize=True)
    _, Hv_big = hvp_fd_central(pb.closure, pb.params, v_big, h=1e-3, normalize=True)
    torch.testing.assert_close(flat(Hv_big), 1000 * flat(Hv), rtol=1e-9, atol=1e-9)
    # without normalisation the big vector takes a 1000x longer step and is much less accurate
    _, Hv_big_raw = hvp_fd_central(pb.closure, pb.params, v_big, h=1e-3, normalize=False)
    err_norm = (flat(Hv_big) - 1000 * pb.hvp(flat(v))).norm()
    err_raw = (flat(Hv_big_raw) - 1000 * pb.hvp(flat(v))).norm()
    assert err_raw > 100 * err_norm


def test_fd_param_without_gradient_counts_as_zero():
    pb = Problem()
    unused = torch.randn(3, dtype=torch.float64, requires_grad=True)
    params = [*pb.params, unused]
    v = [*pb.random_vec(), torch.randn(3, dtype=torch.float64)]
    for fd in (hvp_fd_forward, hvp_fd_central):
        _, Hv = fd(pb.closure, params, v, h=1e-4, normalize=True)
        assert torch.equal(Hv[-1], torch.zeros(3, dtype=torch.float64))
        torch.testing.assert_close(flat(Hv[:-1]), pb.hvp(flat(v[:-1])), rtol=1e-3, atol=1e-3)
        assert unused.grad is None


@pytest.mark.parametrize("name", list(FD_FUNCS))
def test_fd_restores_params_bit_exactly_and_clears_grads(name):
    pb = Problem()
    with torch.no_grad():
        pb.params[1][0] = -0.0  # (-0.0 + s) - s is +0.0
    for p in pb.params:
        p.grad = torch.ones_like(p)
    saved = [bits(p) for p in pb.params]
    v = pb.random_vec()
    h = 1.0  # a large step, so that undoing it by arithmetic would round
    # sanity: undoing the step by subtraction/addition would not restore these values exactly
    x = pb.x()
    step = flat(v) * (h / flat(v).norm())
    assert not torch.equal(bits((x + step) - step), bits(x))
    assert not torch.equal(bits((x - step) + step), bits(x))
    x[1] = 1.0
    assert not torch.equal((x + step) - step, x)
    assert not torch.equal((x - step) + step, x)

    fd, _ = FD_FUNCS[name]
    fd(pb, v, h, True)
    for p, s in zip(pb.params, saved):
        assert torch.equal(bits(p), s)
        assert p.grad is None
        assert p.requires_grad


@pytest.mark.parametrize("name", list(FD_FUNCS))
def test_fd_restores_params_when_closure_raises(name):
    pb = Problem()
    saved = [bits(p) for p in pb.params]
    calls = {"n": 0}

    def bad_closure(backward=True):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return pb.closure(backward)

    fns = {
        "hvp_forward": lambda: hvp_fd_forward(bad_closure, pb.params, pb.random_vec(), normalize=True),
        "hvp_central": lambda: hvp_fd_central(bad_closure, pb.params, pb.random_vec(), normalize=True),
        "jvp_forward": lambda: jvp_fd_forward(lambda: bad_closure(False), pb.params, pb.random_vec()),
        "jvp_central": lambda: jvp_fd_central(lambda: bad_closure(False), pb.params, pb.random_vec()),
    }
    with pytest.raises(RuntimeError, match="boom"):
        fns[name]()
    for p, s in zip(pb.params, saved):
        assert torch.equal(bits(p), s)
        assert p.grad is None


def test_zero_vector_gives_zero_product():
    pb = Problem()
    zero = [torch.zeros_like(p) for p in pb.params]

    loss, Hv = hvp_fd_central(pb.closure, pb.params, zero, normalize=True)
    assert pb.num_calls == 0 and loss is None
    assert all(torch.equal(h, torch.zeros_like(p)) for h, p in zip(Hv, pb.params))

    # forward without g_0: evaluates at x only (not at a shifted point) and returns that loss
    loss, Hv = hvp_fd_forward(pb.closure, pb.params, zero, normalize=True)
    assert pb.num_calls == 1
    torch.testing.assert_close(loss.detach(), pb.f().detach())
    assert all(torch.equal(h, torch.zeros_like(p)) for h, p in zip(Hv, pb.params))
    assert all(p.grad is None for p in pb.params)

    g0 = split_like(pb.grad(), pb.params)
    loss, Hv = hvp_fd_forward(pb.closure, pb.params, zero, g_0=g0, normalize=True)
    assert pb.num_calls == 1 and loss is None
    assert all(torch.equal(h, torch.zeros_like(p)) for h, p in zip(Hv, pb.params))

    loss, d = jvp_fd_central(pb.closure, pb.params, zero, normalize=True)
    assert pb.num_calls == 1 and loss is None and d.item() == 0
    v0 = pb.f().detach()
    loss, d = jvp_fd_forward(pb.closure, pb.params, zero, v_0=v0, normalize=True)
    assert pb.num_calls == 1 and loss is v0 and d.item() == 0


# --------------------------------------------------------------------------------------------
# hessian / hessian_mat
# --------------------------------------------------------------------------------------------

HESSIAN_VARIANTS = [
    dict(method="func"),
    dict(method="autograd.functional"),
    dict(method="autograd.functional", vectorize=True),
    dict(method="autograd.functional", vectorize=True, outer_jacobian_strategy="forward-mode"),
]


@pytest.mark.parametrize("kwargs", HESSIAN_VARIANTS)
def test_hessian_mat_matches_reference(kwargs):
    pb = Problem()
    saved = [bits(p) for p in pb.params]
    H = hessian_mat(pb.f, pb.params, **kwargs)
    assert H.shape == (pb.n, pb.n) and H.dtype == torch.float64
    ref = torch.autograd.functional.hessian(pb.flat_fn, pb.x())
    torch.testing.assert_close(H, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(H, pb.hess(), rtol=1e-12, atol=1e-12)
    assert not H.requires_grad
    for p, s in zip(pb.params, saved):
        assert torch.equal(bits(p), s) and p.grad is None and p.requires_grad


@pytest.mark.parametrize("kwargs", HESSIAN_VARIANTS)
def test_hessian_blocks(kwargs):
    pb = Problem()
    H = hessian(pb.f, pb.params, **kwargs)
    full = pb.hess()
    offsets = [0]
    for p in pb.params:
        offsets.append(offsets[-1] + p.numel())
    assert len(H) == len(pb.params)
    for i, pi in enumerate(pb.params):
        assert len(H[i]) == len(pb.params)
        for j, pj in enumerate(pb.params):
            assert H[i][j].shape == (*pi.shape, *pj.shape)
            block = full[offsets[i] : offsets[i + 1], offsets[j] : offsets[j + 1]]
            torch.testing.assert_close(H[i][j].reshape(pi.numel(), pj.numel()), block, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["func", "autograd.functional"])
def test_hessian_mat_create_graph(method):
    pb = Problem()
    H = hessian_mat(pb.f, pb.params, create_graph=True, method=method)
    assert H.requires_grad
    # d/dx Σ_ij (A − diag(sin x))_ij = −cos x
    g = torch.autograd.grad(H.sum(), pb.params)
    torch.testing.assert_close(flat(g), -pb.x().cos(), rtol=1e-12, atol=1e-12)


def test_hessian_accepts_closure_without_backward():
    pb = Problem()
    H = hessian_mat(pb.closure, pb.params)
    torch.testing.assert_close(H, pb.hess(), rtol=1e-12, atol=1e-12)
    assert pb.num_backward == 0
    assert all(p.grad is None for p in pb.params)


@pytest.mark.parametrize("method", ["func", "autograd.functional"])
def test_hessian_mat_nn_module(method):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    X = torch.randn(8, 3, dtype=torch.float64)
    y = torch.randn(8, 1, dtype=torch.float64)
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())

    def fn():
        return torch.nn.functional.mse_loss(model(X), y)

    def ref_fn(x):
        values = dict(zip(names, split_like(x, params)))
        return torch.nn.functional.mse_loss(torch.func.functional_call(model, values, (X,)), y)

    H = hessian_mat(fn, params, method=method)
    ref = torch.autograd.functional.hessian(ref_fn, flat(params).detach())
    torch.testing.assert_close(H, ref, rtol=1e-10, atol=1e-12)
    # the parameters still work normally afterwards
    loss = fn()
    loss.backward()
    assert all(p.grad is not None for p in params)


def test_hessian_exception_ends_substitution():
    pb = Problem()

    def bad():
        pb.f()
        raise RuntimeError("boom")

    for method in ("func", "autograd.functional"):
        with pytest.raises(RuntimeError, match="boom"):
            hessian_mat(bad, pb.params, method=method)
        # if the parameters were still substituted, the loss would not depend on them
        g = torch.autograd.grad(pb.f(), pb.params)
        torch.testing.assert_close(flat(g), pb.grad(), rtol=1e-12, atol=1e-12)


def test_substitution_keeps_parameters_hashable_by_identity():
    p = torch.randn(3, dtype=torch.float64, requires_grad=True)
    scale = {p: 2.0}  # looked up by parameter inside fn

    def fn():
        return scale[p] * (p**3).sum()

    for method in ("func", "autograd.functional"):
        torch.testing.assert_close(hessian_mat(fn, [p], method=method), torch.diag(12 * p.detach()))
    _, d = jvp(fn, [p], [torch.ones(3, dtype=torch.float64)])
    torch.testing.assert_close(d, (6 * p.detach() ** 2).sum())


def test_hessian_rejects_bad_inputs():
    pb = Problem()
    with pytest.raises(ValueError):
        hessian_mat(pb.f, pb.params, method="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        hessian_mat(lambda: flat(pb.params) * 2, pb.params)


# --------------------------------------------------------------------------------------------
# jacobians
# --------------------------------------------------------------------------------------------


def _vector_outputs(ps):
    p0, p1, p2, p3, _ = ps  # the last parameter does not influence the output
    return [(p0 * p1).sin(), (p2 @ p2).reshape(-1), (p3.sum() ** 2).reshape(1)]


def test_jacobian_wrt_matches_autograd_functional():
    pb = Problem()
    out = _vector_outputs(pb.params)
    n_out = sum(o.numel() for o in out)
    J_b = jacobian_wrt(out, pb.params, batched=True)
    J_u = jacobian_wrt(out, pb.params, batched=False)
    ref = torch.autograd.functional.jacobian(lambda *xs: flat(_vector_outputs(xs)), tuple(pb.params))
    for jb, ju, r, p in zip(J_b, J_u, ref, pb.params):
        assert jb.shape == ju.shape == (n_out, *p.shape)
        torch.testing.assert_close(jb, r, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ju, r, rtol=1e-12, atol=1e-12)
    assert torch.equal(J_b[-1], torch.zeros_like(J_b[-1]))  # unused input gives zeros
    assert flatten_jacobian(J_b).shape == (n_out, pb.n)
    torch.testing.assert_close(flatten_jacobian(J_b), flatten_jacobian(J_u), rtol=1e-12, atol=1e-12)


def test_jacobian_wrt_batched_backward_of_matvec_is_one_matmul():
    """The batched Jacobian of ``A x`` uses functorch's batching rule (one ``mm``), not the legacy vmap of
    ``is_grads_batched`` that runs a ``bmm`` over ``n`` expanded copies of ``A``."""
    A = torch.randn(40, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.randn(30, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad((A @ x).exp().sum(), x, create_graph=True)
    with torch.profiler.profile() as prof:
        (H,) = jacobian_wrt(g, [x])
    ops = {e.key for e in prof.key_averages()}
    assert "aten::bmm" not in ops
    torch.testing.assert_close(H, A.T @ torch.diag((A @ x).exp().detach()) @ A, rtol=1e-12, atol=1e-12)


class _ItemInBackward(torch.autograd.Function):
    """``y = 2x`` whose backward reads a Python scalar from its input (cannot be vmapped)."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        return grad * (2.0 if grad.abs().sum().item() >= 0 else 0.0)


def test_jacobian_wrt_batched_falls_back_when_backward_cannot_be_vmapped():
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    y = _ItemInBackward.apply(x * grad_scale(x))
    (J,) = jacobian_wrt(y, [x], batched=True)
    (J_loop,) = jacobian_wrt(y, [x], batched=False)
    torch.testing.assert_close(J, J_loop, rtol=0, atol=0)
    torch.testing.assert_close(J, 2 * torch.autograd.functional.jacobian(lambda z: z * grad_scale(z), x.detach()))


def grad_scale(x):
    return x.square() + 1


def test_jacobian_wrt_output_without_graph_gives_zeros():
    pb = Problem()
    out = torch.ones(3, dtype=torch.float64)
    for batched in (True, False):
        J = jacobian_wrt(out, pb.params, batched=batched)
        assert [j.shape for j in J] == [(3, *p.shape) for p in pb.params]
        assert all(torch.equal(j, torch.zeros_like(j)) for j in J)


@pytest.mark.parametrize("batched", [True, False])
def test_jacobian_and_hessian_scalar(batched):
    pb = Problem()
    J, H = jacobian_and_hessian_mat_wrt(pb.f(), pb.params, batched=batched)
    assert J.shape == (1, pb.n) and H.shape == (pb.n, pb.n)
    torch.testing.assert_close(J[0], pb.grad(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(H, pb.hess(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(H, hessian_mat(pb.f, pb.params), rtol=1e-12, atol=1e-12)
    assert not J.requires_grad and not H.requires_grad

    jacs, hess = jacobian_and_hessian_wrt([pb.f()], pb.params, batched=batched)
    assert [j.shape for j in jacs] == [(1, *p.shape) for p in pb.params]
    assert [h.shape for h in hess] == [(pb.n, *p.shape) for p in pb.params]


def test_jacobian_and_hessian_vector_output():
    pb = Problem()
    out = _vector_outputs(pb.params)
    n_out = sum(o.numel() for o in out)
    J, H = jacobian_and_hessian_mat_wrt(out, pb.params)
    assert J.shape == (n_out, pb.n) and H.shape == (n_out * pb.n, pb.n)
    H3 = H.reshape(n_out, pb.n, pb.n)
    for k in range(n_out):
        ref = torch.autograd.functional.hessian(
            lambda x, k=k: flat(_vector_outputs(split_like(x, pb.params)))[k], pb.x()
        )
        torch.testing.assert_close(H3[k], ref, rtol=1e-12, atol=1e-12)


def test_jacobian_and_hessian_create_graph():
    pb = Problem()
    J, H = jacobian_and_hessian_mat_wrt(pb.f(), pb.params, create_graph=True)
    assert J.requires_grad and H.requires_grad
    g = torch.autograd.grad(H.diagonal().sum(), pb.params)
    torch.testing.assert_close(flat(g), -pb.x().cos(), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# jvp
# --------------------------------------------------------------------------------------------


def test_jvp_forward_mode():
    pb = Problem()
    t = pb.random_vec()
    saved = [bits(p) for p in pb.params]
    loss, d = jvp(pb.f, pb.params, t)
    torch.testing.assert_close(loss, pb.f().detach(), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(d, pb.grad() @ flat(t), rtol=1e-12, atol=1e-12)
    assert not loss.requires_grad and not d.requires_grad
    for p, s in zip(pb.params, saved):
        assert torch.equal(bits(p), s) and p.grad is None

    # a closure is evaluated without backward
    _, d2 = jvp(pb.closure, pb.params, t)
    assert pb.num_backward == 0
    torch.testing.assert_close(d2, d)

    # a loss that does not depend on the parameters has a zero derivative
    _, d3 = jvp(lambda: torch.tensor(2.0, dtype=torch.float64), pb.params, t)
    assert d3.item() == 0


def test_jvp_fd_values():
    pb = Problem()
    t = pb.random_vec()
    exact = pb.grad() @ flat(t)
    f0 = pb.f().detach()
    loss, d = jvp_fd_forward(pb.f, pb.params, t, h=1e-6)
    torch.testing.assert_close(loss.detach(), f0)
    torch.testing.assert_close(d, exact, rtol=1e-4, atol=1e-4)
    loss, d = jvp_fd_forward(pb.f, pb.params, t, h=1e-6, v_0=f0, normalize=True)
    assert loss is f0
    torch.testing.assert_close(d, exact, rtol=1e-4, atol=1e-4)
    loss, d = jvp_fd_central(pb.f, pb.params, t, h=1e-4, normalize=True)
    torch.testing.assert_close(d, exact, rtol=1e-7, atol=1e-7)
    # central returns the loss at the forward point x + h t / ‖t‖
    xp = pb.x() + 1e-4 * flat(t) / flat(t).norm()
    torch.testing.assert_close(loss, pb.flat_fn(xp), rtol=1e-14, atol=1e-14)


# --------------------------------------------------------------------------------------------
# float32
# --------------------------------------------------------------------------------------------


def test_float32():
    pb = Problem(dtype=torch.float32)
    v = pb.random_vec()
    ref_hv = pb.hvp(flat(v))
    scale = ref_hv.norm()

    grads = torch.autograd.grad(pb.f(), pb.params, create_graph=True)
    Hv = hvp(pb.params, grads, v)
    assert all(h.dtype == torch.float32 for h in Hv)
    assert (flat(Hv) - ref_hv).norm() < 1e-5 * scale

    for fd, tol in ((hvp_fd_forward, 2e-2), (hvp_fd_central, 2e-3)):
        _, Hv = fd(pb.closure, pb.params, v, h=1e-2, normalize=True)
        assert all(h.dtype == torch.float32 for h in Hv)
        assert (flat(Hv) - ref_hv).norm() < tol * scale

    for kwargs in HESSIAN_VARIANTS[:2]:
        H = hessian_mat(pb.f, pb.params, **kwargs)
        assert H.dtype == torch.float32
        torch.testing.assert_close(H, pb.hess(), rtol=1e-5, atol=1e-5)

    _, d = jvp(pb.f, pb.params, v)
    torch.testing.assert_close(d, pb.grad() @ flat(v), rtol=1e-5, atol=1e-5)
    _, d = jvp_fd_central(pb.f, pb.params, v, h=1e-2, normalize=True)
    torch.testing.assert_close(d, pb.grad() @ flat(v), rtol=1e-2, atol=1e-2)


def test_closure_wrapper_with_kwargs_is_called_without_backward():
    from torchzero.utils.derivatives import _call_without_backward

    calls = []

    def closure(backward=True):
        calls.append(backward)
        return torch.tensor(1.0)

    def wrapper(*args, **kwargs):  # like Modular's evaluation counter
        return closure(*args, **kwargs)

    def positional(*args):
        return closure(*args)

    _call_without_backward(wrapper)
    _call_without_backward(positional)
    assert calls == [False, False]
