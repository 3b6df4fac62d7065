"""Direct convolution on channel-blocked tensors: conv1d/2d/3d from (N, C_in/c, *S, c) to
(N, C_out/c, *S_out, c), any stride, dilation and padding mode, groups whose channels fill whole
blocks (dense convs included).

The register tile is `width` output positions of one row x `vectors` blocks of c output channels:
for each input channel, the tile loads `vectors` weight vectors (c output channels each, packed at
compile time by `pack_weights`), broadcasts one input value per position and issues
width x vectors FMAs. The reduction over input-channel blocks, kd, kh and kw runs in real loops;
only the c input channels of a block and the tile are unrolled. Each output row is covered by
compile-time edge tiles at the borders (every tap's source column resolved at compile time:
skipped where it reads a zero, mapped for circular / reflect / replicate) and a runtime loop of
interior tiles with no bounds checks. The epilogue (bias, a residual tensor, an activation) is
applied to the accumulators before the single store.

The outer, parallel loop runs over (batch, block of output channels, od, oh) with the rows
innermost, so a block's packed weights stay in cache while its rows are computed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import llvmlite.ir as ir
import numpy as np

from convc.types import TensorType

from ..codegen import Kernel
from ..jit import HostTarget
from .conv_geometry import ConvGeometry, conv_geometry, divmod_index, map_index, tap_plane
from .elementwise import SCALAR_OPS

MAX_ACCUMULATORS = {512: 24, 256: 12}  # of 32 and 16 vector registers: weights, a broadcast, spare
MAX_WIDTH = 14


@dataclass(frozen=True)
class BlockedTiling:
    """`width` output positions x `vectors` blocks of `lanes` output channels in registers."""

    lanes: int
    vectors: int
    width: int


def lanes_for(host: HostTarget, dtype: str) -> int:
    """The channel block of this host: one vector register of the dtype."""
    return host.vector_bits // (32 if dtype == "f32" else 64)


def blocked_tiling(host: HostTarget, dtype: str, out_blocks: int, out_width: int) -> BlockedTiling:
    """The register tile for a conv with `out_blocks` output-channel blocks per group and rows of
    `out_width` outputs: the most accumulators per tile, counting the narrower tail tile of a row,
    with `vectors` dividing the blocks (so every tile has the same shape along the channels)."""
    lanes = lanes_for(host, dtype)
    budget = MAX_ACCUMULATORS[min(host.vector_bits, 512)] if host.vector_bits >= 256 else 6
    best, best_score = BlockedTiling(lanes, 1, 1), 0.0
    for vectors in range(1, 5):
        if out_blocks % vectors:
            continue
        width = max(1, min(out_width, MAX_WIDTH, budget // vectors))
        tiles = -(-out_width // width)
        score = vectors * out_width / tiles  # accumulators per tile, averaged over the row
        if score >= best_score:  # ties: more vectors, fewer broadcasts per FMA
            best, best_score = BlockedTiling(lanes, vectors, width), score
    return best


def pack_weights(weight: np.ndarray, groups: int, lanes: int) -> np.ndarray:
    """torch's (C_out, C_in/groups, *K) weights -> (C_out/c, C_in_g/c, *K, c_in, c_out), padded with
    zeros to whole blocks; 64-byte aligned."""
    c_out, cin_g, kernel = weight.shape[0], weight.shape[1], weight.shape[2:]
    out_blocks, in_blocks = -(-c_out // lanes), -(-cin_g // lanes)
    padded = np.zeros((out_blocks * lanes, in_blocks * lanes, *kernel), weight.dtype)
    padded[:c_out, :cin_g] = weight
    blocked = padded.reshape(out_blocks, lanes, in_blocks, lanes, *kernel)
    order = (0, 2, *range(4, 4 + len(kernel)), 3, 1)
    return aligned(np.ascontiguousarray(blocked.transpose(order)))


def pack_bias(bias: np.ndarray | None, c_out: int, lanes: int, dtype: np.dtype) -> np.ndarray:
    """The bias padded with zeros to whole blocks (zeros where the conv has none); 64-byte aligned."""
    padded = np.zeros(-(-c_out // lanes) * lanes, dtype)
    if bias is not None:
        padded[:c_out] = bias
    return aligned(padded)


def aligned(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A copy of `array` whose data starts on an `alignment`-byte boundary."""
    raw = np.empty(array.nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    out = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def blocked_conv_applies(attrs: dict[str, Any], x: TensorType, w: TensorType, lanes: int) -> bool:
    """Whether this conv has a blocked kernel: batched input, groups filling whole blocks."""
    groups = attrs["groups"]
    spatial = len(w.shape) - 2
    return (x.rank == spatial + 2 and
            (groups == 1 or (w.shape[1] % lanes == 0 and (w.shape[0] // groups) % lanes == 0)))


def emit_blocked_conv(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
                      out_type: TensorType, op: str, host: HostTarget) -> Kernel:
    """Arguments: out, x (blocked), packed weights, packed bias, [residual (blocked like out)]."""
    geo = conv_geometry(attrs, in_types[:2], out_type, op)
    residual = len(in_types) > 3
    k = Kernel(module, name, out_type.dtype, 5 if residual else 4, ("out", "x", "w", "bias", "residual"))
    lanes = out_type.block
    tiling = blocked_tiling(host, out_type.dtype, -(-geo.cout_g // lanes), geo.w.out)
    _BlockedConv(k, geo, tiling, residual, attrs.get("activation")).emit()
    return k.finish()


class _BlockedConv:
    """The loop nest of one blocked conv kernel (see the module docstring)."""

    def __init__(self, k: Kernel, geo: ConvGeometry, tiling: BlockedTiling, residual: bool,
                 activation: str | None) -> None:
        self.k, self.geo, self.t = k, geo, tiling
        self.residual, self.activation = residual, activation
        c = tiling.lanes
        self.in_blocks = -(-geo.c_in // c)
        self.out_blocks = -(-geo.c_out // c)
        self.in_blocks_g = -(-geo.cin_g // c)
        self.out_blocks_g = -(-geo.cout_g // c)
        self.last_lanes = geo.cin_g - (self.in_blocks_g - 1) * c  # real input channels of the last block
        self.w_block = self.in_blocks_g * geo.k_plane * c * c  # packed weights of one output block

    # addressing ------------------------------------------------------------------------------
    def in_row(self, n: ir.Value, cib: ir.Value, id_: ir.Value, ih: ir.Value) -> ir.Value:
        k, geo, c = self.k, self.geo, self.t.lanes
        block = k.add(k.mul(n, self.in_blocks), cib)
        row = k.add(k.mul(k.add(k.mul(block, geo.d.size), id_), geo.h.size), ih)
        return k.offset(k.args[1], k.mul(row, geo.w.size * c))

    def out_row_offset(self, n: ir.Value, cob: ir.Value, od: ir.Value, oh: ir.Value) -> ir.Value:
        k, geo = self.k, self.geo
        block = k.add(k.mul(n, self.out_blocks), cob)
        row = k.add(k.mul(k.add(k.mul(block, geo.d.out), od), geo.h.out), oh)
        return k.mul(row, geo.w.out * self.t.lanes)

    # structure -------------------------------------------------------------------------------
    def emit(self) -> None:
        k, geo, t = self.k, self.geo, self.t
        tile_groups = self.out_blocks // t.vectors
        with k.outer_loop(geo.batch * tile_groups * geo.d.out * geo.h.out, "row") as row:
            rest, oh = divmod_index(k, row, geo.h.out)
            rest, od = divmod_index(k, rest, geo.d.out)
            n, tile_group = divmod_index(k, rest, tile_groups)
            cob = k.mul(tile_group, t.vectors)
            group, _ = divmod_index(k, cob, self.out_blocks_g)
            cib0 = k.mul(group, self.in_blocks_g)
            out_offset = self.out_row_offset(n, cob, od, oh)
            for start, width, interior_count in self.row_tiles():
                if interior_count:
                    with k.loop(0, interior_count, "tile") as tile:
                        ow0 = k.add(k.mul(tile, t.width), start)
                        self.tile(n, cob, cib0, od, oh, out_offset, ow0, width, None)
                else:
                    self.tile(n, cob, cib0, od, oh, out_offset, ow0=None, width=width, edge_start=start)

    def row_tiles(self) -> list[tuple[int, int, int]]:
        """(start, width, interior tile count) of each tile run of a row: count 0 marks one edge
        tile at a compile-time position, count > 0 a runtime loop of interior tiles."""
        out, width = self.geo.w.out, self.t.width
        start, stop = self.geo.w.interior()
        runs, position = [], 0
        while position < start:
            runs.append((position, min(width, out - position), 0))
            position += width
        count = max(0, (stop - position) // width)
        if count:
            runs.append((position, width, count))
            position += count * width
        while position < out:
            runs.append((position, min(width, out - position), 0))
            position += width
        return runs

    # one tile --------------------------------------------------------------------------------
    def tile(self, n: ir.Value, cob: ir.Value, cib0: ir.Value, od: ir.Value, oh: ir.Value,
             out_offset: ir.Value, ow0: ir.Value | None, width: int, edge_start: int | None) -> None:
        """A tile of `width` positions: at runtime position ow0 (interior), or at the compile-time
        position edge_start (edge: every tap's column checked at compile time)."""
        k, geo, t = self.k, self.geo, self.t
        vector = k.vector_type(t.lanes)
        accumulators = [[k.alloca(vector, f"acc{v}_{r}") for r in range(width)] for v in range(t.vectors)]
        for v in range(t.vectors):
            bias = k.vload(k.args[3], k.mul(k.add(cob, v), t.lanes), t.lanes)
            for r in range(width):
                k.builder.store(bias, accumulators[v][r])
        full_blocks = self.in_blocks_g - (1 if self.last_lanes < t.lanes else 0)

        def over_blocks(first: int | ir.Value, stop: int, lanes: int) -> None:
            if first == stop:
                return
            with k.loop(first, stop, "cib") as cib_local:
                w_block = k.add(k.mul(cob, self.w_block), k.mul(cib_local, geo.k_plane * t.lanes * t.lanes))
                self.taps(n, k.add(cib0, cib_local), od, oh, w_block, ow0, width, edge_start, lanes, accumulators)

        over_blocks(0, full_blocks, t.lanes)
        over_blocks(full_blocks, self.in_blocks_g, self.last_lanes)
        self.store(out_offset, ow0, width, edge_start, accumulators)

    def taps(self, n: ir.Value, cib: ir.Value, od: ir.Value, oh: ir.Value, w_block: ir.Value,
             ow0: ir.Value | None, width: int, edge_start: int | None, lanes: int,
             accumulators: list[list[ir.Value]]) -> None:
        k, geo = self.k, self.geo
        d, h = geo.d, geo.h
        with k.loop(0, d.kernel, "kd") as kd:
            id_ = k.add(k.mul(od, d.stride), k.mul(kd, d.dilation), -d.pad_lo)

            def plane(id_m: ir.Value) -> None:
                with k.loop(0, h.kernel, "kh") as kh:
                    ih = k.add(k.mul(oh, h.stride), k.mul(kh, h.dilation), -h.pad_lo)

                    def row(ih_m: ir.Value) -> None:
                        x_row = self.in_row(n, cib, id_m, ih_m)
                        w_tap = k.add(w_block, k.mul(k.add(k.mul(kd, h.kernel), kh), geo.w.kernel * self.t.lanes ** 2))
                        if edge_start is None:
                            self.interior_row(x_row, w_tap, ow0, width, lanes, accumulators)
                        else:
                            self.edge_row(x_row, w_tap, edge_start, width, lanes, accumulators)
                    tap_plane(k, geo.mode, h, ih, row)
            tap_plane(k, geo.mode, d, id_, plane)

    def weights(self, w_offset: ir.Value) -> list[ir.Value]:
        k, t = self.k, self.t
        return [k.vload(k.args[2], k.add(w_offset, v * self.w_block), t.lanes) for v in range(t.vectors)]

    def fma_column(self, x_value: ir.Value, weights: list[ir.Value], r: int,
                   accumulators: list[list[ir.Value]]) -> None:
        k = self.k
        splat = k.splat(x_value, self.t.lanes)
        for v, weight in enumerate(weights):
            slot = accumulators[v][r]
            k.builder.store(k.vfma(splat, weight, k.builder.load(slot)), slot)

    def interior_row(self, x_row: ir.Value, w_tap: ir.Value, ow0: ir.Value, width: int, lanes: int,
                     accumulators: list[list[ir.Value]]) -> None:
        """kw as a runtime loop, the block's input channels unrolled, no bounds checks."""
        k, axis, c = self.k, self.geo.w, self.t.lanes
        with k.loop(0, axis.kernel, "kw") as kw:
            column = k.add(k.mul(ow0, axis.stride), k.mul(kw, axis.dilation), -axis.pad_lo)
            x_base = k.offset(x_row, k.mul(column, c))
            w_base = k.add(w_tap, k.mul(kw, c * c))
            for ci in range(lanes):
                weights = self.weights(k.add(w_base, ci * c))
                for r in range(width):
                    self.fma_column(k.load(x_base, r * axis.stride * c + ci), weights, r, accumulators)

    def edge_row(self, x_row: ir.Value, w_tap: ir.Value, start: int, width: int, lanes: int,
                 accumulators: list[list[ir.Value]]) -> None:
        """The block's input channels as a runtime loop, kw unrolled with compile-time sources."""
        k, axis, c = self.k, self.geo.w, self.t.lanes
        with k.loop(0, lanes, "ci") as ci:
            for kw in range(axis.kernel):
                sources = [map_index((start + r) * axis.stride + kw * axis.dilation - axis.pad_lo, axis.size,
                                     self.geo.mode) for r in range(width)]
                if all(s is None for s in sources):
                    continue
                weights = self.weights(k.add(w_tap, kw * c * c, k.mul(ci, c)))
                for r, source in enumerate(sources):
                    if source is not None:
                        self.fma_column(k.load(x_row, k.add(k.mul(ci, 1), source * c)), weights, r, accumulators)

    def store(self, out_offset: ir.Value, ow0: ir.Value | None, width: int, edge_start: int | None,
              accumulators: list[list[ir.Value]]) -> None:
        """Epilogue: residual add, activation, one store per accumulator."""
        k, geo, t = self.k, self.geo, self.t
        position = i64_or(k, ow0, edge_start)
        for v in range(t.vectors):
            base = k.add(out_offset, v * geo.d.out * geo.h.out * geo.w.out * t.lanes, k.mul(position, t.lanes))
            for r in range(width):
                value = k.builder.load(accumulators[v][r])
                if self.residual:
                    value = k.builder.fadd(value, k.vload(k.args[4], k.add(base, r * t.lanes), t.lanes))
                if self.activation:
                    value = SCALAR_OPS[self.activation](k, [value])
                k.vstore(value, k.args[0], k.add(base, r * t.lanes))


def i64_or(k: Kernel, value: ir.Value | None, constant: int | None) -> ir.Value:
    return value if value is not None else k.add(constant)
