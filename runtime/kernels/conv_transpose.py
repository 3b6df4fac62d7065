"""Kernel emitter for conv_transpose1d/2d/3d: per output phase, a register-tiled correlation.

Output o of an axis receives input i through tap k when o = i*stride + k*dilation - pad_lo.
Along the row, the outputs of one phase ph (o = ph + stride*q) receive, from each tap k with
(ph + pad_lo - k*dilation) divisible by the stride, the input q + c_k with
c_k = (ph + pad_lo - k*dilation) / stride: a stride-1 correlation over contiguous inputs. Each
phase is computed in register tiles of R output channels x T vectors of q (as the forward conv:
bulk tiles where every tap reads inside the input, compile-time edge vectors elsewhere),
accumulating over (input channel, kd, kh) for the rows whose input exists; the finished lanes
are stored to their outputs ph + stride*q. No zero-inserted copy of the input is made, and no
FMA multiplies an inserted zero.

Where those compile-time structures would grow with the sizes (more than MAX_UNROLLED_TAPS
taps or phases, or borders wider than MAX_EDGE_VECTORS vectors), a gather kernel runs instead: each
input row adds w * x into the outputs i*stride + shift, a progression computed at run time.

On a row of run-time length (a symbolic size), each phase's output count and bulk bounds are
computed at run time and its borders are vectors checked at run time (masked loads, stores
guarded per lane); the gather kernel's bounds are run-time values anyway.
"""
from __future__ import annotations

from dataclasses import astuple, replace
from typing import Any, Callable

import llvmlite.ir as ir

from convc.op_conv import conv_transpose_pads, spatial_rank
from convc.types import TensorType

from ..codegen import Kernel, i64
from ..jit import host_target
from .conv_geometry import (MAX_EDGE_VECTORS, MAX_UNROLLED_TAPS, Axis, ConvGeometry, RowPhase, activate_row,
                            divmod_index, out_row, transposed_row)
from .conv_tiles import cover, gather_vector, generic_axis, tile_shape


def transpose_geometry(attrs: dict[str, Any], in_types: list[TensorType], out: TensorType, op: str) -> ConvGeometry:
    rank = spatial_rank(op)
    x, w = in_types[0], in_types[1]
    lo, _ = conv_transpose_pads(attrs)
    axes = [Axis(x.shape[-rank + i], out.shape[-rank + i], w.shape[2 + i], attrs["stride"][i],
                 attrs["dilation"][i], lo[i]) for i in range(rank)]
    d, h, w_axis = [Axis(1, 1, 1, 1, 1, 0)] * (3 - rank) + axes
    return ConvGeometry(x.shape[0] if x.rank == rank + 2 else 1, x.shape[-rank - 1], w.shape[1] * attrs["groups"],
                        attrs["groups"], d, h, w_axis, "zeros", len(in_types) > 2, attrs.get("activation"))


def phase_cover(phase: RowPhase, size: int, lanes: int, vectors: int) -> tuple[int, int, int, list[int]] | None:
    """conv_tiles.cover of one phase, or None where the borders would need more than
    MAX_EDGE_VECTORS edge vectors a side; an edge position may leave lanes past the phase's end,
    which are not stored."""
    start, stop = phase.interior(size)
    full = (stop - start) // lanes
    if max(start, phase.count - start - full * lanes) > MAX_EDGE_VECTORS * lanes:
        return None
    return cover(start, stop, phase.count, lanes, vectors)


def _source_row(k: Kernel, axis: Axis, out_index: ir.Value, tap: ir.Value) -> tuple[ir.Value, ir.Value | None]:
    """(input index, valid) reaching output out_index through tap; valid None when always valid."""
    if axis.trivial:
        return out_index, None
    b = k.builder
    numerator = k.add(out_index, axis.pad_lo, b.neg(k.mul(tap, axis.dilation)))
    if axis.stride == 1:
        return numerator, k.inside(numerator, axis.size)
    index = b.sdiv(numerator, i64(axis.stride))
    divisible = b.icmp_signed("==", b.srem(numerator, i64(axis.stride)), i64(0))
    return index, b.and_(divisible, k.inside(index, axis.size))


def _for_input_rows(k: Kernel, geo: ConvGeometry, od: ir.Value, oh: ir.Value,
                    body: Callable[[ir.Value, ir.Value, ir.Value, ir.Value], None]) -> None:
    """body(kd, kh, id, ih) for every (kd, kh) tap whose input row (id, ih) reaches output row (od, oh)."""
    with k.loop(0, geo.d.kernel, "kd") as kd:
        id_, valid_d = _source_row(k, geo.d, od, kd)
        with k.when(valid_d), k.loop(0, geo.h.kernel, "kh") as kh:
            ih, valid_h = _source_row(k, geo.h, oh, kh)
            with k.when(valid_h):
                body(kd, kh, id_, ih)


