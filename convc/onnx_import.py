"""convc.from_onnx: an ONNX model's graph mapped onto convc ops.

The model is read with onnx's own API (onnx.load, onnx.numpy_helper) and its shapes inferred with
onnx.shape_inference. The graph is replayed node by node under convc.trace: graph inputs become the
graph's inputs in order, under their ONNX names and with their static shapes; initializers become
constants named after them; every node goes through its entry in convc.onnx_ops.OPS; the outputs
are the graph's, in order.

A node whose inputs are all known at import time (initializers, Constant outputs, the Shape of a
tensor, whose shape convc always knows, and what is computed from those) is folded by onnx's
reference implementation instead: shape arithmetic (Shape, Gather, Concat, Unsqueeze, Cast, ...
ending in a Reshape's shape) leaves no trace in the graph. Before the replay, the erf form of gelu
(x * 0.5 * (1 + erf(x / sqrt(2))), as torch.onnx exports nn.GELU) is recognised and becomes one
Gelu node. Whatever does not map is collected, not raised at the first node: op types without an
entry, nodes an entry rejects, missing attributes, dynamic or non-float inputs, a model older than
opset 11; one ConvcError lists them all with the nodes' names.
"""
from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from . import collector
from .errors import ConvcError
from .ir import Graph
from .onnx_ops import OPS, Node
from .torch_aten import Unsupported, named_constant
from .torch_import import MAX_LOCATIONS
from .tracing import Tensor, current_graph, trace
from .types import NAME_OF_DTYPE, TensorType

MIN_OPSET = 11
DEFAULT_DOMAINS = ("", "ai.onnx")


class OnnxMissingError(ConvcError, ImportError):
    """convc.from_onnx was called where the onnx package is not installed."""


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.numpy_helper
        import onnx.shape_inference
    except ImportError as error:
        raise OnnxMissingError(f"convc.from_onnx needs the onnx package, which cannot be imported ({error}): "
                               f"pip install onnx (or pip install 'convc[onnx]')") from None
    return onnx


def _load(onnx: Any, model: Any) -> tuple[Any, str]:
    """The ModelProto and how to name it in messages."""
    if isinstance(model, onnx.ModelProto):
        return model, "the model"
    if isinstance(model, (str, os.PathLike)):
        try:
            return onnx.load(os.fspath(model)), os.path.basename(os.fspath(model))
        except Exception as error:  # onnx reports a missing or damaged file in its own way
            raise ConvcError(f"from_onnx: cannot read {os.fspath(model)!r}: {type(error).__name__}: {error}") from None
    if isinstance(model, (bytes, bytearray)):
        try:
            return onnx.load_model_from_string(bytes(model)), "the model"
        except Exception as error:
            raise ConvcError(f"from_onnx: the bytes are not an ONNX model: {type(error).__name__}: {error}") from None
    raise TypeError(f"from_onnx: model must be a path, bytes or an onnx.ModelProto, got {type(model).__name__}")


def _label(node: Any) -> str:
    if node.name:
        return f"node {node.name!r}"
    return f"unnamed node with output {node.output[0]!r}" if node.output else "unnamed node"


def _ir_name(graph: Graph, name: str) -> str:
    """`name` as an IR value name (word characters and dots), made unique in `graph`."""
    base = re.sub(r"[^A-Za-z0-9_.]", "_", name) or "input"
    unique, count = base, 0
    while unique in graph.dag:
        count += 1
        unique = f"{base}_{count}"
    return unique


def _type_of(onnx: Any, type_proto: Any) -> tuple[tuple | None, np.dtype | None, bool]:
    """(shape with None for unknown sizes or None for an unknown rank, dtype or None, is a tensor)."""
    if not type_proto.HasField("tensor_type"):
        return None, None, False
    tensor = type_proto.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)) if tensor.elem_type else None
    if not tensor.HasField("shape"):
        return None, dtype, True
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim), dtype, True


