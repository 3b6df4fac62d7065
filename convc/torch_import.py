"""convc.from_torch: a torch.nn.Module captured with torch.export and mapped onto convc ops.

The module is exported in eval mode with `torch.export.export(module, args, strict=False)`: its
forward runs as Python on the example inputs, so control flow over shapes resolves as it would
eagerly. torch's decompositions then bring the graph to the core ATen set, functional (in-place ops
become their out-of-place forms), except for the ops that convc.torch_aten.ATEN maps whole. The
graph is replayed node by node under convc.trace: parameters, buffers and lifted tensor constants
become graph constants named after their fully-qualified names (`encode.0.weight`), the user
inputs become the graph's inputs in order, every ATen node goes through its ATEN entry, and the
outputs are the module's, flattened in order (tuples, lists, dicts in insertion order).

With `dynamic=` (convc.compile's form: {input position or name: {axis: name or Dim}}), those
axes are exported as `torch.export.Dim.DYNAMIC`; torch's symbols become convc's named sizes, the
shape arithmetic of the exported graph (aten.sym_size, +, -, *, //) is replayed on convc Sizes,
and each result's symbolic shape is checked against torch's.

Ops on constants (a weight_norm parametrization, say) are recorded like any other and folded by
the compiler; the importer computes nothing (NumPy only converts parameters). Whatever does not
map is collected, not raised at the first node, and reported in one ConvcError listing each ATen
op with the module and source line each use comes from.
"""
from __future__ import annotations

import contextlib
import inspect
import operator
import re
import warnings
from collections import defaultdict
from typing import Any, Iterator

import numpy as np

from . import collector
from .errors import ConvcError
from .ir import Graph
from .torch_aten import ATEN, Call, Unsupported, named_constant
from .tracing import Tensor, current_graph, trace
from .types import TensorType

MAX_LOCATIONS = 6  # uses listed per unsupported op; the rest are counted


class TorchMissingError(ConvcError, ImportError):
    """convc.from_torch was called where PyTorch is not installed."""


def _import_torch() -> Any:
    try:
        import torch
        import torch.export
    except ImportError as error:
        raise TorchMissingError(f"convc.from_torch needs PyTorch, which cannot be imported ({error}): "
                                f"pip install torch==2.13.0 (the CPU build; or pip install 'convc[torch]')") \
            from None
    return torch


def _key(target: Any) -> str:
    """The ATEN key of a node's target: "aten.add" for aten.add.Tensor."""
    schema = getattr(target, "_schema", None)
    if schema is not None:
        return schema.name.replace("::", ".")
    return getattr(target, "__qualname__", None) or str(target)


def _op_name(target: Any) -> str:
    name = str(target)
    return name[:-len(".default")] if name.endswith(".default") else name


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences a deprecation warning that torch 2.13's export code raises about its own pytree use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        yield


def _export(torch: Any, module: Any, args: tuple, dynamic_shapes: tuple | None = None) -> tuple[Any, Any]:
    """The module's ExportedProgram in eval mode, as exported and at the ATen level ATEN asks for."""
    name = type(module).__name__
    modes = {sub: sub.training for sub in module.modules()}
    module.eval()
    try:
        with _quiet():
            program = torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as error:  # export reports why it cannot capture the forward
        raise ConvcError(f"from_torch: torch.export.export(strict=False) cannot capture {name}: "
                         f"{type(error).__name__}: {error}") from error
    finally:
        for sub, training in modes.items():
            sub.training = training
    table = torch.export.default_decompositions()
    for op in list(table.keys()):
        if _key(op) in ATEN:
            del table[op]
    try:
        with _quiet():
            return program, program.run_decompositions(table)
    except Exception as error:  # a decomposition failed inside torch
        raise ConvcError(f"from_torch: torch's decompositions of {name} failed: "
                         f"{type(error).__name__}: {error}") from error


def _location(node: Any) -> str:
    """Where a node comes from: the innermost module and the last frame of its stack trace."""
    where: list[str] = []
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        if path:
            where.append(f"module {path} ({getattr(cls, '__name__', str(cls)).rsplit('.', 1)[-1]})")
    frames = re.findall(r'File "([^"]+)", line (\d+), in [^\n]*\n[ \t]*([^\n]*)', node.meta.get("stack_trace") or "")
    if frames:
        file, line, code = frames[-1]
        where.append(f"{file.split('site-packages/')[-1]}:{line}: {code.strip()}")
    return ", ".join(where) or "(no source location)"


