"""Least squares (GaussNewton, SumOfSquares): the shared sweep, the Gauss–Newton step against ``torch.linalg``,
loss/gradient/Hessian consistency of the sum-of-squares objective, and Levenberg–Marquardt / trust regions with
``GaussNewton`` against ``scipy.optimize.least_squares(method='lm')`` on classic nonlinear least-squares problems."""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import scipy.optimize
import torch
from sweep import check_module

import torchzero as tz
from torchzero.core import Module, Var
from torchzero.modules.least_squares.gn import GaussNewton, SumOfSquares, gauss_newton_step
from torchzero.modules.quasi_newton import LBFGS
from torchzero.modules.trust_region.cubic import CubicRegularization
from torchzero.modules.trust_region.dogleg import Dogleg
from torchzero.modules.trust_region.levenberg_marquardt import LevenbergMarquardt
from torchzero.modules.trust_region.trust_cg import TrustCG
from torchzero.utils.derivatives import jacobian_and_hessian_mat_wrt
from torchzero.utils.linalg.linear_operator import AtA, Dense
from torchzero.utils.torch_tools import vec_to_tensors

F64 = torch.float64

# --------------------------------------------------------------------------------------------------
# problems: residual functions of a flat parameter vector
# --------------------------------------------------------------------------------------------------
_t = torch.linspace(0, 4, 20, dtype=F64)
_y = 2.5 * torch.exp(-1.3 * _t) + 0.5 + 0.01 * torch.randn(20, generator=torch.Generator().manual_seed(0), dtype=F64)

PROBLEMS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], list[float]]] = {
    # Moré, Garbow & Hillstrom 1981: Rosenbrock, Powell badly scaled, Brown badly scaled
    "rosenbrock": (lambda x: torch.stack([10 * (x[1] - x[0] ** 2), 1 - x[0]]), [-1.2, 1.0]),
    "powell_badly_scaled": (lambda x: torch.stack([1e4 * x[0] * x[1] - 1, torch.exp(-x[0]) + torch.exp(-x[1]) - 1.0001]),
                            [0.0, 1.0]),
    "brown_badly_scaled": (lambda x: torch.stack([x[0] - 1e6, x[1] - 2e-6, x[0] * x[1] - 2]), [1.0, 1.0]),
    # fitting a·exp(−b·t) + c to 20 noisy points (a non-zero residual problem, m > n)
    "exponential_fit": (lambda x: x[0] * torch.exp(-x[1] * _t) + x[2] - _y, [1.0, 1.0, 0.0]),
}


def scipy_lm(residuals: Callable, x0) -> scipy.optimize.OptimizeResult:
    return scipy.optimize.least_squares(lambda x: residuals(torch.tensor(x, dtype=F64)).numpy(),
                                        np.array(x0, dtype=np.float64), method="lm", xtol=1e-15, ftol=1e-15,
                                        gtol=1e-15)


def run(modules: Callable[[], list[Module]], residuals: Callable, x0, n_steps: int, scalar: bool = False):
    """Runs ``tz.Modular`` with a residual closure (or, with ``scalar``, the explicit sum of squares)."""
    x = torch.tensor(x0, dtype=F64, requires_grad=True)
    opt = tz.Modular([x], *modules())

    def closure(backward=True):
        r = residuals(x)
        if not scalar:
            return r
        loss = r.pow(2).sum()
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    traj = []
    for _ in range(n_steps):
        opt.step(closure)
        traj.append(x.detach().clone())
    return traj, opt


