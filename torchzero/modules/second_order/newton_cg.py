"""Matrix-free (truncated) Newton: Newton–CG / Newton–MINRES, and the trust-region Newton–CG of Steihaug."""
from __future__ import annotations

import math
from typing import Any, Literal

import torch

from ...core import Chainable, Module, Var
from ...utils.checks import check_bool, check_choice, check_int, check_non_negative, check_positive, check_range
from ...utils.linalg.solve import CG, cg, minres
from ...utils.tensorlist import TensorList
from ..adaptive.adahessian import release_grad_graph_
from ..step_size.lr import finish_direct_step, may_move_params
from ..trust_region.trust_region import evaluate_trial, move_to_trial_, reduction_ratio
from .newton import inner_update

HvpMethod = Literal["forward", "central", "autograd"]
_HVP_METHODS = ("forward", "central", "autograd")


# --------------------------------------------------------------------------------------------------
# Hessian-vector products at the current point
# --------------------------------------------------------------------------------------------------
class HessianProducts:
    """``v ↦ ∇²f(x) v`` at the current parameters of ``var`` through ``Module.Hvp``, for the Krylov solvers.

    With ``'autograd'`` the gradient is computed once with ``create_graph=True`` (reusing the evaluation that
    ``var`` needs anyway when its gradient is not known yet) and ``var.grad``/``var.loss`` are left detached, so the
    update never carries the graph. ``'forward'`` reuses ``var``'s gradient; ``'central'`` needs none. Products of
    ``'forward'``/``'central'`` use a normalized direction, so ``h`` is an absolute step length.
    Counts the products in ``count``.
    """

    def __init__(self, module: Module, var: Var, hvp_method: HvpMethod, h: float):
        self.module = module
        self.var = var
        self.hvp_method = hvp_method
        self.h = h
        self.count = 0
        self.rgrad: list[torch.Tensor] | None = None
        if hvp_method == "autograd":
            self.rebuild()
        elif hvp_method == "forward":
            self.rgrad = var.get_grad()

    def rebuild(self) -> None:
        """(Re)computes the graph-carrying gradient for ``'autograd'`` products, e.g. after the parameters were
        shifted and restored in place (which invalidates the graph)."""
        if self.hvp_method != "autograd":
            return
        var = self.var
        if var.grad is None:
            self.rgrad = list(var.get_grad(create_graph=True))
            release_grad_graph_(var)
            return
        closure = self.module._require_closure(var)
        with torch.enable_grad():
            loss = closure(False)
            grads = torch.autograd.grad(loss, var.params, create_graph=True, allow_unused=True)
        self.rgrad = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, var.params)]
        if var.loss is None:
            var.loss = var.loss_approx = loss.detach()

    def __call__(self, v: TensorList) -> TensorList:
        Hv, _ = self.module.Hvp(v, at_x0=True, var=self.var, rgrad=self.rgrad, hvp_method=self.hvp_method, h=self.h,
                                normalize=True, retain_grad=True)
        self.count += 1
        return TensorList(Hv)

    def release(self) -> None:
        self.rgrad = None


def all_finite(x: TensorList) -> bool:
    """Whether every entry of every tensor is finite (``0·x`` is NaN exactly at inf/NaN entries, and its norm is 0
    otherwise, without the overflow a norm of ``x`` itself could have)."""
    norms = torch._foreach_norm(torch._foreach_mul(x, 0))
    return bool(torch.isfinite(torch.stack(norms)).all())


def finite_or_zeroed(x: TensorList, fallback: TensorList) -> TensorList:
    """``x`` if it is finite, else ``fallback`` with non-finite entries set to zero (the family's NaN policy)."""
    if all_finite(x):
        return x
    return TensorList(torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0) for t in fallback)


def check_hvp(owner: str, hvp_method: Any, h: Any, methods: tuple = _HVP_METHODS) -> None:
    check_choice(owner, "hvp_method", hvp_method, methods)
    check_positive(owner, "h", h)


def check_maxiter(owner: str, maxiter: Any, name: str = "maxiter") -> None:
    if maxiter is not None:
        check_int(owner, name, maxiter)


