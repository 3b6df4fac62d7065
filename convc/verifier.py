"""The graph verifier: invariants every pass must keep."""
from __future__ import annotations

import networkx as nx

from .errors import ConvcError
from .ir import Graph
from .attributes import check_attributes
from .ir import Node
from .registry import OpDef, get_op
from .symbolic import generic_values


def check_node(node: Node) -> OpDef:
    """The op definition of an op node, after checking its operand count and attributes (what a
    shape rule needs before it can run); ConvcError otherwise."""
    opdef = get_op(node.op)
    most = opdef.max_operands
    if not opdef.required_operands <= len(node.operands) <= (most if most is not None else len(node.operands)):
        raise ConvcError(f"{node.op} has {len(node.operands)} operands, expected {opdef.required_operands} "
                         f"to {most if most is not None else 'any number'}")
    check_attributes(node.op, node.attrs)
    return opdef


def layout_problem(node: Node, opdef: OpDef, operand_types: list) -> str | None:
    """What is wrong with the layouts of a node's result and operands, if anything: only ops with
    blocked kernels see blocked tensors; an elementwise op's operands are laid out as its result
    (or are single values); a conv's weights and bias are plain, its residual is laid out as its
    result, and at most one of its input and result is plain; a blocked separable conv's filters
    and biases are plain, its input blocked, its residual laid out as its result; a channelwise
    op's first operand is laid out as its result, its other operands are plain."""
    blocks = [t.block for t in operand_types]
    if not (node.type.block or any(blocks)):
        return None
    if "blocked" not in opdef.traits:
        return "has no kernel for channel-blocked tensors"
    if "elementwise" in opdef.traits:
        if any(t.block != node.type.block and t.size > 1 for t in operand_types):
            return f"operands {[str(t) for t in operand_types]} are not all laid out as the result {node.type}"
    elif "conv" in opdef.traits or "conv_transpose" in opdef.traits:
        if any(blocks[1:3]) or (len(blocks) > 3 and blocks[3] != node.type.block):
            return "weights and bias must be plain and a residual laid out as the result"
    elif "separable" in opdef.traits:
        if not blocks[0] or any(blocks[1:5]) or (len(blocks) > 5 and blocks[5] != node.type.block):
            return "filters and biases must be plain, the input blocked and a residual laid out as the result"
    elif "channelwise" in opdef.traits:
        if blocks[0] != node.type.block or any(blocks[1:]):
            return "the first operand must be laid out as the result and the others plain"
    return None


def verify(graph: Graph) -> None:
    """Raise ConvcError unless the graph is acyclic, fully defined and typed by its ops' shape rules."""
    with generic_values(graph.dims):  # symbolic sizes compare as long inputs do
        _verify(graph)


def _verify(graph: Graph) -> None:
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
        problem = layout_problem(node, opdef, operand_types)
        if problem:
            raise ConvcError(f"{where}: %{node.name} = {node.op}: {problem}")
        expected = opdef.infer(operand_types, node.attrs).with_block(node.type.block)
        if expected != node.type:
            raise ConvcError(f"{where}: %{node.name} = {node.op} is typed {node.type} but its shape rule gives {expected}")
