"""Elementwise fusion and common-subexpression elimination.

Random DAGs of elementwise ops (shared values, broadcast operands, scalar constants, several
outputs), on plain tensors and between blocked convs, at both vector widths and both dtypes,
compiled with every fusion agree with a NumPy evaluation, and the compiled graph has no pair left
that the fusion rule says to fuse. Hand cases show what the IR looks like."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

import convc
import reference as ref
from convc import ops
from convc.elementwise_program import fusable_op
from convc.registry import has_trait
from reference import assert_close
from widths import WIDTHS, narrowed

UNARY = {
    "relu": (ops.relu, ref.relu), "sigmoid": (ops.sigmoid, ref.sigmoid), "tanh": (ops.tanh, ref.tanh),
    "sin": (ops.sin, np.sin), "abs": (ops.abs, np.abs), "neg": (ops.neg, np.negative),
    "leaky_relu": (lambda x: ops.leaky_relu(x, 0.2), lambda x: ref.leaky_relu(x, 0.2)),
    "gelu": (lambda x: ops.gelu(x, "tanh"), lambda x: ref.gelu(x, "tanh")),
    "square": (lambda x: ops.pow(x, 2.0), np.square),
    "half": (lambda x: ops.mul(x, 0.5), lambda x: x * 0.5),
    "one_minus": (lambda x: ops.sub(1.0, x), lambda x: 1.0 - x),
}
BINARY = {
    "add": (ops.add, np.add), "sub": (ops.sub, np.subtract), "mul": (ops.mul, np.multiply),
    "maximum": (ops.maximum, np.maximum), "minimum": (ops.minimum, np.minimum),
}


def unfused_pairs(graph: convc.Graph) -> list[tuple[str, str]]:
    """(producer, user) pairs the fusion rule fuses that are still apart in a compiled graph: an
    elementwise op of its user's type used only there, or an op with an epilogue whose only user
    is an elementwise op on it and scalar constants."""
    pairs = []
    for node in graph.op_nodes():
        if not (fusable_op(node.op) or node.op == "fused_elementwise"):
            continue
        for operand in node.operands:
            producer = graph.node(operand)
            alone = [u.name for u in graph.users(operand)] == [node.name] and operand not in graph.outputs
            if not alone or producer.type != node.type:
                continue
            others = [graph.node(o) for o in node.operands if o != operand]
            scalars = all(o.op == "const" and o.type.size == 1 for o in others)
            if fusable_op(producer.op) or (has_trait(producer.op, "has_epilogue") and scalars and fusable_op(node.op)):
                pairs.append((operand, node.name))
    return pairs


@st.composite
def elementwise_dags(draw, broadcast: bool = True):
    """(shapes of the inputs, steps, output indices): each step (op, operand indices) reads any
    earlier value, so values are shared; with `broadcast`, inputs broadcast against (2, C, L) on
    some axes."""
    channels = draw(st.sampled_from([3, 8, 16, 20]))
    full = (2, channels, draw(st.integers(1, 23)))
    shapes = [full] + [tuple(draw(st.sampled_from([1, n])) if broadcast else n for n in full)
                       for _ in range(draw(st.integers(0, 2)))]
    steps = []
    for _ in range(draw(st.integers(1, 8))):
        values = len(shapes) + len(steps)
        if draw(st.booleans()):
            steps.append((draw(st.sampled_from(sorted(UNARY))), (draw(st.integers(0, values - 1)),)))
        else:
            steps.append((draw(st.sampled_from(sorted(BINARY))),
                          (draw(st.integers(0, values - 1)), draw(st.integers(0, values - 1)))))
    last = len(shapes) + len(steps) - 1
    extra = draw(st.lists(st.integers(0, last), max_size=2))
    return shapes, steps, [last] + extra


def evaluate(values: list, steps: list, unary_index: int, binary_index: int) -> list:
    values = list(values)
    for op, refs in steps:
        table = UNARY if op in UNARY else BINARY
        values.append(table[op][unary_index if op in UNARY else binary_index](*(values[r] for r in refs)))
    return values


def run_case(case, dtype, blocked: bool, seed: int):
    shapes, steps, outputs = case
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1.5, 1.5, s).astype(dtype) for s in shapes]
    channels = shapes[0][1]
    mix = np.eye(channels, dtype=dtype).reshape(channels, channels, 1) + \
        rng.uniform(-0.1, 0.1, (channels, channels, 1)).astype(dtype)

    def model(*xs):
        xs = list(xs)
        if blocked:  # convs around the group: it computes on the channel-blocked layout
            xs[0] = ops.conv1d(xs[0], mix)
        values = evaluate(xs, steps, 0, 0)
        result = [values[i] for i in outputs]
        if blocked:
            result[0] = ops.conv1d(result[0] if result[0].shape == shapes[0] else ops.add(result[0], xs[0]), mix)
        return tuple(result)

    reference = [a.astype(np.float64) for a in arrays]
    if blocked:
        reference[0] = ref.conv_nd(reference[0], mix.astype(np.float64))
    values = evaluate(reference, steps, 1, 1)
    expected = [values[i] for i in outputs]
    if blocked:
        first = expected[0] if expected[0].shape == shapes[0] else expected[0] + reference[0]
        expected[0] = ref.conv_nd(first, mix.astype(np.float64))
    compiled = convc.compile(model, *arrays, cache_dir=False)
    note(str(compiled.graph))
    assert unfused_pairs(compiled.graph) == []
    actual = compiled(*arrays)
    for got, want in zip(actual, expected):
        assert_close(got, np.broadcast_to(want, got.shape).astype(dtype), terms=4 * channels * len(steps) + 16)


@pytest.mark.parametrize("bits", WIDTHS)
@settings(max_examples=25, deadline=None)
@given(elementwise_dags(), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**31))
def test_random_elementwise_dags_fuse_and_match_numpy(bits, case, dtype, seed):
    with narrowed(bits):
        run_case(case, dtype, False, seed)


@pytest.mark.parametrize("bits", WIDTHS)
@settings(max_examples=25, deadline=None)
@given(elementwise_dags(broadcast=False), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**31))
def test_random_elementwise_dags_between_blocked_convs_fuse_and_match_numpy(bits, case, dtype, seed):
    with narrowed(bits):
        run_case(case, dtype, True, seed)


def test_a_snake_activation_is_one_kernel():
    """x + sin(a*x)^2 / a with a per-channel alpha: five ops, one loop reading x and alpha."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 50)).astype(np.float32)
    alpha = rng.uniform(0.5, 1.5, (1, 4, 1)).astype(np.float32)
    compiled = convc.compile(lambda t: ops.add(t, ops.div(ops.pow(ops.sin(ops.mul(t, alpha)), 2.0), alpha)), x,
                             cache_dir=False)
    (node,) = compiled.graph.op_nodes()
    assert node.op == "fused_elementwise"
    assert node.attrs["program"] == (("mul", (0, 1)), ("sin", (2,)), ("pow_scalar", (3,), 2.0), ("div", (4, 1)),
                                     ("add", (0, 5)))
    assert convc.parse(str(compiled.graph), {c.name: c.value for c in compiled.graph.consts()}) == compiled.graph
    x64, a64 = x.astype(np.float64), alpha.astype(np.float64)
    assert_close(compiled(x), (x64 + np.sin(a64 * x64) ** 2 / a64).astype(np.float32), 8)


