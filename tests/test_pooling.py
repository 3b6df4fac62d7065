"""max_pool1d/2d, avg_pool1d/2d and adaptive_avg_pool2d against the NumPy reference (shapes,
strides, padding, dilation, ceil_mode and count_include_pad drawn by hypothesis, rows wide enough
for the vector paths), against torch where it is installed (the ceil_mode divisors above all),
their errors, the nn modules, and the blocked layout: conv -> pool -> conv keeps the convs'
layout, checked in IR text and in values on the host's vector width and forced to 256 bits."""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import convc
from convc import ConvcError, nn, ops
from convc.passes.assign_layout import AssignLayout
from convc.passes.pipeline import Pipeline
from convc.passes.shape_inference import ShapeInference
import reference
from widths import WIDTHS, narrowed
from reference import assert_close

MAX_POOLS = {1: ops.max_pool1d, 2: ops.max_pool2d}
AVG_POOLS = {1: ops.avg_pool1d, 2: ops.avg_pool2d}


@st.composite
def window_cases(draw, dilated=True):
    """(x, kernel, stride, padding, dilation, ceil_mode) that torch accepts: padding <= k // 2 and
    at least one output per axis; stride None (= kernel) sometimes."""
    rank = draw(st.sampled_from([1, 2]))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 5)) for _ in range(rank))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(rank)) if dilated else (1,) * rank
    ceil_mode = draw(st.booleans())
    default_stride = draw(st.integers(0, 4)) == 0
    sizes = tuple(draw(st.integers(1, 12 if rank == 2 and axis == 0 else 45)) for axis in range(rank))
    assume(all(reference.pool_output_size(n, k, s, p, d, ceil_mode) >= 1
               for n, k, s, p, d in zip(sizes, kernel, kernel if default_stride else stride, padding, dilation)))
    batched = draw(st.booleans())
    shape = ((draw(st.integers(1, 2)),) if batched else ()) + (draw(st.integers(1, 3)), *sizes)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    x = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape).astype(dtype)
    return x, kernel, None if default_stride else stride, padding, dilation, ceil_mode


def compiled_at(bits, fn, x):
    """fn(x) compiled with vectors of `bits` (the rows' vector width of the plain kernels)."""
    with narrowed(bits):
        return convc.compile(fn, x, cache_dir=False)(x)


@settings(max_examples=25)
@given(window_cases(), st.sampled_from(WIDTHS))
def test_max_pool_matches_reference(case, bits):
    x, kernel, stride, padding, dilation, ceil_mode = case
    out = compiled_at(bits, lambda a: MAX_POOLS[len(kernel)](a, kernel, stride, padding, dilation, ceil_mode), x)
    np.testing.assert_array_equal(out, reference.max_pool(x, kernel, stride, padding, dilation, ceil_mode))


@settings(max_examples=25)
@given(window_cases(dilated=False), st.booleans(), st.sampled_from(WIDTHS))
def test_avg_pool_matches_reference(case, count_include_pad, bits):
    x, kernel, stride, padding, _, ceil_mode = case
    out = compiled_at(bits, lambda a: AVG_POOLS[len(kernel)](a, kernel, stride, padding, ceil_mode, count_include_pad),
                      x)
    assert_close(out, reference.avg_pool(x, kernel, stride, padding, ceil_mode, count_include_pad), math.prod(kernel))


@settings(max_examples=20)
@given(st.integers(1, 2), st.integers(0, 3), st.integers(1, 20), st.integers(1, 40),
       st.one_of(st.integers(0, 9), st.tuples(st.one_of(st.none(), st.integers(0, 9)),
                                              st.one_of(st.none(), st.integers(0, 9)))),
       st.booleans(), st.sampled_from([np.float32, np.float64]), st.sampled_from(WIDTHS))
