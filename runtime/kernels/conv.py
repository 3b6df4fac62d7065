"""Kernel emitter for conv1d/2d/3d (NCDHW, any stride, dilation, groups, padding mode).

Two loop structures:
- **tiled** (strides 1 and 2 along the row, rows at least one vector wide): register tiles of
  conv_tiles over each output row; the output row is the outer (parallel) loop, so its input
  rows stay in cache for every block of output channels.
- **rows** (other strides, narrow rows, very wide borders): per (batch, out channel, output row),
  each (input channel, kd, kh) tap row adds into the output row, which stays in L1; the
  interior loop has no bounds checks and the kw taps unrolled with their weights in registers
  (LLVM vectorizes it); border columns read through `Kernel.border_index`, which also
  implements circular / reflect / replicate padding by index arithmetic (no padded copy).
A residual operand (a fifth argument, laid out like the output) is added to each finished output
row, and a fused activation (`activation` attribute) runs over it, while it is still in L1 (in
the tiled structure both are applied to the registers before the store).
"""
from __future__ import annotations

from typing import Any

import llvmlite.ir as ir

from convc.types import TensorType

from ..codegen import Kernel, i64
from ..jit import host_target
from .conv_geometry import (MAX_UNROLLED_TAPS, Axis, ConvGeometry, activate_row, add_row, conv_geometry, divmod_index,
                            for_taps, out_row)
from .conv_blocked_nest import MIN_PARALLEL_EXTENT
from .conv_tiles import Tiling, choose_tiling, conv_operands, row_parts, tile_row


def emit_conv(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
              out_type: TensorType, op: str) -> Kernel:
    geo = conv_geometry(attrs, in_types, out_type, op)
    k = Kernel(module, name, out_type.dtype, 1 + len(in_types), ("out", "x", "w", "bias", "residual"))
    tiling = choose_tiling(geo, host_target(), out_type.dtype)
    if tiling is None:
        _emit_rows(k, geo)
    else:
        _emit_tiled(k, geo, tiling)
    return k.finish()


# shared pieces -------------------------------------------------------------------------------
Segment = tuple[int | ir.Value, int | ir.Value, bool]  # [lo, hi) of a row, and whether every tap there is in bounds


def _bias(k: Kernel, geo: ConvGeometry, co: ir.Value) -> ir.Value:
    return k.load(k.args[3], co) if geo.has_bias else k.const(0.0)


def _tap_row(k: Kernel, geo: ConvGeometry, row: ir.Value, x_row: ir.Value, w_row: ir.Value,
             segments: list[Segment]) -> None:
    """row[ow] += sum_kw w_row[kw] * x_row[ow*stride + kw*dilation - pad_lo] over the segments."""
    axis = geo.w
    if axis.kernel > MAX_UNROLLED_TAPS:
        _tap_row_looped(k, geo, row, x_row, w_row, segments)
        return
    weights = [k.load(w_row, kw) for kw in range(axis.kernel)]
    for lo, hi, inside in segments:
        with k.loop(lo, hi, "ow" if inside else "owb") as ow:
            base = k.add(k.mul(ow, axis.stride), -axis.pad_lo)
            acc = k.load(row, ow)
            for kw, weight in enumerate(weights):
                if inside:
                    value = k.load(x_row, k.add(base, kw * axis.dilation))
                else:
                    index, valid = k.border_index(k.add(base, kw * axis.dilation), axis.size, geo.mode)
                    value = k.load(x_row, index)
                    if valid is not None:
                        value = k.builder.select(valid, value, k.const(0.0))
                acc = k.fma(weight, value, acc)
            k.store(acc, row, ow)


