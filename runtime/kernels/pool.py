"""Kernel emitter for adaptive_avg_pool1d: torch's bins [floor(i*L/O), ceil((i+1)*L/O)) computed
in integer arithmetic (`adaptive_bin`, which adaptive_avg_pool2d shares), one row per (n, c)."""
from __future__ import annotations

import math
from typing import Any

import llvmlite.ir as ir

from convc.types import TensorType

from ..codegen import Kernel, i64
from .registry import simple_kernel


def adaptive_bin(k: Kernel, index: ir.Value, length: int, size: int) -> tuple[ir.Value, ir.Value]:
    """[start, end) of bin `index` of `size` over an axis of `length`: [floor(i*L/O), ceil((i+1)*L/O))."""
    b = k.builder
    start = b.udiv(b.mul(index, i64(length)), i64(size))
    end = b.udiv(b.add(b.mul(b.add(index, i64(1)), i64(length)), i64(size - 1)), i64(size))
    return start, end


@simple_kernel("adaptive_avg_pool1d")
def emit_adaptive_avg_pool1d(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
                             out_type: TensorType) -> Kernel:
    x = in_types[0]
    k = Kernel(module, name, out_type.dtype, 2, ("out", "x"))
    if out_type.size == 0:
        return k.finish()
    length, size = x.shape[-1], attrs["output_size"]
    b = k.builder
    with k.outer_loop(math.prod(x.shape[:-1]), "row") as row:
        x_row = k.offset(k.args[1], k.mul(row, length))
        out_row = k.offset(k.args[0], k.mul(row, size))
        with k.loop(0, size, "bin") as index:
            start, end = adaptive_bin(k, index, length, size)
            total = k.alloca(k.ftype, "total")
            b.store(k.const(0.0), total)
            with k.loop(start, end, "i") as i:
                b.store(b.fadd(b.load(total), k.load(x_row, i)), total)
            count = b.sitofp(b.sub(end, start), k.ftype)
            k.store(b.fdiv(b.load(total), count), out_row, index)
    return k.finish()
