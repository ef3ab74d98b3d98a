"""``TrustRegionBase`` and the radius strategies shared by the trust-region modules (catalog sections 1.6 and 4).

The radius rule is written as small functions over flat tensors (``trial_loss``, ``predicted_reduction``,
``reduction_ratio``, ``next_radius``) so that other trust-region style modules (``NewtonCGSteihaug``,
``HigherOrderNewton``) reuse the same math; ``default_radius`` and ``fixed_radius`` are the two named strategies.
"""
from __future__ import annotations

import contextlib
import importlib
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol, final

import torch

from ...core import Chainable, Module, Var, apply_transform
from ...core.module import to_plain, unroll_modules
from ...utils.checks import check_int, check_range
from ...utils.derivatives import loss_and_grad
from ...utils.linalg.linear_operator import Dense, DenseWithInverse, LinearOperator
from ...utils.torch_tools import vec_to_tensors
from ..step_size.lr import finish_direct_step, may_move_params

__all__ = [
    "RadiusStrategy",
    "TrustRegionBase",
    "default_radius",
    "default_radius_from_trial",
    "evaluate_trial",
    "fixed_radius",
    "move_to_trial_",
    "newton_point",
    "next_radius",
    "predicted_reduction",
    "reduction_ratio",
    "trial_loss",
    "TrialEvaluation",
]


class RadiusStrategy(Protocol):
    """A radius strategy (catalog 1.6): called once per attempt with keyword arguments only, returns
    ``(new_radius, success)``. ``d`` is the flat step that will be *subtracted* from the flattened parameters,
    ``g`` the flat (``inner``-transformed) update, ``f`` the loss at the current parameters (a float), ``H`` the
    ``LinearOperator`` from ``hess_module.get_H``, ``state`` the module's ``global_state`` and ``settings`` its
    settings mapping. A strategy that evaluates the closure at ``x − d`` must restore the parameters."""

    def __call__(self, *, params: Sequence[torch.Tensor], closure: Callable, f: float, g: torch.Tensor,
                 H: LinearOperator, d: torch.Tensor, trust_radius: float, eta: float, nplus: float, nminus: float,
                 rho_good: float, rho_bad: float, boundary_tol: float | None, init: float,
                 state: dict[str, Any], settings: Mapping[str, Any],
                 radius_fn: Callable[[torch.Tensor], Any] | None) -> tuple[float, bool]: ...


# --------------------------------------------------------------------------------------------------
# the radius rule, as functions
# --------------------------------------------------------------------------------------------------
def _float(x: Any) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


@torch.no_grad()
def trial_loss(params: Sequence[torch.Tensor], closure: Callable, d: torch.Tensor) -> float:
    """``f(x − d)`` evaluated with ``closure(False)``; the parameters are restored bit-exactly afterwards (also when
    the closure raises). ``d`` is flat, in parameter order."""
    return evaluate_trial(list(params), closure, vec_to_tensors(d.to(params[0].dtype), params), False)[0]


TrialEvaluation = tuple[Any, list[torch.Tensor]]
"""The loss tensor and the gradient evaluated at a trial point (for ``Var.set_result_evaluation``)."""


@torch.no_grad()
def evaluate_trial(params: list[torch.Tensor], closure: Callable, d: Sequence[torch.Tensor],
                   with_grad: bool) -> tuple[float, TrialEvaluation | None]:
    """``f(x − d)`` with ``d`` shaped like ``params``; the parameters are restored bit-exactly afterwards (also
    when the closure raises).

    With ``with_grad`` the closure is called with ``backward=True`` and the loss and gradient there (``p.grad``,
    zeros where missing) are returned too, so that a step that ends at this point can hand them to the next one:
    ``move_to_trial_`` then ``Var.set_result_evaluation``. The gradient is evaluated by
    ``utils.derivatives.loss_and_grad``, so the tensors that held ``p.grad`` before (``var.grad``, the update when
    it is the gradient itself) are not overwritten even by a closure that zeroes gradients in place.
    """
    x0 = [p.clone() for p in params]
    try:
        torch._foreach_sub_(params, d)
        if with_grad:
            evaluation: TrialEvaluation | None = loss_and_grad(closure, params)
            loss = evaluation[0]
        else:
            loss = closure(False)
            evaluation = None
    finally:
        torch._foreach_copy_(params, x0)
    return _float(loss), evaluation


