"""broadcast_to fusion: a broadcast_to feeding a binary elementwise op is never materialized.

The elementwise kernels read every operand through its own strides (0 on broadcast axes), so
`add(broadcast_to(a, S), b)` becomes `add(a, b)` wherever NumPy broadcasting of `a` with `b`
gives the same result shape. A broadcast_to left without users is removed by dead-code
elimination; one that is a graph output stays.
"""
from __future__ import annotations

from convc.errors import ConvcError
from convc.ir import Graph
from convc.op_elementwise import broadcast_shapes
from convc.registry import has_trait

from .pipeline import Pass


class FuseBroadcast(Pass):
    name = "fuse_broadcast"

    def run(self, graph: Graph) -> Graph:
        for node in graph.op_nodes():
            if not has_trait(node.op, "binary"):
                continue
            operands = list(node.operands)
            for index, operand in enumerate(operands):
                producer = graph.node(operand)
                if not has_trait(producer.op, "broadcast"):
                    continue
                source = producer.operands[0]
                trial = [source if i == index else o for i, o in enumerate(operands)]
                try:
                    shape = broadcast_shapes(node.op, *(graph.type_of(o).shape for o in trial))
                except ConvcError:
                    continue
                if shape == node.type.shape:
                    operands = trial
            if operands != node.operands:
                graph.set_operands(node.name, operands)
        return graph