def emit_conv_transpose(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
                        out_type: TensorType, op: str) -> Kernel:
    geo = transpose_geometry(attrs, in_types, out_type, op)
    k = Kernel(module, name, out_type.dtype, 4 if geo.has_bias else 3, ("out", "x", "w", "bias"))
    channels, vectors, lanes = astuple(tile_shape(host_target(), out_type.dtype, geo.cout_g))
    if max(geo.w.kernel, geo.w.stride) > MAX_UNROLLED_TAPS:
        _emit_gather(k, geo)
        return k.finish()
    axis = generic_axis(geo.w)  # a row of run-time length is planned at the generic point
    phases = transposed_row(axis)
    covers = [phase_cover(phase, axis.size, lanes, vectors) for phase in phases]
    if any(cover is None for cover in covers):
        _emit_gather(k, geo)
        return k.finish()
    if geo.w.symbolic:
        _emit_symbolic_phases(k, geo, channels, vectors, lanes)
        return k.finish()
    blocks, tail = divmod(geo.cout_g, channels)
    with k.outer_loop(geo.batch * geo.groups * geo.d.out * geo.h.out, "row") as row:
        ng_od, oh = divmod_index(k, row, geo.h.out)
        ng, od = divmod_index(k, ng_od, geo.d.out)
        n, group = divmod_index(k, ng, geo.groups)
        for count_r, first, count in ((channels, 0, blocks), (tail, blocks * channels, 1)):
            if count_r == 0 or count == 0:
                continue
            with k.loop(0, count, "block") as block:
                co_local = k.add(first, k.mul(block, count_r))
                tile = _PhaseTiles(k, geo, n, group, co_local, count_r, lanes, od, oh)
                for phase, (start, main_tiles, rest, edges) in zip(phases, covers):
                    for chunk in range(0, len(edges), vectors):
                        tile.emit(phase, edges[chunk:chunk + vectors], None)
                    with k.loop(0, main_tiles, "tile") as index:
                        tile.emit(phase, [t * lanes for t in range(vectors)],
                                  k.add(start, k.mul(index, vectors * lanes)))
                    if rest:
                        tile.emit(phase, [t * lanes for t in range(rest)], start + main_tiles * vectors * lanes)
                if geo.activation:
                    co0 = k.add(k.mul(group, geo.cout_g), co_local)
                    with k.loop(0, count_r, "r") as r:
                        activate_row(k, geo, out_row(k, geo, n, k.add(co0, r), od, oh))
    return k.finish()


def _emit_symbolic_phases(k: Kernel, geo: ConvGeometry, channels: int, vectors: int, lanes: int) -> None:
    """The phase tiles on a row of run-time length: per phase its output count and the bulk
    [start, stop) of q computed at run time (clamped to the phase), the left border in checked
    vectors at compile-time positions, the right border in checked vectors to the phase's end."""
    b, w = k.builder, geo.w
    phases = transposed_row(replace(w, out=w.stride))  # the taps of each phase: no length in them
    out, size = k.value(w.out), k.value(w.size)
    blocks, tail = divmod(geo.cout_g, channels)
    with k.outer_loop(geo.batch * geo.groups * geo.d.out * geo.h.out, "row") as row:
        ng_od, oh = divmod_index(k, row, geo.h.out)
        ng, od = divmod_index(k, ng_od, geo.d.out)
        n, group = divmod_index(k, ng, geo.groups)
        for count_r, first, count in ((channels, 0, blocks), (tail, blocks * channels, 1)):
            if count_r == 0 or count == 0:
                continue
            with k.loop(0, count, "block") as block:
                co_local = k.add(first, k.mul(block, count_r))
                tile = _PhaseTiles(k, geo, n, group, co_local, count_r, lanes, od, oh)
                for phase in phases:
                    phase_count = _smax(k, b.sdiv(k.add(out, w.stride - 1 - phase.first), i64(w.stride)), i64(0))
                    low = min((o for _, o in phase.taps), default=0)
                    high = max((o for _, o in phase.taps), default=0)
                    start_bound = max(0, -low)
                    start = _smin(k, i64(start_bound), phase_count)
                    stop = _smax(k, start, _smin(k, k.add(size, -high), phase_count))
                    full = b.udiv(b.sub(stop, start), i64(lanes))
                    main_tiles, rest = b.udiv(full, i64(vectors)), b.urem(full, i64(vectors))
                    left = list(range(0, start_bound, lanes))
                    for chunk in range(0, len(left), vectors):
                        tile.emit(phase, [p - left[chunk] for p in left[chunk:chunk + vectors]], i64(left[chunk]),
                                  phase_count)
                    with k.loop(0, main_tiles, "tile") as index:
                        tile.emit(phase, [t * lanes for t in range(vectors)], k.add(start, k.mul(index, vectors * lanes)))
                    with k.loop(0, rest, "rest") as index:
                        tile.emit(phase, [0], k.add(start, k.mul(k.add(k.mul(main_tiles, vectors), index), lanes)))
                    bulk_end = k.add(start, k.mul(full, lanes))
                    right = b.udiv(k.add(b.sub(phase_count, bulk_end), lanes - 1), i64(lanes))
                    with k.loop(0, right, "right") as index:
                        tile.emit(phase, [0], k.add(bulk_end, k.mul(index, lanes)), phase_count)
                if geo.activation:
                    co0 = k.add(k.mul(group, geo.cout_g), co_local)
                    with k.loop(0, count_r, "r") as r:
                        activate_row(k, geo, out_row(k, geo, n, k.add(co0, r), od, oh))


