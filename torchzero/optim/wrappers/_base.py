"""What every wrapper of another library shares: the parameters as one float64 NumPy vector, evaluation of the
closure at a vector the library gives, bounds from the per-group ``lb``/``ub`` settings, evaluation counting, and the
capture of closure exceptions inside libraries that would swallow them.

Imports no optional dependency (only torch and NumPy).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ...utils.derivatives import jacobian_and_hessian_mat_wrt
from ...utils.optimizer import Optimizer
from ...utils.params import Params

__all__ = ["WrapperOptimizer", "Problem", "StopRun", "check_box_arg", "check_callable", "check_dict", "check_number",
           "restore_numpy_printoptions"]


class StopRun(Exception):
    """Raised inside an objective to end the library's run early (caught by the wrapper)."""


def check_box_arg(owner: str, lb: Any, ub: Any, required: bool) -> None:
    """Validates the constructor's ``lb``/``ub`` (numbers or None): finite numbers with ``lb < ub`` when the
    wrapper needs a box (``required``), else each may be None (unbounded)."""
    for name, v in (("lb", lb), ("ub", ub)):
        if v is None and not required:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            what = "a finite number" if required else "a number or None"
            raise TypeError(f"{owner}: {name} must be {what}, got {type(v).__name__}")
        if required and not math.isfinite(v):
            raise ValueError(f"{owner}: {name} must be finite (the search box must be bounded), got {v}")
        if math.isnan(v):
            raise ValueError(f"{owner}: {name} is NaN")
    if lb is not None and ub is not None and not lb < ub:
        raise ValueError(f"{owner}: lb must be smaller than ub, got lb={lb}, ub={ub}")


def check_callable(owner: str, name: str, value: Any) -> None:
    """Raises ``TypeError`` naming ``owner`` unless ``value`` is callable or None."""
    if value is not None and not callable(value):
        raise TypeError(f"{owner}: {name} must be callable or None, got {type(value).__name__}")


def check_dict(owner: str, name: str, value: Any) -> None:
    """Raises ``TypeError`` naming ``owner`` unless ``value`` is a dict or None."""
    if value is not None and not isinstance(value, dict):
        raise TypeError(f"{owner}: {name} must be a dict or None, got {type(value).__name__}")


def check_number(owner: str, name: str, value: Any, low: float = 0, allow_none: bool = True) -> None:
    """Raises ``ValueError`` naming ``owner`` unless ``value`` is a number ``>= low`` (or None if allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value >= low:
        raise ValueError(f"{owner}: {name} must be a number >= {low}{' or None' if allow_none else ''}, got {value!r}")


@contextmanager
def restore_numpy_printoptions() -> Iterator[None]:
    """Puts NumPy's print options back after the block (some libraries change them globally)."""
    saved = np.get_printoptions()
    try:
        yield
    finally:
        np.set_printoptions(**saved)


def _as_float_loss(owner: str, loss: Any) -> float:
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(f"{owner}: the closure must return a scalar loss, got a tensor of shape "
                             f"{tuple(loss.shape)}")
        return float(loss.detach().item())
    try:
        return float(loss)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: the closure must return a scalar loss (a tensor or a number), got "
                        f"{type(loss).__name__}") from None


