"""The loop nest of the blocked convolutions, forward and transposed (see conv_blocked for the
layout and the register tile).

    parallel for (batch, tile group of output blocks, od, oh, part of the row):
        for chunk of input-channel blocks:              (its packed weights stay in L1;
                                                         small maps: chunks outside od, oh)
            for tile of the part:                       (edge tiles at compile-time positions,
                acc = bias, or the partial sums so far   interior tiles in a runtime loop)
                for input block of the chunk, kd, kh, kw:  acc += x (broadcast) * w (vectors)
                last chunk: acc += residual; activation    (the epilogue, in registers)
                store acc

A row is one or more phases (`RowPhase`): a forward conv's row is one phase; a transposed conv's
row has one phase per residue of the output index modulo the stride, each a stride-1
correlation over contiguous inputs with its own taps, whose outputs are `stride` apart (no
zero-inserted input, no FMA on an inserted zero). Phases that differ only in their first output,
tap and offset (a kernel that is a multiple of the stride) share one interior loop, reading those
three from tables by phase (SharedPhase); only their edge tiles are code of their own (a
stride-8 row: a third of the code and half the compile time). Rows above (kh, kd) are taps with
the input row computed at run time: mapped by the padding mode for forward convs, skipped where
a transposed conv's output row does not meet them.

Splitting the reduction into chunks keeps a chunk's weights in L1 while they serve a whole row
part (1x1 and 1-D convs would otherwise stream every weight from L2 once per tile), and limits
the input rows a tile touches at once (rows of different channel blocks sit a multiple of 4 KB
apart in L1's sets). The parts of a row (segments of one phase's interior tiles, or the phases)
bound the partial sums a chunk revisits and give the parallel loop enough iterations on small
maps and 1-D signals.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import llvmlite.ir as ir
import numpy as np

from convc.symbolic import Size, generic_of

from ..codegen import Kernel, as_value, i64
from .conv_geometry import (Axis, ConvGeometry, RowPhase, conv_row, divmod_index, map_index, tap_plane,
                            transposed_row)
from .elementwise import activate

L1_WEIGHT_SHARE = 3  # a chunk's packed weights take a third of L1
L1_OUTPUT_SHARE = 2  # a row segment's partial sums half of it
MIN_PARALLEL_EXTENT = 8  # outer iterations wanted, so that every core gets a balanced share
PREFETCH_CHUNKS = 4  # chunks of weights a prefetch runs ahead of the loads
MAX_EDGE_TAPS = 16  # taps of compile-time edge tiles per row beyond which edges are bounds-checked at run time


def channel_unroll(lanes: int, block: int) -> int:
    """Input channels unrolled per step of the innermost loop: the largest divisor of `lanes` (the
    real channels of the block) up to half of them, so the loop always takes steps. A whole block
    in one step leaves LLVM a loop-free body that it schedules into spills (znver4: 384 FMAs with
    306 stack accesses, 39% of the peak for resnet_3x3; with two steps of 8 channels none, 95%)."""
    return max(d for d in range(1, max(1, min(block, lanes) // 2) + 1) if lanes % d == 0)


def plan_row(out: int, width: int, interior: tuple[int, int], narrow_left: bool = False
             ) -> tuple[list[tuple[int, int]], int, int, list[tuple[int, int]]]:
    """(left edge tiles, interior start, interior tile count, right edge tiles) of a row; with
    `narrow_left`, the left edge tiles end where the interior starts."""
    start, stop = interior
    left, position = [], 0
    while position < start:
        left.append((position, min(width, (start if narrow_left else out) - position)))
        position += left[-1][1]
    count = max(0, (stop - position) // width)
    interior_start = position
    position += count * width
    right = []
    while position < out:
        right.append((position, min(width, out - position)))
        position += width
    return left, interior_start, count, right


@dataclass(frozen=True)
class PhasePlan:
    """One phase's tiles and the `segments` parts its interior tiles are split into."""

    phase: RowPhase
    left: tuple[tuple[int, int], ...]
    interior_start: int
    interior_tiles: int
    right: tuple[tuple[int, int], ...]
    segments: int


def edge_tiles(k: Kernel, tiles: tuple[tuple[int, int], ...], tile: Callable[[ir.Value, int, bool], None],
               looped: bool) -> None:
    """tile(first output, width, True) for each edge tile; `looped`: runs of equally wide,
    adjacent tiles become one runtime loop (for tiles that take a runtime position)."""
    index = 0
    while index < len(tiles):
        start, size = tiles[index]
        run = 1
        while looped and index + run < len(tiles) and tiles[index + run] == (start + run * size, size):
            run += 1
        if run == 1:
            tile(k.add(start), size, True)
        else:
            with k.loop(0, run, "edge") as step:
                tile(k.add(k.mul(step, size), start), size, True)
        index += run


def cover_row(k: Kernel, plan: PhasePlan, width: int, segment: ir.Value,
              tile: Callable[[ir.Value, int, bool], None], looped_edges: bool = False) -> None:
    """tile(first output, width, edge) over segment `segment` of a row: the left edge tiles in the
    first segment, this segment's share of the interior tiles, the right edge tiles in the last."""
    b, split = k.builder, plan.segments > 1
    with k.when(b.icmp_unsigned("==", segment, i64(0)) if split else None):
        edge_tiles(k, plan.left, tile, looped_edges)
    if plan.interior_tiles:
        first = b.udiv(k.mul(segment, plan.interior_tiles), i64(plan.segments))
        last = b.udiv(k.mul(k.add(segment, 1), plan.interior_tiles), i64(plan.segments))
        with k.loop(first, last, "tile") as index:
            tile(k.add(k.mul(index, width), plan.interior_start), width, False)
    with k.when(b.icmp_unsigned("==", segment, i64(plan.segments - 1)) if split else None):
        edge_tiles(k, plan.right, tile, looped_edges)


