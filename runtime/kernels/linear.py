"""Kernel of linear: a register-tiled GEMM, out (M, N) = x (M, K) @ W^T + bias, M the input's
leading axes flattened.

The register tile is `rows` rows of x x `vectors` vectors of c output features (c the host's
lanes; the tile chosen by conv_blocked.blocked_tiling, as for a 1x1 conv over `rows` positions):
for each of the K input features, the tile loads `vectors` weight vectors, broadcasts one x value
per row and issues rows x vectors FMAs. The weights are packed as (N/(c*vectors), K, vectors, c),
zero-padded to whole blocks, so a tile reads them consecutively; constants are packed here at
compile time, others by a generated prologue on every call (like the convs' pack_kernels). The
accumulators start from the packed bias (or zero), the activation is applied in registers, and
each row's vectors are stored once (the last partial block of features by a prefix store).
The parallel loop runs over (feature tile group, row tile), row tiles innermost, so the jobs of a
thread share one tile group's weights.
"""
from __future__ import annotations

import math

import llvmlite.ir as ir
import numpy as np

from convc.ir import Node
from convc.types import TensorType

from ..codegen import Kernel, i64
from ..jit import host_target
from .conv_blocked import blocked_tiling
from .conv_geometry import divmod_index
from .elementwise import activate
from .packing import aligned, pack_bias
from .registry import Values, kernel

K_UNROLL = 4  # input features per step of the reduction loop


