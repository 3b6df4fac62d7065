"""Constant folding: an op whose operands are all constants is computed at compile time and
replaced by a constant. The computation is the caller's `evaluate` (the compile driver passes
the eager kernels), so passes never depend on the runtime. Results above FOLD_LIMIT elements are
left to run, rather than stored in the graph, and so is broadcast_to: its consumers read the small
source in place (broadcast fusion), and a constant one after a conv folds into the conv's bias."""
from __future__ import annotations

from convc.ir import Graph
from convc.registry import has_trait

from .pipeline import Evaluate, Pass

FOLD_LIMIT = 1 << 20


class FoldConstants(Pass):
    name = "fold_constants"

    def __init__(self, evaluate: Evaluate) -> None:
        self.evaluate = evaluate

    def run(self, graph: Graph) -> Graph:
        for node in graph.op_nodes():
            operands = [graph.node(o) for o in node.operands]
            if (not all(o.op == "const" and o.value is not None for o in operands) or node.type.size > FOLD_LIMIT
                    or has_trait(node.op, "broadcast")):
                continue
            value = self.evaluate(node.op, [o.value for o in operands], dict(node.attrs))
            folded = graph.add_const(value)
            graph.replace_all_uses(node.name, folded)
            graph.remove(node.name)
        return graph
