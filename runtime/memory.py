"""Static memory planning: intermediates share one arena, reused by liveness."""
from __future__ import annotations

from dataclasses import dataclass

from convc.ir import Graph

ALIGN = 64


@dataclass(frozen=True)
class Plan:
    """Byte offsets of the intermediates in the arena, and the arena's size."""

    offsets: dict[str, int]
    arena_bytes: int


def plan_memory(graph: Graph) -> Plan:
    """Greedy first-fit by definition order; a buffer is live from its definition to its last use
    (inclusive), so an op's result never shares memory with its own operands."""
    order = {node.name: index for index, node in enumerate(graph.nodes())}
    intermediates = [n for n in graph.op_nodes() if n.name not in graph.outputs]
    live: list[tuple[int, int, int, int]] = []  # (start, end, offset, size)
    offsets = {}
    arena = 0
    for node in intermediates:
        start = order[node.name]
        end = max([order[u.name] for u in graph.users(node.name)], default=start)
        size = -(-node.type.storage_size * node.type.numpy_dtype.itemsize // ALIGN) * ALIGN
        busy = sorted((o, o + s) for (a, e, o, s) in live if not (e < start or a > end))
        offset = 0
        for lo, hi in busy:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        live.append((start, end, offset, size))
        offsets[node.name] = offset
        arena = max(arena, offset + size)
    return Plan(offsets, arena)