class _Problems:
    """The nodes that do not map, grouped by the ATen op of the exported forward they come from (a
    composite op that torch decomposed lists the pieces that do not map), one location per use."""

    def __init__(self, exported: dict[str, Any]) -> None:
        self.exported = exported  # the nodes of the graph before decomposition, by name
        self.pieces: dict[str, dict[str, None]] = defaultdict(dict)  # ordered sets
        self.uses: dict[str, dict[str, str]] = defaultdict(dict)

    def add(self, node: Any, reason: str | None = None) -> None:
        op = _op_name(node.target)
        sources = node.meta.get("from_node") or []
        origin = _op_name(getattr(sources[0], "target", op)) if sources else op
        if origin != op:
            self.pieces[origin][op] = None
        use = getattr(sources[0], "name", node.name) if sources else node.name
        where = node if "stack_trace" in node.meta or use not in self.exported else self.exported[use]
        self.uses[origin].setdefault(use, _location(where) + (f": {reason}" if reason else ""))

    def error(self, name: str) -> ConvcError:
        count = len(self.uses)
        lines = [f"from_torch: {count} ATen op{'s' if count != 1 else ''} of {name} cannot be mapped onto convc "
                 f"ops (each needs an entry in convc.torch_aten.ATEN):"]
        for origin, uses in self.uses.items():
            pieces = f" -> {', '.join(self.pieces[origin])}" if self.pieces[origin] else ""
            lines.append(f"  {origin}{pieces} ({len(uses)} use{'s' if len(uses) != 1 else ''})")
            locations = list(uses.values())
            lines += [f"    {where}" for where in locations[:MAX_LOCATIONS]]
            if len(locations) > MAX_LOCATIONS:
                lines.append(f"    ... and {len(locations) - MAX_LOCATIONS} more")
        return ConvcError("\n".join(lines))


_MISSING = object()  # the value of a node downstream of one that did not map


class _Lifted:
    """A parameter, buffer or constant of the program, not yet converted (some are never used)."""

    def __init__(self, kind: str, target: str) -> None:
        self.kind, self.target = kind, target


def _contains_missing(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_contains_missing(v) for v in value)
    return value is _MISSING


