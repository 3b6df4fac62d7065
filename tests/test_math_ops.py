"""Elementwise math ops (exp, sin, cos, sqrt, rsqrt, reciprocal, neg, abs, pow) against the
NumPy reference and torch: shapes and dtypes, special values, exp's accuracy over its whole range
(subnormal results and overflow included), pow's special exponents and broadcasting, errors, and
the ops in traced graphs (IR, blocked layout between convs)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import convc
from convc import ConvcError, ops
from reference import MATH, assert_close, conv_nd, power
from widths import WIDTHS, narrowed

dtypes = st.sampled_from([np.float32, np.float64])
RANGES = {"exp": (-100, 100), "sin": (-100, 100), "cos": (-100, 100), "sqrt": (0, 1e6), "rsqrt": (1e-6, 1e6),
          "reciprocal": (-1e6, 1e6), "neg": (-1e6, 1e6), "abs": (-1e6, 1e6)}
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 1e-40, -1e-40, 1e30, -1e30, 88.5, -103.0]


def ulp_error(actual, exact):
    """|actual - exact| in units of the last place of `exact` rounded to actual's dtype."""
    dtype = actual.dtype
    spacing = np.spacing(np.abs(exact.astype(dtype))).astype(np.float64)
    return np.abs(actual.astype(np.float64) - exact) / np.maximum(spacing, np.finfo(dtype).smallest_subnormal)


@given(st.sampled_from(sorted(MATH)), hnp.array_shapes(min_dims=0, max_dims=4, max_side=6), dtypes,
       st.integers(0, 2**32 - 1))
