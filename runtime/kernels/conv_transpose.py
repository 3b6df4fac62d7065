"""Kernel emitter for conv_transpose1d/2d/3d in gather form (no zero-inserted input copy).

Output o of an axis receives input i through tap k when o = i*stride + k*dilation - pad_lo. Per
(batch, out channel) and output row, every (input channel of the group, kd, kh) whose input row
exists (od + pad_lo - kd*dilation divisible by the stride and in range) adds into the row: for
each kw, the outputs it reaches form the progression o0 + j*stride over consecutive inputs
i0 + j. (o0, i0, count) per kw are compile-time tables, so the inner loop has no checks.
"""
from __future__ import annotations

from typing import Any

import llvmlite.ir as ir

from convc.op_conv import conv_transpose_pads, spatial_rank
from convc.types import TensorType

from ..codegen import I64, Kernel, i64
from .conv import Axis, ConvGeometry, _activate_row, _divmod


def transpose_geometry(attrs: dict[str, Any], in_types: list[TensorType], out: TensorType, op: str) -> ConvGeometry:
    rank = spatial_rank(op)
    x, w = in_types[0], in_types[1]
    lo, _ = conv_transpose_pads(attrs)
    axes = [Axis(x.shape[-rank + i], out.shape[-rank + i], w.shape[2 + i], attrs["stride"][i],
                 attrs["dilation"][i], lo[i]) for i in range(rank)]
    d, h, w_axis = [Axis(1, 1, 1, 1, 1, 0)] * (3 - rank) + axes
    return ConvGeometry(x.shape[0] if x.rank == rank + 2 else 1, x.shape[-rank - 1], w.shape[1] * attrs["groups"],
                        attrs["groups"], d, h, w_axis, "zeros", len(in_types) > 2, attrs.get("activation"))


def tap_progressions(axis: Axis) -> list[tuple[int, int, int]]:
    """For each tap k: (first output, first input, count) of the outputs it reaches in the row."""
    rows = []
    for k in range(axis.kernel):
        shift = k * axis.dilation - axis.pad_lo  # o = i*stride + shift
        first_input = max(0, -(-(-shift) // axis.stride))
        end_input = min(axis.size, -(-(axis.out - shift) // axis.stride))
        rows.append((first_input * axis.stride + shift, first_input, max(0, end_input - first_input)))
    return rows


def _table(k: Kernel, name: str, values: list[int]) -> ir.GlobalVariable:
    array = ir.ArrayType(I64, len(values))
    table = ir.GlobalVariable(k.module, array, f"{k.function.name}.{name}")
    table.initializer = ir.Constant(array, values)
    table.global_constant = True
    table.linkage = "internal"
    return table


def _source_index(k: Kernel, axis: Axis, out_index: ir.Value, tap: ir.Value) -> tuple[ir.Value, ir.Value | None]:
    """(input index, valid) reaching output out_index through tap; valid None when always valid."""
    if axis.trivial:
        return out_index, None
    b = k.builder
    numerator = k.add(out_index, axis.pad_lo, b.neg(k.mul(tap, axis.dilation)))
    valid = b.icmp_signed(">=", numerator, i64(0))
    if axis.stride > 1:
        valid = b.and_(valid, b.icmp_signed("==", b.srem(numerator, i64(axis.stride)), i64(0)))
        index = b.sdiv(numerator, i64(axis.stride))
    else:
        index = numerator
    return index, b.and_(valid, b.icmp_signed("<", index, i64(axis.size)))


def emit_conv_transpose(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
                        out_type: TensorType, op: str) -> Kernel:
    geo = transpose_geometry(attrs, in_types, out_type, op)
    k = Kernel(module, name, out_type.dtype, 4 if geo.has_bias else 3, ("out", "x", "w", "bias"))
    b = k.builder
    progressions = tap_progressions(geo.w)
    tables = [_table(k, label, [p[i] for p in progressions]) for i, label in enumerate(("o0", "i0", "count"))]
    cin_g, cout_g = geo.c_in // geo.groups, geo.cout_g
    with k.outer_loop(geo.batch * geo.c_out, "nco") as nco:
        n, co = _divmod(k, nco, geo.c_out)
        group, co_local = _divmod(k, co, cout_g)
        bias = k.load(k.args[3], co) if geo.has_bias else k.const(0.0)
        with k.loop(0, geo.d.out, "od") as od, k.loop(0, geo.h.out, "oh") as oh:
            row = k.offset(k.args[0], k.add(k.mul(nco, geo.out_plane), k.mul(k.add(k.mul(od, geo.h.out), oh), geo.w.out)))
            with k.loop(0, geo.w.out, "fill") as ow:
                k.store(bias, row, ow)
            with k.loop(0, cin_g, "ci") as ci_local:
                ci = k.add(k.mul(group, cin_g), ci_local)
                x_channel = k.mul(k.add(k.mul(n, geo.c_in), ci), geo.in_plane)
                w_channel = k.mul(k.add(k.mul(ci, cout_g), co_local), geo.k_plane)
                with k.loop(0, geo.d.kernel, "kd") as kd:
                    id_, valid_d = _source_index(k, geo.d, od, kd)
                    with _maybe(b, valid_d):
                        with k.loop(0, geo.h.kernel, "kh") as kh:
                            ih, valid_h = _source_index(k, geo.h, oh, kh)
                            with _maybe(b, valid_h):
                                x_row = k.offset(k.args[1], k.add(x_channel, k.mul(id_, geo.h.size * geo.w.size),
                                                                  k.mul(ih, geo.w.size)))
                                w_tap = k.offset(k.args[2], k.add(w_channel, k.mul(k.add(k.mul(kd, geo.h.kernel), kh),
                                                                                   geo.w.kernel)))
                                _taps_along_row(k, geo.w, tables, row, x_row, w_tap)
            _activate_row(k, geo, row)
    return k.finish()


def _taps_along_row(k: Kernel, axis: Axis, tables: list[ir.GlobalVariable], row: ir.Value, x_row: ir.Value,
                    w_tap: ir.Value) -> None:
    b = k.builder
    with k.loop(0, axis.kernel, "kw") as kw:
        o0, i0, count = (b.load(b.gep(t, [i64(0), kw], inbounds=True)) for t in tables)
        weight = k.load(w_tap, kw)
        out_row = k.offset(row, o0)
        in_row = k.offset(x_row, i0)
        with k.loop(0, count, "j") as j:
            out_index = k.mul(j, axis.stride)
            k.store(k.fma(weight, k.load(in_row, j), k.load(out_row, out_index)), out_row, out_index)


class _maybe:
    """`with _maybe(builder, flag):` runs the body under `if flag`, or always when flag is None."""

    def __init__(self, builder: ir.IRBuilder, flag: ir.Value | None) -> None:
        self.builder, self.flag, self.context = builder, flag, None

    def __enter__(self) -> None:
        if self.flag is not None:
            self.context = self.builder.if_then(self.flag)
            self.context.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self.context is not None:
            self.context.__exit__(*exc)
