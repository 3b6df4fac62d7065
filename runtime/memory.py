"""Static memory planning: intermediates share one arena, reused by liveness; views share the
buffer of the value they look into.

A view is a node whose definition says its result can be its operand's elements from some
offset on, in order (OpDef.view: reshape, a slice of the outermost axis, ...). It gets no buffer
and no kernel: it is its root's buffer (an intermediate, a graph input, a constant or a computed
output) at a byte offset, and the root stays live until the last use of every view into it. A
graph output is never a view (its kernel writes the caller's fresh array), so no result returned
to the caller aliases the arena, an input or a constant.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from convc.ir import Graph
from convc.registry import get_op
from convc.symbolic import Size

ALIGN = 64


@dataclass(frozen=True)
class Plan:
    """Byte offsets of the intermediates in the arena, the arena's size, and the views: each
    view's root (the value that owns the buffer) and its byte offset in it."""

    offsets: dict[str, int]
    arena_bytes: int
    views: dict[str, tuple[str, int]] = field(default_factory=dict)


def plan_views(graph: Graph) -> dict[str, tuple[str, int]]:
    """(root, byte offset) of every node that can share its operand's buffer: its definition
    gives an offset, it is no graph output, and its operand and result are plain."""
    views: dict[str, tuple[str, int]] = {}
    for node in graph.op_nodes():
        view = get_op(node.op).view
        if view is None or node.name in graph.outputs or node.type.block:
            continue
        types = [graph.type_of(o) for o in node.operands]
        if types[0].block:
            continue
        offset = view(node.attrs, types, node.type)
        if offset is not None:
            root, base = views.get(node.operands[0], (node.operands[0], 0))
            views[node.name] = (root, base + offset * node.type.numpy_dtype.itemsize)
    return views


Interval = tuple[int, int, "int | Size"]  # (first use, last use, bytes) of a buffer, by node order


def buffer_intervals(graph: Graph) -> tuple[list[str], list[Interval], dict[str, tuple[str, int]]]:
    """The intermediates that get arena buffers, in definition order, with their live intervals
    and sizes (a Size where the graph's are symbolic), and the views. A buffer is live from its
    definition to its last use (inclusive), or its views' last use, so an op's result never
    shares memory with its own operands."""
    order = {node.name: index for index, node in enumerate(graph.nodes())}
    views = plan_views(graph)
    last_use = {name: max([order[u.name] for u in graph.users(name)], default=order[name]) for name in order}
    for view, (root, _) in views.items():
        last_use[root] = max(last_use[root], last_use[view])
    intermediates = [n for n in graph.op_nodes() if n.name not in graph.outputs and n.name not in views]
    intervals = [(order[n.name], last_use[n.name], aligned(n.type.storage_size * n.type.numpy_dtype.itemsize))
                 for n in intermediates]
    return [n.name for n in intermediates], intervals, views


def aligned(size: int | Size) -> int | Size:
    """`size` bytes rounded up to ALIGN."""
    return -(-size // ALIGN) * ALIGN


def place(intervals: list[tuple[int, int, int]]) -> tuple[list[int], int]:
    """Greedy first-fit by definition order: each buffer's offset and the arena's size."""
    live: list[tuple[int, int, int, int]] = []  # (start, end, offset, size)
    offsets = []
    arena = 0
    for start, end, size in intervals:
        busy = sorted((o, o + s) for (a, e, o, s) in live if not (e < start or a > end))
        offset = 0
        for lo, hi in busy:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        live.append((start, end, offset, size))
        offsets.append(offset)
        arena = max(arena, offset + size)
    return offsets, arena


def plan_memory(graph: Graph) -> Plan:
    """The plan of a graph of fixed sizes (see buffer_intervals and place)."""
    names, intervals, views = buffer_intervals(graph)
    offsets, arena = place(intervals)
    return Plan(dict(zip(names, offsets)), arena, views)
