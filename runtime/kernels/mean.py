"""Kernel emitter for mean over any set of axes.

Neighbouring axes that are both kept or both reduced merge (axes of size 1 drop), so the input is
an alternation of kept and reduced blocks of contiguous memory. When the innermost block is
reduced, each output element is the sum of contiguous runs (reduce.run_sum), one per index of
the outer reduced blocks; when it is kept, each chunk of consecutive outputs is a set of vector
sums over the reduced rows (reduce.column_sums). The outer loop runs over output elements or
chunks. An empty reduction gives NaN, as 0/0 does in torch.
"""
from __future__ import annotations

import math
from typing import Any

import llvmlite.ir as ir

from convc.op_reduce import reduced_axes
from convc.types import TensorType

from ..codegen import Kernel, as_value
from ..jit import host_target
from .conv_geometry import divmod_index
from .reduce import column_sums, run_sum
from .registry import simple_kernel

CHUNK_VECTORS = 4  # output vectors per chunk when the innermost axes are kept

Block = tuple[int, int]  # (size, stride in elements)


def merged_blocks(shape: tuple[int, ...], axes: tuple[int, ...]) -> list[tuple[int, int, bool]]:
    """(size, stride, reduced) of the alternating kept and reduced blocks of a C-contiguous shape."""
    blocks: list[list] = []
    for axis, size in enumerate(shape):
        if size == 1:
            continue
        reduced = axis in axes
        if blocks and blocks[-1][1] == reduced:
            blocks[-1][0] *= size
        else:
            blocks.append([size, reduced])
    result, stride = [], 1
    for size, reduced in reversed(blocks):
        result.append((size, stride, reduced))
        stride *= size
    return result[::-1]


def _offset(k: Kernel, index: ir.Value, blocks: list[Block]) -> ir.Value:
    """sum(i_b * stride_b) for the multi-index of `index` over the blocks' sizes (last fastest)."""
    terms: list[ir.Value] = []
    rest = index
    for size, stride in reversed(blocks):
        rest, position = divmod_index(k, rest, size)
        terms.append(k.mul(position, stride))
    return k.add(*terms)


@simple_kernel("mean")
def emit_mean(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
              out_type: TensorType) -> Kernel:
    x = in_types[0]
    k = Kernel(module, name, out_type.dtype, 2, ("out", "x"))
    if out_type.size == 0:
        return k.finish()
    axes = reduced_axes(tuple(attrs["dim"]), x.rank)
    count = math.prod(x.shape[a] for a in axes)
    b, out, source = k.builder, k.args[0], k.args[1]
    if count == 0:
        with k.outer_loop(out_type.size, "i") as i:
            k.store(k.const(float("nan")), out, i)
        return k.finish()
    blocks = merged_blocks(x.shape, axes) or [(1, 1, False)]
    kept = [(size, stride) for size, stride, reduced in blocks if not reduced]
    reduced = [(size, stride) for size, stride, is_reduced in blocks if is_reduced]
    lanes = host_target().lanes(out_type.dtype)
    divisor = k.const(float(count))
    if blocks[-1][2]:  # the innermost block is reduced: contiguous runs
        run = reduced.pop()[0]
        with k.outer_loop(math.prod(size for size, _ in kept), "o") as o:
            total = k.alloca(k.ftype, "total")
            b.store(k.const(0.0), total)

            def nest(depth: int, row: ir.Value) -> None:
                if depth == len(reduced):
                    b.store(b.fadd(b.load(total), run_sum(k, source, row, run, lanes)), total)
                    return
                size, stride = reduced[depth]
                with k.loop(0, size, f"r{depth}") as index:
                    nest(depth + 1, k.add(row, k.mul(index, stride)))

            nest(0, _offset(k, o, kept))
            k.store(b.fdiv(b.load(total), divisor), out, o)
        return k.finish()
    width = kept.pop()[0]  # the innermost block is kept: vectors of consecutive outputs
    chunk = CHUNK_VECTORS * lanes
    chunks = -(-width // chunk)
    with k.outer_loop(math.prod(size for size, _ in kept) * chunks, "oc") as oc:
        outer, index = divmod_index(k, oc, chunks)
        column = k.mul(index, chunk)
        row = k.add(_offset(k, outer, kept), column)
        first_out = k.add(k.mul(outer, width), column)

        def emit(widths: list[int]) -> None:
            position = 0
            for total, lanes_ in zip(column_sums(k, source, row, reduced, widths), widths):
                k.vstore(b.fdiv(total, k.const(float(count), total)), out, k.add(first_out, position))
                position += lanes_

        rest = width % chunk
        tail = [lanes] * (rest // lanes) + ([rest % lanes] if rest % lanes else [])
        if not rest:
            emit([lanes] * CHUNK_VECTORS)
        elif chunks == 1:
            emit(tail)
        else:
            with b.if_else(b.icmp_signed("<", index, as_value(chunks - 1))) as (whole, last):
                with whole:
                    emit([lanes] * CHUNK_VECTORS)
                with last:
                    emit(tail)
    return k.finish()
