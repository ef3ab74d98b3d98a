"""ScipyNewtonCG: Newton step with the linear system solved by a ``scipy.sparse.linalg`` iterative solver
(experimental)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from ...core import Chainable, Module, Var
from ...utils.checks import check_bool
from ...utils.tensorlist import TensorList
from ...utils.torch_tools import vec_to_tensors
from ..second_order.newton import finite_or_fallback, inner_update
from ..second_order.newton_cg import HessianProducts, check_hvp


def _gcrotmk(*args: Any, **kwargs: Any) -> Any:
    """``scipy.sparse.linalg.gcrotmk``, imported on first use so that importing torchzero never imports SciPy."""
    try:
        from scipy.sparse.linalg import gcrotmk
    except ImportError as e:  # pragma: no cover
        raise ImportError("ScipyNewtonCG needs SciPy for its default solver: pip install scipy") from e
    return gcrotmk(*args, **kwargs)


class ScipyNewtonCG(Module):
    r"""Matrix-free Newton step solved by any ``scipy.sparse.linalg`` iterative solver.

    Solves ``H x = b`` (``b`` the flattened update after ``inner``, ``H`` the Hessian through Hessian-vector
    products) with ``solver(LinearOperator, b, x0=x0, **kwargs)``, the operator wrapping the products through NumPy
    (so every product is copied to the CPU); a tuple result contributes its first element (``(x, info)`` of the
    SciPy solvers). ``warm_start`` keeps the previous solution as ``x0`` (``global_state['x0']``). The update is
    ``x``; a non-finite ``x`` falls back to ``b`` with non-finite entries zeroed.

    Args:
        solver: a ``scipy.sparse.linalg`` solver (or any callable with its signature). Defaults to
            ``scipy.sparse.linalg.gcrotmk``.
        hvp_method: ``'autograd'``, ``'forward'`` or ``'central'``. Defaults to ``'autograd'``.
        h: finite-difference step length. Defaults to 1e-3.
        warm_start: start each solve from the previous solution. Defaults to False.
        inner: modules applied to the update before solving. Defaults to None.
        kwargs: extra keyword arguments of ``solver`` (e.g. ``{'rtol': 1e-10}``). Defaults to None.

    Reference:
        J. Nocedal & S. J. Wright, *Numerical Optimization*, 2nd ed., ch. 7 (inexact Newton methods).

    Example:
        ```python
        import scipy.sparse.linalg
        opt = tz.Modular(model.parameters(), tz.m.experimental.ScipyNewtonCG(scipy.sparse.linalg.minres),
                         tz.m.Backtracking())
        ```
    """

    def __init__(self, solver: Callable[..., Any] = _gcrotmk,  # type: ignore[assignment]
                 hvp_method: Literal["forward", "central", "autograd"] = "autograd", h: float = 0.001,
                 warm_start: bool = False, inner: Chainable | None = None, kwargs: dict | None = None):
        name = type(self).__name__
        if not callable(solver):
            raise TypeError(f"{name}: solver must be callable, got {type(solver).__name__}")
        check_hvp(name, hvp_method, h)
        check_bool(name, "warm_start", warm_start)
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"{name}: kwargs must be a dict or None, got {type(kwargs).__name__}")
        super().__init__(dict(hvp_method=hvp_method, h=h, warm_start=warm_start))
        self._solver = solver
        self._kwargs = {} if kwargs is None else dict(kwargs)
        if inner is not None:
            self.set_child("inner", inner)

    def step(self, var: Var) -> Var:
        from scipy.sparse.linalg import LinearOperator

        self._require_closure(var)
        params = var.params
        s = self.defaults
        A = HessianProducts(self, var, s["hvp_method"], s["h"])
        b_list = TensorList(inner_update(self, var))
        b = b_list.to_vec()
        n = b.numel()

        def matvec(v: np.ndarray) -> np.ndarray:
            vt = torch.as_tensor(np.asarray(v).reshape(-1), dtype=b.dtype, device=b.device)
            return A(b_list.from_vec(vt)).to_vec().cpu().numpy()

        b_np = b.cpu().numpy()
        op = LinearOperator((n, n), matvec=matvec, rmatvec=matvec, dtype=b_np.dtype)
        x0 = self.global_state.get("x0") if s["warm_start"] else None
        if x0 is not None:
            x0 = x0.cpu().numpy()
        out = self._solver(op, b_np, x0=x0, **self._kwargs)
        if isinstance(out, tuple):
            out = out[0]
        A.release()

        x = torch.as_tensor(np.asarray(out).reshape(-1), dtype=b.dtype, device=b.device)
        x = finite_or_fallback(x, b)
        if s["warm_start"]:
            self.global_state["x0"] = x.clone()
        var.update = vec_to_tensors(x, params)
        return var
