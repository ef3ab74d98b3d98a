"""Modules that look at the loss to guard or escape: ``NegateOnLossIncrease``, ``SaveBest``, ``EscapeAnnealing``."""
from __future__ import annotations

import math

import torch

from ...core import Module, Var
from ...utils.checks import check_int, check_non_negative
from ...utils.tensorlist import TensorList
from ..step_size.lr import finish_direct_step, may_move_params
from ._common import require_loss


class NegateOnLossIncrease(Module):
    """Tests the update with one extra loss evaluation and reverses (or drops) it if the loss would increase.

    ``f0`` = loss at the current parameters (cached if known), ``f1 = f(x − u)`` (no backward). If ``f1 ≤ f0``
    the update passes unchanged (as the last module the parameters are simply left at ``x − u``). Otherwise the
    update becomes ``−u`` (``backtrack=True``) or zeros. The test uses the raw update, before any following
    ``LR``. NaN policy: a NaN ``f1`` (or ``f0``) counts as an increase. Requires a closure.

    Args:
        backtrack: replace a bad update by its negation (True) or by zeros (False). Defaults to False.

    Reference:
        none (a safeguard in the spirit of monotone line searches).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.LR(1e-2), tz.m.NegateOnLossIncrease())
        ```
    """

    def __init__(self, backtrack: bool = False):
        super().__init__(dict(backtrack=backtrack))

    @torch.no_grad()
    def step(self, var: Var) -> Var:
        closure = self._require_closure(var)
        params = var.params
        update = var.get_update()  # first, so a needed gradient and the loss come from one evaluation
        f0 = var.get_loss(False)

        saved = [p.clone() for p in params]
        torch._foreach_sub_(params, update)
        f1 = closure(False)
        if bool(torch.as_tensor(f1) <= torch.as_tensor(f0)):
            if may_move_params(self, var):
                return finish_direct_step(var)
            torch._foreach_copy_(params, saved)
            return var

        torch._foreach_copy_(params, saved)
        if self.defaults["backtrack"]:
            torch._foreach_neg_(update)
        else:
            torch._foreach_zero_(update)
        return var


class SaveBest(Module):
    """Remembers the parameters with the lowest loss seen so far.

    Reads the loss at the parameters the step starts from (``var.get_loss(False)``); on a strict improvement over
    global ``lowest_loss`` (initially +inf; NaN never improves) it writes to ``var.attrs`` (copied into
    ``optimizer.attrs`` after the step): ``best_params`` (copies of the parameters), ``best_loss``, and
    ``load_best_params``, a zero-argument callable that copies the saved values into the parameters. The update is
    not changed. Place it after a module that computes the gradient (or first, if nothing needs the gradient), so
    the loss is not evaluated twice. Requires a closure, or ``loss=`` passed to ``step``.

    Reference:
        none (checkpointing utility).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.SaveBest(), tz.m.LR(1e-2))
        ...
        opt.attrs["load_best_params"]()
        ```
    """

    def __init__(self):
        super().__init__({})

    @torch.no_grad()
    def step(self, var: Var) -> Var:
        require_loss(self, var)
        loss = float(var.get_loss(False))
        if loss < self.global_state.get("lowest_loss", math.inf):
            self.global_state["lowest_loss"] = loss
            params = list(var.params)
            best = [p.detach().clone() for p in params]

            def load_best_params() -> None:
                with torch.no_grad():
                    torch._foreach_copy_(params, best)

            var.attrs["best_params"] = best
            var.attrs["best_loss"] = loss
            var.attrs["load_best_params"] = load_best_params
        return var


class EscapeAnnealing(Module):
    """Random-search escape from a point where the parameters stalled.

    Each step: ``d = max|x − x_prev|`` (state ``prev_params``, zeros at the start), then ``x_prev ← x``; global
    ``n_bad`` counts consecutive steps with ``d ≤ tol``. Once ``n_bad ≥ n_tol``, with ``f0`` the loss at ``x``, try
    ``x + ξ_i`` for i = 1…max_iter where ``ξ_i`` is a uniformly random direction of joint L2 norm
    ``max_region·i/max_iter`` (growing radius, an annealing-like schedule); the first trial with a finite loss
    below ``f0 − 1e-12`` is kept (the parameters stay there, ``update = None``, ``stop = skip_update = True``). If
    none is better, the parameters are restored, ``n_bad`` resets to 0 and the update passes unchanged.
    ``max_region`` may differ per parameter; ``tol``, ``n_tol``, ``max_iter`` come from the first parameter.
    The loss ``f0`` is only evaluated on steps that search. Requires a closure.

    Args:
        max_region: largest radius of the random trials. Defaults to 1.
        max_iter: number of trials. Defaults to 1000.
        tol: parameter change that counts as stalled. Defaults to 1e-6.
        n_tol: consecutive stalled steps before searching. Defaults to 10.

    Reference:
        none (random restarts / basin hopping heuristic, cf. D. J. Wales, J. P. K. Doye, "Global Optimization by
        Basin-Hopping", J. Phys. Chem. A 101, 1997).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.LR(1e-2), tz.m.EscapeAnnealing(max_region=0.5))
        ```
    """

    def __init__(self, max_region: float = 1, max_iter: int = 1000, tol: float = 1e-06, n_tol: int = 10):
        check_non_negative("EscapeAnnealing", "max_region", max_region)
        check_int("EscapeAnnealing", "max_iter", max_iter, 1)
        check_non_negative("EscapeAnnealing", "tol", tol)
        check_int("EscapeAnnealing", "n_tol", n_tol, 1)
        super().__init__(dict(max_region=max_region, max_iter=max_iter, tol=tol, n_tol=n_tol))

    @torch.no_grad()
    def step(self, var: Var) -> Var:
        closure = self._require_closure(var)
        params = TensorList(var.params)
        s0 = self.settings[params[0]]
        tol, n_tol, max_iter = s0["tol"], s0["n_tol"], s0["max_iter"]

        prev = [s["prev_params"] if "prev_params" in s else s.setdefault("prev_params", torch.zeros_like(p))
                for s, p in zip((self.state[p] for p in params), params)]
        d = TensorList(torch._foreach_sub(params, prev)).global_vector_norm(math.inf)
        torch._foreach_copy_(prev, params)
        n_bad = self.global_state.get("n_bad", 0) + 1 if float(d) <= tol else 0
        self.global_state["n_bad"] = n_bad
        if n_bad < n_tol:
            return var

        f0 = float(var.get_loss(False))
        max_region = self.get_settings(params, "max_region")
        saved = params.clone()
        for i in range(1, max_iter + 1):
            radius = [r * i / max_iter for r in max_region]
            xi = params.sphere_like(radius[0] if all(r == radius[0] for r in radius) else radius)
            torch._foreach_add_(params, xi)
            f = float(closure(False))
            if math.isfinite(f) and f < f0 - 1e-12:
                return finish_direct_step(var)
            torch._foreach_copy_(params, saved)

        self.global_state["n_bad"] = 0
        return var