def epilogue(k: Kernel, value: ir.Value, residual: ir.Value | None, offset: ir.Value,
             activation: str | tuple | None) -> ir.Value:
    """A finished accumulator plus the residual at `offset` (if any), through the activation."""
    if residual is not None:
        value = k.builder.fadd(value, k.vload(residual, offset, value.type.count))
    return activate(k, activation, value)


@dataclass(frozen=True)
class SharedPhase:
    """The phases of a transposed conv's row that differ only in their first output, first tap and
    first offset (same count, steps and number of taps): one interior loop serves them all, these
    three read from tables by the phase index at run time."""

    first: ir.Value
    step: int
    in_stride: int
    tap_count: int | ir.Value  # a RuntimeRow's kernel size is a run-time value
    tap0: ir.Value
    tap_step: int
    offset0: ir.Value
    offset_step: int | ir.Value  # a RuntimeRow's dilation is a run-time value

    def progression(self) -> tuple[ir.Value, int, ir.Value, int]:
        return self.tap0, self.tap_step, self.offset0, self.offset_step


@dataclass(frozen=True)
class SymbolicPhases:
    """The phases of a transposed conv's row of run-time length, served by one body: per phase
    (from tables) its first output, tap count, first tap and offset, and the lowest and highest
    input offset its taps read (a tile is interior where both fall inside the input); the taps'
    steps are the same in every phase (stride / g taps, -dilation / g offsets, g their gcd)."""

    phases: list[RowPhase]
    segments: int  # parts each phase's tiles are split into

    def shared(self, k: Kernel, index: ir.Value, stride: int) -> SharedPhase:
        steps = [p.progression() for p in self.phases if p.tap_count > 1]
        tap_step, offset_step = (steps[0][1], steps[0][3]) if steps else (1, 0)
        starts = [p.progression() if p.taps else (0, 0, 0, 0) for p in self.phases]
        return SharedPhase(k.lookup([p.first for p in self.phases], index), stride, 1,
                           k.lookup([p.tap_count for p in self.phases], index), k.lookup([s[0] for s in starts], index),
                           tap_step, k.lookup([s[2] for s in starts], index), offset_step)

    @property
    def low_offsets(self) -> list[int]:
        return [min((o for _, o in p.taps), default=0) for p in self.phases]

    @property
    def high_offsets(self) -> list[int]:
        return [max((o for _, o in p.taps), default=-(1 << 40)) for p in self.phases]


def shared_interior(phases: list[RowPhase], size: int) -> tuple[int, int] | None:
    """The interior common to phases that one loop can serve (see SharedPhase), else None."""
    def shape(phase: RowPhase) -> tuple:
        _, tap_step, _, offset_step = phase.progression()
        return phase.count, phase.step, phase.in_stride, phase.tap_count, tap_step, offset_step
    if len(phases) < 2 or not all(p.taps for p in phases) or any(shape(p) != shape(phases[0]) for p in phases):
        return None
    ranges = [p.interior(size) for p in phases]
    start, stop = max(r[0] for r in ranges), min(r[1] for r in ranges)
    return (start, stop) if start < stop else None


@dataclass(frozen=True)
class RuntimeRow:
    """A 1-D forward conv's padding, dilation and kernel size as run-time values (read from the
    kernel's params buffer, see `runtime_row_params`), so that convs that differ only in those
    share one body: each tile of the row is tested at run time, the interior ones
    [tile_lo, tile_hi) take the unchecked loop, the others the bounds-checked one; the taps are a
    loop of `taps` steps, and the reduction's `chunks` chunks of `chunk` input blocks (planned
    from the kernel size) a loop too."""

    pad_lo: ir.Value
    dilation: ir.Value
    tile_lo: ir.Value
    tile_hi: ir.Value
    taps: ir.Value
    chunk: ir.Value
    chunks: ir.Value


RUNTIME_ROW_PARAMS = 7  # i64 values of a RuntimeRow's params buffer


