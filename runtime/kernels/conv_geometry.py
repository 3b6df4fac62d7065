"""Convolution geometry and the loop helpers the conv emitters share: axes as compile-time
constants, the output row of (batch, channel, od, oh), the (input channel, kd, kh) tap loops
with their border handling, and the fused activation over a finished row."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import llvmlite.ir as ir

from convc.op_conv import conv_pads, spatial_rank
from convc.symbolic import Size
from convc.types import TensorType

from ..codegen import Kernel
from .elementwise import activate


MAX_UNROLLED_TAPS = 32  # wider rows of taps use a runtime kw loop instead of unrolled code
MAX_EDGE_VECTORS = 8  # compile-time edge vectors per row side; wider borders take the row path


@dataclass(frozen=True)
class Axis:
    """One spatial axis of a convolution: its sizes compile-time constants, or the lengths
    symbolic Sizes (kernels that take them read their values at run time)."""

    size: int
    out: int
    kernel: int
    stride: int
    dilation: int
    pad_lo: int

    @property
    def trivial(self) -> bool:
        return self.size == 1 and self.out == 1 and self.kernel == 1 and self.pad_lo == 0

    @property
    def symbolic(self) -> bool:
        """Whether the axis's length is a run-time value (a symbolic size)."""
        return isinstance(self.size, Size) or isinstance(self.out, Size)

    def interior(self) -> tuple[int, int]:
        """[start, stop) of outputs whose every tap reads inside the input (may be empty)."""
        last_tap = self.dilation * (self.kernel - 1)
        start = min(self.out, max(0, -(-self.pad_lo // self.stride)))
        stop = min(self.out, (self.size - 1 - last_tap + self.pad_lo) // self.stride + 1)
        return start, max(start, stop)


@dataclass(frozen=True)
class ConvGeometry:
    """Everything the emitter needs to know about one conv node, as compile-time constants."""

    batch: int
    c_in: int
    c_out: int
    groups: int
    d: Axis
    h: Axis
    w: Axis
    mode: str
    has_bias: bool
    activation: str | tuple | None  # a fused activation attribute (convc.fused_activation)
    has_residual: bool = False  # a fourth operand laid out like the output, added before the activation

    @property
    def cin_g(self) -> int:
        return self.c_in // self.groups

    @property
    def cout_g(self) -> int:
        return self.c_out // self.groups

    @property
    def in_plane(self) -> int:
        return self.d.size * self.h.size * self.w.size

    @property
    def k_plane(self) -> int:
        return self.d.kernel * self.h.kernel * self.w.kernel

    @property
    def out_plane(self) -> int:
        return self.d.out * self.h.out * self.w.out


def conv_geometry(attrs: dict[str, Any], in_types: list[TensorType], out: TensorType, op: str) -> ConvGeometry:
    rank = spatial_rank(op)
    x, w = in_types[0], in_types[1]
    lo, _ = conv_pads(attrs, w.shape[2:])
    axes = [Axis(x.shape[-rank + i], out.shape[-rank + i], w.shape[2 + i], attrs["stride"][i],
                 attrs["dilation"][i], lo[i]) for i in range(rank)]
    d, h, w_axis = [Axis(1, 1, 1, 1, 1, 0)] * (3 - rank) + axes
    return ConvGeometry(x.shape[0] if x.rank == rank + 2 else 1, x.shape[-rank - 1], w.shape[0], attrs["groups"],
                        d, h, w_axis, attrs.get("padding_mode", "zeros"), len(in_types) > 2,
                        attrs.get("activation"), len(in_types) > 3)


def divmod_index(k: Kernel, value: ir.Value, divisor: int | Size) -> tuple[ir.Value, ir.Value]:
    """(value // divisor, value % divisor) of a non-negative index; a symbolic divisor read at run time."""
    divisor = k.value(divisor) if isinstance(divisor, Size) else ir.Constant(value.type, divisor)
    return k.builder.udiv(value, divisor), k.builder.urem(value, divisor)


def out_row(k: Kernel, geo: ConvGeometry, n: ir.Value, co: ir.Value, od: ir.Value, oh: ir.Value,
            base: ir.Value | None = None) -> ir.Value:
    """The output row (co, od, oh) of batch n in `base` (the output argument, or a tensor laid out
    like it: a residual)."""
    channel = k.add(k.mul(n, geo.c_out), co)
    return k.offset(k.args[0] if base is None else base, k.add(k.mul(channel, geo.out_plane),
                                     k.mul(k.add(k.mul(od, geo.h.out), oh), geo.w.out)))


def tap_plane(k: Kernel, mode: str, axis: Axis, index: ir.Value, body: Callable[[ir.Value], None]) -> None:
    """Run body(mapped index) for one d (or h) tap: skipped outside the input in zeros mode."""
    if axis.trivial:
        body(index)
        return
    mapped, valid = k.border_index(index, axis.size, mode)
    with k.when(valid):
        body(mapped)


def for_taps(k: Kernel, geo: ConvGeometry, x_base: ir.Value, w_base: ir.Value, od: ir.Value, oh: ir.Value,
              body: Callable[[ir.Value, ir.Value], None], ci_stride: int, tap_stride: int) -> None:
    """For every input channel of the group and (kd, kh) tap whose input row exists, call
    body(x_row_offset, w_tap_offset) with offsets of the input row and of the kw=0 weight."""
    d, h = geo.d, geo.h
    with k.loop(0, geo.cin_g, "ci") as ci:
        x_c = k.add(x_base, k.mul(ci, geo.in_plane))
        w_c = k.add(w_base, k.mul(ci, ci_stride))
        with k.loop(0, d.kernel, "kd") as kd:
            id_ = k.add(k.mul(od, d.stride), k.mul(kd, d.dilation), -d.pad_lo)

            def plane(id_m: ir.Value) -> None:
                with k.loop(0, h.kernel, "kh") as kh:
                    ih = k.add(k.mul(oh, h.stride), k.mul(kh, h.dilation), -h.pad_lo)
                    tap_plane(k, geo.mode, h, ih, lambda ih_m: body(
                        k.add(x_c, k.mul(id_m, h.size * geo.w.size), k.mul(ih_m, geo.w.size)),
                        k.add(w_c, k.mul(k.add(k.mul(kd, h.kernel), kh), geo.w.kernel * tap_stride))))
            tap_plane(k, geo.mode, d, id_, plane)


def add_row(k: Kernel, geo: ConvGeometry, row: ir.Value, other: ir.Value) -> None:
    """row[ow] += other[ow] over an output row."""
    with k.loop(0, geo.w.out, "residual") as ow:
        k.store(k.builder.fadd(k.load(row, ow), k.load(other, ow)), row, ow)


def activate_row(k: Kernel, geo: ConvGeometry, row: ir.Value) -> None:
    if geo.activation:
        with k.loop(0, geo.w.out, "act") as ow:
            k.store(activate(k, geo.activation, k.load(row, ow)), row, ow)


# the two loop structures ---------------------------------------------------------------------


def map_index(index: int, size: int, mode: str) -> int | None:
    """Compile-time twin of Kernel.border_index: the source index, or None for a zero."""
    if 0 <= index < size:
        return index
    if mode == "zeros":
        return None
    if mode == "circular":
        return index + size if index < 0 else index - size
    if mode == "reflect":
        return -index if index < 0 else 2 * size - 2 - index
    return 0 if index < 0 else size - 1


@dataclass(frozen=True)
class RowPhase:
    """Outputs first + step*q (q < count) of a row; tap k reads input column q*in_stride + offset
    for each (k, offset) in `taps`, an arithmetic progression in both."""

    first: int
    step: int
    count: int
    in_stride: int
    taps: tuple[tuple[int, int], ...]

    @property
    def tap_count(self) -> int:
        return len(self.taps)

    def interior(self, size: int) -> tuple[int, int]:
        """[start, stop) of q whose every tap reads inside an input row of `size`."""
        if not self.taps:
            return 0, self.count
        low, high = min(o for _, o in self.taps), max(o for _, o in self.taps)
        start = min(self.count, max(0, -(low // self.in_stride)))
        stop = min(self.count, max(0, (size - 1 - high) // self.in_stride + 1))
        return start, max(start, stop)

    def progression(self) -> tuple[int, int, int, int]:
        """(first tap, tap step, first offset, offset step) of the taps."""
        (k0, o0), (k1, o1) = self.taps[0], self.taps[1] if len(self.taps) > 1 else (self.taps[0][0] + 1, 0)
        return k0, k1 - k0, o0, (o1 - o0) if len(self.taps) > 1 else 0


def conv_row(axis: Axis) -> list[RowPhase]:
    """A forward conv's row: one phase, tap kw reading column ow*stride + kw*dilation - pad_lo."""
    taps = tuple((kw, kw * axis.dilation - axis.pad_lo) for kw in range(axis.kernel))
    return [RowPhase(0, 1, axis.out, axis.stride, taps)]


def transposed_row(axis: Axis) -> list[RowPhase]:
    """A transposed conv's row: output o receives input i through tap k when
    o + pad_lo = i*stride + k*dilation; outputs of one residue modulo the stride form a phase."""
    phases = []
    for first in range(min(axis.stride, axis.out)):
        taps = tuple((k, (first + axis.pad_lo - k * axis.dilation) // axis.stride) for k in range(axis.kernel)
                     if (first + axis.pad_lo - k * axis.dilation) % axis.stride == 0)
        phases.append(RowPhase(first, axis.stride, -(-(axis.out - first) // axis.stride), 1, taps))
    return phases
