"""Newton steps with a randomized Nyström approximation of the Hessian: closed-form sketch-and-solve, and
Nyström-preconditioned CG."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...core import Chainable, Module, Var
from ...utils.checks import check_int, check_non_negative, check_positive
from ...utils.linalg.nystrom import nystrom_pcg, nystrom_sketch_and_solve
from ...utils.tensorlist import TensorList
from ...utils.torch_tools import vec_to_tensors
from .newton import finite_or_fallback, inner_update
from .newton_cg import HessianProducts, HvpMethod, check_hvp, check_maxiter


def _check_seed(owner: str, seed: Any) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"{owner}: seed must be an int or None, got {type(seed).__name__}")


class _NystromBase(Module):
    """Shared step: flat right-hand side ``b`` (the update after ``inner``), flat Hessian-vector products, the
    solve, the finiteness policy (a non-finite solution falls back to ``b`` with non-finite entries zeroed)."""

    def __init__(self, defaults: dict[str, Any], inner: Chainable | None):
        super().__init__(defaults)
        if inner is not None:
            self.set_child("inner", inner)

    def solve(self, A_mm: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
              generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def step(self, var: Var) -> Var:
        self._require_closure(var)
        params = var.params
        s = self.defaults
        A = HessianProducts(self, var, s["hvp_method"], s["h"])
        b_list = TensorList(inner_update(self, var))
        b = b_list.to_vec()
        generator = self.get_generator(b.device, s["seed"])

        def A_mm(v: torch.Tensor) -> torch.Tensor:
            return A(b_list.from_vec(v)).to_vec()

        x = self.solve(A_mm, b, generator)
        A.release()
        var.update = vec_to_tensors(finite_or_fallback(x, b), params)
        return var


class NystromSketchAndSolve(_NystromBase):
    r"""Newton step with a rank-``rank`` randomized Nyström approximation of the Hessian, solved in closed form.

    ``H ≈ U diag(λ) Uᵀ`` from ``rank`` Hessian-vector products with an orthonormalized Gaussian test matrix
    (``torchzero.utils.linalg.nystrom.nystrom_approximation``), then for the flattened update ``b``:

    ``x = U diag(1/(λ + reg)) Uᵀ b + (b − UUᵀb)/reg``,

    the exact solution of ``(U diag(λ) Uᵀ + reg·I) x = b``. A fresh sketch is drawn every step; ``seed`` makes the
    test matrices reproducible (the generator lives in ``global_state['generator']`` and survives ``reset()``).
    The Hessian is assumed positive semi-definite; for an indefinite one the sketch approximates its positive
    part. A non-finite result falls back to ``b`` with non-finite entries zeroed.

    Args:
        rank: sketch size (number of Hessian-vector products per step).
        reg: regularization, must be positive. Defaults to 1e-3.
        hvp_method: ``'autograd'``, ``'forward'`` or ``'central'``. Defaults to ``'autograd'``.
        h: finite-difference step length. Defaults to 1e-3.
        inner: modules applied to the update before solving. Defaults to None.
        seed: seed of the test matrices (None: global RNG). Defaults to None.

    Reference:
        Z. Frangella, J. A. Tropp & M. Udell, "Randomized Nyström preconditioning", SIAM J. Matrix Anal. Appl.
        44(2), 2023, 718–752.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.NystromSketchAndSolve(rank=20, seed=0), tz.m.Backtracking())
        ```
    """

    def __init__(self, rank: int, reg: float = 0.001, hvp_method: HvpMethod = "autograd", h: float = 0.001,
                 inner: Chainable | None = None, seed: int | None = None):
        name = type(self).__name__
        check_int(name, "rank", rank)
        check_positive(name, "reg", reg)
        check_hvp(name, hvp_method, h)
        _check_seed(name, seed)
        super().__init__(dict(rank=rank, reg=reg, hvp_method=hvp_method, h=h, seed=seed), inner)

    def solve(self, A_mm, b, generator):
        s = self.defaults
        return nystrom_sketch_and_solve(A_mm, b, rank=s["rank"], reg=s["reg"], generator=generator)


class NystromPCG(_NystromBase):
    r"""Newton–CG preconditioned with a randomized Nyström approximation of the Hessian.

    Solves ``(H + reg·I) x = b`` (``b`` the flattened update) by CG from zero with the preconditioner, built each
    step from a sketch of size ``sketch_size``,

    ``P⁻¹ = (λ_min + reg)·U (Λ + reg·I)⁻¹ Uᵀ + (I − UUᵀ)``  (``λ_min`` the smallest sketched eigenvalue),

    stopping when ``‖r‖ ≤ tol·‖r₀‖`` or after ``maxiter`` iterations (``n`` by default). Costs ``sketch_size``
    products plus one per CG iteration. A non-finite result falls back to ``b`` with non-finite entries zeroed.

    Args:
        sketch_size: rank of the Nyström sketch.
        maxiter: maximum CG iterations (``n`` when None). Defaults to None.
        tol: relative residual tolerance. Defaults to 1e-3.
        reg: regularization added to the Hessian. Defaults to 1e-6.
        hvp_method: ``'autograd'``, ``'forward'`` or ``'central'``. Defaults to ``'autograd'``.
        h: finite-difference step length. Defaults to 1e-3.
        inner: modules applied to the update before solving. Defaults to None.
        seed: seed of the test matrices (None: global RNG). Defaults to None.

    Reference:
        Z. Frangella, J. A. Tropp & M. Udell, "Randomized Nyström preconditioning", SIAM J. Matrix Anal. Appl.
        44(2), 2023, 718–752.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.NystromPCG(sketch_size=20, seed=0), tz.m.Backtracking())
        ```
    """

    def __init__(self, sketch_size: int, maxiter: int | None = None, tol: float = 0.001, reg: float = 1e-06,
                 hvp_method: HvpMethod = "autograd", h: float = 0.001, inner: Chainable | None = None,
                 seed: int | None = None):
        name = type(self).__name__
        check_int(name, "sketch_size", sketch_size)
        check_maxiter(name, maxiter)
        check_non_negative(name, "tol", tol)
        check_non_negative(name, "reg", reg)
        check_hvp(name, hvp_method, h)
        _check_seed(name, seed)
        super().__init__(dict(sketch_size=sketch_size, maxiter=maxiter, tol=tol, reg=reg, hvp_method=hvp_method,
                              h=h, seed=seed), inner)

    def solve(self, A_mm, b, generator):
        s = self.defaults
        return nystrom_pcg(A_mm, b, s["sketch_size"], reg=s["reg"], tol=s["tol"], maxiter=s["maxiter"],
                           generator=generator)
