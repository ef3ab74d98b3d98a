"""History transforms: outputs built from the previous inputs (``Previous``, ``LastDifference``, ``LastProduct``,
``LastRatio``, ``LastAbsoluteRatio``) and the gradient difference ``LastGradDifference``."""
from __future__ import annotations

from collections import deque
from typing import Literal

import torch

from ...core import Module, Target, Transform, Var
from ...utils.checks import check_int
from ...utils.foreach import scalar_or_list


def _state(states: list[dict], tensors: list[torch.Tensor], key: str, fill: float) -> list[torch.Tensor]:
    return [s[key] if key in s else s.setdefault(key, torch.full_like(t, fill)) for s, t in zip(states, tensors)]


class Previous(Transform):
    """Outputs the input from ``n`` steps ago (the very first input during the first ``n`` steps).

    State ``history``: a deque of copies of the last ``n + 1`` inputs (copies, so later in-place modules can't
    alter it); the output is its oldest entry.

    Args:
        n: delay in steps. Defaults to 1.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        none (a delay line, e.g. for delayed-gradient experiments).

    Example:
        ```python
        # SGD with the gradient from 2 steps ago
        opt = tz.Modular(model.parameters(), tz.m.Previous(2), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, n: int = 1, target: Target = "update"):
        check_int("Previous", "n", n, 0)
        super().__init__(dict(n=n), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        out = []
        for t, s, n in zip(tensors, states, self.unpack_settings(settings, "n")):
            history = s.get("history")
            if history is None or history.maxlen != n + 1:
                history = s["history"] = deque(history or (), maxlen=n + 1)
            history.append(t.clone())
            oldest = history[0]
            # once the deque is full the oldest entry is dropped by the next append, so it can be handed out
            out.append(oldest if len(history) == n + 1 else oldest.clone())
        return out


class LastDifference(Transform):
    """``x − x_prev``; state ``prev_tensors`` starts at zeros and then holds (a copy of) the last input.

    Args:
        target: what to transform. Defaults to ``'update'``.

    Reference:
        none (first difference of a sequence).

    Example:
        ```python
        # the difference of consecutive gradients as the update
        opt = tz.Modular(model.parameters(), tz.m.LastDifference(), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, target: Target = "update"):
        super().__init__({}, target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        prev = _state(states, tensors, "prev_tensors", 0)
        out = list(torch._foreach_sub(tensors, prev))
        torch._foreach_copy_(prev, tensors)
        return out


class LastProduct(Transform):
    """``x · x_prev`` (elementwise); state ``prev`` starts at ones and then holds (a copy of) the last input.

    Args:
        target: what to transform. Defaults to ``'update'``.

    Reference:
        none (product of consecutive inputs; its sign tells whether they agree).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.LastProduct(), tz.m.Sign(), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, target: Target = "update"):
        super().__init__({}, target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        prev = _state(states, tensors, "prev", 1)
        out = list(torch._foreach_mul(tensors, prev))
        torch._foreach_copy_(prev, tensors)
        return out


def _check_numerator(owner: str, numerator: str) -> None:
    if numerator not in ("cur", "prev"):
        raise ValueError(f"{owner}: numerator must be 'cur' or 'prev', got {numerator!r}")


class LastRatio(Transform):
    """``x / x_prev`` (``numerator='cur'``) or ``x_prev / x`` (``'prev'``); state ``prev`` starts at ones.

    Args:
        numerator: which input is the numerator. Defaults to ``'cur'``.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        none (ratio of consecutive inputs).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.LastRatio(), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, numerator: Literal["cur", "prev"] = "cur", target: Target = "update"):
        _check_numerator("LastRatio", numerator)
        super().__init__(dict(numerator=numerator), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        prev = _state(states, tensors, "prev", 1)
        if settings[0]["numerator"] == "cur":
            out = list(torch._foreach_div(tensors, prev))
        else:
            out = list(torch._foreach_div(prev, tensors))
        torch._foreach_copy_(prev, tensors)
        return out


class LastAbsoluteRatio(Transform):
    """Ratio of consecutive absolute values: with ``a = |x|`` and ``b = max(a_prev, eps)``, ``a / b``
    (``numerator='cur'``) or ``b / a`` (``'prev'``); then ``a_prev ← a``. State ``prev`` starts at ones.

    Args:
        numerator: which value is the numerator. Defaults to ``'cur'``.
        eps: lower bound of the previous absolute value (per parameter). Defaults to 1e-8.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        none (ratio of consecutive magnitudes).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.LastAbsoluteRatio(), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, numerator: Literal["cur", "prev"] = "cur", eps: float = 1e-08, target: Target = "update"):
        _check_numerator("LastAbsoluteRatio", numerator)
        super().__init__(dict(numerator=numerator, eps=eps), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        prev = _state(states, tensors, "prev", 1)
        a = torch._foreach_abs(tensors)
        b = torch._foreach_clamp_min(prev, scalar_or_list(self.unpack_settings(settings, "eps")))
        out = list(torch._foreach_div(a, b) if settings[0]["numerator"] == "cur" else torch._foreach_div(b, a))
        torch._foreach_copy_(prev, a)
        return out


class LastGradDifference(Module):
    """Sets the update to the difference of consecutive gradients: ``g − g_prev``, then ``g_prev ← g`` (state
    ``prev_grad`` starts at zeros). The incoming update is discarded.

    Reference:
        none (gradient difference ``y`` of quasi-Newton methods, J. Nocedal, S. J. Wright, "Numerical
        Optimization", 2006, §6.1).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.LastGradDifference(), tz.m.LR(1e-2))
        ```
    """

    def __init__(self):
        super().__init__({})

    @torch.no_grad()
    def step(self, var: Var) -> Var:
        params = var.params
        grad = var.get_grad()
        prev = [s["prev_grad"] if "prev_grad" in s else s.setdefault("prev_grad", torch.zeros_like(p))
                for s, p in zip((self.state[p] for p in params), params)]
        var.update = list(torch._foreach_sub(grad, prev))
        torch._foreach_copy_(prev, grad)
        return var