# --------------------------------------------------------------------------------------------------
# NewtonCG
# --------------------------------------------------------------------------------------------------
class NewtonCG(Module):
    r"""Matrix-free (truncated) Newton: the update is the solution of ``(H + reg·I) x = b`` by a Krylov solver.

    ``b`` is the update (after ``inner``), ``H`` the Hessian at the current parameters, available only through
    Hessian-vector products (``hvp_method``). Solvers (``torchzero.utils.linalg.solve``):

    - ``'cg'``: conjugate gradient, stopping once ``‖r‖ < tol`` after at least ``miniter`` iterations, or after
      ``maxiter`` (default ``n``); on non-positive curvature in the first iteration it returns
      ``b·|bᵀb / bᵀHb|`` (a steepest-descent step scaled by the curvature), later it stops at the current iterate
      only if the curvature is exactly zero, otherwise it continues;
    - ``'minres'``: MINRES (standard Paige–Saunders recurrence, relative tolerance ``tol``), which solves
      indefinite systems;
    - ``'minres_npc'``: MINRES that returns the current residual as soon as non-positive curvature is detected
      (Liu & Roosta), a direction of negative curvature that descends when subtracted.

    With ``warm_start`` each solve starts from the previous solution (per-parameter state ``'prev_x'``).
    Products are counted in ``_num_hvps`` and ``_num_hvps_last_step``. A non-finite solution falls back to ``b``
    with non-finite entries zeroed; a zero ``b`` gives a zero update without any product.

    Args:
        maxiter: maximum solver iterations (``n`` when None). Defaults to None.
        tol: solver tolerance (absolute residual norm for CG, relative for MINRES). Defaults to 1e-8.
        reg: ``reg·I`` is added to the Hessian. Defaults to 1e-8.
        hvp_method: ``'autograd'`` (exact), ``'forward'`` or ``'central'`` finite differences. Defaults to
            ``'autograd'``.
        solver: ``'cg'``, ``'minres'`` or ``'minres_npc'``. Defaults to ``'cg'``.
        h: finite-difference step length. Defaults to 1e-3.
        miniter: minimum CG iterations before the tolerance is checked. Defaults to 1.
        warm_start: start from the previous solution. Defaults to False.
        inner: modules applied to the update before solving. Defaults to None.

    Reference:
        J. Nocedal & S. J. Wright, *Numerical Optimization*, 2nd ed., ch. 7 (Newton–CG); Y. Liu & F. Roosta,
        "MINRES: From negative curvature detection to monotonicity properties", SIAM J. Optim. 32(4), 2022.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.NewtonCG(), tz.m.Backtracking())
        ```
    """

    def __init__(self, maxiter: int | None = None, tol: float = 1e-08, reg: float = 1e-08,
                 hvp_method: HvpMethod = "autograd", solver: Literal["cg", "minres", "minres_npc"] = "cg",
                 h: float = 0.001, miniter: int = 1, warm_start: bool = False, inner: Chainable | None = None):
        name = type(self).__name__
        check_maxiter(name, maxiter)
        check_non_negative(name, "tol", tol)
        check_non_negative(name, "reg", reg)
        check_hvp(name, hvp_method, h)
        check_choice(name, "solver", solver, ("cg", "minres", "minres_npc"))
        check_int(name, "miniter", miniter, low=0)
        check_bool(name, "warm_start", warm_start)
        super().__init__(dict(maxiter=maxiter, tol=tol, reg=reg, hvp_method=hvp_method, solver=solver, h=h,
                              miniter=miniter, warm_start=warm_start))
        if inner is not None:
            self.set_child("inner", inner)
        self._num_hvps = 0
        self._num_hvps_last_step = 0

    def step(self, var: Var) -> Var:
        self._require_closure(var)
        params = var.params
        s = self.defaults
        A = HessianProducts(self, var, s["hvp_method"], s["h"])
        b = TensorList(inner_update(self, var))
        x0 = None
        if s["warm_start"] and all("prev_x" in self.state[p] for p in params):
            x0 = TensorList(self.state[p]["prev_x"] for p in params)

        solver = s["solver"]
        if solver == "cg":
            x, _ = cg(A, b, x0=x0, tol=s["tol"], maxiter=s["maxiter"], reg=s["reg"], miniter=s["miniter"])
        else:
            x = minres(A, b, x0=x0, tol=s["tol"], maxiter=s["maxiter"], reg=s["reg"],
                       npc_terminate=solver == "minres_npc")
        A.release()
        x = finite_or_zeroed(TensorList(x), b)

        if s["warm_start"]:
            for p, xi in zip(params, x):
                self.state[p]["prev_x"] = xi.clone()
        self._num_hvps += A.count
        self._num_hvps_last_step = A.count
        var.update = list(x)
        return var


