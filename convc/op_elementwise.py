"""Definitions of the elementwise ops (NumPy broadcasting), broadcast_to (TF / NumPy rules) and
fused_elementwise, a group of elementwise ops computed by one kernel (its `program`:
convc.elementwise_program), made by the elementwise fusion pass."""
from __future__ import annotations

from typing import Any

from .args import shape_tuple
from .attributes import ints
from .elementwise_program import check_program, program_problem
from .errors import ConvcError
from .registry import AttrSchema, OpDef, register, same_dtype
from .types import TensorType

BINARY_OPS = ("add", "sub", "mul", "div", "maximum", "minimum")
UNARY_OPS = ("relu", "relu6", "sigmoid", "tanh")


def broadcast_shapes(op: str, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy's broadcast of two shapes: aligned on the right, each axis 1 or equal."""
    rank = max(len(a), len(b))
    a2, b2 = (1,) * (rank - len(a)) + a, (1,) * (rank - len(b)) + b
    out = []
    for axis, (x, y) in enumerate(zip(a2, b2)):
        if x != y and 1 not in (x, y):
            raise ConvcError(f"{op}: shapes {a} and {b} cannot be broadcast together "
                             f"(axis {axis} has sizes {x} and {y}; each must be 1 or equal)")
        out.append(y if x == 1 else x)
    return tuple(out)


def broadcast_all(op: str, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """NumPy's broadcast of several shapes."""
    result: tuple[int, ...] = ()
    for shape in shapes:
        result = broadcast_shapes(op, result, shape)
    return result


def _infer_binary(op: str, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    dtype = same_dtype(op, types, ("a", "b"))
    return TensorType(broadcast_shapes(op, types[0].shape, types[1].shape), dtype)


def _infer_unary(op: str, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    return types[0]


def _no_attrs(**kwargs: Any) -> dict[str, Any]:
    return {}


for _name in BINARY_OPS:
    register(OpDef(_name, ("a", "b"), normalize=_no_attrs,
                   infer=lambda types, attrs, n=_name: _infer_binary(n, types, attrs),
                   traits=frozenset({"elementwise", "binary", "blocked"})))
for _name in UNARY_OPS:
    register(OpDef(_name, ("x",), normalize=_no_attrs,
                   infer=lambda types, attrs, n=_name: _infer_unary(n, types, attrs),
                   traits=frozenset({"elementwise", "unary", "activation", "blocked"})))


def _normalize_broadcast_to(shape: Any) -> dict[str, Any]:
    return {"shape": shape_tuple("broadcast_to", "shape", shape)}


def _infer_broadcast_to(types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    source, target = types[0].shape, attrs["shape"]
    if len(source) > len(target):
        raise ConvcError(f"broadcast_to: input of shape {source} has more dimensions than shape={target}")
    for axis, (s, t) in enumerate(zip(source[::-1], target[::-1])):
        if s != t and s != 1:
            raise ConvcError(f"broadcast_to: input of shape {source} cannot be broadcast to shape={target}: "
                             f"axis {len(target) - 1 - axis} has size {s}, which must be 1 or {t}")
    return TensorType(target, types[0].dtype)


register(OpDef("broadcast_to", ("input",), normalize=_normalize_broadcast_to, infer=_infer_broadcast_to,
               attributes=AttrSchema({"shape": ints(0)}), traits=frozenset({"broadcast"})))


def _infer_fused(types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    check_program(attrs["program"], len(types), "fused_elementwise")
    dtype = same_dtype("fused_elementwise", types, tuple(f"inputs[{i}]" for i in range(len(types))))
    return TensorType(broadcast_all("fused_elementwise", [t.shape for t in types]), dtype)


register(OpDef("fused_elementwise", ("inputs",), normalize=_no_attrs, infer=_infer_fused, variadic=True,
               attributes=AttrSchema({"program": program_problem}), traits=frozenset({"elementwise", "blocked"})))
