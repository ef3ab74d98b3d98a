"""Sign-consistency and cosine-similarity rules: ``Cautious``, ``IntermoduleCautious``,
``UpdateGradientSignConsistency``, ``ScaleByGradCosineSimilarity`` and ``ScaleModulesByCosineSimilarity``.

All of them compare the update ``u`` with a reference direction ``g`` (the raw gradient, or the output of a
``compare`` module). The math is in the functions ``sign_consistency_mask``, ``cautious_`` and
``scale_by_cosine_similarity_``; the classes only wire settings to them.

Non-finite values: the mask is ``sign(u)·sign(g) > 0`` evaluated with ``torch.sign``, which maps NaN to 0, so an
element where either side is NaN counts as inconsistent (as the IEEE comparison ``u·g > 0`` would). NaN in the
update itself is never hidden: ``'zero'`` mode multiplies it by the mask (NaN·0 = NaN).
"""
from __future__ import annotations

from typing import Literal

import torch

from ...core import Chainable, Module, Transform, Var
from ...utils.checks import check_choice, check_non_negative
from ...utils.tensorlist import TensorList
from ..ops.operands import evaluate_operand, is_module_operand

CautiousMode = Literal["zero", "grad", "backtrack"]
_MODES = ("zero", "grad", "backtrack")


# ----------------------------------------------------------------------------------------------- functional
def sign_consistency_mask(tensors: list[torch.Tensor], other: list[torch.Tensor]) -> list[torch.Tensor]:
    """Float mask, 1 where ``tensors`` and ``other`` have the same strict sign (``t·o > 0``), 0 elsewhere.

    Computed as ``max(sign(t)·sign(o), 0)`` (four multi-tensor ops), so it doesn't underflow the way ``t·o`` does
    for tiny values in low precision. NaN counts as inconsistent (``torch.sign(nan) = 0``).
    """
    mask = list(torch._foreach_sign(tensors))
    torch._foreach_mul_(mask, torch._foreach_sign(other))
    torch._foreach_clamp_min_(mask, 0)
    return mask


def normalize_mask_(mask: list[torch.Tensor], eps: float) -> list[torch.Tensor]:
    """Divides ``mask`` in place by ``max(mean(mask), eps)``, the mean over all elements of all tensors
    (a 0-d tensor, no host synchronization)."""
    tl = TensorList(mask)
    fraction = tl.global_sum() / max(tl.global_numel(), 1)
    torch._foreach_div_(mask, fraction.clamp_min(eps))
    return mask


def cautious_(tensors_: list[torch.Tensor], compare: list[torch.Tensor], mode: CautiousMode = "zero",
              normalize: bool = False, eps: float = 1e-6) -> list[torch.Tensor]:
    """The cautious rule, in place on ``tensors_`` (u) with the reference direction ``compare`` (g).

    ``mask = u ⊙ g > 0``; ``'zero'``: ``u ⊙ mask`` (divided by ``max(mean(mask), eps)`` when ``normalize``);
    ``'grad'``: ``g`` where the mask is false; ``'backtrack'``: ``−u`` where the mask is false.
    """
    mask = sign_consistency_mask(tensors_, compare)
    if mode == "zero":
        if normalize:
            normalize_mask_(mask, eps)
        torch._foreach_mul_(tensors_, mask)
    elif mode == "grad":
        # lerp with the exact 0/1 weight 1 − mask returns one endpoint exactly: u where consistent, g elsewhere
        torch._foreach_neg_(mask)
        torch._foreach_add_(mask, 1)
        torch._foreach_lerp_(tensors_, compare, mask)
    elif mode == "backtrack":
        # 2·mask − 1 is +1 where consistent and −1 elsewhere
        torch._foreach_mul_(mask, 2)
        torch._foreach_sub_(mask, 1)
        torch._foreach_mul_(tensors_, mask)
    else:
        raise ValueError(f"cautious_: unknown mode {mode!r}, expected one of {_MODES}")
    return tensors_


def cosine_similarity(a: list[torch.Tensor], b: list[torch.Tensor], eps: float) -> torch.Tensor:
    """``⟨a, b⟩ / max(‖a‖‖b‖, eps)`` with all tensors treated as one vector (a 0-d tensor)."""
    ta, tb = TensorList(a), TensorList(b)
    denom = (ta.global_vector_norm(2) * tb.global_vector_norm(2)).clamp_min(eps)
    return ta.dot(b) / denom