def _tap_row_looped(k: Kernel, geo: ConvGeometry, row: ir.Value, x_row: ir.Value, w_row: ir.Value,
                    segments: list[Segment]) -> None:
    """_tap_row for very wide kernels: kw is a runtime loop, every read goes through border_index."""
    axis = geo.w
    with k.loop(0, axis.kernel, "kw") as kw:
        weight = k.load(w_row, kw)
        shift = k.add(k.mul(kw, axis.dilation), -axis.pad_lo)
        for lo, hi, _ in segments:
            with k.loop(lo, hi, "owk") as ow:
                index, valid = k.border_index(k.add(k.mul(ow, axis.stride), shift), axis.size, geo.mode)
                value = k.load(x_row, index)
                if valid is not None:
                    value = k.builder.select(valid, value, k.const(0.0))
                k.store(k.fma(weight, value, k.load(row, ow)), row, ow)


def _scalar_columns(k: Kernel, geo: ConvGeometry, n: ir.Value, group: ir.Value, co: ir.Value, od: ir.Value,
                    oh: ir.Value, segments: list[Segment]) -> None:
    """The complete output (bias and every tap) of one channel's row, on the given segments."""
    row = out_row(k, geo, n, co, od, oh)
    bias = _bias(k, geo, co)
    for lo, hi, _ in segments:
        with k.loop(lo, hi, "fill") as ow:
            k.store(bias, row, ow)
    x_base = k.add(k.mul(n, geo.c_in * geo.in_plane), k.mul(group, geo.cin_g * geo.in_plane))
    for_taps(k, geo, x_base, k.mul(co, geo.cin_g * geo.k_plane), od, oh,
              lambda x_off, w_off: _tap_row(k, geo, row, k.offset(k.args[1], x_off), k.offset(k.args[2], w_off),
                                            segments), geo.k_plane, 1)


def _emit_rows(k: Kernel, geo: ConvGeometry) -> None:
    if geo.w.symbolic:  # a row of run-time length: the interior's bounds computed at run time
        segments = _runtime_segments(k, geo.w)
    else:
        start, stop = geo.w.interior()
        segments = [s for s in ((0, start, False), (start, stop, True), (stop, geo.w.out, False)) if s[0] < s[1]]
    with k.outer_loop(geo.batch * geo.c_out, "nco") as nco:
        n, co = divmod_index(k, nco, geo.c_out)
        group, _ = divmod_index(k, co, geo.cout_g)
        with k.loop(0, geo.d.out, "od") as od, k.loop(0, geo.h.out, "oh") as oh:
            _scalar_columns(k, geo, n, group, co, od, oh, segments)
            row = out_row(k, geo, n, co, od, oh)
            if geo.has_residual:
                add_row(k, geo, row, out_row(k, geo, n, co, od, oh, k.args[4]))
            activate_row(k, geo, row)


def _runtime_segments(k: Kernel, axis: Axis) -> list[tuple[ir.Value, ir.Value, bool]]:
    """Axis.interior's segments as run-time values, clamped to [0, out]."""
    b, out = k.builder, k.value(axis.out)

    def smin(x: ir.Value, y: ir.Value) -> ir.Value:
        return b.select(b.icmp_signed("<", x, y), x, y)

    start = smin(k.value(-(-axis.pad_lo // axis.stride)), out)
    stop = k.value((axis.size - 1 - axis.dilation * (axis.kernel - 1) + axis.pad_lo) // axis.stride + 1)
    stop = smin(stop, out)
    stop = b.select(b.icmp_signed("<", stop, start), start, stop)
    return [(i64(0), start, False), (start, stop, True), (stop, out, False)]


def _emit_tiled(k: Kernel, geo: ConvGeometry, tiling: Tiling) -> None:
    # the output row is outside the channel blocks: its input rows stay in cache for all blocks;
    # few rows (1-D convs) are split into parts, so that the parallel loop has work for every core
    rows = geo.batch * geo.groups * geo.d.out * geo.h.out
    parts = row_parts(geo, tiling, rows, MIN_PARALLEL_EXTENT)
    with k.outer_loop(rows * parts, "row") as job:
        row, part = divmod_index(k, job, parts)
        ng_od, oh = divmod_index(k, row, geo.h.out)
        ng, od = divmod_index(k, ng_od, geo.d.out)
        n, group = divmod_index(k, ng, geo.groups)
        tile_row(k, geo, tiling, n, group, od, oh, conv_operands(k, geo, n), part, parts)
