"""Definitions of the layout ops (torch semantics): transpose, permute, reshape, flatten, squeeze,
unsqueeze, slice and cat (split is traced as slices, see convc.ops.split).

Their traced attributes keep the user's dims (negative ones included), reshape's -1 and slice's
unclamped bounds; canonicalization wraps the dims, resolves the -1 and clamps the bounds as torch
does, so the optimized IR shows what the kernel does. Each op with `view` set can share its
operand's memory where the result is a contiguous run of the operand's elements in order (reshape,
flatten, squeeze and unsqueeze always; a slice of the outermost non-unit axis with step 1; a
permutation that moves only unit axes): the memory plan makes such a node a view, without kernel
or copy; elsewhere (a graph output, an eager call) its copy kernel runs.
"""
from __future__ import annotations

import math
import sys
from typing import Any

from .args import as_int, is_int
from .attributes import integer, ints
from .errors import ConvcError
from .registry import AttrSchema, OpDef, register, same_dtype
from .symbolic import Size
from .types import TensorType

Attrs = dict[str, Any]
END = sys.maxsize  # slice's end when the user gives None, as torch's


def wrap_dim(op: str, name: str, dim: int, rank: int, positions: int | None = None) -> int:
    """torch's dim wrapping: -p <= dim < p for p `positions` (the rank, 1 for a 0-D tensor), made
    non-negative."""
    bound = positions if positions is not None else max(rank, 1)
    if not -bound <= dim < bound:
        raise ConvcError(f"{op}: {name}={dim} is out of range for a {rank}-D input "
                         f"(expected to be in range of [{-bound}, {bound - 1}])")
    return dim % bound


def any_int(value: Any) -> str | None:
    """An int of either sign (a dim, a bound)."""
    return None if is_int(value) else "must be an int"


def _dims(op: str, name: str, value: Any) -> tuple[int, ...]:
    if is_int(value):
        return (int(value),)
    if not isinstance(value, (tuple, list)) or not all(is_int(v) for v in value):
        raise TypeError(f"{op}: {name}={value!r} must be an int or a tuple of ints")
    return tuple(int(v) for v in value)


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a C-contiguous tensor of `shape`."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _always_a_view(attrs: Attrs, types: list[TensorType], out: TensorType) -> int:
    return 0


# transpose / permute -----------------------------------------------------------------------------
def permutation(op: str, attrs: Attrs, rank: int) -> tuple[int, ...]:
    """The source axis of each result axis of a transpose or permute node."""
    if op == "transpose":
        order = list(range(rank))
        a, b = wrap_dim(op, "dim0", attrs["dim0"], rank), wrap_dim(op, "dim1", attrs["dim1"], rank)
        if rank:
            order[a], order[b] = order[b], order[a]
        return tuple(order)
    dims = attrs["dims"]
    if len(dims) != rank:
        raise ConvcError(f"permute: dims={dims} must order every axis of the {rank}-D input (got {len(dims)} dims)")
    order = tuple(wrap_dim(op, "dims", d, rank) for d in dims)
    if len(set(order)) != rank:
        raise ConvcError(f"permute: dims={dims} repeats a dim; duplicate dims are not allowed")
    return order


def _infer_permutation(op: str, types: list[TensorType], attrs: Attrs) -> TensorType:
    x = types[0]
    return TensorType(tuple(x.shape[a] for a in permutation(op, attrs, x.rank)), x.dtype)


def _permutation_view(op: str, attrs: Attrs, types: list[TensorType], out: TensorType) -> int | None:
    """A view where the axes of size > 1 keep their order."""
    moved = [a for a in permutation(op, attrs, types[0].rank) if types[0].shape[a] != 1]
    return 0 if moved == sorted(moved) else None


def _normalize_transpose(dim0: Any, dim1: Any) -> Attrs:
    return {"dim0": as_int("transpose", "dim0", dim0), "dim1": as_int("transpose", "dim1", dim1)}


