"""Depthwise convolution (groups = channels, one output channel each) on channel-blocked tensors:
conv1d/2d/3d, any stride, dilation and padding mode.

Each channel block is independent: a tile of `width` output positions keeps one accumulator
vector per position, and every tap loads the c weights of the block once and adds a contiguous
input vector times them to each position; there is no reduction over channels. The row is covered
as in the dense blocked conv (conv_blocked_nest.plan_row): edge tiles at compile-time positions,
whose taps reading a zero are skipped and whose circular / reflect / replicate taps read their
source, and a runtime loop of interior tiles. The outer, parallel loop runs over (batch, channel
block, od, oh, row segment); the epilogue (bias, residual, activation) is applied in registers.
"""
from __future__ import annotations

import llvmlite.ir as ir

from ..codegen import Kernel
from .conv_blocked_nest import Buffers, PhasePlan, cover_row, epilogue, plan_row, row_segments
from .conv_geometry import ConvGeometry, conv_row, divmod_index, map_index, tap_plane

DEPTHWISE_ACCUMULATORS = {512: 16, 256: 6}  # beside the taps' weight vectors and one input vector


def depthwise_width(vector_bits: int, out_width: int) -> int:
    return max(1, min(out_width, DEPTHWISE_ACCUMULATORS.get(vector_bits, 4)))


class DepthwiseNest:
    def __init__(self, k: Kernel, geo: ConvGeometry, lanes: int, width: int, buffers: Buffers,
                 activation: str | None, whole_rows: bool = False) -> None:
        """`whole_rows`: one part per row (a fused kernel runs `row` itself, from its own loop)."""
        self.k, self.geo, self.c, self.width = k, geo, lanes, width
        self.buf, self.activation = buffers, activation
        self.blocks = -(-geo.c_in // lanes)
        (phase,) = conv_row(geo.w)
        left, start, count, right = plan_row(geo.w.out, width, geo.w.interior())
        rows = geo.batch * self.blocks * geo.d.out * geo.h.out
        segments = 1 if whole_rows else row_segments(count, rows)
        self.plan = PhasePlan(phase, tuple(left), start, count, tuple(right), segments)

    def emit(self) -> None:
        k, geo, c = self.k, self.geo, self.c
        with k.outer_loop(geo.batch * self.blocks * geo.d.out * geo.h.out * self.plan.segments, "job") as job:
            rest, segment = divmod_index(k, job, self.plan.segments)
            rest, oh = divmod_index(k, rest, geo.h.out)
            block_row, od = divmod_index(k, rest, geo.d.out)  # block_row = n * blocks + b
            _, block = divmod_index(k, block_row, self.blocks)
            out_row = k.mul(k.add(k.mul(k.add(k.mul(block_row, geo.d.out), od), geo.h.out), oh), geo.w.out * c)
            self.row(block_row, block, od, oh, segment, out_row)

    def row(self, block_row: ir.Value, block: ir.Value, od: ir.Value, oh: ir.Value, segment: ir.Value,
            out_row: ir.Value) -> None:
        """Part `segment` of output row (od, oh) of input plane `block_row` (= n * blocks + block),
        written from `out_row` on in the output buffer."""
        k, geo = self.k, self.geo
        in_plane = k.mul(block_row, geo.d.size * geo.h.size * geo.w.size * self.c)
        context = (block, od, oh, in_plane, out_row)
        cover_row(k, self.plan, self.width, segment,
                  lambda position, width, edge: self.tile(context, position, width, edge))

    def tile(self, context: tuple, position: ir.Value, width: int, edge: bool) -> None:
        k, geo, c = self.k, self.geo, self.c
        block, od, oh, in_plane, out_row = context
        d, h, w = geo.d, geo.h, geo.w
        bias = k.vload(self.buf.bias, k.mul(block, c), c)
        accumulators = [k.alloca(k.vector_type(c), f"acc{r}") for r in range(width)]
        for slot in accumulators:
            k.builder.store(bias, slot)
        w_block = k.mul(block, geo.k_plane * c)
        with k.loop(0, d.kernel, "kd") as kd:
            id_ = k.add(k.mul(od, d.stride), k.mul(kd, d.dilation), -d.pad_lo)

            def plane(id_m: ir.Value) -> None:
                with k.loop(0, h.kernel, "kh") as kh:
                    ih = k.add(k.mul(oh, h.stride), k.mul(kh, h.dilation), -h.pad_lo)

                    def row(ih_m: ir.Value) -> None:
                        x_row = k.offset(self.buf.x, k.add(in_plane, k.mul(k.add(k.mul(id_m, h.size), ih_m), w.size * c)))
                        w_row = k.add(w_block, k.mul(k.add(k.mul(kd, h.kernel), kh), w.kernel * c))
                        for kw in range(w.kernel):
                            weight = k.vload(self.buf.w, k.add(w_row, kw * c), c)
                            for r in range(width):
                                if edge:
                                    source = map_index((position.constant + r) * w.stride + kw * w.dilation - w.pad_lo,
                                                       w.size, geo.mode)
                                    if source is None:
                                        continue
                                    column: ir.Value | int = source
                                else:
                                    column = k.add(k.mul(position, w.stride), r * w.stride + kw * w.dilation - w.pad_lo)
                                value = k.vload(x_row, k.mul(column, c) if not isinstance(column, int) else column * c, c)
                                slot = accumulators[r]
                                k.builder.store(k.vfma(value, weight, k.builder.load(slot)), slot)
                    tap_plane(k, geo.mode, h, ih, row)
            tap_plane(k, geo.mode, d, id_, plane)
        for r, slot in enumerate(accumulators):
            offset = k.add(out_row, k.mul(k.add(position, r), c))
            value = epilogue(k, k.builder.load(slot), self.buf.residual, offset, self.activation)
            k.vstore(value, self.buf.out, offset)
