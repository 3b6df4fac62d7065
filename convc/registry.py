"""The op registry: each op is defined once, as an OpDef, and every layer reads that definition.

An OpDef declares everything the compiler knows about an op:
- its operands (`operand_names`, the trailing ones optional past `min_operands`; with `variadic`,
  the last name stands for any number of operands);
- `normalize` (user arguments -> canonical attributes), used by tracing and eager calls;
- its attribute schema (`attributes`: required ones, alternative sets such as `padding` vs
  `pad_lo`/`pad_hi`, optional ones, each with its rule), checked by convc.attributes whenever a
  node arrives another way (parsed text, a pass);
- `infer`, its shape rule (operand types + attributes -> result type, ConvcError when invalid),
  run by tracing, shape inference, the parser and the verifier;
- its traits (TRAITS below) and the few facts passes and the runtime need (channel axis, bias
  operand, canonical attributes, arithmetic), so that they ask the definition, never the name.
Its kernel is registered on the runtime side (convc.runtime.kernels.registry), by the kernel module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .errors import ConvcError
from .types import TensorType

Normalize = Callable[..., dict[str, Any]]
Infer = Callable[[list[TensorType], dict[str, Any]], TensorType]
Rule = Callable[[Any], "str | None"]  # what is wrong with an attribute's value, or None (convc.attributes)
Attrs = dict[str, Any]

TRAITS: dict[str, str] = {
    "elementwise": "each result element comes from the operand elements at its (broadcast) index",
    "binary": "elementwise over two operands (a, b) with NumPy broadcasting",
    "unary": "elementwise over one operand",
    "activation": "unary, and usable as the fused `activation` of an op with an epilogue",
    "broadcast": "broadcast_to: its consumers may read its source with stride 0 instead",
    "conv": "a forward convolution: input, weight[, bias[, residual]], channels first",
    "conv_transpose": "a transposed convolution: input, weight[, bias], channels first",
    "separable": "a depthwise conv followed by a pointwise one, in one kernel",
    "has_epilogue": "its kernel applies a fused activation (the optional attribute `activation`)",
    "blocked": "it has a kernel for channel-blocked tensors",
    "channelwise": "each result channel comes from the same channel (or group of channels) of its first "
                   "operand (its only operand that carries a layout; any others are plain per-channel "
                   "parameters): with the trait blocked, it computes blocked wherever that operand is blocked",
    "reorder": "a change of memory layout only (plain <-> channel-blocked)",
    "pad": "pads or crops its input",
    "pool": "a pooling op",
    "patches": "copies sliding windows of its input",
}


@dataclass(frozen=True)
class AttrSchema:
    """The attributes of an op's nodes: every one of `required`, every one of the first set of
    `alternatives` that is complete (and none of the others), any of `optional`; each name maps to
    the rule its value must pass."""

    required: Mapping[str, Rule] = field(default_factory=dict)
    alternatives: tuple[Mapping[str, Rule], ...] = ({},)
    optional: Mapping[str, Rule] = field(default_factory=dict)

    def rules(self) -> dict[str, Rule]:
        """Every attribute name the schema mentions, with its rule."""
        return {name: rule for group in (self.required, *self.alternatives, self.optional)
                for name, rule in group.items()}


@dataclass(frozen=True)
class OpDef:
    """The single definition of one op (see the module docstring for who reads which field)."""

    name: str
    operand_names: tuple[str, ...]
    normalize: Normalize
    infer: Infer
    min_operands: int | None = None
    attributes: AttrSchema = AttrSchema()
    traits: frozenset[str] = field(default_factory=frozenset)
    # the result's channel axis, from the attributes and the result's rank
    channel_axis: Callable[[Attrs, int], int] | None = None
    # the operand that adds a per-channel bias along channel_axis (bias folding targets it)
    bias_operand: int | None = None
    # lengths of the zero vectors an op with only its required operands needs before a bias
    bias_fill: Callable[[list[TensorType]], list[int]] | None = None
    # traced attributes -> canonical ones (explicit per-side pads); canonical ones unchanged
    canonicalize: Callable[[Attrs, list[TensorType]], Attrs] | None = None
    # arithmetic of one node (operand types, result type), for the choice to run it on threads;
    # None: 4 per result element
    flops: Callable[[list[TensorType], TensorType], int] | None = None
    # the last operand name stands for one or more operands (cat's `tensors`)
    variadic: bool = False
    # a layout op whose result may share its first operand's memory: the element offset in the
    # operand (plain) of the result's first element, the result being the operand's elements from
    # there on in order, or None where this node needs its kernel; the memory plan
    # (convc.runtime.memory) makes such nodes views, which cost no kernel and no copy
    view: Callable[[Attrs, list[TensorType], TensorType], int | None] | None = None

    @property
    def required_operands(self) -> int:
        return len(self.operand_names) if self.min_operands is None else self.min_operands

    @property
    def max_operands(self) -> int | None:
        return None if self.variadic else len(self.operand_names)

    def operand_labels(self, count: int) -> tuple[str, ...]:
        """The names of `count` operands, for messages; a variadic op's last name is indexed
        (`tensors[0]`, `tensors[1]`, ...)."""
        if not self.variadic:
            return self.operand_names[:count]
        fixed = self.operand_names[:-1]
        return fixed + tuple(f"{self.operand_names[-1]}[{i}]" for i in range(count - len(fixed)))


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


def ops_with_trait(trait: str) -> list[str]:
    """The registered ops that have `trait`, in registration order."""
    return [name for name, opdef in REGISTRY.items() if trait in opdef.traits]


def same_dtype(op: str, types: list[TensorType], names: tuple[str, ...]) -> str:
    """The common dtype of an op's operands; TypeError when they differ."""
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        listed = ", ".join(f"{n}={t.dtype}" for n, t in zip(names, types))
        raise TypeError(f"{op}: operands must share one dtype, got {listed}")
    return types[0].dtype
