"""The IR: a Graph of typed Nodes on a networkx DiGraph, with ordered inputs, constants and outputs.

Every value is named by the node that defines it. Graph inputs are nodes of op "input",
constants nodes of op "const" (holding a NumPy array, or None after parsing a summary).
Operand order lives on the node (Node.operands); the DiGraph's edges only record who uses whom.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import networkx as nx
import numpy as np

from .errors import ConvcError
from .symbolic import Dim
from .types import TensorType


@dataclass
class Node:
    """One value-defining node: an input, a constant or an op applied to operands."""

    name: str
    op: str
    operands: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    type: TensorType | None = None
    value: np.ndarray | None = None  # constants only


_NUMBERED = re.compile(r"(\D*)(\d+)")  # a name of the form _unique makes: prefix and number


class Graph:
    """A dataflow graph of convc ops; see the module docstring."""

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.dag = nx.DiGraph()
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.tuple_result = False  # a traced function returned a tuple, even of one value
        self.dims: dict[str, Dim] = {}  # the symbolic sizes of the inputs' types, with their bounds
        self._order = itertools.count()
        self._fresh: dict[str, int] = {}  # the next number of each name prefix
        self._sorted: list[str] | None = None  # the topological order, until the edges change

    # construction -------------------------------------------------------------------------
    def _unique(self, prefix: str) -> str:
        """A fresh name: past every number the prefix was given (explicitly too), so never the name of
        a node since removed (a pass holding that node would take the new one for it)."""
        while True:
            number = self._fresh.get(prefix, 0)
            self._fresh[prefix] = number + 1
            if f"{prefix}{number}" not in self.dag:  # "c05" leaves "c5" free, say
                return f"{prefix}{number}"

    def _insert(self, node: Node) -> str:
        if node.name in self.dag:
            raise ConvcError(f"graph @{self.name}: value %{node.name} is defined twice")
        numbered = _NUMBERED.fullmatch(node.name)
        if numbered:
            prefix, number = numbered.group(1), int(numbered.group(2))
            self._fresh[prefix] = max(self._fresh.get(prefix, 0), number + 1)
        self._sorted = None
        self.dag.add_node(node.name, node=node, order=next(self._order))
        for operand in node.operands:
            if operand not in self.dag:
                raise ConvcError(f"graph @{self.name}: %{node.name} uses undefined value %{operand}")
            self.dag.add_edge(operand, node.name)
        return node.name

    def add_input(self, type: TensorType, name: str | None = None) -> str:
        name = self._insert(Node(name or self._unique("arg"), "input", type=type))
        self.inputs.append(name)
        for symbol in sorted(type.symbols()):
            self.dims.setdefault(symbol, Dim(symbol))
        return name

    def add_const(self, value: np.ndarray | None, type: TensorType | None = None,
                  name: str | None = None) -> str:
        if value is not None:
            value = np.asarray(value, order="C")
            type = TensorType.of_array(value)
        return self._insert(Node(name or self._unique("c"), "const", type=type, value=value))

    def add_node(self, op: str, operands: list[str], attrs: dict[str, Any] | None = None,
                 type: TensorType | None = None, name: str | None = None) -> str:
        return self._insert(Node(name or self._unique(""), op, list(operands), dict(attrs or {}), type))

    # queries ------------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        return self.dag.nodes[name]["node"]

    def type_of(self, name: str) -> TensorType:
        node_type = self.node(name).type
        if node_type is None:
            raise ConvcError(f"graph @{self.name}: %{name} has no type; run shape inference first")
        return node_type

    def users(self, name: str) -> list[Node]:
        return [self.node(u) for u in self.dag.successors(name)]

    def nodes(self) -> Iterator[Node]:
        """All nodes in a deterministic topological order (ties broken by creation order), sorted
        once per change of the graph's nodes or edges (the passes and the verifier ask often).
        Nodes removed while the iteration runs are skipped."""
        if self._sorted is None:
            order = nx.get_node_attributes(self.dag, "order")
            self._sorted = list(nx.lexicographical_topological_sort(self.dag, key=lambda n: order[n]))
        nodes = self.dag.nodes
        for name in self._sorted:
            if name in nodes:
                yield nodes[name]["node"]

    def op_nodes(self) -> list[Node]:
        return [n for n in self.nodes() if n.op not in ("input", "const")]

    def consts(self) -> list[Node]:
        return [n for n in self.nodes() if n.op == "const"]

    # rewriting ----------------------------------------------------------------------------
    def set_operands(self, name: str, operands: list[str]) -> None:
        node = self.node(name)
        self._sorted = None
        for old in set(node.operands):
            self.dag.remove_edge(old, name)
        node.operands = list(operands)
        for operand in operands:
            self.dag.add_edge(operand, name)

    def replace_all_uses(self, old: str, new: str) -> None:
        for user in self.users(old):
            self.set_operands(user.name, [new if o == old else o for o in user.operands])
        self.outputs = [new if o == old else o for o in self.outputs]

    def remove(self, name: str) -> None:
        if list(self.dag.successors(name)) or name in self.outputs:
            raise ConvcError(f"graph @{self.name}: cannot remove %{name}, it is still used")
        self._sorted = None
        self.dag.remove_node(name)
        if name in self.inputs:
            self.inputs.remove(name)

    def copy(self) -> "Graph":
        other = Graph(self.name)
        for node in self.nodes():
            other._insert(Node(node.name, node.op, list(node.operands), dict(node.attrs), node.type, node.value))
        other.inputs = list(self.inputs)
        other.outputs = list(self.outputs)
        other.tuple_result = self.tuple_result
        other.dims = dict(self.dims)
        other._fresh = dict(self._fresh)  # a copy's new nodes take no name its source ever used
        return other

    # text ---------------------------------------------------------------------------------
    def dump(self) -> str:
        from .printer import print_graph
        return print_graph(self)

    def __str__(self) -> str:
        return self.dump()

    def __repr__(self) -> str:
        return f"<convc.Graph @{self.name}: {len(self.inputs)} inputs, {len(self.op_nodes())} ops>"

    def to_dot(self) -> str:
        from .printer import graph_to_dot
        return graph_to_dot(self)

    def __eq__(self, other: object) -> bool:
        """Structural equality: same ops, attributes, types and wiring, whatever the value names.

        Constant values are compared where both graphs hold them."""
        if not isinstance(other, Graph):
            return NotImplemented
        from .printer import print_graph
        if print_graph(self, canonical=True) != print_graph(other, canonical=True):
            return False
        for a, b in zip(self.consts(), other.consts()):
            if a.value is not None and b.value is not None and not np.array_equal(a.value, b.value):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]
