"""Multipoint Newton methods: higher-order root-finding steps for ``∇f(x) = 0`` that evaluate the gradient and the
Hessian at auxiliary points.

All of them treat ``F = ∇f`` as a nonlinear system with Jacobian ``J = ∇²f``, compute a new point ``x⁺`` from ``x``
and return the update ``x − x⁺``. Only the evaluation at ``x`` sets ``var.loss``/``var.grad`` (the reference
implementation overwrote them with values from the auxiliary points).
"""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import torch

from ...core import Module, Var
from ...utils.checks import check_bool
from ...utils.torch_tools import vec_to_tensors
from .newton import (
    factorize,
    finite_or_fallback,
    flatten,
    loss_grad_hessian,
    set_loss_and_grad,
    solve_factorized,
)


class PointEvaluator:
    """Gradients and Hessians of the closure at arbitrary flat points ``x``; the parameters are set to ``x`` for
    the evaluation and restored to their saved values afterwards (bit-exactly). ``p.grad`` is not touched
    (gradients are taken with ``torch.autograd.grad``)."""

    def __init__(self, closure: Callable, params: list[torch.Tensor], vectorize: bool):
        self.closure = closure
        self.params = params
        self.vectorize = vectorize

    def _at(self, x: torch.Tensor, fn: Callable[[], tuple]) -> tuple:
        params = self.params
        saved = [p.detach().clone() for p in params]
        try:
            with torch.no_grad():
                torch._foreach_copy_(params, vec_to_tensors(x, params))
            return fn()
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, saved)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """``F(x) = ∇f(x)`` (flat)."""
        def fn() -> tuple[torch.Tensor]:
            with torch.enable_grad():
                loss = self.closure(False)
                grads = torch.autograd.grad(loss, self.params, allow_unused=True)
            return (flatten([g if g is not None else torch.zeros_like(p) for g, p in zip(grads, self.params)]),)
        return self._at(x, fn)[0]

    def grad_hessian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F(x), J(x))``."""
        def fn() -> tuple[torch.Tensor, torch.Tensor]:
            _, g, H = loss_grad_hessian(self.closure, self.params, "autograd", self.vectorize)
            assert g is not None
            return g, H
        return self._at(x, fn)  # type: ignore[return-value]

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        """``J(x)``."""
        return self.grad_hessian(x)[1]


def inverse(J: torch.Tensor, lstsq: bool) -> torch.Tensor:
    """``J⁻¹`` by ``inv_ex``, falling back to the pseudo-inverse when ``J`` is singular (always with ``lstsq``)."""
    if not lstsq:
        J_inv, info = torch.linalg.inv_ex(J)
        if int(info) == 0 and bool(torch.isfinite(J_inv).all()):
            return J_inv
    return torch.linalg.pinv(J)


class MultipointNewton(Module):
    """Base of the multipoint methods: evaluates ``F(x)``, ``J(x)`` at the current point (setting ``var.loss`` and
    ``var.grad``), calls ``new_point`` and sets the update to ``x − x⁺``. A non-finite ``x⁺`` falls back to the
    gradient step ``F(x)`` (non-finite entries zeroed). Linear solves: Cholesky, falling back to LU for an
    indefinite ``J`` and to least squares for a singular one; ``lstsq=True`` always uses least squares."""

    def __init__(self, lstsq: bool = False, vectorize: bool = True):
        name = type(self).__name__
        check_bool(name, "lstsq", lstsq)
        check_bool(name, "vectorize", vectorize)
        super().__init__(dict(lstsq=lstsq, vectorize=vectorize))

    def solve(self, J: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
        """``J⁻¹F``."""
        return solve_factorized(factorize(J, self.defaults["lstsq"]), F)

    @abstractmethod
    def new_point(self, x: torch.Tensor, F: torch.Tensor, J: torch.Tensor, ev: PointEvaluator) -> torch.Tensor:
        """``x⁺`` from ``x``, ``F(x)``, ``J(x)``; ``ev`` evaluates ``F``/``J`` elsewhere."""

    def step(self, var: Var) -> Var:
        closure = self._require_closure(var)
        params = var.params
        s = self.defaults
        loss, F, J = loss_grad_hessian(closure, params, "autograd", s["vectorize"])
        assert F is not None
        set_loss_and_grad(var, loss, F)
        x = flatten([p.detach() for p in params]).clone()
        x_new = self.new_point(x, F, J, PointEvaluator(closure, params, s["vectorize"]))
        var.update = vec_to_tensors(finite_or_fallback(x - x_new, F), params)
        return var


_EXAMPLE = """
    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.{name}(), tz.m.Backtracking())
        opt.step(closure)  # closure(backward=True) is required
        ```
"""

_ARGS = """
    Args:
        lstsq: always solve by least squares (pseudo-inverse). Defaults to False.
        vectorize: batch the Hessian rows with vmap. Defaults to True.
"""


class TwoPointNewton(MultipointNewton):
    __doc__ = r"""Two-point Newton (Newton–Chebyshev composite) step on ``∇f(x) = 0``, third-order convergent.

    ``y = x − J(x)⁻¹F(x)``, ``x⁺ = x − J(x)⁻¹(F(x) + F(y))`` with ``F = ∇f``, ``J = ∇²f`` frozen at ``x`` (one
    Hessian, factorized once, and two gradients per step). The update is ``x − x⁺``. On a quadratic ``F(y) = 0``
    and one step lands on the minimiser.
""" + _ARGS + """
    Reference:
        J. R. Sharma & D. Kumar, "A fast and efficient composite Newton–Chebyshev method for systems of nonlinear
        equations", J. Complexity 49, 2018, 56–73.
""" + _EXAMPLE.format(name="TwoPointNewton")

    def new_point(self, x, F, J, ev):
        fac = factorize(J, self.defaults["lstsq"])
        y = x - solve_factorized(fac, F)
        return x - solve_factorized(fac, F + ev.grad(y))


class SixthOrder3P(MultipointNewton):
    __doc__ = r"""Sixth-order three-point Newton-type step on ``∇f(x) = 0``.

    ``y = x − J(x)⁻¹F(x)``, ``z = y − J(y)⁻¹F(y)``, ``x⁺ = y − J(y)⁻¹(F(y) + F(z))`` (two Hessians, three gradients;
    ``J(y)`` is factorized once). The update is ``x − x⁺``.
""" + _ARGS + """
    Reference:
        K. A. Abro & A. A. Shaikh, "A new time-efficient and convergent nonlinear solver", Appl. Math. Comput. 355,
        2019, 516–536.
""" + _EXAMPLE.format(name="SixthOrder3P")

    def new_point(self, x, F, J, ev):
        y = x - self.solve(J, F)
        F_y, J_y = ev.grad_hessian(y)
        fac_y = factorize(J_y, self.defaults["lstsq"])
        z = y - solve_factorized(fac_y, F_y)
        return y - solve_factorized(fac_y, F_y + ev.grad(z))


class SixthOrder5P(MultipointNewton):
    __doc__ = r"""Sixth-order five-point Newton-type step on ``∇f(x) = 0`` (Simpson-like averaged Jacobians).

    ``y = x − J(x)⁻¹F(x)``; ``A = J(x) + 2J((x+y)/2) + J(y)``; ``z = y − 4A⁻¹F(y)``;
    ``B = J(x) + 2J((x+z)/2) + J(z)``; ``x⁺ = z − 4B⁻¹F(z)`` (five Hessian evaluations). The update is ``x − x⁺``.
""" + _ARGS + """
    Reference:
        I. K. Argyros, D. Sharma, C. I. Argyros, S. K. Parhi & S. K. Sunanda, "Extended convergence for two sixth
        order methods under the same weak conditions", Foundations 3(1), 2023, 127–139.
""" + _EXAMPLE.format(name="SixthOrder5P")

    def new_point(self, x, F, J, ev):
        y = x - self.solve(J, F)
        F_y, J_y = ev.grad_hessian(y)
        A = J + 2 * ev.hessian((x + y) / 2) + J_y
        z = y - 4 * self.solve(A, F_y)
        F_z, J_z = ev.grad_hessian(z)
        B = J + 2 * ev.hessian((x + z) / 2) + J_z
        return z - 4 * self.solve(B, F_z)


class SixthOrder3PM2(MultipointNewton):
    __doc__ = r"""Sixth-order three-point Newton-type step of Wang & Li on ``∇f(x) = 0``.

    ``y = x − J(x)⁻¹F(x)``; ``T = (2I − J(x)⁻¹J(y)) J(x)⁻¹``; ``z = y − T F(y)``; ``x⁺ = z − T F(z)``. ``J(x)⁻¹`` is
    an explicit inverse (``inv_ex``, falling back to the pseudo-inverse; ``lstsq=True`` always uses the
    pseudo-inverse). The update is ``x − x⁺``.
""" + _ARGS + """
    Reference:
        X. Wang & Y. Li, "An efficient sixth-order Newton-type method for solving nonlinear systems", Algorithms
        10(2), 2017, 45.
""" + _EXAMPLE.format(name="SixthOrder3PM2")

    def new_point(self, x, F, J, ev):
        J_inv = inverse(J, self.defaults["lstsq"])
        y = x - J_inv @ F
        F_y, J_y = ev.grad_hessian(y)
        T = 2 * J_inv - J_inv @ (J_y @ J_inv)
        z = y - T @ F_y
        return z - T @ ev.grad(z)
