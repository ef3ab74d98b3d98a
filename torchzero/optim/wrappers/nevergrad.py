"""Nevergrad's gradient-free optimizers as a ``torch.optim.Optimizer`` (ask/tell, one evaluation per step).

Importing this module imports nevergrad (an optional dependency: ``pip install torchzero[nevergrad]``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import nevergrad as ng
import numpy as np
import torch

from ...utils.params import Params
from ._base import Problem, WrapperOptimizer, check_box_arg

__all__ = ["NevergradWrapper"]


class NevergradWrapper(WrapperOptimizer):
    r"""A nevergrad optimizer driven by ask/tell: **one closure evaluation per step**.

    On the first step the parametrization ``ng.p.Tuple`` of one ``ng.p.Array`` per trainable tensor is built
    (initialised from the tensor's values if ``use_init``, bounded by the group's ``lb``/``ub``, ``mutable_sigma``
    per group) and ``opt_cls(parametrization, budget=budget)`` is created. Each step then does

    .. math::
        x \leftarrow \mathrm{ask}(),\qquad \ell = f(x),\qquad \mathrm{tell}(x, \ell)

    leaving the parameters at the asked point ``x`` and returning ``ℓ``. Call :meth:`load_best` to put nevergrad's
    recommendation into the parameters. A NaN loss is told as ``+inf`` (which nevergrad clips, with a warning).
    Randomness comes from NumPy's global generator (``np.random.seed``) unless the parametrization is seeded
    through ``opt_cls``. The nevergrad optimizer is not part of ``state_dict`` (after loading, the search restarts
    from the parameters).

    Args:
        params: parameters or parameter groups; groups may set their own ``lb``, ``ub`` and ``mutable_sigma``.
        opt_cls: a nevergrad optimizer class or factory, e.g. ``ng.optimizers.NGOpt`` or
            ``ng.optimizers.registry["CMA"]``, called as ``opt_cls(parametrization, budget=budget)``.
        budget: evaluation budget given to nevergrad (some optimizers tune themselves to it). Default None.
        lb: lower bound of every parameter entry (per-group setting), None for unbounded. Default None.
        ub: upper bound of every parameter entry (per-group setting), None for unbounded. Default None.
        mutable_sigma: whether nevergrad adapts the mutation scale of each array (per-group setting). Default False.
        use_init: start from the current parameter values (they must lie within the bounds); otherwise nevergrad's
            default initialisation (zeros, or the middle of the box). Default True.

    Reference:
        Rapin, Teytaud, "Nevergrad - A gradient-free optimization platform", GitHub (2018).

    Example:
        ```python
        opt = tz.optim.wrappers.nevergrad.NevergradWrapper(model.parameters(), ng.optimizers.NGOpt, budget=1000)
        for _ in range(1000):
            loss = opt.step(closure)   # closure(backward=False) is all it calls
        opt.load_best()
        ```
    """

    def __init__(
        self,
        params: Params | torch.nn.Module,
        opt_cls: type[ng.optimizers.base.Optimizer] | Callable[..., ng.optimizers.base.Optimizer],
        budget: int | None = None,
        lb: float | None = None,
        ub: float | None = None,
        mutable_sigma: bool = False,
        use_init: bool = True,
    ):
        name = type(self).__name__
        if not callable(opt_cls):
            raise TypeError(f"{name}: opt_cls must be a nevergrad optimizer class or factory, got "
                            f"{type(opt_cls).__name__}")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ValueError(f"{name}: budget must be a positive int or None, got {budget!r}")
        check_box_arg(name, lb, ub, required=False)
        if not isinstance(mutable_sigma, bool):
            raise TypeError(f"{name}: mutable_sigma must be a bool, got {type(mutable_sigma).__name__}")
        if not isinstance(use_init, bool):
            raise TypeError(f"{name}: use_init must be a bool, got {type(use_init).__name__}")
        super().__init__(params, dict(lb=lb, ub=ub, mutable_sigma=mutable_sigma))
        self.opt_cls = opt_cls
        self.budget = budget
        self.use_init = use_init
        self.opt: ng.optimizers.base.Optimizer | None = None
        """The nevergrad optimizer (created on the first step)."""

    def _build(self) -> ng.optimizers.base.Optimizer:
        name = type(self).__name__
        params = self.get_params(cls=list)
        lbs, ubs, sigmas = self.group_vals("lb", "ub", "mutable_sigma", cls=list)
        arrays = []
        for p, lb, ub, sigma in zip(params, lbs, ubs, sigmas):
            if self.use_init:
                init = p.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
                if (lb is not None and (init < lb).any()) or (ub is not None and (init > ub).any()):
                    raise ValueError(f"{name}: with use_init=True the current parameters must lie within "
                                     f"[lb, ub] = [{lb}, {ub}]")
                arrays.append(ng.p.Array(init=init, lower=lb, upper=ub, mutable_sigma=sigma))
            else:
                arrays.append(ng.p.Array(shape=tuple(p.shape), lower=lb, upper=ub, mutable_sigma=sigma))
        return self.opt_cls(ng.p.Tuple(*arrays), budget=self.budget)

    @torch.no_grad()
    def step(self, closure: Callable[..., Any] | None = None) -> float:  # type: ignore[override]
        """Asks nevergrad for a point, loads it into the parameters, evaluates ``closure(False)``, tells the loss and
        returns it (a float)."""
        problem = self._problem(closure)
        if self.opt is None:
            self.opt = self._build()
        candidate = self.opt.ask()
        x = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in candidate.value])
        loss = problem.evaluate(x)
        self.opt.tell(candidate, math.inf if math.isnan(loss) else loss)
        return loss

    @torch.no_grad()
    def load_best(self) -> float:
        """Loads nevergrad's recommendation into the parameters and returns its recorded loss (NaN if nevergrad
        has none for it). Raises ``RuntimeError`` before the first step."""
        if self.opt is None:
            raise RuntimeError(f"{type(self).__name__}.load_best: no step has been made yet")
        rec = self.opt.provide_recommendation()
        x = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in rec.value])
        Problem(self, None, require_closure=False).load(x)
        loss = rec.loss
        return math.nan if loss is None else float(loss)
