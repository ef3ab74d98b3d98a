"""Random regularization: ``Dropout`` of the update, and evaluating the objective at thinned (``WeightDropout``)
or shifted (``PerturbWeights``) weights."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from ...core import Module, Target, Transform, Var
from ...utils.checks import check_choice, check_non_negative, check_range
from ...utils.foreach import scalar_or_list
from ...utils.tensorlist import TensorList


def dropout_(tensors: list[torch.Tensor], p: float | list[float], graft: bool = False,
             generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Zeroes each element of ``tensors`` with probability ``p`` (per tensor or shared), in place, without
    rescaling the survivors. With ``graft`` the result is rescaled to the joint L2 norm of the input (if every
    element was dropped the result stays zero)."""
    keep = [1 - v for v in p] if isinstance(p, list) else 1 - p
    tl = TensorList(tensors)
    norm_before = tl.global_vector_norm() if graft else None
    mask = tl.bernoulli_like(keep, generator=generator)
    torch._foreach_mul_(tensors, mask)
    if norm_before is not None:
        norm_after = tl.global_vector_norm()
        factor = torch.where(norm_after > 0, norm_before / norm_after, torch.zeros_like(norm_after))
        torch._foreach_mul_(tensors, factor)
    return tensors


class Dropout(Transform):
    """Dropout of the update (or gradient): multiplies ``x`` by a fresh Bernoulli mask.

    ``x ← x ⊙ m`` with ``m_i = 1`` with probability ``1 − p`` and 0 with probability ``p`` (the survivors are not
    rescaled by ``1/(1 − p)``). With ``graft`` the result is multiplied by ``‖x‖ / ‖x ⊙ m‖`` (joint L2 norms),
    keeping the global norm; if every element was dropped the result is zero. Placed before the
    update-producing modules it is gradient dropout, after them update dropout. ``p`` is per parameter, ``graft``
    from the first parameter. Uses the global random generator.

    Args:
        p: probability of dropping an element. Defaults to 0.5.
        graft: keep the joint L2 norm. Defaults to False.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        N. Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from Overfitting", JMLR 15, 2014
        (applied to gradients/updates here).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Dropout(0.1), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, p: float = 0.5, graft: bool = False, target: Target = "update"):
        check_range("Dropout", "p", p, 0, 1)
        super().__init__(dict(p=p, graft=graft), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        p = scalar_or_list(self.unpack_settings(settings, "p"))
        if not isinstance(p, list) and p == 0:
            return tensors
        return dropout_(tensors, p, graft=settings[0]["graft"])


class _ParamClosureModule(Module):
    """Replaces ``var.closure`` by one that evaluates the original closure at modified parameter values
    (``_modify_(selected params)`` in place) and restores the exact saved values afterwards."""

    def _prepare(self, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], Callable[[list[torch.Tensor]], None]]:
        """Returns the parameters to modify and a function modifying them in place."""
        raise NotImplementedError

    def step(self, var: Var) -> Var:
        original = self._require_closure(var)
        selected, modify_ = self._prepare(var.params)
        if not selected:
            return var

        def modified_closure(backward: bool = True) -> Any:
            with torch.no_grad():
                saved = [p.clone() for p in selected]
                modify_(selected)
            try:
                return original(backward)
            finally:
                with torch.no_grad():
                    torch._foreach_copy_(selected, saved)

        var.closure = modified_closure
        return var


class WeightDropout(_ParamClosureModule):
    """Evaluates the objective at randomly thinned weights (DropConnect-style).

    Each step draws one mask per parameter (each weight zeroed with probability ``p``; all ones if the
    per-parameter setting ``use_dropout`` is False) and replaces ``var.closure`` by one that multiplies the weights
    by the masks, calls the original closure (with backward when requested), and restores the exact saved weights.
    Every evaluation within a step uses the same masks; the gradient is that of the objective at the thinned
    weights. Place it first: a loss or gradient already computed is not recomputed. ``p`` and ``use_dropout`` are
    per parameter. Uses the global random generator. Requires a closure.

    Note: the thinning is done in place, so the wrapped closure can't be differentiated afterwards with
    ``backward=False`` + ``torch.autograd.grad`` (Hessian-vector products by autograd); use it with first-order
    modules or finite-difference curvature.

    Args:
        p: probability of dropping a weight. Defaults to 0.5.
        graft: accepted for compatibility, unused. Defaults to True.

    Reference:
        L. Wan, M. Zeiler, S. Zhang, Y. LeCun, R. Fergus, "Regularization of Neural Networks using DropConnect",
        ICML 2013.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.WeightDropout(0.1), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, p: float = 0.5, graft: bool = True):
        check_range("WeightDropout", "p", p, 0, 1)
        super().__init__(dict(p=p, graft=graft, use_dropout=True))

    @torch.no_grad()
    def _prepare(self, params):
        p, use = self.get_settings(params, "p", "use_dropout")
        selected = [param for param, pi, u in zip(params, p, use) if u and pi != 0]
        if not selected:
            return [], lambda _: None
        keep = scalar_or_list([1 - pi for pi, u in zip(p, use) if u and pi != 0])
        masks = TensorList(selected).bernoulli_like(keep)

        def thin_(ps: list[torch.Tensor]) -> None:
            torch._foreach_mul_(ps, masks)

        return selected, thin_