def test_adaptive_avg_pool2d_matches_reference(batch, channels, height, width, size, batched, dtype, bits):
    shape = ((batch,) if batched else ()) + (channels, height, width)
    x = np.random.default_rng(height * 41 + width).standard_normal(shape).astype(dtype)
    out = compiled_at(bits, lambda a: ops.adaptive_avg_pool2d(a, size), x)
    assert_close(out, reference.adaptive_avg_pool2d(x, size), height * width)


def test_pools_by_hand():
    x = np.array([[1.0, 3.0, 2.0, 5.0, 4.0]])
    np.testing.assert_array_equal(ops.max_pool1d(x, 2), [[3, 5]])
    np.testing.assert_array_equal(ops.max_pool1d(x, 2, ceil_mode=True), [[3, 5, 4]])  # last window half outside
    np.testing.assert_array_equal(ops.max_pool1d(x, 3, 1, 1), [[3, 3, 5, 5, 5]])
    np.testing.assert_array_equal(ops.max_pool1d(x, 2, 1, 0, 3), [[5, 4]])  # taps 0 and 3, 1 and 4
    six = np.arange(1.0, 7.0)[None]
    # windows start at -1, 1, 3, 5; the last, [5, 8), holds 6.0, the right pad (7 = 6 + 1) and a
    # column past the padded input: torch divides by 2 with count_include_pad, by 1 without
    np.testing.assert_allclose(ops.avg_pool1d(six, 3, 2, 1, ceil_mode=True), [[1.0, 3.0, 5.0, 3.0]])
    np.testing.assert_allclose(ops.avg_pool1d(six, 3, 2, 1, ceil_mode=True, count_include_pad=False),
                               [[1.5, 3.0, 5.0, 6.0]])
    grid = np.arange(16.0).reshape(1, 4, 4)
    np.testing.assert_array_equal(ops.max_pool2d(grid, 2), [[[5, 7], [13, 15]]])
    np.testing.assert_allclose(ops.avg_pool2d(grid, 2), [[[2.5, 4.5], [10.5, 12.5]]])
    np.testing.assert_allclose(ops.adaptive_avg_pool2d(grid, 1), [[[7.5]]])
    np.testing.assert_allclose(ops.adaptive_avg_pool2d(grid, (None, 1)), [[[1.5], [5.5], [9.5], [13.5]]])


def test_max_pool_padding_and_nan():
    # dilation 3 over a 2x2 input padded by 1: the only window reads rows/columns -1 and 2, all padding
    np.testing.assert_array_equal(ops.max_pool2d(np.ones((1, 1, 2, 2)), 2, padding=1, dilation=3), [[[[-np.inf]]]])
    # padding never beats a real value, however negative
    np.testing.assert_array_equal(ops.max_pool1d(np.array([[-5.0, -7.0]]), 3, 1, 1), [[-5.0, -5.0]])
    x = np.arange(40, dtype=np.float32).reshape(1, 1, 40)
    x[0, 0, 17] = np.nan
    out = ops.max_pool1d(x, 3, 1, 1)
    np.testing.assert_array_equal(np.isnan(out[0, 0]), [16 <= i <= 18 for i in range(40)])
    np.testing.assert_array_equal(np.isnan(ops.avg_pool1d(x, 2)[0, 0]), [i == 8 for i in range(20)])