class _Replay:
    """Replays an exported program's graph under convc.trace (the callable that trace runs)."""

    def __init__(self, torch: Any, exported: Any, program: Any, name: str,
                 symbols: dict[tuple[int, int], str] | None = None) -> None:
        """`symbols`: (user input position, axis) -> the convc name of that symbolic axis."""
        self.torch, self.program = torch, program
        self.problems = _Problems({node.name: node for node in exported.graph.nodes})
        self.dtypes = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}
        specs = program.graph_signature.input_specs
        self.sources = {spec.arg.name: spec for spec in specs}
        self.user_inputs = [spec.arg.name for spec in specs if spec.kind.name == "USER_INPUT"
                            and type(spec.arg).__name__ == "TensorArgument"]
        self.__name__ = name
        self.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_ONLY) for n in self.user_inputs])
        self.names: dict[str, str] = {}  # torch's symbol -> convc's name
        placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
        for (position, axis), name_ in (symbols or {}).items():
            size = placeholders[self.user_inputs[position]].meta["val"].shape[axis]
            if isinstance(size, torch.SymInt):
                self.names[str(size.node.expr)] = name_

    def _size(self, size: Any) -> Any:
        """An int, or a torch SymInt as a convc Size of the names its symbols map to."""
        if not isinstance(size, self.torch.SymInt):
            return int(size)
        return _sympy_size(size.node.expr, self.names)

    def _placeholder(self, node: Any, inputs: dict[str, Tensor]) -> Any:
        spec = self.sources[node.name]
        if spec.kind.name == "USER_INPUT":
            return inputs[node.name] if node.name in inputs else spec.arg.value
        return _Lifted(spec.kind.name, spec.target)  # converted where an op first uses it

    def _constant(self, lifted: _Lifted) -> Tensor:
        """A parameter, buffer or lifted tensor constant as a graph constant named after it."""
        if lifted.kind not in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
            raise Unsupported(f"the program input {lifted.target} of kind {lifted.kind}")
        state, target = self.program.state_dict, lifted.target
        tensor = state[target] if target in state else self.program.constants[target]
        array = tensor.detach().cpu().numpy()
        if array.dtype not in (np.float32, np.float64):
            raise Unsupported(f"the constant {target} is {array.dtype} (convc computes in float32 and float64)")
        return named_constant(current_graph(), array, target)

    def _value(self, argument: Any, env: dict) -> Any:
        fx = self.torch.fx
        if isinstance(argument, fx.Node):
            value = env[argument]
            if isinstance(value, _Lifted):
                value = env[argument] = self._constant(value)
            return value
        if isinstance(argument, (tuple, list)):
            return tuple(self._value(a, env) for a in argument)
        return argument

    def _result_type(self, node: Any) -> tuple[tuple[int, ...] | None, np.dtype | None]:
        val = node.meta.get("val")
        if isinstance(val, self.torch.Tensor):
            return tuple(self._size(d) for d in val.shape), self.dtypes.get(val.dtype)
        return None, None

    def _stand_in(self, node: Any) -> Any:
        """A graph input in place of a node that did not map, so that the nodes after it are checked too."""
        def one(val: Any) -> Any:
            if isinstance(val, self.torch.Tensor) and val.dtype in self.dtypes:
                dtype = "f32" if val.dtype == self.torch.float32 else "f64"
                graph = current_graph()
                return Tensor(graph, graph.add_input(TensorType(tuple(int(d) for d in val.shape), dtype)))
            if isinstance(val, (tuple, list)):
                return tuple(one(v) for v in val)
            return _MISSING
        return one(node.meta.get("val"))

    def _check(self, call: Call, result: Any) -> None:
        """An entry's result has torch's shape and dtype (or the entry is wrong)."""
        if isinstance(result, Tensor) and call.shape is not None and (
                result.shape != call.shape or result.dtype != call.dtype):
            raise Unsupported(f"convc computes {result.type} where torch computes {list(call.shape)} "
                              f"{call.dtype or 'of another dtype'}")

    def _call(self, node: Any, env: dict) -> Any:
        if node.target is operator.getitem:
            container = self._value(node.args[0], env)
            return _MISSING if container is _MISSING else container[node.args[1]]
        if node.target in _SIZE_ARITHMETIC:  # shape arithmetic, on convc Sizes
            values = [self._value(a, env) for a in node.args]
            return _MISSING if _contains_missing(tuple(values)) else node.target(*values)
        if _key(node.target) == "aten.sym_size":
            tensor = self._value(node.args[0], env)
            return _MISSING if tensor is _MISSING else tensor.shape[node.args[1]]
        entry = ATEN.get(_key(node.target))
        schema = getattr(node.target, "_schema", None)
        if entry is None or schema is None:
            raise Unsupported()
        args = {}
        for index, argument in enumerate(schema.arguments):
            if index < len(node.args):
                raw = node.args[index]
            else:
                raw = node.kwargs.get(argument.name, argument.default_value)
            args[argument.name] = self._value(raw, env)
        if _contains_missing(tuple(args.values())):
            return _MISSING
        call = Call(str(node.target), args, *self._result_type(node))
        try:
            result = entry(call)
        except (ConvcError, TypeError) as error:  # a convc op rejected what the entry passed
            raise Unsupported(f"convc: {error}") from None
        self._check(call, result)
        return result

    def __call__(self, *inputs: Tensor) -> Any:
        env: dict[Any, Any] = {}
        named = dict(zip(self.user_inputs, inputs))
        for node in self.program.graph.nodes:
            if node.op == "placeholder":
                env[node] = self._placeholder(node, named)
            elif node.op == "call_function":
                try:
                    env[node] = self._call(node, env)
                except Unsupported as why:
                    self.problems.add(node, str(why) or None)
                    env[node] = self._stand_in(node)
            elif node.op == "output":
                return self._outputs(node, env)
            else:
                self.problems.add(node, f"an fx {node.op} node")
                env[node] = self._stand_in(node)
        raise ConvcError(f"from_torch: the exported graph of {self.__name__} has no output")

    def _outputs(self, node: Any, env: dict) -> Any:
        if self.problems.uses:
            raise self.problems.error(self.__name__)
        specs = self.program.graph_signature.output_specs
        mutated = [spec.target for spec in specs if spec.kind.name == "USER_INPUT_MUTATION"]
        if mutated:
            raise ConvcError(f"from_torch: {self.__name__} writes into its input{'s' if len(mutated) > 1 else ''} "
                             f"{', '.join(mutated)} in place; a convc graph cannot change its inputs")
        results = []
        for spec, argument in zip(specs, node.args[0]):
            if spec.kind.name != "USER_OUTPUT":
                continue  # buffers the forward updates (eval mode leaves them as they are)
            try:
                value = self._value(argument, env)
            except Unsupported as why:
                raise ConvcError(f"from_torch: output {len(results)} of {self.__name__}: {why}") from None
            if not isinstance(value, Tensor):
                raise ConvcError(f"from_torch: output {len(results)} of {self.__name__} is {value!r}, not a tensor; "
                                 f"convc graphs return tensors")
            results.append(value)
        out_spec = self.program.call_spec.out_spec
        single = out_spec is not None and out_spec.is_leaf() and len(results) == 1
        return results[0] if single else tuple(results)


