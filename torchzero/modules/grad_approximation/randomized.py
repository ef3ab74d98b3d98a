"""Randomized finite differences: ``RandomizedFDM`` and its presets ``SPSA``, ``RDSA``, ``GaussianSmoothing``, and the
memory-light ``MeZO``."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ...core import Module, Var
from ...utils.checks import check_bool, check_choice, check_int, check_positive
from ...utils.foreach import Scalars, combine, scalar_or_list
from ...utils.tensorlist import Distributions, TensorList
from .base import GradApproximator, GradTarget, check_seed, loss_value, module_generator
from .fdm import FD_FORMULAS, STENCILS, FDFormula, stencil_derivative, stencil_losses

DISTRIBUTIONS: tuple[str, ...] = ("normal", "gaussian", "uniform", "sphere", "rademacher")

DirectionFn = Callable[[int], Sequence[torch.Tensor]]
"""``directions(i)`` returns the i-th direction of a step, one tensor per parameter."""


# ----------------------------------------------------------------------------------------------------------------
# functional parts
# ----------------------------------------------------------------------------------------------------------------
def sample_directions(params: Sequence[torch.Tensor], distribution: Distributions, scale: Scalars,
                      generator: torch.Generator | None) -> list[torch.Tensor]:
    """``scale · u`` shaped like ``params``, with ``u`` of unit variance per entry (``E[uuᵀ] = I``): N(0, 1) for
    ``'normal'``/``'gaussian'``, ±1 for ``'rademacher'``, U(−√3, √3) for ``'uniform'``, uniform on the sphere of
    radius √n (n = total number of entries) for ``'sphere'``. ``scale`` is one number or one per parameter."""
    tl = TensorList(params)
    if distribution in ("normal", "gaussian", "rademacher"):
        variance: Any = None if scale == 1 else scale  # these distributions are multiplied by `variance`
    elif distribution == "uniform":
        variance = combine(scale, scale, lambda a, b: a * b)  # `variance` is the variance of the uniform samples
    elif distribution == "sphere":
        variance = scale  # the radius is variance·√n
    else:
        raise ValueError(f"unknown distribution {distribution!r}, expected one of {DISTRIBUTIONS}")
    return list(tl.sample_like(distribution, variance=variance, generator=generator))


class _Shifter:
    """Moves the parameters to ``x + k·δ`` (each point computed from a saved copy of ``x``, so it is exact) and
    restores ``x`` bit-exactly. ``x`` is copied on the first move away from it."""

    def __init__(self, params: Sequence[torch.Tensor]):
        self.params = list(params)
        self.x0: list[torch.Tensor] | None = None
        self.moved = False

    def to(self, delta: Sequence[torch.Tensor], k: int) -> None:
        params = self.params
        if self.moved:
            assert self.x0 is not None
            torch._foreach_copy_(params, self.x0)
            self.moved = False
        if k == 0:
            return
        if self.x0 is None:
            self.x0 = [p.clone() for p in params]
        if k == 1:
            torch._foreach_add_(params, delta)
        elif k == -1:
            torch._foreach_sub_(params, delta)
        else:
            torch._foreach_add_(params, delta, alpha=k)
        self.moved = True

    def restore(self) -> None:
        if self.moved:
            assert self.x0 is not None
            torch._foreach_copy_(self.params, self.x0)
            self.moved = False


def accumulate_outer_(acc: list[torch.Tensor] | None, direction: Sequence[torch.Tensor], d: torch.Tensor | float
                      ) -> list[torch.Tensor]:
    """``acc += direction · d`` (``d`` a scalar); with ``acc=None`` returns a new ``direction · d``."""
    term = list(torch._foreach_mul(direction, d))
    if acc is None:
        return term
    torch._foreach_add_(acc, term)
    return acc


@torch.no_grad()
def randomized_fd_gradient(closure: Callable, params: Sequence[torch.Tensor], directions: DirectionFn,
                           n_samples: int, h: Scalars, formula: str, loss: torch.Tensor | None = None
                           ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """Randomized finite-difference gradient estimate ``(1/N) Σᵢ uᵢ·Dᵢ``.

    ``directions(i)`` returns ``δᵢ = h·uᵢ`` (per-parameter ``h``); ``Dᵢ ≈ ∇f(x)ᵀ(δᵢ/h)`` comes from the stencil of
    ``formula`` along ``δᵢ``, so each sample is ``δᵢ·Sᵢ/h²`` with ``Sᵢ ≈ ∇f(x)ᵀδᵢ``. With ``E[uuᵀ] = I`` (any
    unit-variance distribution of ``sample_directions``), central stencils are unbiased on quadratics. ``f(x)`` (``loss``
    if given) is evaluated at most once and shared by all samples. Parameters are restored bit-exactly (also if the
    closure raises). Returns ``(grad, loss, loss_approx)`` as in ``stencil_losses``.
    """
    stencil = STENCILS[formula]
    device = params[0].device
    shifter = _Shifter(params)
    acc: list[torch.Tensor] | None = None
    f_0 = loss
    f_1_first = None
    try:
        for i in range(n_samples):
            delta = directions(i)

            def evaluate(k: int, delta: Sequence[torch.Tensor] = delta) -> torch.Tensor:
                shifter.to(delta, k)
                return loss_value(closure(False), device)

            s, f_0, f_1 = stencil_derivative(stencil, evaluate, f_0)
            if f_1_first is None:
                f_1_first = f_1
            acc = accumulate_outer_(acc, delta, s)
    finally:
        shifter.restore()
    assert acc is not None
    torch._foreach_div_(acc, combine(h, h, lambda a, b: a * b * n_samples))
    out_loss, loss_approx = stencil_losses(stencil, loss, f_0, f_1_first)
    return acc, out_loss, loss_approx


def store_perturbations_(module: Module, params: Sequence[torch.Tensor], draws: Sequence[Sequence[torch.Tensor]]
                         ) -> None:
    """Stores ``draws`` (a list of directions) as per-parameter state ``'perturbations'`` (a list per parameter)."""
    for j, p in enumerate(params):
        module.state[p]["perturbations"] = [d[j] for d in draws]


def stored_perturbations(module: Module, params: Sequence[torch.Tensor], n_samples: int) -> DirectionFn | None:
    """``directions(i)`` reading the stored ``'perturbations'``, or None if they are missing or too few."""
    stored = []
    for p in params:
        s = module.state[p].get("perturbations") if p in module.state else None
        if s is None or len(s) < n_samples:
            return None
        stored.append(s)
    return lambda i: [s[i] for s in stored]


def check_randomized_args(owner: str, h: float, n_samples: int, formula: str, distribution: str,
                          pre_generate: bool, seed: Any) -> None:
    check_positive(owner, "h", h)
    check_int(owner, "n_samples", n_samples, 1)
    check_choice(owner, "formula", formula, FD_FORMULAS)
    check_choice(owner, "distribution", distribution, DISTRIBUTIONS)
    check_bool(owner, "pre_generate", pre_generate)
    check_seed(owner, seed)


# ----------------------------------------------------------------------------------------------------------------
# modules
# ----------------------------------------------------------------------------------------------------------------
class RandomizedFDM(GradApproximator):
    """Randomized finite-difference gradient estimator: finite differences along random directions.

    For ``N = n_samples`` random directions ``uᵢ`` with unit-variance entries (``E[uuᵀ] = I``), the stencil of
    ``formula`` along ``δᵢ = h·uᵢ`` (per-parameter ``h``) gives the directional derivative ``Dᵢ ≈ ∇f(x)ᵀuᵢ``, and

    ``ĝ = (1/N) Σᵢ uᵢ·Dᵢ``, with ``E[ĝ] = ∇f(x)`` for exact ``Dᵢ`` (central stencils on quadratics).

    Directions (``distribution``): ``'gaussian'``/``'normal'`` N(0, 1), ``'rademacher'`` ±1, ``'uniform'`` U(−√3, √3),
    ``'sphere'`` uniform on the sphere of radius √n. With ``pre_generate`` the scaled directions ``δᵢ`` are drawn once
    per step (per-parameter state ``'perturbations'``), so every evaluation in that step (e.g. a line search's) uses
    the same ones; otherwise each estimate draws new ones. Draws come from a generator seeded with ``seed``
    (``global_state['generator']``, kept by ``reset()`` and saved in state dicts; None uses the global RNG).

    Cost per estimate: ``N × (evaluations of the stencil outside x)``, plus ``f(x)`` once for stencils through x.
    Formulas, losses and ``target`` are as in ``FDM``/``GradApproximator``. A closure returning per-sample losses is
    averaged.

    Args:
        h: finite-difference step (per-parameter setting, positive). Defaults to 1e-3.
        n_samples: number of random directions per estimate. Defaults to 1.
        formula: the stencil, one of ``FDFormula`` (see ``FDM``). Defaults to ``'central'``.
        distribution: distribution of the directions. Defaults to ``'rademacher'``.
        pre_generate: draw the directions once per step. Defaults to True.
        seed: int seed, a ``torch.Generator`` on the parameters' device, or None (global RNG). Defaults to None.
        target: ``'closure'``, ``'grad'`` or ``'update'``, see ``GradApproximator``. Defaults to ``'closure'``.

    Reference:
        J. C. Spall, "Multivariate stochastic approximation using a simultaneous perturbation gradient
        approximation", IEEE TAC 37(3), 1992; X. Chen, "Theoretical study and comparison of SPSA and RDSA
        algorithms", arXiv:2107.12771.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.RandomizedFDM(n_samples=4, seed=0), tz.m.Adam(), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, h: float = 0.001, n_samples: int = 1, formula: FDFormula = "central",
                 distribution: Distributions = "rademacher", pre_generate: bool = True,
                 seed: int | None | torch.Generator = None, target: GradTarget = "closure"):
        check_randomized_args(self.__class__.__name__, h, n_samples, formula, distribution, pre_generate, seed)
        defaults = dict(h=h, n_samples=n_samples, formula=formula, distribution=distribution,
                        pre_generate=pre_generate, seed=seed)
        super().__init__(defaults, target=target)

    def _draw(self, params: list[torch.Tensor], h: Scalars) -> list[torch.Tensor]:
        s0 = self.settings[params[0]]
        generator = module_generator(self, params[0].device, s0["seed"])
        return sample_directions(params, s0["distribution"], h, generator)

    def pre_step(self, var: Var) -> None:
        params = var.params
        s0 = self.settings[params[0]]
        if not s0["pre_generate"]:
            return
        h = scalar_or_list(self.get_settings(params, "h"))
        store_perturbations_(self, params, [self._draw(params, h) for _ in range(s0["n_samples"])])

    def loss_is_exact(self, params: list[torch.Tensor]) -> bool:
        return STENCILS[self.settings[params[0]]["formula"]].uses_f0

    def approximate(self, closure: Callable, params: list[torch.Tensor], loss: torch.Tensor | None
                    ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        s0 = self.settings[params[0]]
        n_samples = s0["n_samples"]
        h = scalar_or_list(self.get_settings(params, "h"))
        directions = stored_perturbations(self, params, n_samples) if s0["pre_generate"] else None
        if directions is None:
            directions = lambda i: self._draw(params, h)
        return randomized_fd_gradient(closure, params, directions, n_samples, h, s0["formula"], loss)


class SPSA(RandomizedFDM):
    """Simultaneous perturbation stochastic approximation (SPSA).

    ``RandomizedFDM`` with its defaults: Rademacher directions ``Δ`` (±1) and central differences,

    ``ĝᵢ = (f(x + hΔ) − f(x − hΔ)) / (2h·Δᵢ)`` (``1/Δᵢ = Δᵢ`` for ±1), averaged over ``n_samples`` draws.

    Args:
        h: finite-difference step (per-parameter setting, positive). Defaults to 1e-3.
        n_samples: number of random directions per estimate. Defaults to 1.
        formula: the stencil, one of ``FDFormula`` (see ``FDM``). Defaults to ``'central'``.
        distribution: distribution of the directions. Defaults to ``'rademacher'``.
        pre_generate: draw the directions once per step. Defaults to True.
        seed: int seed, a ``torch.Generator`` on the parameters' device, or None (global RNG). Defaults to None.
        target: ``'closure'``, ``'grad'`` or ``'update'``, see ``GradApproximator``. Defaults to ``'closure'``.

    Reference:
        J. C. Spall, "Multivariate stochastic approximation using a simultaneous perturbation gradient
        approximation", IEEE Transactions on Automatic Control 37(3), 1992.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.SPSA(h=1e-2, seed=0), tz.m.Adam(), tz.m.LR(1e-2))
        ```
    """


class RDSA(RandomizedFDM):
    """Random-direction stochastic approximation (RDSA): ``RandomizedFDM`` with Gaussian directions.

    ``ĝ = (1/N) Σᵢ uᵢ (f(x + h uᵢ) − f(x − h uᵢ)) / (2h)`` with ``uᵢ ~ N(0, I)`` (central differences).

    Args:
        h: finite-difference step (per-parameter setting, positive). Defaults to 1e-3.
        n_samples: number of random directions per estimate. Defaults to 1.
        formula: the stencil, one of ``FDFormula`` (see ``FDM``). Defaults to ``'central2'``.
        distribution: distribution of the directions. Defaults to ``'gaussian'``.
        pre_generate: draw the directions once per step. Defaults to True.
        target: ``'closure'``, ``'grad'`` or ``'update'``, see ``GradApproximator``. Defaults to ``'closure'``.
        seed: int seed, a ``torch.Generator`` on the parameters' device, or None (global RNG). Defaults to None.

    Reference:
        H. J. Kushner, D. S. Clark, "Stochastic Approximation Methods for Constrained and Unconstrained Systems",
        Springer, 1978; X. Chen, "Theoretical study and comparison of SPSA and RDSA algorithms", arXiv:2107.12771.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.RDSA(n_samples=4, seed=0), tz.m.Adam(), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, h: float = 0.001, n_samples: int = 1, formula: FDFormula = "central2",
                 distribution: Distributions = "gaussian", pre_generate: bool = True,
                 target: GradTarget = "closure", seed: int | None | torch.Generator = None):
        super().__init__(h=h, n_samples=n_samples, formula=formula, distribution=distribution,
                         pre_generate=pre_generate, seed=seed, target=target)


class GaussianSmoothing(RandomizedFDM):
    """Gaussian-smoothing gradient estimator: ``RandomizedFDM`` with 100 Gaussian directions, forward differences and
    a larger step.

    ``ĝ = (1/N) Σᵢ uᵢ (f(x + h uᵢ) − f(x)) / h``, ``uᵢ ~ N(0, I)``: an unbiased estimate of the gradient of the
    smoothed objective ``f_h(x) = E f(x + h u)`` (on a quadratic ``f_h − f`` is constant, so it estimates ``∇f``).

    Args:
        h: smoothing radius / finite-difference step (per-parameter setting, positive). Defaults to 1e-2.
        n_samples: number of random directions per estimate. Defaults to 100.
        formula: the stencil, one of ``FDFormula`` (see ``FDM``). Defaults to ``'forward2'``.
        distribution: distribution of the directions. Defaults to ``'gaussian'``.
        pre_generate: draw the directions once per step. Defaults to True.
        target: ``'closure'``, ``'grad'`` or ``'update'``, see ``GradApproximator``. Defaults to ``'closure'``.
        seed: int seed, a ``torch.Generator`` on the parameters' device, or None (global RNG). Defaults to None.

    Reference:
        Y. Nesterov, V. Spokoiny, "Random gradient-free minimization of convex functions", Foundations of
        Computational Mathematics 17, 2017.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.GaussianSmoothing(seed=0), tz.m.LR(1e-2))
        ```
    """

    def __init__(self, h: float = 0.01, n_samples: int = 100, formula: FDFormula = "forward2",
                 distribution: Distributions = "gaussian", pre_generate: bool = True,
                 target: GradTarget = "closure", seed: int | None | torch.Generator = None):
        super().__init__(h=h, n_samples=n_samples, formula=formula, distribution=distribution,
                         pre_generate=pre_generate, seed=seed, target=target)


def mezo_generator_seed(step: int, sample: int) -> int:
    """Seed of MeZO's direction ``sample`` at step ``step``."""
    return 1_000_000 * step + sample


class MeZO(GradApproximator):
    """Memory-efficient zeroth-order estimator (MeZO): ``RandomizedFDM`` whose directions are regenerated from seeds
    instead of being stored.

    The i-th direction of step t (the module's own step count from 0, ``global_state['step']``; ``reset()``
    restarts it) is drawn from a fresh generator seeded with ``1_000_000·t + i`` on the parameters' device, whenever
    it is needed, and scaled as in ``RandomizedFDM``: ``δ = h·u`` with unit-variance ``u`` (for ``'uniform'`` that is
    U(−h√3, h√3); the reference used ``h`` as the variance there). So every evaluation within a step regenerates
    bitwise the same directions, and nothing but the step counter is kept between steps.
    Estimate: ``ĝ = (1/N) Σᵢ uᵢ·Dᵢ`` with the stencil of ``formula`` (see ``RandomizedFDM``).

    Memory: a copy of the parameters (to restore them exactly) and one direction at a time.

    Args:
        h: finite-difference step (per-parameter setting, positive). Defaults to 1e-3.
        n_samples: number of random directions per estimate. Defaults to 1.
        formula: the stencil, one of ``FDFormula`` (see ``FDM``). Defaults to ``'central2'``.
        distribution: distribution of the directions. Defaults to ``'rademacher'``.
        target: ``'closure'``, ``'grad'`` or ``'update'``, see ``GradApproximator``. Defaults to ``'closure'``.

    Reference:
        S. Malladi, T. Gao, E. Nichani, A. Damian, J. D. Lee, D. Chen, S. Arora, "Fine-Tuning Language Models with
        Just Forward Passes", NeurIPS 36, 2023 (arXiv:2305.17333).

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.MeZO(h=1e-3), tz.m.LR(1e-6))
        ```
    """

    def __init__(self, h: float = 0.001, n_samples: int = 1, formula: FDFormula = "central2",
                 distribution: Distributions = "rademacher", target: GradTarget = "closure"):
        check_randomized_args("MeZO", h, n_samples, formula, distribution, True, None)
        super().__init__(dict(h=h, n_samples=n_samples, formula=formula, distribution=distribution), target=target)

    def pre_step(self, var: Var) -> None:
        self.global_state["step"] = self.global_state.get("step", 0) + 1

    def direction(self, params: list[torch.Tensor], sample: int) -> list[torch.Tensor]:
        """The (scaled) direction ``sample`` of the current step t (``t = global_state['step'] − 1``, starting at 0),
        regenerated from its seed."""
        s0 = self.settings[params[0]]
        h = scalar_or_list(self.get_settings(params, "h"))
        t = max(self.global_state.get("step", 1) - 1, 0)
        generator = torch.Generator(params[0].device).manual_seed(mezo_generator_seed(t, sample))
        return sample_directions(params, s0["distribution"], h, generator)

    def loss_is_exact(self, params: list[torch.Tensor]) -> bool:
        return STENCILS[self.settings[params[0]]["formula"]].uses_f0

    def approximate(self, closure: Callable, params: list[torch.Tensor], loss: torch.Tensor | None
                    ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        s0 = self.settings[params[0]]
        h = scalar_or_list(self.get_settings(params, "h"))
        return randomized_fd_gradient(closure, params, lambda i: self.direction(params, i), s0["n_samples"], h,
                                      s0["formula"], loss)
