"""Kernel emitter for separable_conv2d (TF: depthwise then pointwise), fused so that the
intermediate tensor never exists in memory.

- NCHW with rows at least a vector wide (the form the depthwise + pointwise fusion pass makes):
  per output row, the depthwise row of every channel is computed by the conv register tiles
  into a stack buffer (C*M x OW values, in L1), then the pointwise product runs as register
  tiles of a 1x1 conv over that buffer.
- Otherwise (NHWC, narrow rows): per output pixel, the depthwise vector (C*M values) goes to a
  stack buffer and is consumed at once by the pointwise product; NHWC and NCHW share this code
  through compile-time element strides.
Optional operands depthwise_bias and bias, and the attributes depthwise_activation (applied to
the depthwise result) and activation (to the output), come from the fusion pass."""
from __future__ import annotations

from typing import Any

import llvmlite.ir as ir

from convc.op_tf import separable_pads
from convc.types import TensorType

from ..codegen import Kernel
from ..jit import host_target
from .conv_geometry import Axis, ConvGeometry, divmod_index
from .conv_tiles import TileOperands, choose_tiling, tile_row
from .elementwise import activate

MAX_STACK_VALUES = 1 << 16  # C*M + F scratch values per thread, on the stack
MAX_ROW_BUFFER = 1 << 15  # C*M x OW depthwise values of one output row for the tiled path


def _strides(shape: tuple[int, ...], nhwc: bool) -> tuple[int, int, int, int]:
    """Element strides (batch, row, col, channel) of a C-contiguous NHWC or NCHW tensor."""
    if nhwc:
        _, h, w, c = shape
        return h * w * c, w * c, c, 1
    _, c, h, w = shape
    return c * h * w, w, 1, h * w


def emit_separable_conv2d(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
                          out_type: TensorType) -> Kernel:
    x, depthwise, pointwise = in_types[:3]
    has_bias = len(in_types) == 5
    k = Kernel(module, name, out_type.dtype, 6 if has_bias else 4,
               ("out", "x", "depthwise", "pointwise", "depthwise_bias", "bias"))
    if out_type.size == 0:
        return k.finish()
    if attrs["data_format"] == "NCHW" and _emit_tiled_nchw(k, attrs, in_types, out_type):
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
    out_ptr, x_ptr, dw_ptr, pw_ptr = k.args[:4]
    middle_activation, activation = attrs.get("depthwise_activation"), attrs.get("activation")
    middle = k.alloca(ir.ArrayType(k.ftype, channels * mult), "depthwise_pixel")
    middle = b.bitcast(middle, k.ftype.as_pointer())
    acc = b.bitcast(k.alloca(ir.ArrayType(k.ftype, filters), "pointwise_pixel"), k.ftype.as_pointer())
    zero = k.const(0.0)
    with k.outer_loop(batch * out_h, "row") as row:
        n, oy = divmod_index(k, row, out_h)
        with k.loop(0, out_w, "ox") as ox:
            with k.loop(0, channels * mult, "clear") as cm:
                k.store(zero, middle, cm)
            with k.loop(0, kh, "ky") as ky:
                iy = k.add(k.mul(oy, sh), k.mul(ky, rh), -lo[0])
                with b.if_then(k.inside(iy, height)), k.loop(0, kw, "kx") as kx:
                    ix = k.add(k.mul(ox, sw), k.mul(kx, rw), -lo[1])
                    with b.if_then(k.inside(ix, width)):
                        pixel = k.offset(x_ptr, k.add(k.mul(n, xs[0]), k.mul(iy, xs[1]), k.mul(ix, xs[2])))
                        taps = k.offset(dw_ptr, k.mul(k.add(k.mul(ky, kw), kx), channels * mult))
                        with k.loop(0, channels, "c") as c:
                            value = k.load(pixel, k.mul(c, xs[3]))
                            for m in range(mult):
                                index = k.add(k.mul(c, mult), m)
                                k.store(k.fma(value, k.load(taps, index), k.load(middle, index)), middle, index)
            if has_bias or middle_activation:
                with k.loop(0, channels * mult, "dw_epilogue") as cm:
                    value = k.load(middle, cm)
                    value = b.fadd(value, k.load(k.args[4], cm)) if has_bias else value
                    k.store(activate(k, middle_activation, value), middle, cm)
            with k.loop(0, filters, "zero") as f:
                k.store(k.load(k.args[5], f) if has_bias else zero, acc, f)
            with k.loop(0, channels * mult, "cm") as cm:
                value = k.load(middle, cm)
                weights = k.offset(pw_ptr, k.mul(cm, filters))
                with k.loop(0, filters, "f") as f:
                    k.store(k.fma(value, k.load(weights, f), k.load(acc, f)), acc, f)
            target = k.offset(out_ptr, k.add(k.mul(n, os_[0]), k.mul(oy, os_[1]), k.mul(ox, os_[2])))
            with k.loop(0, filters, "store") as f:
                value = k.load(acc, f)
                k.store(activate(k, activation, value), target, k.mul(f, os_[3]))
    return k.finish()