def _declared(onnx: Any, model: Any) -> dict[str, tuple[tuple | None, np.dtype | None]]:
    """The shape and dtype of every value that ONNX's shape inference can tell."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # inference is a check here, not a requirement
        inferred = model
    graph = inferred.graph
    return {info.name: _type_of(onnx, info.type)[:2] for info in (*graph.value_info, *graph.output)}


def _fix_input_shapes(onnx: Any, model: Any, input_shapes: dict[str, Sequence[int]]) -> Any:
    """A copy of the model whose inputs have the given static shapes (dynamic sizes fixed)."""
    inputs = {info.name: info for info in model.graph.input}
    unknown = [name for name in input_shapes if name not in inputs]
    if unknown:
        raise ConvcError(f"from_onnx: input_shapes names {unknown}, which are not inputs of the graph "
                         f"(its inputs: {list(inputs)})")
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for info in fixed.graph.input:
        if info.name not in input_shapes:
            continue
        shape = [int(d) for d in input_shapes[info.name]]
        dims = info.type.tensor_type.shape.dim
        if info.type.tensor_type.HasField("shape") and len(dims) != len(shape):
            raise ConvcError(f"from_onnx: input_shapes[{info.name!r}]={shape} has rank {len(shape)}, but the "
                             f"input has rank {len(dims)}")
        for axis, (dim, size) in enumerate(zip(dims, shape)):
            if dim.HasField("dim_value") and dim.dim_value != size:
                raise ConvcError(f"from_onnx: input_shapes[{info.name!r}]={shape} gives axis {axis} size {size}, "
                                 f"but the model fixes it at {dim.dim_value}")
        del dims[:]
        for size in shape:
            info.type.tensor_type.shape.dim.add().dim_value = size
    return fixed


class _Problems:
    """What does not import: model-level lines (opset, inputs, outputs) and, per op type, the nodes."""

    def __init__(self) -> None:
        self.model: list[str] = []
        self.nodes: dict[str, dict[str, str]] = defaultdict(dict)  # op type -> node label -> reason
        self.missing: set[str] = set()  # op types with no entry in OPS

    def node(self, op_type: str, label: str, reason: str = "") -> None:
        self.nodes[op_type].setdefault(label, reason)

    def error(self, where: str) -> ConvcError:
        count = len(self.model) + len(self.nodes)
        lines = [f"from_onnx: {where} cannot be imported; {count} problem{'s' if count != 1 else ''}:"]
        lines += [f"  {line}" for line in self.model]
        for op_type, nodes in self.nodes.items():
            what = "no entry in convc.onnx_ops.OPS" if op_type in self.missing else "nodes convc cannot map"
            lines.append(f"  {op_type} ({len(nodes)} node{'s' if len(nodes) != 1 else ''}; {what})")
            items = list(nodes.items())
            lines += [f"    {label}{': ' + reason if reason else ''}" for label, reason in items[:MAX_LOCATIONS]]
            if len(items) > MAX_LOCATIONS:
                lines.append(f"    ... and {len(items) - MAX_LOCATIONS} more")
        return ConvcError("\n".join(lines))


class _Skip(Exception):
    """A node downstream of one that did not import (it is not judged on its own)."""


_MISSING = object()


class _Values:
    """The value of every ONNX name: an array known at import time, or a traced convc Tensor."""

    def __init__(self, graph_proto: Any, opset: dict[str, int]) -> None:
        self.opset = opset
        self.known: dict[str, np.ndarray] = {}
        self.traced: dict[str, Any] = {}
        self.as_tensor: dict[tuple[str, Any], Tensor] = {}
        self.producer = {out: node for node in graph_proto.node for out in node.output if out}
        self.unfoldable: set[str] = set()
        self.fold_errors: dict[int, str] = {}

    # what entries ask for
    def constant(self, name: str) -> np.ndarray | None:
        """The value of `name` if it is known at import time (folding the nodes it comes from)."""
        if name in self.known:
            return self.known[name]
        if name in self.traced or name in self.unfoldable:
            return None
        node = self.producer.get(name)
        if node is None or not self.fold(node):
            self.unfoldable.add(name)
            return None
        return self.known.get(name)

    def tensor(self, name: str, dtype: Any = None) -> Tensor:
        value = self.traced.get(name, _MISSING) if name in self.traced else self.constant(name)
        if value is _MISSING:
            raise _Skip()
        if isinstance(value, Tensor):
            return value
        if value is None:
            raise Unsupported(f"no value for {name!r}")
        key = (name, dtype)
        if key not in self.as_tensor:
            array = value.astype(dtype) if dtype is not None else value
            if array.dtype not in (np.float32, np.float64):
                raise Unsupported(f"{name!r} is a {array.dtype} constant (convc computes in float32 and float64)")
            self.as_tensor[key] = named_constant(current_graph(), array, name)
        return self.as_tensor[key]

    def shape_of(self, name: str) -> tuple[int, ...]:
        value = self.constant(name)
        return tuple(value.shape) if value is not None else self.tensor(name).shape

    # folding
    def fold(self, node: Any) -> bool:
        """Compute a node whose inputs are all known with onnx's reference implementation."""
        if id(node) in self.fold_errors or node.domain not in DEFAULT_DOMAINS:
            return False
        inputs = [self.constant(name) if name else None for name in node.input]
        if any(value is None for name, value in zip(node.input, inputs) if name):
            return False
        from onnx.reference import ReferenceEvaluator
        try:
            feeds = {name: value for name, value in zip(node.input, inputs) if name}
            with np.errstate(all="ignore"):  # constants may hold inf and nan, as the model computes them
                results = ReferenceEvaluator(node, opsets={"": self.opset.get("", MIN_OPSET)}).run(None, feeds)
        except Exception as error:  # the reference implementation rejects the node; reported by the importer
            self.fold_errors[id(node)] = f"{type(error).__name__}: {error}"
            return False
        for name, value in zip(node.output, results):
            if name:
                self.known[name] = np.asarray(value)
        return True


