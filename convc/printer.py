"""The textual IR (one node per line) and Graphviz output of a Graph."""
from __future__ import annotations

import json
import math
from typing import Any

from .ir import Graph, Node


def format_attr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(format_attr(v) for v in value) + "]"
    return str(value)


def _names(graph: Graph, canonical: bool) -> dict[str, str]:
    if not canonical:
        return {n.name: n.name for n in graph.nodes()}
    names = {name: f"a{i}" for i, name in enumerate(graph.inputs)}
    consts = ops = 0
    for node in graph.nodes():
        if node.op == "const":
            names[node.name], consts = f"c{consts}", consts + 1
        elif node.op != "input":
            names[node.name], ops = str(ops), ops + 1
    return names


def format_node(node: Node, names: dict[str, str]) -> str:
    if node.op == "const":
        return f"%{names[node.name]} = const {node.type}"
    operands = ", ".join(f"%{names[o]}" for o in node.operands)
    text = f"%{names[node.name]} = {node.op}({operands})"
    if node.attrs:
        text += " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in node.attrs.items()) + "}"
    if node.type is not None:
        text += f" : {node.type}"
    return text


def print_graph(graph: Graph, canonical: bool = False) -> str:
    """The textual IR; `canonical` renames values so that equal structures print equally."""
    names = _names(graph, canonical)
    args = ", ".join(f"%{names[i]}: {graph.node(i).type}" for i in graph.inputs)
    lines = [f"graph @{graph.name}({args}) {{"]
    lines += [f"  dim {d.name} {{min={d.min}, max={format_attr(d.max)}}}" for d in graph.dims.values()
              if (d.min, d.max) != (1, None)]
    lines += [f"  {format_node(n, names)}" for n in graph.nodes() if n.op != "input"]
    lines.append("  return " + ", ".join(f"%{names[o]}" for o in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph_to_dot(graph: Graph) -> str:
    """Graphviz source: one box per op, ellipses for inputs and constants, edges labelled by operand index."""
    lines = [f'digraph "{graph.name}" {{', "  rankdir=TB;"]
    for node in graph.nodes():
        shape = "ellipse" if node.op in ("input", "const") else "box"
        label = f"%{node.name} = {node.op}\\n{node.type}"
        lines.append(f'  "{node.name}" [shape={shape}, label="{label}"];')
    for node in graph.nodes():
        for index, operand in enumerate(node.operands):
            lines.append(f'  "{operand}" -> "{node.name}" [label="{index}"];')
    for index, output in enumerate(graph.outputs):
        lines.append(f'  "return{index}" [shape=plaintext, label="return {index}"];')
        lines.append(f'  "{output}" -> "return{index}";')
    lines.append("}")
    return "\n".join(lines) + "\n"