def _canonical_transpose(attrs: Attrs, types: list[TensorType]) -> Attrs:
    rank = types[0].rank
    return {"dim0": wrap_dim("transpose", "dim0", attrs["dim0"], rank),
            "dim1": wrap_dim("transpose", "dim1", attrs["dim1"], rank)}


def _normalize_permute(dims: Any) -> Attrs:
    if not isinstance(dims, (tuple, list)) or not all(is_int(d) for d in dims):
        raise TypeError(f"permute: dims={dims!r} must be a tuple of ints")
    return {"dims": tuple(int(d) for d in dims)}


register(OpDef("transpose", ("input",), normalize=_normalize_transpose,
               infer=lambda types, attrs: _infer_permutation("transpose", types, attrs),
               attributes=AttrSchema({"dim0": any_int, "dim1": any_int}),
               canonicalize=_canonical_transpose,
               view=lambda attrs, types, out: _permutation_view("transpose", attrs, types, out)))
register(OpDef("permute", ("input",), normalize=_normalize_permute,
               infer=lambda types, attrs: _infer_permutation("permute", types, attrs),
               attributes=AttrSchema({"dims": ints()}),
               canonicalize=lambda attrs, types: {"dims": permutation("permute", attrs, types[0].rank)},
               view=lambda attrs, types, out: _permutation_view("permute", attrs, types, out)))


# reshape / flatten / squeeze / unsqueeze ---------------------------------------------------------
def _normalize_reshape(shape: Any) -> Attrs:
    shape = _dims("reshape", "shape", shape)
    for index, size in enumerate(shape):
        if size < -1:
            raise ConvcError(f"reshape: shape={shape} has the invalid size {size} at index {index} "
                             f"(sizes are >= 0, or -1 for one inferred size)")
    if shape.count(-1) > 1:
        raise ConvcError(f"reshape: shape={shape} has more than one -1; only one dimension can be inferred")
    return {"shape": shape}