class _PhaseTiles:
    """Register tiles of `channels` output channels for one output row of a transposed conv."""

    def __init__(self, k: Kernel, geo: ConvGeometry, n: ir.Value, group: ir.Value, co_local: ir.Value,
                 channels: int, lanes: int, od: ir.Value, oh: ir.Value) -> None:
        self.k, self.geo, self.channels, self.lanes = k, geo, channels, lanes
        self.cin_g = geo.c_in // geo.groups
        self.co0 = k.add(k.mul(group, geo.cout_g), co_local)
        self.rows = [out_row(k, geo, n, k.add(self.co0, r), od, oh) for r in range(channels)]
        self.x_base = k.mul(k.add(k.mul(n, geo.c_in), k.mul(group, self.cin_g)), geo.in_plane)
        # weight (ci, co_local, kd, kh, kw): neighbouring out channels are one kernel apart
        self.w_base = k.add(k.mul(k.mul(group, self.cin_g), geo.cout_g * geo.k_plane), k.mul(co_local, geo.k_plane))
        self.od, self.oh = od, oh

    def emit(self, phase: RowPhase, offsets: list[int], q0: ir.Value | int | None,
             checked: ir.Value | None = None) -> None:
        """One tile of the phase: vectors at q0 + offsets (bulk), or at the compile-time positions
        `offsets` (edges: lanes outside the input are zero, lanes past the phase are not stored);
        `checked`, the phase's output count on a row of run-time length: vectors at q0 + offsets
        whose input lanes are checked at run time, lanes at or past the count not stored."""
        k, geo, lanes, channels = self.k, self.geo, self.lanes, self.channels
        b = k.builder
        vectors = len(offsets)
        slots = [[k.alloca(k.vector_type(lanes), f"tacc{r}_{t}") for t in range(vectors)] for r in range(channels)]
        for r in range(channels):
            bias = k.splat(k.load(k.args[3], k.add(self.co0, r)) if geo.has_bias else k.const(0.0), lanes)
            for t in range(vectors):
                b.store(bias, slots[r][t])
        if phase.taps:
            self._accumulate(phase, offsets, q0, slots, checked is not None)
        stride = geo.w.stride
        masks = [k.lane_mask(k.add(q0, offset), lanes, checked) for offset in offsets] if checked is not None else None
        for r in range(channels):
            for t, offset in enumerate(offsets):
                value = b.load(slots[r][t])
                if q0 is not None and stride == 1:
                    if checked is not None:
                        k.vstore_masked(value, self.rows[r], k.add(q0, offset + phase.first), masks[t])
                    else:
                        k.vstore(value, self.rows[r], k.add(q0, offset + phase.first))
                    continue
                for lane in range(lanes):
                    if q0 is None and offset + lane >= phase.count:
                        break
                    q = k.add(offset + lane) if q0 is None else k.add(q0, offset + lane)
                    element = b.extract_element(value, ir.Constant(ir.IntType(32), lane))
                    with k.when(b.extract_element(masks[t], ir.Constant(ir.IntType(32), lane))
                                if checked is not None else None):
                        k.store(element, self.rows[r], k.add(k.mul(q, stride), phase.first))

    def _accumulate(self, phase: RowPhase, offsets: list[int], q0: ir.Value | int | None,
                    slots: list[list[ir.Value]], checked: bool = False) -> None:
        k, geo, lanes, channels = self.k, self.geo, self.lanes, self.channels
        b = k.builder
        with k.loop(0, self.cin_g, "ci") as ci:
            x_c = k.add(self.x_base, k.mul(ci, geo.in_plane))
            w_c = k.add(self.w_base, k.mul(ci, geo.cout_g * geo.k_plane))

            def row_taps(kd: ir.Value, kh: ir.Value, id_: ir.Value, ih: ir.Value) -> None:
                x_off = k.add(x_c, k.mul(id_, geo.h.size * geo.w.size), k.mul(ih, geo.w.size))
                x_row = k.offset(k.args[1], x_off if q0 is None or checked else k.add(x_off, q0))
                w_tap = k.offset(k.args[2], k.add(w_c, k.mul(k.add(k.mul(kd, geo.h.kernel), kh),
                                                             geo.w.kernel)))
                acc = [[b.load(slots[r][t]) for t in range(len(offsets))] for r in range(channels)]
                for tap, shift in phase.taps:
                    if checked:  # lanes q0 + o + shift + lane, masked to the input row
                        inputs = [k.vload_masked(x_row, column, lanes, k.lane_mask(column, lanes, geo.w.size))
                                  for column in (k.add(q0, o + shift) for o in offsets)]
                    elif q0 is None:
                        inputs = [gather_vector(k, x_row, [o + lane + shift if 0 <= o + lane + shift < geo.w.size
                                                           else None for lane in range(lanes)], geo.w.size)
                                  for o in offsets]
                    else:
                        inputs = [k.vload(x_row, o + shift, lanes) for o in offsets]
                    if all(v is None for v in inputs):
                        continue
                    for r in range(channels):
                        weight = k.splat(k.load(w_tap, r * geo.k_plane + tap), lanes)
                        for t, value in enumerate(inputs):
                            if value is not None:
                                acc[r][t] = k.vfma(weight, value, acc[r][t])
                for r in range(channels):
                    for t in range(len(offsets)):
                        b.store(acc[r][t], slots[r][t])

            _for_input_rows(k, geo, self.od, self.oh, row_taps)


