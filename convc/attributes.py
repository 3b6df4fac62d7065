"""Validation of a node's attributes as they stand in the IR (traced or canonical form).

User arguments are validated by each op's `normalize`; attributes that arrive another way (parsed
IR text, a pass) are checked here against the op's schema (OpDef.attributes), before any shape
rule reads them, so that no malformed attribute can reach a kernel. The rule constructors below
are what op definitions build their schemas from.
"""
from __future__ import annotations

from typing import Any

from .args import is_int
from .errors import ConvcError
from .fused_activation import activation_problem
from .registry import Rule, get_op


def ints(minimum: int | None = None, length: int | None = None) -> Rule:
    """A list of ints, of `length` elements where given, each >= `minimum` where given."""
    def check(value: Any) -> str | None:
        if not isinstance(value, tuple) or not all(is_int(v) for v in value):
            return "must be a list of ints"
        if length is not None and len(value) != length:
            return f"must have {length} elements"
        if minimum is not None and any(v < minimum for v in value):
            return "must be positive" if minimum == 1 else f"must be >= {minimum}"
        return None
    return check


def integer(minimum: int) -> Rule:
    """One int >= `minimum`."""
    return lambda value: None if is_int(value) and value >= minimum else f"must be an int >= {minimum}"


def choice(choices: tuple) -> Rule:
    """One of `choices`."""
    return lambda value: None if value in choices else f"must be one of {list(choices)}"


def number(value: Any) -> str | None:
    """An int or a float (not a bool)."""
    return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "must be a number"


def boolean(value: Any) -> str | None:
    """True or False."""
    return None if isinstance(value, bool) else "must be a bool"


def activation(value: Any) -> str | None:
    """A fused activation: the name of an op with the trait `activation` (read when checked, so new
    ones count), or the name and the op's attribute values (convc.fused_activation)."""
    return activation_problem(value)


EPILOGUE: dict[str, Rule] = {"activation": activation}  # optional on every op with the trait has_epilogue


def check_attributes(op: str, attrs: dict[str, Any]) -> None:
    """ConvcError unless `attrs` has the attributes `op` needs, each well-formed, and no others."""
    schema = get_op(op).attributes
    present = set(attrs)
    missing = set(schema.required) - present
    if missing:
        raise ConvcError(f"{op}: missing attribute(s) {sorted(missing)}")
    chosen = next((group for group in schema.alternatives if set(group) <= present), None)
    if chosen is None:
        raise ConvcError(f"{op}: needs the attributes {' or '.join(str(sorted(c)) for c in schema.alternatives)}")
    allowed = {**schema.required, **chosen, **schema.optional}
    for name, value in attrs.items():
        rule = allowed.get(name)
        if rule is None:
            raise ConvcError(f"{op}: unknown attribute {name}={value!r}; {op} takes "
                             f"{', '.join(sorted(allowed)) or 'no attributes'}")
        problem = rule(value)
        if problem:
            raise ConvcError(f"{op}: attribute {name}={value!r} {problem}")
