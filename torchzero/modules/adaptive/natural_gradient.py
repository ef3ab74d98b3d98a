"""Empirical-Fisher natural gradient from per-sample losses."""
from __future__ import annotations

from typing import Any

import torch

from ...core import Module, Var
from ...utils.checks import check_non_negative
from ...utils.derivatives import flatten_jacobian, jacobian_wrt
from ...utils.linalg.linear_operator import AtA, LinearOperator, ScaledIdentity
from ...utils.linalg.matrix_funcs import solve_psd_eigh
from ...utils.torch_tools import vec_to_tensors
from .full_matrix_adagrad import lm_adagrad_apply, lm_adagrad_basis


def natural_gradient_direction(G: torch.Tensor, reg: float) -> torch.Tensor | None:
    """``Gᵀ(GGᵀ + reg·I)⁻¹1 = (GᵀG + reg·I)⁻¹Gᵀ1`` for the n×d per-sample Jacobian ``G``.

    The smaller of the two systems is solved (n×n when ``n ≤ d``, else d×d, which is also far better conditioned
    than the singular n×n one), through an eigendecomposition with eigenvalues ``≤ size·eps·λ_max`` treated as
    zero (``solve_psd_eigh``): for a well-conditioned system this is the plain solve, and a singular one (``reg = 0``
    with duplicated or zero per-sample gradients) gives the minimum-norm solution instead of amplified rounding
    errors. Returns None if the decomposition fails even in float64 (non-finite ``G``).
    """
    n, d = G.shape
    if n <= d:
        GGT = G @ G.mT
        if reg != 0:
            GGT.diagonal().add_(reg)
        z = solve_psd_eigh(GGT, torch.ones(n, dtype=G.dtype, device=G.device))
        return None if z is None else G.mT @ z
    GTG = G.mT @ G
    if reg != 0:
        GTG.diagonal().add_(reg)
    return solve_psd_eigh(GTG, G.sum(0))