# --------------------------------------------------------------------------------------------------
# NewtonCGSteihaug
# --------------------------------------------------------------------------------------------------
def trust_radius_update(f: float, f_plus: float, pred: float, step_norm: float, radius: float, eta: float,
                        nplus: float, nminus: float, rho_good: float, rho_bad: float,
                        boundary_tol: float | None, eps: float = 0.0) -> tuple[float, bool]:
    """The default radius rule of the trust regions (catalog 1.6) with ``radius_fn`` the L2 norm: returns
    ``(new_radius, success)``. The ratio ``ρ`` is the trust regions' ``reduction_ratio`` (with its rounding
    safeguard when ``eps`` is given); ``ρ < rho_bad`` or a non-finite ``f⁺`` shrinks the radius to ``nminus·‖d‖``;
    ``ρ > rho_good`` with the step on the boundary (``(Δ − ‖d‖)/Δ < boundary_tol``, always when ``boundary_tol`` is
    None) grows it to ``max(Δ, nplus·‖d‖)``. Success is ``ρ > eta`` with a finite ``f⁺``. Out-of-range radii are
    left to the caller (which also adapts its tolerance then).
    """
    finite = math.isfinite(f_plus)
    rho = reduction_ratio(f, f_plus, pred, torch.finfo(torch.float64).tiny, eps=eps)
    if rho < rho_bad or not finite:
        radius = nminus * step_norm
    elif rho > rho_good and (boundary_tol is None or (radius - step_norm) / radius < boundary_tol):
        radius = max(radius, nplus * step_norm)
    return radius, finite and rho > eta