# --------------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------------
SWEEP = {
    # the sweep's objective is a scalar, i.e. a single residual r = f: these minimise f² (m = 1 < n)
    "GaussNewton": lambda: [GaussNewton(), tz.m.LR(0.1)],
    "GaussNewton_last_reg": lambda: [GaussNewton(reg=1e-3, batched=False)],
    "LevenbergMarquardt_GaussNewton": lambda: [LevenbergMarquardt(GaussNewton())],
    "LevenbergMarquardt_GaussNewton_y": lambda: [LevenbergMarquardt(GaussNewton(), y=1)],
    "TrustCG_GaussNewton": lambda: [TrustCG(GaussNewton())],
    "Dogleg_GaussNewton": lambda: [Dogleg(GaussNewton())],
    "CubicRegularization_GaussNewton": lambda: [CubicRegularization(GaussNewton())],
    "SumOfSquares": lambda: [SumOfSquares(), tz.m.Normalize(), tz.m.LR(1e-2)],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    check_module(SWEEP[name], needs_closure=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["GaussNewton", "LevenbergMarquardt_GaussNewton", "SumOfSquares"])
def test_sweep_cuda(name: str) -> None:
    check_module(SWEEP[name], needs_closure=True, device="cuda")


def test_invalid_arguments():
    with pytest.raises(ValueError, match="GaussNewton"):
        GaussNewton(reg=-1.0)
    with pytest.raises(TypeError, match="GaussNewton"):
        GaussNewton(batched=1)  # type: ignore[arg-type]


def test_closure_must_return_a_tensor():
    x = torch.zeros(2, requires_grad=True)
    opt = tz.Modular([x], GaussNewton())
    with pytest.raises(TypeError, match="GaussNewton: the closure must return a tensor"):
        opt.step(lambda backward=True: 1.0)


def test_trust_region_with_residual_closure_needs_gauss_newton():
    with pytest.raises(RuntimeError, match="scalar loss"):
        run(lambda: [TrustCG(tz.m.Identity())], PROBLEMS["rosenbrock"][0], [-1.2, 1.0], 1)
    # GaussNewton turns the closure into the sum of squares only on the steps it updates
    with pytest.raises(RuntimeError, match="update_freq=1"):
        run(lambda: [TrustCG(GaussNewton(), update_freq=2)], PROBLEMS["rosenbrock"][0], [-1.2, 1.0], 2)


# --------------------------------------------------------------------------------------------------
# the Gauss-Newton step and the sum-of-squares objective
# --------------------------------------------------------------------------------------------------
def _jacobian(residuals, x0):
    x = torch.tensor(x0, dtype=F64)
    return torch.autograd.functional.jacobian(residuals, x), residuals(x)


@pytest.mark.parametrize("m, n", [(7, 3), (3, 7), (5, 5)])
@pytest.mark.parametrize("reg", [0.0, 1e-3])
def test_gauss_newton_step_matches_linalg(m, n, reg):
    gen = torch.Generator().manual_seed(m * 10 + n)
    J = torch.randn(m, n, generator=gen, dtype=F64)
    r = torch.randn(m, generator=gen, dtype=F64)
    v = gauss_newton_step(J, r, reg)
    if reg == 0:
        # full column rank: lstsq; rank deficient (m < n): the minimum-norm solution
        expected = torch.linalg.lstsq(J, r.unsqueeze(-1)).solution.squeeze(-1) if m >= n else torch.linalg.pinv(J) @ r
    else:
        expected = torch.linalg.solve(J.T @ J + reg * torch.eye(n, dtype=F64), J.T @ r)
    torch.testing.assert_close(v, expected, rtol=1e-9, atol=1e-11)


def test_gauss_newton_update_state_loss_grad_and_hessian():
    residuals, x0 = PROBLEMS["exponential_fit"]
    J, r = _jacobian(residuals, x0)
    x = torch.tensor(x0, dtype=F64, requires_grad=True)
    gn = GaussNewton(reg=0.0)
    var = Var(params=[x], closure=lambda backward=True: residuals(x), model=None, current_step=0)
    gn.update(var)
    torch.testing.assert_close(gn.global_state["G"], J)
    torch.testing.assert_close(gn.global_state["Gtf"], J.T @ r)
    # loss ‖r‖² and its gradient 2Jᵀr, consistent with each other and with the replaced closure
    torch.testing.assert_close(var.loss, r.pow(2).sum())
    sos = lambda z: residuals(z).pow(2).sum()
    torch.testing.assert_close(var.grad[0], torch.autograd.functional.jacobian(sos, x.detach()))
    loss = var.closure()
    torch.testing.assert_close(loss, r.pow(2).sum())
    torch.testing.assert_close(x.grad, var.grad[0])
    assert float(var.closure(False).detach()) == pytest.approx(float(r.pow(2).sum()))
    # H = 2JᵀJ, the Gauss-Newton Hessian of ‖r‖²
    H = gn.get_H(var)
    assert isinstance(H, AtA)
    torch.testing.assert_close(H.to_tensor(), 2 * J.T @ J)
    v = torch.randn(3, dtype=F64)
    torch.testing.assert_close(H.matvec(v), 2 * J.T @ (J @ v))
    torch.testing.assert_close(H.diagonal(), torch.diagonal(2 * J.T @ J))  # column sums of J² (m ≠ n)
    # apply: the least-squares Gauss-Newton step
    gn.apply(var)
    torch.testing.assert_close(var.update[0], torch.linalg.lstsq(J, r.unsqueeze(-1)).solution.squeeze(-1))


def test_gauss_newton_jacobian_batched_and_looped_agree():
    residuals, x0 = PROBLEMS["exponential_fit"]
    a, _ = run(lambda: [GaussNewton(batched=True), tz.m.LR(0.5)], residuals, x0, 3)
    b, _ = run(lambda: [GaussNewton(batched=False), tz.m.LR(0.5)], residuals, x0, 3)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


def test_gauss_newton_multiple_parameters_and_shapes():
    # residuals of any shape from several parameter tensors: the update equals the flat lstsq solution
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(4, 3, 5, generator=gen, dtype=F64)
    a = torch.randn(2, 2, generator=gen, dtype=F64, requires_grad=True)
    b = torch.randn(1, generator=gen, dtype=F64, requires_grad=True)

    def residuals():
        return torch.tanh(A[..., :4] @ a.reshape(-1)) * b + A[..., 4]

    opt = tz.Modular([a, b], GaussNewton(reg=0.0))
    x0 = torch.cat([a.detach().reshape(-1), b.detach()])

    def flat(z):
        return (torch.tanh(A[..., :4] @ z[:4]) * z[4] + A[..., 4]).reshape(-1)

    J = torch.autograd.functional.jacobian(flat, x0)
    expected = x0 - torch.linalg.lstsq(J, flat(x0).unsqueeze(-1)).solution.squeeze(-1)
    opt.step(lambda backward=True: residuals())
    torch.testing.assert_close(torch.cat([a.detach().reshape(-1), b.detach()]), expected)


def test_gauss_newton_non_finite_residuals_give_zero_update():
    x = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    opt = tz.Modular([x], GaussNewton(), tz.m.LR(1.0))
    opt.step(lambda backward=True: torch.stack([x[0] * math.nan, x[1]]))
    assert torch.equal(x.detach(), torch.tensor([1.0, 2.0], dtype=F64))


def test_gauss_newton_with_backtracking_converges_like_scipy_lm():
    residuals, x0 = PROBLEMS["rosenbrock"]
    res = scipy_lm(residuals, x0)
    traj, _ = run(lambda: [GaussNewton(), tz.m.Backtracking()], residuals, x0, 30)
    np.testing.assert_allclose(traj[-1].numpy(), res.x, atol=1e-10)
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-10)


