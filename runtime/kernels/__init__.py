"""The kernel emitter of each canonical op: emit(module, name, node, in_types) -> ir.Function."""
from __future__ import annotations

from typing import Callable

import llvmlite.ir as ir

from convc.ir import Node
from convc.types import TensorType

from ..codegen import Kernel
from .conv import emit_conv
from .elementwise import SCALAR_OPS, emit_elementwise

Emitter = Callable[[ir.Module, str, Node, list[TensorType]], Kernel]


def _conv(module: ir.Module, name: str, node: Node, in_types: list[TensorType]) -> Kernel:
    return emit_conv(module, name, node.attrs, in_types, node.type, node.op)


def _elementwise(module: ir.Module, name: str, node: Node, in_types: list[TensorType]) -> Kernel:
    return emit_elementwise(module, name, in_types, node.type, SCALAR_OPS[node.op])


EMITTERS: dict[str, Emitter] = {"conv1d": _conv, "conv2d": _conv, "conv3d": _conv}
EMITTERS.update({op: _elementwise for op in SCALAR_OPS})


def emitter_for(op: str) -> Emitter:
    """The emitter of `op`; NotImplementedError naming the op where it has no kernel yet."""
    try:
        return EMITTERS[op]
    except KeyError:
        raise NotImplementedError(f"{op}: this op is defined (shapes and validation) but has no generated "
                                  f"kernel yet") from None
