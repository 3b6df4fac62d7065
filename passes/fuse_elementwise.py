"""Elementwise fusion: a connected group of unary and binary elementwise ops becomes one
`fused_elementwise` node, whose kernel is one loop over the output reading each input once and
writing once, with the group's ops as its program (convc.elementwise_program) in registers.

A group grows from its last op (the root) up through operands that are elementwise ops of the
root's type (shape and layout: a smaller, broadcast operand would be recomputed for every output
element, so it stays its own kernel) whose every user is in the group and that are no graph
output. Scalar constants become literals of the program. Runs after epilogue fusion, so that a
chain on a conv's result goes into the conv's kernel and only what is left forms groups.
"""
from __future__ import annotations

from convc.elementwise_program import fusable_op, step
from convc.ir import Graph, Node
from convc.op_elementwise import broadcast_all

from .fuse_epilogue import scalar_value
from .pipeline import Pass


class FuseElementwise(Pass):
    name = "fuse_elementwise"

    def run(self, graph: Graph) -> Graph:
        nodes = graph.op_nodes()
        order = {node.name: index for index, node in enumerate(nodes)}
        for root in reversed(nodes):
            if root.name not in graph.dag or not fusable_op(root.op):
                continue
            group = self._grow(graph, root)
            if len(group) > 1:
                self._fuse(graph, root, sorted(group, key=order.__getitem__))
        return graph

    @staticmethod
    def _grow(graph: Graph, root: Node) -> set[str]:
        group, pending = {root.name}, list(root.operands)
        while pending:
            name = pending.pop()
            node = graph.node(name)
            if (name in group or not fusable_op(node.op) or node.type != root.type or name in graph.outputs
                    or any(user.name not in group for user in graph.users(name))):
                continue
            group.add(name)
            pending.extend(node.operands)
        return group

    @staticmethod
    def _program(graph: Graph, members: list[str], literals: bool) -> tuple[list[str], tuple]:
        """(inputs, program) of a group, its scalar constants literals where `literals`."""
        def literal(operand: str) -> float | None:
            return scalar_value(graph, operand) if literals else None

        inputs: list[str] = []
        for name in members:
            for operand in graph.node(name).operands:
                if operand not in members and operand not in inputs and literal(operand) is None:
                    inputs.append(operand)
        index = {name: i for i, name in enumerate(inputs)}
        index.update({name: len(inputs) + j for j, name in enumerate(members)})
        program = []
        for name in members:
            node = graph.node(name)
            program.append(step(node.op, [index[o] if o in index else literal(o) for o in node.operands], node.attrs))
        return inputs, tuple(program)

    def _fuse(self, graph: Graph, root: Node, members: list[str]) -> None:
        inputs, program = self._program(graph, members, literals=True)
        shapes = [graph.type_of(i).shape for i in inputs]
        if not shapes or broadcast_all("fused_elementwise", shapes) != root.type.shape:
            # a scalar of a higher rank shapes the result: it stays an input
            inputs, program = self._program(graph, members, literals=False)
        fused = graph.add_node("fused_elementwise", inputs, {"program": program}, root.type)
        graph.replace_all_uses(root.name, fused)
        for name in reversed(members):
            graph.remove(name)