class Problem:
    """The objective of one external run: the trainable parameters seen as one float64 vector ``x``.

    Every evaluation first copies ``x`` into the parameters (exactly the values the library gives, cast to each
    parameter's dtype; nothing accumulates between evaluations), then calls the closure and increments
    ``owner.num_evaluations``. Losses go to the library as Python floats, NaN replaced by ``nan_value``
    (``+inf`` by default: a point whose loss is NaN is worse than any other); gradients and Hessians as new float64
    arrays that share no memory with torch tensors.

    ``guarded`` objectives (for libraries that swallow or mangle exceptions raised in callbacks) record the first
    exception, return ``+inf`` from then on without calling the closure, and :meth:`reraise` raises it after the
    library returns. The best (lowest) value seen and its point are tracked in ``best_f``/``best_x``.
    """

    def __init__(self, owner: WrapperOptimizer, closure: Callable[..., Any] | None, nan_value: float = math.inf,
                 require_closure: bool = True):
        self.name = type(owner).__name__
        if closure is None and require_closure:
            raise RuntimeError(f"{self.name} requires a closure: call `opt.step(closure)` where "
                               "`closure(backward=True)` re-evaluates the loss (and calls backward if asked).")
        params = owner.get_params("requires_grad", cls=list)
        if len(params) == 0:
            raise ValueError(f"{self.name}: no parameter requires grad, there is nothing to optimize")
        for p in params:
            if not p.is_floating_point():
                raise TypeError(f"{self.name} supports real floating point parameters only, got a {p.dtype} one")
        self.owner = owner
        self.closure: Callable[..., Any] = closure  # type: ignore[assignment]
        self.params: list[torch.Tensor] = params
        self.sizes = [p.numel() for p in params]
        self.n = sum(self.sizes)
        devices = {p.device for p in params}
        self._device = next(iter(devices)) if len(devices) == 1 else None
        self.nan_value = nan_value
        self.error: BaseException | None = None
        self.n_evaluations = 0
        """Closure calls of this run."""
        self.best_f = math.inf
        self.best_x: np.ndarray | None = None

    # ------------------------------------------------------------------ vectors
    def x0(self) -> np.ndarray:
        """The current parameters as a new float64 vector."""
        return self._to_vec(self.params)

    def _to_vec(self, tensors: list[torch.Tensor]) -> np.ndarray:
        """One new float64 NumPy vector from ``tensors`` (one transfer to the CPU when they share a device)."""
        device = self._device if self._device is not None else torch.device("cpu")  # mixed devices: via the CPU
        with torch.no_grad():
            vec = torch.cat([t.detach().reshape(-1).to(device=device, dtype=torch.float64) for t in tensors])
        return vec.cpu().numpy()

    def load(self, x: Any) -> None:
        """Copies the vector ``x`` (anything ``np.asarray`` takes, ``n`` entries) into the parameters."""
        arr = np.asarray(x, dtype=np.float64).reshape(-1)
        if arr.size != self.n:
            raise ValueError(f"{self.name}: got a vector of {arr.size} entries from the library, the parameters "
                             f"have {self.n}")
        if not arr.flags.writeable:  # torch warns about (and can't promise anything for) read-only arrays
            arr = arr.copy()
        vec = torch.from_numpy(arr)
        if self._device is not None and self._device.type != "cpu":
            vec = vec.to(self._device)  # one transfer
        views = [v.view(p.shape) for v, p in zip(vec.split(self.sizes), self.params)]
        with torch.no_grad():
            if self._device is None:  # parameters on several devices: copy_ moves each slice
                for p, v in zip(self.params, views):
                    p.copy_(v)
            else:
                torch._foreach_copy_(self.params, views)

    def box(self, required: bool) -> tuple[np.ndarray, np.ndarray]:
        """Per-scalar lower and upper bounds from the per-group ``lb``/``ub`` settings (None is ``∓inf``).

        With ``required``, every bound must be finite; a bound that is not, or ``lb >= ub``, raises ``ValueError``.
        """
        lbs, ubs = self.owner.group_vals("lb", "ub", cls=list)
        lb = np.concatenate([np.full(n, -math.inf if v is None else float(v)) for v, n in zip(lbs, self.sizes)])
        ub = np.concatenate([np.full(n, math.inf if v is None else float(v)) for v, n in zip(ubs, self.sizes)])
        if np.isnan(lb).any() or np.isnan(ub).any():
            raise ValueError(f"{self.name}: lb/ub is NaN in a parameter group")
        if required and not (np.isfinite(lb).all() and np.isfinite(ub).all()):
            raise ValueError(f"{self.name} searches a bounded box: every parameter group needs finite lb and ub")
        if required and not (lb < ub).all():
            raise ValueError(f"{self.name}: lb must be smaller than ub in every parameter group")
        if not required and not (lb <= ub).all():
            raise ValueError(f"{self.name}: lb must not exceed ub in any parameter group")
        return lb, ub

    def check_inside(self, x: np.ndarray, lb: np.ndarray, ub: np.ndarray) -> None:
        """Raises ``ValueError`` if the starting point ``x`` lies outside the box."""
        if not ((x >= lb).all() and (x <= ub).all()):
            bad = int(np.count_nonzero((x < lb) | (x > ub)))
            raise ValueError(f"{self.name} starts from the current parameters, but {bad} of their {self.n} entries "
                             "lie outside the box [lb, ub]; move them inside or widen the bounds")

    # ------------------------------------------------------------------ evaluations
    def _count(self) -> None:
        self.n_evaluations += 1
        self.owner.num_evaluations += 1

    def _record(self, f: float, x: Any) -> float:
        if f < self.best_f:
            self.best_f = f
            self.best_x = np.array(x, dtype=np.float64).reshape(-1)
        return f

    def evaluate(self, x: Any) -> float:
        """Loads ``x`` and returns ``closure(False)`` (evaluated without building a graph) as a float, NaN kept."""
        self.load(x)
        with torch.no_grad():
            loss = self.closure(False)
        self._count()
        f = _as_float_loss(self.name, loss)
        if not math.isnan(f):
            self._record(f, x)
        return f

    def value(self, x: Any) -> float:
        """:meth:`evaluate` with NaN replaced by ``nan_value``: the loss as the library sees it."""
        f = self.evaluate(x)
        return self.nan_value if math.isnan(f) else f

    def value_and_grad(self, x: Any) -> tuple[float, np.ndarray]:
        """Loads ``x``, calls ``closure()`` (with backward) and returns the loss and the gradient vector (a
        parameter without ``.grad`` contributes zeros)."""
        self.load(x)
        with torch.enable_grad():
            loss = self.closure()
        self._count()
        f = _as_float_loss(self.name, loss)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if not math.isnan(f):
            self._record(f, x)
        return (self.nan_value if math.isnan(f) else f), self._to_vec(grads)

    def grad(self, x: Any) -> np.ndarray:
        """The gradient vector at ``x`` (see :meth:`value_and_grad`)."""
        return self.value_and_grad(x)[1]

    def grad_and_hessian(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Loads ``x``, evaluates ``closure(False)`` with a graph and returns the gradient vector and the dense
        ``n × n`` autograd Hessian (one vectorised reverse pass per Hessian)."""
        self.load(x)
        with torch.enable_grad():
            loss = self.closure(False)
            self._count()
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise TypeError(f"{self.name}: the closure must return a scalar loss tensor to compute the Hessian, "
                                f"got {type(loss).__name__}")
            J, H = jacobian_and_hessian_mat_wrt(loss.reshape(()), self.params)
        f = _as_float_loss(self.name, loss)
        if not math.isnan(f):
            self._record(f, x)
        g = J.reshape(-1).to(torch.float64).cpu().numpy()
        return g, H.to(torch.float64).cpu().numpy()

    def hessian(self, x: Any) -> np.ndarray:
        """The dense autograd Hessian at ``x``."""
        return self.grad_and_hessian(x)[1]

    # ------------------------------------------------------------------ exceptions
    def guarded(self, x: Any) -> float:
        """:meth:`value` that records an exception instead of raising it (and returns ``+inf`` from then on)."""
        if self.error is not None:
            return math.inf
        try:
            return self.value(x)
        except StopRun:
            raise
        except BaseException as e:  # re-raised by `reraise` after the library returns
            self.error = e
            return math.inf

    def reraise(self) -> None:
        """Raises the exception recorded by :meth:`guarded`, if any."""
        if self.error is not None:
            error, self.error = self.error, None
            raise error


class WrapperOptimizer(Optimizer):
    """Base of the wrappers of other optimization libraries.

    Attributes:
        num_evaluations: closure evaluations made so far (all steps together).
        result: what the library returned in the last step (its result object), for inspection.
    """

    def __init__(self, params: Params | torch.nn.Module, defaults: dict[str, Any] | None = None):
        super().__init__(params, defaults)
        self.num_evaluations = 0
        self.result: Any = None

    def _problem(self, closure: Callable[..., Any] | None, nan_value: float = math.inf) -> Problem:
        return Problem(self, closure, nan_value=nan_value)
