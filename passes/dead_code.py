"""Dead-code elimination: drops ops and constants that no output depends on."""
from __future__ import annotations

import networkx as nx

from convc.ir import Graph

from .pipeline import Pass


class DeadCodeElimination(Pass):
    name = "dead_code"

    def run(self, graph: Graph) -> Graph:
        needed = set(graph.outputs)
        for output in graph.outputs:
            needed |= nx.ancestors(graph.dag, output)
        for node in reversed(list(graph.nodes())):
            if node.name not in needed and node.op != "input":
                graph.remove(node.name)
        return graph
