"""Bias folding: `add(conv, c)` with a constant c that varies only along the conv's output-channel
axis becomes part of the conv's bias, so the addition costs nothing and an activation after it
can then fuse into the kernel too. Applies to every op whose definition names a channel axis and
a bias operand (convolutions, transposed convolutions, separable_conv2d's pointwise bias), when the
existing bias is constant or absent.
"""
from __future__ import annotations

import numpy as np

from convc.ir import Graph, Node
from convc.registry import get_op

from .pipeline import Pass


def channel_axis(graph: Graph, node: Node) -> int | None:
    """The output-channel axis of a node with a bias, or None for other ops."""
    opdef = get_op(node.op)
    if opdef.channel_axis is None or opdef.bias_operand is None:
        return None
    return opdef.channel_axis(node.attrs, node.type.rank)


def per_channel(value: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray | None:
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
        vector = per_channel(other.value, producer.type.shape, axis)
        if vector is None:
            return False
        channels, dtype = producer.type.shape[axis], other.value.dtype
        operands = list(producer.operands)
        opdef = get_op(producer.op)
        bias_index = opdef.bias_operand
        if len(operands) > bias_index:
            current = graph.node(operands[bias_index])
            if current.op != "const" or current.value is None:
                return False
            vector = current.value + vector
        elif len(operands) < bias_index:  # optional operands before the bias, as zeros
            operands += [graph.add_const(np.zeros(length, dtype))
                         for length in opdef.bias_fill([graph.type_of(o) for o in operands])]
        operands = operands[:bias_index] + [graph.add_const(np.asarray(vector, dtype).reshape(channels))]
        graph.set_operands(producer.name, operands)
        graph.replace_all_uses(add.name, producer.name)
        graph.remove(add.name)
        return True
