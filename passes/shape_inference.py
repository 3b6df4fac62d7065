"""Shape inference: types every value from its op's shape rule; errors name the node."""
from __future__ import annotations

from convc.errors import ConvcError
from convc.ir import Graph
from convc.symbolic import generic_values
from convc.types import TensorType
from convc.verifier import check_node

from .pipeline import Pass


class ShapeInference(Pass):
    name = "shape_inference"

    def run(self, graph: Graph) -> Graph:
        with generic_values(graph.dims):  # symbolic sizes compare as long inputs do
            return self._infer(graph)

    @staticmethod
    def _infer(graph: Graph) -> Graph:
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
                inferred = check_node(node).infer(operand_types, node.attrs)
                node.type = inferred if node.type is None else inferred.with_block(node.type.block)  # a chosen layout stays
            except ConvcError as error:
                raise ConvcError(f"shape_inference: %{node.name} = {node.op}: {error}") from None
        return graph
