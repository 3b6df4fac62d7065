"""Depthwise + pointwise fusion: a depthwise conv2d (groups = input channels) whose only user is
a 1x1 conv2d becomes one NCHW separable_conv2d node, whose kernel computes each output row's
depthwise result into a buffer on the stack and consumes it at once; the intermediate tensor is
never written to memory.

Both weights (and biases, if any) must be constants: they are rearranged into TF's filter
layouts ([kh, kw, C, M] and [1, 1, C*M, F]). A fused activation of the depthwise conv becomes the
node's `depthwise_activation`, one of the 1x1 conv its `activation`.

- Plain pairs (any multiplier): left out where the plain kernel's tiled path does not apply
  (rows narrower than 16 outputs, or a row buffer above 32768 values), since its per-pixel
  fallback is slower than the two convs.
- Channel-blocked pairs (after layout assignment; multiplier 1): the blocked separable kernel
  applies at any row width, and takes the 1x1 conv's residual operand along (the sixth operand);
  left out where its row-by-row 1x1 product would read the 1x1 weights again for every row at a
  cost above the intermediate tensor's (late, narrow maps with many filters: MobileNetV2 measured
  0.93x of ONNX Runtime with that rule, 0.85x fusing every pair).
"""
from __future__ import annotations

import numpy as np

from convc.ir import Graph, Node

from .pipeline import Pass

MIN_ROW = 16
MAX_ROW_BUFFER = 1 << 15


def _const(graph: Graph, name: str) -> np.ndarray | None:
    node = graph.node(name)
    return node.value if node.op == "const" else None


def _zero_padded_conv2d(node: Node) -> bool:
    return node.op == "conv2d" and node.attrs.get("padding_mode") == "zeros" and "pad_lo" in node.attrs


def rereads_pay(out: tuple[int, ...]) -> bool:
    """Whether the blocked kernel's row-by-row 1x1 product, which reads the 1x1 weights (F x C)
    again for every output row, costs less than writing and reading the intermediate tensor
    (C x OH x OW) it saves: F * (rows - 1) <= 2 * N * OH * OW."""
    batch, filters, height, width = out
    return filters * (batch * height - 1) <= 2 * batch * height * width


class FuseSeparable(Pass):
    name = "fuse_separable"

    def run(self, graph: Graph) -> Graph:
        for pointwise in graph.op_nodes():
            if pointwise.name in graph.dag and self._matches(graph, pointwise):
                self._fuse(graph, pointwise)
        return graph

    def _matches(self, graph: Graph, pointwise: Node) -> bool:
        if not _zero_padded_conv2d(pointwise) or pointwise.attrs["groups"] != 1 or "block" in pointwise.attrs:
            return False
        attrs = pointwise.attrs
        if (attrs["stride"], attrs["dilation"], attrs["pad_lo"], attrs["pad_hi"]) != ((1, 1), (1, 1), (0, 0), (0, 0)):
            return False
        depthwise = graph.node(pointwise.operands[0])
        if (not _zero_padded_conv2d(depthwise) or "block" in depthwise.attrs or len(graph.users(depthwise.name)) != 1
                or len(depthwise.operands) > 3  # a residual add sits between the two convs
                or pointwise.operands.count(depthwise.name) != 1 or depthwise.name in graph.outputs):
            return False
        x = graph.type_of(depthwise.operands[0])
        if x.rank != 4 or depthwise.attrs["groups"] != x.shape[1]:
            return False
        if graph.type_of(pointwise.operands[1]).shape[2:] != (1, 1):
            return False
        constants = [_const(graph, o) for o in depthwise.operands[1:] + pointwise.operands[1:3]]
        if any(value is None for value in constants):
            return False
        lanes, out = pointwise.type.block, pointwise.type.shape
        if lanes:  # blocked: every side blocked alike, multiplier 1
            blocks = {x.block, depthwise.type.block, graph.type_of(pointwise.operands[0]).block}
            return (blocks == {lanes} and depthwise.type.shape[1] == x.shape[1]
                    and -(-x.shape[1] // lanes) * lanes * out[3] <= MAX_ROW_BUFFER
                    and rereads_pay(out))
        return (x.block == 0 and depthwise.type.block == 0 and len(pointwise.operands) <= 3 and out[3] >= MIN_ROW
                and depthwise.type.shape[1] * out[3] <= MAX_ROW_BUFFER)

    def _fuse(self, graph: Graph, pointwise: Node) -> None:
        depthwise = graph.node(pointwise.operands[0])
        x = depthwise.operands[0]
        channels = graph.type_of(x).shape[1]
        dw_weight, pw_weight = _const(graph, depthwise.operands[1]), _const(graph, pointwise.operands[1])
        middle, filters = dw_weight.shape[0], pw_weight.shape[0]
        kh, kw = dw_weight.shape[2:]
        dw_filter = dw_weight.reshape(channels, middle // channels, kh, kw).transpose(2, 3, 0, 1)
        pw_filter = pw_weight.reshape(filters, middle).T.reshape(1, 1, middle, filters)
        dtype = dw_weight.dtype
        dw_bias = _const(graph, depthwise.operands[2]) if len(depthwise.operands) > 2 else np.zeros(middle, dtype)
        pw_bias = _const(graph, pointwise.operands[2]) if len(pointwise.operands) > 2 else np.zeros(filters, dtype)
        operands = [x] + [graph.add_const(v) for v in (dw_filter, pw_filter, dw_bias, pw_bias)]
        operands += pointwise.operands[3:]  # the residual
        attrs = {"strides": depthwise.attrs["stride"], "data_format": "NCHW", "dilations": depthwise.attrs["dilation"],
                 "pad_lo": depthwise.attrs["pad_lo"], "pad_hi": depthwise.attrs["pad_hi"]}
        if "activation" in depthwise.attrs:
            attrs["depthwise_activation"] = depthwise.attrs["activation"]
        if "activation" in pointwise.attrs:
            attrs["activation"] = pointwise.attrs["activation"]
        fused = graph.add_node("separable_conv2d", operands, attrs, pointwise.type)
        graph.replace_all_uses(pointwise.name, fused)
        graph.remove(pointwise.name)
        graph.remove(depthwise.name)
