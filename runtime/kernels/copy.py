"""Copy kernels of the layout ops: transpose, permute, reshape, flatten, squeeze, unsqueeze, slice
and cat. Where the memory plan makes a node a view (convc.op_shape), its kernel is not called; it
runs where the node is a graph output, an eager call or not contiguous in its source.

Every copy is a `CopyNest`: `shape` elements from a source read through its strides into a
destination written through its own, with the axes that both walk contiguously merged. Its
innermost work is one of:
- a run: consecutive elements on both sides, copied in vectors of the host's width (then the
  rest one by one); a long run is split into pieces so that the threads share it;
- a tiled transpose: where the destination's innermost axis is strided in the source and another
  axis is the source's contiguous one, squares of lanes x lanes move as lanes vector loads, a
  transpose in registers (Kernel.transpose) and lanes vector stores; the edges one by one;
- a gather: one element at a time along the innermost axis (strided on both sides).
The kernel's outer loop runs over the nest's jobs (the first outer axis times the pieces); cat
runs the jobs of its operands' nests one after the other in the same loop. Transposes and
contiguous copies take symbolic sizes: the extents, strides and tile counts are then read at run
time, and the pieces of a run planned at the generic point.
"""
from __future__ import annotations

from typing import Callable

import llvmlite.ir as ir

from convc.ir import Node
from convc.op_shape import cat_axis, cat_operands, contiguous_strides, permutation, slice_bounds
from convc.symbolic import generic_of
from convc.types import TensorType

from ..codegen import Kernel, i64
from ..jit import host_target
from .conv_geometry import divmod_index
from .elementwise import merge_axes
from .registry import Values, kernel

RUN_PIECE = 4096  # elements of a run piece: a job big enough to outweigh its dispatch
PARALLEL_JOBS = 16  # jobs wanted from a long run, so both cores share it evenly


