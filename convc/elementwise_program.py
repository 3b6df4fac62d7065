"""Elementwise programs: a connected group of elementwise ops written as one attribute value, so a
single kernel (the `fused_elementwise` op, or a conv's epilogue as its `activation`) computes the
whole group with one read of each input and one write.

A program is a tuple of steps; step j computes value `inputs + j`, the last step is the result.
Each step is `(op, refs, *attribute values)`: `op` an op with the trait `elementwise`, `refs` its
operands, each an int (a value: 0 .. inputs-1 the program's inputs, then the earlier steps) or a
float (a scalar constant), the attribute values in the order of the op's schema (as a fused
activation carries them, convc.fused_activation). In the textual IR:

    program=[["mul",[0,1]],["sin",[2]],["pow_scalar",[3],2.0],["add",[0,4]]]

computes x + sin(x*a)^2 for inputs (x, a).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from .errors import ConvcError
from .registry import get_op, has_trait

Step = tuple  # (op, refs, *attribute values)
Program = tuple  # tuple of steps


def _attribute_names(op: str) -> tuple[str, ...]:
    return tuple(get_op(op).attributes.rules())


def _arity(op: str) -> int:
    return 2 if has_trait(op, "binary") else 1


def fusable_op(op: str) -> bool:
    """Whether `op` may be a step of a program (an elementwise op of one or two operands)."""
    return has_trait(op, "elementwise") and (has_trait(op, "unary") or has_trait(op, "binary"))


def is_program(value: Any) -> bool:
    """A program rather than a single-op activation (a tuple whose items are all tuples)."""
    return isinstance(value, tuple) and bool(value) and all(isinstance(s, tuple) for s in value)


def step(op: str, refs: list[int | float], attrs: Mapping[str, Any]) -> Step:
    """The step applying `op` with attributes `attrs` to `refs`."""
    return (op, tuple(refs), *(attrs[name] for name in _attribute_names(op)))


def program_problem(value: Any, inputs: int | None = None) -> str | None:
    """What is wrong with a program of `inputs` inputs (any number where None), or None."""
    if not is_program(value):
        return "must be a non-empty list of steps [op, [operands], *attribute values]"
    for j, item in enumerate(value):
        if len(item) < 2 or not isinstance(item[0], str) or not isinstance(item[1], tuple):
            return f"has step {j} {item!r}, which must be [op, [operands], *attribute values]"
        op, refs, values = item[0], item[1], item[2:]
        if not fusable_op(op):
            return f"has step {j} with op {op!r}, which is not a unary or binary elementwise op"
        if len(refs) != _arity(op):
            return f"has step {j} ({op}) with {len(refs)} operands; {op} takes {_arity(op)}"
        names = _attribute_names(op)
        if len(values) != len(names):
            return f"has step {j} ({op}) with {len(values)} attribute values; {op} takes {list(names)}"
        rules = get_op(op).attributes.rules()
        for name, attribute in zip(names, values):
            problem = rules[name](attribute)
            if problem:
                return f"has step {j} ({op}) with {name}={attribute!r}, which {problem}"
        for ref in refs:
            if isinstance(ref, bool) or not isinstance(ref, (int, float)):
                return f"has step {j} ({op}) with operand {ref!r}, which must be a value index or a number"
            if isinstance(ref, int) and (ref < 0 or (inputs is not None and ref >= inputs + j)):
                return (f"has step {j} ({op}) with operand {ref}, which must be a value defined before it "
                        f"(0 .. {inputs + j - 1}: {inputs} input(s), then the earlier steps)")
    return None


def check_program(value: Any, inputs: int, where: str) -> Program:
    problem = program_problem(value, inputs)
    if problem:
        raise ConvcError(f"{where}: program={value!r} {problem}")
    return value


def steps(program: Program) -> Iterator[tuple[str, tuple, dict[str, Any]]]:
    """(op, refs, attributes) of each step."""
    for op, refs, *values in program:
        yield op, refs, dict(zip(_attribute_names(op), values))


def unary_program(op: str, attrs: Mapping[str, Any]) -> Program:
    """The one-input program applying `op` (with attributes `attrs`) to its input."""
    return (step(op, [0], attrs),)


def then(program: Program, inputs: int, op: str, refs: list[int | float | None],
         attrs: Mapping[str, Any]) -> Program:
    """`program` (of `inputs` inputs) followed by `op` whose operands are `refs`, None standing
    for the program's result."""
    last = inputs + len(program) - 1
    return program + (step(op, [last if r is None else r for r in refs], attrs),)
