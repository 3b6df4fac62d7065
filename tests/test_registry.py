"""The op registry is coherent (every op has a kernel, a documented set of traits and a rule for
each attribute it names), and a new op needs nothing but its definition and its kernel: a toy op
defined here, registered then removed, is parsed, verified, attribute-checked, traced and run."""
import numpy as np
import pytest

import convc
from convc import ops
from convc.attributes import check_attributes, number
from convc.errors import ConvcError
from convc.registry import REGISTRY, TRAITS, AttrSchema, OpDef, register
from convc.runtime.kernels import EMITTERS
from convc.runtime.kernels.elementwise import SCALAR_OPS, emit_elementwise
from convc.runtime.kernels.registry import kernel


def test_every_op_has_a_kernel_and_every_kernel_an_op():
    assert set(EMITTERS) == set(REGISTRY)
    # graph inputs and constants are values, not ops: they have neither a definition nor a kernel
    assert not {"input", "const"} & (set(REGISTRY) | set(EMITTERS))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_definition_is_coherent(name):
    opdef = REGISTRY[name]
    assert opdef.traits <= set(TRAITS), f"undocumented traits {sorted(opdef.traits - set(TRAITS))}"
    schema = opdef.attributes
    groups = [schema.required, *schema.alternatives, schema.optional]
    assert all(callable(rule) for group in groups for rule in group.values())
    assert sum(len(group) for group in groups) == len(schema.rules()), "an attribute is named in two groups"
    if "has_epilogue" in opdef.traits:
        assert "activation" in schema.optional
    if "activation" in opdef.traits:
        assert name in SCALAR_OPS  # conv epilogues apply it to their accumulators
    if opdef.bias_operand is not None:
        assert opdef.channel_axis is not None and opdef.bias_operand < len(opdef.operand_names)
        assert (opdef.bias_fill is not None) == (opdef.bias_operand > opdef.required_operands)


TOY = OpDef("toy_scale", ("x",), normalize=lambda factor=2.0: {"factor": float(factor)},
            infer=lambda types, attrs: types[0], attributes=AttrSchema({"factor": number}))
TOY_TEXT = "graph @g(%x: f32[5]) {\n  %0 = toy_scale(%x) {factor=3.0} : f32[5]\n  return %0\n}"


def _emit_toy(module, name, node, in_types, values):
    factor = node.attrs["factor"]
    return emit_elementwise(module, name, in_types, node.type, lambda k, v: k.builder.fmul(v[0], k.const(factor, v[0])))


@pytest.fixture
def toy_op():
    register(TOY)
    kernel("toy_scale")(_emit_toy)
    try:
        yield TOY
    finally:
        REGISTRY.pop("toy_scale")
        EMITTERS.pop("toy_scale")


def test_a_new_op_needs_only_its_definition_and_its_kernel(toy_op):
    graph = convc.parse(TOY_TEXT)
    convc.verify(graph)
    assert convc.parse(str(graph)) == graph
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(convc.compile(graph, cache_dir=False)(x), 3 * x)
    traced = convc.trace(lambda a: ops.relu(ops.apply("toy_scale", [a], factor=4.0)), x)
    np.testing.assert_array_equal(convc.compile(traced, cache_dir=False)(x), 4 * x)


@pytest.mark.parametrize("attrs, text, pattern", [
    ({}, "", r"toy_scale: missing attribute\(s\) \['factor'\]"),
    ({"factor": "big"}, '{factor="big"}', r"toy_scale: attribute factor='big' must be a number"),
    ({"factor": 1.0, "speed": 9}, "{factor=1.0, speed=9}", r"toy_scale: unknown attribute speed=9; toy_scale takes factor"),
])
def test_the_toy_op_attributes_follow_its_schema(toy_op, attrs, text, pattern):
    with pytest.raises(ConvcError, match=pattern):
        check_attributes("toy_scale", attrs)
    with pytest.raises(ConvcError, match=pattern):
        convc.parse(TOY_TEXT.replace("{factor=3.0}", text))
