"""``TensorList``: a list of tensors whose math runs as multi-tensor (``torch._foreach_*``) operations.

Optimizers do the same elementwise work on every parameter. ``TensorList`` wraps that: each arithmetic
or math method is one ``torch._foreach_*`` call over all tensors where PyTorch has such an operation, and a
per-tensor loop only where it has none (comparisons, ``remainder``, ``copysign``, reductions along dims...).

Operands
--------
The ``other`` argument of binary operations can be

* a scalar (``int``, ``float``, ``bool``, ``complex``), applied to every tensor;
* a sequence of scalars with one scalar per tensor, for example a :class:`~torchzero.utils.numberlist.NumberList`
  of per-parameter settings (the foreach ``ScalarList`` overloads);
* a single tensor, broadcast against every tensor;
* a sequence of tensors with one tensor per element (each pair is broadcast like the torch function would).

A list/tuple is treated as a sequence of tensors if its first element is a tensor, otherwise as a sequence
of scalars. Methods whose name ends with ``_`` work in place and return ``self``; the others return a new
``TensorList`` (of the same class). ``generic_*`` functions at the bottom accept either a tensor or a
``TensorList`` so that one piece of math serves both.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, Literal, TypedDict, overload

import torch
from typing_extensions import Self, Unpack

from .numberlist import NumberList, maybe_numberlist

__all__ = [
    "TensorList",
    "as_tensorlist",
    "Metrics",
    "Distributions",
    "generic_vector_norm",
    "generic_zeros_like",
    "generic_ones_like",
    "generic_full_like",
    "generic_randn_like",
    "generic_numel",
    "generic_finfo",
    "generic_finfo_tiny",
    "generic_finfo_eps",
    "generic_eq",
    "generic_ne",
    "generic_sum",
    "generic_max",
    "generic_min",
    "generic_clamp",
    "generic_is_tensorlist",
    "generic_mul",
    "generic_add",
    "generic_sub",
    "generic_div",
]

Tensor = torch.Tensor

_Scalar = int | float | bool | complex
_ScalarSeq = Sequence[_Scalar]
_TensorSeq = list[Tensor] | tuple[Tensor, ...]
_STSeq = _TensorSeq | _ScalarSeq
TensorSeq = _TensorSeq
ScalarOrSeq = _Scalar | Tensor | _ScalarSeq | _TensorSeq
"""A scalar, a tensor, a sequence of scalars or a sequence of tensors."""
ScalarOrTensorSeq = _Scalar | _TensorSeq

Metrics = Literal["mad", "std", "var", "sum", "l0", "l1", "l2", "l3", "l4", "linf"] | float | Tensor
"""A statistic of a vector: ``'mad'`` is the mean absolute value, ``'std'``/``'var'``/``'sum'`` are the plain
statistics, ``'l0'`` ... ``'l4'``, ``'linf'`` and numbers are vector p-norms of that order."""
Distributions = Literal["normal", "gaussian", "uniform", "sphere", "rademacher"]
_Dim = int | list[int] | tuple[int, ...] | Literal["global"] | None

_NORM_METRICS: dict[str, float] = {"l0": 0, "l1": 1, "l2": 2, "l3": 3, "l4": 4, "linf": math.inf}


class _NewTensorKwargs(TypedDict, total=False):
    """Keyword arguments of ``torch.*_like`` tensor constructors."""

    memory_format: torch.memory_format
    dtype: torch.dtype
    layout: torch.layout
    device: torch.device | str | int
    pin_memory: bool
    requires_grad: bool


def _has_overload(op: str, overload_name: str) -> bool:
    """Whether ``torch.ops.aten.<op>`` has the given overload in the installed PyTorch."""
    try:
        getattr(getattr(torch.ops.aten, op), overload_name)
    except (AttributeError, RuntimeError):
        return False
    return True


# Overloads missing from older PyTorch versions (present in 2.13); without them a fallback is used.
_HAS_LERP_SCALARLIST = _has_overload("_foreach_lerp_", "ScalarList")
_HAS_FOREACH_MAX = hasattr(torch, "_foreach_max")


def _is_seq(x: Any) -> bool:
    return isinstance(x, (list, tuple))


def _is_tensor_seq(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and isinstance(x[0], Tensor)


def _is_scalar_seq(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and not _is_tensor_seq(x)


def _operand(other: Any, n: int, tensor_overload: bool = False) -> Any:
    """Adapts a binary operand to the foreach overloads.

    Scalars and sequences pass through (``Scalar``, ``ScalarList`` and ``List`` overloads). A single tensor
    becomes ``[other] * n`` (the ``List`` overload, which broadcasts each pair), except that a 0-d tensor is
    passed unchanged when the operation has a ``.Tensor`` overload (``add``, ``mul``, ``div``): that overload
    reads the value on the device, so a tensor learning rate costs no host synchronization."""
    if isinstance(other, Tensor):
        if tensor_overload and other.ndim == 0:
            return other
        return [other] * n
    return other


def _tensors(x: Any, n: int) -> Any:
    """A tensor operand as a sequence of ``n`` tensors (a single tensor is repeated)."""
    return [x] * n if isinstance(x, Tensor) else x


def _broadcast(x: Any, n: int) -> Sequence[Any]:
    """Any operand as a per-element sequence of length ``n`` (non-sequences are repeated)."""
    if _is_seq(x):
        if len(x) != n:
            raise ValueError(f"expected a sequence of {n} elements, got {len(x)}")
        return x
    return [x] * n


def _stack(values: Sequence[Tensor]) -> Tensor:
    """Stacks per-tensor 0-d results, moving them to the first one's device if devices differ."""
    device = values[0].device
    if any(v.device != device for v in values):
        values = [v.to(device) for v in values]
    return torch.stack(list(values))


def _all_dims(t: Tensor) -> tuple[int, ...]:
    return tuple(range(t.ndim))


def _unravel(index: int, shape: Sequence[int]) -> tuple[int, ...]:
    """Multi-index of flat (row-major) position ``index`` in a tensor of ``shape``."""
    out = []
    for size in reversed(shape):
        index, r = divmod(index, size)
        out.append(r)
    return tuple(reversed(out))


def _prod(t: Tensor, dim: int | Sequence[int] | None, keepdim: bool) -> Tensor:
    """``torch.prod`` that also accepts ``dim=None`` with keepdim and a tuple of dims."""
    if dim is None:
        r = t.prod()
        return r.reshape([1] * t.ndim) if keepdim else r
    if isinstance(dim, int):
        return t.prod(dim, keepdim=keepdim)
    ndim = builtins.max(t.ndim, 1)
    for d in sorted({d % ndim for d in dim}, reverse=True):
        t = t.prod(d, keepdim=keepdim)
    return t


def _where_(input: Tensor, condition: Tensor, other: Any) -> Tensor:
    return torch.where(condition, input, other, out=input)


