"""Convolutions on channel-blocked tensors, (N, C_in/c, *S, c) to (N, C_out/c, *S_out, c): conv1d/2d/3d
and conv_transpose1d/2d/3d, any stride, dilation and padding mode, groups whose channels fill whole
blocks (dense convs included), and depthwise convs; this module picks the register tile and the
packing and hands the loops to conv_blocked_nest (or conv_depthwise_blocked).

The register tile is `width` output positions of one row x `vectors` blocks of c output channels:
for each input channel, the tile loads `vectors` weight vectors (c output channels each, packed by
packing.pack_weights at compile time, or by a generated prologue where the weights are inputs),
broadcasts one input value per position and issues width x vectors FMAs. The reduction over
input-channel blocks and taps runs in real loops; only steps of a block's input channels and the
tile are unrolled. The epilogue (bias, a residual tensor, an activation) is applied to the
accumulators before the single store. One side of the kernel may be plain (a reorder folded in).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import llvmlite.ir as ir
import numpy as np

from convc.errors import ConvcError
from convc.op_conv import conv_pads
from convc.registry import has_trait
from convc.symbolic import generic_of
from convc.types import DTYPE_NAMES, TensorType

from ..codegen import Kernel
from ..jit import HostTarget
from .conv_blocked_nest import (RUNTIME_ROW_PARAMS, BlockedConvNest, Buffers, load_runtime_row, reduction_chunks,
                                runtime_row_params)
from .conv_depthwise_blocked import DepthwiseNest, depthwise_width
from .conv_geometry import conv_geometry
from .conv_transpose import transpose_geometry
from .pack_kernels import emit_pack_prologue
from .packing import pack_bias, pack_depthwise_weights, pack_weights

# of 32 and 16 vector registers: the rest hold weights, a broadcast and a spare. With 12 of 16 on
# AVX2, LLVM spilled 6 values in resnet_3x3's hot loop (znver3); 10 has none, at the same speed
MAX_ACCUMULATORS = {512: 24, 256: 10}
MAX_WIDTH = 14
# products per output below which a conv writing a plain output is bound by its stores (measured:
# wav2vec's first layer, 10 products, 0.40 ms with 4 vectors x 6 positions, 0.24 ms with 1 x 16)
STORE_BOUND_TERMS = 64


@dataclass(frozen=True)
class BlockedTiling:
    """`width` output positions x `vectors` blocks of `lanes` output channels in registers."""

    lanes: int
    vectors: int
    width: int


def blocked_tiling(host: HostTarget, dtype: str, out_blocks: int, out_width: int,
                   plain_out_terms: int | None = None) -> BlockedTiling:
    """The register tile for a conv with `out_blocks` output-channel blocks per group and rows of
    `out_width` outputs: the most accumulators per tile, averaged over a row's tiles (so a narrow
    tail tile counts), then the fewest tiles per row, then the most vectors (fewer broadcasts per
    FMA); `vectors` divides the blocks, so every tile has the same shape along the channels. A conv
    writing a plain output with `plain_out_terms` products per output or fewer is bound by its
    stores: one vector x `lanes` positions, so that each register transpose of the store is full."""
    lanes = host.lanes(dtype)
    if plain_out_terms is not None and plain_out_terms <= STORE_BOUND_TERMS and out_width >= lanes:
        return BlockedTiling(lanes, 1, lanes)
    budget = MAX_ACCUMULATORS[min(host.vector_bits, 512)] if host.vector_bits >= 256 else 6
    candidates = []
    for vectors in range(1, 5):
        if out_blocks % vectors:
            continue
        width = max(1, min(out_width, MAX_WIDTH, budget // vectors))
        tiles = -(-out_width // width)
        score = vectors * out_width / tiles
        if width < 4 < out_width:
            score *= 0.9  # narrow tiles pay their loop and epilogue overhead more often
        candidates.append(((round(score, 6), -tiles, vectors), BlockedTiling(lanes, vectors, width)))
    return max(candidates, key=lambda candidate: candidate[0])[1]


RUNTIME_ROW_MIN_TILES = 4  # full tiles per row from which a 1-D conv takes its padding and dilation at run time


@dataclass(frozen=True)
class BlockedConvPlan:
    """What the code of a blocked conv depends on besides its node's types: the geometry, the
    channel block, which sides are plain, the register tile, and whether the padding and dilation
    are run-time values (a RuntimeRow: padded 1-D forward convs with rows of RUNTIME_ROW_MIN_TILES
    tiles or more, where the edge tiles are a small share of the row; an unpadded conv has no
    edge tiles, which a RuntimeRow would emit all the same)."""

    geo: Any
    lanes: int
    transposed: bool
    depthwise: bool
    plain_in: bool
    plain_out: bool
    vectors: int
    width: int
    runtime_row: bool


def plan_blocked_conv(attrs: dict[str, Any], in_types: list[TensorType], out_type: TensorType, op: str,
                      host: HostTarget) -> BlockedConvPlan:
    transposed = has_trait(op, "conv_transpose")
    geo = (transpose_geometry if transposed else conv_geometry)(attrs, in_types[:2], out_type, op)
    lanes = out_type.block or in_types[0].block or attrs["block"]  # sides may be plain (reorders folded in)
    plain_in, plain_out = not in_types[0].block, not out_type.block
    depthwise = not transposed and geo.groups > 1 and geo.groups == geo.c_in == geo.c_out
    if depthwise:
        if plain_in or plain_out:
            raise NotImplementedError(f"{op}: the blocked depthwise kernel reads and writes blocked tensors only")
        vectors, width = 1, depthwise_width(host.vector_bits, geo.w.out)
    else:
        row = geo.w.out if not transposed else -(-geo.w.out // geo.w.stride)  # a phase's outputs
        # a symbolic row is tiled as a long one
        tiling = blocked_tiling(host, out_type.dtype, -(-geo.cout_g // lanes), generic_of(row),
                                geo.cin_g * geo.k_plane if plain_out else None)
        vectors, width = tiling.vectors, tiling.width
    one_d = not depthwise and geo.d.trivial and geo.h.trivial
    if out_type.symbolic or in_types[0].symbolic:  # a symbolic row: its length is a run-time value too
        if not one_d:
            raise ConvcError(f"{op}: symbolic sizes are supported on 1-D convs so far, not on "
                             f"{in_types[0]} -> {out_type}")
        # a forward conv's row is a RuntimeRow; a transposed one's phases are read from tables
        return BlockedConvPlan(geo, lanes, transposed, depthwise, plain_in, plain_out, vectors, width, not transposed)
    one_d = one_d and not transposed
    runtime_row = (one_d and not (plain_in or plain_out) and geo.w.out // width >= RUNTIME_ROW_MIN_TILES
                   and any(sum(conv_pads(attrs, in_types[1].shape[2:]), ())))
    return BlockedConvPlan(geo, lanes, transposed, depthwise, plain_in, plain_out, vectors, width, runtime_row)


RUNTIME_ROW_ATTRS = ("pad_lo", "pad_hi", "dilation")  # what a RuntimeRow reads from its params buffer


def blocked_conv_share_key(attrs: dict[str, Any], in_types: list[TensorType], out_type: TensorType, op: str,
                           host: HostTarget, constants: tuple[bool, ...]) -> tuple | None:
    """The attributes and operand types that shape a blocked conv's code where they are fewer than
    all of them, else None. A RuntimeRow conv's are its attributes without its padding and
    dilation, and where its weights are packed at compile time (no packing prologue, whose code
    would follow the kernel size), its operand types without the kernel size: convs that differ
    only in those share one body."""
    if not (in_types[0].block or out_type.block or attrs.get("block")):
        return None
    if not plan_blocked_conv(attrs, in_types, out_type, op, host).runtime_row:
        return None
    key = tuple(sorted((name, value) for name, value in attrs.items() if name not in RUNTIME_ROW_ATTRS))
    if not all(constants[1:3]):  # weights or bias packed by a prologue
        return key, tuple(in_types)
    weight = in_types[1]
    return key, (in_types[0], weight.dtype, weight.shape[:2]) + tuple(in_types[2:])


def _runtime_row_params(plan: BlockedConvPlan, dtype: str, l1_bytes: int) -> np.ndarray:
    """A RuntimeRow conv's params buffer (see runtime_row_params), its reduction chunks planned as
    BlockedConvNest plans them from the kernel size."""
    chunks = reduction_chunks(plan.geo, plan.lanes, plan.vectors, DTYPE_NAMES[dtype].itemsize, l1_bytes,
                              plan.plain_out)
    return runtime_row_params(plan.geo.w, plan.width, *chunks)


def emit_blocked_conv(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
                      out_type: TensorType, op: str, host: HostTarget, values: list[np.ndarray | None]) -> Kernel:
    """Arguments: out, x, packed weights, packed bias, [residual (blocked like out)], [the params
    of a RuntimeRow]. The input and the output (not for depthwise convs) may be plain, both where
    the attribute `block` says so: the kernel reads its broadcasts from, or transposes its vectors
    into, the plain layout, so a reorder there costs no pass.
    Constant weights and biases are packed here, on the host; others by a generated prologue that
    runs before the kernel on every call (pack_kernels)."""
    plan = plan_blocked_conv(attrs, in_types, out_type, op, host)
    geo, lanes, vectors, width = plan.geo, plan.lanes, plan.vectors, plan.width
    transposed, depthwise = plan.transposed, plan.depthwise
    residual = len(in_types) > 3
    names = ("out", "x", "w", "bias") + (("residual",) if residual else ()) + (("params",) if plan.runtime_row else ())
    k = Kernel(module, name, out_type.dtype, len(names), names)
    has_bias = len(in_types) > 2
    if values[1] is not None and (not has_bias or values[2] is not None):
        k.pack = lambda values: {
            2: _pack_constant_weights(values[1], geo, lanes, vectors, transposed, depthwise),
            3: pack_bias(values[2] if has_bias else None, geo.c_out, lanes, values[1].dtype)}
        k.host_constants = k.pack(values)
    else:
        out_blocks = -(-geo.c_out // lanes)
        weights = out_blocks * lanes * (geo.k_plane if depthwise else -(-geo.cin_g // lanes) * lanes * geo.k_plane)
        k.scratch = {2: weights, 3: out_blocks * lanes}
        k.prologue = emit_pack_prologue(module, f"{name}_pack", out_type.dtype, geo, lanes, vectors, transposed,
                                        depthwise, has_bias)
    runtime_row = None
    if plan.runtime_row and out_type.symbolic:  # bound per call's lengths, with this code's tiles and chunks
        params = len(names) - 1
        chunks = reduction_chunks(geo, lanes, plan.vectors, DTYPE_NAMES[out_type.dtype].itemsize, host.l1d_bytes,
                                  plan.plain_out)
        k.bind = lambda node, types: {params: runtime_row_params(
            conv_geometry(node.attrs, types[:2], node.type, node.op).w, plan.width, *chunks)}
        k.host_constants[params] = np.zeros(RUNTIME_ROW_PARAMS, np.int64)
        k.frame_params = {params}
        runtime_row = load_runtime_row(k, k.args[params])
    elif plan.runtime_row:
        params = len(names) - 1
        k.bind = lambda node, types: {params: _runtime_row_params(
            plan_blocked_conv(node.attrs, types, node.type, node.op, host), node.type.dtype, host.l1d_bytes)}
        k.host_constants[params] = _runtime_row_params(plan, out_type.dtype, host.l1d_bytes)
        runtime_row = load_runtime_row(k, k.args[params])
    if depthwise:
        DepthwiseNest(k, geo, lanes, width, Buffers.of(k, residual), attrs.get("activation")).emit()
    else:
        BlockedConvNest(k, geo, lanes, vectors, width, Buffers.of(k, residual), attrs.get("activation"), transposed,
                        host.l1d_bytes, plan.plain_in, plan.plain_out, runtime_row=runtime_row).emit()
    return k.finish()


def _pack_constant_weights(weight: np.ndarray, geo: Any, lanes: int, vectors: int, transposed: bool,
                           depthwise: bool) -> np.ndarray:
    if depthwise:
        return pack_depthwise_weights(weight, lanes)
    if transposed:  # (C_in, C_out/g, *K) -> the forward conv's (C_out, C_in/g, *K), taps not flipped
        kernel = weight.shape[2:]
        weight = (weight.reshape(geo.groups, geo.cin_g, geo.cout_g, *kernel).swapaxes(1, 2)
                  .reshape(geo.c_out, geo.cin_g, *kernel))
    return pack_weights(weight, lanes, vectors)