def _scalar(values: _Values, name: str, target: float) -> bool:
    value = values.constant(name)
    return value is not None and value.size == 1 and value.dtype.kind == "f" and \
        math.isclose(float(value.reshape(-1)[0]), target, rel_tol=1e-6)


def _fuse_gelu(nodes: list, values: _Values, outputs: set[str], onnx: Any) -> list:
    """The node list with each erf-form gelu, x * 0.5 * (1 + erf(x / sqrt(2))) in any of the orders
    exporters write it, replaced by one Gelu node where its last node was."""
    users: dict[str, list] = defaultdict(list)
    for node in nodes:
        for name in node.input:
            users[name].append(node)

    def only_user(name: str, *op_types: str) -> Any:
        found = users[name]
        ok = len(found) == 1 and name not in outputs and found[0].op_type in op_types
        return found[0] if ok else None

    def operands(node: Any, name: str) -> list[str]:
        """The other operands of a binary node, given one of them."""
        rest = list(node.input)
        rest.remove(name)
        return rest if len(node.input) == 2 else []

    def half_of(node: Any, x: str) -> bool:
        """node computes x * 0.5 (either order) or x / 2."""
        if node is None or x not in node.input or len(node.input) != 2:
            return False
        other = operands(node, x)[0]
        return node.op_type == "Mul" and _scalar(values, other, 0.5) or \
            node.op_type == "Div" and node.input[0] == x and _scalar(values, other, 2.0)

    removed: set[int] = set()
    replace: dict[int, Any] = {}
    for erf in (node for node in nodes if node.op_type == "Erf" and node.domain in DEFAULT_DOMAINS):
        scaled = values.producer.get(erf.input[0])
        if scaled is None or scaled.op_type not in ("Div", "Mul") or len(scaled.input) != 2:
            continue
        x = scaled.input[0]
        if scaled.op_type == "Mul" and not _scalar(values, scaled.input[1], 1 / math.sqrt(2)):
            x = scaled.input[1]
        const = operands(scaled, x)[0]
        if not (scaled.op_type == "Div" and _scalar(values, const, math.sqrt(2))
                or scaled.op_type == "Mul" and _scalar(values, const, 1 / math.sqrt(2))):
            continue
        plus = only_user(erf.output[0], "Add", "Sum")
        if plus is None or len(plus.input) != 2 or not _scalar(values, operands(plus, erf.output[0])[0], 1.0):
            continue
        product = only_user(plus.output[0], "Mul")
        if product is None:
            continue
        other = operands(product, plus.output[0])[0]
        chain = [erf, plus, product]
        if other == x or _scalar(values, other, 0.5):  # (x * (1 + erf)) * 0.5, or (0.5 * (1 + erf)) * x
            final = only_user(product.output[0], "Mul", "Div")
            if final is None or not (half_of(final, product.output[0]) if other == x else
                                     final.op_type == "Mul" and operands(final, product.output[0]) == [x]):
                continue
            chain.append(final)
        else:  # (x * 0.5) * (1 + erf)
            half, final = values.producer.get(other), product
            if not half_of(half, x):
                continue
            if only_user(other, "Mul") is product:
                chain.append(half)
        if only_user(erf.input[0], "Erf") is erf:
            chain.append(scaled)
        replace[id(final)] = onnx.helper.make_node("Gelu", [x], [final.output[0]], name=erf.name or final.name)
        removed.update(id(node) for node in chain if node is not final)
    return [replace.get(id(node), node) for node in nodes if id(node) not in removed]


