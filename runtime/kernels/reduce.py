"""The reduction building block of the kernel emitters: sums over contiguous runs of memory in
vector accumulators, shared by layer_norm, group_norm (plain and blocked) and mean.

- `lane_sums`: the lane-wise sum of consecutive vectors (UNROLL independent accumulators, so the
  adds pipeline), each element first passed through a `Step` (a plain sum, or the squared deviation
  from a mean, for the second pass of a two-pass variance).
- `horizontal_sum`: the sum of a vector's lanes, as a tree of shuffles.
- `run_sum`: the scalar sum of a contiguous run: `lane_sums` over its whole vectors, a horizontal
  add, and its tail as one narrower vector.
- `column_sums`: vectors of sums over a nest of strided rows of one contiguous run (a reduction
  over outer axes, each lane its own result).

Accumulators live in stack slots that LLVM promotes to registers.
"""
from __future__ import annotations

from typing import Callable, Sequence

import llvmlite.ir as ir

from ..codegen import Kernel, as_value

Step = Callable[[Kernel, ir.Value, ir.Value], ir.Value]  # (kernel, element(s), accumulator) -> accumulator

UNROLL = 4  # independent vector accumulators of lane_sums


def add_step(k: Kernel, value: ir.Value, acc: ir.Value) -> ir.Value:
    """acc + value: a plain sum."""
    return k.builder.fadd(acc, value)


def squared_deviation(mean: ir.Value) -> Step:
    """acc + (value - mean)^2, with `mean` a scalar (splatted to vectors) or a vector of lanes."""
    def step(k: Kernel, value: ir.Value, acc: ir.Value) -> ir.Value:
        centre = mean
        if isinstance(value.type, ir.VectorType) and not isinstance(mean.type, ir.VectorType):
            centre = k.splat(mean, value.type.count)
        deviation = k.builder.fsub(value, centre)
        return k.intrinsic("fma", deviation, deviation, acc)
    return step


def _zero(k: Kernel, lanes: int) -> ir.Constant:
    return ir.Constant(k.vector_type(lanes), [0.0] * lanes)


def lane_sums(k: Kernel, base: ir.Value, offset: int | ir.Value, vectors: int, lanes: int,
              step: Step = add_step) -> ir.Value:
    """The lane-wise sum of `vectors` consecutive vectors of `lanes` elements at base[offset]
    (`vectors` may be a symbolic size)."""
    if isinstance(vectors, int) and vectors == 0:
        return _zero(k, lanes)
    b = k.builder
    unroll = min(UNROLL, vectors)
    slots = [k.alloca(k.vector_type(lanes), f"acc{u}") for u in range(unroll)]
    for slot in slots:
        b.store(_zero(k, lanes), slot)
    rounds = vectors // unroll
    with k.loop(0, rounds, "sum") as index:
        start = k.add(offset, k.mul(index, unroll * lanes))
        for u, slot in enumerate(slots):
            b.store(step(k, k.vload(base, k.add(start, u * lanes), lanes), b.load(slot)), slot)
    remainder = vectors % unroll
    if isinstance(remainder, int):
        for u in range(remainder):
            slot = slots[u]
            b.store(step(k, k.vload(base, k.add(offset, (rounds * unroll + u) * lanes), lanes), b.load(slot)), slot)
    else:  # a symbolic count: the rest in a loop
        with k.loop(k.mul(rounds, unroll), vectors, "rest") as index:
            b.store(step(k, k.vload(base, k.add(offset, k.mul(index, lanes)), lanes), b.load(slots[0])), slots[0])
    return _tree(k, [b.load(slot) for slot in slots])


def _tree(k: Kernel, values: list[ir.Value]) -> ir.Value:
    while len(values) > 1:
        values = [k.builder.fadd(values[i], values[i + 1]) if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def horizontal_sum(k: Kernel, vector: ir.Value) -> ir.Value:
    """The sum of a vector's lanes: halves added while the count is even, the rest one by one."""
    b = k.builder
    lanes = vector.type.count
    while lanes > 1 and lanes % 2 == 0:
        half = lanes // 2
        low = b.shuffle_vector(vector, ir.Constant(vector.type, None),
                               ir.Constant(ir.VectorType(ir.IntType(32), half), list(range(half))))
        high = b.shuffle_vector(vector, ir.Constant(vector.type, None),
                                ir.Constant(ir.VectorType(ir.IntType(32), half), list(range(half, lanes))))
        vector, lanes = b.fadd(low, high), half
    return _tree(k, [b.extract_element(vector, ir.Constant(ir.IntType(32), lane)) for lane in range(lanes)])


def run_sum(k: Kernel, base: ir.Value, offset: int | ir.Value, length: int, lanes: int,
            step: Step = add_step) -> ir.Value:
    """The sum of `length` contiguous elements at base[offset] (each through `step`), a scalar."""
    whole, tail = divmod(length, lanes)
    total = horizontal_sum(k, lane_sums(k, base, offset, whole, lanes, step)) if whole else k.const(0.0)
    if tail:
        rest = step(k, k.vload(base, k.add(offset, whole * lanes), tail), _zero(k, tail))
        total = k.builder.fadd(total, horizontal_sum(k, rest))
    return total


def column_sums(k: Kernel, base: ir.Value, offset: int | ir.Value, loops: Sequence[tuple[int, int]],
                widths: Sequence[int], step: Step = add_step) -> list[ir.Value]:
    """Sums over the rows of a nest, lane by lane: for each (extent, stride) of `loops` an index
    i, and the row at base[offset + sum(i * stride)] read as consecutive vectors of `widths`
    lanes; returns one vector of sums per width."""
    b = k.builder
    slots = [k.alloca(k.vector_type(width), f"col{i}") for i, width in enumerate(widths)]
    for slot, width in zip(slots, widths):
        b.store(_zero(k, width), slot)

    def nest(depth: int, row: ir.Value) -> None:
        if depth == len(loops):
            column = 0
            for slot, width in zip(slots, widths):
                b.store(step(k, k.vload(base, k.add(row, column), width), b.load(slot)), slot)
                column += width
            return
        extent, stride = loops[depth]
        with k.loop(0, extent, f"r{depth}") as index:
            nest(depth + 1, k.add(row, k.mul(index, stride)))

    nest(0, as_value(offset))
    return [b.load(slot) for slot in slots]
