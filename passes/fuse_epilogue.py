"""Epilogue fusion: an activation whose only operand is a conv used nowhere else is applied by the
conv's kernel to each finished output row (`activation` attribute, carrying the activation's own
attributes: convc.fused_activation), saving a pass over memory."""
from __future__ import annotations

from convc.fused_activation import activation_spec
from convc.ir import Graph
from convc.registry import has_trait

from .pipeline import Pass


class FuseEpilogue(Pass):
    name = "fuse_epilogue"

    def run(self, graph: Graph) -> Graph:
        for node in graph.op_nodes():
            if not has_trait(node.op, "activation") or node.name not in graph.dag:
                continue
            producer = graph.node(node.operands[0])
            if (not has_trait(producer.op, "has_epilogue") or "activation" in producer.attrs
                    or len(graph.users(producer.name)) != 1 or producer.name in graph.outputs):
                continue
            producer.attrs["activation"] = activation_spec(node.op, node.attrs)
            graph.replace_all_uses(node.name, producer.name)
            graph.remove(node.name)
        return graph
