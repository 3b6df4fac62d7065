"""Narrow-group merging: a grouped convolution whose groups are narrower than the host's channel
block (RegNet's 8-channel groups on a 16-lane host, say) has no blocked kernel and would run on
the plain layout at a few percent of peak. With a constant weight, k consecutive groups become one
group whose weight is block-diagonal: each old group's filters over its own input channels, zeros
over the other k-1 groups' channels. Then k * C_in/groups and k * C_out/groups are whole blocks and
the conv takes the blocked kernel (groups / k groups of whole blocks):

    W'[o, k_local * cin_g + c] = W[o, c]  where k_local = (o // cout_g) % k,  else 0

k is the smallest count that makes both widths whole blocks; it must divide the groups and be at
most MAX_MERGE (k times the multiply-adds). Merging pays where the plain kernel cannot fill its
vectors along the output row: rows narrower than a vector (14x14 and 7x7 maps: the plain kernel
6-21x slower than the merged one), and, for k = 2, rows narrower than two vectors (28x28: a tie
alone, the reorders around a plain conv decide). On wider rows the plain kernel is faster (3x3,
group width 4 at 56x56: 0.11 ms plain, 0.32 merged; width 8: 0.19 and 0.32; znver5, 16 lanes),
and the conv stays as it is; not on strided rows, where the plain kernel is slow too (RegNet-Y's
stride-2 grouped conv to 56x56: 0.13 ms plain, 0.064 merged). The zeros add exact zeros to every
finite sum; a non-finite input value (inf, NaN) reaches the outputs of the groups merged with its
own, where the reference keeps it to its group. A
profile counts the merged conv's multiply-adds, zeros included (the work its kernel does).
Depthwise convs (one input channel per group and as many outputs) have their own blocked kernel
and are left alone, as are transposed convs and convs whose weight is computed at run time.
"""
from __future__ import annotations

import math

import numpy as np

from convc.ir import Graph, Node
from convc.registry import has_trait

from .assign_layout import is_depthwise
from .pipeline import ChannelBlock, Pass

MAX_MERGE = 4


def merge_count(cin_g: int, cout_g: int, groups: int, lanes: int, row: int, stride: int) -> int | None:
    """Groups to merge so that both per-group widths are whole blocks of `lanes`, for a conv with
    output rows of `row` positions `stride` inputs apart; None when the widths already are, when no
    count up to MAX_MERGE dividing `groups` makes them so, or when the rows are contiguous and wide
    enough for the plain kernel to be faster than k times the multiply-adds (see the module's
    docstring)."""
    if cin_g % lanes == 0 and cout_g % lanes == 0:
        return None
    k = math.lcm(lanes // math.gcd(lanes, cin_g), lanes // math.gcd(lanes, cout_g))
    if k > MAX_MERGE or groups % k or (stride == 1 and row >= (2 if k == 2 else 1) * lanes):
        return None
    return k


def block_diagonal(weight: np.ndarray, groups: int, k: int) -> np.ndarray:
    """The (C_out, k * C_in/groups, *K) weight of groups/k merged groups (zeros off the diagonal)."""
    cout, cin_g = weight.shape[:2]
    cout_g = cout // groups
    merged = np.zeros((groups // k, k, cout_g, k, cin_g) + weight.shape[2:], weight.dtype)
    grouped = weight.reshape((groups // k, k, cout_g, cin_g) + weight.shape[2:])
    for local in range(k):
        merged[:, local, :, local] = grouped[:, local]
    return merged.reshape((cout, k * cin_g) + weight.shape[2:])


class MergeGroups(Pass):
    name = "merge_groups"

    def __init__(self, channel_block: ChannelBlock) -> None:
        self.channel_block = channel_block

    def run(self, graph: Graph) -> Graph:
        for node in graph.op_nodes():
            if has_trait(node.op, "conv") and node.attrs.get("groups", 1) > 1:
                self._merge(graph, node)
        return graph

    def _merge(self, graph: Graph, node: Node) -> None:
        weight_node = graph.node(node.operands[1])
        if weight_node.op != "const" or weight_node.value is None:
            return
        weight = weight_node.value
        groups = node.attrs["groups"]
        if weight.ndim < 3 or is_depthwise(node, graph.type_of(node.operands[1])):
            return
        cin_g, cout_g = weight.shape[1], weight.shape[0] // groups
        k = merge_count(cin_g, cout_g, groups, self.channel_block(node.type.dtype), node.type.shape[-1],
                        node.attrs["stride"][-1])
        if k is None:
            return
        operands = list(node.operands)
        operands[1] = graph.add_const(block_diagonal(weight, groups, k))
        graph.set_operands(node.name, operands)
        node.attrs["groups"] = groups // k
