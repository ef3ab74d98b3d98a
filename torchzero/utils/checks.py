"""Argument validation with messages that name the module, used by constructors."""
from __future__ import annotations

from typing import Any


def check_range(owner: str, name: str, value: Any, low: float | None = None, high: float | None = None,
                low_inclusive: bool = True, high_inclusive: bool = True) -> None:
    """Raises ``ValueError`` naming ``owner`` unless ``value`` is a number within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name} must be a number, got {type(value).__name__}")
    ok = True
    if low is not None:
        ok &= value >= low if low_inclusive else value > low
    if high is not None:
        ok &= value <= high if high_inclusive else value < high
    if not ok:
        lo = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low}"
        hi = "inf)" if high is None else f"{high}" + ("]" if high_inclusive else ")")
        raise ValueError(f"{owner}: {name} must be in {lo}, {hi}, got {value}")


def check_non_negative(owner: str, name: str, value: Any) -> None:
    check_range(owner, name, value, low=0)


def check_positive(owner: str, name: str, value: Any) -> None:
    check_range(owner, name, value, low=0, low_inclusive=False)


def check_choice(owner: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {choices}, got {value!r}")


def check_int(owner: str, name: str, value: Any, low: int = 1) -> None:
    """Raises ``TypeError``/``ValueError`` naming ``owner`` unless ``value`` is an int ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{owner}: {name} must be >= {low}, got {value}")


def check_bool(owner: str, name: str, value: Any) -> None:
    """Raises ``TypeError`` naming ``owner`` unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be a bool, got {type(value).__name__}")
