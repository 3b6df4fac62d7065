"""Batch-norm folding: `batch_norm(producer, mean, var, weight, bias)` whose statistics and
parameters are constants becomes the producer alone when the producer is a convolution (forward
or transposed, any rank) or a linear, its result's channel axis is batch_norm's axis 1 (a batched
conv, a linear of 2-D input), its weight is a constant, its bias a constant or absent, it has
no fused activation, and nothing else uses its result:

    scale = weight / sqrt(var + eps)      per output channel
    W'    = W * scale                     (each output channel's filter or row)
    b'    = (b - mean) * scale + bias

so the normalization costs nothing at run time. The new constants are computed in float64 and
stored in the producer's dtype; the old ones are left to dead-code elimination (another node
may share them). Other batch_norms stay and run their own kernel.
"""
from __future__ import annotations

import numpy as np

from convc.ir import Graph, Node
from convc.registry import get_op, has_trait

from .pipeline import Pass


def scaled_weight(producer: Node, weight: np.ndarray, scale: np.ndarray) -> np.ndarray | None:
    """The producer's weight with each output channel's filter multiplied by scale[channel]: axis
    0 of a forward conv's or a linear's weight; for a transposed conv (weight (C_in,
    C_out/groups, *K)) axis 1 within each group. None for ops whose weights are laid out otherwise."""
    spatial = (1,) * (weight.ndim - 2)
    if has_trait(producer.op, "conv_transpose"):
        groups = producer.attrs["groups"]
        grouped = weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:])
        return (grouped * scale.reshape(groups, 1, -1, *spatial)).reshape(weight.shape)
    if has_trait(producer.op, "conv") or producer.op == "linear":
        return weight * scale.reshape(-1, 1, *spatial)
    return None


def _constant(graph: Graph, name: str) -> np.ndarray | None:
    node = graph.node(name)
    return node.value if node.op == "const" else None


class FoldBatchNorm(Pass):
    name = "fold_batch_norm"

    def run(self, graph: Graph) -> Graph:
        for node in graph.op_nodes():
            if node.op == "batch_norm" and node.name in graph.dag:
                self._fold(graph, node)
        return graph

    def _fold(self, graph: Graph, norm: Node) -> None:
        producer = graph.node(norm.operands[0])
        if producer.op in ("input", "const"):
            return
        opdef = get_op(producer.op)
        bias_index = opdef.bias_operand
        if (bias_index is None or opdef.channel_axis is None
                or opdef.channel_axis(producer.attrs, producer.type.rank) != 1
                or len(graph.users(producer.name)) != 1 or producer.name in graph.outputs
                or "activation" in producer.attrs or len(producer.operands) > bias_index + 1):
            return
        parameters = [_constant(graph, name) for name in norm.operands[1:]]
        weight = _constant(graph, producer.operands[1])
        has_bias = len(producer.operands) > bias_index
        bias = _constant(graph, producer.operands[bias_index]) if has_bias else None
        if any(p is None for p in parameters) or weight is None or (has_bias and bias is None):
            return
        channels = producer.type.shape[1]
        mean, var, *affine = (p.astype(np.float64).reshape(-1) for p in parameters)
        scale = 1.0 / np.sqrt(var + norm.attrs["eps"])
        if affine:
            scale = scale * affine[0]
        folded = scaled_weight(producer, weight.astype(np.float64), scale)
        if folded is None:
            return
        old_bias = 0.0 if bias is None else np.broadcast_to(bias.astype(np.float64).reshape(-1), (channels,))
        new_bias = (old_bias - mean) * scale + (affine[1] if len(affine) > 1 else 0.0)
        operands = list(producer.operands[:bias_index])
        operands[1] = graph.add_const(folded.astype(weight.dtype))
        operands.append(graph.add_const(np.asarray(new_bias, weight.dtype)))
        graph.set_operands(producer.name, operands)
        if "activation" in norm.attrs:  # the norm's fused activation is now the producer's
            producer.attrs["activation"] = norm.attrs["activation"]
        graph.replace_all_uses(norm.name, producer.name)
        graph.remove(norm.name)
