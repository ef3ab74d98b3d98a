"""AdaHessian, and the Hutchinson-probe machinery shared by the curvature-based adaptive modules
(``AdaHessian``, ``SophiaH``, ``ESGD``)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from ...core import Chainable, Module, Transform, Var
from ...utils.checks import check_bool, check_choice, check_int, check_range
from ...utils.foreach import Scalars, scalar_or_list
from ...utils.tensorlist import TensorList
from ..momentum.momentum import ema_
from .adam import adam_second_moment_

HvpMethod = Literal["autograd", "forward", "central"]
_HVP_METHODS = ("autograd", "forward", "central")


# --------------------------------------------------------------------------------------------------
# argument validation shared by the curvature modules
# --------------------------------------------------------------------------------------------------
def check_hvp_args(owner: str, hvp_method: Any, h: Any, h_name: str = "fd_h", n_samples: Any = 1,
                   seed: Any = None) -> None:
    """Validates the Hessian-vector-product arguments common to the curvature modules."""
    check_choice(owner, "hvp_method", hvp_method, _HVP_METHODS)
    check_range(owner, h_name, h, low=0, low_inclusive=False)
    check_int(owner, "n_samples", n_samples)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"{owner}: seed must be an int or None, got {type(seed).__name__}")


# --------------------------------------------------------------------------------------------------
# Hutchinson probes
# --------------------------------------------------------------------------------------------------
def release_grad_graph_(var: Var) -> None:
    """Detaches ``var.grad`` (and the matching ``p.grad``) and ``var.loss`` after Hessian-vector products.

    With ``hvp_method='autograd'`` the gradient is computed with ``create_graph=True``; once the products are
    taken, the gradient must not carry that graph further (clones of it would keep the whole graph alive and
    later in-place ops on the update would be recorded by autograd).
    """
    grad = var.grad
    if grad is not None and any(g.requires_grad for g in grad):
        detached = [g.detach() for g in grad]
        for p, old, new in zip(var.params, grad, detached):
            if p.grad is old:
                p.grad = new
        var.grad = detached
    for attr in ("loss", "loss_approx"):
        loss = getattr(var, attr)
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            setattr(var, attr, loss.detach())


def hvp_probe_mean(
    module: Module,
    var: Var,
    *,
    distribution: Literal["rademacher", "normal"],
    statistic: Literal["z*Hz", "Hz^2"],
    n_samples: int,
    hvp_method: HvpMethod,
    h: float,
    seed: int | None,
) -> list[torch.Tensor]:
    """Mean over ``n_samples`` random probes ``z`` of ``z ⊙ Hz`` (Hutchinson's diagonal estimator,
    ``E = diag(H)`` for Rademacher or standard normal ``z``) or of ``(Hz)²`` (equilibration estimator,
    ``E = diag(H²)`` for standard normal ``z``), at the current parameters of ``var``.

    Probes are drawn, parameter by parameter in order, from ``module.get_generator(device, seed)`` (the global RNG
    when ``seed`` is None). Products go through ``module.Hvp`` (the gradient at ``x`` is taken from / stored in
    ``var``); the autograd graph is released afterwards (``release_grad_graph_``).
    """
    params = TensorList(var.params)
    generator = module.get_generator(params[0].device, seed)
    acc: list[torch.Tensor] | None = None
    rgrad = None
    for i in range(n_samples):
        z = params.sample_like(distribution, generator=generator)
        Hz, rgrad = module.Hvp(z, at_x0=True, var=var, rgrad=rgrad, hvp_method=hvp_method, h=h, normalize=True,
                               retain_grad=i < n_samples - 1)
        # out of place: the product may alias autograd buffers
        sample = torch._foreach_mul(Hz, z if statistic == "z*Hz" else Hz)
        if acc is None:
            acc = list(sample)
        else:
            torch._foreach_add_(acc, sample)
    assert acc is not None
    if n_samples > 1:
        torch._foreach_div_(acc, n_samples)
    release_grad_graph_(var)
    return acc


class CurvatureTransform(Transform):
    """Base of transforms whose statistics need Hessian-vector products.

    ``update_curvature(var, states, settings)`` runs in ``update``/``step`` *before* the update is formed, so that
    with ``hvp_method='autograd'`` the single gradient evaluation (with ``create_graph=True``) serves both the
    products and the update, and the update never carries the autograd graph. ``apply_tensors`` then maps the
    (inner-transformed) update as in any ``Transform``. The closure is required on every step, and ``reset()``
    also restarts the seeded random generator, so a reset module continues exactly like a fresh one.
    """

    _readonly_input = True

    def update_curvature(self, var: Var, states: list[dict[str, Any]], settings: Sequence[Any]) -> None:
        raise NotImplementedError

    def _update_curvature(self, var: Var) -> None:
        self._require_closure(var)
        states, settings = self._get_keyed_states_settings(var.params)
        with torch.no_grad():
            self.update_curvature(var, states, settings)

    def update(self, var: Var) -> None:
        self._update_curvature(var)
        super().update(var)

    def step(self, var: Var) -> Var:
        self._update_curvature(var)
        return super().step(var)


# --------------------------------------------------------------------------------------------------
# AdaHessian
# --------------------------------------------------------------------------------------------------
def _block_average_rows(a: torch.Tensor, block_size: int) -> torch.Tensor:
    """Mean of ``a`` over consecutive groups of ``block_size`` rows (dim 0), broadcast back to the rows of each
    group; leftover rows form their own group, and fewer than two whole blocks give one mean over all rows."""
    n = a.shape[0]
    n_blocks = n // block_size
    if n_blocks < 2:
        return a.mean(0, keepdim=True).expand_as(a)
    rest = a.shape[1:]
    full = n_blocks * block_size
    blocks = a[:full].reshape(n_blocks, block_size, *rest).mean(1, keepdim=True)
    parts = [blocks.expand(n_blocks, block_size, *rest).reshape(full, *rest)]
    if full < n:
        parts.append(a[full:].mean(0, keepdim=True).expand(n - full, *rest))
    return torch.cat(parts)


def adahessian_average(D: list[torch.Tensor], averaging: Sequence[bool], block_size: Sequence[int | None]
                       ) -> list[torch.Tensor]:
    """AdaHessian's spatial averaging of Hessian-diagonal estimates ``D`` (new list; averaged entries are new
    tensors).

    Applies to tensors with ``averaging`` set, ``ndim >= 2`` and more than one element per row. With
    ``block_size=None``, tensors with ``ndim >= 3`` become the mean of ``|D|`` over dims 2… (one value per
    (out, in) pair); 2-D tensors are left alone. With a ``block_size``, ``|D|`` is averaged over consecutive
    groups of ``block_size`` rows of dim 0 (see ``_block_average_rows``).
    """
    out = list(D)
    for i, (d, avg, bs) in enumerate(zip(D, averaging, block_size)):
        if not avg or d.ndim < 2 or d.numel() <= d.shape[0]:
            continue
        if bs is None:
            if d.ndim >= 3:
                out[i] = d.abs().mean(dim=tuple(range(2, d.ndim)), keepdim=True).expand_as(d)
        else:
            out[i] = _block_average_rows(d.abs(), bs)
    return out


def adahessian_step(
    tensors: Sequence[torch.Tensor],
    exp_avg_: list[torch.Tensor],
    h_exp_avg: list[torch.Tensor],
    step: int,
    beta1: Scalars,
    beta2: Scalars,
    eps: Scalars,
    hessian_power: Scalars,
) -> list[torch.Tensor]:
    """``m ← β₁ m + (1 − β₁) u`` in place, returns ``m · (1 − β₂ᵗ)^(k/2) / (1 − β₁ᵗ) / (v^(k/2) + eps)`` with
    ``k = hessian_power`` (for ``k = 1``: ``m · sqrt(1 − β₂ᵗ)/(1 − β₁ᵗ) / (sqrt(v) + eps)``)."""
    ema_(list(tensors), exp_avg_, beta1, 0.0, lerp=True)
    if isinstance(hessian_power, list) or hessian_power != 1:
        half = [k / 2 for k in hessian_power] if isinstance(hessian_power, list) else hessian_power / 2
        denom = list(torch._foreach_pow(h_exp_avg, half))
    else:
        denom = list(torch._foreach_sqrt(h_exp_avg))
    torch._foreach_add_(denom, eps)
    out = list(torch._foreach_div(exp_avg_, denom))
    values = (beta1, beta2, hessian_power)
    if any(isinstance(v, list) for v in values):
        n = len(out)
        b1s, b2s, ks = ([v] * n if not isinstance(v, list) else v for v in values)
        step_size: Scalars = [(1 - b2**step) ** (k / 2) / (1 - b1**step) for b1, b2, k in zip(b1s, b2s, ks)]
    else:
        step_size = (1 - beta2**step) ** (hessian_power / 2) / (1 - beta1**step)  # type: ignore[operator]
    torch._foreach_mul_(out, step_size)
    return out


class AdaHessian(CurvatureTransform):
    """AdaHessian: Adam whose second moment is built from Hutchinson estimates of the Hessian diagonal.

    With step index ``k = 0, 1, …`` (global ``'step'``) and ``t = k + 1``: when ``k % update_freq == 0``, draw
    Rademacher probes ``z`` and form ``D = mean_z(z ⊙ Hz)`` (``E[D] = diag(H)``), spatially averaged (see
    ``adahessian_average``), and update ``v ← β₂ v + (1 − β₂) D²`` (``'h_exp_avg'``). Every step
    ``u' = inner(u)`` (or ``u``), ``m ← β₁ m + (1 − β₁) u'`` (``'exp_avg'``), and the output is

    ``m / (1 − β₁ᵗ) · (1 − β₂ᵗ)^(k/2) / (v^(k/2) + eps)``  with ``k = hessian_power``,

    which for the default ``k = 1`` is ``m · sqrt(1 − β₂ᵗ)/(1 − β₁ᵗ) / (sqrt(v) + eps)``. For ``k ≠ 1`` the bias
    correction is raised to ``k`` as well (the paper's ``(sqrt(v̂))^k``), so that ``k`` only changes the power of the
    curvature, not the step size.

    Non-finite gradients or curvature estimates are not masked: they propagate to the update.

    Args:
        beta1: first moment decay. Defaults to 0.9.
        beta2: decay of the squared Hessian-diagonal average. Defaults to 0.999.
        averaging: spatial averaging of the estimates (per-parameter). Defaults to True.
        block_size: with averaging, average ``|D|`` over groups of this many rows of dim 0 instead of over the
            dims 2… (per-parameter). Defaults to None.
        update_freq: estimate the Hessian diagonal every ``update_freq`` steps. Defaults to 1.
        eps: added to the denominator. Defaults to 1e-8.
        hessian_power: power ``k`` of the curvature in the denominator. Defaults to 1.
        hvp_method: ``'autograd'`` (exact, double backward), ``'forward'`` or ``'central'`` finite differences.
            Defaults to ``'autograd'``.
        fd_h: finite-difference step for ``'forward'``/``'central'``. Defaults to 1e-3.
        n_samples: probes per estimate. Defaults to 1.
        seed: seed of the probe generator (None: global RNG). Defaults to None.
        inner: modules applied to the update before the first moment. Defaults to None.

    Reference:
        Z. Yao, A. Gholami, S. Shen, M. Mustafa, K. Keutzer, M. W. Mahoney, "ADAHESSIAN: An Adaptive Second Order
        Optimizer for Machine Learning", AAAI 2021.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.AdaHessian(seed=0), tz.m.LR(0.1))
        opt.step(closure)  # closure(backward=True) is required
        ```
    """

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, averaging: bool = True,
                 block_size: int | None = None, update_freq: int = 1, eps: float = 1e-08, hessian_power: float = 1,
                 hvp_method: HvpMethod = "autograd", fd_h: float = 0.001, n_samples: int = 1,
                 seed: int | None = None, inner: Chainable | None = None):
        name = type(self).__name__
        check_range(name, "beta1", beta1, 0, 1, high_inclusive=False)
        check_range(name, "beta2", beta2, 0, 1, high_inclusive=False)
        check_bool(name, "averaging", averaging)
        if block_size is not None:
            check_int(name, "block_size", block_size)
        check_int(name, "update_freq", update_freq)
        check_range(name, "eps", eps, low=0)
        check_range(name, "hessian_power", hessian_power, low=0)
        check_hvp_args(name, hvp_method, fd_h, "fd_h", n_samples, seed)
        defaults = dict(beta1=beta1, beta2=beta2, averaging=averaging, block_size=block_size,
                        update_freq=update_freq, eps=eps, hessian_power=hessian_power, hvp_method=hvp_method,
                        fd_h=fd_h, n_samples=n_samples, seed=seed)
        super().__init__(defaults, inner=inner)

    def update_curvature(self, var, states, settings):
        k = self.global_state.get("step", 0)
        self.global_state["step"] = k + 1
        s0 = settings[0]
        if k % s0["update_freq"] != 0:
            return
        D = hvp_probe_mean(self, var, distribution="rademacher", statistic="z*Hz", n_samples=s0["n_samples"],
                           hvp_method=s0["hvp_method"], h=s0["fd_h"], seed=s0["seed"])
        averaging, block_size, beta2 = self.unpack_settings(settings, "averaging", "block_size", "beta2")
        D = adahessian_average(D, averaging, block_size)
        h_exp_avg = [s["h_exp_avg"] if "h_exp_avg" in s else s.setdefault("h_exp_avg", torch.zeros_like(p))
                     for s, p in zip(states, var.params)]
        adam_second_moment_(D, h_exp_avg, scalar_or_list(beta2))

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        step = max(self.global_state.get("step", 1), 1)
        exp_avg = [s["exp_avg"] if "exp_avg" in s else s.setdefault("exp_avg", torch.zeros_like(t))
                   for s, t in zip(states, tensors)]
        h_exp_avg = [s["h_exp_avg"] if "h_exp_avg" in s else s.setdefault("h_exp_avg", torch.zeros_like(t))
                     for s, t in zip(states, tensors)]
        beta1, beta2, eps, hessian_power = self.unpack_settings(settings, "beta1", "beta2", "eps", "hessian_power")
        return adahessian_step(tensors, exp_avg, h_exp_avg, step, scalar_or_list(beta1), scalar_or_list(beta2),
                               scalar_or_list(eps), scalar_or_list(hessian_power))
