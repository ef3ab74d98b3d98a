"""``NumberList``: a list of Python numbers with elementwise arithmetic.

Per-parameter settings (learning rates, betas, weight decays...) are read once per step as a
``NumberList`` with one number per parameter and passed straight to :class:`~torchzero.utils.tensorlist.TensorList`
methods, which hand them to the ``ScalarList`` overloads of the ``torch._foreach_*`` operations.
A NumPy array cannot be used for this because foreach operations do not accept it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from typing_extensions import Self

__all__ = ["NumberList", "maybe_numberlist"]


def _clamp(x: Any, min: Any = None, max: Any = None) -> Any:
    """Clamps one number to ``[min, max]`` (either bound may be None); like ``torch.clamp``, the result is
    ``max`` when ``min > max``."""
    if min is not None and x < min:
        x = min
    if max is not None and x > max:
        x = max
    return x


def _defer(other: Any) -> bool:
    """True when ``other`` is a TensorList: a binary operator then returns ``NotImplemented`` so that
    Python calls the TensorList's reflected operator, making ``numbers * tensors`` a TensorList."""
    if not isinstance(other, list):
        return False
    from torchzero.utils.tensorlist import TensorList  # local import: tensorlist imports this module

    return isinstance(other, TensorList)


class NumberList(list):
    """A ``list`` of numbers with elementwise arithmetic, comparisons and logical operators.

    The other operand of every operation is either a single value, applied to every element, or a
    list/tuple of the same length, zipped with this list (a length mismatch raises ``ValueError``).
    Results are new ``NumberList`` objects; nothing is done in place.

    Notes:
        - ``+`` and ``*`` are elementwise, **not** list concatenation/repetition, and ``==``, ``<``...
          return a ``NumberList`` of bools.
        - ``~``, ``&``, ``|`` and ``^`` are *logical* not/and/or/xor (``~True`` is ``False``, not ``-2``).
        - ``bool(numberlist)`` is ``False`` for an empty list and raises ``RuntimeError`` otherwise, because
          with elementwise ``==`` the usual list truthiness would be misleading (``if a == b:`` would
          always be true). Use ``len(x) > 0``, ``all(x)`` or ``any(x)``.
        - A binary operator with a :class:`~torchzero.utils.tensorlist.TensorList` on the right defers to
          the TensorList, so ``NumberList([1, 2]) * tensors`` is a TensorList.

    Example:
        >>> lrs = NumberList([0.1, 0.01])
        >>> lrs * 2
        NumberList([0.2, 0.02])
        >>> lrs + [1, 2]
        NumberList([1.1, 2.01])
    """

    # ------------------------------------------------------------------ operators
    def __add__(self, other: Any) -> Self:  # type: ignore[override]
        if _defer(other):
            return NotImplemented
        return self.add(other)

    def __radd__(self, other: Any) -> Self:
        return self.zipmap(lambda x, y: y + x, other)

    def __sub__(self, other: Any) -> Self:
        if _defer(other):
            return NotImplemented
        return self.sub(other)

    def __rsub__(self, other: Any) -> Self:
        return self.zipmap(lambda x, y: y - x, other)

    def __mul__(self, other: Any) -> Self:  # type: ignore[override]
        if _defer(other):
            return NotImplemented
        return self.mul(other)

    def __rmul__(self, other: Any) -> Self:  # type: ignore[override]
        return self.zipmap(lambda x, y: y * x, other)

    def __truediv__(self, other: Any) -> Self:
        if _defer(other):
            return NotImplemented
        return self.div(other)

    def __rtruediv__(self, other: Any) -> Self:
        return self.zipmap(lambda x, y: y / x, other)

    def __floordiv__(self, other: Any) -> Self:
        if _defer(other):
            return NotImplemented
        return self.floor_divide(other)

    def __mod__(self, other: Any) -> Self:
        if _defer(other):
            return NotImplemented
        return self.remainder(other)

    def __pow__(self, other: Any) -> Self:
        if _defer(other):
            return NotImplemented
        return self.pow(other)

    def __rpow__(self, other: Any) -> Self:
        return self.rpow(other)

    def __neg__(self) -> Self:
        return self.neg()

    def __eq__(self, other: Any) -> Self:  # type: ignore[override]
        if _defer(other):
            return NotImplemented
        return self.zipmap(operator.eq, other)

    def __ne__(self, other: Any) -> Self:  # type: ignore[override]
        if _defer(other):
            return NotImplemented
        return self.zipmap(operator.ne, other)

    def __lt__(self, other: Any) -> Self:  # type: ignore[override]
        if _defer(other):
            return NotImplemented
        return self.zipmap(operator.lt, other)

    def __le__(self, other: Any) -> Self:  # type: ignore[override]
        if _defer(other):
            return NotImplemented
        return self.zipmap(operator.le, other)

    def __gt__(self, other: Any) -> Self:  # type: ignore[override]
        if _defer(other):
            return NotImplemented
        return self.zipmap(operator.gt, other)

    def __ge__(self, other: Any) -> Self:  # type: ignore[override]
        if _defer(other):
            return NotImplemented
        return self.zipmap(operator.ge, other)

    def __invert__(self) -> Self:
        return self.logical_not()

    def __and__(self, other: Any) -> Self:
        if _defer(other):
            return NotImplemented
        return self.logical_and(other)

    def __or__(self, other: Any) -> Self:
        if _defer(other):
            return NotImplemented
        return self.logical_or(other)

    def __xor__(self, other: Any) -> Self:
        if _defer(other):
            return NotImplemented
        return self.logical_xor(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, like list

    def __bool__(self) -> bool:
        if len(self) == 0:
            return False
        raise RuntimeError(
            f"The truth value of a non-empty {type(self).__name__} is ambiguous (its comparisons are "
            "elementwise). Use len(x) > 0, all(x) or any(x)."
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list.__repr__(self)})"

    # ------------------------------------------------------------------ functional helpers
    def map(self, fn: Callable[..., Any], *args, **kwargs) -> Self:
        """Returns ``NumberList(fn(x, *args, **kwargs) for x in self)``."""
        return self.__class__(fn(x, *args, **kwargs) for x in self)

    def zipmap(self, fn: Callable, other: Any | list | tuple, *args, **kwargs) -> Self:
        """Applies ``fn(x, y, *args, **kwargs)`` for ``x`` in this list and ``y`` the matching element of
        ``other`` if it is a list/tuple (lengths must match), else ``y = other`` for every ``x``."""
        if isinstance(other, (list, tuple)):
            return self.__class__(fn(x, y, *args, **kwargs) for x, y in zip(self, other, strict=True))
        return self.__class__(fn(x, other, *args, **kwargs) for x in self)

    def zipmap_args(self, fn: Callable[..., Any], *others, **kwargs) -> Self:
        """Like :meth:`zipmap` with several operands: ``fn(x, o1, o2, ..., **kwargs)``, where each list/tuple
        operand is zipped and any other value is passed unchanged to every call."""
        n = len(self)
        cols = [o if isinstance(o, (list, tuple)) else [o] * n for o in others]
        return self.__class__(fn(*z, **kwargs) for z in zip(self, *cols, strict=True))

    # ------------------------------------------------------------------ arithmetic
    def add(self, other: Any, alpha: int | float = 1) -> Self:
        """``self + alpha * other``."""
        if alpha == 1:
            return self.zipmap(operator.add, other)
        return self.zipmap(lambda x, y: x + alpha * y, other)

    def sub(self, other: Any, alpha: int | float = 1) -> Self:
        """``self - alpha * other``."""
        if alpha == 1:
            return self.zipmap(operator.sub, other)
        return self.zipmap(lambda x, y: x - alpha * y, other)

    def neg(self) -> Self:
        return self.map(operator.neg)

    def mul(self, other: Any) -> Self:
        return self.zipmap(operator.mul, other)

    def div(self, other: Any) -> Self:
        return self.zipmap(operator.truediv, other)

    def pow(self, exponent: Any) -> Self:
        """``self ** exponent`` with Python's ``**`` (``int ** int`` stays an int)."""
        return self.zipmap(operator.pow, exponent)

    def floor_divide(self, other: Any) -> Self:
        return self.zipmap(operator.floordiv, other)

    def remainder(self, other: Any) -> Self:
        return self.zipmap(operator.mod, other)

    def rpow(self, other: Any) -> Self:
        """``other ** self``."""
        return self.zipmap(lambda x, y: y**x, other)

    # ------------------------------------------------------------------ logic and misc
    def logical_not(self) -> Self:
        return self.map(operator.not_)

    def logical_and(self, other: Any) -> Self:
        return self.zipmap(lambda x, y: bool(x) and bool(y), other)

    def logical_or(self, other: Any) -> Self:
        return self.zipmap(lambda x, y: bool(x) or bool(y), other)

    def logical_xor(self, other: Any) -> Self:
        return self.zipmap(lambda x, y: bool(x) != bool(y), other)

    def fill_none(self, value: Any) -> Self:
        """Replaces ``None`` elements with ``value`` (or the matching element of ``value`` if it is a list/tuple)."""
        return self.zipmap(lambda x, v: v if x is None else x, value)

    def clamp(self, min: Any = None, max: Any = None) -> Self:
        """Clamps every element to ``[min, max]``; bounds may be None, numbers or per-element lists."""
        return self.zipmap_args(_clamp, min, max)

    def clip(self, min: Any = None, max: Any = None) -> Self:
        """Alias of :meth:`clamp`."""
        return self.clamp(min, max)


def maybe_numberlist(x: Any) -> Any:
    """Returns ``x`` as a :class:`NumberList` if it is a list/tuple, otherwise unchanged."""
    if isinstance(x, NumberList):
        return x
    if isinstance(x, (list, tuple)):
        return NumberList(x)
    return x
