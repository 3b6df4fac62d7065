"""Residual fusion: `add(conv(x), t)`, with a conv used only there and no fused activation yet,
becomes the conv with `t` (of the conv's type and layout) as its residual operand: the kernel adds t to its
accumulators before the activation and the single store, so the sum never takes a pass over
memory. An activation after the add then fuses into the conv too (epilogue fusion runs again)."""
from __future__ import annotations

import numpy as np

from convc.ir import Graph, Node
from convc.registry import has_trait

from .pipeline import Pass


class FuseResidual(Pass):
    name = "fuse_residual"

    def run(self, graph: Graph) -> Graph:
        for add in graph.op_nodes():
            if add.op != "add" or add.name not in graph.dag:
                continue
            for position in (0, 1):
                conv, residual = graph.node(add.operands[position]), add.operands[1 - position]
                if self._fusable(graph, add, conv, residual):
                    operands = list(conv.operands)
                    if len(operands) == 2:
                        channels = conv.type.shape[1]
                        operands.append(graph.add_const(np.zeros(channels, conv.type.numpy_dtype)))
                    graph.set_operands(conv.name, operands + [residual])
                    graph.replace_all_uses(add.name, conv.name)
                    graph.remove(add.name)
                    break
        return graph

    @staticmethod
    def _fusable(graph: Graph, add: Node, conv: Node, residual: str) -> bool:
        return (has_trait(conv.op, "conv") and len(conv.operands) <= 3 and not conv.attrs.get("block")
                and "activation" not in conv.attrs and residual != conv.name
                and len(graph.users(conv.name)) == 1 and conv.name not in graph.outputs
                and graph.type_of(residual) == conv.type == add.type)
