"""The graph verifier: invariants every pass must keep."""
from __future__ import annotations

import networkx as nx

from .errors import ConvcError
from .ir import Graph
from .attributes import check_attributes
from .ir import Node
from .registry import OpDef, get_op


def check_node(node: Node) -> OpDef:
    """The op definition of an op node, after checking its operand count and attributes (what a
    shape rule needs before it can run); ConvcError otherwise."""
    opdef = get_op(node.op)
    if not opdef.required_operands <= len(node.operands) <= len(opdef.operand_names):
        raise ConvcError(f"{node.op} has {len(node.operands)} operands, expected {opdef.required_operands} "
                         f"to {len(opdef.operand_names)}")
    check_attributes(node.op, node.attrs)
    return opdef


def verify(graph: Graph) -> None:
    """Raise ConvcError unless the graph is acyclic, fully defined and typed by its ops' shape rules."""
    where = f"verify @{graph.name}"
    if not nx.is_directed_acyclic_graph(graph.dag):
        raise ConvcError(f"{where}: the graph has a cycle")
    if not graph.outputs:
        raise ConvcError(f"{where}: the graph returns nothing")
    for output in graph.outputs:
        if output not in graph.dag:
            raise ConvcError(f"{where}: output %{output} is not defined")
    for name in graph.inputs:
        if graph.node(name).op != "input":
            raise ConvcError(f"{where}: graph input %{name} is not an input node")
    for node in graph.nodes():
        if node.type is None:
            raise ConvcError(f"{where}: %{node.name} ({node.op}) has no type")
        if node.op == "input":
            if node.name not in graph.inputs:
                raise ConvcError(f"{where}: input node %{node.name} is not listed among the graph inputs")
            continue
        if node.op == "const":
            continue
        try:
            opdef = check_node(node)
        except ConvcError as error:
            raise ConvcError(f"{where}: %{node.name}: {error}") from None
        if set(node.operands) != set(graph.dag.predecessors(node.name)):
            raise ConvcError(f"{where}: %{node.name}: operands and graph edges disagree")
        operand_types = [graph.type_of(o) for o in node.operands]
        if (node.type.block or any(t.block for t in operand_types)) and "blocked" not in opdef.traits:
            raise ConvcError(f"{where}: %{node.name} = {node.op} has no kernel for channel-blocked tensors")
        expected = opdef.infer(operand_types, node.attrs).with_block(node.type.block)
        if expected != node.type:
            raise ConvcError(f"{where}: %{node.name} = {node.op} is typed {node.type} but its shape rule gives {expected}")
