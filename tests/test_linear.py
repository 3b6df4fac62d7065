"""linear and nn.Linear against the NumPy reference: any leading axes, feature counts that are not
multiples of the vector width, empty axes, biases of one value per feature or a single value,
fused activations and folded biases, constant weights (packed at compile time) and weights that
are inputs (packed by the prologue), on the host's vector width and forced to 256 bits; torch's
extra forms (a 1-D weight, a bias per input row) and its errors; torch cross-checks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convc
from convc import ConvcError, nn, ops
from widths import WIDTHS, narrowed
from reference import UNARY, assert_close, linear
from asm import assert_clean_hot_loop, x86_only

dtypes = st.sampled_from([np.float32, np.float64])


@st.composite
def linear_cases(draw):
    dtype = draw(dtypes)
    lead = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
    inputs, features = draw(st.integers(0, 40)), draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal(lead + (inputs,)).astype(dtype)
    w = rng.standard_normal((features, inputs)).astype(dtype)
    bias_shape = draw(st.sampled_from([None, (features,), (1,), ()] + ([(1, features)] if lead else [])))
    bias = None if bias_shape is None else rng.standard_normal(bias_shape).astype(dtype)
    return x, w, bias


@given(linear_cases())
def test_eager_linear_matches_reference(case):
    x, w, bias = case
    assert_close(ops.linear(x, w, bias), linear(x, w, bias), x.shape[-1] + 1)


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
@settings(max_examples=15)
@given(case=linear_cases(), activation=st.sampled_from([None, "relu", "relu6", "sigmoid", "tanh"]),
       constant=st.booleans())
def test_compiled_linear_with_its_epilogue_matches_reference(vector_bits, case, activation, constant):
    x, w, bias = case
    act = getattr(ops, activation) if activation else (lambda y: y)
    expected = linear(x, w, bias)
    expected = UNARY[activation](expected) if activation else expected
    with narrowed(vector_bits):
        if constant:  # weights packed at compile time
            compiled = convc.compile(lambda a: act(ops.linear(a, w, bias)), x)
            out = compiled(x)
        else:  # weights as inputs: packed by the generated prologue on every call
            args = (x, w) if bias is None else (x, w, bias)
            compiled = convc.compile(lambda a, b, *c: act(ops.linear(a, b, *c)), *args)
            out = compiled(*args)
    node = compiled.graph.op_nodes()[-1]
    if activation and x.size and w.size:
        assert node.op == "linear" and node.attrs["activation"] == activation
    assert_close(out, expected, x.shape[-1] + 1)


@pytest.mark.parametrize("rows, inputs, features", [(37, 130, 70), (1, 300, 33), (64, 9, 16), (13, 1, 100)])
def test_tail_tiles_and_partial_feature_blocks(rows, inputs, features):
    rng = np.random.default_rng(rows)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((rows, inputs)).astype(dtype)
        w = rng.standard_normal((features, inputs)).astype(dtype)
        bias = rng.standard_normal(features).astype(dtype)
        assert_close(convc.compile(lambda a: ops.linear(a, w, bias), x)(x), linear(x, w, bias), inputs + 1)
        assert_close(ops.linear(x, w, bias), linear(x, w, bias), inputs + 1)


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
@x86_only
def test_the_gemm_hot_loop_has_no_stack_spills(vector_bits):
    x = np.zeros((64, 256), np.float32)
    w = np.random.default_rng(4).standard_normal((128, 256)).astype(np.float32)
    with narrowed(vector_bits):
        compiled = convc.compile(lambda a: ops.linear(a, w), x)
    assert_clean_hot_loop(compiled.asm, "linear", vector_bits, 24 if vector_bits == 128 else 32)


def test_linear_by_hand():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [0.0, -1.0]], np.float32)
    w = np.array([[1.0, 0.0], [1.0, 1.0], [0.5, -2.0]], np.float32)
    np.testing.assert_array_equal(ops.linear(x, w, np.array([0.0, 10.0, 1.0], np.float32)),
                                  [[1, 13, -2.5], [3, 17, -5.5], [0, 9, 3]])
    np.testing.assert_array_equal(ops.linear(x, w), [[1, 3, -3.5], [3, 7, -6.5], [0, -1, 2]])
    # no input features: the bias alone
    np.testing.assert_array_equal(ops.linear(np.zeros((2, 0)), np.zeros((3, 0)), np.arange(3.0)), [[0, 1, 2]] * 2)


def test_a_constant_add_after_linear_folds_into_its_bias():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal((5, 6)).astype(np.float32)
    shift = rng.standard_normal(5).astype(np.float32)
    compiled = convc.compile(lambda a: ops.relu(ops.add(ops.linear(a, w), shift)), x)
    assert [n.op for n in compiled.graph.op_nodes()] == ["linear"]
    assert compiled.graph.op_nodes()[0].attrs == {"activation": "relu"}
    assert_close(compiled(x), np.maximum(linear(x, w, shift), 0), 7)


def test_torch_extra_forms():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((6, 4)), rng.standard_normal((5, 4))
    vector = rng.standard_normal(4)
    # a 1-D weight: the dot product over the last axis
    assert_close(ops.linear(x.reshape(2, 3, 4), vector), x.reshape(2, 3, 4) @ vector, 4)
    assert_close(np.asarray(ops.linear(vector, vector)), np.asarray(vector @ vector), 4)
    # a 2-D input takes a bias per row, (rows, 1) or (rows, features)
    per_row = rng.standard_normal((6, 1))
    assert_close(ops.linear(x, w, per_row), linear(x, w) + per_row, 5)
    full = rng.standard_normal((6, 5))
    assert_close(ops.linear(x, w, full), linear(x, w) + full, 5)
    traced = convc.compile(lambda a: ops.linear(a, w, full), x)
    assert_close(traced(x), linear(x, w) + full, 5)


@pytest.mark.parametrize("x_shape, w_shape, b_shape, error, pattern", [
    ((2, 3), (4, 2), None, ConvcError, r"input of shape \(2, 3\) and weight of shape \(4, 2\) cannot be multiplied"),
    ((), (4, 1), None, ConvcError, "must be at least 1-D"),
    ((2, 3), (2, 4, 3), None, ConvcError, r"weight must be 2-D \(out_features, in_features\)"),
    ((2, 3), (4, 3), (3,), ConvcError, r"bias of shape \(3,\) must broadcast to \(4,\)"),
    ((2, 3), (4, 3), (3, 1, 4), ConvcError, r"bias of shape \(3, 1, 4\)"),
    ((5, 2, 3), (4, 3), (2, 1), ConvcError, r"bias of shape \(2, 1\)"),
    ((2, 3), (3,), (), ConvcError, "a 1-D weight .* takes no bias"),
    ((5, 2, 3), (4, 3), (10, 4), ConvcError, r"bias of shape \(10, 4\)"),
])
def test_linear_rejections(x_shape, w_shape, b_shape, error, pattern):
    bias = None if b_shape is None else np.zeros(b_shape, np.float32)
    with pytest.raises(error, match=pattern):
        ops.linear(np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32), bias)


def test_linear_type_errors():
    with pytest.raises(TypeError, match="share one dtype"):
        ops.linear(np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float64))
    with pytest.raises(TypeError, match="int64"):
        ops.linear(np.zeros((2, 3), np.int64), np.zeros((4, 3), np.float32))


def test_linear_module_initialises_as_torch():
    nn.manual_seed(0)
    m = nn.Linear(50, 30)
    bound = 1 / np.sqrt(50)
    assert m.weight.shape == (30, 50) and m.bias.shape == (30,) and m.weight.dtype == np.float32
    assert np.abs(m.weight).max() <= bound and np.abs(m.bias).max() <= bound
    assert np.abs(m.weight).max() > 0.9 * bound  # spread over the whole range
    nn.manual_seed(0)
    np.testing.assert_array_equal(nn.Linear(50, 30).weight, m.weight)
    assert nn.Linear(3, 2, bias=False).bias is None
    empty = nn.Linear(0, 2, dtype=np.float64)
    np.testing.assert_array_equal(empty.bias, [0.0, 0.0])
    assert repr(m) == "Linear(in_features=50, out_features=30, bias=True)"
    x = np.random.default_rng(2).standard_normal((3, 7, 50)).astype(np.float32)
    assert_close(m(x), linear(x, m.weight, m.bias), 51)
    assert_close(convc.compile(m, x)(x), linear(x, m.weight, m.bias), 51)
    with pytest.raises(ConvcError, match="must not be negative"):
        nn.Linear(-1, 3)
    with pytest.raises(TypeError, match="in_features"):
        nn.Linear(2.5, 3)


@settings(max_examples=20)
@given(linear_cases())
def test_linear_matches_torch(case):
    torch = pytest.importorskip("torch")
    x, w, bias = case
    expected = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w),
                                          None if bias is None else torch.from_numpy(bias)).numpy()
    assert_close(ops.linear(x, w, bias), expected, x.shape[-1] + 1)


@pytest.mark.parametrize("x_shape, w_shape, b_shape", [
    ((3,), (4, 3), (1, 4)), ((2, 3), (4, 3), (2, 1)), ((2, 3), (4, 3), (2, 4)), ((5, 2, 3), (4, 3), (10, 4)),
    ((5, 2, 3), (4, 3), (2, 1)), ((5, 2, 3), (4, 3), (1, 4)), ((2, 3), (4, 3), (3, 4)), ((2, 3), (4, 3), (4, 1)), ((2, 3), (1, 3), None), ((3,), (3,), None),
    ((2, 3), (3,), (1,)), ((), (3,), None), ((5, 0), (4, 0), (4,)), ((0, 3), (4, 3), (4,)), ((2, 3), (0, 3), None),
])
def test_linear_accepts_and_rejects_what_torch_does(x_shape, w_shape, b_shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    bias = None if b_shape is None else rng.standard_normal(b_shape)
    try:
        expected = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w),
                                              None if bias is None else torch.from_numpy(bias)).numpy()
    except RuntimeError:
        with pytest.raises(ConvcError):
            ops.linear(x, w, bias)
        return
    assert_close(np.asarray(ops.linear(x, w, bias)), expected, 4)