def _attributes(onnx: Any, node: Any) -> dict[str, Any]:
    return {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}


class _Import:
    """Replays an ONNX graph under convc.trace (the callable that trace runs, without arguments)."""

    def __init__(self, onnx: Any, model: Any, where: str) -> None:
        self.onnx, self.model, graph = onnx, model, model.graph
        self.opset = {("" if d.domain == "ai.onnx" else d.domain): d.version for d in model.opset_import}
        version = self.opset.get("")
        self.where = f"{where} (graph {graph.name!r}, opset {version})"
        self.values = _Values(graph, self.opset)
        self.problems = _Problems()
        if version is None or version < MIN_OPSET:
            self.problems.model.append(f"opset {version}: convc imports ONNX opset {MIN_OPSET} and up "
                                       f"(onnx.version_converter.convert_version can update the model)")
        for tensor in graph.initializer:
            self.values.known[tensor.name] = onnx.numpy_helper.to_array(tensor)
        for tensor in graph.sparse_initializer:
            self.problems.model.append(f"initializer {tensor.values.name!r} is sparse (convc reads dense tensors)")
        self.declared = _declared(onnx, model)
        self.outputs = [info.name for info in graph.output]
        self.read = {name for node in graph.node for name in node.input if name} | set(self.outputs)
        name = re.sub(r"\W", "_", graph.name)
        self.__name__ = name if name.isidentifier() else "main"

    def __call__(self) -> Any:
        graph = current_graph()
        self._inputs(graph)
        nodes = _fuse_gelu(list(self.model.graph.node), self.values, set(self.outputs), self.onnx)
        for node in nodes:
            self._node(graph, node)
        results = self._outputs()
        if self.problems.model or self.problems.nodes:
            raise self.problems.error(self.where)
        if not results:
            raise ConvcError(f"from_onnx: {self.where} has no outputs")
        return results[0] if len(results) == 1 else tuple(results)

    def _inputs(self, graph: Graph) -> None:
        for info in self.model.graph.input:
            if info.name in self.values.known:  # an initializer listed as an input too (IR version < 4)
                continue
            shape, dtype, is_tensor = _type_of(self.onnx, info.type)
            problem = None
            if not is_tensor:
                problem = "is not a tensor (convc graphs take tensors)"
            elif dtype not in NAME_OF_DTYPE:
                problem = f"is {dtype} (convc graphs take float32 and float64)"
            elif shape is None:
                problem = "has no shape (convc needs static shapes)"
            elif None in shape:
                names = [d.dim_param or "?" if not d.HasField("dim_value") else d.dim_value
                         for d in info.type.tensor_type.shape.dim]
                problem = (f"has dynamic sizes {names}; convc needs static shapes: "
                           f"from_onnx(model, input_shapes={{{info.name!r}: (...)}}) fixes them")
            if problem:
                self.problems.model.append(f"input {info.name!r} {problem}")
            if not is_tensor or dtype not in NAME_OF_DTYPE or shape is None:
                self.values.traced[info.name] = _MISSING
                continue
            static = TensorType(tuple(1 if d is None else d for d in shape), NAME_OF_DTYPE[dtype])
            self.values.traced[info.name] = Tensor(graph, graph.add_input(static, _ir_name(graph, info.name)))

    def _stand_in(self, graph: Graph, node: Any) -> None:
        """A graph input in place of each output of a node that did not import, so that the nodes after
        it are judged too (where its shape is known; else they are skipped)."""
        for name in node.output:
            shape, dtype = self.declared.get(name, (None, None))
            if shape is not None and None not in shape and dtype in NAME_OF_DTYPE:
                self.values.traced[name] = Tensor(graph, graph.add_input(TensorType(shape, NAME_OF_DTYPE[dtype])))
            else:
                self.values.traced[name] = _MISSING

    def _node(self, graph: Graph, node: Any) -> None:
        default = node.domain in DEFAULT_DOMAINS
        op_type = node.op_type if default else f"{node.domain}.{node.op_type}"
        if self.values.fold(node):
            return
        entry = OPS.get(op_type) if default else None
        if entry is None:
            error = self.values.fold_errors.get(id(node))
            self.problems.missing.add(op_type)
            self.problems.node(op_type, _label(node), f"evaluating it at import time failed: {error}" if error else "")
            return self._stand_in(graph, node)
        if any(self.values.traced.get(name) is _MISSING for name in node.input):
            return self._stand_in(graph, node)
        call = Node(node.op_type, node.name, self.opset.get("", MIN_OPSET), node.input, node.output,
                    _attributes(self.onnx, node), self.values, self.read.__contains__)
        try:
            result = entry(call)
            results = list(result) if isinstance(result, tuple) else [result]
            for name, value in zip(node.output, results):
                if isinstance(value, Tensor):
                    self._check(name, value)
                    self.values.traced[name] = value
                elif value is not None:
                    self.values.known[name] = np.asarray(value)
        except _Skip:
            return self._stand_in(graph, node)
        except Unsupported as why:
            self.problems.node(op_type, _label(node), str(why))
            return self._stand_in(graph, node)
        except (ConvcError, TypeError) as error:  # a convc op rejected what the entry passed
            self.problems.node(op_type, _label(node), f"convc: {error}")
            return self._stand_in(graph, node)

    def _check(self, name: str, value: Tensor) -> None:
        """An entry's result has the shape and dtype ONNX's shape inference gives (or the entry is wrong)."""
        shape, dtype = self.declared.get(name, (None, None))
        wrong_shape = shape is not None and (len(shape) != value.ndim or any(
            d is not None and d != v for d, v in zip(shape, value.shape)))
        if wrong_shape or (dtype is not None and dtype != value.dtype):
            declared = "?" if shape is None else [("?" if d is None else d) for d in shape]
            raise Unsupported(f"convc computes {value.type} for {name!r} where ONNX's shape inference gives "
                              f"{declared} {dtype or ''}".rstrip())

    def _outputs(self) -> list[Tensor]:
        results = []
        for name in self.outputs:
            value = self.values.traced.get(name) if name in self.values.traced else self.values.constant(name)
            if value is _MISSING:
                continue  # its node is listed
            if isinstance(value, np.ndarray) and value.dtype in (np.float32, np.float64):
                value = self.values.tensor(name)  # a constant output, computed at import time
            if isinstance(value, Tensor):
                results.append(value)
            elif isinstance(value, np.ndarray):
                self.problems.model.append(f"output {name!r} is a {value.dtype} value computed at import time "
                                           f"(convc graphs return float32 and float64 tensors)")
            else:
                self.problems.model.append(f"output {name!r} has no value (no node computes it)")
        return results


@collector.paused()
def from_onnx(model: Any, input_shapes: dict[str, Sequence[int]] | None = None) -> Graph:
    """Import an ONNX model (a path, bytes or an onnx.ModelProto; opset 11 and up) as a convc Graph:
    the graph inputs keep their names and static shapes (`input_shapes` fixes dynamic sizes by input
    name), initializers become named constants, the outputs are the graph's in order."""
    onnx = _import_onnx()
    proto, where = _load(onnx, model)
    if input_shapes:
        proto = _fix_input_shapes(onnx, proto, dict(input_shapes))
    return trace(_Import(onnx, proto, where))