def scale_by_cosine_similarity_(tensors_: list[torch.Tensor], other: list[torch.Tensor], eps: float
                                ) -> list[torch.Tensor]:
    """Multiplies ``tensors_`` (a) in place by ``⟨a, b⟩ / max(‖a‖‖b‖, eps)`` with ``b = other``."""
    torch._foreach_mul_(tensors_, cosine_similarity(tensors_, other, eps))
    return tensors_


def _check_cautious_args(owner: str, normalize: bool, eps: float, mode: str) -> None:
    if not isinstance(normalize, bool):
        raise TypeError(f"{owner}: normalize must be a bool, got {type(normalize).__name__}")
    check_non_negative(owner, "eps", eps)
    check_choice(owner, "mode", mode, _MODES)


def _check_operands(owner: str, main: Chainable, compare: Chainable) -> None:
    for name, value in (("main", main), ("compare", compare)):
        if not is_module_operand(value):
            raise TypeError(f"{owner}: {name} must be a module or a sequence of modules, got {type(value).__name__}")
    if main is compare:
        raise ValueError(f"{owner}: main and compare must be different module instances (each keeps its own state)")


# ----------------------------------------------------------------------------------------------- modules
class Cautious(Transform):
    """Cautious update: keeps only the entries of the update whose sign agrees with the raw gradient.

    With the raw gradient ``g`` (``var.get_grad()``) and ``mask = u ⊙ g > 0``:

    - ``'zero'``: ``u ⊙ mask``; with ``normalize``, divided by ``max(mean(mask), eps)`` (mean over all elements
      of all parameters), which keeps the average step size when many entries are masked;
    - ``'grad'``: ``u`` where the mask is true, ``g`` elsewhere;
    - ``'backtrack'``: ``u`` where the mask is true, ``−u`` elsewhere.

    Usually placed after a momentum or adaptive module. Elements where ``u`` or ``g`` is zero or NaN count as
    inconsistent (see the module docs for the NaN policy).

    Args:
        normalize: rescale by the fraction of kept entries (``'zero'`` mode only). Defaults to False.
        eps: lower bound of that fraction. Defaults to 1e-6.
        mode: what to put where the signs disagree: ``'zero'``, ``'grad'`` or ``'backtrack'``. Defaults to
            ``'zero'``.

    Reference:
        K. Liang, L. Chen, B. Liu, Q. Liu, "Cautious Optimizers: Improving Training with One Line of Code",
        2024 (arXiv:2411.16085).

    Example:
        ```python
        # cautious Adam
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.Cautious(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, normalize: bool = False, eps: float = 1e-06, mode: CautiousMode = "zero"):
        _check_cautious_args("Cautious", normalize, eps, mode)
        super().__init__(dict(normalize=normalize, eps=eps, mode=mode), uses_grad=True)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        assert grads is not None
        s0 = settings[0]
        return cautious_(tensors, grads, mode=s0["mode"], normalize=s0["normalize"], eps=s0["eps"])


class UpdateGradientSignConsistency(Transform):
    """Replaces the update by the float mask of entries whose sign agrees with the raw gradient.

    Output ``mask = (u ⊙ g > 0)`` as 1.0/0.0 with the raw gradient ``g``; with ``normalize`` it is divided by
    ``max(mean(mask), eps)`` (mean over all elements of all parameters). Useful as an operand, for example to
    scale another update by the consistency mask.

    Args:
        normalize: divide by the fraction of consistent entries. Defaults to False.
        eps: lower bound of that fraction. Defaults to 1e-6.

    Reference:
        library-specific; the mask of K. Liang et al., "Cautious Optimizers", 2024 (arXiv:2411.16085).

    Example:
        ```python
        # Adam scaled by the normalized consistency mask (= Cautious(normalize=True))
        opt = tz.Modular(model.parameters(), tz.m.Adam(),
                         tz.m.Mul(tz.m.UpdateGradientSignConsistency(normalize=True)), tz.m.LR(1e-3))
        ```
    """

    _readonly_input = True

    def __init__(self, normalize: bool = False, eps: float = 1e-06):
        _check_cautious_args("UpdateGradientSignConsistency", normalize, eps, "zero")
        super().__init__(dict(normalize=normalize, eps=eps), uses_grad=True)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        assert grads is not None
        mask = sign_consistency_mask(tensors, grads)
        if settings[0]["normalize"]:
            normalize_mask_(mask, settings[0]["eps"])
        return mask


class ScaleByGradCosineSimilarity(Transform):
    """Scales the update by its cosine similarity with the raw gradient.

    Output ``u · ⟨u, g⟩ / max(‖u‖‖g‖, eps)`` with the raw gradient ``g`` (inner product and norms over all
    parameters as one vector). An update pointing against the gradient is flipped, one orthogonal to it is zeroed.

    Args:
        eps: lower bound of ``‖u‖‖g‖`` (a zero update or gradient gives a zero output). Defaults to 1e-6.

    Reference:
        library-specific.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.HeavyBall(0.9), tz.m.ScaleByGradCosineSimilarity(),
                         tz.m.LR(1e-2))
        ```
    """

    def __init__(self, eps: float = 1e-06):
        check_non_negative("ScaleByGradCosineSimilarity", "eps", eps)
        super().__init__(dict(eps=eps), uses_grad=True)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        assert grads is not None
        return scale_by_cosine_similarity_(tensors, grads, settings[0]["eps"])


class IntermoduleCautious(Module):
    """Cautious rule between two modules: masks the output of ``main`` where its sign disagrees with ``compare``.

    ``main`` and ``compare`` are each stepped on a copy of the incoming ``Var`` (both get the same input update; a
    loss or gradient one of them computes is kept and reused). With ``a`` = main's output and ``b`` = compare's
    output, ``mask = a ⊙ b > 0`` and the output is ``Cautious``'s rule with ``b`` in place of the gradient:
    ``'zero'``: ``a ⊙ mask`` (divided by ``max(mean(mask), eps)`` with ``normalize``); ``'grad'``: ``b`` where
    the mask is false; ``'backtrack'``: ``−a`` where the mask is false. Settings are read from the module
    defaults. ``IntermoduleCautious(Adam(), Grad())`` is ``[Adam(), Cautious()]``.

    Args:
        main: the module(s) producing the update.
        compare: the module(s) producing the reference direction.
        normalize: rescale by the fraction of kept entries (``'zero'`` mode only). Defaults to False.
        eps: lower bound of that fraction. Defaults to 1e-6.
        mode: ``'zero'``, ``'grad'`` or ``'backtrack'``. Defaults to ``'zero'``.

    Reference:
        K. Liang, L. Chen, B. Liu, Q. Liu, "Cautious Optimizers: Improving Training with One Line of Code",
        2024 (arXiv:2411.16085); comparing two modules is library-specific.

    Example:
        ```python
        # Adam, masked where it disagrees with heavy-ball momentum of the gradient
        opt = tz.Modular(model.parameters(), tz.m.IntermoduleCautious(tz.m.Adam(), tz.m.HeavyBall(0.9)),
                         tz.m.LR(1e-3))
        ```
    """

    def __init__(self, main: Chainable, compare: Chainable, normalize: bool = False, eps: float = 1e-06,
                 mode: CautiousMode = "zero"):
        _check_cautious_args("IntermoduleCautious", normalize, eps, mode)
        _check_operands("IntermoduleCautious", main, compare)
        super().__init__(dict(normalize=normalize, eps=eps, mode=mode))
        self.set_child("main", main)
        self.set_child("compare", compare)

    def step(self, var: Var) -> Var:
        main = evaluate_operand(self.children["main"], var)
        compare = evaluate_operand(self.children["compare"], var)
        d = self.defaults
        with torch.no_grad():
            var.update = cautious_(main, compare, mode=d["mode"], normalize=d["normalize"], eps=d["eps"])
        return var


class ScaleModulesByCosineSimilarity(Module):
    """Scales the output of ``main`` by its cosine similarity with the output of ``compare``.

    ``main`` and ``compare`` are each stepped on a copy of the incoming ``Var`` (as in ``IntermoduleCautious``);
    with ``a`` = main's output and ``b`` = compare's output the update becomes ``a · ⟨a, b⟩ / max(‖a‖‖b‖, eps)``
    (global inner product and norms). Settings are read from the module defaults.

    Args:
        main: the module(s) producing the update.
        compare: the module(s) producing the reference direction.
        eps: lower bound of ``‖a‖‖b‖``. Defaults to 1e-6.

    Reference:
        library-specific.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.ScaleModulesByCosineSimilarity(tz.m.Adam(), tz.m.Grad()),
                         tz.m.LR(1e-3))
        ```
    """

    def __init__(self, main: Chainable, compare: Chainable, eps: float = 1e-06):
        check_non_negative("ScaleModulesByCosineSimilarity", "eps", eps)
        _check_operands("ScaleModulesByCosineSimilarity", main, compare)
        super().__init__(dict(eps=eps))
        self.set_child("main", main)
        self.set_child("compare", compare)

    def step(self, var: Var) -> Var:
        main = evaluate_operand(self.children["main"], var)
        compare = evaluate_operand(self.children["compare"], var)
        with torch.no_grad():
            var.update = scale_by_cosine_similarity_(main, compare, self.defaults["eps"])
        return var