def _ceil_div(k: Kernel, numerator: ir.Value, divisor: int) -> ir.Value:
    """ceil(numerator / divisor) for a signed numerator and a positive divisor."""
    b = k.builder
    quotient = b.sdiv(numerator, i64(divisor))
    return b.add(quotient, b.zext(b.icmp_signed(">", b.srem(numerator, i64(divisor)), i64(0)), quotient.type))


def _emit_gather(k: Kernel, geo: ConvGeometry) -> None:
    """Per (batch, out channel) output row: every (input channel, kd, kh) input row whose taps
    reach it adds w[kw] * x[i] into out[i*stride + kw*dilation - pad_lo], all loops at run time."""
    b = k.builder
    axis, cin_g = geo.w, geo.c_in // geo.groups
    with k.outer_loop(geo.batch * geo.c_out, "nco") as nco:
        n, co = divmod_index(k, nco, geo.c_out)
        group, co_local = divmod_index(k, co, geo.cout_g)
        bias = k.load(k.args[3], co) if geo.has_bias else k.const(0.0)
        with k.loop(0, geo.d.out, "od") as od, k.loop(0, geo.h.out, "oh") as oh:
            row = out_row(k, geo, n, co, od, oh)
            with k.loop(0, axis.out, "fill") as o:
                k.store(bias, row, o)
            with k.loop(0, cin_g, "ci") as ci_local:
                ci = k.add(k.mul(group, cin_g), ci_local)
                x_channel = k.mul(k.add(k.mul(n, geo.c_in), ci), geo.in_plane)
                w_channel = k.mul(k.add(k.mul(ci, geo.cout_g), co_local), geo.k_plane)

                def row_taps(kd: ir.Value, kh: ir.Value, id_: ir.Value, ih: ir.Value) -> None:
                    x_row = k.offset(k.args[1], k.add(x_channel, k.mul(id_, geo.h.size * axis.size),
                                                      k.mul(ih, axis.size)))
                    w_row = k.offset(k.args[2], k.add(w_channel, k.mul(k.add(k.mul(kd, geo.h.kernel), kh),
                                                                       axis.kernel)))
                    with k.loop(0, axis.kernel, "kw") as kw:
                        shift = k.add(k.mul(kw, axis.dilation), -axis.pad_lo)
                        first = _smax(k, _ceil_div(k, b.neg(shift), axis.stride), i64(0))
                        end = _smin(k, _ceil_div(k, b.sub(k.value(axis.out), shift), axis.stride), k.value(axis.size))
                        weight = k.load(w_row, kw)
                        with k.loop(first, end, "i") as i:
                            o = k.add(k.mul(i, axis.stride), shift)
                            k.store(k.fma(weight, k.load(x_row, i), k.load(row, o)), row, o)

                _for_input_rows(k, geo, od, oh, row_taps)
            activate_row(k, geo, row)


def _smax(k: Kernel, a: ir.Value, b: ir.Value) -> ir.Value:
    return k.builder.select(k.builder.icmp_signed(">", a, b), a, b)


def _smin(k: Kernel, a: ir.Value, b: ir.Value) -> ir.Value:
    return k.builder.select(k.builder.icmp_signed("<", a, b), a, b)
