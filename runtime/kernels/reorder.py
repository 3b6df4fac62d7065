"""Kernel emitter for `reorder`: plain (N, C, *S) <-> channel-blocked (N, C/c, *S, c).

The outer (parallel) loop runs over (batch, channel block); c spatial positions at a time move as
a square of c x c values: c vector loads, a transpose in registers (Kernel.transpose), c vector
stores (the lanes past C are written as zeros in the blocked tensor). The positions left over
move one at a time.
"""
from __future__ import annotations

from typing import Any

import llvmlite.ir as ir

from convc.types import TensorType

from ..codegen import Kernel
from .conv_geometry import divmod_index
from .registry import simple_kernel


@simple_kernel("reorder", symbolic=True)
def emit_reorder(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
                 out_type: TensorType) -> Kernel:
    source = in_types[0]
    k = Kernel(module, name, out_type.dtype, 2, ("out", "x"))
    if out_type.size == 0:
        return k.finish()
    to_blocked = out_type.block > 0
    lanes = out_type.block if to_blocked else source.block
    batch, channels = out_type.shape[:2]
    plane = out_type.size // max(1, batch * channels)
    blocks = -(-channels // lanes)
    last_lanes = channels - (blocks - 1) * lanes
    with k.outer_loop(batch * blocks, "nb") as nb:
        n, block = divmod_index(k, nb, blocks)
        plain_base = k.add(k.mul(n, channels * plane), k.mul(block, lanes * plane))
        blocked_base = k.mul(nb, plane * lanes)

        def move(real_lanes: int) -> None:
            whole = plane // lanes
            with k.loop(0, whole, "g") as group:  # squares of lanes x lanes, transposed in registers
                first = k.mul(group, lanes)
                if to_blocked:
                    zero = ir.Constant(k.vector_type(lanes), [0.0] * lanes)
                    rows = [k.vload(k.args[1], k.add(plain_base, first, lane * plane), lanes) if lane < real_lanes
                            else zero for lane in range(lanes)]
                    for position, vector in enumerate(k.transpose(rows)):
                        k.vstore(vector, k.args[0], k.add(blocked_base, k.mul(k.add(first, position), lanes)))
                else:
                    rows = [k.vload(k.args[1], k.add(blocked_base, k.mul(k.add(first, position), lanes)), lanes)
                            for position in range(lanes)]
                    for lane, vector in enumerate(k.transpose(rows)[:real_lanes]):
                        k.vstore(vector, k.args[0], k.add(plain_base, first, lane * plane))
            with k.loop(whole * lanes, plane, "s") as s:  # the rest, one position at a time
                plain = k.add(plain_base, s)
                blocked = k.add(blocked_base, k.mul(s, lanes))
                if to_blocked:
                    vector = ir.Constant(k.vector_type(lanes), None)
                    for lane in range(lanes):
                        value = k.load(k.args[1], k.add(plain, lane * plane)) if lane < real_lanes else k.const(0.0)
                        vector = k.builder.insert_element(vector, value, ir.Constant(ir.IntType(32), lane))
                    k.vstore(vector, k.args[0], blocked)
                else:
                    vector = k.vload(k.args[1], blocked, lanes)
                    for lane in range(real_lanes):
                        value = k.builder.extract_element(vector, ir.Constant(ir.IntType(32), lane))
                        k.store(value, k.args[0], k.add(plain, lane * plane))

        if last_lanes == lanes:
            move(lanes)
        else:
            last = k.builder.icmp_unsigned("==", block, ir.Constant(block.type, blocks - 1))
            with k.builder.if_else(last) as (partial, full):
                with partial:
                    move(last_lanes)
                with full:
                    move(lanes)
    return k.finish()