def resolved_shape(shape: tuple[int, ...], x: TensorType) -> tuple[int, ...]:
    """reshape's target shape with its -1 resolved against the input, torch's errors otherwise."""
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if known == 0:
            raise ConvcError(f"reshape: cannot reshape a tensor of {x.size} elements into shape={shape}: "
                             f"the -1 could be any size next to a 0")
        if x.size % known == 0:
            shape = tuple(x.size // known if s == -1 else s for s in shape)
    if math.prod(shape) != x.size or -1 in shape:
        raise ConvcError(f"reshape: shape={shape} is invalid for an input of {x.size} elements (shape {x.shape})")
    return shape


def _canonical_shape(shape: tuple[int, ...], x: TensorType) -> tuple[int, ...]:
    """The resolved shape where it is all ints; the -1 kept where it stands for a symbolic size."""
    resolved = resolved_shape(shape, x)
    return shape if any(isinstance(s, Size) for s in resolved) else resolved


def _infer_reshape(types: list[TensorType], attrs: Attrs) -> TensorType:
    return TensorType(resolved_shape(attrs["shape"], types[0]), types[0].dtype)


def _normalize_flatten(start_dim: Any = 0, end_dim: Any = -1) -> Attrs:
    return {"start_dim": as_int("flatten", "start_dim", start_dim), "end_dim": as_int("flatten", "end_dim", end_dim)}


def _flatten_range(attrs: Attrs, rank: int) -> tuple[int, int]:
    start = wrap_dim("flatten", "start_dim", attrs["start_dim"], rank)
    end = wrap_dim("flatten", "end_dim", attrs["end_dim"], rank)
    if start > end:
        raise ConvcError(f"flatten: start_dim={attrs['start_dim']} cannot come after end_dim={attrs['end_dim']} "
                         f"(for a {rank}-D input)")
    return start, end


def _infer_flatten(types: list[TensorType], attrs: Attrs) -> TensorType:
    x = types[0]
    start, end = _flatten_range(attrs, x.rank)
    if x.rank == 0:
        return TensorType((1,), x.dtype)
    shape = x.shape[:start] + (math.prod(x.shape[start:end + 1]),) + x.shape[end + 1:]
    return TensorType(shape, x.dtype)


def _normalize_squeeze(dim: Any = None) -> Attrs:
    return {} if dim is None else {"dim": _dims("squeeze", "dim", dim)}


def squeezed_axes(attrs: Attrs, x: TensorType) -> tuple[int, ...]:
    """The axes of size 1 that squeeze removes (every one where no dim is given)."""
    if "dim" not in attrs:
        return tuple(a for a, size in enumerate(x.shape) if size == 1)
    axes = [wrap_dim("squeeze", "dim", d, x.rank) for d in attrs["dim"]]
    for axis in set(axes):
        if axes.count(axis) > 1:
            raise ConvcError(f"squeeze: dim={attrs['dim']} names axis {axis} more than once")
    return tuple(a for a in sorted(axes) if x.rank and x.shape[a] == 1)


def _infer_squeeze(types: list[TensorType], attrs: Attrs) -> TensorType:
    x = types[0]
    removed = squeezed_axes(attrs, x)
    return TensorType(tuple(s for a, s in enumerate(x.shape) if a not in removed), x.dtype)


def _infer_unsqueeze(types: list[TensorType], attrs: Attrs) -> TensorType:
    x = types[0]
    axis = wrap_dim("unsqueeze", "dim", attrs["dim"], x.rank, x.rank + 1)
    return TensorType(x.shape[:axis] + (1,) + x.shape[axis:], x.dtype)


register(OpDef("reshape", ("input",), normalize=_normalize_reshape, infer=_infer_reshape,
               attributes=AttrSchema({"shape": ints(-1)}),
               canonicalize=lambda attrs, types: {"shape": _canonical_shape(attrs["shape"], types[0])},
               view=_always_a_view))
register(OpDef("flatten", ("input",), normalize=_normalize_flatten, infer=_infer_flatten,
               attributes=AttrSchema({"start_dim": any_int, "end_dim": any_int}),
               canonicalize=lambda attrs, types: dict(zip(("start_dim", "end_dim"),
                                                          _flatten_range(attrs, types[0].rank))),
               view=_always_a_view))
register(OpDef("squeeze", ("input",), normalize=_normalize_squeeze, infer=_infer_squeeze,
               attributes=AttrSchema(optional={"dim": ints()}),
               canonicalize=lambda attrs, types: {"dim": squeezed_axes(attrs, types[0])},
               view=_always_a_view))
register(OpDef("unsqueeze", ("input",), normalize=lambda dim: {"dim": as_int("unsqueeze", "dim", dim)},
               infer=_infer_unsqueeze, attributes=AttrSchema({"dim": any_int}),
               canonicalize=lambda attrs, types: {"dim": wrap_dim("unsqueeze", "dim", attrs["dim"],
                                                                  types[0].rank, types[0].rank + 1)},
               view=_always_a_view))


# slice -------------------------------------------------------------------------------------------
def _normalize_slice(dim: Any, start: Any = None, end: Any = None, step: Any = 1) -> Attrs:
    step = as_int("slice", "step", step)
    if step < 1:
        raise ConvcError(f"slice: step={step} must be positive")
    return {"dim": as_int("slice", "dim", dim), "start": 0 if start is None else as_int("slice", "start", start),
            "end": END if end is None else as_int("slice", "end", end), "step": step}


def slice_bounds(attrs: Attrs, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(axis, start, step, length) of a slice on `shape`: negative bounds count from the end, then
    both are clamped to the axis (an end before the start gives an empty slice), as torch does."""
    if not shape:
        raise ConvcError("slice: cannot be applied to a 0-D tensor")
    axis = wrap_dim("slice", "dim", attrs["dim"], len(shape))
    size, start, end, step = shape[axis], attrs["start"], attrs["end"], attrs["step"]
    start, end = start + size if start < 0 else start, end + size if end < 0 else end
    start = min(max(start, 0), size)
    end = min(max(end, start), size)
    return axis, start, step, -(-(end - start) // step)


def _infer_slice(types: list[TensorType], attrs: Attrs) -> TensorType:
    x = types[0]
    axis, _, _, length = slice_bounds(attrs, x.shape)
    return TensorType(x.shape[:axis] + (length,) + x.shape[axis + 1:], x.dtype)


def _canonical_slice(attrs: Attrs, types: list[TensorType]) -> Attrs:
    axis, start, step, length = slice_bounds(attrs, types[0].shape)
    return {"dim": axis, "start": start, "end": start + (length - 1) * step + 1 if length else start, "step": step}


def _slice_view(attrs: Attrs, types: list[TensorType], out: TensorType) -> int | None:
    """A view where the result is one run of the input: no axis of size > 1 before the sliced one
    (or the whole axis taken), and consecutive elements along it (step 1, or one taken)."""
    shape = types[0].shape
    axis, start, step, length = slice_bounds(attrs, shape)
    whole = start == 0 and length == shape[axis] and (step == 1 or length <= 1)
    if math.prod(shape[:axis]) > 1 and not whole:
        return None
    if step > 1 and length > 1:
        return None
    return start * math.prod(shape[axis + 1:]) if length else 0


register(OpDef("slice", ("input",), normalize=_normalize_slice, infer=_infer_slice,
               attributes=AttrSchema({"dim": any_int, "start": any_int, "end": any_int, "step": integer(1)}),
               canonicalize=_canonical_slice, view=_slice_view))


# cat ---------------------------------------------------------------------------------------------
def cat_operands(types: list[TensorType]) -> list[int]:
    """The operands cat joins: torch skips 1-D empty tensors (shape (0,)) next to others."""
    kept = [i for i, t in enumerate(types) if t.shape != (0,)]
    return kept or [0]


def cat_axis(attrs: Attrs, types: list[TensorType]) -> int:
    """The joined axis, non-negative, after the checks of torch.cat."""
    for index, t in enumerate(types):
        if t.rank == 0:
            raise ConvcError(f"cat: tensors[{index}] is 0-D (shape ()); a zero-dimensional tensor cannot be "
                             f"concatenated")
    kept = cat_operands(types)
    if len(kept) == 1 and types[kept[0]].shape == (0,):
        return 0
    first = types[kept[0]]
    axis = wrap_dim("cat", "dim", attrs["dim"], first.rank)
    for index in kept[1:]:
        t = types[index]
        if t.rank != first.rank:
            raise ConvcError(f"cat: tensors must have the same number of dimensions: tensors[{kept[0]}] has "
                             f"shape {first.shape}, tensors[{index}] has shape {t.shape}")
        for a, (expected, got) in enumerate(zip(first.shape, t.shape)):
            if a != axis and expected != got:
                raise ConvcError(f"cat: sizes of tensors must match except in dimension {axis}: expected size "
                                 f"{expected} but got size {got} on axis {a} for tensors[{index}] (shape {t.shape})")
    return axis


def _infer_cat(types: list[TensorType], attrs: Attrs) -> TensorType:
    dtype = same_dtype("cat", types, tuple(f"tensors[{i}]" for i in range(len(types))))
    axis = cat_axis(attrs, types)
    kept = [types[i] for i in cat_operands(types)]
    shape = list(kept[0].shape)
    shape[axis] = sum(t.shape[axis] for t in kept)
    return TensorType(tuple(shape), dtype)


register(OpDef("cat", ("tensors",), normalize=lambda dim=0: {"dim": as_int("cat", "dim", dim)}, infer=_infer_cat,
               attributes=AttrSchema({"dim": any_int}), variadic=True,
               canonicalize=lambda attrs, types: {"dim": cat_axis(attrs, types)}))