def test_math_ops_match_reference(op, shape, dtype, seed):
    low, high = RANGES[op]
    x = np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)
    actual = np.asarray(getattr(ops, op)(x))
    assert actual.shape == x.shape
    assert_close(actual, MATH[op](x), terms=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", sorted(MATH))
def test_special_values_as_torch(op, dtype):
    """NaN, infinities, signed zeros, subnormals; torch's values (sign of zero included)."""
    torch = pytest.importorskip("torch")
    with np.errstate(over="ignore"):
        x = np.array(SPECIAL * 2, dtype)  # long enough for torch's vector path
    expected = getattr(torch, op)(torch.from_numpy(x)).numpy()
    actual = getattr(ops, op)(x)
    np.testing.assert_allclose(actual, expected, rtol=4 * np.finfo(dtype).eps, atol=0)
    numbers = ~np.isnan(expected)
    assert np.array_equal(np.signbit(actual[numbers]), np.signbit(expected[numbers]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_math_ops_match_torch(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    eps = np.finfo(dtype).eps
    exact = {"neg": 0, "abs": 0, "reciprocal": 0}  # correctly rounded on both sides
    for op in sorted(MATH):
        low, high = RANGES[op]
        x = rng.uniform(low, high, 4000).astype(dtype)
        expected = getattr(torch, op)(torch.from_numpy(x)).numpy()
        tiny = 2 * np.finfo(dtype).smallest_subnormal  # exp's subnormal results
        np.testing.assert_allclose(getattr(ops, op)(x), expected, rtol=exact.get(op, 4 * eps), atol=tiny, err_msg=op)


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("op", ["sin", "cos"])
def test_sin_and_cos_are_accurate_near_and_far(op, bits):
    """float32: within 2 ulp of float64's value from -2^19 to 2^19, next to multiples of pi/2
    (where the reduction must keep the small remainder's digits) and past 2^19 (the C library's
    branch, some lanes of a vector only); float64 within 2 ulp of NumPy's; in whole vectors and tails."""
    rng = np.random.default_rng(7)
    near = np.arange(-4000, 4001) * (np.pi / 2)
    far = np.array([2.0 ** 19 + 1, -3e5 * 7, 1e10, -1e30, 3.4e38])
    for dtype, limit in ((np.float32, 2.0), (np.float64, 2.0)):
        x = np.concatenate([rng.uniform(-2.0 ** 19, 2.0 ** 19, 40001), rng.uniform(-10, 10, 20001), near, far])
        x = x.astype(dtype)
        x = np.concatenate([x, np.nextafter(x[:-5], np.inf)])
        with narrowed(bits):
            actual = getattr(ops, op)(x)
        exact = getattr(np, op)(x.astype(np.float64))  # for float64 the C library's, itself within 1 ulp
        assert ulp_error(actual, exact).max() <= limit, (dtype, op)


def test_exp_is_accurate_over_its_whole_range():
    """float32: within 1 ulp of float64's exp from the largest input that underflows to the one
    that overflows (subnormal results included); overflow to inf, underflow to 0."""
    x = np.concatenate([np.linspace(-104, 89, 200001), np.linspace(-1, 1, 20001)]).astype(np.float32)
    with np.errstate(over="ignore"):
        exact = np.exp(x.astype(np.float64))
    finite = exact < np.finfo(np.float32).max
    actual = ops.exp(x)
    assert ulp_error(actual[finite], exact[finite]).max() <= 1
    assert np.all(np.isinf(actual[~finite]))
    edges = ops.exp(np.array([88.72283, 88.72284, -103.27893, -104.0, -87.33655, -1e30, 1e30], np.float32))
    assert np.isfinite(edges[0]) and edges[1] == np.inf and edges[2] == np.float32(2 ** -149)
    assert edges[3] == 0 and edges[4] < np.finfo(np.float32).tiny and edges[5] == 0 and edges[6] == np.inf


def test_exp_float64_is_accurate_over_its_whole_range():
    """float64: within 1 ulp of the value in 40-digit arithmetic, subnormal results included."""
    mpmath = pytest.importorskip("mpmath")
    x = np.concatenate([np.linspace(-745.1, 709.78, 4001), np.linspace(-1, 1, 1001)])
    with mpmath.workdps(40):
        exact = np.array([float(mpmath.exp(v)) for v in map(mpmath.mpf, x)])
    assert ulp_error(ops.exp(x), exact).max() <= 1
    assert ops.exp(np.array([709.79, -745.2]))[0] == np.inf and ops.exp(np.array([-745.2]))[0] == 0


# pow ----------------------------------------------------------------------------------------

EXPONENTS = [0, 1, 2, 3, -1, -2, 0.5, -0.5, 1.5, -1.25, 4, 1 / 3]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("exponent", EXPONENTS)
def test_pow_by_a_number_as_torch(exponent, dtype):
    """torch computes 2, 3, -2 by products, 0.5 and -0.5 by square roots, -1 as a reciprocal: the
    products and the reciprocal agree to the last bit (convc's square root is correctly rounded,
    torch's is within an ulp); other exponents go through pow (a few ulp apart)."""
    torch = pytest.importorskip("torch")
    x = np.concatenate([np.random.default_rng(2).uniform(-4, 4, 300), SPECIAL[:9]]).astype(dtype)
    expected = torch.pow(torch.from_numpy(x), exponent).numpy()
    actual = ops.pow(x, exponent)
    assert actual.dtype == dtype
    rtol = 0 if exponent in (0, 1, 2, 3, -1, -2) else 4 * np.finfo(dtype).eps
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=0)
    numbers = ~np.isnan(expected)
    assert np.array_equal(np.signbit(actual[numbers]), np.signbit(expected[numbers]))


@given(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=5), dtypes, st.integers(0, 2**32 - 1))
def test_pow_by_an_array_broadcasts_like_numpy(shapes, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 3, shapes.input_shapes[0]).astype(dtype)
    exponent = rng.uniform(-3, 3, shapes.input_shapes[1]).astype(dtype)
    actual = np.asarray(ops.pow(x, exponent))
    assert actual.shape == shapes.result_shape
    assert_close(actual, power(x, exponent), terms=2)


@settings(max_examples=20)
@given(st.one_of(st.sampled_from(EXPONENTS), st.floats(-4, 4, width=32)), dtypes, st.integers(0, 2**32 - 1))
def test_pow_by_a_number_matches_reference(exponent, dtype, seed):
    x = np.random.default_rng(seed).uniform(0, 5, (3, 7)).astype(dtype)
    assert_close(ops.pow(x, exponent), power(x, np.asarray(exponent, dtype)), terms=2)


def test_pow_of_negative_bases_and_number_bases():
    x = np.array([-8.0, -2.0, -0.0, 0.0, 2.0], np.float32)
    out = ops.pow(x, np.array([1 / 3, 2.0, -1.0, -1.0, 0.5], np.float32))
    assert np.isnan(out[0]) and out[1] == 4.0 and out[2] == -np.inf and out[3] == np.inf
    assert out[4] == np.float32(np.sqrt(np.float32(2)))
    base = ops.pow(2.0, np.array([0.5, 3.0], np.float32))  # a number base takes the exponent's dtype
    assert base.dtype == np.float32 and base.tolist() == [np.float32(np.sqrt(2.0)), 8.0]
    assert ops.pow(np.float32(3), np.float64(2.0)).dtype == np.float32  # NumPy scalars: a number exponent


def test_pow_arguments_are_checked():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match="pow: operands must share one dtype"):
        ops.pow(x, np.ones(3, np.float64))
    with pytest.raises(ConvcError, match=r"pow: shapes \(2, 3\) and \(2,\) cannot be broadcast"):
        ops.pow(x, np.ones(2, np.float32))
    with pytest.raises(TypeError, match="pow: exponent has dtype int64"):
        ops.pow(x, np.arange(3))
    with pytest.raises(TypeError, match="pow: exponent has dtype bool"):
        ops.pow(x, True)
    with pytest.raises(TypeError, match="pow: exponent has dtype <U1"):
        ops.pow(x, "2")


def test_integer_inputs_are_rejected():
    for op in sorted(MATH):
        with pytest.raises(TypeError, match=f"{op}: x has dtype int64"):
            getattr(ops, op)(np.arange(3))


# in graphs ----------------------------------------------------------------------------------

def test_math_ops_trace_print_and_compile():
    x = np.random.default_rng(3).uniform(0.5, 2, (2, 3, 5)).astype(np.float64)

    def fn(a):
        b = ops.pow(ops.rsqrt(ops.exp(ops.neg(a))), 3)
        return ops.pow(ops.abs(ops.sin(b)), ops.cos(a)), ops.reciprocal(ops.sqrt(b))

    graph = convc.trace(fn, x)
    text = str(graph)
    assert "pow_scalar(" in text and "{exponent=3.0}" in text and "pow(" in text
    assert convc.parse(text) == graph
    b = (1 / np.sqrt(np.exp(-x))) ** 3
    expected = (np.abs(np.sin(b)) ** np.cos(x), 1 / np.sqrt(b))
    for opt_level in (0, 2):
        for actual, want in zip(convc.compile(graph, opt_level=opt_level, cache_dir=False)(x), expected):
            assert_close(actual, want, terms=8)


def test_math_ops_between_blocked_convs_keep_the_blocked_layout():
    """Elementwise ops between two blocked convs compute on the blocked tensors (no reorder)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 16, 6, 7)).astype(np.float32)
    w1 = rng.standard_normal((16, 16, 3, 3)).astype(np.float32) / 6
    w2 = rng.standard_normal((16, 16, 1, 1)).astype(np.float32) / 4

    def fn(a):
        y = ops.conv2d(a, w1, None, 1, 1)
        return ops.conv2d(ops.pow(ops.sqrt(ops.abs(y)), ops.exp(ops.neg(ops.abs(y)))), w2)

    compiled = convc.compile(fn, x, cache_dir=False)
    graph = compiled.graph
    middle = [n for n in graph.op_nodes() if not n.op.startswith("conv")
              and not (n.op == "reorder" and n.operands[0] in graph.inputs)]  # the input's own reorder
    assert middle and all(n.type.block > 0 for n in middle) and "reorder" not in [n.op for n in middle]
    y = conv_nd(x, w1, None, 1, 1).astype(np.float64)
    z = (np.sqrt(np.abs(y)) ** np.exp(-np.abs(y))).astype(np.float32)
    assert_close(compiled(x), conv_nd(z, w2), terms=32)


def test_math_op_attributes_are_checked_in_parsed_ir():
    text = "graph @g(%x: f32[3]) {{\n  %0 = {} : f32[3]\n  return %0\n}}\n"
    assert convc.parse(text.format("pow_scalar(%x) {exponent=2}"))
    with pytest.raises(ConvcError, match="pow_scalar: attribute exponent='2' must be a number"):
        convc.parse(text.format('pow_scalar(%x) {exponent="2"}'))
    with pytest.raises(ConvcError, match=r"exp: unknown attribute scale=2.0; exp takes no attributes"):
        convc.parse(text.format("exp(%x) {scale=2.0}"))
    with pytest.raises(ConvcError, match=r"clamp: missing attribute\(s\) \['max'\]"):
        convc.parse(text.format("clamp(%x) {min=0.0}"))
