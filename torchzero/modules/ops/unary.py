"""Elementwise unary operations on the update (or another target)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...core import Target, Transform
from ...utils.foreach import scalar_or_list
from ...utils.tensorlist import TensorList


class Abs(Transform):
    """``|x|``.

    Args:
        target: what to transform. Defaults to ``'update'``.
    """

    def __init__(self, target: Target = "update"):
        super().__init__({}, target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        torch._foreach_abs_(tensors)
        return tensors


class Sign(Transform):
    """``sign(x)``.

    Args:
        target: what to transform. Defaults to ``'update'``.

    Example:
        ```python
        signsgd = tz.Modular(model.parameters(), tz.m.Sign(), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, target: Target = "update"):
        super().__init__({}, target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        torch._foreach_sign_(tensors)
        return tensors


class Exp(Transform):
    """``exp(x)``.

    Args:
        target: what to transform. Defaults to ``'update'``.
    """

    def __init__(self, target: Target = "update"):
        super().__init__({}, target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        torch._foreach_exp_(tensors)
        return tensors


class Sqrt(Transform):
    """``sqrt(x)``.

    Args:
        target: what to transform. Defaults to ``'update'``.
    """

    def __init__(self, target: Target = "update"):
        super().__init__({}, target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        torch._foreach_sqrt_(tensors)
        return tensors


class Negate(Transform):
    """``−x``.

    Args:
        target: what to transform. Defaults to ``'update'``.
    """

    def __init__(self, target: Target = "update"):
        super().__init__({}, target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        torch._foreach_neg_(tensors)
        return tensors


class Reciprocal(Transform):
    """``1 / (x + eps)``.

    Args:
        eps: added before taking the reciprocal (per-parameter setting). Defaults to 0.
        target: what to transform. Defaults to ``'update'``.
    """

    def __init__(self, eps: float = 0, target: Target = "update"):
        super().__init__(dict(eps=eps), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        eps = scalar_or_list(self.unpack_settings(settings, "eps"))
        if isinstance(eps, list) or eps != 0:
            torch._foreach_add_(tensors, eps)
        torch._foreach_reciprocal_(tensors)
        return tensors


class NanToNum(Transform):
    """``torch.nan_to_num`` with per-parameter values; None gives torch's defaults (NaN → 0, ±inf → the largest /
    lowest finite value of the dtype).

    Args:
        nan: value for NaN. Defaults to None.
        posinf: value for +inf. Defaults to None.
        neginf: value for −inf. Defaults to None.
        target: what to transform. Defaults to ``'update'``.
    """

    def __init__(self, nan: float | None = None, posinf: float | None = None, neginf: float | None = None,
                 target: Target = "update"):
        super().__init__(dict(nan=nan, posinf=posinf, neginf=neginf), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        nan, posinf, neginf = self.unpack_settings(settings, "nan", "posinf", "neginf")
        return [t.nan_to_num_(n, p, m) for t, n, p, m in zip(tensors, nan, posinf, neginf)]


class UnaryLambda(Transform):
    """Applies ``fn(list_of_tensors) -> list_of_tensors`` once per step to all tensors.

    Args:
        fn: the function.
        target: what to transform. Defaults to ``'update'``.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.UnaryLambda(lambda ts: [t.clamp(-1, 1) for t in ts]), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, fn: Callable[[list[torch.Tensor]], list[torch.Tensor]], target: Target = "update"):
        if not callable(fn):
            raise TypeError(f"UnaryLambda: fn must be callable, got {type(fn).__name__}")
        super().__init__({}, target=target)
        self.fn = fn

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return list(self.fn(tensors))


class UnaryParameterwiseLambda(Transform):
    """Applies ``fn(tensor) -> tensor`` to each tensor separately (``fn`` is a per-parameter setting).

    Args:
        fn: the function.
        target: what to transform. Defaults to ``'update'``.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], target: Target = "update"):
        if not callable(fn):
            raise TypeError(f"UnaryParameterwiseLambda: fn must be callable, got {type(fn).__name__}")
        super().__init__(dict(fn=fn), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return [s["fn"](t) for t, s in zip(tensors, settings)]


class CustomUnaryOperation(Transform):
    """Calls the zero-argument ``TensorList`` method ``name`` (e.g. ``'neg'``, ``'abs'``, ``'sqrt'``) on the tensors.

    Args:
        name: the method name.
        target: what to transform. Defaults to ``'update'``.
    """

    def __init__(self, name: str, target: Target = "update"):
        if not callable(getattr(TensorList, name, None)):
            raise ValueError(f"CustomUnaryOperation: TensorList has no method {name!r}")
        super().__init__(dict(name=name), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return list(getattr(TensorList(tensors), settings[0]["name"])())
