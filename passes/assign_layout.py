"""Layout assignment: convolutions with a blocked kernel, and the elementwise ops between them,
compute on channel-blocked tensors (N, C/c, *spatial, c), with c the host's vector lanes for the
dtype (the driver passes `channel_block`). The choice is made once per graph; explicit `reorder`
nodes convert at the region's borders only: where a plain value enters it (a graph input, the
output of an op without a blocked kernel) and where a blocked value leaves it (a graph output, a
user without a blocked kernel). Two convs in a row, or with elementwise ops and residual adds
between them, keep the blocked layout throughout.

A conv (or transposed conv) is blocked when its input is batched and it is depthwise (one output
channel per input channel), or its groups fill whole blocks (dense convs, or groups of multiples
of c channels) with at least c/2 output channels per group, and, with fewer than c, rows
shorter than 4 vectors or (a forward conv, which can write plain) at least c input channels: a
narrow blocked output would leave lanes of every vector empty, where the plain kernel's vectors
run along the row (HiFi-GAN's 8-channel 1-D convs on 16 lanes: 38% of the peak blocked, 63-90%
plain; its last stage, from the 16->8 transposed conv on, 26% faster all plain);
depthwise convs only in a graph with other blocked convs (alone, the plain kernel with no
reorders is faster). Weights and bias are packed at compile time where they are constants, by a
generated prologue on each call otherwise. An elementwise op is blocked when one of its operands is, and
every other operand has its channels and each other axis of its size or 1 (a per-channel scale;
it is reordered if plain), or is a single value. An op with the
traits `channelwise` and `blocked` (pooling, say) is blocked when its first operand is; its other
operands (per-channel parameters) stay plain. So conv -> max_pool2d -> conv has no reorder between
the convs, and a global average pool reorders only its small result.
"""
from __future__ import annotations

from convc.ir import Graph, Node
from convc.op_conv import spatial_rank
from convc.registry import has_trait
from convc.types import TensorType

from .pipeline import ChannelBlock, Pass


PLAIN_ROW_VECTORS = 4  # a row this many vectors long fills the plain kernel's register tiles
MAX_BLOCKED_TRANSPOSE_STRIDE = 16  # a blocked transposed conv emits code for each phase of its rows


def conv_is_blockable(graph: Graph, node: Node, lanes: int) -> bool:
    transposed = has_trait(node.op, "conv_transpose")
    if not (has_trait(node.op, "conv") or transposed):
        return False
    x, w = graph.type_of(node.operands[0]), graph.type_of(node.operands[1])
    if x.rank != spatial_rank(node.op) + 2:
        return False
    groups = node.attrs["groups"]
    if transposed:
        if node.attrs["stride"][-1] > MAX_BLOCKED_TRANSPOSE_STRIDE:
            return False
        cin_g, cout_g = w.shape[0] // groups, w.shape[1]
    else:
        cin_g, cout_g = w.shape[1], w.shape[0] // groups
    if is_depthwise(node, w):
        return True  # vectorized over each block of channels
    if groups > 1 and (cin_g % lanes or cout_g % lanes):
        return False
    # a conv with fewer output channels than a block, on rows of PLAIN_ROW_VECTORS vectors or
    # more, runs the plain kernel (vectors along the row, residual and activation fused) where the
    # blocked one would leave lanes of every vector empty; a forward conv reading a block or more
    # of channels stays blocked and writes its output plain (fold_reorders), where a transposed
    # conv's interleaved phases cannot, so it reads a plain copy of its input instead (its narrow
    # blocked output would make every op after it pass over half-empty vectors); convs on short
    # rows stay blocked (the plain kernel's row path there is slower than half-empty blocks)
    plain_rows = x.shape[-1] >= PLAIN_ROW_VECTORS * lanes
    wide_input = x.shape[1] >= lanes and not transposed
    return 2 * cout_g >= lanes and (cout_g >= lanes or wide_input or not plain_rows)


def blocks_alike(operand: TensorType, result: TensorType, constant: bool = False) -> bool:
    """Whether an elementwise operand can be read in the blocked layout of `result`: a single
    value, or the result's rank and channels with every other axis its size or 1 (a per-channel
    scale, say): blocked, its storage broadcasts against the result's storage axis by axis. A
    constant of lower rank counts with leading axes of size 1 (it is stored so)."""
    if operand.size == 1:
        return True
    if operand.rank > result.rank or (operand.rank < result.rank and not constant):
        return False
    shape = (1,) * (result.rank - operand.rank) + operand.shape
    return shape[1] == result.shape[1] and all(a in (1, b) for a, b in zip(shape, result.shape))