# --------------------------------------------------------------------------------------------------
# trust regions with GaussNewton against scipy.optimize.least_squares(method='lm')
# --------------------------------------------------------------------------------------------------
MAKERS = {
    "LevenbergMarquardt": lambda: [LevenbergMarquardt(GaussNewton())],
    "LevenbergMarquardt_y1": lambda: [LevenbergMarquardt(GaussNewton(), y=1)],
    "TrustCG": lambda: [TrustCG(GaussNewton(), cg_tol=1e-14)],
    "Dogleg": lambda: [Dogleg(GaussNewton())],
}


@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("maker", list(MAKERS))
def test_matches_scipy_least_squares_lm(problem, maker):
    residuals, x0 = PROBLEMS[problem]
    res = scipy_lm(residuals, x0)
    # with the default constants (ρ > 0.99 to reduce the damping) LM needs ~290 steps on Powell's badly scaled
    # problem, where MINPACK needs 21 evaluations
    traj, opt = run(MAKERS[maker], residuals, x0, 400 if problem == "powell_badly_scaled" else 120)
    x = traj[-1]
    cost = float(residuals(x).pow(2).sum())
    # (TrustCG's products with JᵀJ square the condition number, ~1e18 on Powell's problem: it stops at ~1e-23)
    assert cost <= 2 * res.cost * (1 + 1e-9) + 1e-20
    np.testing.assert_allclose(x.numpy(), res.x, rtol=1e-6, atol=1e-12)
    assert torch.isfinite(x).all()


def test_integer_constants_keep_a_float_radius():
    # nplus=2, init=1 as ints: the radius must stay a float (an int radius of LevenbergMarquardt grew without bound
    # at a minimiser and overflowed when converted for the solve)
    from torchzero.modules.trust_region.trust_region import next_radius
    radius, _ = next_radius(1.0, 1.0, 2, 2, eta=0, nplus=2, nminus=0.25, rho_good=0.75, rho_bad=1e-4,
                            boundary_tol=None, init=1, dtype=F64)
    assert radius == 4.0 and isinstance(radius, float)
    residuals, x0 = PROBLEMS["exponential_fit"]
    traj, opt = run(lambda: [LevenbergMarquardt(GaussNewton(), nplus=2, init=1, rho_good=0.75)], residuals, x0, 20)
    assert isinstance(opt.modules[0].global_state["trust_radius"], float)
    assert torch.isfinite(traj[-1]).all()