_PERTURB_DISTRIBUTIONS = ("normal", "gaussian", "uniform", "sphere")


def perturbation(params: Sequence[torch.Tensor], alpha: Sequence[float], relative: Sequence[bool],
                 distribution: Sequence[str], generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Random shifts δ, one per parameter: scale ``a = alpha`` (times ``mean|p|`` if ``relative``);
    ``'normal'``/``'gaussian'``: ``a·N(0, 1)``; ``'uniform'``: U(−a, a); ``'sphere'``: a Gaussian rescaled to L2 norm
    ``a`` for that tensor."""
    out: list[torch.Tensor | None] = [None] * len(params)
    for dist in dict.fromkeys(distribution):
        if dist not in _PERTURB_DISTRIBUTIONS:
            raise ValueError(f"PerturbWeights: distribution must be one of {_PERTURB_DISTRIBUTIONS}, got {dist!r}")
        idx = [i for i, d in enumerate(distribution) if d == dist]
        ps = TensorList(params[i] for i in idx)
        if dist == "uniform":
            sample = ps.uniform_like(-1, 1, generator=generator)
        else:
            sample = ps.randn_like(generator=generator)
            if dist == "sphere":
                torch._foreach_div_(sample, torch._foreach_norm(sample))

        a = [alpha[i] for i in idx]
        rel = [relative[i] for i in idx]
        if all(rel):  # a · mean|p| = a/n · ‖p‖₁, kept as 0-d tensors (no host sync)
            torch._foreach_mul_(sample, torch._foreach_mul(torch._foreach_norm(ps, 1),
                                                           [ai / p.numel() for ai, p in zip(a, ps)]))
        elif any(rel):  # mixed settings (rare): per tensor
            for t, p, ai, r in zip(sample, ps, a, rel):
                t.mul_(p.abs().mean() * ai if r else ai)
        else:
            torch._foreach_mul_(sample, scalar_or_list(a))
        for i, s in zip(idx, sample):
            out[i] = s
    return out  # type: ignore[return-value]


class PerturbWeights(_ParamClosureModule):
    """Evaluates the objective at randomly shifted weights.

    Each step draws one shift δ per parameter: scale ``a = alpha``, times ``mean(|p|)`` if ``relative``;
    ``'normal'``/``'gaussian'`` → ``a·N(0, 1)``, ``'uniform'`` → U(−a, a), ``'sphere'`` → a Gaussian rescaled to L2
    norm ``a`` for that tensor. ``var.closure`` is replaced by one that adds δ, calls the original closure (backward
    as requested) and restores the exact saved weights; the same δ is used for every evaluation within the step.
    Per-parameter settings ``alpha``, ``relative``, ``distribution`` and ``perturb`` (default True; False → no
    shift). Place it first: a loss or gradient already computed is not recomputed. Uses the global random
    generator. Requires a closure. (The same in-place caveat as ``WeightDropout`` applies to autograd Hvps.)

    Args:
        alpha: size of the shift. Defaults to 0.1.
        relative: multiply ``alpha`` by the mean absolute value of each parameter. Defaults to True.
        distribution: ``'normal'``, ``'gaussian'``, ``'uniform'`` or ``'sphere'``. Defaults to ``'normal'``.

    Reference:
        G. An, "The Effects of Adding Noise During Backpropagation Training on a Generalization Performance",
        Neural Computation 8(3), 1996 (weight noise).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.PerturbWeights(0.01), tz.m.Adam(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, alpha: float = 0.1, relative: bool = True,
                 distribution: Literal["normal", "gaussian", "uniform", "sphere"] | str = "normal"):
        check_non_negative("PerturbWeights", "alpha", alpha)
        check_choice("PerturbWeights", "distribution", distribution, _PERTURB_DISTRIBUTIONS)
        super().__init__(dict(alpha=alpha, relative=relative, distribution=distribution, perturb=True))

    @torch.no_grad()
    def _prepare(self, params):
        alpha, relative, distribution, perturb = self.get_settings(params, "alpha", "relative", "distribution",
                                                                  "perturb")
        idx = [i for i, (a, on) in enumerate(zip(alpha, perturb)) if on and a != 0]
        if not idx:
            return [], lambda _: None
        selected = [params[i] for i in idx]
        delta = perturbation(selected, [alpha[i] for i in idx], [relative[i] for i in idx],
                             [distribution[i] for i in idx])

        def shift_(ps: list[torch.Tensor]) -> None:
            torch._foreach_add_(ps, delta)

        return selected, shift_
