"""Definition of mean (torch.mean(input, dim, keepdim)): the average over some axes.

`dim` is an int or a sequence of ints, negatives counting from the end; an empty sequence (or
None) reduces every axis, as torch does. The attribute keeps the user's dims; `reduced_axes`
resolves them against the input's rank.
"""
from __future__ import annotations

from typing import Any

from .args import is_int
from .attributes import ints
from .errors import ConvcError
from .registry import AttrSchema, OpDef, register
from .types import TensorType


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be a bool"


def _normalize_mean(dim: Any, keepdim: Any = False) -> dict[str, Any]:
    if dim is None:
        dims: tuple[int, ...] = ()
    elif is_int(dim):
        dims = (int(dim),)
    elif isinstance(dim, (tuple, list)) and all(is_int(d) for d in dim):
        dims = tuple(int(d) for d in dim)
    else:
        raise TypeError(f"mean: dim={dim!r} must be an int or a tuple of ints")
    if not isinstance(keepdim, bool):
        raise TypeError(f"mean: keepdim={keepdim!r} must be a bool")
    return {"dim": dims, "keepdim": keepdim}


def reduced_axes(dims: tuple[int, ...], rank: int) -> tuple[int, ...]:
    """The reduced axes of a rank-`rank` input, sorted: every axis for no dims; ConvcError for a
    dim out of range or named twice."""
    if not dims:
        return tuple(range(rank))
    low, high = -max(rank, 1), max(rank, 1) - 1  # a 0-d input takes dim 0 or -1, as torch does
    axes = []
    for dim in dims:
        if not low <= dim <= high:
            raise ConvcError(f"mean: dim={dim} is out of range for a {rank}-D input (expected {low} to {high})")
        axis = dim % max(rank, 1)
        if axis in axes:
            raise ConvcError(f"mean: dim {axis} appears more than once in dim={list(dims)}")
        axes.append(axis)
    return tuple(sorted(a for a in axes if a < rank))


def _infer_mean(types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    x = types[0]
    axes = reduced_axes(tuple(attrs["dim"]), x.rank)
    if attrs["keepdim"]:
        shape = tuple(1 if axis in axes else size for axis, size in enumerate(x.shape))
    else:
        shape = tuple(size for axis, size in enumerate(x.shape) if axis not in axes)
    return TensorType(shape, x.dtype)


register(OpDef("mean", ("input",), normalize=_normalize_mean, infer=_infer_mean,
               attributes=AttrSchema({"dim": ints(), "keepdim": _flag}),
               flops=lambda types, out: 2 * types[0].size))
