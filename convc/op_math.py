"""Definitions of the elementwise math ops and activations (torch semantics): exp, sin, cos, sqrt,
rsqrt, reciprocal, neg, abs; pow (an array exponent, broadcast like add) and pow_scalar (a number
exponent); gelu, silu, hardswish, hardsigmoid, leaky_relu, hardtanh and clamp, which also fuse
into the epilogue of a conv (trait `activation`, their attributes carried by the conv's
`activation` attribute: convc.fused_activation)."""
from __future__ import annotations

import numbers
from typing import Any

from .args import one_of
from .attributes import choice, number
from .errors import ConvcError
from .op_elementwise import broadcast_shapes
from .registry import AttrSchema, OpDef, register, same_dtype
from .types import TensorType

MATH_OPS = ("exp", "sin", "cos", "sqrt", "rsqrt", "reciprocal", "neg", "abs")
PLAIN_ACTIVATIONS = ("silu", "hardswish", "hardsigmoid")
GELU_APPROXIMATIONS = ("none", "tanh")
UNARY_TRAITS = frozenset({"elementwise", "unary", "blocked"})
ACTIVATION_TRAITS = UNARY_TRAITS | {"activation"}


def as_number(op: str, name: str, value: Any) -> float:
    """A real number argument as a float; TypeError for anything else (bools included)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{op}: {name}={value!r} must be a number, got {type(value).__name__}")
    return float(value)


def number_or_none(value: Any) -> str | None:
    """An int, a float or None (an absent bound)."""
    return None if value is None else number(value)


def _same_type(types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    return types[0]


def _unary(name: str, normalize: Any = lambda: {}, schema: AttrSchema = AttrSchema(),
           traits: frozenset[str] = UNARY_TRAITS) -> None:
    register(OpDef(name, ("x",), normalize=normalize, infer=_same_type, attributes=schema, traits=traits))


def _normalize_gelu(approximate: str = "none") -> dict[str, Any]:
    return {"approximate": one_of("gelu", "approximate", approximate, GELU_APPROXIMATIONS)}


def _normalize_leaky_relu(negative_slope: float = 0.01) -> dict[str, Any]:
    return {"negative_slope": as_number("leaky_relu", "negative_slope", negative_slope)}


def _normalize_hardtanh(min_val: float = -1.0, max_val: float = 1.0) -> dict[str, Any]:
    low, high = as_number("hardtanh", "min_val", min_val), as_number("hardtanh", "max_val", max_val)
    if low > high:
        raise ConvcError(f"hardtanh: min_val={low} cannot be greater than max_val={high}")
    return {"min_val": low, "max_val": high}


def _normalize_clamp(min: float | None = None, max: float | None = None) -> dict[str, Any]:
    if min is None and max is None:
        raise ConvcError("clamp: min=None and max=None; at least one of them must be a number")
    return {"min": None if min is None else as_number("clamp", "min", min),
            "max": None if max is None else as_number("clamp", "max", max)}


def _normalize_pow_scalar(exponent: float) -> dict[str, Any]:
    return {"exponent": as_number("pow", "exponent", exponent)}


def _infer_pow(types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    dtype = same_dtype("pow", types, ("x", "exponent"))
    return TensorType(broadcast_shapes("pow", types[0].shape, types[1].shape), dtype)


for _name in MATH_OPS:
    _unary(_name)
for _name in PLAIN_ACTIVATIONS:
    _unary(_name, traits=ACTIVATION_TRAITS)
_unary("gelu", _normalize_gelu, AttrSchema({"approximate": choice(GELU_APPROXIMATIONS)}), ACTIVATION_TRAITS)
_unary("leaky_relu", _normalize_leaky_relu, AttrSchema({"negative_slope": number}), ACTIVATION_TRAITS)
_unary("hardtanh", _normalize_hardtanh, AttrSchema({"min_val": number, "max_val": number}), ACTIVATION_TRAITS)
_unary("clamp", _normalize_clamp, AttrSchema({"min": number_or_none, "max": number_or_none}), ACTIVATION_TRAITS)
_unary("pow_scalar", _normalize_pow_scalar, AttrSchema({"exponent": number}))
register(OpDef("pow", ("x", "exponent"), normalize=lambda: {}, infer=_infer_pow,
               traits=frozenset({"elementwise", "binary", "blocked"})))
