"""Shape inference: types every value from its op's shape rule; errors name the node."""
from __future__ import annotations

from convc.errors import ConvcError
from convc.ir import Graph
from convc.types import TensorType
from convc.verifier import check_node

from .pipeline import Pass


class ShapeInference(Pass):
    name = "shape_inference"

    def run(self, graph: Graph) -> Graph:
        for node in graph.nodes():
            if node.op == "const":
                if node.value is not None:
                    node.type = TensorType.of_array(node.value)
                continue
            if node.op == "input":
                if node.type is None:
                    raise ConvcError(f"shape_inference: graph input %{node.name} has no type")
                continue
            operand_types = [graph.type_of(o) for o in node.operands]
            try:
                block = node.type.block if node.type is not None else 0  # the layout a pass chose stays
                node.type = check_node(node).infer(operand_types, node.attrs).with_block(block)
            except ConvcError as error:
                raise ConvcError(f"shape_inference: %{node.name} = {node.op}: {error}") from None
        return graph
