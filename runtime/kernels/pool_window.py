"""Kernel emitters for max_pool1d/2d and avg_pool1d/2d, on plain and on channel-blocked tensors.

One loop structure serves both layouts. The outer (parallel) loop runs over output rows (plane,
oh), a plane being one channel (plain) or one block of c channels (blocked); a 1-D pool is a 2-D
one with a single row. The window rows that exist form a range [kh_lo, kh_hi) computed once per
output row. Each row is split at compile time (conv_geometry.Axis.interior) into a left border,
an interior whose windows lie wholly inside the input, and a right border: border outputs take
their range of taps per output, interior outputs unroll their taps with no bounds. What one step
of a row computes:
- plain interior: a vector of V consecutive outputs (V the host's lanes). With stride 1 each tap
  is one unaligned load; with stride 2 to 4, one load of stride*V elements and a shuffle picking
  every stride-th. The last vector of the interior overlaps the one before it instead of leaving
  a tail (a pool may write the same output twice);
- plain borders, and interiors with larger strides or narrower than a vector: one output;
- blocked: one output position, a vector of the c channels of its block: each tap is one
  contiguous load, with no shuffles.
max starts from -inf (padding never wins, and a window wholly in the padding gives -inf, as in
torch) and takes llvm.maximum (a NaN propagates); avg sums and divides by the window's size
counted as torch counts it: clipped to the padded input (count_include_pad) or to the input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import llvmlite.ir as ir

from convc.ir import Node
from convc.types import TensorType

from ..codegen import Kernel, i64
from ..jit import host_target
from .conv_geometry import MAX_UNROLLED_TAPS, Axis, divmod_index
from .registry import Values, kernel

MAX_STRIDED_LOAD = 4  # plain rows with larger strides compute one output per step
SINGLE = Axis(1, 1, 1, 1, 1, 0)  # the row axis of a 1-D pool


@dataclass(frozen=True)
class PoolGeometry:
    """One pool node as compile-time constants: `planes` rows of planes (channels, or blocks of
    `block` channels), the row axis `h` and the column axis `w`."""

    kind: str  # "max" or "avg"
    planes: int
    h: Axis
    w: Axis
    include_pad: bool
    block: int  # channels per block; 0 for plain tensors

    @property
    def step(self) -> int:
        """Elements between neighbouring columns."""
        return self.block or 1


def planes_of(x: TensorType, rank: int) -> int:
    """Planes of an input with `rank` spatial axes: channels of every batch, or blocks of them."""
    if x.block:
        return x.shape[0] * -(-x.shape[1] // x.block)
    return math.prod(x.shape[:-rank])


def pool_geometry(op: str, attrs: dict[str, Any], x: TensorType, out: TensorType) -> PoolGeometry:
    rank = len(attrs["kernel_size"])
    dilation = attrs.get("dilation", (1,) * rank)
    axes = [Axis(x.shape[i - rank], out.shape[i - rank], attrs["kernel_size"][i], attrs["stride"][i], dilation[i],
                 attrs["padding"][i]) for i in range(rank)]
    h, w = ([SINGLE] * (2 - rank) + axes)
    return PoolGeometry("max" if op.startswith("max") else "avg", planes_of(x, rank), h, w,
                        attrs.get("count_include_pad", False), x.block)


@dataclass(frozen=True)
class Access:
    """How one step of a row reads an input column and writes its result: `lanes` elements per
    value (1: a scalar), `step` elements per column (c on blocked tensors), and for a plain vector
    of outputs, the `stride` between the input columns of neighbouring lanes."""

    lanes: int
    step: int
    stride: int = 1

    def load(self, k: Kernel, row: ir.Value, column: ir.Value) -> ir.Value:
        if self.lanes == 1:
            return k.load(row, column)
        if self.step > 1:
            return k.vload(row, k.mul(column, self.step), self.lanes)
        if self.stride == 1:
            return k.vload(row, column, self.lanes)
        wide = k.vload(row, column, self.lanes * self.stride)
        every = ir.Constant(ir.VectorType(ir.IntType(32), self.lanes), [i * self.stride for i in range(self.lanes)])
        return k.builder.shuffle_vector(wide, ir.Constant(wide.type, None), every)

    def store(self, k: Kernel, value: ir.Value, row: ir.Value, column: ir.Value) -> None:
        if self.lanes == 1:
            k.store(value, row, column)
        else:
            k.vstore(value, row, k.mul(column, self.step))


@dataclass(frozen=True)
class Row:
    """One output row: its input plane, the input row of window row 0 (`origin`, negative in the
    top padding), the window rows that exist [lo, hi), avg's row count for the divisor, and where
    the row is written."""

    x_plane: ir.Value
    origin: ir.Value
    lo: ir.Value
    hi: ir.Value
    count: ir.Value | None
    out: ir.Value


# integer helpers -----------------------------------------------------------------------------


def smin(k: Kernel, a: ir.Value, b: ir.Value) -> ir.Value:
    return k.builder.select(k.builder.icmp_signed("<", a, b), a, b)


def tap_range(k: Kernel, origin: ir.Value, axis: Axis) -> tuple[ir.Value, ir.Value]:
    """[lo, hi) of the taps t whose index origin + t * dilation lies in [0, size)."""
    if axis.trivial:
        return i64(0), i64(1)
    b, d = k.builder, axis.dilation
    before = b.neg(origin)
    skipped = before if d == 1 else b.udiv(b.add(before, i64(d - 1)), i64(d))
    lo = b.select(b.icmp_signed(">", before, i64(0)), skipped, i64(0))
    room = b.sub(i64(axis.size - 1), origin)
    reach = smin(k, b.add(room if d == 1 else b.udiv(room, i64(d)), i64(1)), i64(axis.kernel))
    return lo, b.select(b.icmp_signed("<", room, i64(0)), i64(0), reach)


def window_count(k: Kernel, geo: PoolGeometry, origin: ir.Value, axis: Axis, lo: ir.Value,
                 hi: ir.Value) -> ir.Value | None:
    """avg's divisor along one axis: the window clipped to the padded input (count_include_pad)
    or the taps inside the input; None for max."""
    if geo.kind != "avg":
        return None
    if not geo.include_pad:
        return k.builder.sub(hi, lo)
    end = smin(k, k.add(origin, axis.kernel), i64(axis.size + axis.pad_lo))
    return k.builder.sub(end, origin)


# values ----------------------------------------------------------------------------------------


def initial(k: Kernel, kind: str, type_: ir.Type) -> ir.Constant:
    value = -math.inf if kind == "max" else 0.0
    if isinstance(type_, ir.VectorType):
        return ir.Constant(type_, [value] * type_.count)
    return ir.Constant(type_, value)


def combine(k: Kernel, kind: str, acc: ir.Value, value: ir.Value) -> ir.Value:
    return k.intrinsic("maximum", acc, value) if kind == "max" else k.builder.fadd(acc, value)


def finish(k: Kernel, value: ir.Value, count: ir.Value | None) -> ir.Value:
    """The output: the max, or the sum divided by the window's count."""
    if count is None:
        return value
    divisor = k.builder.sitofp(count, k.ftype)
    if isinstance(value.type, ir.VectorType):
        divisor = k.splat(divisor, value.type.count)
    return k.builder.fdiv(value, divisor)


