"""Kernel emitter for conv1d/2d/3d (NCDHW, any stride, dilation, groups, padding mode).

Loop order: (batch, out channel) -> output row (od, oh) -> input channel of the group -> kd -> kh,
then the row over ow, and a fused activation (`activation` attribute) on the finished row. Each output row stays in L1 while every (channel, kd, kh) tap row adds
into it. The row is split at compile time into a left border, an interior where every kw tap
reads inside the input, and a right border: the interior loop has no bounds checks and the KW
taps unrolled with their weights in registers; the borders read through `border_index`, which
also implements circular / reflect / replicate padding by index arithmetic (no padded copy).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import llvmlite.ir as ir

from convc.op_conv import conv_pads, spatial_rank
from convc.types import TensorType

from ..codegen import Kernel
from .elementwise import SCALAR_OPS


@dataclass(frozen=True)
class Axis:
    """One spatial axis of a convolution, all sizes known at compile time."""

    size: int
    out: int
    kernel: int
    stride: int
    dilation: int
    pad_lo: int

    def interior(self) -> tuple[int, int]:
        """[start, stop) of outputs whose every tap reads inside the input (may be empty)."""
        last_tap = self.dilation * (self.kernel - 1)
        start = max(0, -(-(self.pad_lo) // self.stride))
        stop = min(self.out, (self.size - 1 - last_tap + self.pad_lo) // self.stride + 1)
        start = min(start, self.out)
        return start, max(start, stop)


def conv_axes(node_attrs: dict[str, Any], x: TensorType, w: TensorType, out: TensorType,
              rank: int) -> list[Axis]:
    """The three axes (d, h, w) of a conv; missing leading axes are size 1."""
    lo, _ = conv_pads(node_attrs, w.shape[2:])
    axes = [Axis(x.shape[-rank + i], out.shape[-rank + i], w.shape[2 + i], node_attrs["stride"][i],
                 node_attrs["dilation"][i], lo[i]) for i in range(rank)]
    return [Axis(1, 1, 1, 1, 1, 0)] * (3 - rank) + axes


def emit_conv(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
              out_type: TensorType, op: str) -> ir.Function:
    rank = spatial_rank(op)
    x, w = in_types[0], in_types[1]
    has_bias = len(in_types) > 2
    mode = attrs.get("padding_mode", "zeros")
    d_ax, h_ax, w_ax = conv_axes(attrs, x, w, out_type, rank)
    batch = x.shape[0] if x.rank == rank + 2 else 1
    c_in, c_out, groups = x.shape[-rank - 1], w.shape[0], attrs["groups"]
    cin_g, cout_g = c_in // groups, c_out // groups
    in_plane, k_plane = d_ax.size * h_ax.size * w_ax.size, d_ax.kernel * h_ax.kernel * w_ax.kernel
    out_plane = d_ax.out * h_ax.out * w_ax.out

    k = Kernel(module, name, out_type.dtype, 4 if has_bias else 3,
               ("out", "x", "w", "bias"))
    b = k.builder
    out_ptr, x_ptr, w_ptr = k.args[0], k.args[1], k.args[2]
    zero = k.const(0.0)

    with k.loop(0, batch * c_out, "nco") as nco:
        n = b.udiv(nco, ir.Constant(nco.type, c_out))
        co = b.urem(nco, ir.Constant(nco.type, c_out))
        group = b.udiv(co, ir.Constant(co.type, cout_g))
        bias = k.load(k.args[3], co) if has_bias else zero
        x_n = k.add(k.mul(n, c_in * in_plane), k.mul(group, cin_g * in_plane))
        w_co = k.mul(co, cin_g * k_plane)
        with k.loop(0, d_ax.out, "od") as od, k.loop(0, h_ax.out, "oh") as oh:
            row = k.offset(out_ptr, k.add(k.mul(nco, out_plane), k.mul(k.add(k.mul(od, h_ax.out), oh), w_ax.out)))
            with k.loop(0, w_ax.out, "fill") as ow:
                k.store(bias, row, ow)
            with k.loop(0, cin_g, "ci") as ci:
                x_c = k.add(x_n, k.mul(ci, in_plane))
                w_c = k.add(w_co, k.mul(ci, k_plane))
                with k.loop(0, d_ax.kernel, "kd") as kd:
                    id_ = k.add(k.mul(od, d_ax.stride), k.mul(kd, d_ax.dilation), -d_ax.pad_lo)
                    _tap_plane(k, mode, d_ax, id_, lambda id_m: _tap_rows(
                        k, mode, h_ax, w_ax, oh, row, x_ptr, w_ptr,
                        k.add(x_c, k.mul(id_m, h_ax.size * w_ax.size)),
                        k.add(w_c, k.mul(kd, h_ax.kernel * w_ax.kernel))))
            if attrs.get("activation"):
                activation = SCALAR_OPS[attrs["activation"]]
                with k.loop(0, w_ax.out, "act") as ow:
                    k.store(activation(k, [k.load(row, ow)]), row, ow)
    return k.finish()


def _tap_plane(k: Kernel, mode: str, axis: Axis, index: ir.Value, body) -> None:
    """Run body(mapped index) for one d (or h) tap: skipped outside the input in zeros mode."""
    if axis.size == 1 and axis.kernel == 1 and axis.pad_lo == 0:
        body(index)
        return
    mapped, valid = k.border_index(index, axis.size, mode)
    if valid is None:
        body(mapped)
    else:
        with k.builder.if_then(valid):
            body(mapped)


def _tap_rows(k: Kernel, mode: str, h_ax: Axis, w_ax: Axis, oh: ir.Value, row: ir.Value,
              x_ptr: ir.Value, w_ptr: ir.Value, x_plane: ir.Value, w_plane: ir.Value) -> None:
    with k.loop(0, h_ax.kernel, "kh") as kh:
        ih = k.add(k.mul(oh, h_ax.stride), k.mul(kh, h_ax.dilation), -h_ax.pad_lo)
        _tap_plane(k, mode, h_ax, ih, lambda ih_m: _tap_row(
            k, mode, w_ax, row, k.offset(x_ptr, k.add(x_plane, k.mul(ih_m, w_ax.size))),
            k.offset(w_ptr, k.add(w_plane, k.mul(kh, w_ax.kernel)))))


def _tap_row(k: Kernel, mode: str, axis: Axis, row: ir.Value, x_row: ir.Value, w_row: ir.Value) -> None:
    """row[ow] += sum_kw w_row[kw] * x_row[ow*stride + kw*dilation - pad_lo] over the whole row."""
    b = k.builder
    weights = [k.load(w_row, kw) for kw in range(axis.kernel)]
    start, stop = axis.interior()
    with k.loop(start, stop, "ow") as ow:
        base = k.add(k.mul(ow, axis.stride), -axis.pad_lo)
        acc = k.load(row, ow)
        for kw, weight in enumerate(weights):
            acc = k.fma(weight, k.load(x_row, k.add(base, kw * axis.dilation)), acc)
        k.store(acc, row, ow)
    for lo, hi in ((0, start), (stop, axis.out)):
        if lo >= hi:
            continue
        with k.loop(lo, hi, "owb") as ow:
            base = k.add(k.mul(ow, axis.stride), -axis.pad_lo)
            acc = k.load(row, ow)
            for kw, weight in enumerate(weights):
                index, valid = k.border_index(k.add(base, kw * axis.dilation), axis.size, mode)
                value = k.load(x_row, index)
                if valid is not None:
                    value = b.select(valid, value, k.const(0.0))
                acc = k.fma(weight, value, acc)
            k.store(acc, row, ow)
