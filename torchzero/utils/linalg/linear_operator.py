"""Linear operators over flattened parameter vectors: a small analogue of ``scipy.sparse.linalg.LinearOperator``.

Curvature modules expose their Hessian (or approximation) through ``Module.get_H(var)`` as one of these, so trust
regions and solvers can use it without knowing how it is stored. Operators act on 1-D vectors (all parameters
flattened and concatenated); ``matmat`` acts on the columns of a matrix.
"""
from __future__ import annotations

from abc import ABC
from typing import Any

import torch


class LinearOperator(ABC):
    """Abstract linear operator ``A``. Methods that a subclass does not implement raise ``NotImplementedError``
    naming the class."""

    device: torch.device
    dtype: torch.dtype

    def _missing(self, name: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} doesn't implement `{name}`")

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """``A x``."""
        raise self._missing("matvec")

    def rmatvec(self, x: torch.Tensor) -> torch.Tensor:
        """``Aᵀ x`` (the operators here are symmetric unless stated, so this defaults to ``matvec``)."""
        return self.matvec(x)

    def matmat(self, X: torch.Tensor) -> torch.Tensor:
        """``A X`` for a matrix ``X`` (column by column unless overridden)."""
        return torch.stack([self.matvec(c) for c in X.unbind(-1)], -1)

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        """``A⁻¹ b``."""
        raise self._missing("solve")

    def solve_bounded(self, b: torch.Tensor, bound: float, ord: float = 2) -> torch.Tensor:
        """``A⁻¹ b`` shortened to norm ``bound`` (``ord``-norm) if it is longer."""
        x = self.solve(b)
        norm = torch.linalg.vector_norm(x, ord)
        if norm > bound:
            x = x * (bound / norm)
        return x

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Updates the operator in place (e.g. a quasi-Newton update)."""
        raise self._missing("update")

    def add(self, x: Any) -> LinearOperator:
        """``A + X`` for another operator or a tensor (densifies by default)."""
        other = x.to_tensor() if isinstance(x, LinearOperator) else torch.as_tensor(x)
        return Dense(self.to_tensor() + other)

    def __add__(self, x: Any) -> LinearOperator:
        return self.add(x)

    def add_diagonal(self, x: torch.Tensor | float) -> LinearOperator:
        """``A + diag(x)`` (``x`` a scalar or a vector)."""
        return Dense(self.to_tensor()).add_diagonal(x)

    def diagonal(self) -> torch.Tensor:
        """The diagonal of ``A``."""
        return torch.diagonal(self.to_tensor())

    def inv(self) -> LinearOperator:
        """``A⁻¹`` as an operator."""
        raise self._missing("inv")

    def transpose(self) -> LinearOperator:
        """``Aᵀ`` (the operators here are symmetric unless stated)."""
        return self

    @property
    def T(self) -> LinearOperator:
        return self.transpose()

    def to_tensor(self) -> torch.Tensor:
        """The dense matrix."""
        raise self._missing("to_tensor")

    def to_dense(self) -> Dense:
        """A ``Dense`` operator with the same matrix."""
        return Dense(self.to_tensor())

    def size(self) -> tuple[int, int]:
        """``(rows, columns)``."""
        raise self._missing("size")

    @property
    def shape(self) -> tuple[int, int]:
        return self.size()

    def numel(self) -> int:
        rows, cols = self.size()
        return rows * cols

    @property
    def ndim(self) -> int:
        return 2

    def is_dense(self) -> bool:
        """Whether the operator stores a dense matrix."""
        return False

    def scipy_linop(self, dtype: Any = None) -> Any:
        """A ``scipy.sparse.linalg.LinearOperator`` calling ``matvec``/``rmatvec`` through NumPy (needs SciPy)."""
        import numpy as np
        from scipy.sparse.linalg import LinearOperator as ScipyLinearOperator

        def to_torch(x: Any) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x).reshape(-1), device=self.device, dtype=self.dtype)

        if dtype is None:
            dtype = torch.empty((), dtype=self.dtype).numpy().dtype
        return ScipyLinearOperator(
            shape=self.size(), dtype=dtype,
            matvec=lambda x: self.matvec(to_torch(x)).detach().cpu().numpy().astype(dtype, copy=False),
            rmatvec=lambda x: self.rmatvec(to_torch(x)).detach().cpu().numpy().astype(dtype, copy=False),
        )


def _add_diagonal(A: torch.Tensor, x: torch.Tensor | float) -> torch.Tensor:
    out = A.clone()
    out.diagonal().add_(torch.as_tensor(x, device=A.device, dtype=A.dtype))
    return out


class Dense(LinearOperator):
    """A dense matrix ``A`` (or another operator, densified). ``solve`` uses an LU solve and falls back to least
    squares when ``A`` is singular; ``inv`` falls back to the pseudo-inverse."""

    def __init__(self, A: torch.Tensor | LinearOperator):
        if isinstance(A, LinearOperator):
            A = A.to_tensor()
        self.A = A
        self.device = A.device
        self.dtype = A.dtype

    def matvec(self, x):
        return self.A @ x

    def rmatvec(self, x):
        return self.A.mT @ x

    def matmat(self, X):
        return self.A @ X

    def solve(self, b):
        """LU solve, least squares if ``A`` is singular; a NaN vector if ``A`` itself is not finite."""
        if not torch.isfinite(self.A).all():
            return torch.full_like(b, float("nan"))
        x, info = torch.linalg.solve_ex(self.A, b)
        if info.item() != 0 or not torch.isfinite(x).all():
            x = torch.linalg.lstsq(self.A, b.unsqueeze(-1)).solution.squeeze(-1)
        return x

    def add(self, x):
        other = x.to_tensor() if isinstance(x, LinearOperator) else torch.as_tensor(x)
        return Dense(self.A + other)

    def add_diagonal(self, x):
        return Dense(_add_diagonal(self.A, x))

    def diagonal(self):
        return torch.diagonal(self.A)

    def inv(self):
        A_inv, info = torch.linalg.inv_ex(self.A)
        if info.item() != 0 or not torch.isfinite(A_inv).all():
            A_inv = torch.linalg.pinv(self.A)
        return Dense(A_inv)

    def transpose(self):
        return Dense(self.A.mT)

    def to_tensor(self):
        return self.A

    def size(self):
        return tuple(self.A.shape)  # type: ignore[return-value]

    def is_dense(self):
        return True


class DenseInverse(LinearOperator):
    """An operator ``A`` known through its inverse ``A_inv`` (quasi-Newton methods that keep the inverse Hessian):
    ``solve(b) = A_inv b`` is cheap; ``matvec`` solves a system with ``A_inv``."""

    def __init__(self, A_inv: torch.Tensor):
        self.A_inv = A_inv
        self.device = A_inv.device
        self.dtype = A_inv.dtype

    def matvec(self, x):
        return Dense(self.A_inv).solve(x)

    def solve(self, b):
        return self.A_inv @ b

    def inv(self):
        return Dense(self.A_inv)

    def to_tensor(self):
        return Dense(self.A_inv).inv().A

    def size(self):
        return tuple(self.A_inv.shape)  # type: ignore[return-value]

    def is_dense(self):
        return True


class DenseWithInverse(LinearOperator):
    """A dense matrix ``A`` with its inverse ``A_inv`` both known: ``solve`` multiplies by ``A_inv``, ``inv`` swaps
    them; arithmetic returns a ``Dense`` without the inverse."""

    def __init__(self, A: torch.Tensor, A_inv: torch.Tensor):
        self.A = A
        self.A_inv = A_inv
        self.device = A.device
        self.dtype = A.dtype

    def matvec(self, x):
        return self.A @ x

    def rmatvec(self, x):
        return self.A.mT @ x

    def solve(self, b):
        return self.A_inv @ b

    def add(self, x):
        return Dense(self.A).add(x)

    def add_diagonal(self, x):
        return Dense(_add_diagonal(self.A, x))

    def diagonal(self):
        return torch.diagonal(self.A)

    def inv(self):
        return DenseWithInverse(self.A_inv, self.A)

    def transpose(self):
        return DenseWithInverse(self.A.mT, self.A_inv.mT)

    def to_tensor(self):
        return self.A

    def size(self):
        return tuple(self.A.shape)  # type: ignore[return-value]

    def is_dense(self):
        return True


class Diagonal(LinearOperator):
    """``diag(x)``."""

    def __init__(self, x: torch.Tensor):
        self.x = x
        self.device = x.device
        self.dtype = x.dtype

    def matvec(self, x):
        return self.x * x

    def matmat(self, X):
        return self.x.unsqueeze(-1) * X

    def solve(self, b):
        return b / self.x

    def add(self, x):
        if isinstance(x, Diagonal):
            return Diagonal(self.x + x.x)
        if isinstance(x, ScaledIdentity):
            return Diagonal(self.x + x.s)
        return super().add(x)

    def add_diagonal(self, x):
        return Diagonal(self.x + torch.as_tensor(x, device=self.device, dtype=self.dtype))

    def diagonal(self):
        return self.x

    def inv(self):
        return Diagonal(1 / self.x)

    def to_tensor(self):
        return torch.diag(self.x)

    def size(self):
        return (self.x.numel(), self.x.numel())


class ScaledIdentity(LinearOperator):
    """``s·I``. ``shape`` (and device/dtype) are needed for ``diagonal`` and ``to_tensor``."""

    def __init__(self, s: float | torch.Tensor = 1.0, shape: tuple[int, int] | None = None,
                 device: torch.types.Device = None, dtype: torch.dtype | None = None):
        self.s = s
        self._shape = None if shape is None else tuple(shape)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype if dtype is not None else torch.get_default_dtype()

    def matvec(self, x):
        return x * self.s

    def matmat(self, X):
        return X * self.s

    def solve(self, b):
        return b / self.s

    def solve_bounded(self, b, bound, ord=2):
        x = b / self.s
        if not torch.isfinite(x).all():
            x = b
        norm = torch.linalg.vector_norm(x, ord)
        if norm > bound:
            x = x * (bound / norm)
        return x

    def add(self, x):
        if isinstance(x, ScaledIdentity):
            return ScaledIdentity(self.s + x.s, self._shape or x._shape, self.device, self.dtype)
        if isinstance(x, LinearOperator):
            return x.add_diagonal(self.s)
        return Dense(_add_diagonal(torch.as_tensor(x, device=self.device, dtype=self.dtype), self.s))

    def add_diagonal(self, x):
        if isinstance(x, (int, float)):
            return ScaledIdentity(self.s + x, self._shape, self.device, self.dtype)
        return Diagonal(torch.as_tensor(x, device=self.device, dtype=self.dtype) + self.s)

    def _n(self) -> int:
        if self._shape is None:
            raise RuntimeError("ScaledIdentity needs `shape` for this operation")
        return self._shape[0]

    def diagonal(self):
        return torch.full((self._n(),), float(self.s), device=self.device, dtype=self.dtype)

    def inv(self):
        return ScaledIdentity(1 / self.s, self._shape, self.device, self.dtype)

    def to_tensor(self):
        return torch.eye(self._n(), device=self.device, dtype=self.dtype) * self.s

    def size(self):
        if self._shape is None:
            raise RuntimeError("ScaledIdentity needs `shape` for this operation")
        return self._shape  # type: ignore[return-value]


class AtA(LinearOperator):
    """``AᵀA`` with a matrix-free ``matvec``; ``solve``/``inv``/``add_diagonal`` densify. (Gauss-Newton: ``JᵀJ``.)"""

    def __init__(self, A: torch.Tensor):
        self.A = A
        self.device = A.device
        self.dtype = A.dtype

    def matvec(self, x):
        return self.A.mT @ (self.A @ x)

    def matmat(self, X):
        return self.A.mT @ (self.A @ X)

    def solve(self, b):
        return Dense(self.to_tensor()).solve(b)

    def add_diagonal(self, x):
        return Dense(_add_diagonal(self.to_tensor(), x))

    def diagonal(self):
        return (self.A * self.A).sum(0)

    def inv(self):
        return Dense(self.to_tensor()).inv()

    def to_tensor(self):
        return self.A.mT @ self.A

    def size(self):
        n = self.A.shape[1]
        return (n, n)


class AAT(LinearOperator):
    """``AAᵀ`` with a matrix-free ``matvec``; ``solve``/``inv``/``add_diagonal`` densify."""

    def __init__(self, A: torch.Tensor):
        self.A = A
        self.device = A.device
        self.dtype = A.dtype

    def matvec(self, x):
        return self.A @ (self.A.mT @ x)

    def matmat(self, X):
        return self.A @ (self.A.mT @ X)

    def solve(self, b):
        return Dense(self.to_tensor()).solve(b)

    def add_diagonal(self, x):
        return Dense(_add_diagonal(self.to_tensor(), x))

    def diagonal(self):
        return (self.A * self.A).sum(1)

    def inv(self):
        return Dense(self.to_tensor()).inv()

    def to_tensor(self):
        return self.A @ self.A.mT

    def size(self):
        m = self.A.shape[0]
        return (m, m)