@torch.no_grad()
def move_to_trial_(params: list[torch.Tensor], d: Sequence[torch.Tensor]) -> None:
    """Moves the parameters to ``x − d``, bit for bit the point ``evaluate_trial`` evaluated."""
    torch._foreach_sub_(params, d)


def predicted_reduction(g: torch.Tensor, H: LinearOperator, d: torch.Tensor) -> float:
    """Reduction of the quadratic model for the step ``x − d``: ``gᵀd − ½ dᵀHd``."""
    return _float(g.dot(d) - 0.5 * d.dot(H.matvec(d)))


ROUNDOFF_FACTOR = 20
"""Reductions below ``ROUNDOFF_FACTOR·eps·max(|f|, |f⁺|)`` are at rounding level (see ``reduction_ratio``)."""


def reduction_ratio(f: float, f_plus: float, pred: float, tiny: float, eps: float = 0.0) -> float:
    """``ρ = (f − f⁺)/max(pred, 2·tiny)``.

    - a non-finite ``f⁺`` gives ``−inf`` (always rejected);
    - a non-finite current loss ``f`` with a finite ``f⁺`` gives ``+inf`` (any finite point improves on it);
    - a non-finite ``pred`` (a Hessian with infinite entries) is replaced by ``2·tiny`` (the actual reduction
      decides);
    - rounding safeguard (with the dtype's ``eps`` given): when both the actual and the predicted reduction are
      below ``ROUNDOFF_FACTOR·eps·max(|f|, |f⁺|)``, their ratio is rounding noise and ``ρ = 1`` (Conn, Gould &
      Toint 2000, §17.4.2). Without it, every step at a minimiser is rejected ``max_attempts`` times.
    """
    if not math.isfinite(f_plus):
        return -math.inf
    if not math.isfinite(f):
        return math.inf
    if not math.isfinite(pred):
        pred = 2 * tiny
    actual = f - f_plus
    if eps > 0:
        level = ROUNDOFF_FACTOR * eps * max(abs(f), abs(f_plus))
        if abs(actual) <= level and abs(pred) <= level:
            return 1.0
    return actual / max(pred, 2 * tiny)


def next_radius(rho: float, f_plus: float, trust_radius: float, r: float, eta: float, nplus: float,
                nminus: float, rho_good: float, rho_bad: float, boundary_tol: float | None, init: float,
                dtype: torch.dtype) -> tuple[float, bool]:
    """The default radius rule of catalog 1.6 from the ratio ``rho``, the trial loss ``f⁺`` and the step size ``r``
    (``radius_fn(d)``, or the radius itself): shrink to ``nminus·r`` on a bad ratio or non-finite ``f⁺``; grow to
    ``max(Δ, nplus·r)`` on a very good ratio when the step is (within ``boundary_tol``) on the boundary; a radius
    outside ``[2·tiny, max/2]`` (or non-finite) is reset to ``init``. Returns ``(new_radius, success)`` with
    success ``ρ > eta`` and ``f⁺`` finite."""
    finfo = torch.finfo(dtype)
    f_plus_finite = math.isfinite(f_plus)
    if not math.isfinite(r):
        r = trust_radius
    if not f_plus_finite or rho < rho_bad:
        new = nminus * r
    elif rho > rho_good and (boundary_tol is None or (trust_radius - r) / trust_radius < boundary_tol):
        new = max(trust_radius, nplus * r)
    else:
        new = trust_radius
    new = float(new)
    if not (2 * finfo.tiny <= new <= finfo.max / 2):  # also catches NaN
        new = float(init)
    return new, f_plus_finite and rho > eta


def default_radius(*, params: Sequence[torch.Tensor], closure: Callable, f: float, g: torch.Tensor,
                   H: LinearOperator, d: torch.Tensor, trust_radius: float, eta: float, nplus: float,
                   nminus: float, rho_good: float, rho_bad: float, boundary_tol: float | None, init: float,
                   state: dict[str, Any], settings: Mapping[str, Any],
                   radius_fn: Callable[[torch.Tensor], Any] | None) -> tuple[float, bool]:
    """The ``'default'`` strategy (catalog 1.6): evaluates ``f⁺ = f(x − d)`` (one ``closure(False)``), compares the
    actual reduction with the model's ``gᵀd − ½dᵀHd`` and applies ``next_radius``."""
    return default_radius_from_trial(trial_loss(params, closure, d), f=f, g=g, H=H, d=d, trust_radius=trust_radius,
                                     eta=eta, nplus=nplus, nminus=nminus, rho_good=rho_good, rho_bad=rho_bad,
                                     boundary_tol=boundary_tol, init=init, radius_fn=radius_fn)


