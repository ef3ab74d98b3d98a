"""Experimental Newton variants: NewtonNewton, NewtonSolver, ScipyNewtonCG.

References: ``Newton(damping=reg)`` (closed form of ``order=2``), the Jacobian of the Newton step computed with nested
``torch.autograd.functional`` calls, ``NewtonCG`` and dense solves, and the shared sweep.
"""
from __future__ import annotations

import pytest
import scipy.sparse.linalg as sla
import torch
from sweep import check_module

import torchzero as tz
from torchzero.core import Var
from torchzero.modules.experimental.newton_newton import NewtonNewton
from torchzero.modules.experimental.newton_solver import NewtonSolver
from torchzero.modules.experimental.scipy_newton_cg import ScipyNewtonCG
from torchzero.modules.line_search.backtracking import Backtracking
from torchzero.modules.second_order.newton import Newton
from torchzero.modules.second_order.newton_cg import NewtonCG
from torchzero.utils.linalg.linear_operator import Dense

D = torch.float64
SMALL_SHAPES = [(), (3,), (1, 2, 1)]


def quadratic(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    return (Q * torch.linspace(0.5, 5, n, dtype=D)) @ Q.T, torch.randn(n, generator=g, dtype=D)


def smooth(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(0.5 * x).sum() + 0.5 * (x * x).sum() + 0.3 * x[0] * x[1] + 0.1 * (x**4).sum()


def one_update(module, x0: torch.Tensor, f) -> tuple[torch.Tensor, Var]:
    x = x0.clone().requires_grad_()

    def closure(backward: bool = True) -> torch.Tensor:
        loss = f(x)
        if backward:
            x.grad = None
            loss.backward()
        return loss

    var = module.step(Var(params=[x], closure=closure, model=None, current_step=0))
    return var.get_update()[0].detach(), var


def run(modules, x0: torch.Tensor, f, steps: int) -> torch.Tensor:
    x = x0.clone().requires_grad_()
    opt = tz.Modular([x], *modules)

    def closure(backward: bool = True) -> torch.Tensor:
        loss = f(x)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return x.detach()


# ------------------------------------------------------------------------------------------------------------------
# NewtonNewton
# ------------------------------------------------------------------------------------------------------------------
def test_newton_newton_order2_is_damped_newton():
    x0 = torch.tensor([0.3, -0.4, 0.8], dtype=D)
    u, _ = one_update(NewtonNewton(reg=1e-3, order=2), x0, smooth)
    u_ref, _ = one_update(Newton(damping=1e-3), x0, smooth)
    torch.testing.assert_close(u, u_ref, rtol=1e-14, atol=1e-15)


def test_newton_newton_order3_matches_jacobian_of_newton_step():
    reg = 1e-6
    x0 = torch.tensor([0.3, -0.4, 0.8], dtype=D)
    eye = torch.eye(3, dtype=D)

    def newton_step(x: torch.Tensor) -> torch.Tensor:
        g = torch.autograd.functional.jacobian(smooth, x, create_graph=True)
        H = torch.autograd.functional.hessian(smooth, x, create_graph=True)
        return torch.linalg.solve(H + reg * eye, g)

    x1 = newton_step(x0)
    J1 = torch.autograd.functional.jacobian(newton_step, x0)
    module = NewtonNewton(reg=reg, order=3)
    u, var = one_update(module, x0, smooth)
    torch.testing.assert_close(u, torch.linalg.solve(J1 + reg * eye, x1), rtol=1e-10, atol=1e-12)
    H = module.get_H(var)
    assert isinstance(H, Dense)
    H1 = torch.autograd.functional.hessian(smooth, x0) + reg * eye
    torch.testing.assert_close(H.to_tensor(), H1 @ (J1 + reg * eye), rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_newton_newton_order3_solves_rosenbrock():
    def f(x):
        return (100 * (x[1::2] - x[::2] ** 2) ** 2 + (1 - x[::2]) ** 2).sum()

    x = run([NewtonNewton(), Backtracking()], torch.tensor([-1.1, 2.5, -1.2, 1.0], dtype=D), f, 20)
    assert float(f(x)) < 1e-7


def test_newton_newton_eigval_tfm_and_nan():
    x0 = torch.tensor([0.3, -0.4], dtype=D)
    u, _ = one_update(NewtonNewton(order=2, eigval_tfm=torch.abs, reg=0), x0, lambda x: x[0] ** 2 - x[1] ** 2)
    torch.testing.assert_close(u, torch.tensor([0.3, 0.4], dtype=D))  # |H|⁻¹g: step to the saddle-free minimum
    u, _ = one_update(NewtonNewton(), torch.ones(2, dtype=D), lambda x: (x * float("nan")).sum())
    assert torch.isfinite(u).all()
    with pytest.raises(ValueError, match="NewtonNewton"):
        NewtonNewton(order=1)


# ------------------------------------------------------------------------------------------------------------------
# NewtonSolver
# ------------------------------------------------------------------------------------------------------------------
def test_newton_solver_matches_newton_step():
    A, b = quadratic()
    x0 = torch.randn(6, dtype=D)
    u_ref = torch.linalg.solve(A, A @ x0 - b)
    u, _ = one_update(NewtonSolver(tol=1e-14, maxiter=100), x0, lambda x: 0.5 * x @ A @ x - b @ x)
    assert float((u - u_ref).norm() / u_ref.norm()) < 1e-6
    # any torch optimizer: plain gradient descent on the quadratic loss gets close with enough steps
    u, _ = one_update(NewtonSolver(solver=lambda p: torch.optim.SGD(p, lr=0.2), tol=None, maxiter=3000), x0,
                      lambda x: 0.5 * x @ A @ x - b @ x)
    assert float((u - u_ref).norm() / u_ref.norm()) < 1e-4


def test_newton_solver_warm_start_and_zero_gradient():
    A, b = quadratic()
    module = NewtonSolver(tol=1e-12, maxiter=50)
    x = run([module], torch.randn(6, dtype=D), lambda x: 0.5 * x @ A @ x - b @ x, 2)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-6, atol=1e-6)
    assert all("prev_x" in s for s in module.state.values())
    u, _ = one_update(NewtonSolver(), torch.linalg.solve(A, b), lambda x: 0.5 * x @ A @ x - b @ x)
    assert u.abs().max() < 1e-10


# ------------------------------------------------------------------------------------------------------------------
# ScipyNewtonCG
# ------------------------------------------------------------------------------------------------------------------
def test_scipy_newton_cg_equals_newton_cg():
    x0 = torch.tensor([0.3, -0.4, 0.8, 1.2], dtype=D)
    u_ref, _ = one_update(NewtonCG(tol=1e-14, reg=0, maxiter=50), x0, smooth)
    u, _ = one_update(ScipyNewtonCG(sla.cg, kwargs={"rtol": 1e-14}), x0, smooth)
    torch.testing.assert_close(u, u_ref, rtol=1e-9, atol=1e-11)
    u, _ = one_update(ScipyNewtonCG(hvp_method="central"), x0, smooth)  # default gcrotmk
    torch.testing.assert_close(u, u_ref, rtol=1e-4, atol=1e-5)


def test_scipy_newton_cg_warm_start_and_invalid():
    module = ScipyNewtonCG(warm_start=True)
    run([module, tz.m.LR(0.5)], torch.tensor([0.3, -0.4], dtype=D), smooth, 2)
    assert "x0" in module.global_state
    with pytest.raises(TypeError, match="ScipyNewtonCG"):
        ScipyNewtonCG(solver=3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------------------
# sweep
# ------------------------------------------------------------------------------------------------------------------
SWEEP = {
    "NewtonNewton": lambda: [NewtonNewton(), tz.m.LR(0.5)],
    "NewtonNewton_search_negative": lambda: [NewtonNewton(order=2, search_negative=True, vectorize=False),
                                             tz.m.LR(0.5)],
    "NewtonSolver": lambda: [NewtonSolver(maxiter=5), tz.m.LR(0.5)],
    "NewtonSolver_cold_central": lambda: [NewtonSolver(warm_start=False, hvp_method="central", maxiter=3,
                                                       reset_solver=True), tz.m.LR(0.5)],
    "ScipyNewtonCG": lambda: [ScipyNewtonCG(warm_start=True, inner=tz.m.EMA(0.5)), tz.m.LR(0.5)],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name):
    check_module(SWEEP[name], needs_closure=True, shapes=SMALL_SHAPES)
