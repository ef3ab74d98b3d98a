"""Gradient sampling: optimise an aggregate of the objective over random points around x (Gaussian smoothing,
robust gradient sampling)."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

import torch

from ...core import Chainable, Modular, Var
from ...core.reformulation import Reformulation
from ...utils.checks import check_choice, check_positive, check_range
from ...utils.derivatives import loss_and_grad
from ...utils.foreach import add_scaled_, scalar_or_list
from ...utils.tensorlist import Distributions, TensorList
from ..termination.termination import TerminationCriteriaBase, make_termination_criteria

Aggregate: TypeAlias = Literal["mean", "max", "min", "min-norm", "min-value"]
_AGGREGATES = ("mean", "max", "min", "min-norm", "min-value")
_DISTRIBUTIONS = ("normal", "gaussian", "uniform", "sphere", "rademacher")
_SIGMA_STRATEGIES = (None, "grad-norm", "value")


def _detached(loss: Any) -> torch.Tensor:
    return loss.detach() if isinstance(loss, torch.Tensor) else torch.as_tensor(loss)


def evaluate_closure(closure: Callable, params: Sequence[torch.Tensor], backward: bool
                     ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """Evaluates ``closure(backward)`` at the current parameters; returns the detached loss and, with
    ``backward``, the gradient as fresh tensors (zeros where missing), which later evaluations can't overwrite even
    when the closure zeroes gradients in place (``utils.derivatives.loss_and_grad``)."""
    if not backward:
        return _detached(closure(False)), None
    loss, grad = loss_and_grad(closure, params)
    return _detached(loss), grad


class SampleAggregator:
    """Running aggregate of ``(loss, gradient)`` evaluations, one at a time; evaluations with a non-finite loss are
    skipped. Gradients are read, never modified.

    - ``'mean'``: mean of the losses and of the gradients;
    - ``'min'`` / ``'max'``: min / max of the losses; gradient = elementwise min / max of the magnitudes with the
      sign of the first (finite) gradient;
    - ``'min-norm'``: loss and gradient of the evaluation with the smallest gradient norm (``grad_norm`` must be
      given to ``add``);
    - ``'min-value'``: loss and gradient of the evaluation with the lowest loss.

    Ties keep the earlier evaluation. ``result`` returns loss ``inf`` and ``inf`` gradients if no evaluation
    was finite.
    """

    def __init__(self, aggregate: Aggregate):
        self.aggregate = aggregate
        self.n_finite = 0
        self.loss: torch.Tensor | None = None
        self.loss_value = math.inf
        self.grad: list[torch.Tensor] | None = None  # running sum ('mean'), magnitudes ('min'/'max') or selection
        self.sign: list[torch.Tensor] | None = None  # the first gradient, whose signs 'min'/'max' keep
        self.grad_norm = math.inf
        self._owned = False  # whether self.grad is a buffer of this aggregator (rather than an evaluation's grad)

    def add(self, loss: torch.Tensor, loss_value: float, grad: list[torch.Tensor] | None,
            grad_norm: float | None = None) -> bool:
        """Adds an evaluation; returns whether it was finite (and so used)."""
        if not math.isfinite(loss_value):
            return False
        self.n_finite += 1
        mode = self.aggregate

        if self.n_finite == 1:
            self.loss, self.loss_value = loss, loss_value
            if grad is not None:
                if mode in ("min", "max"):
                    self.grad, self.sign, self._owned = list(torch._foreach_abs(grad)), grad, True
                else:
                    self.grad = grad
            if grad_norm is not None:
                self.grad_norm = grad_norm
            return True

        if mode == "mean":
            self.loss = self.loss + loss  # type: ignore[operator]
            if grad is not None:
                if self._owned:
                    torch._foreach_add_(self.grad, grad)  # type: ignore[arg-type]
                else:
                    self.grad, self._owned = list(torch._foreach_add(self.grad, grad)), True  # type: ignore[arg-type]

        elif mode in ("min", "max"):
            if (loss_value < self.loss_value) if mode == "min" else (loss_value > self.loss_value):
                self.loss, self.loss_value = loss, loss_value
            if grad is not None:
                fn = torch._foreach_minimum_ if mode == "min" else torch._foreach_maximum_
                fn(self.grad, torch._foreach_abs(grad))  # type: ignore[arg-type]

        elif mode == "min-norm":
            if grad_norm is None:
                raise RuntimeError("SampleAggregator: 'min-norm' needs the gradient norm of each evaluation")
            if grad_norm < self.grad_norm:
                self.loss, self.loss_value, self.grad, self.grad_norm = loss, loss_value, grad, grad_norm

        elif loss_value < self.loss_value:  # 'min-value'
            self.loss, self.loss_value, self.grad = loss, loss_value, grad
        return True

    def result(self, params: Sequence[torch.Tensor], backward: bool
               ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The aggregated ``(loss, gradient)`` (gradient None unless ``backward``)."""
        if self.n_finite == 0 or self.loss is None:
            loss = torch.tensor(math.inf, device=params[0].device)
            return loss, ([torch.full_like(p, math.inf) for p in params] if backward else None)

        loss, grad = self.loss, self.grad
        if self.aggregate == "mean" and self.n_finite > 1:
            loss = loss / self.n_finite
            if grad is not None:
                torch._foreach_div_(grad, self.n_finite)  # owned: a sum of at least two gradients
        elif self.aggregate in ("min", "max") and grad is not None:
            TensorList(grad).copysign_(self.sign)  # no foreach copysign: once per evaluation of F, not per draw
        return loss, (grad if backward else None)


