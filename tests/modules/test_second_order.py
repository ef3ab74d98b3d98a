"""Second-order family: Newton, InverseFreeNewton, NewtonCG, NewtonCGSteihaug, NystromSketchAndSolve, NystromPCG,
TwoPointNewton, SixthOrder3P, SixthOrder5P, SixthOrder3PM2.

References: closed forms on quadratics (catalog "Check" lines), plain loop implementations of the algorithms written
here with exact Hessians from ``torch.autograd.functional.hessian``, ``scipy.optimize.minimize(method='trust-ncg')``
iteration counts, and the shared sweep.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import scipy.optimize
import torch
from sweep import Objective, check_module, make_params

import torchzero as tz
from torchzero.core import Var
from torchzero.modules.line_search.backtracking import Backtracking
from torchzero.modules.second_order.inverse_free_newton import InverseFreeNewton
from torchzero.modules.second_order.multipoint import SixthOrder3P, SixthOrder3PM2, SixthOrder5P, TwoPointNewton
from torchzero.modules.second_order.newton import Newton
from torchzero.modules.second_order.newton_cg import NewtonCG, NewtonCGSteihaug
from torchzero.modules.second_order.nystrom import NystromPCG, NystromSketchAndSolve
from torchzero.utils.linalg.linear_operator import Dense, DenseWithInverse

D = torch.float64
SMALL_SHAPES = [(), (3,), (2, 2), (1, 2, 1)]  # n = 10
# 0-d to 7-d with size-1 dims, n = 16 (the default sweep shapes have n = 41, which makes dense methods slow)
SHAPES_16 = [(), (1,), (3,), (1, 2), (2, 1, 1), (1, 1, 2, 1), (1, 1, 1, 1, 1), (1, 2, 1, 1, 1, 1),
             (1, 1, 1, 1, 1, 1, 2)]


# ------------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------------
def quadratic(n: int = 6, seed: int = 0, indefinite: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    L = torch.linspace(-2.2, 3, n, dtype=D) if indefinite else torch.linspace(0.5, 5, n, dtype=D)
    return (Q * L) @ Q.T, torch.randn(n, generator=g, dtype=D)


def quad_f(A: torch.Tensor, b: torch.Tensor) -> Callable[[Sequence[torch.Tensor]], torch.Tensor]:
    return lambda ps: 0.5 * ps[0] @ A @ ps[0] - b @ ps[0]


def smooth_f(ps: Sequence[torch.Tensor]) -> torch.Tensor:
    """A smooth strictly convex non-quadratic function of one vector."""
    x = ps[0]
    return torch.logsumexp(x * torch.arange(1, x.numel() + 1, dtype=x.dtype) / x.numel(), 0) + 0.5 * (x * x).sum() \
        + 0.1 * (x**4).sum()


def rosenbrock(ps: Sequence[torch.Tensor]) -> torch.Tensor:
    x = ps[0]
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def run(modules, x0: torch.Tensor | list[torch.Tensor], f: Callable, steps: int,
        stop: Callable[[list[torch.Tensor]], bool] | None = None) -> tuple[tz.Modular, list[torch.Tensor], int]:
    params = [t.clone().requires_grad_() for t in (x0 if isinstance(x0, list) else [x0])]
    opt = tz.Modular(params, *modules)

    def closure(backward: bool = True) -> torch.Tensor:
        loss = f(params)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    k = 0
    while k < steps:
        k += 1
        opt.step(closure)
        if stop is not None and stop(params):
            break
    return opt, params, k


def one_update(module, x: torch.Tensor | list[torch.Tensor], f: Callable) -> tuple[list[torch.Tensor], Var]:
    """The update of one step of ``module`` at ``x`` (parameters left unchanged) and the ``Var``."""
    params = [t.clone().requires_grad_() for t in (x if isinstance(x, list) else [x])]

    def closure(backward: bool = True) -> torch.Tensor:
        loss = f(params)
        if backward:
            for p in params:
                p.grad = None
            loss.backward()
        return loss

    var = Var(params=params, closure=closure, model=None, current_step=0)
    var = module.step(var)
    return [u.detach() for u in var.get_update()], var


def flat_grad_hess(f: Callable, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    g = torch.autograd.grad(f([x]), x)[0]
    H = torch.autograd.functional.hessian(lambda v: f([v]), x.detach())
    return g, H


# ------------------------------------------------------------------------------------------------------------------
# sweep
# ------------------------------------------------------------------------------------------------------------------
S16 = {"shapes": SHAPES_16}
SMALL = {"shapes": SMALL_SHAPES}
SWEEP: dict[str, tuple[Callable, dict]] = {
    "Newton": (lambda: [Newton(), tz.m.LR(0.5)], {}),
    "Newton_func_damping": (lambda: [Newton(damping=0.1, hessian_method="func", update_freq=2), tz.m.LR(0.5)], SMALL),
    "Newton_functional_inner": (lambda: [Newton(hessian_method="autograd.functional", inner=tz.m.EMA(0.5)),
                                         tz.m.LR(0.5)], SMALL),
    "Newton_eig": (lambda: [Newton(search_negative=True, eigval_fn=lambda L: L.abs() + 1e-3), tz.m.LR(0.5)], SMALL),
    "Newton_lstsq_noloop": (lambda: [Newton(use_lstsq=True, vectorize=False), tz.m.LR(0.5)], SMALL),
    "InverseFreeNewton": (lambda: [InverseFreeNewton(update_freq=2, inner=tz.m.EMA(0.5)), tz.m.LR(0.5)], SMALL),
    "NewtonCG": (lambda: [NewtonCG(), tz.m.LR(0.5)], {}),
    "NewtonCG_forward_warm": (lambda: [NewtonCG(hvp_method="forward", warm_start=True, maxiter=5), tz.m.LR(0.5)], SMALL),
    "NewtonCG_minres_central": (lambda: [NewtonCG(solver="minres", hvp_method="central"), tz.m.LR(0.5)], SMALL),
    "NewtonCG_minres_npc": (lambda: [NewtonCG(solver="minres_npc", inner=tz.m.EMA(0.5)), tz.m.LR(0.5)], SMALL),
    "NewtonCGSteihaug": (lambda: [NewtonCGSteihaug(maxiter=3)], SMALL),
    "NewtonCGSteihaug_autograd_minres": (lambda: [NewtonCGSteihaug(hvp_method="autograd", solver="minres",
                                                                   init=0.1, maxiter=3)], SMALL),
    "NystromSketchAndSolve": (lambda: [NystromSketchAndSolve(4, reg=1.0, seed=0), tz.m.LR(0.5)],
                              {"check_reset": False, **SMALL}),
    "NystromPCG": (lambda: [NystromPCG(4, seed=1, hvp_method="forward"), tz.m.LR(0.5)], {"check_reset": False, **SMALL}),
    "TwoPointNewton": (lambda: [TwoPointNewton(), tz.m.LR(0.5)], S16),
    "SixthOrder3P": (lambda: [SixthOrder3P(lstsq=True), tz.m.LR(0.5)], SMALL),
    "SixthOrder5P": (lambda: [SixthOrder5P(), tz.m.LR(0.5)], SMALL),
    "SixthOrder3PM2": (lambda: [SixthOrder3PM2(vectorize=False), tz.m.LR(0.5)], SMALL),
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name):
    factory, kwargs = SWEEP[name]
    check_module(factory, needs_closure=True, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# Newton
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hessian_method", ["autograd", "func", "autograd.functional"])
@pytest.mark.parametrize("vectorize", [True, False])
def test_newton_one_step_on_quadratic(hessian_method, vectorize):
    A, b = quadratic()
    _, (x,), _ = run([Newton(hessian_method=hessian_method, vectorize=vectorize)], torch.zeros(6, dtype=D),
                     quad_f(A, b), 1)
    torch.testing.assert_close(x.detach(), torch.linalg.solve(A, b), rtol=1e-13, atol=1e-14)


def test_newton_damping_first_step():
    A, b = quadratic()
    x0 = torch.randn(6, dtype=D)
    (u,), _ = one_update(Newton(damping=0.3), x0, quad_f(A, b))
    g = A @ x0 - b
    torch.testing.assert_close(u, torch.linalg.solve(A + 0.3 * torch.eye(6, dtype=D), g), rtol=1e-13, atol=1e-14)


def test_newton_trajectory_matches_loop_on_many_tensors():
    params = make_params(D, SMALL_SHAPES, seed=3)
    f = Objective(params)
    sizes = [p.numel() for p in params]

    def f_flat(x):
        return f([c.reshape(p.shape) for c, p in zip(torch.split(x, sizes), params)])

    x = torch.cat([p.detach().reshape(-1) for p in params])
    opt, ps, _ = run([Newton(), tz.m.LR(0.7)], [p.detach() for p in params], f, 5)
    for _ in range(5):
        g, H = flat_grad_hess(lambda v: f_flat(v[0]), x)
        x = x - 0.7 * torch.linalg.solve(H, g)
    torch.testing.assert_close(torch.cat([p.detach().reshape(-1) for p in ps]), x, rtol=1e-12, atol=1e-13)


def test_newton_update_freq_and_inner_match_loop():
    x = torch.tensor([0.5, -1.0, 2.0], dtype=D)
    _, (xt,), _ = run([Newton(update_freq=2, inner=tz.m.EMA(0.5))], x, smooth_f, 4)
    m = torch.zeros(3, dtype=D)
    H = None
    for k in range(4):
        g, H_new = flat_grad_hess(smooth_f, x)
        if k % 2 == 0:
            H = H_new
        m = 0.5 * m + 0.5 * g
        x = x - torch.linalg.solve(H, m)
    torch.testing.assert_close(xt.detach(), x, rtol=1e-12, atol=1e-13)


def test_newton_uses_one_closure_evaluation_per_step():
    opt, _, _ = run([Newton()], torch.ones(4, dtype=D), smooth_f, 3)
    assert opt.num_evaluations == 3


def test_newton_indefinite_default_is_lu_solve():
    A, b = quadratic(indefinite=True)
    x0 = torch.randn(6, dtype=D)
    (u,), _ = one_update(Newton(), x0, quad_f(A, b))
    torch.testing.assert_close(u, torch.linalg.solve(A, A @ x0 - b), rtol=1e-12, atol=1e-13)


def test_newton_search_negative_and_eigval_fn():
    A, b = quadratic(indefinite=True)
    x0 = torch.randn(6, dtype=D)
    g = A @ x0 - b
    L, Q = torch.linalg.eigh(A)
    (u,), _ = one_update(Newton(search_negative=True), x0, quad_f(A, b))
    neg = L < 0
    expected = sum(L[i].abs() * torch.sign(g @ Q[:, i]) * Q[:, i] for i in range(6) if neg[i]) / neg.sum()
    torch.testing.assert_close(u, expected, rtol=1e-12, atol=1e-13)
    assert float(g @ u) > 0 and float(u @ A @ u) < 0  # subtracting u descends along negative curvature
    # saddle-free Newton: |λ|
    module = Newton(eigval_fn=torch.abs)
    (u,), var = one_update(module, x0, quad_f(A, b))
    torch.testing.assert_close(u, Q @ ((Q.T @ g) / L.abs()), rtol=1e-12, atol=1e-13)
    H = module.get_H(var)
    assert isinstance(H, DenseWithInverse)
    torch.testing.assert_close(H.solve(g), u, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(H.to_tensor(), (Q * L.abs()) @ Q.T, rtol=1e-12, atol=1e-12)


def test_newton_search_negative_escapes_saddle_with_zero_gradient():
    A = torch.diag(torch.tensor([1.0, -1.0], dtype=D))
    (u,), _ = one_update(Newton(search_negative=True), torch.zeros(2, dtype=D), quad_f(A, torch.zeros(2, dtype=D)))
    assert float(u.abs().sum()) > 0 and torch.isfinite(u).all()


def test_newton_h_tfm_forms():
    A, b = quadratic()
    x0 = torch.randn(6, dtype=D)
    g = A @ x0 - b
    (u,), _ = one_update(Newton(H_tfm=lambda H, g: (2 * torch.linalg.inv(H), True)), x0, quad_f(A, b))
    torch.testing.assert_close(u, 2 * torch.linalg.solve(A, g), rtol=1e-12, atol=1e-13)
    (u,), _ = one_update(Newton(H_tfm=lambda H, g: (H + torch.eye(6, dtype=D), False)), x0, quad_f(A, b))
    torch.testing.assert_close(u, torch.linalg.solve(A + torch.eye(6, dtype=D), g), rtol=1e-12, atol=1e-13)
    (u,), _ = one_update(Newton(H_tfm=lambda H, g: -g), x0, quad_f(A, b))
    torch.testing.assert_close(u, -g)


def test_newton_singular_hessian_is_min_norm_least_squares():
    # f = (x0 + x1 - 1)^2: singular Hessian [[2, 2], [2, 2]]
    def f(ps):
        return (ps[0][0] + ps[0][1] - 1) ** 2

    for kwargs in ({}, {"use_lstsq": True}):
        (u,), _ = one_update(Newton(**kwargs), torch.tensor([0.0, 0.0], dtype=D), f)
        torch.testing.assert_close(u, torch.tensor([-0.5, -0.5], dtype=D), rtol=1e-12, atol=1e-12)


def test_newton_zero_gradient_and_non_finite():
    A, b = quadratic()
    x_star = torch.linalg.solve(A, b)
    (u,), _ = one_update(Newton(), x_star, quad_f(A, b))
    assert u.abs().max() < 1e-12
    # linear function: zero Hessian, the update is finite (pseudo-inverse → 0)
    (u,), _ = one_update(Newton(), torch.ones(3, dtype=D), lambda ps: ps[0].sum())
    assert torch.isfinite(u).all()
    # NaN loss: nothing non-finite reaches the update
    for kwargs in ({}, {"eigval_fn": torch.abs}, {"search_negative": True}, {"use_lstsq": True}):
        (u,), _ = one_update(Newton(**kwargs), torch.ones(3, dtype=D), lambda ps: (ps[0] * float("nan")).sum())
        assert torch.isfinite(u).all()
    # infinite curvature in one coordinate: finite fallback
    (u,), _ = one_update(Newton(), torch.zeros(2, dtype=D), lambda ps: ps[0][0] ** 2 + torch.exp(1e3 * ps[0][1]))
    assert torch.isfinite(u).all()


def test_newton_get_H():
    A, b = quadratic()
    module = Newton(damping=0.5)
    assert module.get_H(None) is None  # type: ignore[arg-type]
    _, var = one_update(module, torch.zeros(6, dtype=D), quad_f(A, b))
    H = module.get_H(var)
    assert isinstance(H, Dense)
    torch.testing.assert_close(H.to_tensor(), A + 0.5 * torch.eye(6, dtype=D))


def test_newton_sets_var_loss_and_grad_once():
    A, b = quadratic()
    x0 = torch.randn(6, dtype=D)
    calls = []

    def f(ps):
        calls.append(1)
        return quad_f(A, b)(ps)

    _, var = one_update(Newton(), x0, f)
    assert len(calls) == 1
    torch.testing.assert_close(var.grad[0], A @ x0 - b)
    assert not var.grad[0].requires_grad and not var.loss.requires_grad


def test_newton_rosenbrock_with_backtracking():
    _, (x,), k = run([Newton(), Backtracking()], torch.tensor([-1.2, 1.0], dtype=D), rosenbrock, 50,
                     stop=lambda ps: float((ps[0].detach() - 1).norm()) < 1e-6)
    assert k <= 25 and float((x.detach() - 1).norm()) < 1e-6


@pytest.mark.parametrize("kwargs", [dict(damping=-1), dict(update_freq=0), dict(hessian_method="bad"),
                                    dict(vectorize=1), dict(search_negative="yes"), dict(eigval_fn=3)])
def test_newton_invalid_arguments(kwargs):
    with pytest.raises((ValueError, TypeError), match="Newton"):
        Newton(**kwargs)


def test_closure_required_errors_name_the_module():
    for module in (Newton(), InverseFreeNewton(), NewtonCG(), NewtonCGSteihaug(), NystromPCG(2), TwoPointNewton()):
        p = torch.ones(2, requires_grad=True)
        opt = tz.Modular([p], module)
        p.grad = torch.ones(2)
        with pytest.raises(RuntimeError, match=type(module).__name__):
            opt.step()


# ------------------------------------------------------------------------------------------------------------------
# InverseFreeNewton
# ------------------------------------------------------------------------------------------------------------------
def test_inverse_free_newton_first_step_and_quadratic_residual():
    A, b = quadratic()
    module = InverseFreeNewton()
    x0 = torch.zeros(6, dtype=D)
    opt, (x,), _ = run([module], x0, quad_f(A, b), 1)
    Y0 = A.T / (torch.linalg.matrix_norm(A, 1) * torch.linalg.matrix_norm(A, float("inf")))
    torch.testing.assert_close(x.detach(), x0 - Y0 @ (A @ x0 - b), rtol=1e-13, atol=1e-14)
    # each refresh squares the residual I - HY (same Hessian on a quadratic)
    I = torch.eye(6, dtype=D)
    params = [x]
    R_prev = I - A @ module.global_state["Y"]
    errors = []
    for _ in range(14):
        def closure(backward=True):
            loss = quad_f(A, b)(params)
            if backward:
                opt.zero_grad()
                loss.backward()
            return loss
        opt.step(closure)
        R = I - A @ module.global_state["Y"]
        torch.testing.assert_close(R, R_prev @ R_prev, rtol=1e-9, atol=1e-12)
        R_prev = R
        errors.append(float((x.detach() - torch.linalg.solve(A, b)).norm()))
    assert all(e2 <= e1 or e2 < 1e-13 for e1, e2 in zip(errors, errors[1:]))
    assert errors[-1] < 1e-10
    H = module.get_H(None)  # type: ignore[arg-type]
    assert isinstance(H, DenseWithInverse) and torch.equal(H.A_inv, module.global_state["Y"])


def test_inverse_free_newton_non_finite_hessian_is_skipped():
    (u,), _ = one_update(InverseFreeNewton(), torch.ones(3, dtype=D), lambda ps: (ps[0] * float("nan")).sum())
    assert torch.isfinite(u).all()


# ------------------------------------------------------------------------------------------------------------------
# NewtonCG
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["cg", "minres", "minres_npc"])
@pytest.mark.parametrize("hvp_method", ["autograd", "forward", "central"])
def test_newton_cg_matches_newton_on_spd_quadratic(solver, hvp_method):
    A, b = quadratic()
    x0 = torch.randn(6, dtype=D)
    (u_newton,), _ = one_update(Newton(damping=1e-8), x0, quad_f(A, b))  # NewtonCG's default reg=1e-8
    module = NewtonCG(solver=solver, hvp_method=hvp_method, tol=1e-12, maxiter=30)
    (u,), _ = one_update(module, x0, quad_f(A, b))
    tol = 1e-9 if hvp_method == "autograd" else 1e-6
    torch.testing.assert_close(u, u_newton, rtol=tol, atol=tol)
    assert module._num_hvps_last_step > 0 and module._num_hvps == module._num_hvps_last_step


def test_newton_cg_defaults_match_newton_on_spd_quadratic():
    # catalog check with the default arguments (maxiter=None, tol=1e-8, reg=1e-8, autograd products)
    A, b = quadratic()
    x0 = torch.randn(6, dtype=D, generator=torch.Generator().manual_seed(3))
    (u_newton,), _ = one_update(Newton(damping=1e-8), x0, quad_f(A, b))
    (u,), _ = one_update(NewtonCG(), x0, quad_f(A, b))
    torch.testing.assert_close(u, u_newton, rtol=1e-9, atol=1e-9)


def test_newton_cg_truncated_iterates_match_plain_cg():
    A, b = quadratic(8, indefinite=False)
    x0 = torch.randn(8, dtype=D)
    g = A @ x0 - b
    for k in (1, 2, 3):
        (u,), _ = one_update(NewtonCG(maxiter=k, tol=0, reg=0), x0, quad_f(A, b))
        z, r, p = torch.zeros(8, dtype=D), g.clone(), g.clone()
        for _ in range(k):
            alpha = (r @ r) / (p @ A @ p)
            z = z + alpha * p
            r_new = r - alpha * (A @ p)
            p = r_new + (r_new @ r_new) / (r @ r) * p
            r = r_new
        torch.testing.assert_close(u, z, rtol=1e-11, atol=1e-13)


def test_newton_cg_negative_curvature_first_iteration():
    A, b = quadratic()
    x0 = torch.randn(6, dtype=D)
    g = -A @ x0 + b  # gradient of the concave -f
    (u,), _ = one_update(NewtonCG(reg=0), x0, lambda ps: -quad_f(A, b)(ps))
    torch.testing.assert_close(u, g * abs((g @ g) / (g @ -A @ g)), rtol=1e-12, atol=1e-13)


def test_newton_cg_warm_start_uses_previous_solution():
    A, b = quadratic()
    module = NewtonCG(warm_start=True, maxiter=1, tol=0, reg=0)
    opt, (x,), _ = run([module], torch.zeros(6, dtype=D), quad_f(A, b), 1)
    prev = module.state[opt.param_groups[0]["params"][0]]["prev_x"].clone()
    x1 = x.detach().clone()
    run_opt_params = opt.param_groups[0]["params"]

    def closure(backward=True):
        loss = quad_f(A, b)(run_opt_params)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    opt.step(closure)
    g = A @ x1 - b
    r = g - A @ prev
    expected = prev + (r @ r) / (r @ A @ r) * r  # one CG iteration from prev_x
    torch.testing.assert_close(x1 - x.detach(), expected, rtol=1e-12, atol=1e-13)


def test_newton_cg_zero_gradient_and_nan():
    A, b = quadratic()
    module = NewtonCG()
    (u,), _ = one_update(module, torch.linalg.solve(A, b), quad_f(A, b))
    assert u.abs().max() < 1e-12
    (u,), _ = one_update(NewtonCG(), torch.ones(3, dtype=D), lambda ps: (ps[0] * float("nan")).sum())
    assert torch.isfinite(u).all()


def test_newton_cg_rosenbrock_with_backtracking():
    _, (x,), k = run([NewtonCG(), Backtracking()], torch.tensor([-1.2, 1.0], dtype=D), rosenbrock, 50,
                     stop=lambda ps: float((ps[0].detach() - 1).norm()) < 1e-6)
    assert k <= 25 and float((x.detach() - 1).norm()) < 1e-6


@pytest.mark.parametrize("kwargs", [dict(maxiter=0), dict(tol=-1), dict(hvp_method="exact"), dict(solver="gmres"),
                                    dict(h=0), dict(miniter=-1), dict(warm_start=None)])
def test_newton_cg_invalid_arguments(kwargs):
    with pytest.raises((ValueError, TypeError), match="NewtonCG"):
        NewtonCG(**kwargs)


# ------------------------------------------------------------------------------------------------------------------
# NewtonCGSteihaug
# ------------------------------------------------------------------------------------------------------------------
def ref_trust_ncg(f: Callable, x: torch.Tensor, steps: int, init: float = 1.0, reg: float = 1e-8,
                  eta=0.0, nplus=3.5, nminus=0.25, rho_good=0.99, rho_bad=1e-4, boundary_tol=1e-6,
                  max_attempts=100) -> list[torch.Tensor]:
    """Plain trust-region Newton–CG (Steihaug CG re-run at every attempt) with the exact Hessian."""
    radius = init
    traj = []
    for _ in range(steps):
        g, H = flat_grad_hess(f, x)
        A = H + reg * torch.eye(len(x), dtype=D)
        fx = float(f([x]))
        for _ in range(max_attempts):
            d = steihaug(A, g, radius)
            pred = float(g @ d - 0.5 * d @ A @ d)
            f_plus = float(f([x - d]))
            rho = (fx - f_plus) / max(pred, 2 * torch.finfo(D).tiny)
            r = float(d.norm())
            if rho < rho_bad:
                radius = nminus * r
            elif rho > rho_good and (radius - r) / radius < boundary_tol:
                radius = max(radius, nplus * r)
            if rho > eta:
                x = x - d
                break
        traj.append(x)
    return traj


def steihaug(A: torch.Tensor, g: torch.Tensor, delta: float, tol: float = 1e-8) -> torch.Tensor:
    def boundary(z, d):
        a, bb, c = d @ d, 2 * z @ d, z @ z - delta**2
        return z + (-bb + torch.sqrt(bb * bb - 4 * a * c)) / (2 * a) * d

    z, r = torch.zeros_like(g), g.clone()
    d = r.clone()
    for i in range(len(g)):
        dAd = d @ A @ d
        if dAd <= 0:
            return boundary(z, d)
        alpha = (r @ r) / dAd
        if (z + alpha * d).norm() >= delta:
            return boundary(z, d)
        z = z + alpha * d
        r_new = r - alpha * (A @ d)
        if i + 1 >= 1 and r_new.norm() < tol:
            return z
        d = r_new + (r_new @ r_new) / (r @ r) * d
        r = r_new
    return z


@pytest.mark.parametrize("init", [1.0, 30.0])
def test_newton_cg_steihaug_matches_plain_trust_region(init):
    # exact products, a radius that starts too large (several rejected attempts, CG history reused)
    x0 = torch.tensor([-1.2, 1.0], dtype=D)
    module = NewtonCGSteihaug(hvp_method="autograd", init=init)
    opt, ps, _ = run([module], x0, rosenbrock, 12)
    assert opt.num_evaluations > 2 * 12  # rejected attempts happened (each costs an evaluation and a graph rebuild)
    ref = ref_trust_ncg(rosenbrock, x0, 12, init=init)
    torch.testing.assert_close(ps[0].detach(), ref[-1], rtol=1e-9, atol=1e-10)


def test_newton_cg_steihaug_rosenbrock_like_scipy_trust_ncg():
    x0 = torch.tensor([-1.2, 1.0], dtype=D)
    _, (x,), k = run([NewtonCGSteihaug()], x0, rosenbrock, 60,
                     stop=lambda ps: float((ps[0].detach() - 1).norm()) < 1e-6)
    res = scipy.optimize.minimize(scipy.optimize.rosen, x0.numpy(), jac=scipy.optimize.rosen_der,
                                  hessp=scipy.optimize.rosen_hess_prod, method="trust-ncg")
    assert float((x.detach() - 1).norm()) < 1e-6
    assert k <= res.nit + 5


def test_newton_cg_steihaug_state_and_radius_safety():
    module = NewtonCGSteihaug(init=0.5)
    run([module], torch.tensor([-1.2, 1.0], dtype=D), rosenbrock, 3)
    assert set(module.global_state) >= {"trust_radius", "tol_mul"}
    # a function that is NaN everywhere except at the start: every attempt fails, zero update, radius reset
    module = NewtonCGSteihaug(max_attempts=5)
    x0 = torch.tensor([0.3, -0.2], dtype=D)

    def f(ps):
        x = ps[0]
        return torch.where((x - x0).abs().sum() == 0, (x**2).sum(), torch.tensor(float("nan"), dtype=D))

    _, (x,), _ = run([module], x0, f, 1)
    assert torch.equal(x.detach(), x0)


def test_newton_cg_steihaug_minres():
    x0 = torch.tensor([-1.2, 1.0], dtype=D)
    _, (x,), _ = run([NewtonCGSteihaug(solver="minres")], x0, rosenbrock, 60,
                     stop=lambda ps: float((ps[0].detach() - 1).norm()) < 1e-6)
    assert float((x.detach() - 1).norm()) < 1e-6


# ------------------------------------------------------------------------------------------------------------------
# Nyström
# ------------------------------------------------------------------------------------------------------------------
def test_nystrom_sketch_and_solve_full_rank_equals_regularized_newton():
    A, b = quadratic(8)
    x0 = torch.randn(8, dtype=D)
    (u,), _ = one_update(NystromSketchAndSolve(8, reg=1e-4, seed=0), x0, quad_f(A, b))
    expected = torch.linalg.solve(A + 1e-4 * torch.eye(8, dtype=D), A @ x0 - b)
    assert float((u - expected).norm() / expected.norm()) < 1e-10


def test_nystrom_seed_reproducible():
    A, b = quadratic(8)
    x0 = torch.randn(8, dtype=D)
    (u1,), _ = one_update(NystromSketchAndSolve(3, reg=0.1, seed=5), x0, quad_f(A, b))
    (u2,), _ = one_update(NystromSketchAndSolve(3, reg=0.1, seed=5), x0, quad_f(A, b))
    (u3,), _ = one_update(NystromSketchAndSolve(3, reg=0.1, seed=6), x0, quad_f(A, b))
    assert torch.equal(u1, u2) and not torch.equal(u1, u3)


def test_nystrom_pcg():
    A, b = quadratic(8)
    x0 = torch.randn(8, dtype=D)
    expected = torch.linalg.solve(A + 1e-6 * torch.eye(8, dtype=D), A @ x0 - b)
    module = NystromPCG(8, tol=1e-12, seed=0)
    products = []
    hvp = module.Hvp
    module.Hvp = lambda *a, **k: products.append(1) or hvp(*a, **k)  # type: ignore[method-assign]
    (u,), _ = one_update(module, x0, quad_f(A, b))
    assert float((u - expected).norm() / expected.norm()) < 1e-9
    assert 8 < len(products) <= 8 + 2  # the sketch (8 products), then CG converges in 1-2 iterations (catalog check)
    (u,), _ = one_update(NystromPCG(3, tol=1e-8, seed=0, maxiter=50), x0, quad_f(A, b))
    assert float((u - expected).norm() / expected.norm()) < 1e-6


# ------------------------------------------------------------------------------------------------------------------
# multipoint
# ------------------------------------------------------------------------------------------------------------------
MULTIPOINT = [TwoPointNewton, SixthOrder3P, SixthOrder5P, SixthOrder3PM2]


@pytest.mark.parametrize("cls", MULTIPOINT)
def test_multipoint_one_step_on_quadratic(cls):
    A, b = quadratic()
    _, (x,), _ = run([cls()], torch.randn(6, dtype=D), quad_f(A, b), 1)
    torch.testing.assert_close(x.detach(), torch.linalg.solve(A, b), rtol=1e-12, atol=1e-13)


def ref_multipoint(name: str, f: Callable, x: torch.Tensor) -> torch.Tensor:
    def F(v):
        return flat_grad_hess(f, v)[0]

    def J(v):
        return flat_grad_hess(f, v)[1]

    def s(M, v):
        return torch.linalg.solve(M, v)

    y = x - s(J(x), F(x))
    if name == "TwoPointNewton":
        return x - s(J(x), F(x) + F(y))
    if name == "SixthOrder3P":
        z = y - s(J(y), F(y))
        return y - s(J(y), F(y) + F(z))
    if name == "SixthOrder5P":
        A = J(x) + 2 * J((x + y) / 2) + J(y)
        z = y - 4 * s(A, F(y))
        B = J(x) + 2 * J((x + z) / 2) + J(z)
        return z - 4 * s(B, F(z))
    Ji = torch.linalg.inv(J(x))
    T = (2 * torch.eye(len(x), dtype=D) - Ji @ J(y)) @ Ji
    z = y - T @ F(y)
    return z - T @ F(z)


@pytest.mark.parametrize("cls", MULTIPOINT)
def test_multipoint_matches_formulas_and_sets_loss_grad_at_x(cls):
    x0 = torch.tensor([0.8, -0.5, 0.3], dtype=D)
    (u,), var = one_update(cls(), x0, smooth_f)
    torch.testing.assert_close(x0 - u, ref_multipoint(cls.__name__, smooth_f, x0), rtol=1e-11, atol=1e-12)
    g, _ = flat_grad_hess(smooth_f, x0)
    torch.testing.assert_close(var.grad[0], g, rtol=0, atol=0)
    torch.testing.assert_close(var.loss, smooth_f([x0]), rtol=0, atol=0)
    assert torch.equal(var.params[0].detach(), x0)  # auxiliary points restored exactly


def test_two_point_newton_third_order_convergence():
    x = torch.tensor([1.5, -1.0], dtype=D)

    def f(ps):
        v = ps[0]
        return torch.exp(v).sum() - v.sum() + 0.5 * (v * v).sum()  # minimiser at 0 (e^v - 1 + v = 0)

    errs = []
    for _ in range(3):
        _, (x,), _ = run([TwoPointNewton()], x, f, 1)
        x = x.detach()
        errs.append(float(x.norm()))
    assert errs[1] < 10 * errs[0] ** 3 and errs[2] < 10 * errs[1] ** 3


def test_multipoint_singular_and_nan():
    def f(ps):
        return (ps[0][0] + ps[0][1] - 1) ** 2

    for cls in MULTIPOINT:
        (u,), _ = one_update(cls(), torch.zeros(2, dtype=D), f)
        assert torch.isfinite(u).all()
        (u,), _ = one_update(cls(), torch.ones(2, dtype=D), lambda ps: (ps[0] * float("nan")).sum())
        assert torch.isfinite(u).all()
    with pytest.raises(TypeError, match="TwoPointNewton"):
        TwoPointNewton(lstsq=1)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------------------
# NewtonCGSteihaug: evaluations
# ------------------------------------------------------------------------------------------------------------------
def counting_run(modules, x0: torch.Tensor, f: Callable, steps: int) -> tuple[torch.Tensor, dict[str, int]]:
    """Runs ``steps`` steps; returns the final point and the numbers of closure calls with and without backward."""
    x = x0.clone().requires_grad_()
    opt = tz.Modular([x], *modules)
    calls = {"backward": 0, "no_backward": 0}

    def closure(backward: bool = True) -> torch.Tensor:
        calls["backward" if backward else "no_backward"] += 1
        loss = f([x])
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return x.detach(), calls


def test_newton_cg_steihaug_model_from_cg_needs_no_extra_product():
    # two distinct eigenvalues: CG solves exactly in 2 iterations; the trial inside the radius is accepted
    A = torch.diag(torch.tensor([1.0, 1.0, 3.0, 3.0], dtype=D))
    b = torch.tensor([1.0, -2.0, 0.5, 1.5], dtype=D)
    x, calls = counting_run([NewtonCGSteihaug(init=100.0)], torch.zeros(4, dtype=D), quad_f(A, b), 1)
    # gradient at x0, 2 central-difference products (2 evaluations each), the trial (with its gradient)
    assert calls == {"backward": 1 + 2 * 2 + 1, "no_backward": 0}
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kwargs", [{}, {"hvp_method": "forward"}, {"hvp_method": "autograd"}, {"solver": "minres"}])
def test_newton_cg_steihaug_last_module_reuses_the_trial_evaluation(kwargs):
    """Last in the optimizer, the accepted trial's loss and gradient start the next step: the same trajectory, bit
    for bit, as with the update applied by the optimizer (``LR(1)`` after it), with one evaluation less per step
    (except with 'autograd' products)."""
    x0 = torch.tensor([-1.2, 1.0], dtype=D)
    steps = 30
    x_direct, calls_direct = counting_run([NewtonCGSteihaug(**kwargs)], x0, rosenbrock, steps)
    x_update, calls_update = counting_run([NewtonCGSteihaug(**kwargs), tz.m.LR(1.0)], x0, rosenbrock, steps)
    assert torch.equal(x_direct, x_update)
    assert float((x_direct - 1).norm()) < 1e-6
    total = lambda c: c["backward"] + c["no_backward"]  # noqa: E731
    if kwargs.get("hvp_method") == "autograd":  # evaluates with a graph at every new point anyway: nothing to reuse
        assert calls_direct == calls_update
    else:
        assert total(calls_update) - total(calls_direct) == steps - 1
        assert calls_direct["no_backward"] < calls_update["no_backward"]  # the trials moved to backward=True