def default_radius_from_trial(f_plus: float, *, f: float, g: torch.Tensor, H: LinearOperator, d: torch.Tensor,
                              trust_radius: float, eta: float, nplus: float, nminus: float, rho_good: float,
                              rho_bad: float, boundary_tol: float | None, init: float,
                              radius_fn: Callable[[torch.Tensor], Any] | None) -> tuple[float, bool]:
    """``default_radius`` given the trial loss ``f⁺ = f(x − d)``."""
    pred = predicted_reduction(g, H, d)
    finfo = torch.finfo(d.dtype)
    rho = reduction_ratio(f, f_plus, pred, finfo.tiny, finfo.eps)
    r = trust_radius if radius_fn is None else _float(radius_fn(d))
    return next_radius(rho, f_plus, trust_radius, r, eta=eta, nplus=nplus, nminus=nminus, rho_good=rho_good,
                       rho_bad=rho_bad, boundary_tol=boundary_tol, init=init, dtype=d.dtype)


def fixed_radius(*, init: float, **kwargs: Any) -> tuple[float, bool]:
    """The ``'fixed'`` strategy: always ``(init, True)`` (every step is accepted, no extra evaluation)."""
    return init, True


_STRATEGIES: dict[str, Callable[..., tuple[float, bool]]] = {"default": default_radius, "fixed": fixed_radius}


# --------------------------------------------------------------------------------------------------
# subproblem helpers shared by the solvers
# --------------------------------------------------------------------------------------------------
def newton_point(g: torch.Tensor, H: LinearOperator) -> torch.Tensor | None:
    """``p_N = H⁻¹g`` when ``H`` is positive definite, else None. A dense ``H`` is tested by its Cholesky
    factorisation (which also gives the solve); other operators by ``H.solve`` and the descent condition
    ``gᵀp_N > 0``. A failing or non-finite solve gives None."""
    if isinstance(H, (Dense, DenseWithInverse)):
        L, info = torch.linalg.cholesky_ex(H.A)
        if int(info) != 0:
            return None
        p = torch.cholesky_solve(g.unsqueeze(-1), L).squeeze(-1)
    else:
        try:
            p = H.solve(g)
        except RuntimeError:  # includes torch.linalg.LinAlgError
            return None
    ok = torch.isfinite(p).all() & (g.dot(p) > 0)
    return p if bool(ok) else None


# --------------------------------------------------------------------------------------------------
# LinearOperator <-> plain data (for the state dict)
# --------------------------------------------------------------------------------------------------
def _pack_operator(op: LinearOperator) -> dict[str, Any] | None:
    """Plain-data form of a torchzero ``LinearOperator``: its class path and attributes (tensors, numbers, lists...).
    None when the operator is not a torchzero class or holds something that isn't plain data."""
    cls = type(op)
    if not cls.__module__.startswith("torchzero."):
        return None
    try:
        attrs = to_plain(dict(vars(op)), cls.__name__)
    except TypeError:
        return None
    return {"module": cls.__module__, "name": cls.__qualname__, "attrs": attrs}


def _unpack_operator(packed: Mapping[str, Any]) -> LinearOperator | None:
    """Inverse of ``_pack_operator``; only ``LinearOperator`` subclasses from ``torchzero`` modules are rebuilt."""
    module_name, name = packed["module"], packed["name"]
    if not module_name.startswith("torchzero."):
        return None
    cls: Any = importlib.import_module(module_name)
    for part in name.split("."):
        cls = getattr(cls, part, None)
    if not (isinstance(cls, type) and issubclass(cls, LinearOperator)):
        return None
    op = cls.__new__(cls)
    op.__dict__.update(packed["attrs"])
    return op


# --------------------------------------------------------------------------------------------------
# the base class
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _scalar_loss_required(message: str) -> Iterator[None]:
    """Turns the errors of differentiating or converting a non-scalar loss (a residual closure) into a
    ``RuntimeError`` with ``message``."""
    try:
        yield
    except (RuntimeError, ValueError) as e:
        if "scalar" in str(e):
            raise RuntimeError(message) from e
        raise


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors]) if len(tensors) != 1 else tensors[0].reshape(-1)