class NaturalGradient(Module):
    """Empirical-Fisher natural gradient from a vector of per-sample losses ``f`` (n entries).

    The losses come from the closure (evaluated with ``backward=False``) or from ``opt.step(loss=f)`` with the
    autograd graph attached.

    - Update: ``G = ∂f/∂x`` (n×d over all parameters flattened; one vectorized backward pass when ``batched``),
      stored as global ``'G'``; gradient ``g = Gᵀ1`` (``Gᵀf`` with ``gn_grad``), stored as ``'g'`` and written as
      the var's gradient; the var's loss becomes the scalar objective ``Σf`` (``Σf²`` with ``gn_grad``), and the
      closure is replaced by one returning that scalar with a normal backward, for later line searches.
    - Apply: ``sqrt=False``: output ``Gᵀ(GGᵀ + reg·I)⁻¹1`` ``= (GᵀG + reg·I)⁻¹Gᵀ1`` (the right-hand side is always
      the ones vector); ``sqrt=True``: the GGT whitening of ``LMAdagrad`` with ``M = Gᵀ`` and damping ``reg``,
      output ``U Λ^(−1/2) Uᵀ g``.

    ``get_H`` returns ``GᵀG`` as an ``AtA`` linear operator (the identity before the first step).

    Numerical policy: the smaller of the equivalent n×n and d×d systems is solved, through an eigendecomposition
    with numerically zero eigenvalues (``≤ size·eps·λ_max``) treated as zero, so a singular system (``reg=0``,
    duplicated or zero per-sample gradients) gives the finite minimum-norm step. If the decomposition fails even in float64 (non-finite
    Jacobian) the output is the gradient ``g`` itself. With ``gn_grad`` the closure's objective is ``Σf²``, whose
    gradient is ``2Gᵀf``, twice the stored ``g``.

    Args:
        reg: added to the diagonal of ``GGᵀ`` (``MᵀM`` for ``sqrt``). Defaults to 1e-8.
        sqrt: use the square-root (whitening) form. Defaults to False.
        gn_grad: use ``Gᵀf`` (Gauss–Newton gradient of residuals ``f``) instead of ``Gᵀ1``. Defaults to False.
        batched: compute the Jacobian with one vectorized backward pass (else a loop over samples). Defaults to
            True.

    Reference:
        S. Amari, "Natural Gradient Works Efficiently in Learning", Neural Computation 1998; F. Kunstner,
        L. Balles, P. Hennig, "Limitations of the Empirical Fisher Approximation for Natural Gradient Descent",
        NeurIPS 2019.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.NaturalGradient(), tz.m.LR(1e-2))

        def closure(backward=True):
            # per-sample losses, NaturalGradient differentiates them itself
            return loss_fn(model(inputs), targets, reduction="none")

        opt.step(closure)
        ```
    """

    _evaluates_closure_in_update = True

    def __init__(self, reg: float = 1e-08, sqrt: bool = False, gn_grad: bool = False, batched: bool = True):
        check_non_negative("NaturalGradient", "reg", reg)
        super().__init__(dict(reg=reg, sqrt=sqrt, gn_grad=gn_grad, batched=batched))

    @torch.no_grad()
    def update(self, var: Var) -> None:
        name = type(self).__name__
        if var.loss is None and var.closure is None:
            raise RuntimeError(f"{name} requires the per-sample losses: call `opt.step(closure)` where "
                               "`closure(backward=False)` returns the vector of per-sample losses, or "
                               "`opt.step(loss=losses)` with the autograd graph attached.")
        params = var.params
        settings = self.settings[params[0]]
        batched, gn_grad = settings["batched"], settings["gn_grad"]
        with torch.enable_grad():
            f = var.get_loss(backward=False)
            if not isinstance(f, torch.Tensor) or f.numel() == 0:
                raise RuntimeError(f"{name} expects a tensor of per-sample losses, got {type(f).__name__}")
            if not f.requires_grad:
                raise RuntimeError(f"{name}: the per-sample losses have no autograd graph; evaluate them with "
                                   "gradients enabled (the closure is called with backward=False and must still "
                                   "build the graph).")
            G = flatten_jacobian(jacobian_wrt([f.ravel()], params, batched=batched))
        f = f.detach().ravel()
        self.global_state["G"] = G
        g = self.global_state["g"] = G.mT @ f if gn_grad else G.sum(0)
        var.grad = vec_to_tensors(g, params)
        var.loss = var.loss_approx = (f.square() if gn_grad else f).sum()

        closure = var.closure
        if closure is not None:
            def ngd_closure(backward: bool = True) -> Any:
                if not backward:
                    value = closure(False)
                    return (value.square() if gn_grad else value).sum()
                with torch.enable_grad():
                    value = closure(False)
                    value = (value.square() if gn_grad else value).sum()
                    var.zero_grad()
                    value.backward()
                return value

            var.closure = ngd_closure

    @torch.no_grad()
    def apply(self, var: Var) -> Var:
        if "G" not in self.global_state:
            raise RuntimeError("NaturalGradient: apply was called before update")
        G: torch.Tensor = self.global_state["G"]
        g: torch.Tensor = self.global_state["g"]
        settings = self.settings[var.params[0]]
        reg = settings["reg"]
        if settings["sqrt"]:
            res = lm_adagrad_basis(G.mT, reg, 0)
            v = g if res is None else lm_adagrad_apply(g, *res)
        else:
            v = natural_gradient_direction(G, reg)
            if v is None:
                v = g
        var.update = vec_to_tensors(v, var.params)
        return var

    def get_H(self, var: Var) -> LinearOperator:
        G = self.global_state.get("G")
        if G is None:
            p0 = var.params[0]
            n = sum(p.numel() for p in var.params)
            return ScaledIdentity(1.0, shape=(n, n), device=p0.device, dtype=p0.dtype)
        return AtA(G)