class GradientSampling(Reformulation):
    """Gradient sampling: replaces the objective by an aggregate of it over random points around x.

    With draws ``z₁ … z_m`` (``m = n − include_x0``) and per-parameter radii σ (state ``'sigma'``), the
    reformulated objective and its gradient are

    ``F(x) = agg{ f(x) [if include_x0], f(x + σ⊙z₁), …, f(x + σ⊙z_m) }``, ``G(x) = agg{ ∇f(·) at the same points }``

    where ``agg`` is ``aggregate``: ``'mean'`` (Gaussian smoothing: the gradient of ``E f(x + σz)`` estimated by the
    sample mean), ``'min'``/``'max'`` (loss min/max; gradient elementwise min/max of the magnitudes, keeping the
    signs of the first finite gradient), ``'min-norm'`` (the evaluation with the smallest gradient norm, as in
    gradient sampling for nonsmooth problems; loss-only evaluations of F still compute gradients to select it, so
    F is the same function with and without backward) or ``'min-value'`` (the evaluation with the lowest loss).
    Evaluations with a non-finite loss are skipped; if none is finite, F = inf and G = inf everywhere.

    Without ``modules`` the update is ``G(x)``. With ``modules``, they are stepped on a ``Var`` whose closure
    evaluates F (writing G into ``p.grad``) at whatever point it is called, and only their update is kept.

    Draws: ``'normal'``/``'gaussian'`` N(0, 1), ``'uniform'`` U(−1, 1), ``'sphere'`` a random direction with global
    norm 1, ``'rademacher'`` ±1, from a generator seeded with ``seed`` (global ``'generator'``). With
    ``pre_generate`` they are drawn before the step (global ``'perts'``), so every evaluation of F in the step
    uses the same draws; with ``fixed`` as well, they are kept across steps until ``termination`` triggers.
    Otherwise each evaluation of F draws new points. Parameters are restored exactly after each evaluation.

    ``termination`` (checked once per step, before the evaluations): when it triggers, σ ← σ·``decay``, the stored
    draws are dropped, and with ``reset_on_termination`` every other module of the optimizer (including this
    module's children) is reset after the step.

    ``sigma_strategy`` adapts σ after each evaluation of F: count the finite draws with a loss below f(x)
    (``'value'``) or a gradient norm below that at x (``'grad-norm'``; only when gradients were computed);
    the target is ``sigma_target`` if it is an int, else ``int(max(1, n_finite·sigma_target))`` with ``n_finite``
    the number of finite evaluations (x included); σ ← σ·``sigma_nplus`` if the count reaches the target, else
    σ·``sigma_nminus``. Without ``include_x0`` this costs one more evaluation at x.

    Cost: ``n`` evaluations of f per evaluation of F (plus one for ``sigma_strategy`` without ``include_x0``);
    without ``modules``, f(x) and ∇f(x) are shared with the rest of the chain. Gradients are read from ``p.grad``
    without copying, so the closure must not zero them in place (the default ``zero_grad`` sets them to None).

    Args:
        modules: modules that optimise the reformulated objective; None uses ``G(x)`` as the update.
        sigma: initial σ (per-parameter setting, positive). Defaults to 1.
        n: number of evaluations of f per evaluation of F, x included. Defaults to 100.
        aggregate: ``'mean'``, ``'max'``, ``'min'``, ``'min-norm'`` or ``'min-value'``. Defaults to ``'mean'``.
        distribution: distribution of the draws. Defaults to ``'gaussian'``.
        include_x0: include the point x itself. Defaults to True.
        fixed: keep pre-generated draws across steps until ``termination`` triggers. Defaults to True.
        pre_generate: draw once per step rather than on each evaluation. Defaults to True.
        termination: criterion (or criteria, combined with ``TerminateAny``) that triggers σ decay. Defaults to None.
        decay: σ multiplier when ``termination`` triggers (per-parameter setting). Defaults to 2/3.
        reset_on_termination: reset the other modules when ``termination`` triggers. Defaults to True.
        sigma_strategy: None, ``'grad-norm'`` or ``'value'``, see above. Defaults to None.
        sigma_target: int count, or float fraction of ``n_finite``, of good draws. Defaults to 0.2.
        sigma_nplus: σ multiplier when the target is reached (per-parameter setting). Defaults to 4/3.
        sigma_nminus: σ multiplier otherwise (per-parameter setting). Defaults to 2/3.
        seed: seed of the draws; None uses the global RNG. Defaults to None.

    Reference:
        Y. Nesterov, V. Spokoiny, "Random Gradient-Free Minimization of Convex Functions", Foundations of
        Computational Mathematics 17, 2017 (Gaussian smoothing);
        J. V. Burke, A. S. Lewis, M. L. Overton, "A Robust Gradient Sampling Algorithm for Nonsmooth, Nonconvex
        Optimization", SIAM J. Optim. 15(3), 2005.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.GradientSampling(sigma=0.1, n=10, seed=0), tz.m.LR(1e-2))
        opt = tz.Modular(
            model.parameters(),
            tz.m.GradientSampling([tz.m.Adam(), tz.m.LR(1e-2)], sigma=0.1, n=10, aggregate="min-norm",
                                  termination=tz.m.TerminateAfterNSteps(100)),
        )
        ```
    """

    def __init__(
        self,
        modules: Chainable | None = None,
        sigma: float = 1.0,
        n: int = 100,
        aggregate: Aggregate = "mean",
        distribution: Distributions = "gaussian",
        include_x0: bool = True,
        fixed: bool = True,
        pre_generate: bool = True,
        termination: TerminationCriteriaBase | Sequence[TerminationCriteriaBase] | None = None,
        decay: float = 0.6666666666666666,
        reset_on_termination: bool = True,
        sigma_strategy: Literal["grad-norm", "value"] | None = None,
        sigma_target: int | float = 0.2,
        sigma_nplus: float = 1.3333333333333333,
        sigma_nminus: float = 0.6666666666666666,
        seed: int | None = None,
    ):
        name = "GradientSampling"
        check_positive(name, "sigma", sigma)
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"{name}: n must be an int, got {type(n).__name__}")
        check_range(name, "n", n, low=1)
        check_choice(name, "aggregate", aggregate, _AGGREGATES)
        check_choice(name, "distribution", distribution, _DISTRIBUTIONS)
        check_choice(name, "sigma_strategy", sigma_strategy, _SIGMA_STRATEGIES)
        for key, value in (("decay", decay), ("sigma_nplus", sigma_nplus), ("sigma_nminus", sigma_nminus)):
            check_positive(name, key, value)
        if isinstance(sigma_target, int) and not isinstance(sigma_target, bool):
            check_range(name, "sigma_target", sigma_target, low=0)
        elif isinstance(sigma_target, float):
            check_positive(name, "sigma_target", sigma_target)
        else:
            raise TypeError(f"{name}: sigma_target must be an int or a float, got {type(sigma_target).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"{name}: seed must be an int or None, got {type(seed).__name__}")

        defaults = dict(sigma=sigma, n=n, aggregate=aggregate, distribution=distribution, include_x0=include_x0,
                        fixed=fixed, pre_generate=pre_generate, decay=decay,
                        reset_on_termination=reset_on_termination, sigma_strategy=sigma_strategy,
                        sigma_target=sigma_target, sigma_nplus=sigma_nplus, sigma_nminus=sigma_nminus, seed=seed)
        super().__init__(defaults, modules)
        if termination is not None:
            self.set_child("termination", make_termination_criteria(extra=termination))
        self._keep_own_state = False

    # ------------------------------------------------------------------ state
    def _sigmas(self, params: list[torch.Tensor]) -> list[float]:
        """Per-parameter σ from state ``'sigma'``, initialised from the ``sigma`` setting."""
        states = [self.state[p] for p in params]
        if any("sigma" not in s for s in states):
            for s, init in zip(states, self.get_settings(params, "sigma")):
                s.setdefault("sigma", init)
        return [s["sigma"] for s in states]

    def _scale_sigmas(self, params: list[torch.Tensor], key: str) -> None:
        """σ ← σ · setting ``key`` for each parameter."""
        for p, sigma, factor in zip(params, self._sigmas(params), self.get_settings(params, key)):
            self.state[p]["sigma"] = sigma * factor

    def reset(self) -> None:
        if self._keep_own_state:  # resetting the other modules after termination: only the children
            for c in self.children.values():
                c.reset()
            return
        super().reset()

    def _reset_others(self, optimizer: Modular, var: Var) -> None:
        """Post-step hook: resets every module of the optimizer except this one (its children included)."""
        self._keep_own_state = True
        try:
            for m in optimizer.modules:
                m.reset()
        finally:
            self._keep_own_state = False

    def _draw(self, params: list[torch.Tensor]) -> TensorList:
        d = self.defaults
        generator = self.get_generator(params[0].device, d["seed"])
        return TensorList(params).sample_like(d["distribution"], generator=generator)

    # ------------------------------------------------------------------ Reformulation
    def pre_step(self, var: Var) -> Var:
        self._require_closure(var)
        params = var.params
        d = self.defaults
        termination = self.children.get("termination")
        if termination is not None and termination.should_terminate(var):  # type: ignore[attr-defined]
            self._scale_sigmas(params, "decay")
            self.global_state.pop("perts", None)
            if d["reset_on_termination"]:
                var.post_step_hooks.append(self._reset_others)

        if d["pre_generate"] and ("perts" not in self.global_state or not d["fixed"]):
            self.global_state["perts"] = [self._draw(params) for _ in range(d["n"] - d["include_x0"])]
        return var

    def _evaluate_x0(self, closure: Callable, params: list[torch.Tensor], var: Var, backward: bool
                     ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        if "modules" in self.children:  # children may call the closure anywhere: evaluate where the params are
            return evaluate_closure(closure, params, backward)
        # without children the reformulated objective is only evaluated at var's point: share f(x), ∇f(x) with var
        grad = var.get_grad() if backward else None
        return _detached(var.get_loss(backward=False)), grad

    def closure(self, backward: bool, closure: Callable, params: list[torch.Tensor], var: Var
                ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        d = self.defaults
        aggregate: Aggregate = d["aggregate"]
        strategy = d["sigma_strategy"]
        include_x0 = d["include_x0"]
        n_draws = d["n"] - include_x0
        # 'min-norm' selects by gradient norm, so F is the same function whether or not backward is requested
        need_grad = backward or aggregate == "min-norm"
        adapt_sigma = strategy == "value" or (strategy == "grad-norm" and need_grad)
        need_norm = aggregate == "min-norm" or (adapt_sigma and strategy == "grad-norm")
        sigma = scalar_or_list(self._sigmas(params))
        agg = SampleAggregator(aggregate)

        def grad_norm(grad: list[torch.Tensor] | None) -> float | None:
            return float(TensorList(grad).global_vector_norm()) if need_norm and grad is not None else None

        # the evaluation at x: a term of the aggregate, and the reference of sigma_strategy
        f_0: float | None = None
        g0_norm: float | None = None
        if include_x0 or adapt_sigma:
            x0_grad = need_grad if include_x0 else strategy == "grad-norm"
            loss, grad = self._evaluate_x0(closure, params, var, x0_grad)
            f_0, g0_norm = float(loss), grad_norm(grad)
            if include_x0:
                agg.add(loss, f_0, grad, g0_norm)

        perts = self.global_state.get("perts") if d["pre_generate"] else None
        if perts is not None and len(perts) != n_draws:
            raise RuntimeError(f"GradientSampling: {len(perts)} stored draws, expected {n_draws}")
        n_good = 0
        if n_draws > 0:
            with torch.no_grad():
                x_0 = [p.clone() for p in params]
            for i in range(n_draws):
                z = perts[i] if perts is not None else self._draw(params)
                with torch.no_grad():
                    add_scaled_(params, z, sigma)
                try:
                    loss, grad = evaluate_closure(closure, params, need_grad)
                finally:
                    with torch.no_grad():
                        torch._foreach_copy_(params, x_0)
                value, norm = float(loss), grad_norm(grad)
                if not agg.add(loss, value, grad, norm):
                    continue
                if strategy == "value":
                    n_good += value < f_0  # type: ignore[operator]
                elif strategy == "grad-norm" and norm is not None:
                    n_good += norm < g0_norm  # type: ignore[operator]

        if adapt_sigma:
            target = d["sigma_target"]
            if isinstance(target, float):
                target = int(max(1, agg.n_finite * target))
            self._scale_sigmas(params, "sigma_nplus" if n_good >= target else "sigma_nminus")

        return agg.result(params, backward)