class TensorList(list[Tensor]):
    """A ``list`` of tensors whose arithmetic and math apply to every tensor with multi-tensor operations.

    See the module docstring for the operand kinds accepted by binary operations. Trailing-underscore
    methods work in place and return ``self``; the others return a new list of the same class.

    Operators are elementwise (``tl + 1``, ``tl * other_tl``, ``-tl``); ``==``, ``<``... return
    ``TensorList`` objects of boolean tensors like the torch operators do, and ``~``/``&``/``|``/``^`` are
    *logical* not/and/or/xor of every element.

    ``bool(tensorlist)`` is ``False`` for an empty list and raises ``RuntimeError`` otherwise, the way
    ``bool()`` of a multi-element tensor does: list truthiness ("non-empty") and tensor truthiness
    ("all true") disagree, and with elementwise ``==`` an ``if a == b:`` would silently always be true. Use
    ``len(tl) > 0`` or ``tl.global_all()`` / ``tl.global_any()``. A consequence is that list methods built on
    ``==`` (``in``, ``index``, ``count``, ``remove``) do not work with tensors as in a plain list.

    Example:
        >>> params = TensorList(p for p in model.parameters())
        >>> exp_avg = params.zeros_like()
        >>> exp_avg.lerp_(params.grad, 0.1)
        >>> params.sub_(exp_avg * lr)
    """

    # ======================================================================= construction and attributes
    @classmethod
    def complex(cls, real: TensorSeq, imag: TensorSeq) -> Self:
        """Complex tensors ``torch.complex(real[i], imag[i])``."""
        return cls(torch.complex(r, i) for r, i in zip(real, imag, strict=True))

    @property
    def device(self) -> list[torch.device]:
        return [t.device for t in self]

    @property
    def dtype(self) -> list[torch.dtype]:
        return [t.dtype for t in self]

    @property
    def requires_grad(self) -> list[bool]:
        return [t.requires_grad for t in self]

    @property
    def shape(self) -> list[torch.Size]:
        return [t.shape for t in self]

    def size(self, dim: int | None = None) -> list[Any]:
        if dim is None:
            return [t.size() for t in self]
        return [t.size(dim) for t in self]

    @property
    def ndim(self) -> list[int]:
        return [t.ndim for t in self]

    def ndimension(self) -> list[int]:
        return [t.ndimension() for t in self]

    def numel(self) -> list[int]:
        """Number of elements of every tensor (see :meth:`global_numel` for the total)."""
        return [t.numel() for t in self]

    @property
    def grad(self) -> Self:
        """``.grad`` of every tensor (``None`` where there is none)."""
        return self.__class__(t.grad for t in self)

    @property
    def real(self) -> Self:
        return self.__class__(t.real for t in self)

    @property
    def imag(self) -> Self:
        return self.__class__(t.imag for t in self)

    def view_as_real(self) -> Self:
        return self.__class__(torch.view_as_real(t) for t in self)

    def view_as_complex(self) -> Self:
        return self.__class__(torch.view_as_complex(t) for t in self)

    def type_as(self, other: Tensor | TensorSeq) -> Self:
        return self.zipmap(Tensor.type_as, other)

    def view_as(self, other: Tensor | Sequence[Tensor]) -> Self:
        return self.zipmap(Tensor.view_as, other)

    def fill_none(self, reference: Iterable[Tensor]) -> Self:
        """New list where ``None`` elements are replaced with zeros shaped like the matching ``reference`` tensor."""
        return self.__class__(t if t is not None else torch.zeros_like(r) for t, r in zip(self, reference, strict=True))

    def fill_none_(self, reference: Iterable[Tensor]) -> Self:
        """Replaces ``None`` elements with zeros shaped like the matching ``reference`` tensor, in place."""
        for i, (t, r) in enumerate(zip(self, reference, strict=True)):
            if t is None:
                self[i] = torch.zeros_like(r)
        return self

    # ======================================================================= gradients
    def get_grad(self) -> Self:
        """The ``.grad`` attributes that are not None."""
        return self.__class__(t.grad for t in self if t.grad is not None)

    def with_requires_grad(self, requires_grad: bool = True) -> Self:
        """The tensors whose ``requires_grad`` equals ``requires_grad``."""
        return self.__class__(t for t in self if t.requires_grad == requires_grad)

    def with_grad(self) -> Self:
        """The tensors whose ``.grad`` is not None."""
        return self.__class__(t for t in self if t.grad is not None)

    def ensure_grad_(self) -> Self:
        """Sets ``.grad`` to zeros on every tensor that requires grad and has none."""
        for t in self:
            if t.requires_grad and t.grad is None:
                t.grad = torch.zeros_like(t)
        return self

    def accumulate_grad_(self, grads: TensorSeq) -> Self:
        """Adds ``grads`` to ``.grad``; where ``.grad`` is None it becomes a copy of the matching gradient (a copy, so
        that later accumulation does not modify the caller's tensor)."""
        existing, new = [], []
        for t, g in zip(self, grads, strict=True):
            if t.grad is None:
                t.grad = g.clone()
            else:
                existing.append(t.grad)
                new.append(g)
        if existing:
            torch._foreach_add_(existing, new)
        return self

    def set_grad_(self, grads: TensorSeq) -> Self:
        """Sets ``.grad`` of every tensor to the matching tensor in ``grads`` (replacing existing ones)."""
        for t, g in zip(self, grads, strict=True):
            t.grad = g
        return self

    def zero_grad_(self, set_to_none: bool = True) -> Self:
        """Sets every ``.grad`` to None, or fills existing ones with zeros if ``set_to_none`` is False."""
        if set_to_none:
            for t in self:
                t.grad = None
        else:
            self.get_grad().zero_()
        return self

    # ======================================================================= operators
    def __add__(self, other: ScalarOrSeq) -> Self:  # type: ignore[override]
        return self.add(other)

    def __radd__(self, other: ScalarOrSeq) -> Self:
        return self.add(other)

    def __iadd__(self, other: ScalarOrSeq) -> Self:  # type: ignore[override]
        return self.add_(other)

    def __sub__(self, other: ScalarOrSeq) -> Self:
        return self.sub(other)

    def __rsub__(self, other: ScalarOrSeq) -> Self:
        """``other - self``."""
        if isinstance(other, Tensor) or _is_tensor_seq(other):
            return self._foreach_apply_to(torch._foreach_sub, _tensors(other, len(self)), self)
        return self.neg().add_(other)

    def __isub__(self, other: ScalarOrSeq) -> Self:
        return self.sub_(other)

    def __mul__(self, other: ScalarOrSeq) -> Self:  # type: ignore[override]
        return self.mul(other)

    def __rmul__(self, other: ScalarOrSeq) -> Self:  # type: ignore[override]
        return self.mul(other)

    def __imul__(self, other: ScalarOrSeq) -> Self:  # type: ignore[override]
        return self.mul_(other)

    def __truediv__(self, other: ScalarOrSeq) -> Self:
        return self.div(other)

    def __rtruediv__(self, other: ScalarOrSeq) -> Self:
        """``other / self``; with scalars this is ``reciprocal(self) * other``, as in torch's ``Tensor.__rtruediv__``."""
        if isinstance(other, Tensor) or _is_tensor_seq(other):
            return self._foreach_apply_to(torch._foreach_div, _tensors(other, len(self)), self)
        return self.reciprocal().mul_(other)

    def __itruediv__(self, other: ScalarOrSeq) -> Self:
        return self.div_(other)

    def __floordiv__(self, other: ScalarOrSeq) -> Self:
        return self.floor_divide(other)

    def __ifloordiv__(self, other: ScalarOrSeq) -> Self:
        return self.floor_divide_(other)

    def __mod__(self, other: ScalarOrSeq) -> Self:
        return self.remainder(other)

    def __imod__(self, other: ScalarOrSeq) -> Self:
        return self.remainder_(other)

    def __pow__(self, other: ScalarOrSeq) -> Self:
        return self.pow(other)

    def __rpow__(self, other: ScalarOrTensorSeq) -> Self:
        return self.rpow(other)

    def __ipow__(self, other: ScalarOrSeq) -> Self:
        return self.pow_(other)

    def __neg__(self) -> Self:
        return self.neg()

    def __eq__(self, other: ScalarOrSeq) -> Self:  # type: ignore[override]
        return self.eq(other)

    def __ne__(self, other: ScalarOrSeq) -> Self:  # type: ignore[override]
        return self.ne(other)

    def __lt__(self, other: ScalarOrSeq) -> Self:  # type: ignore[override]
        return self.lt(other)

    def __le__(self, other: ScalarOrSeq) -> Self:  # type: ignore[override]
        return self.le(other)

    def __gt__(self, other: ScalarOrSeq) -> Self:  # type: ignore[override]
        return self.gt(other)

    def __ge__(self, other: ScalarOrSeq) -> Self:  # type: ignore[override]
        return self.ge(other)

    def __invert__(self) -> Self:
        return self.logical_not()

    def __and__(self, other: Tensor | TensorSeq) -> Self:
        return self.logical_and(other)

    def __iand__(self, other: Tensor | TensorSeq) -> Self:
        return self.logical_and_(other)

    def __or__(self, other: Tensor | TensorSeq) -> Self:
        return self.logical_or(other)

    def __ior__(self, other: Tensor | TensorSeq) -> Self:
        return self.logical_or_(other)

    def __xor__(self, other: Tensor | TensorSeq) -> Self:
        return self.logical_xor(other)

    def __ixor__(self, other: Tensor | TensorSeq) -> Self:
        return self.logical_xor_(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, like list

    def __bool__(self) -> bool:
        if len(self) == 0:
            return False
        raise RuntimeError(
            f"The truth value of a non-empty {type(self).__name__} is ambiguous. "
            "Use len(x) > 0, x.global_any() or x.global_all()."
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list.__repr__(self)})"

    # ======================================================================= functional helpers
    def map(self, fn: Callable[..., Tensor], *args, **kwargs) -> Self:
        """New list of ``fn(t, *args, **kwargs)`` for every tensor ``t``."""
        return self.__class__(fn(t, *args, **kwargs) for t in self)

    def map_inplace_(self, fn: Callable[..., Any], *args, **kwargs) -> Self:
        """Calls an in-place ``fn(t, *args, **kwargs)`` on every tensor; returns self."""
        for t in self:
            fn(t, *args, **kwargs)
        return self

    def filter(self, fn: Callable[..., bool], *args, **kwargs) -> Self:
        """The tensors for which ``fn(t, *args, **kwargs)`` is true."""
        return self.__class__(t for t in self if fn(t, *args, **kwargs))

    def filter_by_list(self, s: Sequence[bool]) -> Self:
        """The tensors whose matching element of ``s`` is true."""
        return self.__class__(t for t, keep in zip(self, s, strict=True) if keep)

    def zipmap(self, fn: Callable, other: Any | list | tuple, *args, **kwargs) -> Self:
        """New list of ``fn(t, o, *args, **kwargs)`` where ``o`` is the matching element of ``other`` if it is a
        list/tuple (lengths must match), otherwise ``other`` itself for every tensor."""
        if _is_seq(other):
            return self.__class__(fn(t, o, *args, **kwargs) for t, o in zip(self, other, strict=True))
        return self.__class__(fn(t, other, *args, **kwargs) for t in self)

    def zipmap_inplace_(self, fn: Callable[..., Any], other: Any | list | tuple, *args, **kwargs) -> Self:
        """In-place :meth:`zipmap`: calls ``fn(t, o, *args, **kwargs)`` and returns self."""
        if _is_seq(other):
            for t, o in zip(self, other, strict=True):
                fn(t, o, *args, **kwargs)
        else:
            for t in self:
                fn(t, other, *args, **kwargs)
        return self

    def zipmap_args(self, fn: Callable[..., Any], *others, **kwargs) -> Self:
        """:meth:`zipmap` with several operands: ``fn(t, o1, o2, ..., **kwargs)``; list/tuple operands are zipped,
        anything else is passed to every call."""
        cols = [_broadcast(o, len(self)) for o in others]
        return self.__class__(fn(*z, **kwargs) for z in zip(self, *cols))

    def zipmap_args_inplace_(self, fn: Callable[..., Any], *others, **kwargs) -> Self:
        """In-place :meth:`zipmap_args`; returns self."""
        cols = [_broadcast(o, len(self)) for o in others]
        for z in zip(self, *cols):
            fn(*z, **kwargs)
        return self

    def _foreach_apply(self, fn: Callable[[list[Tensor]], list[Tensor]], *args, **kwargs) -> Self:
        """New list from ``fn(self, *args, **kwargs)``, a non-inplace ``torch._foreach_*`` function.

        Foreach functions reject empty lists; an empty ``TensorList`` gives an empty result."""
        if len(self) == 0:
            return self.__class__()
        return self.__class__(fn(self, *args, **kwargs))

    def _foreach_apply_(self, fn: Callable[..., Any], *args, **kwargs) -> Self:
        """Calls an in-place ``torch._foreach_*_`` function on self (skipped if empty) and returns self."""
        if len(self) != 0:
            fn(self, *args, **kwargs)
        return self

    def _foreach_apply_to(self, fn: Callable[..., list[Tensor]], *args, **kwargs) -> Self:
        """New list from ``fn(*args, **kwargs)``, for foreach calls where self is not the first argument."""
        if len(self) == 0:
            return self.__class__()
        return self.__class__(fn(*args, **kwargs))

    # ======================================================================= conversions and copies
    def to(self, *args, **kwargs) -> Self:
        return self.__class__(t.to(*args, **kwargs) for t in self)

    def cuda(self) -> Self:
        return self.__class__(t.cuda() for t in self)

    def cpu(self) -> Self:
        return self.__class__(t.cpu() for t in self)

    def long(self) -> Self:
        return self.__class__(t.long() for t in self)

    def short(self) -> Self:
        return self.__class__(t.short() for t in self)

    def clone(self) -> Self:
        return self.__class__(t.clone() for t in self)

    def detach(self) -> Self:
        return self.__class__(t.detach() for t in self)

    def detach_(self) -> Self:
        for t in self:
            t.detach_()
        return self

    def contiguous(self) -> Self:
        return self.__class__(t.contiguous() for t in self)

    def as_float(self) -> Self:
        """``t.float()`` of every tensor (named so because ``float`` would shadow the builtin in annotations)."""
        return self.__class__(t.float() for t in self)

    def as_bool(self) -> Self:
        return self.__class__(t.bool() for t in self)

    def as_int(self) -> Self:
        return self.__class__(t.int() for t in self)

    def copy_(self, src: TensorSeq, non_blocking: bool = False) -> Self:
        """Copies the values of ``src`` (a sequence of tensors, or one tensor for all) into these tensors."""
        return self._foreach_apply_(torch._foreach_copy_, _tensors(src, len(self)), non_blocking=non_blocking)

    def set_(self, storage: Iterable[Tensor | torch.types.Storage]) -> Self:
        """``t.set_(s)`` for every tensor: makes each tensor use the storage (and shape) of the matching ``s``."""
        for t, s in zip(self, storage, strict=True):
            t.set_(s)  # type: ignore[arg-type]
        return self

    def requires_grad_(self, mode: bool = True) -> Self:
        for t in self:
            t.requires_grad_(mode)
        return self

    # ======================================================================= vector conversion
    def to_vec(self) -> Tensor:
        """All tensors flattened and concatenated into one 1-D tensor (an empty list gives an empty tensor)."""
        if len(self) == 0:
            return torch.empty(0)
        return torch.cat([t.reshape(-1) for t in self])

    def _vec_views(self, vec: Tensor) -> list[Tensor]:
        """Slices of ``vec`` shaped like each tensor (views; converted only where dtype/device differ)."""
        vec = vec.reshape(-1)
        total = self.global_numel()
        if vec.numel() != total:
            raise ValueError(f"vector has {vec.numel()} elements, but the TensorList has {total}")
        out = []
        cur = 0
        for t in self:
            n = t.numel()
            out.append(vec[cur : cur + n].view_as(t).to(dtype=t.dtype, device=t.device))
            cur += n
        return out

    def from_vec_(self, vec: Tensor) -> Self:
        """Copies the values of a 1-D tensor with :meth:`global_numel` elements into these tensors (in the
        order of :meth:`to_vec`). Values are copied, so the tensors do not alias ``vec`` afterwards."""
        return self._foreach_apply_(torch._foreach_copy_, self._vec_views(vec))

    def from_vec(self, vec: Tensor) -> Self:
        """New list of tensors shaped like these, holding the values of ``vec`` (in the order of
        :meth:`to_vec`). They are views into ``vec`` unless a dtype/device conversion was needed."""
        return self.__class__(self._vec_views(vec))

    # ======================================================================= global reductions
    def global_min(self) -> Tensor:
        """Smallest element of all tensors (a 0-d tensor); raises on a list with no elements."""
        nonempty = [t for t in self if t.numel() > 0]
        if not nonempty:
            raise RuntimeError("global_min() of a TensorList with no elements")
        return _stack([t.amin() for t in nonempty]).amin()

    def global_max(self) -> Tensor:
        """Largest element of all tensors (a 0-d tensor); raises on a list with no elements."""
        nonempty = [t for t in self if t.numel() > 0]
        if not nonempty:
            raise RuntimeError("global_max() of a TensorList with no elements")
        if _HAS_FOREACH_MAX:
            return _stack(torch._foreach_max(nonempty)).amax()  # type: ignore[attr-defined]
        return _stack([t.amax() for t in nonempty]).amax()

    def global_mean(self) -> Tensor:
        """Mean of all elements (nan for no elements, like ``torch.mean``)."""
        return self.global_sum() / self.global_numel()

    def global_sum(self) -> Tensor:
        """Sum of all elements (0 for an empty list)."""
        if len(self) == 0:
            return torch.tensor(0.0)
        return _stack([t.sum() for t in self]).sum()

    def global_std(self, unbiased: bool = True) -> Tensor:
        """Standard deviation of all elements treated as one vector."""
        return torch.std(self.to_vec(), unbiased=unbiased)

    def global_var(self, unbiased: bool = True) -> Tensor:
        """Variance of all elements treated as one vector."""
        return torch.var(self.to_vec(), unbiased=unbiased)

    def global_vector_norm(self, ord: float = 2) -> Tensor:
        """p-norm of all elements treated as one vector, ``torch.linalg.vector_norm(self.to_vec(), ord)``
        without concatenating: one ``_foreach_norm`` for the per-tensor norms, then their norm.

        ``ord`` may be any real number or ``±inf``: ``inf`` is ``max |x|``, ``-inf`` is ``min |x|``, 0 counts the
        nonzero elements, 1 is ``sum |x|``. Tensors without elements are skipped (torch refuses their ±inf and
        negative norms); the norm of a vector without elements is 0 for every ``ord``.
        """
        if isinstance(ord, Tensor):
            ord = float(ord)
        tensors = [t for t in self if t.numel() > 0]
        if len(tensors) == 0:  # abs() gives the real dtype of a complex tensor, like a norm
            return self[0].new_zeros(()).abs() if len(self) > 0 else torch.tensor(0.0)
        norms = _stack(torch._foreach_norm(tensors, ord))
        if ord == 0:
            return norms.sum()
        if ord == math.inf:
            return norms.amax()
        if ord == -math.inf:
            return norms.amin()
        return torch.linalg.vector_norm(norms, ord)

    def global_metric(self, metric: Metrics) -> Tensor:
        """A statistic of all elements treated as one vector, see :data:`Metrics`."""
        if isinstance(metric, str):
            if metric == "mad":
                return self.global_vector_norm(1) / self.global_numel()
            if metric == "std":
                return self.global_std()
            if metric == "var":
                return self.global_var()
            if metric == "sum":
                return self.global_sum()
            if metric in _NORM_METRICS:
                return self.global_vector_norm(_NORM_METRICS[metric])
            raise ValueError(f"unknown metric {metric!r}")
        return self.global_vector_norm(metric)

    def global_any(self) -> Tensor:
        """Whether any element of any tensor is true (a 0-d bool tensor)."""
        if len(self) == 0:
            return torch.tensor(False)
        return _stack([t.any() for t in self]).any()

    def global_all(self) -> Tensor:
        """Whether all elements of all tensors are true (a 0-d bool tensor)."""
        if len(self) == 0:
            return torch.tensor(True)
        return _stack([t.all() for t in self]).all()

    def global_numel(self) -> int:
        """Total number of elements."""
        return builtins.sum(t.numel() for t in self)

    # ======================================================================= creation and sampling
    def empty_like(self, **kwargs: Unpack[_NewTensorKwargs]) -> Self:
        return self.__class__(torch.empty_like(t, **kwargs) for t in self)

    def zeros_like(self, **kwargs: Unpack[_NewTensorKwargs]) -> Self:
        return self.__class__(torch.zeros_like(t, **kwargs) for t in self)

    def ones_like(self, **kwargs: Unpack[_NewTensorKwargs]) -> Self:
        return self.__class__(torch.ones_like(t, **kwargs) for t in self)

    def full_like(self, fill_value: _Scalar | _ScalarSeq, **kwargs: Unpack[_NewTensorKwargs]) -> Self:
        """Tensors filled with ``fill_value`` (one value, or one per tensor)."""
        return self.zipmap(torch.full_like, fill_value, **kwargs)

    def rand_like(
        self, generator: torch.Generator | None = None, dtype: Any = None, device: Any = None, **kwargs
    ) -> Self:
        """Uniform samples in ``[0, 1)`` shaped like each tensor, drawn from ``generator`` if given."""
        if generator is None:
            return self.__class__(torch.rand_like(t, dtype=dtype, device=device, **kwargs) for t in self)
        kwargs.pop("memory_format", None)  # torch.rand with a generator makes contiguous tensors
        return self.__class__(
            torch.rand(
                t.shape,
                generator=generator,
                dtype=t.dtype if dtype is None else dtype,
                device=t.device if device is None else device,
                **kwargs,
            )
            for t in self
        )

    def randn_like(
        self, generator: torch.Generator | None = None, dtype: Any = None, device: Any = None, **kwargs
    ) -> Self:
        """Standard normal samples shaped like each tensor, drawn from ``generator`` if given."""
        if generator is None:
            return self.__class__(torch.randn_like(t, dtype=dtype, device=device, **kwargs) for t in self)
        kwargs.pop("memory_format", None)  # torch.randn with a generator makes contiguous tensors
        return self.__class__(
            torch.randn(
                t.shape,
                generator=generator,
                dtype=t.dtype if dtype is None else dtype,
                device=t.device if device is None else device,
                **kwargs,
            )
            for t in self
        )

    def randint_like(
        self, low: _Scalar | _ScalarSeq, high: _Scalar | _ScalarSeq, **kwargs: Unpack[_NewTensorKwargs]
    ) -> Self:
        """Random integers in ``[low, high)`` (bounds may be per tensor) shaped like each tensor."""
        return self.zipmap_args(torch.randint_like, low, high, **kwargs)

    def uniform_like(
        self,
        low: _Scalar | _ScalarSeq = 0,
        high: _Scalar | _ScalarSeq = 1,
        generator: torch.Generator | None = None,
        **kwargs: Unpack[_NewTensorKwargs],
    ) -> Self:
        """Uniform samples in ``[low, high)`` (bounds may be per tensor) shaped like each tensor."""
        return self.empty_like(**kwargs).uniform_(low, high, generator=generator)

    def sphere_like(
        self, radius: _Scalar | _ScalarSeq, generator: torch.Generator | None = None, **kwargs: Unpack[_NewTensorKwargs]
    ) -> Self:
        """A point drawn uniformly from the sphere of ``radius`` around 0, all tensors being one vector
        (a normal sample divided by its global norm). A per-tensor ``radius`` rescales each part."""
        r = self.randn_like(generator=generator, **kwargs)
        norm = r.global_vector_norm()
        if _is_seq(radius):
            return r.div_(norm).mul_(radius)
        return r.mul_(radius / norm)

    def bernoulli(self, generator: torch.Generator | None = None) -> Self:
        """1 with the probability given by each element, else 0 (``torch.bernoulli``)."""
        return self.__class__(torch.bernoulli(t, generator=generator) for t in self)

    def bernoulli_like(
        self,
        p: _Scalar | _ScalarSeq = 0.5,
        generator: torch.Generator | None = None,
        **kwargs: Unpack[_NewTensorKwargs],
    ) -> Self:
        """Tensors of 1 with probability ``p`` (one value, or one per tensor) and 0 otherwise."""
        return self.empty_like(**kwargs).zipmap_args_inplace_(Tensor.bernoulli_, p, generator=generator)

    def rademacher_like(
        self,
        p: _Scalar | _ScalarSeq = 0.5,
        generator: torch.Generator | None = None,
        **kwargs: Unpack[_NewTensorKwargs],
    ) -> Self:
        """Tensors of +1 with probability ``p`` and -1 otherwise."""
        return self.bernoulli_like(p, generator=generator, **kwargs).mul_(2).sub_(1)

    def sample_like(
        self,
        distribution: Distributions = "normal",
        variance: _Scalar | _ScalarSeq | Sequence | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Unpack[_NewTensorKwargs],
    ) -> Self:
        """A random sample around 0 shaped like these tensors.

        Args:
            distribution: ``'normal'``/``'gaussian'`` (standard normal), ``'uniform'`` (on ``[-1, 1)`` by default),
                ``'sphere'`` (uniform on the unit sphere of all elements as one vector) or ``'rademacher'`` (±1 with
                equal probability).
            variance: how the spread is set (one value or one per tensor); None keeps the defaults above.
                It *multiplies* normal and rademacher samples, *is* the variance of the uniform samples
                (bounds ``±√(3·variance)``), and makes the sphere radius ``variance·√n`` (``n`` = :meth:`global_numel`).
            generator: random generator, for reproducible samples.
        """
        if distribution in ("normal", "gaussian"):
            sample = self.randn_like(generator=generator, **kwargs)
            return sample if variance is None else sample.mul_(maybe_numberlist(variance))
        if distribution == "uniform":
            bound: Any = 1
            if variance is not None:
                bound = maybe_numberlist(variance).mul(3) ** 0.5 if _is_seq(variance) else math.sqrt(3 * variance)
            return self.uniform_like(-bound, bound, generator=generator, **kwargs)
        if distribution == "sphere":
            if variance is None:  # the unit sphere
                return self.sphere_like(1, generator=generator, **kwargs)
            return self.sphere_like(maybe_numberlist(variance) * math.sqrt(self.global_numel()), generator=generator,
                                    **kwargs)
        if distribution == "rademacher":
            sample = self.rademacher_like(generator=generator, **kwargs)
            return sample if variance is None else sample.mul_(maybe_numberlist(variance))
        raise ValueError(f"unknown distribution {distribution!r}")

    def uniform_(
        self, low: _Scalar | _ScalarSeq = 0, high: _Scalar | _ScalarSeq = 1, generator: torch.Generator | None = None
    ) -> Self:
        """Fills every tensor with uniform samples in ``[low, high)`` (bounds may be per tensor)."""
        return self.zipmap_args_inplace_(Tensor.uniform_, low, high, generator=generator)

    # ======================================================================= comparisons and logic
    def eq(self, other: ScalarOrSeq) -> Self:
        return self.zipmap(torch.eq, other)

    def eq_(self, other: ScalarOrSeq) -> Self:
        return self.zipmap_inplace_(Tensor.eq_, other)

    def ne(self, other: ScalarOrSeq) -> Self:
        return self.zipmap(torch.ne, other)

    def ne_(self, other: ScalarOrSeq) -> Self:
        return self.zipmap_inplace_(Tensor.ne_, other)

    def lt(self, other: ScalarOrSeq) -> Self:
        return self.zipmap(torch.lt, other)

    def lt_(self, other: ScalarOrSeq) -> Self:
        return self.zipmap_inplace_(Tensor.lt_, other)

    def le(self, other: ScalarOrSeq) -> Self:
        return self.zipmap(torch.le, other)

    def le_(self, other: ScalarOrSeq) -> Self:
        return self.zipmap_inplace_(Tensor.le_, other)

    def gt(self, other: ScalarOrSeq) -> Self:
        return self.zipmap(torch.gt, other)

    def gt_(self, other: ScalarOrSeq) -> Self:
        return self.zipmap_inplace_(Tensor.gt_, other)

    def ge(self, other: ScalarOrSeq) -> Self:
        return self.zipmap(torch.ge, other)

    def ge_(self, other: ScalarOrSeq) -> Self:
        return self.zipmap_inplace_(Tensor.ge_, other)

    def logical_and(self, other: Tensor | TensorSeq) -> Self:
        return self.zipmap(torch.logical_and, other)

    def logical_and_(self, other: Tensor | TensorSeq) -> Self:
        return self.zipmap_inplace_(Tensor.logical_and_, other)

    def logical_or(self, other: Tensor | TensorSeq) -> Self:
        return self.zipmap(torch.logical_or, other)

    def logical_or_(self, other: Tensor | TensorSeq) -> Self:
        return self.zipmap_inplace_(Tensor.logical_or_, other)

    def logical_xor(self, other: Tensor | TensorSeq) -> Self:
        return self.zipmap(torch.logical_xor, other)

    def logical_xor_(self, other: Tensor | TensorSeq) -> Self:
        return self.zipmap_inplace_(Tensor.logical_xor_, other)

    def logical_not(self) -> Self:
        return self.map(torch.logical_not)

    def logical_not_(self) -> Self:
        return self.map_inplace_(Tensor.logical_not_)

    def equal(self, other: Tensor | TensorSeq) -> list[bool]:
        """``torch.equal`` (same shape and values) of every pair, as a list of Python bools."""
        return [torch.equal(t, o) for t, o in zip(self, _broadcast(other, len(self)))]

    # ======================================================================= arithmetic
    def _add_args(self, other: ScalarOrSeq, alpha: _Scalar, negate: bool = False) -> tuple[Any, dict[str, Any]]:
        """Operand and keyword arguments for ``_foreach_add`` / ``_foreach_sub``.

        The ``Scalar``/``ScalarList`` overloads have no ``alpha``, so it is folded into the scalars. ``negate``
        (used by ``sub``) turns a 0-d tensor into ``add`` with ``-alpha``, because only ``add`` has the
        ``.Tensor`` overload."""
        if isinstance(other, Tensor):
            if other.ndim == 0 and negate:
                return other, {"alpha": -alpha}
            return _operand(other, len(self), tensor_overload=not negate), ({} if alpha == 1 else {"alpha": alpha})
        if _is_tensor_seq(other):
            return other, ({} if alpha == 1 else {"alpha": alpha})
        if alpha == 1:
            return other, {}
        if _is_seq(other):
            return [o * alpha for o in other], {}  # type: ignore[union-attr]
        return other * alpha, {}  # type: ignore[operator]

    def add(self, other: ScalarOrSeq, alpha: _Scalar = 1) -> Self:
        """``self + alpha * other``."""
        operand, kw = self._add_args(other, alpha)
        return self._foreach_apply(torch._foreach_add, operand, **kw)

    def add_(self, other: ScalarOrSeq, alpha: _Scalar = 1) -> Self:
        operand, kw = self._add_args(other, alpha)
        return self._foreach_apply_(torch._foreach_add_, operand, **kw)

    def sub(self, other: ScalarOrSeq, alpha: _Scalar = 1) -> Self:
        """``self - alpha * other``."""
        operand, kw = self._add_args(other, alpha, negate=True)
        fn = torch._foreach_add if (isinstance(operand, Tensor)) else torch._foreach_sub
        return self._foreach_apply(fn, operand, **kw)

    def sub_(self, other: ScalarOrSeq, alpha: _Scalar = 1) -> Self:
        operand, kw = self._add_args(other, alpha, negate=True)
        fn = torch._foreach_add_ if (isinstance(operand, Tensor)) else torch._foreach_sub_
        return self._foreach_apply_(fn, operand, **kw)

    def neg(self) -> Self:
        return self._foreach_apply(torch._foreach_neg)

    def neg_(self) -> Self:
        return self._foreach_apply_(torch._foreach_neg_)

    def mul(self, other: ScalarOrSeq) -> Self:
        return self._foreach_apply(torch._foreach_mul, _operand(other, len(self), tensor_overload=True))

    def mul_(self, other: ScalarOrSeq) -> Self:
        return self._foreach_apply_(torch._foreach_mul_, _operand(other, len(self), tensor_overload=True))

    def div(self, other: ScalarOrSeq) -> Self:
        return self._foreach_apply(torch._foreach_div, _operand(other, len(self), tensor_overload=True))

    def div_(self, other: ScalarOrSeq) -> Self:
        return self._foreach_apply_(torch._foreach_div_, _operand(other, len(self), tensor_overload=True))

    # lazy versions: skip the operation when the operand is the identity. Only Python numbers (or sequences of
    # them) are inspected; tensor operands are always applied, since checking them would synchronize.
    def lazy_add(self, other: int | float | list[int | float] | tuple[int | float]) -> Self:
        """``self + other``, or ``self`` itself (not a copy) if ``other`` is 0."""
        return self.add(other) if generic_ne(other, 0) else self

    def lazy_add_(self, other: int | float | list[int | float] | tuple[int | float]) -> Self:
        return self.add_(other) if generic_ne(other, 0) else self

    def lazy_sub(self, other: int | float | list[int | float] | tuple[int | float]) -> Self:
        """``self - other``, or ``self`` itself (not a copy) if ``other`` is 0."""
        return self.sub(other) if generic_ne(other, 0) else self

    def lazy_sub_(self, other: int | float | list[int | float] | tuple[int | float]) -> Self:
        return self.sub_(other) if generic_ne(other, 0) else self

    def lazy_mul(self, other: int | float | list[int | float] | tuple[int | float], clone: bool = False) -> Self:
        """``self * other``; if ``other`` is 1, ``self`` itself, or a copy when ``clone`` is True."""
        if generic_ne(other, 1):
            return self.mul(other)
        return self.clone() if clone else self

    def lazy_mul_(self, other: int | float | list[int | float] | tuple[int | float]) -> Self:
        return self.mul_(other) if generic_ne(other, 1) else self

    def lazy_div(self, other: int | float | list[int | float] | tuple[int | float]) -> Self:
        """``self / other``, or ``self`` itself (not a copy) if ``other`` is 1."""
        return self.div(other) if generic_ne(other, 1) else self

    def lazy_div_(self, other: int | float | list[int | float] | tuple[int | float]) -> Self:
        return self.div_(other) if generic_ne(other, 1) else self

    def pow(self, exponent: ScalarOrSeq) -> Self:
        return self._foreach_apply(torch._foreach_pow, _operand(exponent, len(self)))

    def pow_(self, exponent: ScalarOrSeq) -> Self:
        return self._foreach_apply_(torch._foreach_pow_, _operand(exponent, len(self)))

    def rpow(self, input: _Scalar | TensorSeq) -> Self:
        """``input ** self``: ``input`` is a scalar base (``_foreach_pow`` ScalarAndTensor overload), a tensor or
        a sequence of tensors; per-tensor scalar bases fall back to a loop, as no foreach overload takes them."""
        if isinstance(input, Tensor) or _is_tensor_seq(input):
            return self._foreach_apply_to(torch._foreach_pow, _tensors(input, len(self)), self)
        if _is_seq(input):
            return self.zipmap(lambda t, b: torch.pow(b, t), input)
        return self._foreach_apply_to(torch._foreach_pow, input, self)

    def rpow_(self, input: TensorSeq) -> Self:
        """``self = input ** self`` (computed out of place, then copied: torch has no in-place reversed pow)."""
        return self.copy_(self.rpow(input))

    def square(self) -> Self:
        return self._foreach_apply(torch._foreach_pow, 2)

    def square_(self) -> Self:
        return self._foreach_apply_(torch._foreach_pow_, 2)

    def sqrt(self) -> Self:
        return self._foreach_apply(torch._foreach_sqrt)

    def sqrt_(self) -> Self:
        return self._foreach_apply_(torch._foreach_sqrt_)

    def remainder(self, other: ScalarOrSeq) -> Self:
        return self.zipmap(torch.remainder, other)

    def remainder_(self, other: ScalarOrSeq) -> Self:
        return self.zipmap_inplace_(Tensor.remainder_, other)

    def floor_divide(self, other: ScalarOrSeq) -> Self:
        return self.zipmap(torch.floor_divide, other)

    def floor_divide_(self, other: ScalarOrSeq) -> Self:
        return self.zipmap_inplace_(Tensor.floor_divide_, other)

    def reciprocal(self) -> Self:
        return self._foreach_apply(torch._foreach_reciprocal)

    def reciprocal_(self) -> Self:
        return self._foreach_apply_(torch._foreach_reciprocal_)

    def abs(self) -> Self:
        return self._foreach_apply(torch._foreach_abs)

    def abs_(self) -> Self:
        return self._foreach_apply_(torch._foreach_abs_)

    def sign(self) -> Self:
        return self._foreach_apply(torch._foreach_sign)

    def sign_(self) -> Self:
        return self._foreach_apply_(torch._foreach_sign_)

    def exp(self) -> Self:
        return self._foreach_apply(torch._foreach_exp)

    def exp_(self) -> Self:
        return self._foreach_apply_(torch._foreach_exp_)

    def signbit(self) -> Self:
        return self.map(torch.signbit)

    def sin(self) -> Self:
        return self._foreach_apply(torch._foreach_sin)

    def sin_(self) -> Self:
        return self._foreach_apply_(torch._foreach_sin_)

    def cos(self) -> Self:
        return self._foreach_apply(torch._foreach_cos)

    def cos_(self) -> Self:
        return self._foreach_apply_(torch._foreach_cos_)

    def tan(self) -> Self:
        return self._foreach_apply(torch._foreach_tan)

    def tan_(self) -> Self:
        return self._foreach_apply_(torch._foreach_tan_)

    def asin(self) -> Self:
        return self._foreach_apply(torch._foreach_asin)

    def asin_(self) -> Self:
        return self._foreach_apply_(torch._foreach_asin_)

    def acos(self) -> Self:
        return self._foreach_apply(torch._foreach_acos)

    def acos_(self) -> Self:
        return self._foreach_apply_(torch._foreach_acos_)

    def atan(self) -> Self:
        return self._foreach_apply(torch._foreach_atan)

    def atan_(self) -> Self:
        return self._foreach_apply_(torch._foreach_atan_)

    def sinh(self) -> Self:
        return self._foreach_apply(torch._foreach_sinh)

    def sinh_(self) -> Self:
        return self._foreach_apply_(torch._foreach_sinh_)

    def cosh(self) -> Self:
        return self._foreach_apply(torch._foreach_cosh)

    def cosh_(self) -> Self:
        return self._foreach_apply_(torch._foreach_cosh_)

    def tanh(self) -> Self:
        return self._foreach_apply(torch._foreach_tanh)

    def tanh_(self) -> Self:
        return self._foreach_apply_(torch._foreach_tanh_)

    def log(self) -> Self:
        return self._foreach_apply(torch._foreach_log)

    def log_(self) -> Self:
        return self._foreach_apply_(torch._foreach_log_)

    def log10(self) -> Self:
        return self._foreach_apply(torch._foreach_log10)

    def log10_(self) -> Self:
        return self._foreach_apply_(torch._foreach_log10_)

    def log2(self) -> Self:
        return self._foreach_apply(torch._foreach_log2)

    def log2_(self) -> Self:
        return self._foreach_apply_(torch._foreach_log2_)

    def log1p(self) -> Self:
        return self._foreach_apply(torch._foreach_log1p)

    def log1p_(self) -> Self:
        return self._foreach_apply_(torch._foreach_log1p_)

    def erf(self) -> Self:
        return self._foreach_apply(torch._foreach_erf)

    def erf_(self) -> Self:
        return self._foreach_apply_(torch._foreach_erf_)

    def erfc(self) -> Self:
        return self._foreach_apply(torch._foreach_erfc)

    def erfc_(self) -> Self:
        return self._foreach_apply_(torch._foreach_erfc_)

    def sigmoid(self) -> Self:
        return self._foreach_apply(torch._foreach_sigmoid)

    def sigmoid_(self) -> Self:
        return self._foreach_apply_(torch._foreach_sigmoid_)

    def floor(self) -> Self:
        return self._foreach_apply(torch._foreach_floor)

    def floor_(self) -> Self:
        return self._foreach_apply_(torch._foreach_floor_)

    def ceil(self) -> Self:
        return self._foreach_apply(torch._foreach_ceil)

    def ceil_(self) -> Self:
        return self._foreach_apply_(torch._foreach_ceil_)

    def round(self) -> Self:
        return self._foreach_apply(torch._foreach_round)

    def round_(self) -> Self:
        return self._foreach_apply_(torch._foreach_round_)

    def zero_(self) -> Self:
        return self._foreach_apply_(torch._foreach_zero_)

    # ======================================================================= per-tensor reductions
    def _global_fn(self, keepdim: bool, fn: Callable[..., Tensor], *args, **kwargs) -> Tensor:
        """Returns ``fn(*args, **kwargs)`` for a ``dim='global'`` reduction, which has no ``keepdim`` form."""
        if keepdim:
            raise ValueError("keepdim=True is not supported with dim='global' (the tensors have different shapes)")
        return fn(*args, **kwargs)

    def max(self, dim: _Dim = None, keepdim: bool = False) -> Self | Any:
        """Largest value of every tensor (``dim=None``), along ``dim`` (int or tuple, values only, like
        ``amax``), or of all tensors (``dim='global'``, a 0-d tensor)."""
        if dim == "global":
            return self._global_fn(keepdim, self.global_max)
        if dim is None:
            if not keepdim and _HAS_FOREACH_MAX:
                return self._foreach_apply(torch._foreach_max)  # type: ignore[attr-defined]
            return self.__class__(t.amax(dim=_all_dims(t), keepdim=keepdim) for t in self)
        return self.__class__(t.amax(dim=dim, keepdim=keepdim) for t in self)

    def min(self, dim: _Dim = None, keepdim: bool = False) -> Self | Any:
        """Smallest value, see :meth:`max`."""
        if dim == "global":
            return self._global_fn(keepdim, self.global_min)
        return self.__class__(t.amin(dim=_all_dims(t) if dim is None else dim, keepdim=keepdim) for t in self)

    def norm(self, ord: float, dtype: torch.dtype | None = None) -> Self:
        """Vector p-norm of every tensor (``_foreach_norm``), a list of 0-d tensors."""
        if isinstance(ord, Tensor):
            ord = float(ord)
        return self._foreach_apply(torch._foreach_norm, ord, dtype=dtype)

    def metric(self, metric: Metrics) -> TensorList:
        """:data:`Metrics` statistic of every tensor, a list of 0-d tensors."""
        if isinstance(metric, str):
            if metric == "mad":
                return self.norm(1).div_(self.numel())
            if metric == "std":
                return self.std()
            if metric == "var":
                return self.var()
            if metric == "sum":
                return self.sum()
            if metric in _NORM_METRICS:
                return self.norm(_NORM_METRICS[metric])
            raise ValueError(f"unknown metric {metric!r}")
        return self.norm(metric)

    def mean(self, dim: _Dim = None, keepdim: bool = False) -> Self | Any:
        """Mean of every tensor (``dim=None``), along ``dim``, or of all elements (``dim='global'``)."""
        if dim == "global":
            return self._global_fn(keepdim, self.global_mean)
        return self.__class__(t.mean(dim=dim, keepdim=keepdim) for t in self)

    def sum(self, dim: _Dim = None, keepdim: bool = False) -> Self | Any:
        """Sum of every tensor (``dim=None``), along ``dim``, or of all elements (``dim='global'``)."""
        if dim == "global":
            return self._global_fn(keepdim, self.global_sum)
        return self.__class__(t.sum(dim=dim, keepdim=keepdim) for t in self)

    def prod(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Self:
        return self.__class__(_prod(t, dim, keepdim) for t in self)

    def std(self, dim: _Dim = None, unbiased: bool = True, keepdim: bool = False) -> Self | Any:
        """Standard deviation of every tensor, along ``dim``, or of all elements (``dim='global'``)."""
        if dim == "global":
            return self._global_fn(keepdim, self.global_std, unbiased=unbiased)
        return self.__class__(t.std(dim=dim, unbiased=unbiased, keepdim=keepdim) for t in self)

    def var(self, dim: _Dim = None, unbiased: bool = True, keepdim: bool = False) -> Self | Any:
        """Variance of every tensor, along ``dim``, or of all elements (``dim='global'``)."""
        if dim == "global":
            return self._global_fn(keepdim, self.global_var, unbiased=unbiased)
        return self.__class__(t.var(dim=dim, unbiased=unbiased, keepdim=keepdim) for t in self)

    def median(self, dim: int | None = None, keepdim: bool = False) -> Self:
        """Median (the lower one for an even count, like torch) of every tensor or along ``dim`` (values only)."""
        if dim is None:
            return self.__class__(t.median().reshape([1] * t.ndim) if keepdim else t.median() for t in self)
        return self.__class__(t.median(dim=dim, keepdim=keepdim).values for t in self)

    def quantile(
        self, q: float | Tensor, dim: int | None = None, keepdim: bool = False, *, interpolation: str = "linear"
    ) -> Self:
        return self.__class__(t.quantile(q, dim=dim, keepdim=keepdim, interpolation=interpolation) for t in self)

    def _reduce_for_broadcast(
        self, name: Literal["min", "max", "mean", "std"], dim: _Dim, *operands: Any
    ) -> Tensor | TensorList:
        """A reduction that broadcasts back against self: a 0-d tensor for ``dim='global'``, else a TensorList of
        ``keepdim=True`` reductions. A global result is repeated into a TensorList when any of ``operands`` is a
        per-tensor sequence it will be combined with."""
        if dim != "global":
            return getattr(self, name)(dim=dim, keepdim=True)
        value = {"min": self.global_min, "max": self.global_max, "mean": self.global_mean, "std": self.global_std}[
            name
        ]()
        if builtins.any(_is_seq(o) for o in operands):
            return self.__class__([value] * len(self))
        return value

    # ======================================================================= clamping and elementwise binary ops
    def clamp_min(self, other: ScalarOrSeq) -> Self:
        return self._foreach_apply(torch._foreach_clamp_min, _operand(other, len(self)))

    def clamp_min_(self, other: ScalarOrSeq) -> Self:
        return self._foreach_apply_(torch._foreach_clamp_min_, _operand(other, len(self)))

    def clamp_max(self, other: ScalarOrSeq) -> Self:
        return self._foreach_apply(torch._foreach_clamp_max, _operand(other, len(self)))

    def clamp_max_(self, other: ScalarOrSeq) -> Self:
        return self._foreach_apply_(torch._foreach_clamp_max_, _operand(other, len(self)))

    def clamp(self, min: _Scalar | _STSeq | Tensor | None = None, max: _Scalar | _STSeq | Tensor | None = None) -> Self:
        """Clamps to ``[min, max]`` (either may be None); ``max`` wins where ``min > max``, like ``torch.clamp``."""
        if min is None and max is None:
            return self.clone()
        out = self.clamp_min(min) if min is not None else self.clamp_max(max)  # type: ignore[arg-type]
        if min is not None and max is not None:
            out.clamp_max_(max)
        return out

    def clamp_(
        self, min: _Scalar | _STSeq | Tensor | None = None, max: _Scalar | _STSeq | Tensor | None = None
    ) -> Self:
        if min is not None:
            self.clamp_min_(min)
        if max is not None:
            self.clamp_max_(max)
        return self

    clip = clamp
    clip_ = clamp_

    def clamp_magnitude(self, min: _Scalar | _STSeq | None = None, max: _Scalar | _STSeq | None = None) -> Self:
        """Clamps the magnitude ``|x|`` to ``[min, max]`` keeping the sign; zeros count as positive."""
        return self.clone().clamp_magnitude_(min, max)

    def clamp_magnitude_(self, min: _Scalar | _STSeq | None = None, max: _Scalar | _STSeq | None = None) -> Self:
        sign = self.sign().add_(0.5).sign_()  # ±1, with +1 for zeros so that they move up to ``min``
        return self.abs_().clamp_(min, max).mul_(sign)

    def maximum(self, other: _Scalar | _ScalarSeq | _TensorSeq | Tensor) -> Self:
        return self._foreach_apply(torch._foreach_maximum, _operand(other, len(self)))

    def maximum_(self, other: _Scalar | _ScalarSeq | _TensorSeq | Tensor) -> Self:
        return self._foreach_apply_(torch._foreach_maximum_, _operand(other, len(self)))

    def minimum(self, other: _Scalar | _ScalarSeq | _TensorSeq | Tensor) -> Self:
        return self._foreach_apply(torch._foreach_minimum, _operand(other, len(self)))

    def minimum_(self, other: _Scalar | _ScalarSeq | _TensorSeq | Tensor) -> Self:
        return self._foreach_apply_(torch._foreach_minimum_, _operand(other, len(self)))

    def copysign(self, other: ScalarOrSeq) -> Self:
        """Magnitudes of self with the signs of ``other``."""
        return self.zipmap(torch.copysign, other)

    def copysign_(self, other: ScalarOrSeq) -> Self:
        return self.zipmap_inplace_(Tensor.copysign_, other)

    # ======================================================================= lerp, addcmul, addcdiv
    def lerp(self, tensors1: TensorSeq, weight: _Scalar | _ScalarSeq | _TensorSeq | Tensor) -> Self:
        """``self + weight * (tensors1 - self)``; ``weight`` of any operand kind."""
        if _is_scalar_seq(weight) and not _HAS_LERP_SCALARLIST:
            return self.lerp_compat(tensors1, weight)
        return self._foreach_apply(torch._foreach_lerp, _tensors(tensors1, len(self)), _operand(weight, len(self)))

    def lerp_(self, tensors1: TensorSeq, weight: _Scalar | _ScalarSeq | _TensorSeq | Tensor) -> Self:
        if _is_scalar_seq(weight) and not _HAS_LERP_SCALARLIST:
            return self.lerp_compat_(tensors1, weight)
        return self._foreach_apply_(torch._foreach_lerp_, _tensors(tensors1, len(self)), _operand(weight, len(self)))

    def lerp_compat(self, tensors1: TensorSeq, weight: ScalarOrSeq) -> Self:
        """``self + weight * (tensors1 - self)`` built from sub/mul/add, for PyTorch versions whose
        ``_foreach_lerp`` lacks the scalar-list overload."""
        end = self.__class__(_tensors(tensors1, len(self)))
        return end.sub(self).mul_(weight).add_(self)

    def lerp_compat_(self, tensors1: TensorSeq, weight: ScalarOrSeq) -> Self:
        end = self.__class__(_tensors(tensors1, len(self)))
        return self.add_(end.sub(self).mul_(weight))

    def _addc_args(self, tensors1: Any, tensor2: Any, value: Any) -> tuple[Any, ...]:
        """Arguments of ``_foreach_addcmul/addcdiv``; a tensor ``value`` becomes the packed 1-D ``.Tensor``
        overload argument with one value per tensor."""
        n = len(self)
        if isinstance(value, Tensor):
            value = value.reshape(1).expand(n).contiguous() if value.ndim == 0 else value
        elif _is_tensor_seq(value):
            value = _stack(value).reshape(-1)
        return _tensors(tensors1, n), _tensors(tensor2, n), value

    def addcmul(self, tensors1: TensorSeq, tensor2: TensorSeq, value: _Scalar | Sequence[_Scalar] | Tensor = 1) -> Self:
        """``self + value * tensors1 * tensor2``."""
        return self._foreach_apply(torch._foreach_addcmul, *self._addc_args(tensors1, tensor2, value))

    def addcmul_(
        self, tensors1: TensorSeq, tensor2: TensorSeq, value: _Scalar | Sequence[_Scalar] | Tensor = 1
    ) -> Self:
        return self._foreach_apply_(torch._foreach_addcmul_, *self._addc_args(tensors1, tensor2, value))

    def addcdiv(self, tensors1: TensorSeq, tensor2: TensorSeq, value: _Scalar | Sequence[_Scalar] | Tensor = 1) -> Self:
        """``self + value * tensors1 / tensor2``."""
        return self._foreach_apply(torch._foreach_addcdiv, *self._addc_args(tensors1, tensor2, value))

    def addcdiv_(
        self, tensors1: TensorSeq, tensor2: TensorSeq, value: _Scalar | Sequence[_Scalar] | Tensor = 1
    ) -> Self:
        return self._foreach_apply_(torch._foreach_addcdiv_, *self._addc_args(tensors1, tensor2, value))

    # ======================================================================= shape and misc
    def squeeze(self, dim: int | None = None) -> Self:
        return self.__class__(t.squeeze() if dim is None else t.squeeze(dim) for t in self)

    def squeeze_(self, dim: int | None = None) -> Self:
        for t in self:
            if dim is None:
                t.squeeze_()
            else:
                t.squeeze_(dim)
        return self

    def conj(self) -> Self:
        return self.map(torch.conj)

    def nan_to_num(
        self,
        nan: float | _ScalarSeq | None = None,
        posinf: float | _ScalarSeq | None = None,
        neginf: float | _ScalarSeq | None = None,
    ) -> Self:
        return self.zipmap_args(torch.nan_to_num, nan, posinf, neginf)

    def nan_to_num_(
        self,
        nan: float | _ScalarSeq | None = None,
        posinf: float | _ScalarSeq | None = None,
        neginf: float | _ScalarSeq | None = None,
    ) -> Self:
        return self.zipmap_args_inplace_(torch.nan_to_num_, nan, posinf, neginf)

    def ravel(self) -> Self:
        """Every tensor flattened to 1-D (a view where possible, see ``torch.ravel``)."""
        return self.map(torch.ravel)

    def view_flat(self) -> Self:
        """Every tensor as a flat view (``t.view(-1)``; raises for tensors that cannot be viewed flat)."""
        return self.__class__(t.view(-1) for t in self)

    def any(self) -> Self:
        return self.map(torch.any)

    def all(self) -> Self:
        return self.map(torch.all)

    def isfinite(self) -> Self:
        return self.map(torch.isfinite)

    def fill(self, value: ScalarOrSeq) -> Self:
        """New tensors shaped like these, filled with ``value`` (number or 0-d tensor, one or one per tensor)."""
        return self.zipmap(lambda t, v: torch.empty_like(t).fill_(v), value)

    def fill_(self, value: ScalarOrSeq) -> Self:
        return self.zipmap_inplace_(Tensor.fill_, value)

    # ======================================================================= norms and scaling
    def graft(
        self,
        magnitude: _TensorSeq,
        tensorwise: bool = False,
        ord: Metrics = 2,
        eps: float = 1e-6,
        strength: float | _ScalarSeq = 1,
    ) -> Self:
        """Self rescaled to the norm (``ord``, see :data:`Metrics`) of ``magnitude``: the direction of self with
        the magnitude of ``magnitude``, globally or per tensor (``tensorwise``).

        ``strength`` interpolates the target norm between the norm of self (0) and that of ``magnitude`` (1);
        the norm of self is clamped below by ``eps`` before dividing by it."""
        return self * self._graft_factor(magnitude, tensorwise, ord, eps, strength)

    def graft_(
        self,
        magnitude: _TensorSeq,
        tensorwise: bool = False,
        ord: Metrics = 2,
        eps: float = 1e-6,
        strength: float | _ScalarSeq = 1,
    ) -> Self:
        return self.mul_(self._graft_factor(magnitude, tensorwise, ord, eps, strength))

    def _graft_factor(self, magnitude: Any, tensorwise: bool, ord: Metrics, eps: float, strength: Any) -> Any:
        mag = as_tensorlist(magnitude)
        if tensorwise:
            norm_self: Any = self.metric(ord)
            norm_mag: Any = mag.metric(ord)
        else:
            norm_self = self.global_metric(ord)
            norm_mag = mag.global_metric(ord)
            if _is_seq(strength):  # per-tensor strengths of a global norm: one target per tensor
                norm_self = self.__class__([norm_self] * len(self))
                norm_mag = self.__class__([norm_mag] * len(self))
        if generic_ne(strength, 1):
            norm_mag = norm_mag.lerp(norm_self, 1 - maybe_numberlist(strength))
        return norm_mag / norm_self.clamp_min(eps)

    def _get_rescale_coeffs(
        self, min: _Scalar | _ScalarSeq, max: _Scalar | _ScalarSeq, dim: _Dim, eps: float
    ) -> tuple[Any, Any]:
        """``a, b`` such that ``self * a + b`` maps ``[self.min(dim), self.max(dim)]`` onto ``[min, max]``."""
        self_min = self._reduce_for_broadcast("min", dim, min, max)
        self_max = self._reduce_for_broadcast("max", dim, min, max)
        a = (self_max - self_min).add_(eps).reciprocal_().mul_(maybe_numberlist(max) - maybe_numberlist(min))
        b = (self_min * a).neg_().add_(min)
        return a, b

    def rescale(
        self, min: _Scalar | _ScalarSeq | None, max: _Scalar | _ScalarSeq | None, dim: _Dim = None, eps: float = 0.0
    ) -> Self:
        """Linearly maps the values to the range ``[min, max]``: each tensor (``dim=None``), along ``dim``, or all
        tensors together (``dim='global'``). With only one bound the values are shifted to it instead.
        ``eps`` is added to the current range before dividing by it."""
        return self.clone().rescale_(min, max, dim=dim, eps=eps)

    def rescale_(
        self, min: _Scalar | _ScalarSeq | None, max: _Scalar | _ScalarSeq | None, dim: _Dim = None, eps: float = 0.0
    ) -> Self:
        if min is None and max is None:
            return self
        if max is None:
            return self.sub_(self._reduce_for_broadcast("min", dim, min) - maybe_numberlist(min))
        if min is None:
            return self.sub_(self._reduce_for_broadcast("max", dim, max) - maybe_numberlist(max))
        a, b = self._get_rescale_coeffs(min=min, max=max, dim=dim, eps=eps)
        return self.mul_(a).add_(b)

    def rescale_to_01(self, dim: _Dim = None, eps: float = 0) -> Self:
        """:meth:`rescale` to ``[0, 1]``."""
        return self.rescale(0, 1, dim=dim, eps=eps)

    def rescale_to_01_(self, dim: _Dim = None, eps: float = 0) -> Self:
        return self.rescale_(0, 1, dim=dim, eps=eps)

    def normalize(self, mean: _Scalar | _ScalarSeq | None, var: _Scalar | _ScalarSeq | None, dim: _Dim = None) -> Self:
        """Shifts and scales the values to the given ``mean`` and ``var`` (variance, unbiased estimate): each tensor
        (``dim=None``), along ``dim``, or all tensors together (``dim='global'``). A bound left as None keeps
        the current mean or variance."""
        return self.clone().normalize_(mean, var, dim=dim)

    def normalize_(self, mean: _Scalar | _ScalarSeq | None, var: _Scalar | _ScalarSeq | None, dim: _Dim = None) -> Self:
        if mean is None and var is None:
            return self
        self_mean = self._reduce_for_broadcast("mean", dim)
        self.sub_(self_mean)
        if var is not None:
            std = maybe_numberlist(var) ** 0.5
            self.div_(self._reduce_for_broadcast("std", dim)).mul_(std)
        return self.add_(self_mean if mean is None else mean)

    def znormalize(self, dim: _Dim = None, eps: float = 0) -> Self:
        """``(x - mean) / (std + eps)`` for each tensor (``dim=None``), along ``dim``, or globally."""
        return self.clone().znormalize_(dim=dim, eps=eps)

    def znormalize_(self, dim: _Dim = None, eps: float = 0) -> Self:
        self_mean = self._reduce_for_broadcast("mean", dim)
        self_std = self._reduce_for_broadcast("std", dim)
        return self.sub_(self_mean).div_(self_std + eps)

    def _clip_multiplier(
        self,
        min: _Scalar | _ScalarSeq | None = None,
        max: _Scalar | _ScalarSeq | None = None,
        tensorwise: bool = True,
        ord: Metrics = 2,
    ) -> Any:
        """Factor that brings the norm of self (per tensor if ``tensorwise``) into ``[min, max]``: a 0-d tensor or
        a TensorList of 0-d tensors. It is 1 where the norm is zero (a zero vector can not be scaled up)."""
        if tensorwise:
            norm: Any = self.metric(ord)
        else:
            norm = self.global_metric(ord)
            if _is_seq(min) or _is_seq(max):
                norm = self.__class__([norm] * len(self))
        norm = norm.masked_fill(norm == 0, 1)
        mul: Any = 1
        if min is not None:
            mul = (maybe_numberlist(min) / norm).clamp_min(1)
        if max is not None:
            mul = mul * (maybe_numberlist(max) / norm).clamp_max(1)
        return mul

    def clip_norm(
        self,
        min: _Scalar | _ScalarSeq | None = None,
        max: _Scalar | _ScalarSeq | None = None,
        tensorwise: bool = True,
        ord: Metrics = 2,
    ) -> Self:
        """Scales self so that its norm (``ord``, see :data:`Metrics`; per tensor if ``tensorwise``) is within
        ``[min, max]``; either bound may be None."""
        if min is None and max is None:
            return self.clone()
        return self * self._clip_multiplier(min, max, tensorwise, ord)

    def clip_norm_(
        self,
        min: _Scalar | _ScalarSeq | None = None,
        max: _Scalar | _ScalarSeq | None = None,
        tensorwise: bool = True,
        ord: Metrics = 2,
    ) -> Self:
        if min is None and max is None:
            return self
        return self.mul_(self._clip_multiplier(min, max, tensorwise, ord))

    # ======================================================================= masking and selection
    def where(self, condition: Tensor | _TensorSeq, other: ScalarOrSeq) -> Self:
        """``torch.where(condition, self, other)``: self where ``condition`` is true, ``other`` elsewhere."""
        return self.zipmap_args(lambda t, c, o: torch.where(c, t, o), condition, other)

    def where_(self, condition: Tensor | _TensorSeq, other: Tensor | _TensorSeq | _Scalar) -> Self:
        """In-place :meth:`where`: sets elements where ``condition`` is false to ``other``."""
        return self.zipmap_args_inplace_(_where_, condition, other)

    def masked_fill(self, mask: Tensor | _TensorSeq, fill_value: _Scalar | _ScalarSeq) -> Self:
        """Copies with ``fill_value`` (a scalar or 0-d tensor, one or one per tensor) where ``mask`` is true."""
        return self.zipmap_args(torch.masked_fill, mask, fill_value)

    def masked_fill_(self, mask: Tensor | _TensorSeq, fill_value: _Scalar | _ScalarSeq) -> Self:
        return self.zipmap_args_inplace_(Tensor.masked_fill_, mask, fill_value)

    def select_set_(self, mask: TensorSeq, value: ScalarOrSeq) -> Self:
        """``t[mask] = value`` for every tensor (``mask`` and ``value`` one or one per tensor). A boolean mask with
        a scalar value uses ``masked_fill_``, avoiding the synchronization of boolean indexing."""
        for t, m, v in zip(self, _broadcast(mask, len(self)), _broadcast(value, len(self))):
            if isinstance(m, Tensor) and m.dtype == torch.bool and (not isinstance(v, Tensor) or v.ndim == 0):
                t.masked_fill_(m, v)
            else:
                t[m] = v
        return self

    def masked_set_(self, mask: TensorSeq, value: TensorSeq) -> Self:
        """``t[mask] = value[mask]`` for every tensor (boolean masks are applied with ``torch.where``)."""
        for t, m, v in zip(self, _broadcast(mask, len(self)), _broadcast(value, len(self))):
            if isinstance(m, Tensor) and m.dtype == torch.bool:
                torch.where(m, v, t, out=t)
            else:
                t[m] = v[m]
        return self

    def select(self, idx: Any) -> Self:
        """``t[idx]`` for every tensor. A ``list`` gives one index per tensor; anything else (including a tuple,
        which is a multi-dimensional index as in torch) is used for every tensor."""
        if isinstance(idx, list):
            return self.__class__(t[i] for t, i in zip(self, idx, strict=True))
        return self.__class__(t[idx] for t in self)

    # ======================================================================= products
    def dot(self, other: TensorSeq) -> Tensor:
        """Inner product ``sum(x * y)`` of all tensors treated as one vector (a 0-d tensor; no complex
        conjugation, like ``torch.dot``)."""
        if len(self) == 0:
            return torch.tensor(0.0)
        return self.tensorwise_dot(other).global_sum()

    def tensorwise_dot(self, other: TensorSeq) -> Self:
        """Inner product of every pair of tensors, a list of 0-d tensors."""
        out = []
        for t, o in zip(self, _tensors(other, len(self)), strict=True):
            if t.shape == o.shape and t.dtype == o.dtype and (t.is_floating_point() or t.is_complex()):
                out.append(torch.dot(t.reshape(-1), o.reshape(-1)))
            else:  # broadcasting or type promotion
                out.append((t * o).sum())
        return self.__class__(out)

    def swap_tensors(self, other: TensorSeq) -> Self:
        """Swaps every tensor object with the matching one in ``other`` (``torch.utils.swap_tensors``)."""
        for t, o in zip(self, other, strict=True):
            torch.utils.swap_tensors(t, o)
        return self

    def unbind_channels(self, dim: int = 0) -> Self:
        """New list where tensors with 2 or more dimensions are split into their slices along ``dim``."""
        return self.__class__(ch for t in self for ch in (t.unbind(dim) if t.ndim >= 2 else (t,)))

    # ======================================================================= flat indexing
    def _locate(self, idx: int) -> tuple[Tensor, tuple[int, ...]]:
        """Tensor and multi-index of position ``idx`` of the concatenation of all tensors (negative counts from
        the end)."""
        total = self.global_numel()
        if idx < 0:
            idx += total
        if not 0 <= idx < total:
            raise IndexError(f"flat index out of range for a TensorList with {total} elements")
        for t in self:
            n = t.numel()
            if idx < n:
                return t, _unravel(idx, t.shape)
            idx -= n
        raise AssertionError("unreachable")

    def flatiter(self) -> Generator[Tensor]:
        """Yields every element of every tensor (0-d views, in :meth:`to_vec` order)."""
        for t in self:
            if t.is_contiguous():
                yield from t.view(-1)
            else:
                for i in range(t.numel()):
                    yield t[_unravel(i, t.shape)]

    def flat_get(self, idx: int) -> Tensor:
        """Element ``idx`` of the concatenation of all tensors (a 0-d view)."""
        t, index = self._locate(idx)
        return t[index]

    def flat_set_(self, idx: int, value: Any) -> Self:
        """Sets element ``idx`` of the concatenation of all tensors to ``value``."""
        t, index = self._locate(idx)
        t[index] = value
        return self

    def flat_set_lambda_(self, idx: int, fn: Callable[[Tensor], Any]) -> Self:
        """Sets element ``idx`` of the concatenation of all tensors to ``fn(current element)``."""
        t, index = self._locate(idx)
        t[index] = fn(t[index])
        return self


def as_tensorlist(x: Any) -> TensorList:
    """``x`` itself if it is a TensorList, ``TensorList([x])`` for a single tensor, else ``TensorList(x)``."""
    if isinstance(x, TensorList):
        return x
    if isinstance(x, Tensor):
        return TensorList([x])
    return TensorList(x)


# =========================================================================== generic functions
# These accept a tensor or a TensorList (plain lists/tuples of tensors are converted) so that one
# implementation of an algorithm works with both.
_TL = Tensor | TensorList


def _tl(x: Any) -> Any:
    """A plain list/tuple of tensors as a TensorList; anything else unchanged."""
    return TensorList(x) if _is_tensor_seq(x) and not isinstance(x, TensorList) else x


def generic_is_tensorlist(x: Any) -> bool:
    return isinstance(x, TensorList)


def generic_vector_norm(x: _TL | Sequence[Tensor], ord: float = 2) -> Tensor:
    """Vector p-norm of a tensor, or of all tensors of a TensorList as one vector."""
    if isinstance(x, Tensor):
        return torch.linalg.vector_norm(x, ord)
    return _tl(x).global_vector_norm(ord)


@overload
def generic_zeros_like(x: Tensor) -> Tensor: ...
@overload
def generic_zeros_like(x: TensorList) -> TensorList: ...
def generic_zeros_like(x: _TL) -> _TL:
    return torch.zeros_like(x) if isinstance(x, Tensor) else _tl(x).zeros_like()


@overload
def generic_ones_like(x: Tensor) -> Tensor: ...
@overload
def generic_ones_like(x: TensorList) -> TensorList: ...
def generic_ones_like(x: _TL) -> _TL:
    return torch.ones_like(x) if isinstance(x, Tensor) else _tl(x).ones_like()


@overload
def generic_full_like(x: Tensor, fill_value: Any) -> Tensor: ...
@overload
def generic_full_like(x: TensorList, fill_value: Any) -> TensorList: ...
def generic_full_like(x: _TL, fill_value: Any) -> _TL:
    return torch.full_like(x, fill_value) if isinstance(x, Tensor) else _tl(x).full_like(fill_value)


@overload
def generic_randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor: ...
@overload
def generic_randn_like(x: TensorList, generator: torch.Generator | None = None) -> TensorList: ...
def generic_randn_like(x: _TL, generator: torch.Generator | None = None) -> _TL:
    if isinstance(x, Tensor):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return _tl(x).randn_like(generator=generator)


def generic_numel(x: _TL) -> int:
    return x.numel() if isinstance(x, Tensor) else _tl(x).global_numel()


def generic_finfo(x: _TL) -> torch.finfo:
    """``torch.finfo`` of the dtype of a tensor or of the first tensor of a list (the default dtype if empty)."""
    if isinstance(x, Tensor):
        return torch.finfo(x.dtype)
    return torch.finfo(x[0].dtype if len(x) > 0 else torch.get_default_dtype())


def generic_finfo_eps(x: _TL) -> float:
    return generic_finfo(x).eps


def generic_finfo_tiny(x: _TL) -> float:
    return generic_finfo(x).tiny


def generic_eq(x: Any, y: Any) -> bool:
    """Python-bool equality of numbers, sequences of numbers (all elements equal) or tensors (all elements
    equal; this synchronizes). A number compared with a sequence is compared with every element."""
    if isinstance(x, TensorList):
        return bool(x.eq(y).global_all())
    if isinstance(y, TensorList):
        return bool(y.eq(x).global_all())
    if isinstance(x, Tensor) or isinstance(y, Tensor):
        return bool(torch.as_tensor(x == y).all())
    if _is_seq(x) and _is_seq(y):
        return len(x) == len(y) and builtins.all(bool(generic_eq(a, b)) for a, b in zip(x, y))
    if _is_seq(x):
        return builtins.all(generic_eq(a, y) for a in x)
    if _is_seq(y):
        return builtins.all(generic_eq(x, b) for b in y)
    return bool(x == y)


def generic_ne(x: Any, y: Any) -> bool:
    """``not generic_eq(x, y)``, except that tensors count as different without being inspected (no device
    synchronization): this is what the ``lazy_*`` methods need to skip identity operands."""
    if isinstance(x, Tensor) or isinstance(y, Tensor) or _is_tensor_seq(x) or _is_tensor_seq(y):
        return True
    return not generic_eq(x, y)


def generic_sum(x: _TL) -> Tensor:
    return x.sum() if isinstance(x, Tensor) else _tl(x).global_sum()


def generic_max(x: _TL) -> Tensor:
    return x.max() if isinstance(x, Tensor) else _tl(x).global_max()


def generic_min(x: _TL) -> Tensor:
    return x.min() if isinstance(x, Tensor) else _tl(x).global_min()


def generic_clamp(x: Any, min: Any = None, max: Any = None) -> Any:
    """Clamp of a tensor, TensorList, number, or list/tuple of numbers (returned as the same class)."""
    if isinstance(x, (Tensor, TensorList)):
        return x.clamp(min, max)
    if _is_tensor_seq(x):
        return TensorList(x).clamp(min, max)
    if isinstance(x, NumberList):
        return x.clamp(min, max)
    if _is_seq(x):
        return type(x)(NumberList(x).clamp(min, max))
    if min is not None and x < min:
        x = min
    if max is not None and x > max:
        x = max
    return x


def generic_add(x: Any, y: Any, alpha: _Scalar = 1) -> Any:
    """``x + alpha * y`` for tensors, TensorLists (lists of tensors are converted) or numbers."""
    x = _tl(x)
    if isinstance(x, (Tensor, TensorList)):
        return x.add(y, alpha=alpha)
    return x + alpha * y if alpha != 1 else x + y


def generic_sub(x: Any, y: Any, alpha: _Scalar = 1) -> Any:
    """``x - alpha * y`` for tensors, TensorLists (lists of tensors are converted) or numbers."""
    x = _tl(x)
    if isinstance(x, (Tensor, TensorList)):
        return x.sub(y, alpha=alpha)
    return x - alpha * y if alpha != 1 else x - y


def generic_mul(x: Any, y: Any) -> Any:
    """``x * y`` for tensors, TensorLists (lists of tensors are converted) or numbers."""
    return _tl(x) * y


def generic_div(x: Any, y: Any) -> Any:
    """``x / y`` for tensors, TensorLists (lists of tensors are converted) or numbers."""
    return _tl(x) / y
