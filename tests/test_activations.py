"""Activations (gelu, silu, hardswish, hardsigmoid, leaky_relu, hardtanh, clamp) against the NumPy
reference and torch, gelu's accuracy over its whole range, the nn modules, and their fusion into
the epilogue of every kernel that has one (plain convs, blocked convs at both vector widths,
depthwise, transposed, separable, linear) with their attributes carried by its `activation`
attribute."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convc
from convc import ConvcError, nn, ops
from convc.attributes import check_attributes
from convc.fused_activation import activation_program, activation_spec
from widths import WIDTHS, narrowed
from reference import (assert_close, clamp, conv_nd, conv_transpose_nd, gelu, hardsigmoid, hardswish, hardtanh,
                       leaky_relu, silu)
from strategies import conv_cases

REFERENCE = {"gelu": gelu, "silu": silu, "hardswish": hardswish, "hardsigmoid": hardsigmoid,
             "leaky_relu": leaky_relu, "hardtanh": hardtanh, "clamp": clamp}
dtypes = st.sampled_from([np.float32, np.float64])
bounds = st.floats(-3, 3, width=32)


@st.composite
def activations(draw):
    """(op, keyword arguments) of an activation drawn with its attributes."""
    op = draw(st.sampled_from(sorted(REFERENCE)))
    if op == "gelu":
        return op, {"approximate": draw(st.sampled_from(["none", "tanh"]))}
    if op == "leaky_relu":
        return op, {"negative_slope": draw(st.floats(-2, 2, width=32))}
    if op == "hardtanh":
        low, high = sorted([draw(bounds), draw(bounds)])
        return op, {"min_val": low, "max_val": high}
    if op == "clamp":
        low, high = draw(st.one_of(st.none(), bounds)), draw(st.one_of(st.none(), bounds))
        return op, {"min": low, "max": high if (low, high) != (None, None) else 1.0}
    return op, {}


def apply_activation(op, kwargs, y):
    return getattr(ops, op)(y, **kwargs)


def expected_activation(op, kwargs, y):
    return REFERENCE[op](y, **kwargs)


def ulp_error(actual, exact):
    """|actual - exact| in units of the last place of `exact` rounded to actual's dtype."""
    dtype = actual.dtype
    spacing = np.spacing(np.abs(exact.astype(dtype))).astype(np.float64)
    return np.abs(actual.astype(np.float64) - exact) / np.maximum(spacing, np.finfo(dtype).smallest_subnormal)


# values -------------------------------------------------------------------------------------

@given(activations(), st.lists(st.integers(1, 6), min_size=0, max_size=4), dtypes, st.integers(0, 2**32 - 1))
def test_activations_match_reference(activation, shape, dtype, seed):
    op, kwargs = activation
    x = np.random.default_rng(seed).uniform(-8, 8, shape).astype(dtype)
    assert_close(np.asarray(apply_activation(op, kwargs, x)), expected_activation(op, kwargs, x), terms=4)


SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 3.0, -3.0, 1e-30, -1e-30, 50.0, -50.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op, kwargs", [("silu", {}), ("hardswish", {}), ("hardsigmoid", {}),
                                        ("leaky_relu", {"negative_slope": -0.5}), ("hardtanh", {}),
                                        ("hardtanh", {"min_val": 0.0, "max_val": 0.0}),
                                        ("clamp", {"min": 0.0}), ("clamp", {"max": -0.0}),
                                        ("clamp", {"min": 2.0, "max": 1.0}), ("clamp", {"min": math.nan})])
def test_special_values_as_torch(op, kwargs, dtype):
    """NaN stays NaN, infinities, signed zeros (kept where a zero meets a bound) and empty ranges."""
    torch = pytest.importorskip("torch")
    x = np.array(SPECIAL * 3, dtype)  # long enough for torch's vector path
    torch_op = {"silu": torch.nn.functional.silu, "hardswish": torch.nn.functional.hardswish,
                "hardsigmoid": torch.nn.functional.hardsigmoid, "leaky_relu": torch.nn.functional.leaky_relu,
                "hardtanh": torch.nn.functional.hardtanh, "clamp": torch.clamp,
                "gelu": torch.nn.functional.gelu}[op]
    expected = torch_op(torch.from_numpy(x), **kwargs).numpy()
    actual = apply_activation(op, kwargs, x)
    np.testing.assert_allclose(actual, expected, rtol=8 * np.finfo(dtype).eps, atol=0)
    numbers = ~np.isnan(expected)
    assert np.array_equal(np.signbit(actual[numbers]), np.signbit(expected[numbers]))