@pytest.mark.parametrize("call, error, pattern", [
    (lambda x: ops.max_pool2d(x, 3, padding=2), ConvcError, r"padding=\(2, 2\) must be at most half of kernel_size"),
    (lambda x: ops.max_pool2d(x, 2, padding=1, dilation=3), None, None),
    (lambda x: ops.max_pool1d(x[0], 1, padding=1), ConvcError, "must be at most half of kernel_size"),
    (lambda x: ops.avg_pool2d(x, (3, 1), padding=1), ConvcError, "got padding 1 for kernel size 1 on spatial axis 1"),
    (lambda x: ops.max_pool2d(x, 3, padding=-1), ConvcError, r"padding=-1 must be >= 0"),
    (lambda x: ops.max_pool2d(x, 0), ConvcError, r"kernel_size=0 must be positive"),
    (lambda x: ops.avg_pool2d(x, 2, stride=0), ConvcError, r"stride=0 must be positive"),
    (lambda x: ops.max_pool2d(x, 2, dilation=0), ConvcError, r"dilation=0 must be positive"),
    (lambda x: ops.max_pool2d(x, (2, 2, 2)), ConvcError, r"kernel_size=\(2, 2, 2\) must have 1 or 2 elements"),
    (lambda x: ops.max_pool1d(x[0], (2, 2)), ConvcError, r"kernel_size=\(2, 2\) must have 1 elements"),
    (lambda x: ops.max_pool2d(x, 6), ConvcError, "the output would be empty on spatial axis 0"),
    (lambda x: ops.avg_pool1d(x[0], 6), ConvcError, "the output would be empty on spatial axis 0"),
    (lambda x: ops.max_pool2d(x[0, 0], 2), ConvcError, r"input must be 3-D \(unbatched\) or 4-D \(batched\)"),
    (lambda x: ops.avg_pool1d(x[0, 0, 0], 2), ConvcError, r"input must be 2-D \(unbatched\) or 3-D"),
    (lambda x: ops.max_pool2d(x[:, :0], 2), ConvcError, "channels and spatial sizes must be non-zero"),
    (lambda x: ops.avg_pool2d(x[0, :0], 2), ConvcError, "channels and spatial sizes must be non-zero"),
    (lambda x: ops.max_pool2d(x, 2.0), TypeError, "kernel_size=2.0 must be an int or a tuple of ints"),
    (lambda x: ops.max_pool2d(x, 2, ceil_mode=1), TypeError, "ceil_mode=1 must be a bool"),
    (lambda x: ops.avg_pool2d(x, 2, count_include_pad=None), TypeError, "count_include_pad=None must be a bool"),
    (lambda x: ops.max_pool2d(x.astype(np.int32), 2), TypeError, "input has dtype int32; expected float32 or float64"),
    (lambda x: ops.adaptive_avg_pool2d(x, -1), ConvcError, "must not hold negative sizes"),
    (lambda x: ops.adaptive_avg_pool2d(x, (2,)), ConvcError, "must have 2 elements, got 1"),
    (lambda x: ops.adaptive_avg_pool2d(x, (1, 2, 3)), ConvcError, "must have 2 elements, got 3"),
    (lambda x: ops.adaptive_avg_pool2d(x, 2.0), TypeError, "must be an int or a pair"),
    (lambda x: ops.adaptive_avg_pool2d(x, None), TypeError, "must be an int or a pair"),
    (lambda x: ops.adaptive_avg_pool2d(x[0, 0], 2), ConvcError, r"input must be 3-D \(unbatched\) or 4-D"),
    (lambda x: ops.adaptive_avg_pool2d(x[:, :, :0], 2), ConvcError, "spatial sizes must be non-zero"),
])
def test_pool_errors(call, error, pattern):
    """Each case is an error in torch too (checked in test_torch_agrees_on_errors), except the
    one with error None, which torch computes."""
    x = np.zeros((1, 2, 5, 5), np.float32)
    if error is None:
        call(x)
        return
    with pytest.raises(error, match=pattern):
        call(x)


