"""Common-subexpression elimination: two ops with the same op, operands, attributes and result
type compute the same value, so the later one is replaced by the earlier (three resblocks that
each start with leaky_relu(x) of one x run one leaky_relu). Constants of one type and equal
bytes are merged first, so ops on the same traced array (a per-channel alpha used twice) match."""
from __future__ import annotations

import hashlib

import numpy as np

from convc.ir import Graph
from convc.printer import format_attr

from .pipeline import Pass


class CommonSubexpressions(Pass):
    name = "common_subexpressions"

    def run(self, graph: Graph) -> Graph:
        self._merge_constants(graph)
        seen: dict[tuple, str] = {}
        for node in graph.op_nodes():
            attrs = tuple(sorted((name, format_attr(value)) for name, value in node.attrs.items()))
            key = (node.op, tuple(node.operands), attrs, node.type)
            first = seen.setdefault(key, node.name)
            if first != node.name:
                graph.replace_all_uses(node.name, first)
                graph.remove(node.name)
        return graph

    @staticmethod
    def _merge_constants(graph: Graph) -> None:
        by_type: dict[object, list[str]] = {}
        for const in graph.consts():
            if const.value is not None:
                by_type.setdefault(const.type, []).append(const.name)
        for names in by_type.values():
            if len(names) < 2:
                continue
            first_of: dict[bytes, str] = {}
            for name in names:
                value = graph.node(name).value
                first = first_of.setdefault(hashlib.blake2b(value.tobytes(), digest_size=16).digest(), name)
                if first != name and np.array_equal(graph.node(first).value, value):
                    graph.replace_all_uses(name, first)
