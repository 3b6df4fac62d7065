"""Reads the textual IR back into a Graph (the inverse of convc.printer)."""
from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from .errors import ConvcError
from .ir import Graph
from .symbolic import Dim, generic_values, parse_extent, tokenize
from .types import TensorType

_TYPE = r"(\w+)\[([^\]]*)\]"
_HEADER = re.compile(r"^graph\s+@([\w.]+)\((.*)\)\s*\{$")
_ARG = re.compile(rf"^%([\w.]+)\s*:\s*{_TYPE}$")
_CONST = re.compile(rf"^%([\w.]+)\s*=\s*const\s+{_TYPE}$")
_OP = re.compile(rf"^%([\w.]+)\s*=\s*(\w+)\(([^)]*)\)\s*(\{{.*\}})?\s*(?::\s*{_TYPE})?$")
_RETURN = re.compile(r"^return\s*(.*)$")
_DIM = re.compile(r"^dim\s+(\w+)\s*(\{.*\})?$")
_TOKEN = re.compile(r'\s*(-?inf|nan|true|false|none|"(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*|[\[\],={}]|\w+)')


def _type(dtype: str, dims: str, where: str) -> TensorType:
    dims, _, block = dims.partition(";c")
    try:
        return TensorType(tuple(parse_extent(d) for d in dims.split(",") if d.strip()), dtype, int(block or 0))
    except ConvcError as error:
        raise ConvcError(f"parse: {where}: {error}") from None
    except ValueError:
        raise ConvcError(f"parse: {where}: cannot read the type {dtype}[{dims}]") from None


def _check_result_types(graph: Graph, lines: dict[str, str]) -> None:
    """A result type written in the text must be the one its op's shape rule gives."""
    with generic_values(graph.dims):  # symbolic sizes compare as long inputs do
        _check_types_of(graph, lines)


def _check_types_of(graph: Graph, lines: dict[str, str]) -> None:
    from .verifier import check_node
    for node in graph.op_nodes():
        operand_types = [graph.node(o).type for o in node.operands]
        if node.type is None or any(t is None for t in operand_types):
            continue
        try:
            expected = check_node(node).infer(operand_types, node.attrs).with_block(node.type.block)
        except ConvcError as error:
            raise ConvcError(f"parse: {lines[node.name]}: %{node.name} = {node.op}: {error}") from None
        if expected != node.type:
            raise ConvcError(f"parse: {lines[node.name]}: %{node.name} = {node.op} is typed {node.type}, "
                             f"but its shape rule gives {expected}")


def _tokens(text: str, where: str) -> list[str]:
    return tokenize(_TOKEN, text, lambda rest: ConvcError(f"parse: {where}: cannot read attributes at {rest[:20]!r}"))


def _value(tokens: list[str], where: str) -> Any:
    token = tokens.pop(0)
    if token == "[":
        items = []
        while tokens and tokens[0] != "]":
            items.append(_value(tokens, where))
            if tokens and tokens[0] == ",":
                tokens.pop(0)
        if not tokens:
            raise ConvcError(f"parse: {where}: unterminated list")
        tokens.pop(0)
        return tuple(items)
    if token.startswith('"'):
        try:
            return json.loads(token)
        except ValueError:
            raise ConvcError(f"parse: {where}: malformed string {token!r}") from None
    keywords = {"true": True, "false": False, "none": None, "inf": float("inf"), "-inf": float("-inf"),
                "nan": float("nan")}
    if token in keywords:
        return keywords[token]
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token)
    except ValueError:
        raise ConvcError(f"parse: {where}: unexpected {token!r} in attributes") from None


def _attrs(text: str | None, where: str) -> dict[str, Any]:
    if not text:
        return {}
    tokens = _tokens(text[1:-1], where)
    attrs = {}
    while tokens:
        key = tokens.pop(0)
        if not tokens or tokens.pop(0) != "=":
            raise ConvcError(f"parse: {where}: expected '=' after attribute {key!r}")
        attrs[key] = _value(tokens, where)
        if tokens and tokens[0] == ",":
            tokens.pop(0)
    return attrs


def parse(text: str, consts: dict[str, np.ndarray] | None = None) -> Graph:
    """Parse textual IR; `consts` re-attaches constant values by name (printed as a summary)."""
    from .registry import get_op
    consts = consts or {}
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.strip().startswith("//")]
    if not lines:
        raise ConvcError("parse: empty text; expected 'graph @name(...) {'")
    header = _HEADER.match(lines[0])
    if not header:
        raise ConvcError(f"parse: line 1: expected 'graph @name(%arg: f32[...], ...) {{', got {lines[0]!r}")
    graph = Graph(header.group(1))
    for arg in filter(None, (a.strip() for a in header.group(2).split("%") if a.strip())):
        match = _ARG.match("%" + arg.rstrip(", "))
        if not match:
            raise ConvcError(f"parse: line 1: cannot read argument %{arg!r}")
        graph.add_input(_type(match.group(2), match.group(3), "line 1"), match.group(1))
    if lines[-1] != "}":
        raise ConvcError("parse: the graph must end with '}'")
    op_lines: dict[str, str] = {}
    for number, line in enumerate(lines[1:-1], start=2):
        where = f"line {number}"
        if (match := _CONST.match(line)):
            name = match.group(1)
            value = consts.get(name)
            ctype = _type(match.group(2), match.group(3), where)
            if value is not None and TensorType.of_array(np.asarray(value)) != ctype:
                raise ConvcError(f"parse: {where}: constant %{name} is {ctype} but the value given is "
                                 f"{TensorType.of_array(np.asarray(value))}")
            graph.add_const(None if value is None else np.asarray(value), ctype, name)
        elif (match := _OP.match(line)):
            name, op, operands, attrs = match.group(1), match.group(2), match.group(3), match.group(4)
            get_op(op)
            operand_names = [o.strip().lstrip("%") for o in operands.split(",") if o.strip()]
            node_type = _type(match.group(5), match.group(6), where) if match.group(5) else None
            op_lines[graph.add_node(op, operand_names, _attrs(attrs, where), node_type, name)] = where
        elif (match := _DIM.match(line)):
            bounds = _attrs(match.group(2), where)
            if match.group(1) not in graph.dims or set(bounds) - {"min", "max"}:
                raise ConvcError(f"parse: {where}: 'dim' names a symbolic size of the inputs' types with "
                                 f"{{min=..., max=...}}, got {line!r}")
            graph.dims[match.group(1)] = Dim(match.group(1), **bounds)
        elif (match := _RETURN.match(line)):
            graph.outputs = [o.strip().lstrip("%") for o in match.group(1).split(",") if o.strip()]
            for output in graph.outputs:
                if output not in graph.dag:
                    raise ConvcError(f"parse: {where}: returns undefined value %{output}")
        else:
            raise ConvcError(f"parse: {where}: cannot read {line!r}")
    if not graph.outputs:
        raise ConvcError("parse: the graph has no 'return' line")
    _check_result_types(graph, op_lines)
    return graph
