"""Weight decay scaled by the size of the update, gradient or parameters (``RelativeWeightDecay``)."""
from __future__ import annotations

from typing import Literal

import torch

from ...core import Target, Transform
from ...utils.checks import check_choice
from ...utils.tensorlist import Metrics, TensorList
from ..clipping.clipping import _as_ord
from .direct import _check_weight_decay_args
from .weight_decay import weight_decay_


class RelativeWeightDecay(Transform):
    """Weight decay whose coefficient is proportional to the scale of the update (or gradient, or parameters).

    Output ``u + c·P(x)`` with ``c = weight_decay · metric(src)`` and the penalty gradient ``P`` of
    ``WeightDecay``: ``P(x) = x`` (ord 2), ``sign(x)`` (ord 1), otherwise ``|x|^(ord−1)·sign(x)``. ``src`` is the
    incoming update (the tensors being transformed), the raw gradient or the parameters (``norm_input``), and
    ``metric`` is evaluated over all of them as one vector (default ``'mad'``, the mean of ``|·|``). With the
    defaults the output is ``u + 0.1·mean(|u|)·x``, so the decay stays proportional to the update scale (useful
    after normalizing or sign-based modules, whose updates have a fixed scale independent of the gradient). The
    coefficient stays on the device (no host synchronization).

    Args:
        weight_decay: the relative coefficient (per-parameter setting). Defaults to 0.1.
        ord: order of the penalty. Defaults to 2.
        norm_input: ``'update'``, ``'grad'`` or ``'params'``. Defaults to ``'update'``.
        metric: the statistic of ``src`` (as in ``ClipNorm``: 'mad', 'std', 'var', 'sum', 'l0'...'linf' or a
            number). Defaults to ``'mad'``.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        library-specific; decoupled weight decay after I. Loshchilov, F. Hutter, "Decoupled Weight Decay
        Regularization", ICLR 2019.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.RelativeWeightDecay(0.1), tz.m.LR(1e-3))
        ```
    """

    def __init__(self, weight_decay: float = 0.1, ord: int = 2,
                 norm_input: Literal["update", "grad", "params"] = "update", metric: Metrics = "mad",
                 target: Target = "update"):
        _check_weight_decay_args("RelativeWeightDecay", weight_decay, ord)
        check_choice("RelativeWeightDecay", "norm_input", norm_input, ("update", "grad", "params"))
        if not isinstance(metric, torch.Tensor):
            try:
                _as_ord(metric)
            except (ValueError, TypeError):
                raise ValueError(f"RelativeWeightDecay: unknown metric {metric!r}") from None
        super().__init__(dict(weight_decay=weight_decay, ord=ord, norm_input=norm_input, metric=metric),
                         uses_grad=norm_input == "grad", target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        norm_input = s0["norm_input"]
        if norm_input == "update":
            src = tensors
        elif norm_input == "grad":
            assert grads is not None
            src = grads
        else:
            src = params
        scale = TensorList(src).global_metric(s0["metric"])
        wd = self.unpack_settings(settings, "weight_decay")
        if all(w == wd[0] for w in wd):
            coefficients = [scale * wd[0]] * len(tensors)
        else:
            coefficients = list((scale * torch.tensor(wd, dtype=scale.dtype, device=scale.device)).unbind())
        # per-tensor 0-d coefficients keep the scale on the device
        return weight_decay_(tensors, params, coefficients, ord=s0["ord"])  # type: ignore[arg-type]
