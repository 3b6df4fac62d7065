"""Symbolic input axes (`dynamic=`) and the preconditions of a graph with symbolic sizes.

`dynamic` maps an input, by position or by name, to its symbolic axes: `{0: {2: "T"}}`,
`{"x": {2: convc.Dim("T", min=16)}}`; one name on several inputs is one size. `symbolic_inputs`
turns example input types into the symbolic ones and collects the dims.

A shape rule decides its comparisons at the generic point (long inputs), so a symbolic type holds
from some length on. `preconditions` finds, for each symbol, the smallest value from which every
node's shape rule, run on ints, accepts its operands and gives the extents its symbolic type says:
below it a call is refused with a ConvcError naming the input, the axis and the minimum.
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ConvcError
from .ir import Graph
from .symbolic import Dim, generic_value, generic_values, symbol
from .types import TensorType

CHECKED_ABOVE = 24  # consecutive values above a minimum that must hold too (floors of strides, ...)
SAMPLED_ABOVE = 12  # and values drawn between there and the generic point


def _dim(spec: Any, where: str) -> Dim:
    if isinstance(spec, Dim):
        return spec
    if isinstance(spec, str):
        return Dim(spec)
    raise ConvcError(f"{where}: expected a name or a convc.Dim, got {spec!r}")


def dynamic_axes(names: Sequence[str], shapes: Sequence[tuple], dynamic: Any, owner: str = ""
                 ) -> dict[tuple[int, int], Dim]:
    """(input position, axis) -> the Dim of each axis that `dynamic` makes symbolic, for example
    inputs of those names and shapes (`owner`, as " of M", names what they are inputs of in
    errors). A key that is no input, an axis out of range, a spec that is no name or Dim, a name
    given two different bounds, or an example size outside its dim's bounds is a ConvcError."""
    if not isinstance(dynamic, Mapping):
        raise ConvcError(f"dynamic={dynamic!r} must map inputs (a position or a name) to {{axis: name or Dim}}")
    axes_of: dict[tuple[int, int], Dim] = {}
    dims: dict[str, Dim] = {}
    for key, axes in dynamic.items():
        if isinstance(key, int) and not isinstance(key, bool) and -len(names) <= key < len(names):
            position = key % len(names)
        elif isinstance(key, str) and key in names:
            position = list(names).index(key)
        else:
            raise ConvcError(f"dynamic: {key!r} is no input{owner}; the inputs are {list(names)} (positions 0 to "
                             f"{len(names) - 1})")
        where = f"dynamic[{key!r}]"
        if not isinstance(axes, Mapping):
            raise ConvcError(f"{where}: expected {{axis: name or Dim}}, got {axes!r}")
        rank = len(shapes[position])
        for axis, spec in axes.items():
            if isinstance(axis, bool) or not isinstance(axis, int) or not -rank <= axis < rank:
                raise ConvcError(f"{where}: axis {axis!r} is not an axis of input {names[position]!r} "
                                 f"(rank {rank})")
            dim = _dim(spec, f"{where}[{axis}]")
            if dims.setdefault(dim.name, dim) != dim:
                raise ConvcError(f"dynamic: {dim.name} is given two ranges ({dims[dim.name]!r} and {dim!r})")
            example = shapes[position][axis % rank]
            if example < dim.min or (dim.max is not None and example > dim.max):
                raise ConvcError(f"{where}[{axis}]: the example input's size {example} is outside {dim.name}'s "
                                 f"range [{dim.min}, {dim.max if dim.max is not None else 'inf'}]")
            axes_of[(position, axis % rank)] = dim
    return axes_of


def symbolic_inputs(names: Sequence[str], types: Sequence[TensorType], dynamic: Mapping[Any, Any] | None
                    ) -> tuple[list[TensorType], dict[str, Dim]]:
    """The input types with the `dynamic` axes symbolic, and the dims by name (errors: see
    dynamic_axes)."""
    if not dynamic:
        return list(types), {}
    result, dims = list(types), {}
    for (position, axis), dim in dynamic_axes(names, [t.shape for t in types], dynamic).items():
        dims[dim.name] = dim
        shape = list(result[position].shape)
        shape[axis] = symbol(dim.name)
        result[position] = TensorType(tuple(shape), result[position].dtype, result[position].block)
    return result, dims


def _holds(graph: Graph, values: dict[str, int]) -> bool:
    """Whether every node's shape rule, on the inputs' extents at `values`, accepts its operands
    and gives its symbolic type at those values."""
    from .registry import get_op
    concrete: dict[str, TensorType] = {}
    try:
        for node in graph.nodes():
            if node.op in ("input", "const"):
                concrete[node.name] = node.type.substitute(values)  # a negative extent: ConvcError
                continue
            operand_types = [concrete[o] for o in node.operands]
            result = get_op(node.op).infer(operand_types, node.attrs).with_block(node.type.block)
            if result != node.type.substitute(values):
                return False
            concrete[node.name] = result
    except ConvcError:
        return False
    return True


def preconditions(graph: Graph) -> dict[str, int]:
    """The smallest value of each symbol (the others at their generic values) from which the graph's
    symbolic types hold; a ConvcError where they do not hold even for long inputs."""
    dims = graph.dims
    if not dims:
        return {}
    with generic_values(dims):
        generic = {name: generic_value(name) for name in dims}
    rng = random.Random(0)
    minimums = {}
    for name, dim in dims.items():
        def holds_from(value: int, name: str = name) -> bool:
            return all(_holds(graph, {**generic, name: v}) for v in range(value, value + 4))

        high = generic[name]
        if not holds_from(high - 3):
            raise ConvcError(f"the sizes of graph @{graph.name} are not expressions of {name} that convc can "
                             f"represent: its shape rules disagree with them at {name}={high}")
        low = dim.min
        while low < high:  # the smallest value from which the types hold, by bisection
            middle = (low + high) // 2
            if holds_from(middle):
                high = middle
            else:
                low = middle + 1
        checks = list(range(low, low + CHECKED_ABOVE))
        checks += [rng.randint(low, generic[name]) for _ in range(SAMPLED_ABOVE)]
        failing = [v for v in checks if not _holds(graph, {**generic, name: v})]
        if failing:
            raise ConvcError(f"graph @{graph.name}: its sizes hold for {name}={low} but not for {name}={failing[0]}: "
                             f"a shape rule that is not an expression of {name} from some length on")
        minimums[name] = low
    return minimums


def input_axes(graph: Graph) -> list[list[tuple[int, str]]]:
    """Per input of a graph with symbolic sizes, (axis, symbol) of each symbolic axis: a call's
    shapes give the symbols' values there. An input extent that is an expression of symbols
    (not one symbol) is a ConvcError: a call's length could not be read off it."""
    from .symbolic import Size
    axes = []
    for name in graph.inputs:
        found = []
        for axis, extent in enumerate(graph.type_of(name).shape):
            if isinstance(extent, Size):
                if len(extent.terms) != 1 or extent.constant or extent.terms[0][1] != 1 or len(extent.terms[0][0]) != 1 \
                        or not isinstance(extent.terms[0][0][0], str):
                    raise ConvcError(f"graph @{graph.name}: input %{name} has extent {extent} on axis {axis}; an "
                                     f"input's symbolic extents must be single names")
                found.append((axis, extent.terms[0][0][0]))
        axes.append(found)
    return axes
