"""Epilogue fusion: an elementwise op applied to the result of an op with an epilogue (a conv, a
transposed conv, linear, a normalization) used nowhere else, its other operands scalar constants,
is applied by that op's kernel to each finished output value, in registers, saving a pass over
memory. Chains fuse one op after another: the `activation` attribute (convc.fused_activation)
becomes an elementwise program of one input (convc.elementwise_program) where more than one
activation op fused, or where an op other than an activation did (conv -> mul(0.5) -> leaky_relu).
"""
from __future__ import annotations

from convc.elementwise_program import fusable_op, then
from convc.fused_activation import Activation, activation_program, activation_spec
from convc.ir import Graph, Node
from convc.registry import has_trait

from .pipeline import Pass


def scalar_value(graph: Graph, name: str) -> float | None:
    """The value of a constant with one element, as a float, or None for anything else."""
    node = graph.node(name)
    if node.op != "const" or node.value is None or node.value.size != 1:
        return None
    return float(node.value.reshape(-1)[0])


class FuseEpilogue(Pass):
    name = "fuse_epilogue"

    def run(self, graph: Graph) -> Graph:
        for node in graph.op_nodes():
            if node.name not in graph.dag or not fusable_op(node.op):
                continue
            name = next((o for o in node.operands if self._fusable_producer(graph, node, o)), None)
            if name is None:
                continue
            refs = [None if o == name else scalar_value(graph, o) for o in node.operands]
            if any(r is None for r, o in zip(refs, node.operands) if o != name):
                continue
            producer = graph.node(name)
            producer.attrs["activation"] = self._compose(producer.attrs.get("activation"), node, refs)
            graph.replace_all_uses(node.name, name)
            graph.remove(node.name)
        return graph

    @staticmethod
    def _fusable_producer(graph: Graph, node: Node, name: str) -> bool:
        producer = graph.node(name)
        return (has_trait(producer.op, "has_epilogue") and producer.type == node.type
                and len(graph.users(name)) == 1 and name not in graph.outputs)

    @staticmethod
    def _compose(activation: Activation | None, node: Node, refs: list[float | None]) -> Activation:
        """The activation after `node` also fused (its operands `refs`: None for the value, or scalars)."""
        if activation is None and has_trait(node.op, "activation"):
            return activation_spec(node.op, node.attrs)  # the single-op form
        program = () if activation is None else activation_program(activation)
        return then(program, 1, node.op, refs, node.attrs)
