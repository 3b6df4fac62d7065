"""Kernel emitter for adaptive_avg_pool2d, on plain and on channel-blocked tensors.

Bins follow adaptive_avg_pool1d's rule on each axis (pool.adaptive_bin): output row oh averages
input rows [floor(oh*H/OH), ceil((oh+1)*H/OH)), and likewise along the columns. The outer
(parallel) loop runs over output rows (plane, oh).
- plain: a bin's columns are contiguous, so each of its rows is summed by a vector loop over
  them (V lanes, a scalar tail, one horizontal sum at the end); where every bin spans whole rows
  (one output column, global average pooling), the bin's rows are one contiguous span summed at once;
- blocked: each output position is a vector of the c channels of a block, summed over the bin
  with contiguous loads (pool_window's window over a bin).
"""
from __future__ import annotations

from typing import Any

import llvmlite.ir as ir

from convc.types import TensorType

from ..codegen import Kernel, i64
from ..jit import host_target
from .conv_geometry import Axis, divmod_index
from .pool import adaptive_bin
from .pool_window import Access, PoolGeometry, Row, finish, planes_of, window
from .registry import simple_kernel


def horizontal_sum(k: Kernel, vector: ir.Value) -> ir.Value:
    """The sum of a vector's lanes, by halving it."""
    count = vector.type.count
    while count > 1:
        half = count // 2
        pick = [ir.Constant(ir.VectorType(ir.IntType(32), half), list(range(start, start + half)))
                for start in (0, half)]
        undefined = ir.Constant(vector.type, None)
        vector = k.builder.fadd(k.builder.shuffle_vector(vector, undefined, pick[0]),
                                k.builder.shuffle_vector(vector, undefined, pick[1]))
        count = half
    return k.builder.extract_element(vector, ir.Constant(ir.IntType(32), 0))


def span_sum(k: Kernel, base: ir.Value, start: ir.Value, stop: ir.Value, lanes: int) -> ir.Value:
    """base[start] + ... + base[stop - 1]: vectors of `lanes`, then the remaining elements."""
    b = k.builder
    vectors = k.alloca(k.vector_type(lanes), "vsum")
    b.store(ir.Constant(k.vector_type(lanes), [0.0] * lanes), vectors)
    whole = b.udiv(b.sub(stop, start), i64(lanes))
    with k.loop(0, whole, "v") as v:
        b.store(b.fadd(b.load(vectors), k.vload(base, k.add(start, k.mul(v, lanes)), lanes)), vectors)
    scalar = k.alloca(k.ftype, "sum")
    b.store(k.const(0.0), scalar)
    with k.loop(k.add(start, k.mul(whole, lanes)), stop, "tail") as i:
        b.store(b.fadd(b.load(scalar), k.load(base, i)), scalar)
    return b.fadd(horizontal_sum(k, b.load(vectors)), b.load(scalar))


def _plain_row(k: Kernel, x: TensorType, out_type: TensorType, x_plane: ir.Value, out_row: ir.Value,
               rows: tuple[ir.Value, ir.Value]) -> None:
    width, out_width = x.shape[-1], out_type.shape[-1]
    lanes, b = host_target().lanes(k.dtype), k.builder
    first, last = rows
    height_count = b.sub(last, first)
    if out_width == 1:  # every bin spans whole rows: one contiguous span
        total = span_sum(k, x_plane, k.mul(first, width), k.mul(last, width), lanes)
        k.store(finish(k, total, k.mul(height_count, width)), out_row, 0)
        return
    with k.loop(0, out_width, "ow") as ow:
        start, stop = adaptive_bin(k, ow, width, out_width)
        total = k.alloca(k.ftype, "total")
        b.store(k.const(0.0), total)
        with k.loop(first, last, "r") as r:
            b.store(b.fadd(b.load(total), span_sum(k, k.offset(x_plane, k.mul(r, width)), start, stop, lanes)), total)
        k.store(finish(k, b.load(total), b.mul(height_count, b.sub(stop, start))), out_row, ow)


def _blocked_row(k: Kernel, geo: PoolGeometry, x_plane: ir.Value, out_row: ir.Value,
                 rows: tuple[ir.Value, ir.Value]) -> None:
    b, access = k.builder, Access(geo.block, geo.block)
    with k.loop(0, geo.w.out, "ow") as ow:
        start, stop = adaptive_bin(k, ow, geo.w.size, geo.w.out)
        row = Row(x_plane, i64(0), rows[0], rows[1], b.sub(rows[1], rows[0]), out_row)
        total = window(k, geo, row, access, i64(0), (start, stop))
        access.store(k, finish(k, total, b.mul(row.count, b.sub(stop, start))), out_row, ow)


@simple_kernel("adaptive_avg_pool2d")
def emit_adaptive_avg_pool2d(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
                             out_type: TensorType) -> Kernel:
    x = in_types[0]
    k = Kernel(module, name, out_type.dtype, 2, ("out", "x"))
    if out_type.size == 0:
        return k.finish()
    (height, width), (out_height, out_width) = x.shape[-2:], out_type.shape[-2:]
    step = x.block or 1
    # bins as windows of one tap with dilation 1 (pool_window.window reads the sizes and dilations)
    geo = PoolGeometry("avg", planes_of(x, 2), Axis(height, out_height, 1, 1, 1, 0),
                       Axis(width, out_width, 1, 1, 1, 0), False, x.block)
    with k.outer_loop(geo.planes * out_height, "row") as index:
        plane, oh = divmod_index(k, index, out_height)
        x_plane = k.offset(k.args[1], k.mul(plane, height * width * step))
        out_row = k.offset(k.args[0], k.mul(index, out_width * step))
        rows = adaptive_bin(k, oh, height, out_height)
        if x.block:
            _blocked_row(k, geo, x_plane, out_row, rows)
        else:
            _plain_row(k, x, out_type, x_plane, out_row, rows)
    return k.finish()