class NewtonCGSteihaug(Module):
    r"""Trust-region Newton–CG (Steihaug–Toint): truncated CG stopped at the boundary of an L2 trust region.

    Each attempt solves ``min_d −bᵀd + ½dᵀ(H + reg·I)d`` subject to ``‖d‖ ≤ Δ`` (``b`` = update after ``inner``,
    ``d`` is subtracted) with Steihaug–Toint CG: an iterate leaving the ball, or a direction of non-positive
    curvature, gives the boundary point along the current direction (``npc_terminate`` stops at the current iterate
    on non-positive curvature instead); or with ``solver='minres'``, MINRES with the same radius. Then the step is
    judged with the default rule of the trust regions: ``f⁺ = f(x − d)``, predicted reduction
    ``pred = bᵀd − ½dᵀ(H + reg·I)d``, ``ρ = (f − f⁺)/pred``; ``ρ < rho_bad`` (or a non-finite ``f⁺``) shrinks ``Δ``
    to ``nminus·‖d‖``, ``ρ > rho_good`` on the boundary (within ``boundary_tol``) grows it to
    ``max(Δ, nplus·‖d‖)``; the step is accepted if ``ρ > eta``.

    Evaluations (each Hessian-vector product costs two closure calls with ``'central'``, one with ``'forward'``):

    - ``pred`` comes from CG's own recurrences (``CG.model_decrease``: exact for the products CG made, and
      positive), not from one more product ``Hd`` as in the reference implementation, which spent two evaluations
      per attempt on it; MINRES still uses the extra product.
    - When the module is the last one of the optimizer (no ``LR`` after it), trial points are evaluated with
      ``closure(True)`` and an accepted step ends at the evaluated point itself, whose loss and gradient become the
      next step's (``Var.set_result_evaluation``): one evaluation per step less, one backward pass more per
      rejected trial. Otherwise (and with ``'autograd'`` products, which evaluate the gradient with a graph at
      the new point anyway) trials use ``closure(False)`` and the update is ``d``.

    CG keeps up to ``max_history`` iterates; when the radius shrinks within a step, the Steihaug point for the
    new radius is read off them (the last iterate inside the new ball, extended to its boundary) instead of
    running CG again. A radius below ``2·tiny`` is reset to ``init`` (and, with ``adapt_tol``, the tolerance is
    multiplied by 0.1 for good, ``global_state['tol_mul']``); one above ``max/2`` is reset to ``init``. After
    ``max_attempts`` rejected attempts the update is zero. Settings are read from ``defaults``.
    State: ``global_state['trust_radius']``, ``['tol_mul']``.

    ``hvp_method='autograd'`` is supported: the reference implementation kept the autograd graph across attempts
    although evaluating ``f(x − d)`` shifts the parameters in place, which breaks it; here the graph-carrying
    gradient is rebuilt (one more evaluation) before products are needed again after a rejected attempt.

    Args:
        eta: acceptance threshold on ``ρ``. Defaults to 0.
        nplus: radius growth factor. Defaults to 3.5.
        nminus: radius shrink factor. Defaults to 0.25.
        rho_good: ``ρ`` above which the radius may grow. Defaults to 0.99.
        rho_bad: ``ρ`` below which the radius shrinks. Defaults to 1e-4.
        init: initial radius. Defaults to 1.
        max_attempts: attempts per step. Defaults to 100.
        max_history: CG iterates kept for re-solving with a smaller radius. Defaults to 100.
        boundary_tol: relative distance to the boundary that counts as "on the boundary". Defaults to 1e-6.
        maxiter: maximum solver iterations (``n`` when None). Defaults to None.
        miniter: minimum CG iterations. Defaults to 1.
        tol: solver tolerance (absolute for CG, relative for MINRES). Defaults to 1e-8.
        reg: ``reg·I`` added to the Hessian. Defaults to 1e-8.
        solver: ``'cg'`` or ``'minres'``. Defaults to ``'cg'``.
        adapt_tol: tighten the tolerance when the radius collapses. Defaults to True.
        npc_terminate: stop CG at the current iterate on non-positive curvature. Defaults to False.
        hvp_method: ``'central'``, ``'forward'`` or ``'autograd'``. Defaults to ``'central'``.
        h: finite-difference step length. Defaults to 1e-3.
        inner: modules applied to the update before solving. Defaults to None.

    Reference:
        T. Steihaug, "The conjugate gradient method and trust regions in large scale optimization", SIAM J. Numer.
        Anal. 20(3), 1983, 626–637; J. Nocedal & S. J. Wright, *Numerical Optimization*, Alg. 7.2.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.NewtonCGSteihaug())
        opt.step(closure)  # closure(backward=True) is required
        ```
    """

    def __init__(self, eta: float = 0.0, nplus: float = 3.5, nminus: float = 0.25, rho_good: float = 0.99,
                 rho_bad: float = 0.0001, init: float = 1, max_attempts: int = 100, max_history: int = 100,
                 boundary_tol: float = 1e-06, maxiter: int | None = None, miniter: int = 1, tol: float = 1e-08,
                 reg: float = 1e-08, solver: Literal["cg", "minres"] = "cg", adapt_tol: bool = True,
                 npc_terminate: bool = False, hvp_method: Literal["forward", "central"] = "central",
                 h: float = 0.001, inner: Chainable | None = None):
        name = type(self).__name__
        check_range(name, "eta", eta)
        check_range(name, "nplus", nplus, low=1)
        check_range(name, "nminus", nminus, 0, 1, low_inclusive=False, high_inclusive=False)
        check_range(name, "rho_good", rho_good)
        check_range(name, "rho_bad", rho_bad)
        check_positive(name, "init", init)
        check_int(name, "max_attempts", max_attempts)
        check_int(name, "max_history", max_history, low=0)
        if boundary_tol is not None:
            check_non_negative(name, "boundary_tol", boundary_tol)
        check_maxiter(name, maxiter)
        check_int(name, "miniter", miniter, low=0)
        check_non_negative(name, "tol", tol)
        check_non_negative(name, "reg", reg)
        check_choice(name, "solver", solver, ("cg", "minres"))
        check_bool(name, "adapt_tol", adapt_tol)
        check_bool(name, "npc_terminate", npc_terminate)
        check_hvp(name, hvp_method, h)
        super().__init__(dict(eta=eta, nplus=nplus, nminus=nminus, rho_good=rho_good, rho_bad=rho_bad, init=init,
                              max_attempts=max_attempts, max_history=max_history, boundary_tol=boundary_tol,
                              maxiter=maxiter, miniter=miniter, tol=tol, reg=reg, solver=solver,
                              adapt_tol=adapt_tol, npc_terminate=npc_terminate, hvp_method=hvp_method, h=h))
        if inner is not None:
            self.set_child("inner", inner)

    def _solve(self, A: HessianProducts, b: TensorList, radius: float, tol: float) -> tuple[TensorList, CG | None]:
        s = self.defaults
        if s["solver"] == "cg":
            d, solver = cg(A, b, tol=tol, maxiter=s["maxiter"], reg=s["reg"], trust_radius=radius,
                           npc_terminate=s["npc_terminate"], miniter=s["miniter"], history_size=s["max_history"])
            return TensorList(d), solver
        d = minres(A, b, tol=tol, maxiter=s["maxiter"], reg=s["reg"], npc_terminate=s["npc_terminate"],
                   trust_radius=radius)
        return TensorList(d), None

    def step(self, var: Var) -> Var:
        closure = self._require_closure(var)
        s = self.defaults
        gs = self.global_state
        params = var.params
        # 'autograd' products rebuild the gradient with a graph at x anyway: a handed-over gradient would be unused
        direct = may_move_params(self, var) and s["hvp_method"] != "autograd"
        A = HessianProducts(self, var, s["hvp_method"], s["h"])
        b = TensorList(inner_update(self, var))
        loss = var.get_loss(False)
        f = float(loss.detach() if isinstance(loss, torch.Tensor) else loss)

        finfo = torch.finfo(b[0].dtype)
        radius = gs.get("trust_radius", s["init"])
        tol_mul = gs.get("tol_mul", 1.0)
        solver: CG | None = None
        solver_radius = math.inf
        graph_stale = False  # 'autograd' products need the graph rebuilt after the parameters were shifted
        d: TensorList | None = None
        evaluation = None
        success = False
        for _ in range(s["max_attempts"]):
            d, pred = None, None
            if solver is not None and radius < solver_radius:
                found = solver.within_radius(radius)
                if found is not None:
                    d, pred = TensorList(found[0]), found[1]
            if graph_stale and (d is None or pred is None):  # products follow
                A.rebuild()
                graph_stale = False
            if d is None:
                d, solver = self._solve(A, b, radius, s["tol"] * tol_mul)
                solver_radius = radius
                pred = None if solver is None else solver.model_decrease
            if pred is None:  # MINRES: the model from one more product
                Hd = A(d)
                if s["reg"] != 0:
                    Hd.add_(d, alpha=s["reg"])
                pred = float(b.dot(d) - 0.5 * d.dot(Hd))
            step_norm = math.sqrt(float(d.dot(d)))
            f_plus, evaluation = evaluate_trial(params, closure, d, direct)
            graph_stale = True
            radius, success = trust_radius_update(f, f_plus, pred, step_norm, radius, s["eta"], s["nplus"],
                                                  s["nminus"], s["rho_good"], s["rho_bad"], s["boundary_tol"],
                                                  eps=finfo.eps)
            if radius < 2 * finfo.tiny or not math.isfinite(radius):
                radius = s["init"]
                if s["adapt_tol"]:
                    tol_mul *= 0.1
            elif radius > finfo.max / 2:
                radius = s["init"]
            if success:
                break
        A.release()

        gs["trust_radius"] = radius
        gs["tol_mul"] = tol_mul
        if not (success and d is not None and all_finite(d)):
            var.update = [torch.zeros_like(p) for p in params]
        elif evaluation is not None:  # evaluated with its gradient: end the step at the trial point
            move_to_trial_(params, d)
            var.set_result_evaluation(*evaluation)
            return finish_direct_step(var)
        else:
            var.update = list(d)
        return var