class TrustRegionBase(Module, ABC):
    """Base class of trust-region modules that precondition the update with a curvature ``LinearOperator``.

    A subclass implements ``trust_solve(f, g, H, radius, params, closure, settings)``, which returns a flat step
    ``d`` that will be *subtracted* from the flattened parameters, approximately minimising the model
    ``m(d) = f − gᵀd + ½ dᵀHd`` within a region whose meaning is the subclass's (an L2 ball for ``TrustCG`` and
    ``Dogleg``, an inverse damping for ``LevenbergMarquardt``...). ``update`` and ``apply`` are final:

    - ``update(var)`` (every ``update_freq``-th step, and whenever no ``H`` is stored): ``hess_module.update(var)``,
      ``H = hess_module.get_H(var)`` stored in ``global_state['H']``, then the hook ``trust_region_update(var, H)``.
    - ``apply(var)``: ``g`` = flattened update (after ``inner``), ``f`` = loss at the current point. Up to
      ``max_attempts`` times: ``Δ = global_state['trust_radius']`` (``init`` at first), ``d = trust_solve(...)``,
      then the radius strategy gives the new radius and whether ``d`` is accepted. The update is ``d`` reshaped to
      the parameters, or zero when every attempt fails.

    The ``'default'`` strategy evaluates ``f⁺ = f(x − d)`` and uses ``ρ = (f − f⁺)/max(gᵀd − ½dᵀHd, 2·tiny)`` and
    ``r = radius_fn(d)`` (``Δ`` when ``radius_fn`` is None). The trial is evaluated with ``closure(False)``, except
    when the module is the last one of the optimizer (no ``LR`` after it): then it is ``closure(True)``, an accepted
    step leaves the parameters at the evaluated point itself, and the loss and gradient there become the next
    step's (``Var.set_result_evaluation``), which saves the next step's first evaluation (scipy's trust-region
    methods likewise evaluate ``f`` and ``∇f`` together at each trial); a rejected trial costs one backward pass
    more.

    - when both reductions are at rounding level (below ``20·eps·max(|f|, |f⁺|)``), ``ρ = 1`` (an addition to the
      reference rule: at a minimiser the ratio is noise, and every step would otherwise be rejected
      ``max_attempts`` times, each costing an evaluation);

    - ``ρ < rho_bad`` or ``f⁺`` not finite: ``Δ ← nminus·r``;
    - ``ρ > rho_good`` and (``boundary_tol`` is None or ``(Δ − r)/Δ < boundary_tol``): ``Δ ← max(Δ, nplus·r)``;
    - a radius below ``2·tiny`` or above ``max/2`` of the dtype is reset to ``init``;
    - the step is accepted when ``ρ > eta`` and ``f⁺`` is finite.

    ``'fixed'`` accepts every step with radius ``init``. A custom strategy is any callable with the keyword
    arguments of ``RadiusStrategy`` returning ``(new_radius, success)``.

    Robustness policy (nothing non-finite ever reaches the parameters):

    - a zero ``g`` gives a zero update without evaluating the closure (a stationary point; subclasses that can
      leave a saddle point along negative curvature, like ``CubicRegularization``, set
      ``_zero_g_is_stationary = False`` and are asked to solve anyway);
    - a zero step from ``trust_solve`` gives a zero update, no evaluation, radius unchanged; except that when ``g``
      is not zero and the radius is below ``init`` (the step underflowed at a tiny radius) the radius is reset to
      ``init`` and the attempt repeated;
    - a radius outside ``[2·tiny, max/2]`` of the dtype (e.g. from a custom strategy) is reset to ``init``;
    - a non-finite ``g`` or a non-finite step (e.g. ``H`` with NaN entries) gives a zero update without evaluating
      the closure, radius unchanged (shrinking the radius can't repair a broken ``H``);
    - a non-finite trial loss is a failed attempt (the radius shrinks);
    - a non-finite (NaN or infinite) current loss is treated as ``+inf``: any finite trial point is accepted;
    - the loss must be a scalar: a residual closure needs ``GaussNewton`` as ``hess_module``, updated every step
      (``update_freq=1``), which turns the closure into the sum of squares.

    State: ``global_state['trust_radius']``, ``['H']`` (the operator) and ``['step']``. In the state dict ``H`` is
    stored as its class path and tensors (``extra``), so a loaded optimizer continues with the same operator even
    when ``update_freq > 1``; an operator that can't be stored that way is recomputed on the next step.

    Args:
        defaults: settings of the subclass (a key clashing with the named arguments is an error).
        hess_module: module(s) providing the curvature via ``get_H`` after ``update`` (``Newton``, ``GaussNewton``,
            quasi-Newton modules, ``Identity``...).
        eta: acceptance threshold on ``ρ``.
        nplus: radius multiplier after a very good step.
        nminus: radius multiplier after a bad step.
        rho_good: ``ρ`` above which the radius may grow.
        rho_bad: ``ρ`` below which the radius shrinks.
        boundary_tol: the radius grows only if ``(Δ − r)/Δ < boundary_tol`` (None: always).
        init: initial radius, also used after a reset.
        max_attempts: attempts per step before giving up with a zero update.
        radius_strategy: ``'default'``, ``'fixed'`` or a ``RadiusStrategy`` callable.
        radius_fn: measures the step for the radius rule (e.g. ``torch.linalg.vector_norm``); None means "use the
            current radius".
        update_freq: refresh the curvature every this many steps. Defaults to 1.
        inner: modules applied to the update before it is preconditioned. Defaults to None.

    Reference:
        A. R. Conn, N. I. M. Gould, Ph. L. Toint, *Trust-Region Methods*, SIAM, 2000. Default constants:
        N. I. M. Gould, D. Orban, A. Sartenaer, Ph. L. Toint, "Sensitivity of trust-region algorithms to their
        parameters", 4OR 3(3), 2005.

    Example:
        A trust region whose subproblem solution is the Newton step clipped to the radius:

        ```python
        class ClippedNewton(TrustRegionBase):
            def __init__(self, hess_module):
                super().__init__(None, hess_module, eta=0.0, nplus=3.5, nminus=0.25, rho_good=0.99,
                                 rho_bad=1e-4, boundary_tol=1e-6, init=1.0, max_attempts=10,
                                 radius_strategy="default", radius_fn=torch.linalg.vector_norm)

            def trust_solve(self, f, g, H, radius, params, closure, settings):
                return H.solve_bounded(g, radius)

        opt = tz.Modular(model.parameters(), ClippedNewton(tz.m.Newton()))
        ```
    """

    _zero_g_is_stationary: bool = True
    """Whether a zero update means "stationary, don't move" (see the robustness policy)."""

    def __init__(
        self,
        defaults: dict | None,
        hess_module: Chainable,
        eta: float,
        nplus: float,
        nminus: float,
        rho_good: float,
        rho_bad: float,
        boundary_tol: float | None,
        init: float,
        max_attempts: int,
        radius_strategy: RadiusStrategy | Literal["default", "fixed"],
        radius_fn: Callable | None,
        update_freq: int = 1,
        inner: Chainable | None = None,
    ):
        name = type(self).__name__
        check_range(name, "eta", eta, 0, 1, high_inclusive=False)
        check_range(name, "nplus", nplus, 1)
        check_range(name, "nminus", nminus, 0, 1, low_inclusive=False, high_inclusive=False)
        check_range(name, "rho_good", rho_good)
        check_range(name, "rho_bad", rho_bad)
        if rho_bad > rho_good:
            raise ValueError(f"{name}: rho_bad ({rho_bad}) must not exceed rho_good ({rho_good})")
        if boundary_tol is not None:
            check_range(name, "boundary_tol", boundary_tol, 0)
        check_range(name, "init", init, 0, low_inclusive=False)
        if not math.isfinite(init):
            raise ValueError(f"{name}: init must be finite, got {init}")
        check_int(name, "max_attempts", max_attempts, 1)
        check_int(name, "update_freq", update_freq, 1)
        if not (radius_strategy in _STRATEGIES or callable(radius_strategy)):
            raise ValueError(f"{name}: radius_strategy must be 'default', 'fixed' or a callable, "
                             f"got {radius_strategy!r}")
        if radius_fn is not None and not callable(radius_fn):
            raise TypeError(f"{name}: radius_fn must be callable or None, got {type(radius_fn).__name__}")
        if not isinstance(hess_module, Module) and not (
                isinstance(hess_module, Sequence) and all(isinstance(m, Module) for m in hess_module)):
            raise TypeError(f"{name}: hess_module must be a Module or a sequence of modules, "
                            f"got {type(hess_module).__name__}")
        if eta > rho_bad:
            warnings.warn(f"{name}: eta={eta} > rho_bad={rho_bad}: a step with rho_bad < ρ <= eta is rejected without "
                          "shrinking the radius, so the trust region can stall", stacklevel=3)

        base = dict(eta=eta, nplus=nplus, nminus=nminus, rho_good=rho_good, rho_bad=rho_bad,
                    boundary_tol=boundary_tol, init=init, max_attempts=max_attempts,
                    radius_strategy=radius_strategy, radius_fn=radius_fn, update_freq=update_freq)
        defaults = dict(defaults) if defaults is not None else {}
        clash = set(defaults) & set(base)
        if clash:
            raise ValueError(f"{name}: defaults {sorted(clash)} clash with the arguments of TrustRegionBase")
        super().__init__({**defaults, **base})

        self.set_child("hess_module", hess_module)
        if inner is not None:
            self.set_child("inner", inner)
        self._memo: dict[str, tuple[tuple, Any]] = {}

    # ------------------------------------------------------------------ to override
    @abstractmethod
    def trust_solve(self, f: float, g: torch.Tensor, H: LinearOperator, radius: float,
                    params: list[torch.Tensor], closure: Callable, settings: Mapping[str, Any]) -> torch.Tensor:
        """Solves the trust-region subproblem: returns a flat step ``d`` (to be subtracted) for the flat update
        ``g``, curvature ``H`` and radius ``radius``."""

    def trust_region_update(self, var: Var, H: LinearOperator) -> None:
        """Hook called after ``H`` was refreshed (every ``update_freq`` steps)."""

    # ------------------------------------------------------------------ helpers for subclasses
    def _memoize(self, key: str, deps: tuple, fn: Callable[[], Any]) -> Any:
        """``fn()``, cached until any of ``deps`` is a different object (e.g. a factorisation of ``H`` reused by
        every attempt of a step). References to ``deps`` are kept, so identities can't be recycled."""
        cached = self._memo.get(key)
        if cached is not None and len(cached[0]) == len(deps) and all(a is b for a, b in zip(cached[0], deps)):
            return cached[1]
        value = fn()
        self._memo[key] = (deps, value)
        return value

    # ------------------------------------------------------------------ module interface
    def _settings(self, var: Var) -> Mapping[str, Any]:
        return self.settings[var.params[0]]

    @final
    def update(self, var: Var) -> None:
        self._require_closure(var)
        settings = self._settings(var)
        step = self.global_state.get("step", 0)
        self.global_state["step"] = step + 1
        if step % settings["update_freq"] == 0 or "H" not in self.global_state:
            hess_module = self.children["hess_module"]
            hess_module.update(var)
            H = hess_module.get_H(var)
            if H is None:
                raise RuntimeError(f"{type(self).__name__}: hess_module {hess_module} provides no curvature "
                                   "(get_H returned None after update); use a module with a Hessian such as Newton, "
                                   "GaussNewton, a quasi-Newton module or Identity")
            self.global_state["H"] = H
            self._memo.clear()  # factorisations of the previous H
            self.trust_region_update(var, H)

    @final
    def apply(self, var: Var) -> Var:
        name = type(self).__name__
        closure = self._require_closure(var)
        params = var.params
        settings = self._settings(var)
        H: LinearOperator | None = self.global_state.get("H")
        if H is None:
            raise RuntimeError(f"{name}: apply was called before update")

        not_scalar = (f"{name}: the closure must return a scalar loss. For residuals use GaussNewton as hess_module "
                      "(it turns the closure into the sum of squares), with update_freq=1.")
        inner = self.children.get("inner")
        with _scalar_loss_required(not_scalar):
            if inner is None:
                update = var._update_or_grad()
            else:
                update = apply_transform(inner, var.get_update(), params=params, grads=var.grad, loss=var.loss,
                                         var=var)
        g = _flat(update)
        loss = var.loss if var.loss is not None else var.get_loss(False)
        if isinstance(loss, torch.Tensor) and loss.numel() != 1:
            raise RuntimeError(not_scalar)
        f = _float(loss)
        if math.isnan(f):
            f = math.inf

        strategy = settings["radius_strategy"]
        if isinstance(strategy, str):
            strategy = _STRATEGIES[strategy]
        direct = (strategy is default_radius and may_move_params(self, var)
                  and self._next_step_reuses_gradient(settings["update_freq"]))
        try:
            with _scalar_loss_required(not_scalar):
                d, evaluation = self._attempts(f, g, H, params, closure, settings, strategy, direct)
        finally:
            # per-step results (keyed on g) are dropped; those that only depend on H are kept for update_freq > 1
            self._memo = {k: v for k, v in self._memo.items() if not any(dep is g for dep in v[0])}
        if d is None:
            d = torch.zeros_like(g)
        elif evaluation is not None:  # d was evaluated with its gradient: end the step there
            move_to_trial_(params, self._shaped_step(d, params))
            var.set_result_evaluation(*evaluation)
            return finish_direct_step(var)
        elif d.data_ptr() == g.data_ptr():  # g may be a view of the gradient, which later modules must not modify
            d = d.clone()
        var.update = vec_to_tensors(d, params)
        return var

    def _next_step_reuses_gradient(self, update_freq: int) -> bool:
        """False when the next step refreshes the curvature with a ``hess_module`` that evaluates the closure itself
        (``Module._evaluates_closure_in_update``), which would not use a gradient handed over from this step's trial
        point."""
        if self.global_state.get("step", 0) % update_freq != 0:
            return True
        return not any(m._evaluates_closure_in_update for m in unroll_modules(self.children["hess_module"]))

    @staticmethod
    def _shaped_step(d: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
        return vec_to_tensors(d.to(params[0].dtype), params)

    def _attempts(self, f: float, g: torch.Tensor, H: LinearOperator, params: list[torch.Tensor],
                  closure: Callable, settings: Mapping[str, Any], strategy: Callable[..., tuple[float, bool]],
                  direct: bool) -> tuple[torch.Tensor | None, TrialEvaluation | None]:
        """The attempts loop of ``apply``: returns the accepted step (None: zero update) and, on the direct path,
        the loss and gradient evaluated there."""
        g_norm = _float(torch.linalg.vector_norm(g))
        if not math.isfinite(g_norm) or (g_norm == 0 and self._zero_g_is_stationary):
            return None, None

        init = float(settings["init"])
        kwargs = {k: settings[k] for k in ("eta", "nplus", "nminus", "rho_good", "rho_bad", "boundary_tol",
                                           "radius_fn")}
        finfo = torch.finfo(g.dtype)
        state = self.global_state
        for _ in range(settings["max_attempts"]):
            radius = float(state.get("trust_radius", init))
            if not 2 * finfo.tiny <= radius <= finfo.max / 2:  # e.g. set by a custom strategy
                radius = state["trust_radius"] = init
            d = self.trust_solve(f=f, g=g, H=H, radius=radius, params=params, closure=closure, settings=settings)
            d_norm = _float(torch.linalg.vector_norm(d))
            if not math.isfinite(d_norm):
                return None, None
            if d_norm == 0:
                if g_norm != 0 and radius < init:  # the step underflowed at a tiny radius: start over from init
                    state["trust_radius"] = init
                    continue
                return None, None
            evaluation = None
            if direct:
                f_plus, evaluation = evaluate_trial(params, closure, self._shaped_step(d, params), True)
                new_radius, success = default_radius_from_trial(f_plus, f=f, g=g, H=H, d=d, trust_radius=radius,
                                                                init=init, **kwargs)
            else:
                new_radius, success = strategy(params=params, closure=closure, f=f, g=g, H=H, d=d,
                                               trust_radius=radius, init=init, state=state, settings=settings,
                                               **kwargs)
            state["trust_radius"] = float(new_radius)
            if success:
                return d, evaluation
        return None, None

    # ------------------------------------------------------------------ misc
    def get_H(self, var: Var) -> LinearOperator | None:
        H = self.global_state.get("H")
        return H if H is not None else super().get_H(var)

    def reset(self) -> None:
        super().reset()
        self._memo.clear()

    def _state_dict(self, key_of: Callable[[torch.Tensor], Any]) -> dict[str, Any]:
        # the operator is not plain data: it goes into `extra` as its class path and tensors
        H = self.global_state.pop("H", None)
        try:
            sd = super()._state_dict(key_of)
        finally:
            if H is not None:
                self.global_state["H"] = H
        sd["extra"] = {"H": None if H is None else _pack_operator(H)}
        return sd

    def _extra_unpack(self, x: Any) -> None:
        packed = x.get("H") if isinstance(x, Mapping) else None
        self._memo.clear()
        if packed is not None:
            H = _unpack_operator(packed)
            if H is not None:
                self.global_state["H"] = H
