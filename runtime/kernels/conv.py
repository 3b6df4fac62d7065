"""Kernel emitter for conv1d/2d/3d (NCDHW, any stride, dilation, groups, padding mode).

Two loop structures share the helpers below:
- **tiled** (unit stride along the output row): a register tile of R output channels x T vectors
  of the row (`choose_tiling`) accumulates over (input channel, kd, kh) as real loops with the kw
  taps unrolled: per tap, T unaligned vector loads of the input row, R weight broadcasts, R*T
  vector FMAs. The row is split at compile time into the interior, where every tap reads inside
  the input, covered by tiles, and the border columns, done by the scalar row code.
- **rows** (any stride): per (batch, out channel, output row), each (input channel, kd, kh) tap
  row adds into the output row, which stays in L1; the interior loop has no bounds checks and
  the kw taps unrolled with their weights in registers (LLVM vectorizes it).
Border columns read through `Kernel.border_index`, which also implements circular / reflect /
replicate padding by index arithmetic (no padded copy). A fused activation (`activation`
attribute) runs over each finished output row while it is still in L1.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import llvmlite.ir as ir

from convc.op_conv import conv_pads, spatial_rank
from convc.types import TensorType

from ..codegen import Kernel
from ..jit import HostTarget, host_target
from .elementwise import SCALAR_OPS


MAX_UNROLLED_TAPS = 32  # wider rows of taps use a runtime kw loop instead of unrolled code
MAX_EDGE_VECTORS = 8  # compile-time edge vectors per row side; wider borders take the row path


@dataclass(frozen=True)
class Axis:
    """One spatial axis of a convolution, all sizes known at compile time."""

    size: int
    out: int
    kernel: int
    stride: int
    dilation: int
    pad_lo: int

    @property
    def trivial(self) -> bool:
        return self.size == 1 and self.out == 1 and self.kernel == 1 and self.pad_lo == 0

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
    activation: str | None

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
                        attrs.get("activation"))


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
    (kd, kh, kw) flattened). The conv kernel's own: out/x/w/bias arguments, torch's layout."""

    x: ir.Value
    w: ir.Value
    bias: ir.Value | None
    out_row: Callable[[ir.Value, ir.Value, ir.Value], ir.Value]
    co_stride: int
    ci_stride: int
    tap_stride: int


def conv_operands(k: Kernel, geo: ConvGeometry, n: ir.Value) -> TileOperands:
    return TileOperands(k.args[1], k.args[2], k.args[3] if geo.has_bias else None,
                        lambda co, od, oh: _out_row(k, geo, n, co, od, oh),
                        geo.cin_g * geo.k_plane, geo.k_plane, 1)