def test_a_chain_with_scalars_after_a_conv_goes_into_its_epilogue():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 3, 9, 9)).astype(np.float64)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float64)
    # (a scale straight after the conv would fold into its weights instead: fold_scale)
    compiled = convc.compile(lambda t: ops.add(ops.mul(ops.leaky_relu(ops.conv2d(t, w), 0.1), 0.5), 1.0), x,
                             cache_dir=False)
    (conv,) = compiled.graph.op_nodes()
    assert conv.attrs["activation"] == (("leaky_relu", (0,), 0.1), ("mul", (1, 0.5)), ("add", (2, 1.0)))
    assert_close(compiled(x), ref.leaky_relu(ref.conv_nd(x, w), 0.1) * 0.5 + 1.0, 27)


def test_a_broadcast_operand_and_a_shared_value_bound_a_group():
    """sigmoid(s) on a per-channel s would be recomputed for every element: it stays a kernel of
    its own; a value that is also an output ends the group below it."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 7)).astype(np.float32)
    s = rng.standard_normal((2, 6, 1)).astype(np.float32)

    def model(x, s):
        shared = ops.tanh(ops.neg(x))
        return ops.mul(ops.relu(shared), ops.sigmoid(s)), shared

    compiled = convc.compile(model, x, s, cache_dir=False)
    ops_left = sorted(n.op for n in compiled.graph.op_nodes())
    assert ops_left == ["fused_elementwise", "fused_elementwise", "sigmoid"]
    shared = np.tanh(-x.astype(np.float64))
    expected = (np.maximum(shared, 0) * ref.sigmoid(s.astype(np.float64)), shared)
    for got, want in zip(compiled(x, s), expected):
        assert_close(got, want.astype(np.float32), 4)


def test_repeated_subexpressions_run_once():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 8, 30)).astype(np.float32)
    w = [rng.standard_normal((8, 8, 3)).astype(np.float32) for _ in range(3)]

    def model(t):  # three branches that each start with leaky_relu(t), as HiFi-GAN's resblocks do
        return ops.add(ops.add(*(ops.conv1d(ops.leaky_relu(t, 0.1), w[i], padding=1) for i in range(2))),
                       ops.conv1d(ops.leaky_relu(t, 0.1), w[2], padding=1))

    graph = convc.trace(model, x)
    assert sum(n.op == "leaky_relu" for n in graph.op_nodes()) == 3
    compiled = convc.compile(graph, cache_dir=False)
    assert sum(n.op == "leaky_relu" for n in compiled.graph.op_nodes()) == 1
    activated = ref.leaky_relu(x.astype(np.float64), 0.1)
    expected = sum(ref.conv_nd(activated, wi.astype(np.float64), padding=1) for wi in w)
    assert_close(compiled(x), expected.astype(np.float32), 3 * 8 * 3)


def test_a_fused_group_parses_back_and_rejects_bad_programs():
    text = ('graph @g(%x: f32[2,3], %y: f32[3]) {\n'
            '  %0 = fused_elementwise(%x, %y) {program=[["mul",[0,1]],["leaky_relu",[2],0.5],["add",[3,1.0]]]} '
            ': f32[2,3]\n  return %0\n}\n')
    graph = convc.parse(text)
    assert convc.parse(str(graph)) == graph
    x, y = np.array([[1.0, -2.0, 3.0], [-1.0, 0.5, 2.0]], np.float32), np.array([2.0, 1.0, -1.0], np.float32)
    product = x * y
    assert_close(convc.compile(graph, cache_dir=False)(x, y), np.where(product < 0, 0.5 * product, product) + 1.0)
    with pytest.raises(convc.ConvcError, match=r"operand 3, which must be a value defined before it \(0 \.\. 1"):
        convc.parse(text.replace('"mul",[0,1]', '"mul",[0,3]'))
    with pytest.raises(convc.ConvcError, match="not a unary or binary elementwise op"):
        convc.parse(text.replace('"leaky_relu",[2],0.5', '"conv1d",[2]'))


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("channels", [4, 32])
def test_activations_after_a_normalization_go_into_its_kernel(bits, channels):
    """conv -> group_norm -> gelu (wav2vec2's first layer), layer_norm -> silu * 2, and a
    batch_norm on a graph input (nothing to fold it into) -> relu: each norm applies the rest."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, channels, 40)).astype(np.float32)
    w = rng.standard_normal((channels, channels, 3)).astype(np.float32) / channels
    gamma, beta = rng.uniform(0.5, 1.5, channels).astype(np.float32), rng.standard_normal(channels).astype(np.float32)
    mean, var = rng.standard_normal(channels).astype(np.float32), rng.uniform(0.5, 2, channels).astype(np.float32)

    def model(t):
        a = ops.gelu(ops.group_norm(ops.conv1d(t, w), channels // 2, gamma, beta))
        b = ops.mul(ops.silu(ops.layer_norm(t, (40,))), 2.0)
        c = ops.relu(ops.batch_norm(t, mean, var, gamma, beta))
        return a, b, c

    with narrowed(bits):
        compiled = convc.compile(model, x, cache_dir=False)
        norms = {n.op: n.attrs.get("activation") for n in compiled.graph.op_nodes() if "norm" in n.op}
        assert norms == {"group_norm": ("gelu", "none"), "layer_norm": (("silu", (0,)), ("mul", (1, 2.0))),
                         "batch_norm": "relu"}
        got = compiled(x)
    x64 = x.astype(np.float64)
    expected = (ref.gelu(ref.group_norm(ref.conv_nd(x64, w.astype(np.float64)), channels // 2, gamma, beta)),
                ref.silu(ref.layer_norm(x64, (40,))) * 2.0, ref.relu(ref.batch_norm(x64, mean, var, gamma, beta)))
    for actual, want in zip(got, expected):
        assert_close(actual, want.astype(np.float32), 3 * channels * 40)


def test_a_fused_node_never_takes_the_name_of_a_removed_one():
    """Dead-code elimination frees names (%1, %3, %5 here); the fused nodes made later must not take
    them, or a later root of the pass would be a stale node of that name."""
    steps = [("add", (0, 0)), ("abs", (0,)), ("abs", (1,)), ("add", (0, 0)), ("maximum", (0, 0)), ("abs", (0,)),
             ("add", (0, 5)), ("add", (0, 3))]
    x = np.random.default_rng(0).uniform(-1.5, 1.5, (2, 3, 1)).astype(np.float32)
    compiled = convc.compile(lambda x: tuple(evaluate([x], steps, 0, 0)[i] for i in (8, 7)), x, cache_dir=False)
    expected = evaluate([x.astype(np.float64)], steps, 1, 1)
    for got, want in zip(compiled(x), (expected[8], expected[7])):
        assert_close(got, want.astype(np.float32), terms=8)
