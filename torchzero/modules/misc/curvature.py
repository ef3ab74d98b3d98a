"""Curvature probes: ``RandomHvp`` (Hessian times random vectors) and ``HpuEstimate`` (finite-difference estimate
of the Hessian times the previous step)."""
from __future__ import annotations

from typing import Literal

import torch

from ...core import Module, Transform, Var
from ...utils.checks import check_choice, check_int, check_positive
from ...utils.tensorlist import Distributions, TensorList

_DISTRIBUTIONS = ("normal", "gaussian", "uniform", "sphere", "rademacher")
_HVP_METHODS = ("autograd", "forward", "central")


class RandomHvp(Module):
    """Outputs Hessian-vector products with random vectors: ``D = (1/n) Σᵢ H vᵢ``.

    On steps whose 0-based index is a multiple of ``update_freq``, ``n_samples`` vectors are drawn (catalog 0.7,
    variance 1) and ``H vᵢ`` computed at the current parameters with the shared Hvp helper: ``'autograd'`` (double
    backward), ``'forward'`` or ``'central'`` finite differences with step ``h`` (along the normalised vector, the
    result rescaled). With ``update_freq != 1`` the average is kept in per-parameter state ``D`` and reused on the
    other steps (no evaluation). ``var.update = D``. Settings from the first parameter; global RNG.
    Requires a closure.

    Args:
        n_samples: number of random vectors averaged. Defaults to 1.
        distribution: distribution of the vectors. Defaults to ``'normal'``.
        update_freq: recompute every this many steps. Defaults to 1.
        hvp_method: ``'autograd'``, ``'forward'`` or ``'central'``. Defaults to ``'autograd'``.
        h: finite-difference step. Defaults to 1e-3.

    Reference:
        B. A. Pearlmutter, "Fast Exact Multiplication by the Hessian", Neural Computation 6(1), 1994.

    Example:
        ```python
        # a random curvature probe as an update, e.g. as an operand
        opt = tz.Modular(model.parameters(), tz.m.Add(tz.m.RandomHvp(), alpha=1e-3), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, n_samples: int = 1, distribution: Distributions = "normal", update_freq: int = 1,
                 hvp_method: Literal["autograd", "forward", "central"] = "autograd", h: float = 0.001):
        check_int("RandomHvp", "n_samples", n_samples, 1)
        check_choice("RandomHvp", "distribution", distribution, _DISTRIBUTIONS)
        check_int("RandomHvp", "update_freq", update_freq, 1)
        check_choice("RandomHvp", "hvp_method", hvp_method, _HVP_METHODS)
        check_positive("RandomHvp", "h", h)
        super().__init__(dict(n_samples=n_samples, distribution=distribution, update_freq=update_freq,
                              hvp_method=hvp_method, h=h))

    def step(self, var: Var) -> Var:
        self._require_closure(var)
        params = var.params
        s0 = self.settings[params[0]]
        update_freq = s0["update_freq"]
        step = self.global_state.get("step", 0)
        self.global_state["step"] = step + 1

        if step % update_freq == 0 or any("D" not in self.state[p] for p in params):
            n = s0["n_samples"]
            D: list[torch.Tensor] | None = None
            rgrad = None
            for i in range(n):
                v = TensorList(params).sample_like(s0["distribution"], variance=1)
                Hv, rgrad = self.Hvp(v, at_x0=True, var=var, rgrad=rgrad, hvp_method=s0["hvp_method"], h=s0["h"],
                                     normalize=True, retain_grad=i < n - 1)
                if D is None:
                    D = [t.detach() for t in Hv]
                else:
                    torch._foreach_add_(D, Hv)
            assert D is not None
            if n != 1:
                torch._foreach_div_(D, n)
            if update_freq != 1:
                for p, d in zip(params, D):
                    self.state[p]["D"] = d
                D = [d.clone() for d in D]  # later modules may modify the update in place
        else:
            D = [self.state[p]["D"].clone() for p in params]
        var.update = D
        return var


class HpuEstimate(Transform):
    """Finite-difference estimate of the Hessian times the previous step, from consecutive updates.

    ``update``: ``s = x − x_prev``, ``y = u − u_prev`` (states ``prev_params``/``prev_update`` start at zeros), store
    copies of ``x`` and ``u`` as the new previous values, and keep ``y / max(‖s‖, 1e-8)`` (joint L2 norm) in state
    ``y``. ``apply`` returns (a copy of) the stored ``y``. ``reset_for_online`` forgets the previous point, so it
    works under ``Online``.

    Reference:
        J. Nocedal, S. J. Wright, "Numerical Optimization", 2nd ed., Springer 2006, §6.1 (the secant pair
        ``y ≈ H s``).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Online(tz.m.HpuEstimate()), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self):
        super().__init__({})

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        prev_params = [s["prev_params"] if "prev_params" in s else s.setdefault("prev_params", torch.zeros_like(p))
                       for s, p in zip(states, params)]
        prev_update = [s["prev_update"] if "prev_update" in s else s.setdefault("prev_update", torch.zeros_like(t))
                       for s, t in zip(states, tensors)]
        s_vec = TensorList(torch._foreach_sub(params, prev_params))
        y = torch._foreach_sub(tensors, prev_update)
        torch._foreach_copy_(prev_params, params)
        torch._foreach_copy_(prev_update, tensors)
        torch._foreach_div_(y, s_vec.global_vector_norm().clamp_min(1e-8))
        for s, yi in zip(states, y):
            s["y"] = yi

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return [s["y"].clone() for s in states]

    def reset_for_online(self) -> None:
        for s in self.state.values():
            s.pop("prev_params", None)
            s.pop("prev_update", None)
        super().reset_for_online()
