"""The kernels of the convolutions, transposed convolutions and separable_conv2d: the blocked
kernels (conv_blocked, separable_blocked) where the tensors are channel-blocked (or, for convs, the
attribute `block` asks for it), the plain kernels (conv, conv_transpose, separable) otherwise."""
from __future__ import annotations

import llvmlite.ir as ir

from convc.errors import ConvcError
from convc.ir import Node
from convc.types import TensorType

from ..codegen import Kernel
from ..jit import host_target
from .conv import emit_conv
from .conv_blocked import blocked_conv_share_key, emit_blocked_conv
from .conv_transpose import emit_conv_transpose
from .registry import Values, kernel
from .separable import emit_separable_conv2d
from .separable_blocked import emit_blocked_separable


def _blocked(node: Node, in_types: list[TensorType]) -> bool:
    return bool(node.type.block or in_types[0].block or node.attrs.get("block"))


def _share_key(node: Node, in_types: list[TensorType], constants: tuple[bool, ...]) -> tuple | None:
    return blocked_conv_share_key(node.attrs, in_types, node.type, node.op, host_target(), constants)


PLAIN_SYMBOLIC = {"conv1d", "conv_transpose1d"}  # plain kernels that take a row of run-time length


def _plain_fixed(node: Node, in_types: list[TensorType]) -> None:
    if (node.type.symbolic or in_types[0].symbolic) and node.op not in PLAIN_SYMBOLIC:
        raise ConvcError(f"{node.op}: symbolic sizes are supported on the blocked layout so far, not on "
                         f"{in_types[0]} -> {node.type}")


@kernel("conv1d", "conv2d", "conv3d", share_key=_share_key, symbolic=True)
def _conv(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    if _blocked(node, in_types):
        return emit_blocked_conv(module, name, node.attrs, in_types, node.type, node.op, host_target(), values)
    _plain_fixed(node, in_types)
    return emit_conv(module, name, node.attrs, in_types, node.type, node.op)


@kernel("conv_transpose1d", "conv_transpose2d", "conv_transpose3d", symbolic=True)
def _conv_transpose(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    if _blocked(node, in_types):
        return emit_blocked_conv(module, name, node.attrs, in_types, node.type, node.op, host_target(), values)
    _plain_fixed(node, in_types)
    return emit_conv_transpose(module, name, node.attrs, in_types, node.type, node.op)


@kernel("separable_conv2d")
def _separable(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    if in_types[0].block:
        return emit_blocked_separable(module, name, node.attrs, in_types, node.type, host_target(), values)
    return emit_separable_conv2d(module, name, node.attrs, in_types, node.type)
