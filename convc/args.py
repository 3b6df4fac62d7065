"""Normalization and validation of user arguments shared by the op definitions."""
from __future__ import annotations

import numbers
from typing import Any, Sequence

from .errors import ConvcError


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def as_int(op: str, name: str, value: Any) -> int:
    """One integer argument; TypeError for anything that is not an integer."""
    if not is_int(value):
        raise TypeError(f"{op}: {name}={value!r} must be an int, got {type(value).__name__}")
    return int(value)


def int_tuple(op: str, name: str, value: Any, rank: int, *, minimum: int | None = None,
              allow_single: bool = True) -> tuple[int, ...]:
    """An int, a 1-tuple or a rank-tuple of ints, expanded to a rank-tuple and range-checked."""
    if is_int(value):
        items = (int(value),) * rank
    elif isinstance(value, (tuple, list)):
        if not all(is_int(v) for v in value):
            raise TypeError(f"{op}: {name}={value!r} must hold only ints")
        if len(value) == rank:
            items = tuple(int(v) for v in value)
        elif len(value) == 1 and allow_single:
            items = (int(value[0]),) * rank
        else:
            expected = f"1 or {rank}" if allow_single and rank != 1 else f"{rank}"
            raise ConvcError(f"{op}: {name}={tuple(value)!r} must have {expected} elements, got {len(value)}")
    else:
        raise TypeError(f"{op}: {name}={value!r} must be an int or a tuple of ints, got {type(value).__name__}")
    if minimum is not None and any(v < minimum for v in items):
        rule = "positive" if minimum == 1 else f">= {minimum}"
        raise ConvcError(f"{op}: {name}={value!r} must be {rule}")
    return items


def one_of(op: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """A string option that must be one of choices."""
    if not isinstance(value, str):
        raise TypeError(f"{op}: {name}={value!r} must be a string, one of {list(choices)}")
    if value not in choices:
        raise ConvcError(f"{op}: {name}={value!r} is not supported; expected one of {list(choices)}")
    return value


def shape_tuple(op: str, name: str, value: Any) -> tuple[int, ...]:
    """A shape: a sequence (or 1-D array) of non-negative ints."""
    if is_int(value):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{op}: {name}={value!r} must be a sequence of ints") from None
    if not all(is_int(v) for v in items):
        raise TypeError(f"{op}: {name}={value!r} must hold only ints")
    if any(v < 0 for v in items):
        raise ConvcError(f"{op}: {name}={tuple(int(v) for v in items)} must not hold negative sizes")
    return tuple(int(v) for v in items)
