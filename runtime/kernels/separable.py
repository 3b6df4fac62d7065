"""Kernel emitter for separable_conv2d (TF: depthwise then pointwise), fused: per output pixel the
depthwise result (C*M values) is computed into a stack buffer and consumed at once by the
pointwise product, so the intermediate tensor never exists in memory. NHWC and NCHW share the
code through compile-time element strides."""
from __future__ import annotations

from typing import Any

import llvmlite.ir as ir

from convc.op_tf import separable_pads
from convc.types import TensorType

from ..codegen import Kernel
from .conv import _divmod

MAX_STACK_VALUES = 1 << 16  # C*M + F scratch values per thread, on the stack


def _strides(shape: tuple[int, ...], nhwc: bool) -> tuple[int, int, int, int]:
    """Element strides (batch, row, col, channel) of a C-contiguous NHWC or NCHW tensor."""
    if nhwc:
        _, h, w, c = shape
        return h * w * c, w * c, c, 1
    _, c, h, w = shape
    return c * h * w, w, 1, h * w


def emit_separable_conv2d(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
                          out_type: TensorType) -> Kernel:
    x, depthwise, pointwise = in_types
    k = Kernel(module, name, out_type.dtype, 4, ("out", "x", "depthwise", "pointwise"))
    if out_type.size == 0:
        return k.finish()
    nhwc = attrs["data_format"] == "NHWC"
    batch = x.shape[0]
    height, width = (x.shape[1], x.shape[2]) if nhwc else (x.shape[2], x.shape[3])
    out_h, out_w = (out_type.shape[1], out_type.shape[2]) if nhwc else (out_type.shape[2], out_type.shape[3])
    kh, kw, channels, mult = depthwise.shape
    filters = pointwise.shape[3]
    if channels * mult + filters > MAX_STACK_VALUES:
        raise NotImplementedError(f"separable_conv2d: {channels * mult} depthwise channels and {filters} filters "
                                  f"exceed the fused kernel's scratch of {MAX_STACK_VALUES} values")
    (sh, sw), (rh, rw) = attrs["strides"], attrs["dilations"]
    lo, _ = separable_pads(attrs, x.shape, (kh, kw))
    xs, os_ = _strides(x.shape, nhwc), _strides(out_type.shape, nhwc)
    b = k.builder
    out_ptr, x_ptr, dw_ptr, pw_ptr = k.args
    middle = k.alloca(ir.ArrayType(k.ftype, channels * mult), "depthwise_pixel")
    middle = b.bitcast(middle, k.ftype.as_pointer())
    acc = b.bitcast(k.alloca(ir.ArrayType(k.ftype, filters), "pointwise_pixel"), k.ftype.as_pointer())
    zero = k.const(0.0)
    with k.outer_loop(batch * out_h, "row") as row:
        n, oy = _divmod(k, row, out_h)
        with k.loop(0, out_w, "ox") as ox:
            with k.loop(0, channels * mult, "clear") as cm:
                k.store(zero, middle, cm)
            with k.loop(0, kh, "ky") as ky:
                iy = k.add(k.mul(oy, sh), k.mul(ky, rh), -lo[0])
                row_ok = b.and_(b.icmp_signed(">=", iy, k.add(0)), b.icmp_signed("<", iy, k.add(height)))
                with b.if_then(row_ok), k.loop(0, kw, "kx") as kx:
                    ix = k.add(k.mul(ox, sw), k.mul(kx, rw), -lo[1])
                    col_ok = b.and_(b.icmp_signed(">=", ix, k.add(0)), b.icmp_signed("<", ix, k.add(width)))
                    with b.if_then(col_ok):
                        pixel = k.offset(x_ptr, k.add(k.mul(n, xs[0]), k.mul(iy, xs[1]), k.mul(ix, xs[2])))
                        taps = k.offset(dw_ptr, k.mul(k.add(k.mul(ky, kw), kx), channels * mult))
                        with k.loop(0, channels, "c") as c:
                            value = k.load(pixel, k.mul(c, xs[3]))
                            for m in range(mult):
                                index = k.add(k.mul(c, mult), m)
                                k.store(k.fma(value, k.load(taps, index), k.load(middle, index)), middle, index)
            with k.loop(0, filters, "zero") as f:
                k.store(zero, acc, f)
            with k.loop(0, channels * mult, "cm") as cm:
                value = k.load(middle, cm)
                weights = k.offset(pw_ptr, k.mul(cm, filters))
                with k.loop(0, filters, "f") as f:
                    k.store(k.fma(value, k.load(weights, f), k.load(acc, f)), acc, f)
            target = k.offset(out_ptr, k.add(k.mul(n, os_[0]), k.mul(oy, os_[1]), k.mul(ox, os_[2])))
            with k.loop(0, filters, "store") as f:
                k.store(k.load(acc, f), target, k.mul(f, os_[3]))
    return k.finish()
