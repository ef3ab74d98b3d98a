"""Sources and plumbing: copies, the gradient, parameters, constants, random samples, identity."""
from __future__ import annotations

from typing import Any

import torch

from ...core import Module, Var
from ...utils.foreach import scalar_or_list
from ...utils.linalg.linear_operator import ScaledIdentity
from ...utils.tensorlist import Distributions, TensorList


class Clone(Module):
    """Replaces the update with fresh copies, so later in-place operations can't alter tensors that another object
    still references."""

    def __init__(self):
        super().__init__({})

    @torch.no_grad()
    def step(self, var: Var) -> Var:
        var.update = [u.clone() for u in var.get_update()]
        return var


class Grad(Module):
    """Sets the update to copies of the gradient (computing it if needed), discarding the incoming update.
    Commonly used as an operand to get the raw gradient.

    Example:
        ```python
        # Adam's direction with the sign of the gradient
        opt = tz.Modular(model.parameters(), tz.m.Adam(), tz.m.CopySign(tz.m.Grad()), tz.m.LR(1e-3))
        ```
    """

    def __init__(self):
        super().__init__({})

    @torch.no_grad()
    def step(self, var: Var) -> Var:
        var.update = [g.clone() for g in var.get_grad()]
        return var


class Params(Module):
    """Sets the update to copies of the current parameter values."""

    def __init__(self):
        super().__init__({})

    @torch.no_grad()
    def step(self, var: Var) -> Var:
        var.update = [p.detach().clone() for p in var.params]
        return var


class UpdateToNone(Module):
    """Sets ``var.update = None``: the next consumer starts again from a copy of the gradient."""

    def __init__(self):
        super().__init__({})

    def step(self, var: Var) -> Var:
        var.update = None
        return var


class GradToNone(Module):
    """Sets ``var.grad = None``: a later ``get_grad()`` re-evaluates the closure with backward."""

    def __init__(self):
        super().__init__({})

    def step(self, var: Var) -> Var:
        var.grad = None
        return var


class Zeros(Module):
    """Sets the update to zeros (ignores the incoming update and gradient)."""

    def __init__(self):
        super().__init__({})

    def step(self, var: Var) -> Var:
        var.update = [torch.zeros_like(p) for p in var.params]
        return var


class Ones(Module):
    """Sets the update to ones (ignores the incoming update and gradient)."""

    def __init__(self):
        super().__init__({})

    def step(self, var: Var) -> Var:
        var.update = [torch.ones_like(p) for p in var.params]
        return var


class Fill(Module):
    """Sets each tensor of the update to ``value`` (per-parameter setting).

    Args:
        value: the fill value.
    """

    def __init__(self, value: float):
        super().__init__(dict(value=value))

    def step(self, var: Var) -> Var:
        values = self.get_settings(var.params, "value")
        var.update = [torch.full_like(p, v) for p, v in zip(var.params, values)]
        return var


class Randn(Module):
    """Sets the update to standard normal samples (global RNG)."""

    def __init__(self):
        super().__init__({})

    def step(self, var: Var) -> Var:
        var.update = [torch.randn_like(p) for p in var.params]
        return var


class Uniform(Module):
    """Sets the update to samples of U(low, high) (per-parameter bounds, global RNG).

    Args:
        low: lower bound.
        high: upper bound.
    """

    def __init__(self, low: float, high: float):
        super().__init__(dict(low=low, high=high))

    def step(self, var: Var) -> Var:
        low, high = self.get_settings(var.params, "low", "high")
        var.update = list(TensorList(var.params).uniform_like(low, high))
        return var


class RandomSample(Module):
    """Sets the update to a random sample (global RNG): ``'normal'``/``'gaussian'`` N(0,1)·variance, ``'uniform'``
    U(−b, b) with variance ``variance`` (b = 1 if None), ``'sphere'`` a direction of joint norm
    ``variance·√n`` (1 if None), ``'rademacher'`` ±1·variance.

    Args:
        distribution: the distribution. Defaults to ``'normal'``.
        variance: spread, per-parameter (see above). Defaults to None.
    """

    def __init__(self, distribution: Distributions = "normal", variance: float | None = None):
        if distribution not in ("normal", "gaussian", "uniform", "sphere", "rademacher"):
            raise ValueError(f"RandomSample: unknown distribution {distribution!r}")
        super().__init__(dict(distribution=distribution, variance=variance))

    def step(self, var: Var) -> Var:
        variance: Any = self.get_settings(var.params, "variance")
        variance = None if variance[0] is None else scalar_or_list(variance)
        var.update = list(TensorList(var.params).sample_like(self.defaults["distribution"], variance=variance))
        return var


class Identity(Module):
    """Does nothing: accepts and ignores any arguments and returns ``var`` unchanged. As a curvature module it is
    the identity "Hessian": ``get_H`` returns ``ScaledIdentity(1)`` over all parameters."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__({})

    def step(self, var: Var) -> Var:
        return var

    def get_H(self, var: Var) -> ScaledIdentity:
        n = sum(p.numel() for p in var.params)
        p0 = var.params[0]
        return ScaledIdentity(1.0, shape=(n, n), device=p0.device, dtype=p0.dtype)


Noop = Identity