def _materialized(graph: Graph, name: str) -> bool:
    node = graph.node(name)
    return node.op == "const" and node.value is not None


def full_rank(graph: Graph, const: str, rank: int) -> str:
    """A constant of lower rank as a constant of `rank` axes (leading axes of size 1)."""
    value = graph.node(const).value
    return graph.add_const(value.reshape((1,) * (rank - value.ndim) + value.shape))


def is_depthwise(node: Node, weight: TensorType) -> bool:
    groups = node.attrs["groups"]
    return has_trait(node.op, "conv") and groups > 1 and weight.shape[0] == groups and weight.shape[1] == 1


def data_operands(node: Node) -> list[int]:
    """Operand positions that carry the node's layout (a conv's input and residual; a channelwise
    op's first operand; every operand of an elementwise op)."""
    if has_trait(node.op, "conv") or has_trait(node.op, "conv_transpose"):
        return [i for i in (0, 3) if i < len(node.operands)]
    if has_trait(node.op, "channelwise"):
        return [0]
    return list(range(len(node.operands)))


class AssignLayout(Pass):
    name = "assign_layout"

    def __init__(self, channel_block: ChannelBlock) -> None:
        self.channel_block = channel_block

    def run(self, graph: Graph) -> Graph:
        convs = {n.name for n in graph.op_nodes() if conv_is_blockable(graph, n, self.channel_block(n.type.dtype))}
        if all(is_depthwise(graph.node(c), graph.type_of(graph.node(c).operands[1])) for c in convs):
            return graph  # depthwise convs alone, and elementwise ops, run as fast on the plain layout
        blocked: list[Node] = []
        names: set[str] = set()
        for node in graph.op_nodes():
            if (node.name in convs or self._elementwise_blocks(graph, node, names)
                    or self._channelwise_blocks(node, names)):
                blocked.append(node)
                names.add(node.name)
        to_blocked: dict[str, str] = {}
        for node in blocked:
            lanes = self.channel_block(node.type.dtype)
            node.type = node.type.with_block(lanes)
            operands = list(node.operands)
            for position in data_operands(node):
                source = operands[position]
                if graph.type_of(source).rank < node.type.rank and graph.type_of(source).size > 1:
                    source = operands[position] = full_rank(graph, source, node.type.rank)
                if source not in names and graph.type_of(source).size > 1:
                    if source not in to_blocked:
                        to_blocked[source] = graph.add_node("reorder", [source], {"block": lanes},
                                                            graph.type_of(source).with_block(lanes))
                    operands[position] = to_blocked[source]
            if operands != node.operands:
                graph.set_operands(node.name, operands)
        for node in blocked:
            self._plain_for_the_rest(graph, node, names)
        return graph

    def _elementwise_blocks(self, graph: Graph, node: Node, names: set[str]) -> bool:
        if not has_trait(node.op, "elementwise") or node.type.rank < 3:
            return False
        return (any(o in names for o in node.operands)
                and all(blocks_alike(graph.type_of(o), node.type, _materialized(graph, o)) for o in node.operands))

    def _channelwise_blocks(self, node: Node, names: set[str]) -> bool:
        return has_trait(node.op, "channelwise") and has_trait(node.op, "blocked") and node.operands[0] in names

    def _plain_for_the_rest(self, graph: Graph, node: Node, names: set[str]) -> None:
        """Users without a blocked kernel, or using the value outside its data operands, and the
        graph's outputs read one plain copy."""
        plain: str | None = None

        def plain_copy() -> str:
            nonlocal plain
            if plain is None:
                plain = graph.add_node("reorder", [node.name], {"block": 0}, node.type.with_block(0))
            return plain

        for user in graph.users(node.name):
            if user.op == "reorder":
                continue
            keep = data_operands(user) if user.name in names else []
            operands = [o if (o != node.name or i in keep) else plain_copy() for i, o in enumerate(user.operands)]
            if operands != user.operands:
                graph.set_operands(user.name, operands)
        if node.name in graph.outputs:
            copy = plain_copy()
            graph.outputs = [copy if o == node.name else o for o in graph.outputs]
