"""Bias folding: `add(conv, c)` with a constant c that varies only along the conv's output-channel
axis becomes part of the conv's bias, so the addition costs nothing and an activation after it
can then fuse into the kernel too. Applies to convolutions, transposed convolutions and
separable_conv2d (whose pointwise bias takes it), when the existing bias is constant or absent.
"""
from __future__ import annotations

import numpy as np

from convc.ir import Graph, Node
from convc.op_conv import spatial_rank
from convc.registry import has_trait

from .pipeline import Pass


def channel_axis(graph: Graph, node: Node) -> int | None:
    """The output-channel axis of a node with a bias, or None for other ops."""
    rank = node.type.rank
    if node.op == "separable_conv2d":
        return rank - 1 if node.attrs["data_format"] == "NHWC" else 1
    if has_trait(node.op, "conv") or has_trait(node.op, "conv_transpose"):
        return rank - spatial_rank(node.op) - 1
    return None


def _per_channel(value: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """value as a vector over `axis` if it broadcasts to `shape` varying along that axis only."""
    if value.ndim > len(shape):
        return None
    padded = (1,) * (len(shape) - value.ndim) + value.shape
    if any(size != 1 for i, size in enumerate(padded) if i != axis) or padded[axis] not in (1, shape[axis]):
        return None
    return np.broadcast_to(value.reshape(padded[axis]), (shape[axis],))


class FoldBias(Pass):
    name = "fold_bias"

    def run(self, graph: Graph) -> Graph:
        for add in graph.op_nodes():
            if add.op != "add" or add.name not in graph.dag:
                continue
            for position in (0, 1):
                producer, other = graph.node(add.operands[position]), graph.node(add.operands[1 - position])
                if self._fold(graph, add, producer, other):
                    break
        return graph

    def _fold(self, graph: Graph, add: Node, producer: Node, other: Node) -> bool:
        axis = channel_axis(graph, producer) if producer.op not in ("input", "const") else None
        if (axis is None or other.op != "const" or other.value is None or "activation" in producer.attrs
                or len(graph.users(producer.name)) != 1 or producer.name in graph.outputs
                or add.type != producer.type):
            return False
        vector = _per_channel(other.value, producer.type.shape, axis)
        if vector is None:
            return False
        channels, dtype = producer.type.shape[axis], other.value.dtype
        operands = list(producer.operands)
        bias_index = 4 if producer.op == "separable_conv2d" else 2
        if len(operands) > bias_index:
            current = graph.node(operands[bias_index])
            if current.op != "const" or current.value is None:
                return False
            vector = current.value + vector
        elif producer.op == "separable_conv2d":
            middle = graph.type_of(operands[2]).shape[2]
            operands.append(graph.add_const(np.zeros(middle, dtype)))
        operands = operands[:bias_index] + [graph.add_const(np.asarray(vector, dtype).reshape(channels))]
        graph.set_operands(producer.name, operands)
        graph.replace_all_uses(add.name, producer.name)
        graph.remove(add.name)
        return True
