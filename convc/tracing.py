"""Tracing: symbolic Tensors that record convc ops into a Graph instead of computing them."""
from __future__ import annotations

import inspect
import threading
from typing import Any, Callable, Mapping

import numpy as np

from .arrays import as_float_array
from .dynamic import preconditions, symbolic_inputs
from .errors import ConvcError
from .ir import Graph
from .registry import get_op
from .symbolic import generic_values
from .types import TensorType

_state = threading.local()


class Tensor:
    """A symbolic value of a graph being traced; supports + - * / like the elementwise ops."""

    __array_priority__ = 1000  # so that ndarray <op> Tensor defers to Tensor's reflected operators

    def __init__(self, graph: Graph, name: str) -> None:
        self.graph, self.name = graph, name

    @property
    def type(self) -> TensorType:
        return self.graph.type_of(self.name)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.type.numpy_dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"convc.Tensor(%{self.name}: {self.type})"

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError(f"convc.Tensor %{self.name} is symbolic (inside convc.trace) and has no values; "
                        f"use convc.ops on it")

    def __bool__(self) -> bool:
        raise TypeError("a traced convc.Tensor has no truth value; control flow cannot depend on traced values")

    def _binary(self, op: str, other: Any, reflected: bool = False) -> "Tensor":
        from . import ops
        fn = getattr(ops, op)
        return fn(other, self) if reflected else fn(self, other)

    def __add__(self, other: Any) -> "Tensor": return self._binary("add", other)
    def __radd__(self, other: Any) -> "Tensor": return self._binary("add", other, True)
    def __sub__(self, other: Any) -> "Tensor": return self._binary("sub", other)
    def __rsub__(self, other: Any) -> "Tensor": return self._binary("sub", other, True)
    def __mul__(self, other: Any) -> "Tensor": return self._binary("mul", other)
    def __rmul__(self, other: Any) -> "Tensor": return self._binary("mul", other, True)
    def __truediv__(self, other: Any) -> "Tensor": return self._binary("div", other)
    def __rtruediv__(self, other: Any) -> "Tensor": return self._binary("div", other, True)
    def __pow__(self, other: Any) -> "Tensor": return self._binary("pow", other)
    def __rpow__(self, other: Any) -> "Tensor": return self._binary("pow", other, True)

    def __neg__(self) -> "Tensor":
        from . import ops
        return ops.neg(self)

    def __abs__(self) -> "Tensor":
        from . import ops
        return ops.abs(self)


def current_graph() -> Graph | None:
    return getattr(_state, "graph", None)


def record(op: str, operands: list[Any], attrs: dict[str, Any]) -> Tensor:
    """Add one op node to the graph being traced; non-symbolic operands become constants."""
    graph = current_graph()
    opdef = get_op(op)
    names = []
    for operand, arg_name in zip(operands, opdef.operand_labels(len(operands))):
        if isinstance(operand, Tensor):
            if operand.graph is not graph:
                raise ConvcError(f"{op}: {arg_name} is a Tensor of another trace")
            names.append(operand.name)
        else:
            # a snapshot: changing the array later does not change the traced graph
            names.append(graph.add_const(np.array(as_float_array(op, arg_name, operand), copy=True)))
    node_type = opdef.infer([graph.type_of(n) for n in names], attrs)
    return Tensor(graph, graph.add_node(op, names, attrs, node_type))


def _arg_names(fn: Callable, count: int) -> list[str]:
    target = fn.forward if hasattr(fn, "forward") else fn
    try:
        params = [p for p in inspect.signature(target).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params[:count]]
    names += [f"arg{i}" for i in range(len(names), count)]
    return names if len(set(names)) == count else [f"arg{i}" for i in range(count)]


def trace(fn: Callable, *example_inputs: Any, dynamic: Mapping[Any, Any] | None = None) -> Graph:
    """Run `fn` (a function of convc.ops or a convc.nn module) on symbolic tensors shaped like the
    example inputs and return the recorded Graph. `dynamic` makes input axes symbolic sizes
    ({input position or name: {axis: name or convc.Dim}}, see convc.dynamic): the graph's types
    are then expressions of them, and its preconditions are checked (a ConvcError where its sizes
    are no such expressions)."""
    if not callable(fn):
        raise TypeError(f"trace: fn={fn!r} must be callable (a function or a convc.nn module)")
    if current_graph() is not None:
        raise ConvcError("trace: cannot start a trace inside another trace")
    name = getattr(fn, "__name__", type(fn).__name__)
    graph = Graph(name if name.isidentifier() and name != "<lambda>" else "main")
    arrays = [as_float_array("trace", f"example_inputs[{i}]", x) for i, x in enumerate(example_inputs)]
    names = _arg_names(fn, len(arrays))
    types, dims = symbolic_inputs(names, [TensorType.of_array(a) for a in arrays], dynamic)
    graph.dims.update(dims)
    symbols = [Tensor(graph, graph.add_input(t, n)) for t, n in zip(types, names)]
    _state.graph = graph
    try:
        with generic_values(graph.dims):
            result = fn(*symbols)
    finally:
        _state.graph = None
    results = list(result) if isinstance(result, (tuple, list)) else [result]
    if not results or not all(isinstance(r, Tensor) and r.graph is graph for r in results):
        raise ConvcError(f"trace: {name} must return a traced convc.Tensor or a tuple of them, "
                         f"got {type(result).__name__}")
    graph.outputs = [r.name for r in results]
    graph.tuple_result = isinstance(result, (tuple, list))
    if graph.dims:
        preconditions(graph)
    return graph
