"""A fused activation as the `activation` attribute of an op with an epilogue (and a separable
conv's `depthwise_activation`) holds it: the name of an op with the trait `activation` where that
op has no attributes ("relu", "silu"), else a list of the name and the op's attribute values in
the order of its schema (["leaky_relu",0.1], ["hardtanh",-1.0,1.0], ["gelu","tanh"],
["clamp",0.0,none]), or an elementwise program of one input (convc.elementwise_program) where a
chain of elementwise ops fused (["leaky_relu",0.1] then a multiply by 0.5:
[["leaky_relu",[0],0.1],["mul",[1,0.5]]]). The attribute alone says what to compute, so a pass
that moves it carries the parameters along, and every kernel with an epilogue applies it through
one function (runtime.kernels.elementwise.activate).
"""
from __future__ import annotations

from typing import Any, Mapping

from .elementwise_program import Program, is_program, program_problem, unary_program
from .errors import ConvcError
from .registry import get_op, has_trait, ops_with_trait

Activation = str | tuple  # an op name, (name, *attribute values), or a program of one input


def _attribute_names(op: str) -> tuple[str, ...]:
    return tuple(get_op(op).attributes.rules())


def activation_spec(op: str, attrs: Mapping[str, Any]) -> Activation:
    """The attribute value that fuses the activation node `op` with attributes `attrs`."""
    names = _attribute_names(op)
    return (op, *(attrs[name] for name in names)) if names else op


def activation_problem(value: Any) -> str | None:
    """What is wrong with an activation attribute's value, or None."""
    if is_program(value):
        return program_problem(value, 1)
    known = ops_with_trait("activation")
    form = (f"must be the name of an activation op ({', '.join(known)}), a list [name, *its attribute values] "
            f"or a program of one input")
    name = value[0] if isinstance(value, tuple) and value else value
    if not isinstance(name, str) or not has_trait(name, "activation"):
        return form
    names = _attribute_names(name)
    values = value[1:] if isinstance(value, tuple) else ()
    if len(values) != len(names):
        listed = f"[{name!r}, {', '.join(names)}]" if names else repr(name)
        return f"{form}; {name} is written {listed}"
    rules = get_op(name).attributes.rules()
    for attribute, item in zip(names, values):
        problem = rules[attribute](item)
        if problem:
            return f"has {name}'s {attribute}={item!r}, which {problem}"
    return None


def activation_program(value: Activation) -> Program:
    """The program of one input an activation attribute computes; ConvcError where it is malformed."""
    problem = activation_problem(value)
    if problem:
        raise ConvcError(f"activation={value!r} {problem}")
    if is_program(value):
        return value
    if isinstance(value, str):
        return unary_program(value, {})
    return unary_program(value[0], dict(zip(_attribute_names(value[0]), value[1:])))
