"""Sharpness-aware minimization: ``SAM`` and its scale-invariant variant ``ASAM``."""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ...core import Module, Var
from ...utils.checks import check_bool, check_range
from ...utils.foreach import Scalars, scalar_or_list


def sam_perturbation(grads: Sequence[torch.Tensor], params: Sequence[torch.Tensor], rho: Scalars, p: float,
                     eps: Scalars, asam: bool = False) -> list[torch.Tensor]:
    """The ascent perturbation of SAM, per parameter tensor, as new tensors.

    With ``q = p/(p − 1)`` (``q = 1`` for ``p = inf``):
    ``e = ρ · sign(g)·|g|^(q−1) / max((Σ|g|^q)^(1/p), eps)``, the sum over the elements of each tensor (for ``p = 2``,
    ``e = ρ g/‖g‖``). With ``asam``, ``|g|`` inside the sum is replaced by ``|x|·|g|`` and ``e`` is multiplied by
    ``x²`` (for ``p = 2``, ``e = ρ x² g / ‖|x| g‖``). Uses ``(Σ|a|^q)^(1/p) = ‖a‖_q^(q−1)``.
    """
    grads = list(grads)
    q = 1.0 if math.isinf(p) else p / (p - 1)
    scaled = torch._foreach_mul(torch._foreach_abs(list(params)), grads) if asam else grads
    norms = torch.stack(torch._foreach_norm(scaled, q))
    if q != 2:
        norms = norms ** (q - 1)
    # python scalars where possible (no host-to-device copies); per-parameter values as a tensor
    if isinstance(eps, list):
        norms = torch.maximum(norms, torch.tensor(eps, dtype=norms.dtype, device=norms.device))
    else:
        norms = norms.clamp(min=eps)
    if isinstance(rho, list):
        factors = list((torch.tensor(rho, dtype=norms.dtype, device=norms.device) / norms).unbind())
    else:
        factors = list((rho / norms).unbind())

    if q == 2:
        e = list(torch._foreach_mul(grads, factors))
    elif q == 1:
        e = list(torch._foreach_sign(grads))
        torch._foreach_mul_(e, factors)
    else:
        e = list(torch._foreach_pow(torch._foreach_abs(grads), q - 1))
        torch._foreach_mul_(e, torch._foreach_sign(grads))
        torch._foreach_mul_(e, factors)
    if asam:
        torch._foreach_mul_(e, torch._foreach_mul(list(params), list(params)))
    return e


class SAM(Module):
    """Sharpness-aware minimization: later modules see the loss and gradient at the ascent point ``x + e``.

    A closure modifier; the update is not touched. It installs a closure that

    1. runs the original closure with backward at ``x`` to get ``g``;
    2. builds ``e = ρ · sign(g)·|g|^(q−1) / max((Σ|g|^q)^(1/p), eps)`` with ``q = p/(p − 1)``, the sum per parameter
       tensor (``p = 2``: ``e = ρ g/‖g‖`` per tensor); with ``asam``, ``|g|`` in the sum becomes ``|x|·|g|`` and
       ``e`` is multiplied by ``x²``;
    3. evaluates the loss (and, with ``backward``, the gradient) at ``x + e``;
    4. restores ``x`` bit-exactly (the values are copied back, not recomputed as ``(x + e) − e``) and returns the
       loss at ``x + e``. With ``backward=False`` the ``.grad`` attributes from before the call are restored.

    Every evaluation of the new closure costs two evaluations (forward and backward) of the original one. Place
    SAM first: a gradient computed before it is not affected. Non-finite gradients are not masked (they give a
    non-finite ``e`` and gradient at ``x + e``; the parameters are still restored). Because the parameters are
    restored in place, a later module cannot differentiate the returned loss itself (``hvp_method='autograd'``
    curvature modules); finite-difference ``hvp_method``s work.

    Args:
        rho: radius of the perturbation (per-parameter). Defaults to 0.05.
        p: order of the dual norm ball, ``p > 1`` (``inf`` allowed: ``e = ρ sign(g)``). Defaults to 2.
        eps: lower bound of the normaliser (per-parameter). Defaults to 1e-10.
        asam: adaptive (scale-invariant) SAM, see ``ASAM``. Defaults to False.

    Reference:
        P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur, "Sharpness-Aware Minimization for Efficiently Improving
        Generalization", ICLR 2021.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.SAM(0.05), tz.m.HeavyBall(0.9), tz.m.LR(0.1))
        opt.step(closure)  # closure(backward=True) is required
        ```
    """

    def __init__(self, rho: float = 0.05, p: float = 2, eps: float = 1e-10, asam: bool = False):
        name = type(self).__name__
        check_range(name, "rho", rho, low=0)
        check_range(name, "p", p, low=1, low_inclusive=False)
        check_range(name, "eps", eps, low=0)
        check_bool(name, "asam", asam)
        super().__init__(dict(rho=rho, p=p, eps=eps, asam=asam))

    def perturbed_closure(self, closure: Callable, params: list[torch.Tensor]) -> Callable[..., Any]:
        """The closure that evaluates ``closure`` at the ascent point (see the class docstring)."""

        def sam_closure(backward: bool = True) -> Any:
            s0 = self.settings[params[0]]
            rho, eps = self.get_settings(params, "rho", "eps")
            old_grads = [p.grad for p in params]
            for p in params:  # the closure may zero p.grad in place: keep the caller's tensors out of its reach
                p.grad = None
            saved = [p.detach().clone() for p in params]
            try:
                with torch.enable_grad():
                    closure()
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
                with torch.no_grad():
                    e = sam_perturbation(grads, params, scalar_or_list(rho), s0["p"], scalar_or_list(eps),
                                         asam=s0["asam"])
                    torch._foreach_add_(params, e)
                del grads, e
                if backward:
                    with torch.enable_grad():
                        return closure()
                return closure(False)
            finally:
                with torch.no_grad():
                    torch._foreach_copy_(params, saved)
                if not backward:
                    for p, g in zip(params, old_grads):
                        p.grad = g

        return sam_closure

    def step(self, var: Var) -> Var:
        closure = self._require_closure(var)
        if var.grad is not None:
            warnings.warn(f"{type(self).__name__}: the gradient was already computed before this module, so it is "
                          "the gradient at x, not at the perturbed point; place it first in the chain.", stacklevel=2)
        var.closure = self.perturbed_closure(closure, var.params)
        return var


class ASAM(SAM):
    """Adaptive SAM: ``SAM(rho, p, eps, asam=True)``, the perturbation relative to the weight magnitudes.

    For ``p = 2`` the perturbation of a tensor ``w`` is ``e = ρ · w² · g / ‖|w|·g‖`` (per tensor), which makes the
    sharpness measure invariant to rescaling of the weights; hence the larger default radius. Later modules see
    the loss and gradient at ``w + e``; each evaluation costs two gradient evaluations.

    Args:
        rho: radius of the perturbation (per-parameter). Defaults to 0.5.
        p: order of the dual norm ball, ``p > 1``. Defaults to 2.
        eps: lower bound of the normaliser (per-parameter). Defaults to 1e-10.

    Reference:
        J. Kwon, J. Kim, H. Park, I. K. Choi, "ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant
        Learning of Deep Neural Networks", ICML 2021.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.ASAM(0.5), tz.m.HeavyBall(0.9), tz.m.LR(0.1))
        opt.step(closure)  # closure(backward=True) is required
        ```
    """

    def __init__(self, rho: float = 0.5, p: float = 2, eps: float = 1e-10):
        super().__init__(rho=rho, p=p, eps=eps, asam=True)
