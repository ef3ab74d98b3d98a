"""Grafting to the gradient or to the parameters: rescale one direction to the size of another
(catalog 0.6, ``graft`` of the ops family)."""
from __future__ import annotations

from ...core import Target, Transform
from ...utils.tensorlist import Metrics
from ..ops.binary import graft


class _GraftTransform(Transform):
    _readonly_input = True

    def __init__(self, tensorwise: bool, ord: Metrics, eps: float, target: Target, uses_grad: bool):
        if eps < 0:
            raise ValueError(f"{type(self).__name__}: eps must be non-negative, got {eps}")
        super().__init__(dict(tensorwise=tensorwise, ord=ord, eps=eps), uses_grad=uses_grad, target=target)

    def _graft_args(self, settings) -> dict:
        s0 = settings[0]
        return dict(tensorwise=s0["tensorwise"], ord=s0["ord"], eps=s0["eps"])


class GraftToGrad(_GraftTransform):
    """Rescales ``x`` to the size of the gradient: ``x · n(g) / max(n(x), eps)``.

    ``n`` is the metric ``ord`` per tensor (``tensorwise``) or over all tensors jointly. Settings from the first
    parameter.

    Args:
        tensorwise: norms per tensor (True) or joint (False). Defaults to False.
        ord: norm order or metric (``'mad'``, ``'std'``, ...). Defaults to 2.
        eps: lower bound of ``n(x)``. Defaults to 1e-6.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        N. Agarwal, R. Anil, E. Hazan, T. Koren, C. Zhang, "Disentangling Adaptive Gradient Methods from Learning
        Rates", arXiv:2002.11803, 2020 (grafting).

    Example:
        ```python
        # Adam's direction with the gradient's norm
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.GraftToGrad(), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, tensorwise: bool = False, ord: Metrics = 2, eps: float = 1e-06, target: Target = "update"):
        super().__init__(tensorwise, ord, eps, target, uses_grad=True)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return graft(tensors, grads, **self._graft_args(settings))


class GraftGradToUpdate(_GraftTransform):
    """Outputs the gradient rescaled to the size of ``x``: ``g · n(x) / max(n(g), eps)`` (the gradient itself is
    not modified).

    Args:
        tensorwise: norms per tensor (True) or joint (False). Defaults to False.
        ord: norm order or metric. Defaults to 2.
        eps: lower bound of ``n(g)``. Defaults to 1e-6.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        N. Agarwal, R. Anil, E. Hazan, T. Koren, C. Zhang, "Disentangling Adaptive Gradient Methods from Learning
        Rates", arXiv:2002.11803, 2020 (grafting).

    Example:
        ```python
        # the gradient's direction with Adam's step size
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.GraftGradToUpdate(), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, tensorwise: bool = False, ord: Metrics = 2, eps: float = 1e-06, target: Target = "update"):
        super().__init__(tensorwise, ord, eps, target, uses_grad=True)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return graft(grads, tensors, **self._graft_args(settings))


class GraftToParams(_GraftTransform):
    """Rescales ``x`` to the size of the parameters: ``x · n(p) / max(n(x), eps)``.

    Args:
        tensorwise: norms per tensor (True) or joint (False). Defaults to False.
        ord: norm order or metric. Defaults to 2.
        eps: lower bound of ``n(x)``. Defaults to 1e-4.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        Y. You, I. Gitman, B. Ginsburg, "Large Batch Training of Convolutional Networks", arXiv:1708.03888, 2017
        (steps proportional to the weight norm, LARS).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.GraftToParams(tensorwise=True), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, tensorwise: bool = False, ord: Metrics = 2, eps: float = 0.0001, target: Target = "update"):
        super().__init__(tensorwise, ord, eps, target, uses_grad=False)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return graft(tensors, params, **self._graft_args(settings))
