"""separable_conv2d on channel-blocked tensors: the form the depthwise + pointwise fusion makes of a
blocked depthwise conv2d (multiplier 1) whose only user is a blocked 1x1 conv2d.

    parallel for output row (n, oh):
        for channel block:   row buffer[block] = depthwise row (DepthwiseNest, its activation)
        for output tile group:  out row = 1x1 conv of the row buffer (BlockedConvNest: bias,
                                residual, activation in registers)

The output may be plain (a reorder folded in: the 1x1 product transposes its vectors into it).
The row buffer (C x OW values, rounded up to whole blocks) is on the stack of the thread that
runs the row, so the intermediate tensor is never written to memory. The filters arrive in TF's
layouts ([kh, kw, C, 1] and [1, 1, C, F]) as constants, and are packed here, on the host, into
the orders of the two nests.
"""
from __future__ import annotations

from typing import Any

import llvmlite.ir as ir
import numpy as np

from convc.types import TensorType

from ..codegen import Kernel, i64
from ..jit import HostTarget
from .conv_blocked import blocked_tiling
from .conv_blocked_nest import BlockedConvNest, Buffers
from .conv_depthwise_blocked import DepthwiseNest, depthwise_width
from .conv_geometry import conv_geometry, divmod_index
from .packing import pack_bias, pack_depthwise_weights, pack_weights

MAX_ROW_BUFFER = 1 << 15  # values of one output row's depthwise result, per thread, on the stack

POINTWISE = {"stride": (1, 1), "dilation": (1, 1), "groups": 1, "pad_lo": (0, 0), "pad_hi": (0, 0)}


def blocked_separable_applies(channels: int, multiplier: int, out_width: int, lanes: int) -> bool:
    """Whether the blocked kernel computes this separable conv (multiplier 1, a row buffer that fits)."""
    return multiplier == 1 and -(-channels // lanes) * lanes * out_width <= MAX_ROW_BUFFER


def emit_blocked_separable(module: ir.Module, name: str, attrs: dict[str, Any], in_types: list[TensorType],
                           out_type: TensorType, host: HostTarget, values: list[np.ndarray | None]) -> Kernel:
    """Arguments: out, x, depthwise filter, pointwise filter, depthwise bias, bias, [residual]; the
    four weight operands must be constants (packed into the nests' orders here)."""
    x, lanes = in_types[0], in_types[0].block
    plain_out = not out_type.block  # a reorder to the plain layout folded in
    batch, channels = x.shape[:2]
    kh, kw, _, multiplier = in_types[1].shape
    out_h, out_w = out_type.shape[2:]
    if (attrs["data_format"] != "NCHW" or len(in_types) < 5 or any(v is None for v in values[1:5])
            or not blocked_separable_applies(channels, multiplier, out_w, lanes)):
        raise NotImplementedError("separable_conv2d: the blocked kernel needs NCHW, multiplier 1, constant filters "
                                  "and biases, and a row buffer of at most 32768 values")
    filters = out_type.shape[1]
    dtype = out_type.dtype
    middle = TensorType((batch, channels, out_h, out_w), dtype, lanes)
    dw_attrs = {"stride": attrs["strides"], "dilation": attrs["dilations"], "groups": channels,
                "pad_lo": attrs["pad_lo"], "pad_hi": attrs["pad_hi"]}
    dw_geo = conv_geometry(dw_attrs, [x, TensorType((channels, 1, kh, kw), dtype)], middle, "conv2d")
    pw_geo = conv_geometry(POINTWISE, [middle, TensorType((filters, channels, 1, 1), dtype)], out_type, "conv2d")
    tiling = blocked_tiling(host, dtype, -(-pw_geo.c_out // lanes), out_w, channels if plain_out else None)

    residual = len(in_types) > 5
    k = Kernel(module, name, dtype, 7 if residual else 6,
               ("out", "x", "depthwise_filter", "pointwise_filter", "depthwise_bias", "bias", "residual"))
    k.pack = lambda values: {  # TF's filter layouts to torch's, then into the nests' orders
        2: pack_depthwise_weights(np.ascontiguousarray(values[1].transpose(2, 3, 0, 1)), lanes),
        3: pack_weights(np.ascontiguousarray(values[2][0, 0].T[:, :, None, None]), lanes, tiling.vectors),
        4: pack_bias(values[3], channels, lanes, values[1].dtype),
        5: pack_bias(values[4], filters, lanes, values[1].dtype)}
    k.host_constants = k.pack(values)
    blocks = -(-channels // lanes)
    row = k.builder.bitcast(k.alloca(ir.ArrayType(k.ftype, blocks * lanes * out_w), "depthwise_row"),
                            k.ftype.as_pointer())
    depthwise = DepthwiseNest(k, dw_geo, lanes, depthwise_width(host.vector_bits, out_w),
                              Buffers(row, k.args[1], k.args[2], k.args[4], None),
                              attrs.get("depthwise_activation"), whole_rows=True)
    pointwise = BlockedConvNest(k, pw_geo, lanes, tiling.vectors, tiling.width,
                                Buffers(k.args[0], row, k.args[3], k.args[5], k.args[6] if residual else None),
                                attrs.get("activation"), False, host.l1d_bytes, plain_out=plain_out, whole_rows=True,
                                input_row=lambda cib: k.offset(row, k.mul(cib, out_w * lanes)))
    zero = i64(0)
    with k.outer_loop(batch * out_h, "row") as job:
        n, oh = divmod_index(k, job, out_h)
        with k.loop(0, blocks, "block") as block:
            depthwise.row(k.add(k.mul(n, blocks), block), block, zero, oh, zero, k.mul(block, out_w * lanes))
        with k.loop(0, pointwise.tile_groups, "tile_group") as tile_group:
            pointwise.row(n, tile_group, zero, oh, zero)
    return k.finish()