def runtime_row_params(axis: Axis, width: int, chunk: int, chunks: int) -> np.ndarray:
    """The params buffer of a RuntimeRow: pad_lo, dilation, the interior tiles [lo, hi) of a row
    of `width`-wide tiles (those whose every tap reads inside the input), the kernel size and the
    reduction's chunk (input blocks) and chunk count."""
    tiles, span = axis.out // width, width * axis.stride
    low = min(tiles, -(-axis.pad_lo // span))
    last = (axis.size - 1 + axis.pad_lo - axis.dilation * (axis.kernel - 1) - (width - 1) * axis.stride) // span
    return np.array([axis.pad_lo, axis.dilation, low, max(low, min(tiles, last + 1)), axis.kernel, chunk, chunks],
                    np.int64)


def load_runtime_row(k: Kernel, params: ir.Value) -> RuntimeRow:
    """The RuntimeRow of a kernel whose params buffer is `params` (loaded once, at entry)."""
    table = k.builder.bitcast(params, ir.IntType(64).as_pointer())
    return RuntimeRow(*(k.builder.load(k.builder.gep(table, [i64(i)], inbounds=True), name=name)
                        for i, name in enumerate(("pad_lo", "dilation", "tile_lo", "tile_hi", "taps", "chunk",
                                                  "chunks"))))


def reduction_chunks(geo: ConvGeometry, lanes: int, vectors: int, itemsize: int, l1_bytes: int,
                     plain_out: bool) -> tuple[int, int]:
    """(input blocks per chunk, chunks) of the reduction over a group's whole input blocks, for a
    tile group of `vectors` output blocks: a chunk's packed weights take L1_WEIGHT_SHARE of L1 (at
    least one block, at most all); a plain output is written once, so its reduction is a single
    chunk (partial sums are revisited in the blocked layout only)."""
    full_blocks = geo.cin_g // lanes
    block_bytes = geo.k_plane * lanes * vectors * lanes * itemsize
    chunk = max(1, full_blocks if plain_out else min(full_blocks, l1_bytes // L1_WEIGHT_SHARE // block_bytes))
    return chunk, max(1, -(-full_blocks // chunk))


@dataclass(frozen=True)
class Buffers:
    """The arrays a nest reads and writes: by default its kernel's arguments (out, x, packed
    weights, packed bias, residual); a fused kernel points a nest at a buffer of its own."""

    out: ir.Value
    x: ir.Value
    w: ir.Value
    bias: ir.Value
    residual: ir.Value | None

    @staticmethod
    def of(k: Kernel, residual: bool) -> "Buffers":
        return Buffers(k.args[0], k.args[1], k.args[2], k.args[3], k.args[4] if residual else None)


def row_segments(count: int, rows: int, wanted: int = 1) -> int:
    """Parts of a row's `count` interior tiles: at least `wanted`, and enough for the parallel loop
    over `rows` rows to have MIN_PARALLEL_EXTENT iterations."""
    return max(1, min(count, max(wanted, -(-MIN_PARALLEL_EXTENT // rows))))


@dataclass(frozen=True)
class _Place:
    """Where one job of the outer loop works: batch, output row, its group's first input block,
    its tile group's packed weights, output row offset and first output block."""

    n: ir.Value
    od: ir.Value
    oh: ir.Value
    cib0: ir.Value
    w_base: ir.Value
    out_offset: ir.Value
    cob: ir.Value
    prefetch: ir.Value | None = None  # i1: this row prefetches the weights ahead (see fma_column)


class BlockedConvNest:
    def __init__(self, k: Kernel, geo: ConvGeometry, lanes: int, vectors: int, width: int, buffers: Buffers,
                 activation: str | None, transposed: bool, l1_bytes: int, plain_in: bool = False,
                 plain_out: bool = False, whole_rows: bool = False,
                 input_row: Callable[[ir.Value], ir.Value] | None = None,
                 runtime_row: RuntimeRow | None = None) -> None:
        """`whole_rows`: one part per row (a fused kernel runs `row` itself, from its own loop);
        `input_row(input block)`: where a fused kernel keeps the input row of a 1x1 conv;
        `runtime_row`: a 1-D forward conv's padding and dilation as run-time values."""
        self.runtime_row = runtime_row
        self.symbolic_tail = False
        self.symbolic_phases: SymbolicPhases | None = None
        self.input_row = input_row
        self.k, self.geo, self.transposed = k, geo, transposed
        self.plain_in, self.plain_out = plain_in, plain_out
        in_plane = geo.d.size * geo.h.size * geo.w.size
        # element strides of the input between columns and between channels of a block
        self.col_stride, self.ci_stride = (1, in_plane) if plain_in else (lanes, 1)
        self.c, self.vectors, self.width = lanes, vectors, width
        self.buf, self.activation = buffers, activation
        c = lanes
        self.in_blocks, self.out_blocks = -(-geo.c_in // c), -(-geo.c_out // c)
        self.in_blocks_g, self.out_blocks_g = -(-geo.cin_g // c), -(-geo.cout_g // c)
        self.last_lanes = geo.cin_g - (self.in_blocks_g - 1) * c  # real channels of the last input block
        self.full_blocks = self.in_blocks_g - (1 if self.last_lanes < c else 0)
        self.tile_groups = self.out_blocks // vectors
        self.w_block: int | ir.Value = geo.k_plane * c * vectors * c  # packed weights of an input block, tile group
        self.chunk: int | ir.Value
        self.chunks: int | ir.Value
        self.chunk, self.chunks = reduction_chunks(geo, c, vectors, k.itemsize, l1_bytes, plain_out)
        rows = geo.batch * self.tile_groups * geo.d.out * geo.h.out
        self.group_weights: int | ir.Value = self.w_block * self.in_blocks_g  # a tile group's packed weights
        # a tile group's weights outgrow L1: they are prefetched ahead (see fma_column)
        self.prefetching = runtime_row is None and not transposed and self.group_weights * k.itemsize > l1_bytes
        self.prefetch_delta: ir.Value | None = None
        self.whole_maps = False
        if runtime_row is not None:  # the kernel size and what is planned from it are run-time values
            self.w_block = k.builder.mul(runtime_row.taps, i64(c * vectors * c), name="w_block")
            self.group_weights = k.mul(self.w_block, self.in_blocks_g)
            if self.full_blocks > 1:  # else one chunk whatever the kernel size: branch-free tiles
                self.chunk, self.chunks = runtime_row.chunk, runtime_row.chunks
            self._plan_runtime_row(rows, whole_rows, l1_bytes)
            return
        if transposed and geo.w.symbolic:
            self._plan_symbolic_phases(rows, whole_rows, l1_bytes)
            return
        phases = transposed_row(geo.w) if transposed else conv_row(geo.w)
        self.shared = shared_interior(phases, geo.w.size)  # one interior loop for every phase
        self.plans = []
        for phase in phases:
            interior = self.shared or phase.interior(geo.w.size)
            left, start, count, right = plan_row(phase.count, width, interior, narrow_left=bool(self.shared))
            segments = 1
            if len(phases) == 1 and not whole_rows:
                segments = self._segments(count, rows, l1_bytes)
            self.plans.append(PhasePlan(phase, tuple(left), start, count, tuple(right), segments))
        self.parts = sum(plan.segments for plan in self.plans)
        map_bytes = geo.d.out * geo.h.out * geo.w.out * vectors * c * k.itemsize
        if (len(phases) == 1 and not (whole_rows or plain_out) and self.several_chunks and geo.d.out * geo.h.out > 1
                and map_bytes <= l1_bytes // L1_OUTPUT_SHARE and geo.batch * self.tile_groups >= MIN_PARALLEL_EXTENT):
            self.whole_maps = True  # small maps, many weights: each chunk serves the whole map (see emit)
            self.plans[0] = replace(self.plans[0], segments=1)
            self.parts = 1
        # edge tiles in code of their own per position and tap, or, where that is a lot of code
        # (1-D convs with wide kernels and paddings), one body with the taps in a runtime loop
        edge_taps = sum(plan.phase.tap_count * len(plan.left + plan.right) for plan in self.plans)
        self.runtime_edges = len(self.plans) == 1 and edge_taps > MAX_EDGE_TAPS

    @property
    def several_chunks(self) -> bool:
        """Whether the reduction may take more than one chunk (a RuntimeRow's count is a run-time value)."""
        return isinstance(self.chunks, ir.Value) or self.chunks > 1

    def _segments(self, count: int, rows: int, l1_bytes: int) -> int:
        """Parts of a single-phase row of `count` interior tiles (see row_segments)."""
        row_bytes = generic_of(self.geo.w.out) * self.vectors * self.c * self.k.itemsize
        wanted = -(-row_bytes // (l1_bytes // L1_OUTPUT_SHARE)) if self.several_chunks else 1
        return row_segments(count, rows, wanted)

    def _plan_runtime_row(self, rows: int, whole_rows: bool, l1_bytes: int) -> None:
        """The row as `width`-wide tiles (each tested at run time) and a narrower tail tile."""
        w, runtime = self.geo.w, self.runtime_row
        self.shared = None
        phase = SharedPhase(i64(0), 1, w.stride, runtime.taps, i64(0), 1, self.k.builder.neg(runtime.pad_lo),
                            runtime.dilation)
        tiles, tail = w.out // self.width, w.out % self.width
        self.symbolic_tail = isinstance(w.out, Size)  # a limited tile ends the row (see limited_tail)
        segments = 1 if whole_rows else self._segments(generic_of(tiles), rows, l1_bytes)
        right = () if self.symbolic_tail or not tail else ((tiles * self.width, tail),)
        self.plans = [PhasePlan(phase, (), 0, tiles, right, segments)]
        self.parts = segments
        self.runtime_edges = True

    def _plan_symbolic_phases(self, rows: int, whole_rows: bool, l1_bytes: int) -> None:
        """A transposed conv's row of run-time length: every phase in one body, its first output,
        taps and offsets read from tables (SymbolicPhases), each tile tested at run time."""
        w = self.geo.w
        phases = transposed_row(replace(w, out=w.stride))  # the phases' taps: no size in them
        generic_count = -(-generic_of(w.out) // w.stride)
        segments = 1 if whole_rows else self._segments(generic_count // self.width, rows * len(phases), l1_bytes)
        self.symbolic_phases = SymbolicPhases(phases, segments)
        self.shared, self.plans = None, []
        self.parts = len(phases) * segments
        self.runtime_edges = True

    # addressing --------------------------------------------------------------------------------
    def in_row(self, n: ir.Value, cib: ir.Value, id_: ir.Value, ih: ir.Value) -> ir.Value:
        """The input row of (batch, input block, id, ih): its first channel's column 0."""
        k, geo = self.k, self.geo
        if self.input_row is not None:
            return self.input_row(cib)
        if self.plain_in:
            channel_row = k.add(k.mul(n, geo.c_in), k.mul(cib, self.c))
            row = k.add(k.mul(k.add(k.mul(channel_row, geo.d.size), id_), geo.h.size), ih)
            return k.offset(self.buf.x, k.mul(row, geo.w.size))
        block = k.add(k.mul(n, self.in_blocks), cib)
        row = k.add(k.mul(k.add(k.mul(block, geo.d.size), id_), geo.h.size), ih)
        return k.offset(self.buf.x, k.mul(row, geo.w.size * self.c))

    def out_offset(self, n: ir.Value, cob: ir.Value, od: ir.Value, oh: ir.Value) -> ir.Value:
        """The output row of (batch, output block, od, oh): its first channel's column 0."""
        k, geo = self.k, self.geo
        if self.plain_out:
            channel_row = k.add(k.mul(n, geo.c_out), k.mul(cob, self.c))
            return k.mul(k.add(k.mul(k.add(k.mul(channel_row, geo.d.out), od), geo.h.out), oh), geo.w.out)
        block = k.add(k.mul(n, self.out_blocks), cob)
        return k.mul(k.add(k.mul(k.add(k.mul(block, geo.d.out), od), geo.h.out), oh), geo.w.out * self.c)

    # structure ---------------------------------------------------------------------------------
    def emit(self) -> None:
        k, geo = self.k, self.geo
        if self.whole_maps:
            with k.outer_loop(geo.batch * self.tile_groups, "job") as job:
                n, tile_group = divmod_index(k, job, self.tile_groups)
                self.over_chunks(lambda chunk: self.map_chunk(n, tile_group, chunk))
            return
        with k.outer_loop(geo.batch * self.tile_groups * geo.d.out * geo.h.out * self.parts, "job") as job:
            rest, part = divmod_index(k, job, self.parts)
            rest, oh = divmod_index(k, rest, geo.h.out)
            rest, od = divmod_index(k, rest, geo.d.out)
            n, tile_group = divmod_index(k, rest, self.tile_groups)
            self.row(n, tile_group, od, oh, part)

    def map_chunk(self, n: ir.Value, tile_group: ir.Value, chunk: ir.Value) -> None:
        """Chunk `chunk` of the reduction over every output row of (n, tile_group): on small maps
        with many weights (a late ResNet stage: 49 outputs per 2.4 MB), the chunk's weights are
        read from memory once and serve the whole map from L1, whose partial sums stay in L1;
        row by row, every row would stream all of the weights again from L2."""
        k, geo, plan = self.k, self.geo, self.plans[0]
        with k.loop(0, geo.d.out, "od") as od:
            with k.loop(0, geo.h.out, "oh") as oh:
                place = self.place(n, tile_group, od, oh, i64(0))
                cover_row(k, plan, self.width, i64(0),
                          lambda q, width, edge: self.tile(place, plan.phase, chunk, q, width, edge), self.runtime_edges)

    def place(self, n: ir.Value, tile_group: ir.Value, od: ir.Value, oh: ir.Value, part: ir.Value) -> _Place:
        """Where part `part` of output row (n, od, oh) of `tile_group` reads and writes."""
        k = self.k
        group, _ = divmod_index(k, tile_group, self.out_blocks_g // self.vectors)
        cob = k.mul(tile_group, self.vectors)
        prefetch = None
        if self.prefetching:  # part 0 of a tile group's first row, or of every row on whole maps
            b = k.builder
            prefetch = b.icmp_unsigned("==", part, i64(0))
            if not self.whole_maps:
                prefetch = b.and_(prefetch, b.icmp_unsigned("==", k.add(k.mul(od, self.geo.h.out), oh), i64(0)))
        return _Place(n, od, oh, k.mul(group, self.in_blocks_g), k.mul(tile_group, self.group_weights),
                      self.out_offset(n, cob, od, oh), cob, prefetch)

    def row(self, n: ir.Value, tile_group: ir.Value, od: ir.Value, oh: ir.Value, part: ir.Value) -> None:
        """Part `part` of output row (n, od, oh) for the output blocks of `tile_group`."""
        k = self.k
        place = self.place(n, tile_group, od, oh, part)
        if self.symbolic_phases is not None:
            self.over_chunks(lambda chunk: self.symbolic_phase_part(place, part, chunk))
            return
        if self.shared:
            self.shared_phases(place, part)
            return
        base = 0
        for plan in self.plans:
            inside = None
            if self.parts > 1:
                b = k.builder
                inside = b.and_(b.icmp_unsigned(">=", part, i64(base)), b.icmp_unsigned("<", part, i64(base + plan.segments)))
            with k.when(inside):
                self.phase_part(place, plan, k.builder.sub(part, i64(base)))
            base += plan.segments

    def over_chunks(self, over_row: Callable[[ir.Value], None]) -> None:
        """over_row(chunk) for each chunk of the reduction (a loop only where there are several)."""
        if not self.several_chunks:
            over_row(i64(0))
        else:
            with self.k.loop(0, self.chunks, "chunk") as chunk:
                over_row(chunk)

    def phase_part(self, place: _Place, plan: PhasePlan, segment: ir.Value) -> None:
        k = self.k
        if self.runtime_row is not None:
            self.over_chunks(lambda chunk: self.runtime_row_part(place, plan, segment, chunk))
            return

        def over_row(chunk: ir.Value) -> None:
            cover_row(k, plan, self.width, segment,
                      lambda q, width, edge: self.tile(place, plan.phase, chunk, q, width, edge), self.runtime_edges)

        self.over_chunks(over_row)

    def runtime_row_part(self, place: _Place, plan: PhasePlan, segment: ir.Value, chunk: ir.Value) -> None:
        """Segment `segment` of a RuntimeRow's tiles: each full-width tile takes the unchecked
        loop where it is interior, the checked one elsewhere; the tail tile ends the last segment."""
        k, b, runtime = self.k, self.k.builder, self.runtime_row
        if plan.interior_tiles:
            first = b.udiv(k.mul(segment, plan.interior_tiles), i64(plan.segments))
            last = b.udiv(k.mul(k.add(segment, 1), plan.interior_tiles), i64(plan.segments))
            with k.loop(first, last, "tile") as index:
                q = k.mul(index, self.width)
                inside = b.and_(b.icmp_signed(">=", index, runtime.tile_lo), b.icmp_signed("<", index, runtime.tile_hi))
                with b.if_else(inside) as (interior, edge):
                    with interior:
                        self.tile(place, plan.phase, chunk, q, self.width, False)
                    with edge:
                        self.tile(place, plan.phase, chunk, q, self.width, True)
        with k.when(b.icmp_unsigned("==", segment, i64(plan.segments - 1)) if plan.segments > 1 else None):
            for start, size in plan.right:
                self.tile(place, plan.phase, chunk, k.add(start), size, True)
            if self.symbolic_tail:
                self.limited_tail(place, plan.phase, chunk, k.mul(plan.interior_tiles, self.width), k.value(self.geo.w.out))

    def symbolic_phase_part(self, place: _Place, part: ir.Value, chunk: ir.Value) -> None:
        """Part `part` of a SymbolicPhases row: segment `part % segments` of phase
        `part // segments`, its full-width tiles each interior or checked by a run-time test,
        then (in its last segment) one limited tile to the phase's end."""
        k, b, plan = self.k, self.k.builder, self.symbolic_phases
        w, width = self.geo.w, self.width
        index, segment = divmod_index(k, part, plan.segments)
        phase = plan.shared(k, index, w.stride)
        count = b.sdiv(k.add(k.value(w.out), b.neg(phase.first), w.stride - 1), i64(w.stride))  # q < count
        tiles = b.sdiv(count, i64(width))
        low_offset, high_offset = k.lookup(plan.low_offsets, index), k.lookup(plan.high_offsets, index)
        size = k.value(w.size)
        first = b.sdiv(k.mul(segment, tiles), i64(plan.segments)) if plan.segments > 1 else i64(0)
        last = b.sdiv(k.mul(k.add(segment, 1), tiles), i64(plan.segments)) if plan.segments > 1 else tiles
        with k.loop(first, last, "tile") as tile:
            q = k.mul(tile, width)
            inside = b.and_(b.icmp_signed(">=", k.add(q, low_offset), i64(0)),
                            b.icmp_signed("<", k.add(q, high_offset, width - 1), size))
            with b.if_else(inside) as (interior, edge):
                with interior:
                    self.tile(place, phase, chunk, q, width, False)
                with edge:
                    self.tile(place, phase, chunk, q, width, True)
        with k.when(b.icmp_unsigned("==", segment, i64(plan.segments - 1)) if plan.segments > 1 else None):
            self.limited_tail(place, phase, chunk, k.mul(tiles, width), count)

    def limited_tail(self, place: _Place, phase: RowPhase | SharedPhase, chunk: ir.Value, q: ir.Value,
                     count: ir.Value) -> None:
        """The outputs [q, count) of a row of run-time length, fewer than a tile: one checked tile
        of full width whose columns at or past `count` are computed but not stored."""
        with self.k.when(self.k.builder.icmp_signed("<", q, count)):
            self.tile(place, phase, chunk, q, self.width, True, count)

    def shared_phases(self, place: _Place, part: ir.Value) -> None:
        """Phase `part` of the row: its edge tiles in code of their own, its interior tiles in
        the loop all phases share (the phase's first output, tap and offset read from tables)."""
        k, plans = self.k, self.plans
        _, tap_step, _, offset_step = plans[0].phase.progression()
        phase = SharedPhase(k.lookup([p.phase.first for p in plans], part), plans[0].phase.step,
                            plans[0].phase.in_stride, plans[0].phase.tap_count,
                            k.lookup([p.phase.progression()[0] for p in plans], part), tap_step,
                            k.lookup([p.phase.progression()[2] for p in plans], part), offset_step)

        def edges(side: str, chunk: ir.Value) -> None:
            for index, plan in enumerate(plans):
                with k.when(k.builder.icmp_unsigned("==", part, i64(index))):
                    for start, size in getattr(plan, side):
                        self.tile(place, plan.phase, chunk, k.add(start), size, True)

        def over_row(chunk: ir.Value) -> None:
            edges("left", chunk)
            plan = plans[0]
            if plan.interior_tiles:
                with k.loop(0, plan.interior_tiles, "tile") as index:
                    self.tile(place, phase, chunk, k.add(k.mul(index, self.width), plan.interior_start), self.width,
                              False)
            edges("right", chunk)

        self.over_chunks(over_row)

    # one tile ----------------------------------------------------------------------------------
    def tile(self, place: _Place, phase: RowPhase | SharedPhase, chunk: ir.Value, q: ir.Value, width: int, edge: bool,
             limit: ir.Value | None = None) -> None:
        """A tile of `width` outputs of a phase from index q; an edge tile's q is a compile-time
        constant, and each of its taps' source columns is resolved at compile time. With `limit`
        (a checked tile at the end of a row of run-time length), only the columns q + r < limit
        are outputs: a blocked one's others read and write the last output's address (stored
        first, so that the real column's value is the one that stays), a plain one's are masked."""
        k, c = self.k, self.c
        accumulators = [[k.alloca(k.vector_type(c), f"acc{v}_{r}") for r in range(width)] for v in range(self.vectors)]
        out_plane = self.geo.d.out * self.geo.h.out * self.geo.w.out
        position_stride = 1 if self.plain_out else c
        out_base = k.add(place.out_offset, k.mul(k.add(k.mul(q, phase.step), phase.first), position_stride))
        plane = out_plane * c  # between output blocks, in either layout
        column = phase.step * position_stride  # between a tile's outputs
        columns = [k.add(out_base, r * column) for r in range(width)]
        if limit is not None and not self.plain_out:
            b = k.builder
            last = k.add(limit, -1)
            columns = [k.add(place.out_offset, k.mul(k.add(k.mul(b.select(b.icmp_signed("<", k.add(q, r), limit),
                                                                         k.add(q, r), last), phase.step),
                                                           phase.first), position_stride)) for r in range(width)]

        def start_from_bias() -> None:
            for v in range(self.vectors):
                bias = k.vload(self.buf.bias, k.add(k.mul(place.cob, c), v * c), c)
                for r in range(width):
                    k.builder.store(bias, accumulators[v][r])

        def start_from_partial_sums() -> None:  # blocked outputs only: a plain one is a single chunk
            for v in range(self.vectors):
                for r in range(width):
                    k.builder.store(k.vload(self.buf.out, k.add(columns[r], v * plane), c), accumulators[v][r])

        if place.prefetch is not None:
            self.prefetch_delta = k.builder.select(place.prefetch, i64(PREFETCH_CHUNKS * self.chunk * self.w_block),
                                                   i64(0))
        last_chunk = k.builder.icmp_unsigned("==", chunk, k.add(self.chunks, -1))
        self.branch(k.builder.icmp_unsigned("==", chunk, i64(0)), start_from_bias, start_from_partial_sums)
        if isinstance(phase.tap_count, ir.Value) or phase.tap_count > 0:
            low = k.mul(chunk, self.chunk)
            high = k.builder.select(k.builder.icmp_unsigned("<", k.add(low, self.chunk), i64(self.full_blocks)),
                                    k.add(low, self.chunk), i64(self.full_blocks))
            with k.loop(low, high, "cib") as cib:
                self.taps(place, phase, cib, q, width, edge, c, accumulators)
            if self.full_blocks < self.in_blocks_g:  # the partial last block, in the last chunk
                with k.when(last_chunk if self.several_chunks else None):
                    self.taps(place, phase, i64(self.full_blocks), q, width, edge, self.last_lanes, accumulators)
        self.prefetch_delta = None
        mask = (q, limit) if limit is not None else None
        self.branch(last_chunk, lambda: self.store(place, columns, plane, column, accumulators, True, mask),
                    lambda: self.store(place, columns, plane, column, accumulators, False, mask))

    def branch(self, flag: ir.Value, then: Callable[[], None], otherwise: Callable[[], None]) -> None:
        """then() if flag else otherwise(); only then() where the reduction is one chunk."""
        if not self.several_chunks:
            then()
            return
        with self.k.builder.if_else(flag) as (yes, no):
            with yes:
                then()
            with no:
                otherwise()

    def row_tap(self, axis: Axis, out_index: ir.Value, tap: ir.Value, body: Callable[[ir.Value], None]) -> None:
        """body(input row) for tap `tap` of an upper axis (h or d) at output row `out_index`."""
        k = self.k
        if not self.transposed:
            tap_plane(k, self.geo.mode, axis, k.add(k.mul(out_index, axis.stride), k.mul(tap, axis.dilation),
                                                    -axis.pad_lo), body)
            return
        if axis.trivial:
            body(out_index)
            return
        b = k.builder
        numerator = k.add(out_index, axis.pad_lo, b.neg(k.mul(tap, axis.dilation)))
        row = b.sdiv(numerator, i64(axis.stride)) if axis.stride > 1 else numerator
        valid = k.inside(row, axis.size)
        if axis.stride > 1:
            valid = b.and_(valid, b.icmp_signed("==", b.srem(numerator, i64(axis.stride)), i64(0)))
        with k.when(valid):
            body(row)

    def taps(self, place: _Place, phase: RowPhase | SharedPhase, cib: ir.Value, q: ir.Value, width: int, edge: bool, lanes: int,
             accumulators: list[list[ir.Value]]) -> None:
        """acc += every tap of input block `cib` (of the group) with `lanes` real channels."""
        k, geo, c = self.k, self.geo, self.c
        d, h = geo.d, geo.h
        w_cib = k.add(place.w_base, k.mul(cib, self.w_block))
        with k.loop(0, d.kernel, "kd") as kd:
            def plane(id_: ir.Value) -> None:
                with k.loop(0, h.kernel, "kh") as kh:
                    def row(ih: ir.Value) -> None:
                        x_row = self.in_row(place.n, k.add(place.cib0, cib), id_, ih)
                        w_row = k.add(w_cib, k.mul(k.add(k.mul(kd, h.kernel), kh), geo.w.kernel * c * self.vectors * c))
                        if edge and self.runtime_edges:
                            self.checked_row(x_row, w_row, phase, q, width, lanes, accumulators)
                        elif edge:
                            self.edge_row(x_row, w_row, phase, q.constant, width, lanes, accumulators)
                        else:
                            self.interior_row(x_row, w_row, phase, q, width, lanes, accumulators)
                    self.row_tap(h, place.oh, kh, row)
            self.row_tap(d, place.od, kd, plane)

    def fma_column(self, x_value: ir.Value, w_offset: ir.Value, r: int, accumulators: list[list[ir.Value]],
                   weights: list[ir.Value] | None = None) -> list[ir.Value]:
        """acc[v][r] += x * w[v] for the tile's vectors; returns the weight vectors (loaded once per
        input channel and tap, then reused by every position of the tile).

        Where a tile group's weights outgrow L1 (`prefetching`), the loads of its first row (of
        every row on whole maps, so that the requests are spread over the chunk's work instead of
        bursting past the miss queue) also prefetch, into L2, the weights PREFETCH_CHUNKS chunks
        ahead (elsewhere `prefetch_delta` is 0: the line being loaded). A model's weights come
        from memory (ResNet-18's 45 MB exceed L3), and the first row waits for them: 512x512x3x3
        at 7x7, 0.39 ms warm, 0.62 cold; 0.58 cold with the first row prefetching, 0.44-0.52 with
        whole maps prefetching in every row (znver5, noisy host)."""
        k, c = self.k, self.c
        if weights is None:
            weights = [k.vload(self.buf.w, k.add(w_offset, v * c), c) for v in range(self.vectors)]
            if self.prefetch_delta is not None:
                for v in range(self.vectors):
                    k.prefetch(self.buf.w, k.add(w_offset, v * c, self.prefetch_delta))
        splat = k.splat(x_value, c)
        for v, weight in enumerate(weights):
            slot = accumulators[v][r]
            k.builder.store(k.vfma(splat, weight, k.builder.load(slot)), slot)
        return weights

    def interior_row(self, x_row: ir.Value, w_row: ir.Value, phase: RowPhase | SharedPhase, q: ir.Value, width: int, lanes: int,
                     accumulators: list[list[ir.Value]]) -> None:
        """The taps as a runtime loop, the block's input channels in unrolled steps, no bounds checks."""
        k, c, stride = self.k, self.c, phase.in_stride
        unroll = channel_unroll(lanes, c)
        tap0, tap_step, offset0, offset_step = phase.progression()
        with k.loop(0, phase.tap_count, "kw") as j:
            column = k.add(k.mul(q, stride), offset0, k.builder.mul(j, as_value(offset_step)))
            x_base = k.offset(x_row, k.mul(column, self.col_stride))
            w_base = k.add(w_row, k.mul(k.add(k.mul(j, tap_step), tap0), c * self.vectors * c))
            with k.loop(0, lanes // unroll, "ci") as step:
                x_step = k.offset(x_base, k.mul(step, unroll * self.ci_stride))
                w_step = k.add(w_base, k.mul(step, unroll * self.vectors * c))
                for ci in range(unroll):
                    weights = None
                    for r in range(width):
                        x_value = k.load(x_step, r * stride * self.col_stride + ci * self.ci_stride)
                        weights = self.fma_column(x_value, k.add(w_step, ci * self.vectors * c), r, accumulators,
                                                  weights)

    def checked_row(self, x_row: ir.Value, w_row: ir.Value, phase: RowPhase | SharedPhase, q: ir.Value, width: int,
                    lanes: int, accumulators: list[list[ir.Value]]) -> None:
        """An edge tile at a runtime position: the taps in a runtime loop, each column mapped by the
        padding mode at run time (a zero where it falls outside), the channels in a loop."""
        k, c = self.k, self.c
        tap0, tap_step, offset0, offset_step = phase.progression()
        zero = k.const(0.0)
        with k.loop(0, phase.tap_count, "kw") as j:
            offset = k.add(offset0, k.builder.mul(j, as_value(offset_step)))
            columns = []
            for r in range(width):
                source, valid = k.border_index(k.add(k.mul(k.add(q, r), phase.in_stride), offset), self.geo.w.size,
                                               self.geo.mode)
                columns.append((k.mul(source, self.col_stride), valid))
            w_base = k.add(w_row, k.mul(k.add(k.mul(j, tap_step), tap0), c * self.vectors * c))
            with k.loop(0, lanes, "ci") as ci:
                w_offset = k.add(w_base, k.mul(ci, self.vectors * c))
                weights = None
                for r, (column, valid) in enumerate(columns):
                    x_value = k.load(x_row, k.add(k.mul(ci, self.ci_stride), column))
                    if valid is not None:
                        x_value = k.builder.select(valid, x_value, zero)
                    weights = self.fma_column(x_value, w_offset, r, accumulators, weights)

    def edge_row(self, x_row: ir.Value, w_row: ir.Value, phase: RowPhase, q0: int, width: int, lanes: int,
                 accumulators: list[list[ir.Value]]) -> None:
        """Per tap (unrolled, with compile-time sources: a tap reading a zero is skipped, circular /
        reflect / replicate read their source), the block's input channels as a runtime loop. One
        tap per loop keeps its weights and the accumulators in registers."""
        k, c, size = self.k, self.c, self.geo.w.size
        for tap, offset in phase.taps:
            sources = [map_index((q0 + r) * phase.in_stride + offset, size, self.geo.mode) for r in range(width)]
            if all(source is None for source in sources):
                continue
            with k.loop(0, lanes, "ci") as ci:
                w_offset = k.add(w_row, tap * c * self.vectors * c, k.mul(ci, self.vectors * c))
                weights = None
                for r, source in enumerate(sources):
                    if source is not None:
                        x_value = k.load(x_row, k.add(k.mul(ci, self.ci_stride), source * self.col_stride))
                        weights = self.fma_column(x_value, w_offset, r, accumulators, weights)

    def transpose_plain(self, place: _Place, v: int, offsets: list[ir.Value], values: list[ir.Value],
                        out_plane: int, limit: tuple[ir.Value, ir.Value] | None = None) -> None:
        """Write consecutive columns of block cob + v to the plain output: c columns at a time are
        transposed in registers, then each real channel's run of columns is one vector store
        (with `limit` = (q, stop): masked to the columns q + r < stop)."""
        k, c = self.k, self.c
        runs = []
        for first in range(0, len(values), c):
            rows = values[first:first + c]
            rows += [ir.Constant(k.vector_type(c), None)] * (c - len(rows))
            count = min(c, len(values) - first)
            mask = None
            if limit is not None:
                q, stop = limit
                mask = k.lane_mask(k.add(q, first), c, k.builder.select(
                    k.builder.icmp_signed("<", stop, k.add(q, first + count)), stop, k.add(q, first + count)))
            runs.append((offsets[first], count, k.transpose(rows), mask))

        def write(lanes: int) -> None:
            for offset, count, channels, mask in runs:
                for lane in range(lanes):
                    if mask is not None:
                        k.vstore_masked(channels[lane], self.buf.out, k.add(offset, lane * out_plane), mask)
                    else:
                        k.vstore_prefix(channels[lane], self.buf.out, k.add(offset, lane * out_plane), count)

        last = self.geo.c_out - (self.out_blocks - 1) * c
        if last == c:
            write(c)
            return
        b = k.builder
        with b.if_else(b.icmp_unsigned("==", k.add(place.cob, v), i64(self.out_blocks - 1))) as (partial, full):
            with partial:
                write(last)
            with full:
                write(c)

    def store(self, place: _Place, columns: list[ir.Value], plane: int, column: int,
              accumulators: list[list[ir.Value]], finished: bool, limit: tuple[ir.Value, ir.Value] | None) -> None:
        """Store the tile (its columns' offsets in block cob); when the sum is finished, after the
        epilogue (residual, activation). A plain output takes each vector's channels apart, one
        output plane each. With `limit`, the columns are stored last first (see tile)."""
        k, c = self.k, self.c
        for v in range(self.vectors):
            offsets = [k.add(base, v * plane) for base in columns]
            values = []
            for r, offset in enumerate(offsets):
                value = k.builder.load(accumulators[v][r])
                if finished:
                    value = epilogue(k, value, self.buf.residual, offset, self.activation)
                values.append(value)
            if not self.plain_out:
                pairs = list(zip(offsets, values))
                for offset, value in (reversed(pairs) if limit is not None else pairs):
                    k.vstore(value, self.buf.out, offset)
                continue
            assert column == 1, "a plain output is written by phases of consecutive outputs only"
            self.transpose_plain(place, v, offsets, values, plane // c, limit)
