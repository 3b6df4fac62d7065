"""Kernel emitter for extract_patches (NHWC): each output pixel's depth axis is the patch, copied
as kh*kw contiguous runs of `depth` values (zeros where the patch leaves the image)."""
from __future__ import annotations

from typing import Any

import llvmlite.ir as ir

from convc.op_tf import patch_pads
from convc.types import TensorType

from ..codegen import Kernel
from .conv_geometry import divmod_index
from .registry import simple_kernel


@simple_kernel("extract_patches")
def emit_extract_patches(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
                         out_type: TensorType) -> Kernel:
    x = in_types[0]
    k = Kernel(module, name, out_type.dtype, 2, ("out", "x"))
    if out_type.size == 0:
        return k.finish()
    batch, height, width, depth = x.shape
    _, out_h, out_w, out_depth = out_type.shape
    (kh, kw), (sh, sw), (rh, rw) = attrs["sizes"], attrs["strides"], attrs["rates"]
    lo, _ = patch_pads(attrs, x.shape)
    b = k.builder
    zero = k.const(0.0)
    with k.outer_loop(batch * out_h, "row") as row:
        n, i = divmod_index(k, row, out_h)
        with k.loop(0, out_w, "j") as j, k.loop(0, kh, "a") as a, k.loop(0, kw, "c") as c:
            y = k.add(k.mul(i, sh), k.mul(a, rh), -lo[0])
            x_ = k.add(k.mul(j, sw), k.mul(c, rw), -lo[1])
            inside = b.and_(k.inside(y, height), k.inside(x_, width))
            target = k.offset(k.args[0], k.add(k.mul(k.add(k.mul(row, out_w), j), out_depth),
                                               k.mul(k.add(k.mul(a, kw), c), depth)))
            with b.if_else(inside) as (copy, fill):
                with copy:
                    source = k.offset(k.args[1], k.mul(k.add(k.mul(k.add(k.mul(n, height), y), width), x_), depth))
                    with k.loop(0, depth, "d") as d:
                        k.store(k.load(source, d), target, d)
                with fill:
                    with k.loop(0, depth, "z") as d:
                        k.store(zero, target, d)
    return k.finish()