def pack_linear_weights(weight: np.ndarray, lanes: int, vectors: int) -> np.ndarray:
    """(N, K) -> (N/(c*vectors), K, vectors, c), zero-padded to whole blocks; 64-byte aligned."""
    features, inputs = weight.shape
    blocks = -(-features // lanes)
    padded = np.zeros((blocks * lanes, inputs), weight.dtype)
    padded[:features] = weight
    return aligned(np.ascontiguousarray(padded.reshape(blocks // vectors, vectors, lanes, inputs).transpose(0, 3, 1, 2)))


def emit_pack_prologue(module: ir.Module, name: str, dtype: str, features: int, inputs: int, lanes: int,
                       vectors: int, bias_size: int | None) -> Kernel:
    """Kernel(packed weights[, packed bias], raw weights[, raw bias]): the layouts of
    pack_linear_weights and packing.pack_bias, zeros included, written at run time."""
    has_bias = bias_size is not None
    names = ("w_packed", "bias_packed", "w", "bias") if has_bias else ("w_packed", "w")
    k = Kernel(module, name, dtype, len(names), names)
    packed, raw = k.args[0], k.args[len(names) // 2]
    b = k.builder
    padded = -(-features // lanes) * lanes
    with k.outer_loop(padded, "n") as n:  # one output feature: its weight row, read in order
        tile_group, rest = divmod_index(k, n, vectors * lanes)
        base = k.add(k.mul(tile_group, inputs * vectors * lanes), rest)
        valid = b.icmp_signed("<", n, i64(features))
        with b.if_else(valid) as (real, padding):
            with real:
                with k.loop(0, inputs, "i") as i:
                    k.store(k.load(raw, k.add(k.mul(n, inputs), i)), packed, k.add(base, k.mul(i, vectors * lanes)))
            with padding:
                with k.loop(0, inputs, "i") as i:
                    k.store(k.const(0.0), packed, k.add(base, k.mul(i, vectors * lanes)))
        if has_bias:
            source = n if bias_size == features else i64(0)
            value = b.select(valid, k.load(k.args[3], b.select(valid, source, i64(0))), k.const(0.0))
            k.store(value, k.args[1], n)
    return k.finish()


class GemmNest:
    """The loops of the kernel (see the module docstring)."""

    def __init__(self, k: Kernel, rows: int, features: int, inputs: int, lanes: int, vectors: int, width: int,
                 has_bias: bool, activation: str | tuple | None) -> None:
        self.k, self.rows, self.features, self.inputs = k, rows, features, inputs
        self.c, self.vectors, self.width = lanes, vectors, width
        self.has_bias, self.activation = has_bias, activation
        self.blocks = -(-features // lanes)
        self.tile_groups = self.blocks // vectors
        self.row_tiles = -(-rows // width)
        self.last_lanes = features - (self.blocks - 1) * lanes

    def emit(self) -> None:
        k, b = self.k, self.k.builder
        with k.outer_loop(self.tile_groups * self.row_tiles, "job") as job:
            tile_group, row_tile = divmod_index(k, job, self.row_tiles)
            first_row = k.mul(row_tile, self.width)
            tail = self.rows % self.width
            if tail:
                with b.if_else(b.icmp_unsigned("<", row_tile, i64(self.rows // self.width))) as (whole, last):
                    with whole:
                        self.tile(tile_group, first_row, self.width)
                    with last:
                        self.tile(tile_group, first_row, tail)
            else:
                self.tile(tile_group, first_row, self.width)

    def tile(self, tile_group: ir.Value, first_row: ir.Value, rows: int) -> None:
        k, c, vectors = self.k, self.c, self.vectors
        out, x, w = k.args[:3]
        accumulators = [[k.alloca(k.vector_type(c), f"acc{v}_{r}") for r in range(rows)] for v in range(vectors)]
        for v in range(vectors):
            start = (k.vload(k.args[3], k.add(k.mul(tile_group, vectors * c), v * c), c) if self.has_bias
                     else ir.Constant(k.vector_type(c), [0.0] * c))
            for r in range(rows):
                k.builder.store(start, accumulators[v][r])
        x_rows = [k.offset(x, k.mul(k.add(first_row, r), self.inputs)) for r in range(rows)]
        w_group = k.offset(w, k.mul(tile_group, self.inputs * vectors * c))

        def step(i: ir.Value | int) -> None:
            weights = [k.vload(w_group, k.add(k.mul(i, vectors * c) if isinstance(i, ir.Value) else i * vectors * c,
                                              v * c), c) for v in range(vectors)]
            for r in range(rows):
                value = k.splat(k.load(x_rows[r], i), c)
                for v, weight in enumerate(weights):
                    slot = accumulators[v][r]
                    k.builder.store(k.vfma(value, weight, k.builder.load(slot)), slot)

        steps = self.inputs // K_UNROLL
        with k.loop(0, steps, "i") as block:
            first = k.mul(block, K_UNROLL)
            for u in range(K_UNROLL):
                step(k.add(first, u))
        for i in range(steps * K_UNROLL, self.inputs):
            step(i)
        self.store(tile_group, first_row, rows, accumulators)

    def store(self, tile_group: ir.Value, first_row: ir.Value, rows: int, accumulators: list[list[ir.Value]]) -> None:
        k, c, b = self.k, self.c, self.k.builder
        for v in range(self.vectors):
            feature = k.add(k.mul(tile_group, self.vectors * c), v * c)
            values, offsets = [], []
            for r in range(rows):
                value = b.load(accumulators[v][r])
                values.append(activate(k, self.activation, value))
                offsets.append(k.add(k.mul(k.add(first_row, r), self.features), feature))

            def write(lanes: int) -> None:
                for value, offset in zip(values, offsets):
                    k.vstore_prefix(value, k.args[0], offset, lanes)

            if self.last_lanes == c or v != self.vectors - 1:
                write(c)
                continue
            with b.if_else(b.icmp_unsigned("==", tile_group, i64(self.tile_groups - 1))) as (partial, full):
                with partial:
                    write(self.last_lanes)
                with full:
                    write(c)


@kernel("linear")
def emit_linear(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    """Arguments: out, x, packed weights[, packed bias] (see the module docstring)."""
    x, w, out = in_types[0], in_types[1], node.type
    has_bias = len(in_types) > 2
    k = Kernel(module, name, out.dtype, 4 if has_bias else 3, ("out", "x", "w", "bias"))
    if out.size == 0:
        return k.finish()
    host = host_target()
    lanes = host.lanes(out.dtype)
    features, inputs = w.shape
    rows = math.prod(x.shape[:-1])
    tiling = blocked_tiling(host, out.dtype, -(-features // lanes), rows)
    if values[1] is not None and (not has_bias or values[2] is not None):
        k.host_constants = {2: pack_linear_weights(values[1], lanes, tiling.vectors)}
        if has_bias:
            k.host_constants[3] = pack_bias(np.broadcast_to(values[2].reshape(-1), (features,)), features, lanes,
                                            values[2].dtype)
    else:
        blocks = -(-features // lanes)
        k.scratch = {2: blocks * lanes * inputs, **({3: blocks * lanes} if has_bias else {})}
        k.prologue = emit_pack_prologue(module, f"{name}_pack", out.dtype, features, inputs, lanes, tiling.vectors,
                                        in_types[2].size if has_bias else None)
    GemmNest(k, rows, features, inputs, lanes, tiling.vectors, tiling.width, has_bias,
             node.attrs.get("activation")).emit()
    return k.finish()