class CopyNest:
    """dst[dst_offset + i . dst_strides] = src[src_offset + i . src_strides] over every index i of
    `shape` (element strides and offsets); `jobs` parts, emitted one at a time by `emit`."""

    def __init__(self, k: Kernel, shape: tuple[int, ...], dst_strides: tuple[int, ...], dst_offset: int,
                 src_strides: tuple[int, ...], src_offset: int) -> None:
        self.k, self.lanes = k, host_target().lanes(k.dtype)
        self.dst_offset, self.src_offset = dst_offset, src_offset
        dims, (dst, src) = merge_axes(shape, [dst_strides, src_strides])
        if not dims:  # a single element
            dims, dst, src = (1,), (1,), (1,)
        last = len(dims) - 1
        self.inner = last
        self.tile_axis = None
        if (dst[last], src[last]) == (1, 1):
            self.kind = "run"
        else:
            self.kind = "gather"
            across = [a for a in range(last) if src[a] == 1 and dst[last] == 1]
            if across and min(dims[across[0]], dims[last]) >= self.lanes:
                self.kind, self.tile_axis = "transpose", across[0]
        self.dims, self.dst, self.src = dims, dst, src
        self.outer = [a for a in range(last) if a != self.tile_axis]
        first = dims[self.outer[0]] if self.outer else 1
        if self.kind == "transpose":
            self.pieces = -(-dims[self.tile_axis] // self.lanes)
        else:
            wanted = -(-PARALLEL_JOBS // generic_of(first))  # symbolic lengths: planned at the generic point
            self.pieces = max(1, min(wanted, generic_of(dims[last]) // RUN_PIECE))
        self.jobs = first * self.pieces

    def emit(self, job: ir.Value, dst: ir.Value, src: ir.Value) -> None:
        """The copy of part `job` (0 <= job < jobs) between the buffers dst and src."""
        k = self.k
        lead, piece = divmod_index(k, job, self.pieces) if self.pieces > 1 else (job, i64(0))
        offsets = [i64(self.dst_offset), i64(self.src_offset)]
        if self.outer:
            offsets = self._step(offsets, self.outer[0], lead)
        self._nest(1, offsets, lambda d, s: self._innermost(piece, k.offset(dst, d), k.offset(src, s)))

    def _step(self, offsets: list[ir.Value], axis: int, index: ir.Value) -> list[ir.Value]:
        k = self.k
        return [k.add(offsets[0], k.mul(index, self.dst[axis])), k.add(offsets[1], k.mul(index, self.src[axis]))]

    def _nest(self, depth: int, offsets: list[ir.Value], body: Callable[[ir.Value, ir.Value], None]) -> None:
        if depth >= len(self.outer):
            body(*offsets)
            return
        axis = self.outer[depth]
        with self.k.loop(0, self.dims[axis], f"a{axis}") as index:
            self._nest(depth + 1, self._step(offsets, axis, index), body)

    def _innermost(self, piece: ir.Value, dst: ir.Value, src: ir.Value) -> None:
        k, length = self.k, self.dims[self.inner]
        if self.kind == "transpose":
            self._transpose(piece, dst, src)
            return
        if self.pieces > 1:
            b = k.builder
            lo = b.udiv(k.mul(piece, length), k.value(self.pieces))
            hi = b.udiv(k.mul(k.add(piece, 1), length), k.value(self.pieces))
        else:
            lo, hi = i64(0), k.value(length)
        if self.kind == "run":
            copy_run(k, k.offset(dst, lo), k.offset(src, lo), k.builder.sub(hi, lo), self.lanes)
            return
        with k.loop(lo, hi, "i") as i:
            k.store(k.load(src, k.mul(i, self.src[self.inner])), dst, k.mul(i, self.dst[self.inner]))

    def _transpose(self, tile: ir.Value, dst: ir.Value, src: ir.Value) -> None:
        """Rows [tile*lanes, +lanes) of the tile axis (contiguous in the source) against every
        index of the innermost axis (contiguous in the destination)."""
        k, lanes, b = self.k, self.lanes, self.k.builder
        across, inner = self.tile_axis, self.inner
        rows, length = self.dims[across], self.dims[inner]
        first = k.mul(tile, lanes)

        def element(row: ir.Value, column: ir.Value) -> None:
            k.store(k.load(src, k.add(row, k.mul(column, self.src[inner]))), dst,
                    k.add(k.mul(row, self.dst[across]), column))

        def full_rows() -> None:
            with k.loop(0, length // lanes, "square") as square:
                column0 = k.mul(square, lanes)
                loaded = [k.vload(src, k.add(first, k.mul(k.add(column0, j), self.src[inner])), lanes)
                          for j in range(lanes)]
                for i, vector in enumerate(k.transpose(loaded)):
                    k.vstore(vector, dst, k.add(k.mul(k.add(first, i), self.dst[across]), column0))
            with k.loop(length // lanes * lanes, length, "column") as column:
                for i in range(lanes):
                    element(k.add(first, i), column)

        def last_rows() -> None:
            with k.loop(first, rows, "row") as row, k.loop(0, length, "column") as column:
                element(row, column)

        if isinstance(rows, int) and rows % lanes == 0:
            full_rows()
            return
        with b.if_else(b.icmp_unsigned("<", tile, k.value(rows // lanes))) as (whole, partial):
            with whole:
                full_rows()
            with partial:
                last_rows()


def copy_run(k: Kernel, dst: ir.Value, src: ir.Value, length: ir.Value, lanes: int) -> None:
    """dst[0:length] = src[0:length] in vectors of `lanes`, then the rest one element at a time."""
    vectors = k.builder.udiv(length, i64(lanes))
    with k.loop(0, vectors, "v") as v:
        k.vstore(k.vload(src, k.mul(v, lanes), lanes), dst, k.mul(v, lanes))
    with k.loop(k.mul(vectors, lanes), length, "rest") as i:
        k.store(k.load(src, i), dst, i)


def emit_nests(k: Kernel, nests: list[tuple[CopyNest, int]]) -> Kernel:
    """One outer loop over the jobs of every nest (each with the index of its source buffer)."""
    total = sum(nest.jobs for nest, _ in nests)
    if not total:
        return k.finish()
    b = k.builder
    with k.outer_loop(total, "job") as job:
        if len(nests) == 1:
            nest, source = nests[0]
            nest.emit(job, k.args[0], k.args[source])
        else:
            base = 0
            for nest, source in nests:
                inside = b.and_(b.icmp_unsigned(">=", job, k.value(base)),
                                b.icmp_unsigned("<", job, k.value(base + nest.jobs)))
                with b.if_then(inside):
                    nest.emit(b.sub(job, k.value(base)), k.args[0], k.args[source])
                base += nest.jobs
    return k.finish()


@kernel("reshape", "flatten", "squeeze", "unsqueeze", symbolic=True)
def _contiguous_copy(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    k = Kernel(module, name, node.type.dtype, 2, ("out", "x"))
    size = node.type.size
    return emit_nests(k, [(CopyNest(k, (size,), (1,), 0, (1,), 0), 1)] if size else [])


@kernel("transpose", "permute", symbolic=True)
def _permute(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    k = Kernel(module, name, node.type.dtype, 2, ("out", "x"))
    x, out = in_types[0], node.type
    strides = contiguous_strides(x.shape)
    source = tuple(strides[a] for a in permutation(node.op, node.attrs, x.rank))
    nests = [(CopyNest(k, out.shape, contiguous_strides(out.shape), 0, source, 0), 1)] if out.size else []
    return emit_nests(k, nests)


@kernel("slice")
def _slice(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    k = Kernel(module, name, node.type.dtype, 2, ("out", "x"))
    x, out = in_types[0], node.type
    axis, start, step, _ = slice_bounds(node.attrs, x.shape)
    strides = list(contiguous_strides(x.shape))
    offset = start * strides[axis]
    strides[axis] *= step
    nests = [(CopyNest(k, out.shape, contiguous_strides(out.shape), 0, tuple(strides), offset), 1)] if out.size else []
    return emit_nests(k, nests)


@kernel("cat")
def _cat(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    out = node.type
    k = Kernel(module, name, out.dtype, 1 + len(in_types), ["out"] + [f"in{i}" for i in range(len(in_types))])
    axis = cat_axis(node.attrs, in_types)
    strides = contiguous_strides(out.shape)
    nests, position = [], 0
    for index in cat_operands(in_types):
        t = in_types[index]
        if t.size:
            nests.append((CopyNest(k, t.shape, strides, position * strides[axis], contiguous_strides(t.shape), 0),
                          1 + index))
        position += t.shape[axis]
    return emit_nests(k, nests)
