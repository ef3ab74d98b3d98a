"""NewtonSolver: matrix-free Newton whose linear system is solved by running any torch optimizer (experimental)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from ...core import Chainable, Module, Var
from ...utils.checks import check_bool, check_non_negative
from ...utils.tensorlist import TensorList
from ...utils.torch_tools import vec_to_tensors
from ..second_order.newton import finite_or_fallback, inner_update
from ..second_order.newton_cg import HessianProducts, check_hvp, check_maxiter


def _lbfgs_solver(params: list[torch.Tensor]) -> Any:
    """The default inner solver, ``Modular(params, LBFGS())``."""
    from ...core import Modular
    from ..quasi_newton.lbfgs import LBFGS

    return Modular(params, LBFGS())


class NewtonSolver(Module):
    r"""Matrix-free Newton whose linear system is solved by an arbitrary torch optimizer.

    ``A x = b`` with ``A = H + reg·I`` (``H`` through Hessian-vector products) and ``b`` the update (after
    ``inner``) is solved by minimizing ``mean((Ax − b)²)`` with the optimizer ``solver([x])`` over one flat variable
    ``x``; its closure supplies the gradient ``(2/n)·A(Ax − b)`` (two products per evaluation). Up to ``maxiter``
    inner steps (``n`` by default; ``maxiter1`` for the first outer step), stopping when the loss returned by an
    inner step divided by the initial loss is below ``tol`` (no check with ``tol=None``); nothing is solved when
    the initial loss is below the machine epsilon. The inner optimizer and its variable persist across steps
    unless ``reset_solver`` (their state is saved in the state dict); with ``warm_start`` each solve starts from
    the previous solution (per-parameter state ``'prev_x'``), otherwise from zero. The update is ``x``; a
    non-finite ``x`` falls back to ``b`` with non-finite entries zeroed.

    Args:
        solver: ``solver(params) -> optimizer`` (a ``torch.optim.Optimizer`` whose ``step`` takes a closure).
            Defaults to ``lambda p: Modular(p, LBFGS())``.
        maxiter: inner steps per solve (``n`` when None). Defaults to None.
        maxiter1: inner steps of the first solve (``maxiter`` when None). Defaults to None.
        tol: relative tolerance on the inner loss, None to always run ``maxiter`` steps. Defaults to 1e-3.
        reg: ``reg·I`` added to the Hessian. Defaults to 0.
        warm_start: start from the previous solution. Defaults to True.
        hvp_method: ``'autograd'``, ``'forward'`` or ``'central'``. Defaults to ``'autograd'``.
        reset_solver: build a new inner optimizer every step. Defaults to False.
        h: finite-difference step length. Defaults to 1e-3.
        inner: modules applied to the update before solving. Defaults to None.

    Reference:
        experimental; the inexact Newton framework of R. S. Dembo, S. C. Eisenstat & T. Steihaug, "Inexact Newton
        methods", SIAM J. Numer. Anal. 19(2), 1982.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.experimental.NewtonSolver(), tz.m.Backtracking())
        ```
    """

    def __init__(self, solver: Callable[[list[torch.Tensor]], Any] = _lbfgs_solver, maxiter: int | None = None,
                 maxiter1: int | None = None, tol: float | None = 0.001, reg: float = 0, warm_start: bool = True,
                 hvp_method: Literal["forward", "central", "autograd"] = "autograd", reset_solver: bool = False,
                 h: float = 0.001, inner: Chainable | None = None):
        name = type(self).__name__
        if not callable(solver):
            raise TypeError(f"{name}: solver must be a callable `solver(params) -> optimizer`")
        check_maxiter(name, maxiter)
        check_maxiter(name, maxiter1, "maxiter1")
        if tol is not None:
            check_non_negative(name, "tol", tol)
        check_non_negative(name, "reg", reg)
        check_bool(name, "warm_start", warm_start)
        check_hvp(name, hvp_method, h)
        check_bool(name, "reset_solver", reset_solver)
        super().__init__(dict(maxiter=maxiter, maxiter1=maxiter1, tol=tol, reg=reg, warm_start=warm_start,
                              hvp_method=hvp_method, reset_solver=reset_solver, h=h))
        self._make_solver = solver
        self._solver: Any = None
        self._x: torch.Tensor | None = None
        self._pending: dict[str, Any] | None = None
        if inner is not None:
            self.set_child("inner", inner)

    # ------------------------------------------------------------------ inner optimizer
    def _get_solver(self, b: torch.Tensor) -> tuple[Any, torch.Tensor]:
        if self._solver is not None and (self.defaults["reset_solver"] or self._x is None
                                         or self._x.shape != b.shape or self._x.dtype != b.dtype):
            self._solver = self._x = None
        if self._solver is None:
            self._x = torch.zeros_like(b).requires_grad_()
            self._solver = self._make_solver([self._x])
            pending = self._pending
            if pending is not None and not self.defaults["reset_solver"]:
                with torch.no_grad():
                    self._x.copy_(pending["x"])
                self._solver.load_state_dict(pending["solver"])
        self._pending = None
        assert self._x is not None
        return self._solver, self._x

    def _extra_pack(self) -> Any:
        if self._solver is None or self._x is None:
            return {}
        return {"x": self._x.detach().clone(), "solver": self._solver.state_dict()}

    def _extra_unpack(self, x: Any) -> None:
        self._solver = self._x = None
        self._pending = x if x else None

    def reset(self) -> None:
        super().reset()
        self._solver = self._x = None
        self._pending = None

    # ------------------------------------------------------------------ step
    def step(self, var: Var) -> Var:
        self._require_closure(var)
        params = var.params
        s = self.defaults
        gs = self.global_state
        A = HessianProducts(self, var, s["hvp_method"], s["h"])
        b_list = TensorList(inner_update(self, var))
        b = b_list.to_vec()
        n = b.numel()
        reg = s["reg"]
        solver, x = self._get_solver(b)

        with torch.no_grad():
            if s["warm_start"] and all("prev_x" in self.state[p] for p in params):
                x.copy_(TensorList(self.state[p]["prev_x"] for p in params).to_vec())
            elif not s["warm_start"]:
                x.zero_()

        def matvec(v: torch.Tensor) -> torch.Tensor:
            Av = A(b_list.from_vec(v)).to_vec()
            return Av + reg * v if reg != 0 else Av

        def closure(backward: bool = True) -> torch.Tensor:
            with torch.no_grad():
                r = matvec(x.detach()) - b
                loss = r.pow(2).mean()
                if backward:
                    x.grad = matvec(r).mul_(2 / n)
            return loss

        step = gs.get("step", 0)
        gs["step"] = step + 1
        maxiter = s["maxiter1"] if step == 0 and s["maxiter1"] is not None else s["maxiter"]
        if maxiter is None:
            maxiter = n
        init_loss = float(closure(False))
        if init_loss > torch.finfo(b.dtype).eps:
            for _ in range(maxiter):
                loss = solver.step(closure)
                if s["tol"] is not None and loss is not None and float(loss) / init_loss < s["tol"]:
                    break
        A.release()

        x_out = finite_or_fallback(x.detach().clone(), b)
        for p, xi in zip(params, vec_to_tensors(x_out, params)):
            self.state[p]["prev_x"] = xi.clone()
        var.update = vec_to_tensors(x_out, params)
        return var