def choose_tiling(geo: ConvGeometry, host: HostTarget, dtype: str) -> Tiling | None:
    """The register tile for this conv on this host, or None where the row code is the better fit
    (strides above 2 along the row, or rows narrower than one vector).

    Accumulators take half the vector registers (AVX2: R=4 x T=2 of 16; AVX-512: 4 x 4 of 32):
    LLVM schedules a tap's weight broadcasts ahead of its FMAs, and a tile that fills every
    register spills (measured on znver3: 4x3 ran at 39 GFLOP/s on resnet_1x1, 4x2 at 62)."""
    lanes = host.vector_bits // (32 if dtype == "f32" else 64)
    if geo.w.stride > 2 or geo.w.out < lanes or geo.w.kernel > MAX_UNROLLED_TAPS:
        return None
    start, stop = geo.w.interior()
    if max(start, geo.w.out - stop) > MAX_EDGE_VECTORS * lanes:
        return None
    registers = 32 if host.vector_bits == 512 else 16
    channels = min(4, geo.cout_g)
    vectors = max(1, min(4, registers // 2 // channels))
    return Tiling(channels, vectors, lanes)


def emit_conv(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
              out_type: TensorType, op: str) -> Kernel:
    geo = conv_geometry(attrs, in_types, out_type, op)
    k = Kernel(module, name, out_type.dtype, 4 if geo.has_bias else 3, ("out", "x", "w", "bias"))
    tiling = choose_tiling(geo, host_target(), out_type.dtype)
    if tiling is None:
        _emit_rows(k, geo)
    else:
        _emit_tiled(k, geo, tiling)
    return k.finish()


# shared pieces -------------------------------------------------------------------------------
Segment = tuple[int, int, bool]  # [lo, hi) of a row, and whether every tap there is in bounds


def _divmod(k: Kernel, value: ir.Value, divisor: int) -> tuple[ir.Value, ir.Value]:
    constant = ir.Constant(value.type, divisor)
    return k.builder.udiv(value, constant), k.builder.urem(value, constant)


def _out_row(k: Kernel, geo: ConvGeometry, n: ir.Value, co: ir.Value, od: ir.Value, oh: ir.Value) -> ir.Value:
    channel = k.add(k.mul(n, geo.c_out), co)
    return k.offset(k.args[0], k.add(k.mul(channel, geo.out_plane),
                                     k.mul(k.add(k.mul(od, geo.h.out), oh), geo.w.out)))


def _bias(k: Kernel, geo: ConvGeometry, co: ir.Value) -> ir.Value:
    return k.load(k.args[3], co) if geo.has_bias else k.const(0.0)


def _tap_plane(k: Kernel, mode: str, axis: Axis, index: ir.Value, body: Callable[[ir.Value], None]) -> None:
    """Run body(mapped index) for one d (or h) tap: skipped outside the input in zeros mode."""
    if axis.trivial:
        body(index)
        return
    mapped, valid = k.border_index(index, axis.size, mode)
    if valid is None:
        body(mapped)
    else:
        with k.builder.if_then(valid):
            body(mapped)


def _for_taps(k: Kernel, geo: ConvGeometry, x_base: ir.Value, w_base: ir.Value, od: ir.Value, oh: ir.Value,
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
                    _tap_plane(k, geo.mode, h, ih, lambda ih_m: body(
                        k.add(x_c, k.mul(id_m, h.size * geo.w.size), k.mul(ih_m, geo.w.size)),
                        k.add(w_c, k.mul(k.add(k.mul(kd, h.kernel), kh), geo.w.kernel * tap_stride))))
            _tap_plane(k, geo.mode, d, id_, plane)


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
    row = _out_row(k, geo, n, co, od, oh)
    bias = _bias(k, geo, co)
    for lo, hi, _ in segments:
        with k.loop(lo, hi, "fill") as ow:
            k.store(bias, row, ow)
    x_base = k.add(k.mul(n, geo.c_in * geo.in_plane), k.mul(group, geo.cin_g * geo.in_plane))
    _for_taps(k, geo, x_base, k.mul(co, geo.cin_g * geo.k_plane), od, oh,
              lambda x_off, w_off: _tap_row(k, geo, row, k.offset(k.args[1], x_off), k.offset(k.args[2], w_off),
                                            segments), geo.k_plane, 1)


def _activate_row(k: Kernel, geo: ConvGeometry, row: ir.Value) -> None:
    if geo.activation:
        activation = SCALAR_OPS[geo.activation]
        with k.loop(0, geo.w.out, "act") as ow:
            k.store(activation(k, [k.load(row, ow)]), row, ow)


# the two loop structures ---------------------------------------------------------------------
def _emit_rows(k: Kernel, geo: ConvGeometry) -> None:
    start, stop = geo.w.interior()
    segments = [s for s in ((0, start, False), (start, stop, True), (stop, geo.w.out, False)) if s[0] < s[1]]
    with k.outer_loop(geo.batch * geo.c_out, "nco") as nco:
        n, co = _divmod(k, nco, geo.c_out)
        group, _ = _divmod(k, co, geo.cout_g)
        with k.loop(0, geo.d.out, "od") as od, k.loop(0, geo.h.out, "oh") as oh:
            _scalar_columns(k, geo, n, group, co, od, oh, segments)
            _activate_row(k, geo, _out_row(k, geo, n, co, od, oh))


def row_cover(axis: Axis, lanes: int, vectors: int) -> tuple[int, int, int, list[int]]:
    """How vectors cover an output row: (bulk start, bulk tiles, rest vectors, edge positions).

    The bulk runs from the interior's start in tiles of `vectors` vectors (then `rest` single
    vectors) while every tap reads inside the input; edge vectors at compile-time positions cover
    the columns left over on both sides, overlapping the bulk where needed (overlapping columns
    are computed twice, identically). With stride 2 a bulk vector's second load reads one element
    past its last lane, so the bulk keeps one element away from the end of the input row."""
    start, stop = (axis if axis.stride == 1 else replace(axis, size=axis.size - 1)).interior()
    full = (stop - start) // lanes
    tiles, rest = divmod(full, vectors)
    bulk_stop = start + full * lanes
    edges = [min(p, axis.out - lanes) for p in range(0, start, lanes)]
    edges += [min(p, axis.out - lanes) for p in range(bulk_stop, axis.out, lanes)]
    if full == 0:
        edges = sorted(set(edges + [min(p, axis.out - lanes) for p in range(0, axis.out, lanes)]))
    return start, tiles, rest, sorted(set(edges))


def _emit_tiled(k: Kernel, geo: ConvGeometry, tiling: Tiling) -> None:
    # the output row is outside the channel blocks: its input rows stay in cache for all blocks
    with k.outer_loop(geo.batch * geo.groups * geo.d.out * geo.h.out, "row") as row:
        ng_od, oh = _divmod(k, row, geo.h.out)
        ng, od = _divmod(k, ng_od, geo.d.out)
        n, group = _divmod(k, ng, geo.groups)
        tile_row(k, geo, tiling, n, group, od, oh, conv_operands(k, geo, n))


def tile_row(k: Kernel, geo: ConvGeometry, tiling: Tiling, n: ir.Value, group: ir.Value, od: ir.Value,
             oh: ir.Value, operands: TileOperands) -> None:
    """Every output channel of `group` on output row (od, oh): register tiles over the row, then the
    fused activation."""
    lanes, vectors = tiling.lanes, tiling.vectors
    start, main_tiles, rest_vectors, edges = row_cover(geo.w, lanes, vectors)
    blocks, tail = divmod(geo.cout_g, tiling.channels)
    for channels, first, count in ((tiling.channels, 0, blocks), (tail, blocks * tiling.channels, 1)):
        if channels == 0 or count == 0:
            continue
        with k.loop(0, count, "block") as block:
            co0 = k.add(k.mul(group, geo.cout_g), first, k.mul(block, channels))
            tile = _TileContext(k, geo, n, group, co0, channels, lanes, operands)
            for chunk in range(0, len(edges), vectors):
                tile.emit(od, oh, edges[chunk:chunk + vectors], None)
            with k.loop(0, main_tiles, "tile") as index:
                tile.emit(od, oh, [t * lanes for t in range(vectors)], k.add(start, k.mul(index, vectors * lanes)))
            if rest_vectors:
                tile.emit(od, oh, [t * lanes for t in range(rest_vectors)], start + main_tiles * vectors * lanes)
            if geo.activation:
                with k.loop(0, channels, "r") as r:
                    _activate_row(k, geo, operands.out_row(k.add(co0, r), od, oh))


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
            return k.builder.shuffle_vector(loaded, zero, ir.Constant(ir.VectorType(ir.IntType(32), lanes), mask))
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
        mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [2 * lane for lane in range(lanes)])
        return k.builder.shuffle_vector(low, high, mask)

    def emit(self, od: ir.Value, oh: ir.Value, offsets: list[int], ow0: ir.Value | int | None) -> None:
        """One tile: vectors at ow0 + offsets (bulk: every tap in bounds), or, with ow0 None, at the
        compile-time columns `offsets` (edges: lanes outside the input padded by mode)."""
        k, geo, lanes, channels, ops = self.k, self.geo, self.lanes, self.channels, self.operands
        b = k.builder
        vectors = len(offsets)
        slots = [[k.alloca(k.vector_type(lanes), f"acc{r}_{t}") for t in range(vectors)] for r in range(channels)]
        for r in range(channels):
            bias = k.load(ops.bias, k.add(self.co0, r)) if ops.bias is not None else k.const(0.0)
            for t in range(vectors):
                b.store(k.splat(bias, lanes), slots[r][t])

        def taps(x_off: ir.Value, w_off: ir.Value) -> None:
            w_tap = k.offset(ops.w, w_off)
            if ow0 is None:
                x_row = k.offset(ops.x, x_off)
            else:
                x_row = k.offset(ops.x, k.add(x_off, k.mul(ow0, geo.w.stride), -geo.w.pad_lo))
            acc = [[b.load(slots[r][t]) for t in range(vectors)] for r in range(channels)]
            for kw in range(geo.w.kernel):
                shift = kw * geo.w.dilation
                if ow0 is None:
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

        _for_taps(k, geo, self.x_base, k.mul(self.co0, ops.co_stride), od, oh, taps, ops.ci_stride, ops.tap_stride)
        for r in range(channels):
            row = ops.out_row(k.add(self.co0, r), od, oh)
            for t, offset in enumerate(offsets):
                k.vstore(b.load(slots[r][t]), row, offset if ow0 is None else k.add(ow0, offset))