def test_torch_agrees_on_errors():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = torch.zeros(1, 2, 5, 5)
    for call in [lambda: F.max_pool2d(x, 3, padding=2), lambda: F.max_pool1d(x[0], 1, padding=1),
                 lambda: F.avg_pool2d(x, (3, 1), padding=1), lambda: F.max_pool2d(x, 6),
                 lambda: F.avg_pool1d(x[0], 6), lambda: F.max_pool2d(x[:, :0], 2),
                 lambda: F.avg_pool2d(x[0, :0], 2), lambda: F.adaptive_avg_pool2d(x[:, :, :0], 2),
                 lambda: F.adaptive_avg_pool2d(x, -1), lambda: F.adaptive_avg_pool2d(x, (2,)),
                 lambda: F.max_pool2d(x, (2, 2, 2)), lambda: F.max_pool2d(x, 2, dilation=0)]:
        with pytest.raises((RuntimeError, ValueError, IndexError)):
            call()
    assert F.max_pool2d(x, 2, padding=1, dilation=3).shape == (1, 2, 2, 2)
    assert F.adaptive_avg_pool2d(x[:, :0], 2).shape == (1, 0, 2, 2)


def test_empty_batches_and_channels():
    assert ops.max_pool2d(np.zeros((0, 2, 5, 5)), 2).shape == (0, 2, 2, 2)
    assert ops.avg_pool1d(np.zeros((0, 2, 5)), 2).shape == (0, 2, 2)
    assert ops.adaptive_avg_pool2d(np.zeros((1, 0, 5, 5)), 2).shape == (1, 0, 2, 2)
    assert ops.adaptive_avg_pool2d(np.ones((1, 2, 5, 5)), (0, 3)).shape == (1, 2, 0, 3)


# torch ------------------------------------------------------------------------------------------

CEIL_CASES = [  # (size, kernel, stride, padding): windows that hang past the padded input, and ones dropped
    (6, 3, 2, 1), (7, 3, 3, 1), (8, 4, 3, 2), (9, 2, 4, 1), (10, 5, 4, 2), (1, 3, 2, 1), (40, 4, 3, 2),
]


@pytest.mark.parametrize("size, kernel, stride, padding", CEIL_CASES)
def test_avg_pool_divisors_match_torch(size, kernel, stride, padding):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(size).standard_normal((2, 3, size + 1, size)).astype(np.float32)
    for ceil_mode, count_include_pad in [(True, True), (True, False), (False, False)]:
        if reference.pool_output_size(size, kernel, stride, padding, 1, ceil_mode) < 1:
            continue
        expected = torch.nn.functional.avg_pool2d(torch.from_numpy(x), kernel, stride, padding, ceil_mode,
                                                  count_include_pad).numpy()
        assert_close(ops.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad), expected, kernel ** 2)
        expected = torch.nn.functional.avg_pool1d(torch.from_numpy(x[0]), kernel, stride, padding, ceil_mode,
                                                  count_include_pad).numpy()
        assert_close(ops.avg_pool1d(x[0], kernel, stride, padding, ceil_mode, count_include_pad), expected, kernel)


@settings(max_examples=15)
@given(window_cases(), st.booleans())
def test_pools_match_torch(case, count_include_pad):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, kernel, stride, padding, dilation, ceil_mode = case
    rank, t = len(kernel), torch.from_numpy(x)
    expected = (F.max_pool1d if rank == 1 else F.max_pool2d)(t, kernel, stride, padding, dilation, ceil_mode)
    np.testing.assert_array_equal(MAX_POOLS[rank](x, kernel, stride, padding, dilation, ceil_mode), expected.numpy())
    expected = (F.avg_pool1d if rank == 1 else F.avg_pool2d)(t, kernel, stride, padding, ceil_mode, count_include_pad)
    assert_close(AVG_POOLS[rank](x, kernel, stride, padding, ceil_mode, count_include_pad), expected.numpy(),
                 math.prod(kernel))
    if rank == 2:
        size = (kernel[0] + 1, None)
        expected = F.adaptive_avg_pool2d(t, size).numpy()
        assert_close(ops.adaptive_avg_pool2d(x, size), expected, x.shape[-1] * x.shape[-2])


# modules and graphs -----------------------------------------------------------------------------


