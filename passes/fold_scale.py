"""Scale folding: `mul(conv, c)` with a constant c that varies only along the conv's output-channel
axis (a layer scale, a per-channel gain) becomes the conv with each output channel's filter and
bias multiplied by c, so the multiplication costs nothing and a residual add after it can fuse
into the kernel. Applies to convolutions (forward or transposed, any rank) and linear, whose
weight is a constant and bias constant or absent, with no fused activation and no other user.
The new constants are computed in float64 and stored in the producer's dtype.
"""
from __future__ import annotations

import numpy as np

from convc.ir import Graph, Node
from convc.registry import get_op

from .fold_batch_norm import scaled_weight
from .fold_bias import channel_axis, per_channel
from .pipeline import Pass


class FoldScale(Pass):
    name = "fold_scale"

    def run(self, graph: Graph) -> Graph:
        for mul in graph.op_nodes():
            if mul.op != "mul" or mul.name not in graph.dag:
                continue
            for position in (0, 1):
                producer, other = graph.node(mul.operands[position]), graph.node(mul.operands[1 - position])
                if self._fold(graph, mul, producer, other):
                    break
        return graph

    def _fold(self, graph: Graph, mul: Node, producer: Node, other: Node) -> bool:
        axis = channel_axis(graph, producer) if producer.op not in ("input", "const") else None
        if (axis is None or other.op != "const" or other.value is None or "activation" in producer.attrs
                or len(graph.users(producer.name)) != 1 or producer.name in graph.outputs
                or mul.type != producer.type):
            return False
        scale = per_channel(other.value, producer.type.shape, axis)
        weight = graph.node(producer.operands[1])
        bias_index = get_op(producer.op).bias_operand
        if scale is None or weight.op != "const" or weight.value is None or len(producer.operands) > bias_index + 1:
            return False
        has_bias = len(producer.operands) > bias_index
        bias = graph.node(producer.operands[bias_index]) if has_bias else None
        if bias is not None and (bias.op != "const" or bias.value is None):
            return False
        scale = scale.astype(np.float64)
        folded = scaled_weight(producer, weight.value.astype(np.float64), scale)
        if folded is None:
            return False
        operands = list(producer.operands)
        operands[1] = graph.add_const(folded.astype(weight.value.dtype))
        if bias is not None:
            channels = producer.type.shape[axis]
            vector = np.broadcast_to(bias.value.astype(np.float64).reshape(-1), (channels,)) * scale
            operands[bias_index] = graph.add_const(vector.astype(bias.value.dtype))
        graph.set_operands(producer.name, operands)
        graph.replace_all_uses(mul.name, producer.name)
        graph.remove(mul.name)
        return True
