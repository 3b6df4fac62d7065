"""Reorder folding: a blocked conv kernel can write its output plain, or read a plain input, by
scattering its vectors or broadcasting from the plain layout, so the reorder at a blocked
region's border need not be a pass over memory of its own.

- `reorder(conv, block=0)`, where the conv (not depthwise, without a residual; or a blocked
  separable conv, whose 1x1 product is such a conv) has no other user and is no graph output,
  becomes the conv writing the plain layout (not for a transposed conv whose row phases
  interleave: their scattered stores cost more code than the reorder costs time);
- `conv(reorder(x, block=c))` with at most c input channels (so the conv reads one input plane per
  channel of a single block, as cheaply as the blocked copy) reads x itself; a conv left plain on
  both sides keeps its blocked kernel through the attribute `block=c`.
"""
from __future__ import annotations

from convc.ir import Graph, Node
from convc.registry import has_trait

from .assign_layout import is_depthwise
from .pipeline import Pass


def broadcast_kernel(node: Node, graph: Graph) -> bool:
    """A conv whose blocked kernel broadcasts its inputs (not a depthwise conv)."""
    if not (has_trait(node.op, "conv") or has_trait(node.op, "conv_transpose")):
        return False
    return not is_depthwise(node, graph.type_of(node.operands[1])) and len(node.operands) <= 3


def writes_plain(node: Node, graph: Graph) -> bool:
    """A blocked-input kernel that can transpose its output into the plain layout."""
    if has_trait(node.op, "separable"):
        return len(node.operands) <= 5
    strided_phases = has_trait(node.op, "conv_transpose") and node.attrs["stride"][-1] > 1
    return broadcast_kernel(node, graph) and not strided_phases


class FoldReorders(Pass):
    name = "fold_reorders"

    def run(self, graph: Graph) -> Graph:
        for reorder in graph.op_nodes():
            if reorder.op != "reorder" or reorder.name not in graph.dag or reorder.attrs["block"]:
                continue
            conv = graph.node(reorder.operands[0])
            if (writes_plain(conv, graph) and graph.type_of(conv.operands[0]).block
                    and len(graph.users(conv.name)) == 1 and conv.name not in graph.outputs):
                conv.type = reorder.type
                graph.replace_all_uses(reorder.name, conv.name)
                graph.remove(reorder.name)
        for reorder in graph.op_nodes():
            if reorder.op != "reorder" or reorder.name not in graph.dag or not reorder.attrs["block"]:
                continue
            source = graph.type_of(reorder.operands[0])
            if source.block or source.shape[1] > reorder.attrs["block"]:
                continue
            for user in graph.users(reorder.name):
                if (broadcast_kernel(user, graph) and user.operands[0] == reorder.name
                        and reorder.name not in user.operands[1:]):
                    if not user.type.block:  # plain on both sides: the attribute keeps the blocked kernel
                        user.attrs["block"] = reorder.attrs["block"]
                    graph.set_operands(user.name, [reorder.operands[0]] + user.operands[1:])
        return graph
