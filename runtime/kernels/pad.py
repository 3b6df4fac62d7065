"""Kernel emitter for pad (constant, circular, reflect, replicate; negative amounts crop).

The output is walked row by row (the last axis); each outer index maps to its source through the
mode (constant: out of range fills the whole row with `value`). Along the row, the copied middle
is a plain contiguous loop and only the border columns go through `Kernel.border_index`.
"""
from __future__ import annotations

import math
from typing import Any

import llvmlite.ir as ir

from convc.op_pad_pool import pad_amounts
from convc.types import TensorType

from ..codegen import Kernel
from .conv_geometry import divmod_index
from .registry import simple_kernel

BORDER_MODE = {"constant": "zeros", "circular": "circular", "reflect": "reflect", "replicate": "replicate"}


def _source(k: Kernel, out_index: ir.Value, lo: int, hi: int, size: int, mode: str) -> tuple[ir.Value, ir.Value | None]:
    """(source index, valid) of an output index along one axis. Circular padding wraps around the
    input as cropped by the negative amounts (as torch does); the other modes read the input."""
    if mode != "circular":
        return k.border_index(k.add(out_index, -lo), size, mode)
    crop_lo, crop_hi = max(0, -lo), max(0, -hi)
    index, valid = k.border_index(k.add(out_index, -max(lo, 0)), size - crop_lo - crop_hi, mode)
    return k.add(index, crop_lo), valid


@simple_kernel("pad")
def emit_pad(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
             out_type: TensorType) -> Kernel:
    x = in_types[0]
    k = Kernel(module, name, out_type.dtype, 2, ("out", "x"))
    if out_type.size == 0:
        return k.finish()
    if x.rank == 0:
        with k.outer_loop(1, "scalar"):
            k.store(k.load(k.args[1], 0), k.args[0], 0)
        return k.finish()
    lo, hi = pad_amounts(attrs, x.rank)
    mode, fill = BORDER_MODE[attrs["mode"]], k.const(attrs["value"])
    b = k.builder
    width_in, width_out, shift = x.shape[-1], out_type.shape[-1], lo[-1]
    middle = (min(max(shift, 0), width_out), min(width_out, max(0, width_in + shift)))
    middle = (middle[0], max(middle))
    with k.outer_loop(math.prod(out_type.shape[:-1]), "row") as row:
        rest, source_row, valid_all = row, None, None
        sources = []
        for axis in reversed(range(x.rank - 1)):
            rest, index = divmod_index(k, rest, out_type.shape[axis])
            mapped, valid = _source(k, index, lo[axis], hi[axis], x.shape[axis], mode)
            sources.append(mapped)
            if valid is not None:
                valid_all = valid if valid_all is None else b.and_(valid_all, valid)
        for axis, mapped in zip(range(x.rank - 1), reversed(sources)):
            source_row = mapped if source_row is None else k.add(k.mul(source_row, x.shape[axis]), mapped)
        out_row = k.offset(k.args[0], k.mul(row, width_out))
        x_row = k.offset(k.args[1], k.mul(source_row, width_in) if source_row is not None else 0)

        def copy_row() -> None:
            with k.loop(middle[0], middle[1], "copy") as o:
                k.store(k.load(x_row, k.add(o, -shift)), out_row, o)
            for first, last in ((0, middle[0]), (middle[1], width_out)):
                with k.loop(first, last, "border") as o:
                    index, valid = _source(k, o, shift, hi[-1], width_in, mode)
                    if valid is None:
                        k.store(k.load(x_row, index), out_row, o)
                    else:
                        k.store(fill, out_row, o)

        if valid_all is None:
            copy_row()
        else:
            with b.if_else(valid_all) as (inside, outside):
                with inside:
                    copy_row()
                with outside:
                    with k.loop(0, width_out, "fill") as o:
                        k.store(fill, out_row, o)
    return k.finish()
