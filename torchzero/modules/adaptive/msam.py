"""Momentum-SAM: sharpness-aware minimization that perturbs along the momentum, without extra evaluations
(``MSAM``, and ``MSAMObjective`` with a custom update rule)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ...core import Chainable, Transform, apply_transform
from ...utils.checks import check_bool, check_range
from ...utils.foreach import Scalars, add_scaled_, scalar_or_list
from ...utils.tensorlist import TensorList
from ..momentum.momentum import ema_, nag_


def _scaled_unit(tensors: Sequence[torch.Tensor], rho: Scalars) -> list[torch.Tensor]:
    """``ρ · t/‖t‖`` (global norm, clipped below at 2·tiny so that ``t = 0`` gives 0), as new tensors."""
    norm = TensorList(tensors).global_vector_norm()
    inv = 1 / norm.clamp(min=2 * torch.finfo(norm.dtype).tiny)
    if isinstance(rho, list):
        out = list(torch._foreach_mul(tensors, inv))
        torch._foreach_mul_(out, rho)
        return out
    return list(torch._foreach_mul(tensors, inv * rho))


def msam_(
    tensors: list[torch.Tensor],
    params: Sequence[torch.Tensor],
    velocity_: list[torch.Tensor],
    momentum: Scalars,
    rho: Scalars,
    weight_decay: Scalars,
    nesterov: bool,
    lerp: bool,
    lr: Scalars | None = None,
    inner: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None,
) -> list[torch.Tensor]:
    """One Momentum-SAM step as a function of the update ``u`` (``tensors``), with the parameters at the perturbed
    point ``ŵ = w − ρ v/‖v‖``; ``velocity_`` is updated in place, ``tensors`` only if ``inner`` modifies them.

    ``vₙ = ρ v/‖v‖`` (old v); ``v ← μ v + u`` (``lerp``: ``μ v + (1 − μ) u``; ``nesterov``: ``v ← μ(v + u)``);
    ``v₁ₙ = ρ v/‖v‖``; output ``lr·d + v₁ₙ − vₙ`` with ``d = v`` (``nesterov``: ``d = u + v``), or ``inner(u)``
    (``inner(d)`` with nesterov) in place of ``lr·d``; plus ``weight_decay·(ŵ + vₙ)`` when non-zero.
    """
    vn = _scaled_unit(velocity_, rho)
    if nesterov:
        direction = nag_(tensors, velocity_, momentum, 0.0, lerp=lerp)
    else:
        direction = ema_(tensors, velocity_, momentum, 0.0, lerp=lerp)
    # the perturbation follows the velocity (also with nesterov), so the next step removes exactly what was added
    v1n = _scaled_unit(velocity_, rho)
    if inner is None:
        assert lr is not None
        out = list(torch._foreach_mul(direction, lr))
    else:
        out = list(inner(direction if nesterov else tensors))
    torch._foreach_add_(out, v1n)
    torch._foreach_sub_(out, vn)
    if isinstance(weight_decay, list) or weight_decay != 0:
        add_scaled_(out, torch._foreach_add(list(params), vn), weight_decay)
    return out


def _check_msam_args(name: str, momentum: float, rho: float, weight_decay: float, nesterov: bool, lerp: bool) -> None:
    check_range(name, "momentum", momentum, 0, 1)
    check_range(name, "rho", rho, low=0)
    check_range(name, "weight_decay", weight_decay, low=0)
    check_bool(name, "nesterov", nesterov)
    check_bool(name, "lerp", lerp)


class MSAM(Transform):
    """Momentum-SAM: SAM that perturbs along the momentum, so it needs no extra gradient evaluation.

    The parameters are kept at the perturbed point ``ŵ = w − ρ v/‖v‖`` (``w``: the weights of plain heavy-ball
    momentum); the gradient is taken there. State ``'velocity'`` v. Each step, with global norms clipped below at
    ``2·tiny``:

    - ``vₙ = ρ v/‖v‖`` with the old v;
    - ``v ← μ v + u`` (``lerp``: ``v ← μ v + (1 − μ) u``; ``nesterov``: ``v ← μ(v + u)``);
    - ``v₁ₙ = ρ v/‖v‖``;
    - output ``lr·d + v₁ₙ − vₙ`` with ``d = v`` (``nesterov``: ``d = u + v``), plus ``weight_decay·(ŵ + vₙ)`` when
      non-zero (decay of the unperturbed weights).

    So ``w ← w − lr·d − weight_decay·w`` and ``ŵ = w − ρ v/‖v‖`` hold after every step. With ``nesterov`` the
    perturbation still follows the velocity v, not ``u + v`` (the reference implementation perturbed along
    ``u + v`` but removed ``ρ v/‖v‖`` on the next step, so the parameters drifted away from ``w − ρ v/‖v‖``).
    The step size is built in (``lr``, a per-parameter setting that schedulers change): do not add ``LR``.
    Non-finite updates are not masked.

    Args:
        lr: learning rate.
        momentum: μ. Defaults to 0.9.
        rho: perturbation radius. Defaults to 0.3.
        weight_decay: decay of the unperturbed weights. Defaults to 0.
        nesterov: Nesterov momentum. Defaults to False.
        lerp: ``v ← μ v + (1 − μ) u``. Defaults to False.

    Reference:
        M. Becker, F. Altrock, B. Risse, "Momentum-SAM: Sharpness Aware Minimization without Computational
        Overhead", 2024 (arXiv:2401.12033).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.MSAM(lr=0.1, momentum=0.9, rho=0.3))
        ```
    """

    _readonly_input = True

    def __init__(self, lr: float, momentum: float = 0.9, rho: float = 0.3, weight_decay: float = 0,
                 nesterov: bool = False, lerp: bool = False):
        name = type(self).__name__
        check_range(name, "lr", lr, low=0)
        _check_msam_args(name, momentum, rho, weight_decay, nesterov, lerp)
        super().__init__(dict(lr=lr, momentum=momentum, rho=rho, weight_decay=weight_decay, nesterov=nesterov,
                              lerp=lerp))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        velocity = [s["velocity"] if "velocity" in s else s.setdefault("velocity", torch.zeros_like(t))
                    for s, t in zip(states, tensors)]
        lr, momentum, rho, weight_decay = self.unpack_settings(settings, "lr", "momentum", "rho", "weight_decay")
        return msam_(tensors, params, velocity, scalar_or_list(momentum), scalar_or_list(rho),
                     scalar_or_list(weight_decay), nesterov=s0["nesterov"], lerp=s0["lerp"], lr=scalar_or_list(lr))


class MSAMObjective(Transform):
    """Momentum-SAM around a custom update rule: ``MSAM`` with ``lr·v`` replaced by ``modules(u)``.

    The internal velocity v (``'velocity'``) still drives the perturbation terms exactly as in ``MSAM``:
    output ``modules(u) + v₁ₙ − vₙ`` (+ ``weight_decay·(ŵ + vₙ)``), where the child chain receives the incoming
    update ``u`` (with ``nesterov``, the vector ``u + v``) and must contain its own step size, e.g.
    ``[Adam(), LR(1e-3)]``. The child runs with the enclosing closure and loss. Nothing step-size-like may follow
    this module.

    Args:
        modules: the update rule, including its step size.
        momentum: μ of the velocity that drives the perturbation. Defaults to 0.9.
        rho: perturbation radius. Defaults to 0.3.
        weight_decay: decay of the unperturbed weights. Defaults to 0.
        nesterov: Nesterov momentum. Defaults to False.
        lerp: ``v ← μ v + (1 − μ) u``. Defaults to False.

    Reference:
        M. Becker, F. Altrock, B. Risse, "Momentum-SAM: Sharpness Aware Minimization without Computational
        Overhead", 2024 (arXiv:2401.12033).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.MSAMObjective([tz.m.Adam(), tz.m.LR(1e-3)], rho=0.3))
        ```
    """

    def __init__(self, modules: Chainable, momentum: float = 0.9, rho: float = 0.3, weight_decay: float = 0,
                 nesterov: bool = False, lerp: bool = False):
        _check_msam_args(type(self).__name__, momentum, rho, weight_decay, nesterov, lerp)
        super().__init__(dict(momentum=momentum, rho=rho, weight_decay=weight_decay, nesterov=nesterov, lerp=lerp))
        self.set_child("modules", modules)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        velocity = [s["velocity"] if "velocity" in s else s.setdefault("velocity", torch.zeros_like(t))
                    for s, t in zip(states, tensors)]
        momentum, rho, weight_decay = self.unpack_settings(settings, "momentum", "rho", "weight_decay")
        child = self.children["modules"]

        def inner(t: list[torch.Tensor]) -> list[torch.Tensor]:
            return apply_transform(child, t, params=params, grads=grads, loss=loss, var=self._var)

        return msam_(tensors, params, velocity, scalar_or_list(momentum), scalar_or_list(rho),
                     scalar_or_list(weight_decay), nesterov=s0["nesterov"], lerp=s0["lerp"], inner=inner)