def test_modules_call_their_ops():
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 11)).astype(np.float32)
    np.testing.assert_array_equal(nn.MaxPool2d(3, 2, 1, ceil_mode=True)(x), ops.max_pool2d(x, 3, 2, 1, 1, True))
    np.testing.assert_array_equal(nn.MaxPool1d(2)(x[0]), ops.max_pool1d(x[0], 2, 2))
    np.testing.assert_array_equal(nn.AvgPool2d(2, 1, 1, False, False)(x), ops.avg_pool2d(x, 2, 1, 1, False, False))
    np.testing.assert_array_equal(nn.AvgPool1d(3, padding=1)(x[0]), ops.avg_pool1d(x[0], 3, 3, 1))
    np.testing.assert_array_equal(nn.AdaptiveAvgPool2d((None, 2))(x), ops.adaptive_avg_pool2d(x, (None, 2)))
    assert repr(nn.MaxPool2d(3, 2, 1)) == "MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)"
    assert repr(nn.AdaptiveAvgPool2d(1)) == "AdaptiveAvgPool2d(output_size=1)"
    with pytest.raises(ConvcError, match="return_indices=True is not supported"):
        nn.MaxPool2d(2, return_indices=True)
    with pytest.raises(ConvcError, match="divisor_override=2 is not supported"):
        nn.AvgPool2d(2, divisor_override=2)


def test_pools_trace_print_parse_and_compile():
    x = np.random.default_rng(1).standard_normal((1, 4, 10, 10)).astype(np.float64)

    def model(a):
        return ops.adaptive_avg_pool2d(ops.avg_pool2d(ops.max_pool2d(a, 3, 1, 1), 2, ceil_mode=True), (None, 1))

    graph = convc.trace(model, x)
    assert "max_pool2d(%a) {kernel_size=[3,3], stride=[1,1], padding=[1,1], dilation=[1,1], ceil_mode=false}" in str(graph)
    assert "{output_size=[none,1]} : f64[1,4,5,1]" in str(graph)
    assert convc.parse(str(graph)) == graph
    expected = reference.adaptive_avg_pool2d(
        reference.avg_pool(reference.max_pool(x, (3, 3), (1, 1), 1), (2, 2), ceil_mode=True), (None, 1))
    for level in (0, 2):
        assert_close(convc.compile(graph, opt_level=level, cache_dir=False)(x), expected, 4 * 100)


# the blocked layout -------------------------------------------------------------------------------

CONV = 'stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=1, padding_mode="zeros"'
MAX = "kernel_size=[3,3], stride=[2,2], padding=[1,1], dilation=[1,1], ceil_mode=false"


def test_a_pool_between_convs_keeps_their_layout():
    before = f"""
graph @g(%x: f32[1,3,8,8], %w0: f32[32,3,3,3], %w1: f32[32,32,3,3]) {{
  %0 = conv2d(%x, %w0) {{{CONV}}}
  %1 = max_pool2d(%0) {{{MAX}}}
  %2 = conv2d(%1, %w1) {{{CONV}}}
  %3 = adaptive_avg_pool2d(%2) {{output_size=[1,1]}}
  return %3
}}"""
    after = f"""
graph @g(%x: f32[1,3,8,8], %w0: f32[32,3,3,3], %w1: f32[32,32,3,3]) {{
  %r = reorder(%x) {{block=16}} : f32[1,3,8,8;c16]
  %0 = conv2d(%r, %w0) {{{CONV}}} : f32[1,32,8,8;c16]
  %1 = max_pool2d(%0) {{{MAX}}} : f32[1,32,4,4;c16]
  %2 = conv2d(%1, %w1) {{{CONV}}} : f32[1,32,4,4;c16]
  %3 = adaptive_avg_pool2d(%2) {{output_size=[1,1]}} : f32[1,32,1,1;c16]
  %p = reorder(%3) {{block=0}} : f32[1,32,1,1]
  return %p
}}"""
    blocked = Pipeline([ShapeInference(), AssignLayout(lambda dtype: 16)]).run(convc.parse(before))
    assert blocked == convc.parse(after)


