"""The op registry: each op is defined once, as an OpDef, and every layer reads that definition.

Tracing and eager calls use `normalize` (user arguments -> canonical attributes) and `infer`
(operand types + attributes -> result type, raising ConvcError for invalid shapes); the shape
inference pass and the verifier call `infer` again; the printer and parser need only the name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConvcError
from .types import TensorType

Normalize = Callable[..., dict[str, Any]]
Infer = Callable[[list[TensorType], dict[str, Any]], TensorType]


@dataclass(frozen=True)
class OpDef:
    """The single definition of one op."""

    name: str
    operand_names: tuple[str, ...]
    normalize: Normalize
    infer: Infer
    min_operands: int | None = None
    traits: frozenset[str] = field(default_factory=frozenset)

    @property
    def required_operands(self) -> int:
        return len(self.operand_names) if self.min_operands is None else self.min_operands


REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in REGISTRY:
        raise ConvcError(f"op {opdef.name!r} is defined twice")
    REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConvcError(f"unknown op {name!r}; known ops: {', '.join(sorted(REGISTRY))}") from None


def has_trait(op: str, trait: str) -> bool:
    opdef = REGISTRY.get(op)
    return opdef is not None and trait in opdef.traits


def same_dtype(op: str, types: list[TensorType], names: tuple[str, ...]) -> str:
    """The common dtype of an op's operands; TypeError when they differ."""
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        listed = ", ".join(f"{n}={t.dtype}" for n, t in zip(names, types))
        raise TypeError(f"{op}: operands must share one dtype, got {listed}")
    return types[0].dtype
