"""The kernel emitter of each canonical op: emit(module, name, node, in_types, values) -> Kernel.

`values` holds the operands that are compile-time constants (None for the others), for kernels
that repack them on the host (`Kernel.host_constants`)."""
from __future__ import annotations

from typing import Callable

import llvmlite.ir as ir
import numpy as np

from convc.ir import Node
from convc.types import TensorType

from ..codegen import Kernel
from ..jit import host_target
from .conv import emit_conv
from .conv_blocked import emit_blocked_conv
from .conv_transpose import emit_conv_transpose
from .elementwise import SCALAR_OPS, emit_elementwise
from .pad import emit_pad
from .patches import emit_extract_patches
from .pool import emit_adaptive_avg_pool1d
from .reorder import emit_reorder
from .separable import emit_separable_conv2d
from .separable_blocked import emit_blocked_separable

Values = list["np.ndarray | None"]
Emitter = Callable[[ir.Module, str, Node, list[TensorType], Values], Kernel]


def _conv(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    if node.type.block or in_types[0].block or node.attrs.get("block"):
        return emit_blocked_conv(module, name, node.attrs, in_types, node.type, node.op, host_target(), values)
    return emit_conv(module, name, node.attrs, in_types, node.type, node.op)


def _elementwise(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    return emit_elementwise(module, name, in_types, node.type, SCALAR_OPS[node.op])


def _conv_transpose(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    if node.type.block or in_types[0].block or node.attrs.get("block"):
        return emit_blocked_conv(module, name, node.attrs, in_types, node.type, node.op, host_target(), values)
    return emit_conv_transpose(module, name, node.attrs, in_types, node.type, node.op)


def _separable(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    if in_types[0].block:
        return emit_blocked_separable(module, name, node.attrs, in_types, node.type, host_target(), values)
    return emit_separable_conv2d(module, name, node.attrs, in_types, node.type)


def _broadcast_to(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    return emit_elementwise(module, name, in_types, node.type, lambda k, operands: operands[0])


def _from_attrs(emit: Callable[..., Kernel]) -> Emitter:
    """An emitter of the form emit(module, name, attrs, in_types, out_type)."""
    return lambda module, name, node, in_types, values: emit(module, name, node.attrs, in_types, node.type)


EMITTERS: dict[str, Emitter] = {"conv1d": _conv, "conv2d": _conv, "conv3d": _conv,
                                "conv_transpose1d": _conv_transpose, "conv_transpose2d": _conv_transpose,
                                "conv_transpose3d": _conv_transpose, "broadcast_to": _broadcast_to,
                                "separable_conv2d": _separable}
EMITTERS.update({op: _elementwise for op in SCALAR_OPS})
for _op, _emit in (("pad", emit_pad), ("adaptive_avg_pool1d", emit_adaptive_avg_pool1d),
                   ("extract_patches", emit_extract_patches),
                   ("reorder", emit_reorder)):
    EMITTERS[_op] = _from_attrs(_emit)


def emitter_for(op: str) -> Emitter:
    """The emitter of `op`; NotImplementedError naming the op where it has no kernel yet."""
    try:
        return EMITTERS[op]
    except KeyError:
        raise NotImplementedError(f"{op}: this op is defined (shapes and validation) but has no generated "
                                  f"kernel yet") from None