_SIZE_ARITHMETIC = frozenset({operator.add, operator.sub, operator.mul, operator.floordiv, operator.neg})


def _sympy_size(expr: Any, names: dict[str, str]) -> Any:
    """A sympy expression of torch's shape symbols (sums, products, FloorDiv, integers) as a Size."""
    from .symbolic import symbol
    if expr.is_Integer:
        return int(expr)
    if expr.is_Symbol:
        if str(expr) not in names:
            raise ConvcError(f"from_torch: torch made a size symbolic ({expr}) that dynamic= did not name")
        return symbol(names[str(expr)])
    parts = [_sympy_size(a, names) for a in expr.args]
    kind = type(expr).__name__
    if kind == "Add":
        total = 0
        for part in parts:
            total = part + total
        return total
    if kind == "Mul":
        product = 1
        for part in parts:
            product = part * product
        return product
    if kind == "FloorDiv" and len(parts) == 2 and isinstance(parts[1], int):
        return parts[0] // parts[1]
    raise ConvcError(f"from_torch: a size of the exported graph is {expr}, which convc cannot express")


def _dynamic_shapes(torch: Any, module: Any, args: tuple, dynamic: Any) -> tuple[tuple, dict[tuple[int, int], Any]]:
    """torch.export's dynamic_shapes for convc's `dynamic` (inputs by position or by forward's
    parameter name), and (input position, axis) -> its convc.Dim."""
    from .dynamic import dynamic_axes
    try:
        parameters = list(inspect.signature(module.forward).parameters)[:len(args)]
    except (TypeError, ValueError):
        parameters = []
    names = parameters + [f"arg{i}" for i in range(len(parameters), len(args))]
    shapes_of = [tuple(a.shape) if isinstance(a, torch.Tensor) else () for a in args]
    symbols = dynamic_axes(names, shapes_of, dynamic, f" of {type(module).__name__}")
    shapes: list[Any] = [None] * len(args)
    for position, axis in symbols:
        shapes[position] = {**(shapes[position] or {}), axis: torch.export.Dim.DYNAMIC}
    return tuple(shapes), symbols


def _example(torch: Any, index: int, value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, copy=True))
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            raise ConvcError(f"from_torch: example_inputs[{index}] is on {value.device}; convc runs on the CPU")
        return value.detach()
    return value


@collector.paused()
def from_torch(module: Any, *example_inputs: Any, dynamic: Any = None) -> Graph:
    """Capture a torch.nn.Module with torch.export on the example inputs (tensors or arrays, which fix
    shapes and dtypes) and map its ATen ops onto convc ops: a Graph whose inputs are the tensor
    inputs in order and whose outputs are the module's, flattened in order. `dynamic` makes input
    axes symbolic (as in convc.compile; inputs by position or by forward's parameter name)."""
    torch = _import_torch()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch: module must be a torch.nn.Module, got {type(module).__name__}")
    args = tuple(_example(torch, i, x) for i, x in enumerate(example_inputs))
    dynamic_shapes, symbols = _dynamic_shapes(torch, module, args, dynamic) if dynamic else (None, {})
    tensor_positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    by_tensor = {(tensor_positions.index(p), axis): dim for (p, axis), dim in symbols.items()}  # user inputs
    replay = _Replay(torch, *_export(torch, module, args, dynamic_shapes), type(module).__name__,
                     {place: dim.name for place, dim in by_tensor.items()})
    arrays = [a.numpy() for a in args if isinstance(a, torch.Tensor)]
    if len(arrays) != len(replay.user_inputs):
        raise ConvcError(f"from_torch: {replay.__name__} was exported with {len(replay.user_inputs)} tensor inputs "
                         f"({', '.join(replay.user_inputs)}) from {len(arrays)} example tensors")
    traced_dynamic: dict[int, dict[int, Any]] = {}
    for (position, axis), dim in by_tensor.items():
        traced_dynamic.setdefault(position, {})[axis] = dim
    return trace(replay, *arrays, dynamic=traced_dynamic or None)