def test_a_pool_of_a_plain_value_stays_plain():
    text = f"""
graph @g(%x: f32[1,32,8,8]) {{
  %0 = max_pool2d(%x) {{{MAX}}}
  return %0
}}"""
    graph = Pipeline([ShapeInference(), AssignLayout(lambda dtype: 16)]).run(convc.parse(text))
    assert graph == convc.parse(text.replace("ceil_mode=false}", "ceil_mode=false} : f32[1,32,4,4]"))


def between_convs(graph, op):
    """Whether the graph's only `op` node is blocked and reads a conv and feeds one directly."""
    (pool,) = [n for n in graph.op_nodes() if n.op == op]
    users = graph.users(pool.name)
    return (pool.type.block > 0 and graph.node(pool.operands[0]).op.startswith("conv")
            and len(users) == 1 and users[0].op.startswith("conv"))


@pytest.fixture(params=WIDTHS, ids=lambda bits: f"{bits}bit")
def vector_bits(request):
    with narrowed(request.param):
        yield request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_pools_between_convs(vector_bits, dtype):
    """conv -> max_pool2d -> conv -> avg_pool2d (ceil_mode, both divisors) -> global average pool, and
    conv1d -> max_pool1d -> conv1d, compiled on the blocked layout: no reorder between the convs,
    values as the reference's (24 channels: the last block is part-filled)."""
    rng = np.random.default_rng(vector_bits)
    x = rng.standard_normal((2, 3, 15, 19)).astype(dtype)
    w0, w1 = (rng.standard_normal(shape).astype(dtype) / 4 for shape in ((24, 3, 3, 3), (24, 24, 3, 3)))

    def model(a):
        y = ops.max_pool2d(ops.relu(ops.conv2d(a, w0, padding=1)), 3, 2, 1, ceil_mode=True)
        z = ops.conv2d(y, w1, padding=1)
        return (ops.avg_pool2d(z, 3, 2, 1, True, False), ops.avg_pool2d(z, 2, 1, 1, True, True),
                ops.adaptive_avg_pool2d(z, 1), ops.adaptive_avg_pool2d(z, (3, None)))

    compiled = convc.compile(model, x, cache_dir=False)
    graph = compiled.graph
    pools = [n for n in graph.op_nodes() if "pool" in n.op]
    assert len(pools) == 5 and all(n.type.block == vector_bits // (8 * np.dtype(dtype).itemsize) for n in pools)
    assert between_convs(graph, "max_pool2d")
    assert [graph.node(o).op for o in graph.outputs] == ["reorder"] * 4  # the small pooled results only

    y = reference.max_pool(np.maximum(reference.conv_nd(x, w0, padding=1), 0), (3, 3), (2, 2), 1, 1, True)
    z = reference.conv_nd(y, w1, padding=1)
    expected = (reference.avg_pool(z, (3, 3), (2, 2), 1, True, False), reference.avg_pool(z, (2, 2), (1, 1), 1, True),
                reference.adaptive_avg_pool2d(z, 1), reference.adaptive_avg_pool2d(z, (3, None)))
    for out, ref in zip(compiled(x), expected):
        assert_close(out, ref, 24 * 9 * 9)

    signal = rng.standard_normal((1, 5, 70)).astype(dtype)
    v0, v1 = (rng.standard_normal(shape).astype(dtype) / 4 for shape in ((16, 5, 3), (16, 16, 1)))
    compiled = convc.compile(lambda a: ops.conv1d(ops.max_pool1d(ops.conv1d(a, v0), 4, 3, 2, 2), v1), signal,
                             cache_dir=False)
    assert between_convs(compiled.graph, "max_pool1d")
    expected = reference.conv_nd(reference.max_pool(reference.conv_nd(signal, v0), (4,), (3,), 2, 2), v1)
    assert_close(compiled(signal), expected, 16 * 15)