def test_gelu_special_values():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 40.0, -40.0], np.float64)
    for dtype in (np.float32, np.float64):
        out = ops.gelu(x.astype(dtype))
        assert np.isnan(out[0]) and out[1] == np.inf and np.isnan(out[2])  # -inf * 0 is NaN, as in math
        assert out[3] == 0 and not np.signbit(out[3]) and out[4] == 0 and np.signbit(out[4])
        assert out[5] == 40.0 and out[6] == 0.0


def test_gelu_is_accurate_over_its_whole_range():
    """float32: within 8 ulp of x * erfc(-x / sqrt(2)) / 2 (in float64) wherever the result is a
    normal number, the far negative tail included (where 1 + erf(x / sqrt(2)) loses every digit)."""
    x = np.concatenate([np.linspace(-13, 8, 40001), np.geomspace(1e-30, 1, 200), -np.geomspace(1e-30, 1, 200)])
    x = x.astype(np.float32)
    exact = x.astype(np.float64) * 0.5 * np.vectorize(math.erfc)(-x.astype(np.float64) / math.sqrt(2))
    normal = np.abs(exact) >= np.finfo(np.float32).tiny
    assert ulp_error(ops.gelu(x), exact)[normal].max() <= 8


def test_gelu_float64_is_accurate_over_its_whole_range():
    """float64: within 8 ulp of the value in 40-digit arithmetic, down to x = -37 (about 1e-300)."""
    mpmath = pytest.importorskip("mpmath")
    x = np.concatenate([np.linspace(-37, 8, 3001), np.geomspace(1e-300, 1, 60), -np.geomspace(1e-300, 1, 60)])
    with mpmath.workdps(40):
        exact = np.array([float(v * mpmath.erfc(-v / mpmath.sqrt(2)) / 2) for v in map(mpmath.mpf, x)])
    assert ulp_error(ops.gelu(x), exact).max() <= 8


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_tanh_and_silu_are_accurate(dtype):
    """Within a few ulp of the formulas in extended precision (written without cancellation), the
    tails included. For x < 0, gelu's tanh form is x * e^(2u) / (1 + e^(2u)): the rounding of u
    (a relative eps) moves it by |2u| eps, whoever computes it in the dtype."""
    x = np.linspace(-9, 9, 20001).astype(dtype)
    v = x.astype(np.longdouble)
    u = np.sqrt(np.longdouble(2) / np.pi) * (v + np.longdouble(0.044715) * v ** 3)
    with np.errstate(over="ignore"):
        gelu_tanh = (v / (1 + np.exp(-2 * u))).astype(np.float64)
        exact_silu = (v / (1 + np.exp(-v))).astype(np.float64)
    bound = 4 + np.where(x < 0, 2 * np.abs(2 * u.astype(np.float64)), 0)
    assert np.all(ulp_error(ops.gelu(x, approximate="tanh"), gelu_tanh) <= bound)
    assert ulp_error(ops.silu(x), exact_silu).max() <= 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(approximate, dtype):
    """torch's float32 erf has an absolute error of about 1.5e-7 (and its 1 + tanh cancels): the
    difference is bounded by that times |x|, not by convc's rounding."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(3).uniform(-7, 7, 5000).astype(dtype)
    expected = torch.nn.functional.gelu(torch.from_numpy(x), approximate=approximate).numpy()
    atol = 1.5e-7 * 7 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(ops.gelu(x, approximate), expected, rtol=8 * np.finfo(dtype).eps, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_match_torch(dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.random.default_rng(5).uniform(-8, 8, 3000).astype(dtype)
    t = torch.from_numpy(x)
    eps = np.finfo(dtype).eps
    cases = [(ops.silu(x), F.silu(t), 8 * eps), (ops.hardswish(x), F.hardswish(t), 0),
             (ops.hardsigmoid(x), F.hardsigmoid(t), 0), (ops.leaky_relu(x), F.leaky_relu(t), 0),
             (ops.leaky_relu(x, 0.3), F.leaky_relu(t, 0.3), 0), (ops.hardtanh(x), F.hardtanh(t), 0),
             (ops.hardtanh(x, -2.5, 0.5), F.hardtanh(t, -2.5, 0.5), 0),
             (ops.clamp(x, -1.5, 2.0), torch.clamp(t, -1.5, 2.0), 0),
             (ops.clamp(x, max=0.25), torch.clamp(t, max=0.25), 0)]
    for actual, expected, rtol in cases:
        np.testing.assert_allclose(actual, expected.numpy(), rtol=rtol, atol=0)


# arguments and errors -------------------------------------------------------------------------

def test_invalid_arguments_are_rejected_as_torch_does():
    x = np.zeros(4, np.float32)
    with pytest.raises(ConvcError, match=r"gelu: approximate='erf' is not supported; expected one of \['none', 'tanh'"):
        ops.gelu(x, "erf")
    with pytest.raises(ConvcError, match="hardtanh: min_val=2.0 cannot be greater than max_val=1.0"):
        ops.hardtanh(x, 2.0, 1.0)
    with pytest.raises(ConvcError, match="clamp: min=None and max=None"):
        ops.clamp(x)
    with pytest.raises(TypeError, match="leaky_relu: negative_slope='0.1' must be a number"):
        ops.leaky_relu(x, "0.1")
    with pytest.raises(TypeError, match="clamp: max=True must be a number"):
        ops.clamp(x, 0.0, True)
    with pytest.raises(TypeError, match="clamp: min=.* must be a number"):
        ops.clamp(x, np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="silu: x has dtype int64"):
        ops.silu(np.arange(3))
    assert ops.hardtanh(x, 1.0, 1.0).tolist() == [1.0] * 4  # equal bounds are allowed


# modules ----------------------------------------------------------------------------------------

def test_modules_follow_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).uniform(-6, 6, (2, 3, 17)).astype(np.float32)
    pairs = [(nn.GELU(), torch.nn.GELU()), (nn.GELU("tanh"), torch.nn.GELU("tanh")), (nn.SiLU(), torch.nn.SiLU()),
             (nn.Hardswish(), torch.nn.Hardswish()), (nn.Hardsigmoid(), torch.nn.Hardsigmoid()),
             (nn.LeakyReLU(), torch.nn.LeakyReLU()), (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
             (nn.Hardtanh(), torch.nn.Hardtanh()), (nn.Hardtanh(-2.0, 3.0), torch.nn.Hardtanh(-2.0, 3.0))]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
        np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-6)


def test_modules_check_their_arguments_when_built():
    with pytest.raises(ConvcError, match="Hardtanh: max_val=1.0 must be greater than min_val=1.0"):
        nn.Hardtanh(1.0, 1.0)
    with pytest.raises(ConvcError, match="gelu: approximate='fast'"):
        nn.GELU("fast")
    with pytest.raises(TypeError, match="negative_slope"):
        nn.LeakyReLU(None)


def test_modules_trace_into_the_ops():
    x = np.random.default_rng(4).standard_normal((2, 5)).astype(np.float64)
    model = nn.Sequential(nn.LeakyReLU(0.3), nn.Hardtanh(-0.5, 0.5), nn.GELU("tanh"), nn.SiLU())
    graph = convc.trace(model, x)
    assert [n.op for n in graph.op_nodes()] == ["leaky_relu", "hardtanh", "gelu", "silu"]
    assert convc.parse(str(graph)) == graph
    expected = silu(gelu(hardtanh(leaky_relu(x, 0.3), -0.5, 0.5), "tanh"))
    assert_close(convc.compile(graph, cache_dir=False)(x), expected, terms=4)


# the fused activation attribute -----------------------------------------------------------------

def test_the_activation_attribute_carries_the_ops_attributes():
    assert activation_spec("relu", {}) == "relu"
    assert activation_spec("leaky_relu", {"negative_slope": 0.2}) == ("leaky_relu", 0.2)
    assert activation_spec("hardtanh", {"min_val": -2.0, "max_val": 2.0}) == ("hardtanh", -2.0, 2.0)
    assert activation_spec("clamp", {"min": None, "max": 6.0}) == ("clamp", None, 6.0)
    assert activation_program(("gelu", "tanh")) == (("gelu", (0,), "tanh"),)
    assert activation_program("silu") == (("silu", (0,)),)


CONV_TEXT = ('graph @g(%x: f32[1,2,6,6], %w: f32[3,2,3,3]) {{\n'
             '  %0 = conv2d(%x, %w) {{stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=1, '
             'padding_mode="zeros", activation={}}} : f32[1,3,6,6]\n  return %0\n}}\n')


@pytest.mark.parametrize("text", ['["leaky_relu",0.25]', '["hardtanh",-1.0,1.0]', '["clamp",none,6.0]',
                                  '["gelu","tanh"]', '"hardswish"', '"relu"',
                                  '[["leaky_relu",[0],0.1],["mul",[1,0.5]],["sub",[2.0,2]]]'])
def test_fused_activations_print_and_parse_back(text):
    graph = convc.parse(CONV_TEXT.format(text))
    assert convc.parse(str(graph)) == graph and f"activation={text}" in str(graph)


@pytest.mark.parametrize("value, pattern", [
    ("leaky_relu", r"leaky_relu is written \['leaky_relu', negative_slope\]"),
    (("leaky_relu",), r"leaky_relu is written"),
    (("leaky_relu", 0.1, 0.2), r"leaky_relu is written"),
    (("leaky_relu", "steep"), r"has leaky_relu's negative_slope='steep', which must be a number"),
    (("gelu", "erf"), r"has gelu's approximate='erf', which must be one of \['none', 'tanh'\]"),
    (("relu", 1.0), r"relu is written 'relu'"),
    ("exp", r"must be the name of an activation op \(.*gelu.*\), a list .* or a program of one input"),
    ((), r"must be the name of an activation op"),
    ((("exp", (1,)),), r"operand 1, which must be a value defined before it \(0 \.\. 0"),
    ((("conv2d", (0,)),), r"op 'conv2d', which is not a unary or binary elementwise op"),
    ((("add", (0,)),), r"\(add\) with 1 operands; add takes 2"),
    ((("leaky_relu", (0,)),), r"\(leaky_relu\) with 0 attribute values; leaky_relu takes \['negative_slope'\]"),
    ((("mul", (0, "two")),), r"operand 'two', which must be a value index or a number"),
])
def test_malformed_fused_activations_are_rejected(value, pattern):
    attrs = {"stride": (1, 1), "pad_lo": (0, 0), "pad_hi": (0, 0), "dilation": (1, 1), "groups": 1,
             "padding_mode": "zeros", "activation": value}
    with pytest.raises(ConvcError, match=r"conv2d: attribute activation=.* " + pattern):
        check_attributes("conv2d", attrs)


# fusion into the conv kernels -------------------------------------------------------------------

def fused_activations(compiled):
    """The activation attribute of every node that has one, and the activation nodes left over."""
    nodes = compiled.graph.op_nodes()
    return ([n.attrs[a] for n in nodes for a in ("depthwise_activation", "activation") if a in n.attrs],
            [n.op for n in nodes if n.op in REFERENCE])


@settings(max_examples=25)
@given(conv_cases(modes=("zeros", "reflect", "circular")), activations())
def test_activations_fuse_into_plain_convs(case, activation):
    op, kwargs = activation
    attrs = dict(stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups)

    def model(x):
        return apply_activation(op, kwargs, ops.apply(f"conv{case.rank}d", [x, case.w, case.bias],
                                                      padding_mode=case.padding_mode, **attrs))

    compiled = convc.compile(model, case.x, cache_dir=False)
    spec = activation_spec(op, convc.ops.normalize(op, kwargs))
    assert fused_activations(compiled) == ([spec], [])
    expected = expected_activation(op, kwargs, conv_nd(case.x, case.w, case.bias, padding_mode=case.padding_mode,
                                                       **attrs))
    assert_close(compiled(case.x), expected, case.terms + 2)


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
@settings(max_examples=8)
@given(rank=st.sampled_from([1, 2, 3]), dtype=dtypes, kind=st.sampled_from(["dense", "depthwise", "transposed"]),
       channels=st.integers(1, 20), activation=activations(), residual=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_activations_fuse_into_blocked_convs(vector_bits, rank, dtype, kind, channels, activation, residual, seed):
    """Dense, depthwise (behind a 1x1 conv, so that it is blocked) and transposed convs on the
    channel-blocked layout apply the activation, after the residual, in registers."""
    with narrowed(vector_bits):
        check_blocked_fusion(vector_bits, rank, dtype, kind, channels, activation, residual, seed)


def check_blocked_fusion(vector_bits, rank, dtype, kind, channels, activation, residual, seed):
    op, kwargs = activation
    rng = np.random.default_rng(seed)
    lanes = vector_bits // (32 if dtype == np.float32 else 64)
    size = {1: 19, 2: 7, 3: 4}[rank]
    x = rng.uniform(-2, 2, (2, channels) + (size,) * rank).astype(dtype)
    out = max(lanes, channels) if kind == "depthwise" else lanes + channels
    first = rng.uniform(-1, 1, (out, channels) + (1,) * rank).astype(dtype)
    if kind == "transposed":
        w = rng.uniform(-1, 1, (out, out) + (3,) * rank).astype(dtype) / 3
    else:
        w = rng.uniform(-1, 1, (out, 1 if kind == "depthwise" else out) + (3,) * rank).astype(dtype) / 3
    bias = rng.uniform(-1, 1, out).astype(dtype)

    def conv(y):
        if kind == "transposed":
            return getattr(ops, f"conv_transpose{rank}d")(y, w, bias, 1, 1)
        return getattr(ops, f"conv{rank}d")(y, w, bias, 1, 1, 1, out if kind == "depthwise" else 1)

    def model(x):
        y = getattr(ops, f"conv{rank}d")(x, first)
        z = conv(y)
        return apply_activation(op, kwargs, ops.add(z, y) if residual and kind != "transposed" else z)

    compiled = convc.compile(model, x, cache_dir=False)
    graph = compiled.graph
    convs = [n for n in graph.op_nodes() if n.op.startswith("conv")]
    # a conv's block: its output's, its input's where it writes plain, or its `block` attribute
    assert [n.type.block or graph.type_of(n.operands[0]).block or n.attrs.get("block") for n in convs] == \
        [lanes] * len(convs)
    assert fused_activations(compiled) == ([activation_spec(op, convc.ops.normalize(op, kwargs))], [])
    y = conv_nd(x, first)
    z = (conv_transpose_nd(y, w, bias, 1, 1) if kind == "transposed"
         else conv_nd(y, w, bias, 1, 1, 1, out if kind == "depthwise" else 1))
    expected = expected_activation(op, kwargs, z + y if residual and kind != "transposed" else z)
    assert_close(compiled(x), expected, channels + out * 3 ** rank + 2)


@pytest.mark.parametrize("blocked", [False, True], ids=["plain", "blocked"])
def test_parametrized_activations_travel_into_the_separable_kernel(blocked):
    """A depthwise conv + leaky_relu feeding a 1x1 conv + hardtanh becomes one separable node that
    applies both activations with their own attributes."""
    rng = np.random.default_rng(8)
    channels, filters = (16, 24) if blocked else (4, 3)
    x = rng.uniform(-2, 2, (1, channels, 9, 21)).astype(np.float32)
    depthwise = rng.uniform(-1, 1, (channels, 1, 3, 3)).astype(np.float32)
    pointwise = rng.uniform(-1, 1, (filters, channels, 1, 1)).astype(np.float32)

    def model(x):
        if blocked:  # a blocked conv first, so that the pair runs on the blocked layout
            x = ops.conv2d(x, np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1))
        y = ops.leaky_relu(ops.conv2d(x, depthwise, None, 1, 1, 1, channels), 0.3)
        return ops.hardtanh(ops.conv2d(y, pointwise), -0.5, 0.75)

    compiled = convc.compile(model, x, cache_dir=False)
    (node,) = [n for n in compiled.graph.op_nodes() if n.op == "separable_conv2d"]
    assert node.attrs["depthwise_activation"] == ("leaky_relu", 0.3)
    assert node.attrs["activation"] == ("hardtanh", -0.5, 0.75)
    expected = hardtanh(conv_nd(leaky_relu(conv_nd(x, depthwise, None, 1, 1, 1, channels), 0.3), pointwise), -0.5, 0.75)
    assert_close(compiled(x), expected, 12)


def test_gelu_then_a_clamp_with_one_bound_fuse_as_one_program_into_a_transposed_conv():
    rng = np.random.default_rng(9)
    x = rng.uniform(-1, 1, (3, 20)).astype(np.float64)  # unbatched: the plain kernels
    w = rng.uniform(-1, 1, (3, 2, 4)).astype(np.float64)

    def model(x):
        return ops.clamp(ops.gelu(ops.conv_transpose1d(x, w, None, 2)), max=0.5)

    compiled = convc.compile(model, x, cache_dir=False)
    assert fused_activations(compiled) == ([(("gelu", (0,), "none"), ("clamp", (1,), None, 0.5))], [])
    assert_close(compiled(x), clamp(gelu(conv_transpose_nd(x, w, None, 2)), max=0.5), 8)


@pytest.mark.parametrize("op, kwargs", [("gelu", {"approximate": "tanh"}), ("leaky_relu", {"negative_slope": 0.2}),
                                        ("hardtanh", {"min_val": -0.5, "max_val": 2.0}), ("silu", {})])
def test_parametrized_activations_fuse_into_linear(op, kwargs):
    rng = np.random.default_rng(10)
    x = rng.uniform(-1, 1, (3, 5, 12)).astype(np.float32)
    w, b = rng.uniform(-1, 1, (20, 12)).astype(np.float32), rng.uniform(-1, 1, 20).astype(np.float32)
    compiled = convc.compile(lambda a: apply_activation(op, kwargs, ops.linear(a, w, b)), x, cache_dir=False)
    assert fused_activations(compiled) == ([activation_spec(op, convc.ops.normalize(op, kwargs))], [])
    product = (x.astype(np.float64) @ w.T.astype(np.float64) + b).astype(np.float32)
    assert_close(compiled(x), expected_activation(op, kwargs, product), 14)