def window(k: Kernel, geo: PoolGeometry, row: Row, access: Access, column: ir.Value,
           taps: tuple[ir.Value, ir.Value] | None) -> ir.Value:
    """Combine the window whose column tap 0 reads input column `column`, over the row's window
    rows and the column taps `taps` ([lo, hi); None: all of them, known to be inside)."""
    h, w = geo.h, geo.w
    type_ = k.ftype if access.lanes == 1 else k.vector_type(access.lanes)
    acc = k.alloca(type_, "acc")
    k.builder.store(initial(k, geo.kind, type_), acc)
    with k.loop(row.lo, row.hi, "kh") as kh:
        x_row = k.offset(row.x_plane, k.mul(k.add(row.origin, k.mul(kh, h.dilation)), w.size * geo.step))
        if taps is None and w.kernel <= MAX_UNROLLED_TAPS:
            value = k.builder.load(acc)
            for kw in range(w.kernel):
                value = combine(k, geo.kind, value, access.load(k, x_row, k.add(column, kw * w.dilation)))
            k.builder.store(value, acc)
        else:
            lo, hi = taps if taps is not None else (i64(0), i64(w.kernel))
            with k.loop(lo, hi, "kw") as kw:
                value = access.load(k, x_row, k.add(column, k.mul(kw, w.dilation)))
                k.builder.store(combine(k, geo.kind, k.builder.load(acc), value), acc)
    return k.builder.load(acc)


