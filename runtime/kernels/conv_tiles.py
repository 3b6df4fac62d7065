"""Register tiles of the convolutions: R output channels x T vectors of an output row in
registers, accumulated over (input channel, kd, kh) with the kw taps unrolled; per tap T vector
loads of the input row, R weight broadcasts and R*T vector FMAs. The row is covered by bulk
tiles where every tap reads inside the input and by edge vectors at compile-time positions,
whose lanes outside the input are zeros or the padding mode's source, chosen at compile time
(on a row of run-time length: bulk bounds computed at run time, border vectors checked lane by
lane at run time, their loads and stores masked).
`TileOperands` says where a tile reads and writes, so other kernels (separable) reuse them."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import llvmlite.ir as ir

from convc.symbolic import generic_of

from ..codegen import Kernel, constant, i64
from ..jit import HostTarget
from .conv_geometry import MAX_EDGE_VECTORS, MAX_UNROLLED_TAPS, Axis, ConvGeometry, for_taps, map_index, out_row
from .elementwise import activate

MAX_STEP_FMAS = 32  # FMAs per step of a tile's taps (see tap_step)


@dataclass(frozen=True)
class Tiling:
    """A register tile: `channels` output channels x `vectors` vectors of `lanes` outputs."""

    channels: int
    vectors: int
    lanes: int


@dataclass(frozen=True)
class TileOperands:
    """Where register tiles read and write: base pointers, the output row of (co, od, oh), and the
    weight layout as element strides between out channels, in-group channels and taps (taps are
    (kd, kh, kw) flattened), and the row of a residual added before the activation (None: no
    residual). The conv kernel's own: out/x/w/bias/residual arguments, torch's layout."""

    x: ir.Value
    w: ir.Value
    bias: ir.Value | None
    out_row: Callable[[ir.Value, ir.Value, ir.Value], ir.Value]
    co_stride: int
    ci_stride: int
    tap_stride: int
    residual_row: Callable[[ir.Value, ir.Value, ir.Value], ir.Value] | None = None


def conv_operands(k: Kernel, geo: ConvGeometry, n: ir.Value) -> TileOperands:
    return TileOperands(k.args[1], k.args[2], k.args[3] if geo.has_bias else None,
                        lambda co, od, oh: out_row(k, geo, n, co, od, oh),
                        geo.cin_g * geo.k_plane, geo.k_plane, 1,
                        (lambda co, od, oh: out_row(k, geo, n, co, od, oh, k.args[4])) if geo.has_residual else None)


def tile_shape(host: HostTarget, dtype: str, out_channels: int) -> Tiling:
    """The register tile on this host for `out_channels` output channels per group.

    Accumulators take half the vector registers (AVX2: R=4 x T=2 of 16; AVX-512: 4 x 4 of 32):
    LLVM schedules a tap's weight broadcasts ahead of its FMAs, and a tile that fills every
    register spills (measured on znver3: 4x3 ran at 39 GFLOP/s on resnet_1x1, 4x2 at 62)."""
    lanes = host.vector_bits // (32 if dtype == "f32" else 64)
    registers = 32 if host.vector_bits == 512 else 16
    channels = min(4, out_channels)
    return Tiling(channels, max(1, min(4, registers // 2 // channels)), lanes)


def choose_tiling(geo: ConvGeometry, host: HostTarget, dtype: str) -> Tiling | None:
    """The register tile for this conv on this host, or None where the row code is the better fit
    (strides above 2 along the row, rows narrower than one vector, very wide borders)."""
    tiling = tile_shape(host, dtype, geo.cout_g)
    axis = generic_axis(geo.w)
    if axis.stride > 2 or axis.out < tiling.lanes or axis.kernel > MAX_UNROLLED_TAPS:
        return None
    start, stop = axis.interior()
    if max(start, axis.out - stop) > MAX_EDGE_VECTORS * tiling.lanes:
        return None
    return tiling


def cover(start: int, stop: int, count: int, lanes: int, vectors: int) -> tuple[int, int, int, list[int]]:
    """How vectors cover outputs [0, count) whose taps all read inside the input on [start, stop):
    (bulk start, bulk tiles, rest vectors, edge positions). The bulk runs from `start` in tiles of
    `vectors` vectors (then `rest` single vectors); edge vectors at compile-time positions cover
    what is left on both sides, overlapping the bulk where needed (overlapping outputs are
    computed twice, identically); an edge vector never starts past count - lanes."""
    full = (stop - start) // lanes
    tiles, rest = divmod(full, vectors)
    last = max(0, count - lanes)
    edges = [min(p, last) for p in range(0, start, lanes)]
    edges += [min(p, last) for p in range(start + full * lanes, count, lanes)]
    return start, tiles, rest, sorted(set(edges))


def row_cover(axis: Axis, lanes: int, vectors: int) -> tuple[int, int, int, list[int]]:
    """`cover` of an output row. With stride 2 a bulk vector's second load reads one element past
    its last lane, so the bulk keeps one element away from the end of the input row."""
    start, stop = (axis if axis.stride == 1 else replace(axis, size=axis.size - 1)).interior()
    return cover(start, stop, axis.out, lanes, vectors)


def row_parts(geo: ConvGeometry, tiling: Tiling, rows: int, wanted: int) -> int:
    """Parts to split each output row's bulk tiles into, so that `rows` rows make about `wanted`
    jobs of a parallel loop (a 1-D conv of batch 1 is a single row)."""
    axis = generic_axis(geo.w)  # a row of run-time length: planned at the generic point
    _, main_tiles, _, _ = row_cover(axis, tiling.lanes, tiling.vectors)
    return max(1, min(main_tiles, -(-wanted // rows)))


def generic_axis(axis: Axis) -> Axis:
    """The axis with its symbolic lengths at their generic values (for plans, not for code)."""
    return replace(axis, size=generic_of(axis.size), out=generic_of(axis.out)) if axis.symbolic else axis


def tile_row(k: Kernel, geo: ConvGeometry, tiling: Tiling, n: ir.Value, group: ir.Value, od: ir.Value,
             oh: ir.Value, operands: TileOperands, part: ir.Value | None = None, parts: int = 1) -> None:
    """Every output channel of `group` on output row (od, oh), or on part `part` of its `parts`
    (the edge vectors in part 0, a share of the bulk tiles in each, the rest vectors in the last):
    register tiles through the fused activation, which each tile applies before its store (a
    position that an edge vector and the bulk both cover is written twice, identically)."""
    if geo.w.symbolic:
        _symbolic_tile_row(k, geo, tiling, n, group, od, oh, operands, part, parts)
        return
    lanes, vectors = tiling.lanes, tiling.vectors
    start, main_tiles, rest_vectors, edges = row_cover(geo.w, lanes, vectors)
    blocks, tail = divmod(geo.cout_g, tiling.channels)
    b = k.builder
    for channels, first, count in ((tiling.channels, 0, blocks), (tail, blocks * tiling.channels, 1)):
        if channels == 0 or count == 0:
            continue
        with k.loop(0, count, "block") as block:
            co0 = k.add(k.mul(group, geo.cout_g), first, k.mul(block, channels))
            tile = _TileContext(k, geo, n, group, co0, channels, lanes, operands)
            with k.when(b.icmp_unsigned("==", part, i64(0)) if parts > 1 else None):
                for chunk in range(0, len(edges), vectors):
                    tile.emit(od, oh, edges[chunk:chunk + vectors], None)
            low = b.udiv(k.mul(part, main_tiles), i64(parts)) if parts > 1 else i64(0)
            high = b.udiv(k.mul(k.add(part, 1), main_tiles), i64(parts)) if parts > 1 else i64(main_tiles)
            with k.loop(low, high, "tile") as index:
                tile.emit(od, oh, [t * lanes for t in range(vectors)], k.add(start, k.mul(index, vectors * lanes)))
            if rest_vectors:
                with k.when(b.icmp_unsigned("==", part, i64(parts - 1)) if parts > 1 else None):
                    tile.emit(od, oh, [t * lanes for t in range(rest_vectors)], start + main_tiles * vectors * lanes)


def _symbolic_tile_row(k: Kernel, geo: ConvGeometry, tiling: Tiling, n: ir.Value, group: ir.Value, od: ir.Value,
                       oh: ir.Value, operands: TileOperands, part: ir.Value | None, parts: int) -> None:
    """tile_row on a row of run-time length: the bulk [start, stop) and its tile count computed at
    run time (clamped to the row), the left border in checked vectors at compile-time positions,
    the right border in checked vectors from the bulk's end to the row's end (a checked vector
    masks its loads to the input and its stores to the row)."""
    lanes, vectors, axis, b = tiling.lanes, tiling.vectors, geo.w, k.builder
    out = k.value(axis.out)
    start_bound = -(-axis.pad_lo // axis.stride)
    readable = axis.size if axis.stride == 1 else axis.size - 1  # a stride-2 bulk vector reads one past
    stop_bound = k.value((readable - 1 - axis.dilation * (axis.kernel - 1) + axis.pad_lo) // axis.stride + 1)
    start = _smin(k, i64(start_bound), out)
    stop = _smax(k, start, _smin(k, stop_bound, out))
    full = b.udiv(b.sub(stop, start), i64(lanes))
    main_tiles, rest = b.udiv(full, i64(vectors)), b.urem(full, i64(vectors))
    bulk_end = k.add(start, k.mul(full, lanes))
    left = list(range(0, start_bound, lanes))
    blocks, tail = divmod(geo.cout_g, tiling.channels)
    first_part = b.icmp_unsigned("==", part, i64(0)) if parts > 1 else None
    last_part = b.icmp_unsigned("==", part, i64(parts - 1)) if parts > 1 else None
    for channels, first, count in ((tiling.channels, 0, blocks), (tail, blocks * tiling.channels, 1)):
        if channels == 0 or count == 0:
            continue
        with k.loop(0, count, "block") as block:
            co0 = k.add(k.mul(group, geo.cout_g), first, k.mul(block, channels))
            tile = _TileContext(k, geo, n, group, co0, channels, lanes, operands)
            with k.when(first_part):
                for chunk in range(0, len(left), vectors):
                    tile.emit(od, oh, [p - left[chunk] for p in left[chunk:chunk + vectors]], i64(left[chunk]), True)
            low = b.udiv(k.mul(part, main_tiles), i64(parts)) if parts > 1 else i64(0)
            high = b.udiv(k.mul(k.add(part, 1), main_tiles), i64(parts)) if parts > 1 else main_tiles
            with k.loop(low, high, "tile") as index:
                tile.emit(od, oh, [t * lanes for t in range(vectors)], k.add(start, k.mul(index, vectors * lanes)))
            with k.when(last_part):
                with k.loop(0, rest, "rest") as index:
                    tile.emit(od, oh, [0], k.add(start, k.mul(k.add(k.mul(main_tiles, vectors), index), lanes)))
                with k.loop(0, b.udiv(k.add(b.sub(out, bulk_end), lanes - 1), i64(lanes)), "right") as index:
                    tile.emit(od, oh, [0], k.add(bulk_end, k.mul(index, lanes)), True)


def _smin(k: Kernel, a: ir.Value, b: ir.Value) -> ir.Value:
    return k.builder.select(k.builder.icmp_signed("<", a, b), a, b)


def _smax(k: Kernel, a: ir.Value, b: ir.Value) -> ir.Value:
    return k.builder.select(k.builder.icmp_signed(">", a, b), a, b)


def tap_step(kernel: int, fmas_per_tap: int) -> int:
    """Taps a tile unrolls per step (a bulk tile's tap loop, an edge tile's pass over the input
    channels): all of them while that is at most MAX_STEP_FMAS FMAs, else as many steps as that
    bound asks for, of equal taps (the remainder after them). A longer loop-free run of taps is
    scheduled by LLVM with every load hoisted ahead of the FMAs, into spills (znver5, 4x4 tile of
    k11: 176 FMAs with 146 stack accesses, 35% of the peak)."""
    steps = -(-kernel * fmas_per_tap // MAX_STEP_FMAS)
    return max(1, kernel // steps)


def gather_vector(k: Kernel, x_row: ir.Value, sources: list[int | None], size: int) -> ir.Value | None:
    """A vector of x_row[sources[lane]] (zero where None) from compile-time indices into a row of
    `size`: one load and a constant shuffle where the sources fit one in-bounds window, else one
    scalar load per lane; None if every lane is zero."""
    lanes = len(sources)
    valid = [s for s in sources if s is not None]
    if not valid:
        return None
    zero = ir.Constant(k.vector_type(lanes), None)
    if size >= lanes:
        window = min(max(min(valid), 0), size - lanes)
        if all(window <= s < window + lanes for s in valid):
            loaded = k.vload(x_row, window, lanes)
            if sources == list(range(window, window + lanes)):
                return loaded
            mask = [lanes if s is None else s - window for s in sources]
            return k.builder.shuffle_vector(loaded, zero, constant(ir.VectorType(ir.IntType(32), lanes), mask))
    vector = zero
    for lane, source in enumerate(sources):
        if source is not None:
            vector = k.builder.insert_element(vector, k.load(x_row, source), ir.Constant(ir.IntType(32), lane))
    return vector


class _TileContext:
    """Emits register tiles of `channels` output channels of one (batch, group, channel block)."""

    def __init__(self, k: Kernel, geo: ConvGeometry, n: ir.Value, group: ir.Value, co0: ir.Value,
                 channels: int, lanes: int, operands: TileOperands) -> None:
        self.k, self.geo, self.n, self.co0 = k, geo, n, co0
        self.channels, self.lanes, self.operands = channels, lanes, operands
        self.x_base = k.add(k.mul(n, geo.c_in * geo.in_plane), k.mul(group, geo.cin_g * geo.in_plane))

    def _edge_vector(self, x_row: ir.Value, first: int) -> ir.Value | None:
        """The input lanes first, first+stride, ... of a row (padding applied), or None if all zero."""
        stride = self.geo.w.stride
        sources = [map_index(first + lane * stride, self.geo.w.size, self.geo.mode) for lane in range(self.lanes)]
        return gather_vector(self.k, x_row, sources, self.geo.w.size)

    def _bulk_vector(self, x_row: ir.Value, first: int) -> ir.Value:
        """Input lanes first, first+stride, ... of a row, all in bounds: one load, or for stride 2
        two loads and an even-lane shuffle."""
        k, lanes = self.k, self.lanes
        if self.geo.w.stride == 1:
            return k.vload(x_row, first, lanes)
        low, high = k.vload(x_row, first, lanes), k.vload(x_row, first + lanes, lanes)
        mask = constant(ir.VectorType(ir.IntType(32), lanes), [2 * lane for lane in range(lanes)])
        return k.builder.shuffle_vector(low, high, mask)

    def _checked_vector(self, x_row: ir.Value, first: ir.Value) -> ir.Value:
        """Input lanes first, first+stride, ... of a row whose length is a run-time value, checked
        at run time: masked loads where the padding is zeros, else lane by lane through the mode."""
        k, lanes, stride, size = self.k, self.lanes, self.geo.w.stride, self.geo.w.size
        if self.geo.mode != "zeros":
            vector = ir.Constant(k.vector_type(lanes), None)
            for lane in range(lanes):
                source, _ = k.border_index(k.add(first, lane * stride), size, self.geo.mode)
                vector = k.builder.insert_element(vector, k.load(x_row, source), ir.Constant(ir.IntType(32), lane))
            return vector
        if stride == 1:
            return k.vload_masked(x_row, first, lanes, k.lane_mask(first, lanes, size))
        second = k.add(first, lanes)
        low = k.vload_masked(x_row, first, lanes, k.lane_mask(first, lanes, size))
        high = k.vload_masked(x_row, second, lanes, k.lane_mask(second, lanes, size))
        mask = constant(ir.VectorType(ir.IntType(32), lanes), [2 * lane for lane in range(lanes)])
        return k.builder.shuffle_vector(low, high, mask)

    def emit(self, od: ir.Value, oh: ir.Value, offsets: list[int], ow0: ir.Value | int | None,
             checked: bool = False) -> None:
        """One tile: vectors at ow0 + offsets (bulk: every tap in bounds), or, with ow0 None, at the
        compile-time columns `offsets` (edges: lanes outside the input padded by mode), or, with
        `checked`, at ow0 + offsets on a row of run-time length, every lane checked at run time."""
        k, geo, lanes, channels, ops = self.k, self.geo, self.lanes, self.channels, self.operands
        b = k.builder
        vectors = len(offsets)
        slots = [[k.alloca(k.vector_type(lanes), f"acc{r}_{t}") for t in range(vectors)] for r in range(channels)]
        for r in range(channels):
            bias = k.load(ops.bias, k.add(self.co0, r)) if ops.bias is not None else k.const(0.0)
            for t in range(vectors):
                b.store(k.splat(bias, lanes), slots[r][t])

        def add_taps(x_row: ir.Value, w_tap: ir.Value, kws: range, column: ir.Value | None = None) -> None:
            acc = [[b.load(slots[r][t]) for t in range(vectors)] for r in range(channels)]
            for kw in kws:
                shift = kw * geo.w.dilation
                if checked:  # column: the input index of this step's first tap at ow0
                    inputs = [self._checked_vector(x_row, k.add(column, o * geo.w.stride + shift)) for o in offsets]
                elif ow0 is None:
                    inputs = [self._edge_vector(x_row, o * geo.w.stride + shift - geo.w.pad_lo) for o in offsets]
                else:
                    inputs = [self._bulk_vector(x_row, o * geo.w.stride + shift) for o in offsets]
                if all(v is None for v in inputs):
                    continue
                for r in range(channels):
                    weight = k.splat(k.load(w_tap, r * ops.co_stride + kw * ops.tap_stride), lanes)
                    for t, value in enumerate(inputs):
                        if value is not None:
                            acc[r][t] = k.vfma(weight, value, acc[r][t])
            for r in range(channels):
                for t in range(vectors):
                    b.store(acc[r][t], slots[r][t])

        step = tap_step(geo.w.kernel, channels * vectors)
        steps = geo.w.kernel // step

        def bulk_taps(x_off: ir.Value, w_off: ir.Value) -> None:
            w_tap = k.offset(ops.w, w_off)
            column = k.add(k.mul(ow0, geo.w.stride), -geo.w.pad_lo) if checked else None
            x_row = k.offset(ops.x, x_off if checked else k.add(x_off, k.mul(ow0, geo.w.stride), -geo.w.pad_lo))
            if steps > 1:  # a loop over steps of taps: one step's FMAs fit the registers
                with k.loop(0, steps, "kw") as index:
                    first = k.mul(index, step)
                    w_step = k.offset(w_tap, k.mul(first, ops.tap_stride))
                    if checked:
                        add_taps(x_row, w_step, range(step), k.add(column, k.mul(first, geo.w.dilation)))
                    else:
                        add_taps(k.offset(x_row, k.mul(first, geo.w.dilation)), w_step, range(step))
            add_taps(x_row, w_tap, range(steps * step if steps > 1 else 0, geo.w.kernel), column)

        def edge_taps(kws: range) -> Callable[[ir.Value, ir.Value], None]:
            return lambda x_off, w_off: add_taps(k.offset(ops.x, x_off), k.offset(ops.w, w_off), kws)

        # an edge tile's vectors differ from tap to tap (compile-time lanes): a pass over the input
        # channels per step of taps, the accumulators carried between the passes
        passes = [bulk_taps] if ow0 is not None else [
            edge_taps(range(first, min(first + step, geo.w.kernel))) for first in range(0, geo.w.kernel, step)]
        for taps in passes:
            for_taps(k, geo, self.x_base, k.mul(self.co0, ops.co_stride), od, oh, taps, ops.ci_stride,
                     ops.tap_stride)
        masks = [k.lane_mask(k.add(ow0, offset), lanes, geo.w.out) for offset in offsets] if checked else None
        for r in range(channels):
            co = k.add(self.co0, r)
            row = ops.out_row(co, od, oh)
            residual = None if ops.residual_row is None else ops.residual_row(co, od, oh)
            for t, offset in enumerate(offsets):
                column = offset if ow0 is None else k.add(ow0, offset)
                value = b.load(slots[r][t])
                if residual is not None:
                    value = b.fadd(value, k.vload_masked(residual, column, lanes, masks[t]) if checked
                                   else k.vload(residual, column, lanes))
                value = activate(k, geo.activation, value)
                if checked:
                    k.vstore_masked(value, row, column, masks[t])
                else:
                    k.vstore(value, row, column)