def _emit_tiled_nchw(k: Kernel, attrs: dict[str, Any], in_types: list[TensorType], out_type: TensorType) -> bool:
    """The register-tiled NCHW path (see the module docstring); False where it does not apply."""
    x, depthwise, pointwise = in_types[:3]
    has_bias = len(in_types) == 5
    batch, channels, height, width = x.shape
    kh, kw, _, mult = depthwise.shape
    filters, out_h, out_w = pointwise.shape[3], out_type.shape[2], out_type.shape[3]
    (sh, sw), (rh, rw) = attrs["strides"], attrs["dilations"]
    lo, _ = separable_pads(attrs, x.shape, (kh, kw))
    trivial = Axis(1, 1, 1, 1, 1, 0)
    depthwise_geo = ConvGeometry(batch, channels, channels * mult, channels, trivial,
                                 Axis(height, out_h, kh, sh, rh, lo[0]), Axis(width, out_w, kw, sw, rw, lo[1]),
                                 "zeros", has_bias, attrs.get("depthwise_activation"))
    pointwise_geo = ConvGeometry(1, channels * mult, filters, 1, trivial, trivial, Axis(out_w, out_w, 1, 1, 1, 0),
                                 "zeros", has_bias, attrs.get("activation"))
    host = host_target()
    depthwise_tiles = choose_tiling(depthwise_geo, host, out_type.dtype)
    pointwise_tiles = choose_tiling(pointwise_geo, host, out_type.dtype)
    if depthwise_tiles is None or pointwise_tiles is None or channels * mult * out_w > MAX_ROW_BUFFER:
        return False
    buffer = k.builder.bitcast(k.alloca(ir.ArrayType(k.ftype, channels * mult * out_w), "depthwise_row"),
                               k.ftype.as_pointer())
    zero = k.add(0)
    with k.outer_loop(batch * out_h, "row") as row:
        n, oh = divmod_index(k, row, out_h)
        into_buffer = TileOperands(k.args[1], k.args[2], k.args[4] if has_bias else None,
                                   lambda cm, od, oh_: k.offset(buffer, k.mul(cm, out_w)),
                                   co_stride=1, ci_stride=0, tap_stride=channels * mult)
        with k.loop(0, channels, "c") as c:
            tile_row(k, depthwise_geo, depthwise_tiles, n, c, zero, oh, into_buffer)
        out_rows = TileOperands(buffer, k.args[3], k.args[5] if has_bias else None,
                                lambda f, od, oh_: k.offset(k.args[0], k.mul(k.add(k.mul(k.add(k.mul(n, filters), f),
                                                                                         out_h), oh), out_w)),
                                co_stride=1, ci_stride=filters, tap_stride=0)
        tile_row(k, pointwise_geo, pointwise_tiles, zero, zero, zero, zero, out_rows)
    return True