def test_levenberg_marquardt_first_step_equals_damped_solve():
    residuals, x0 = PROBLEMS["exponential_fit"]
    J, r = _jacobian(residuals, x0)
    traj, _ = run(lambda: [LevenbergMarquardt(GaussNewton(), init=0.5, radius_strategy="fixed")], residuals, x0, 1)
    H, g = 2 * J.T @ J, 2 * J.T @ r
    expected = torch.tensor(x0, dtype=F64) - torch.linalg.solve(H + torch.eye(3, dtype=F64) / 0.5, g)
    torch.testing.assert_close(traj[0], expected)
    # Marquardt scaling with m ≠ n uses the column sums of J² (the diagonal of JᵀJ)
    traj, _ = run(lambda: [LevenbergMarquardt(GaussNewton(), init=0.5, y=1, radius_strategy="fixed")], residuals,
                  x0, 1)
    expected = torch.tensor(x0, dtype=F64) - torch.linalg.solve(H + torch.diag(H.diagonal()) / 0.5, g)
    torch.testing.assert_close(traj[0], expected)


def test_trust_region_ratio_is_consistent_for_gauss_newton():
    # on a linear least-squares problem the Gauss-Newton model is exact: ρ = 1 for every step
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(6, 3, generator=gen, dtype=F64)
    b = torch.randn(6, generator=gen, dtype=F64)
    ratios = []

    def strategy(**kw):
        from torchzero.modules.trust_region.trust_region import predicted_reduction, trial_loss
        f_plus = trial_loss(kw["params"], kw["closure"], kw["d"])
        ratios.append((kw["f"] - f_plus) / predicted_reduction(kw["g"], kw["H"], kw["d"]))
        return kw["trust_radius"], True

    run(lambda: [TrustCG(GaussNewton(), radius_strategy=strategy, init=0.1)], lambda x: A @ x - b, [0.0] * 3, 3)
    assert ratios == pytest.approx([1.0] * 3, rel=1e-9)


# --------------------------------------------------------------------------------------------------
# SumOfSquares
# --------------------------------------------------------------------------------------------------
class ExactNewton(Module):
    """Newton's step with the exact dense Hessian (test module)."""

    def __init__(self):
        super().__init__({})

    def step(self, var: Var) -> Var:
        closure = self._require_closure(var)
        with torch.enable_grad():
            loss = closure(False)
            g, H = jacobian_and_hessian_mat_wrt([loss], var.params)
        var.loss = loss.detach()
        var.update = vec_to_tensors(torch.linalg.solve(H, g.reshape(-1)), var.params)
        return var

    def get_H(self, var: Var) -> Dense:
        raise NotImplementedError


@pytest.mark.parametrize("problem", ["rosenbrock", "exponential_fit"])
def test_sum_of_squares_newton_equals_newton_on_explicit_sum(problem):
    residuals, x0 = PROBLEMS[problem]
    a, _ = run(lambda: [SumOfSquares(), ExactNewton()], residuals, x0, 6)
    b, _ = run(lambda: [ExactNewton()], residuals, x0, 6, scalar=True)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
    newton = pytest.importorskip("torchzero.modules.second_order.newton")
    c, _ = run(lambda: [SumOfSquares(), newton.Newton()], residuals, x0, 6)
    for x, y in zip(c, b):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_sum_of_squares_with_line_search_reusing_the_result_loss():
    # the line search hands its loss at the accepted point to the next step (same closure object): SumOfSquares
    # must not square that (already summed) loss again
    residuals, x0 = PROBLEMS["exponential_fit"]
    a, opt_a = run(lambda: [SumOfSquares(), LBFGS(), tz.m.StrongWolfe()], residuals, x0, 8)
    b, opt_b = run(lambda: [LBFGS(), tz.m.StrongWolfe()], residuals, x0, 8, scalar=True)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
    assert opt_a.num_evaluations == opt_b.num_evaluations


def test_sum_of_squares_squares_known_loss():
    x = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    var = Var(params=[x], closure=lambda backward=True: x * 3, model=None, current_step=0,
              loss=torch.tensor([3.0, 6.0], dtype=F64))
    var = SumOfSquares().step(var)
    assert float(var.loss) == 45.0 and float(var.loss_approx) == 45.0
    loss = var.closure()
    assert float(loss.detach()) == 45.0
    torch.testing.assert_close(x.grad, 2 * 9 * x.detach())


def test_sum_of_squares_needs_closure():
    x = torch.zeros(2, requires_grad=True)
    opt = tz.Modular([x], SumOfSquares(), tz.m.LR(0.1))
    x.sum().backward()
    with pytest.raises(RuntimeError, match="SumOfSquares requires a closure"):
        opt.step()