# rows ------------------------------------------------------------------------------------------


def border(k: Kernel, geo: PoolGeometry, row: Row, access: Access, first: int, last: int) -> None:
    """Outputs [first, last) of the row, each with its own range of column taps."""
    if first >= last:
        return
    w = geo.w
    with k.loop(first, last, "owb") as ow:
        column = k.add(k.mul(ow, w.stride), -w.pad_lo)
        lo, hi = tap_range(k, column, w)
        count = window_count(k, geo, column, w, lo, hi)
        total = None if count is None else k.builder.mul(row.count, count)
        access.store(k, finish(k, window(k, geo, row, access, column, (lo, hi)), total), row.out, ow)


def interior(k: Kernel, geo: PoolGeometry, row: Row, access: Access, first: int, number: int, spacing: int) -> None:
    """`number` interior steps, at output columns first, first + spacing, ...; each computes
    access.lanes consecutive outputs (plain) or one position (blocked), with every tap unrolled."""
    if number <= 0:
        return
    w = geo.w
    count = None if row.count is None else k.builder.mul(row.count, i64(w.kernel))
    with k.loop(0, number, "ow") as index:
        ow = k.add(first, k.mul(index, spacing))
        column = k.add(k.mul(ow, w.stride), -w.pad_lo)
        access.store(k, finish(k, window(k, geo, row, access, column, None), count), row.out, ow)


def plain_interior(k: Kernel, geo: PoolGeometry, row: Row, first: int, last: int) -> None:
    """Interior outputs [first, last) of a plain row: vectors of V outputs where the stride allows
    and the row holds one, the last one overlapping its neighbour; single outputs past them."""
    w, lanes = geo.w, host_target().lanes(k.dtype)
    scalar = Access(1, 1)
    last_start = min(last - lanes, (w.size - lanes * w.stride + w.pad_lo - (w.kernel - 1) * w.dilation) // w.stride)
    if w.stride > MAX_STRIDED_LOAD or lanes == 1 or last_start < first:
        interior(k, geo, row, scalar, first, last - first, 1)
        return
    vector = Access(lanes, 1, w.stride)
    interior(k, geo, row, vector, first, (last_start - first) // lanes + 1, lanes)
    if (last_start - first) % lanes:
        interior(k, geo, row, vector, last_start, 1, lanes)
    interior(k, geo, row, scalar, last_start + lanes, last - last_start - lanes, 1)


def emit_window_pool(module: ir.Module, name: str, op: str, attrs: dict[str, Any], x: TensorType,
                     out_type: TensorType) -> Kernel:
    geo = pool_geometry(op, attrs, x, out_type)
    k = Kernel(module, name, out_type.dtype, 2, ("out", "x"))
    if out_type.size == 0:
        return k.finish()
    h, w, step = geo.h, geo.w, geo.step
    with k.outer_loop(geo.planes * h.out, "row") as index:
        plane, oh = divmod_index(k, index, h.out)
        origin = k.add(k.mul(oh, h.stride), -h.pad_lo)
        lo, hi = tap_range(k, origin, h)
        row = Row(k.offset(k.args[1], k.mul(plane, h.size * w.size * step)), origin, lo, hi,
                  window_count(k, geo, origin, h, lo, hi), k.offset(k.args[0], k.mul(index, w.out * step)))
        first, last = w.interior()
        one = Access(geo.block or 1, step)
        border(k, geo, row, one, 0, first)
        if geo.block:
            interior(k, geo, row, one, first, last - first, 1)
        else:
            plain_interior(k, geo, row, first, last)
        border(k, geo, row, one, last, w.out)
    return k.finish()


@kernel("max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d")
def _window_pool(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    return emit_window_pool(module, name, node.op, node.attrs, in_types[0], node.type)
