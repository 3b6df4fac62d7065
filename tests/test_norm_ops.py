"""batch_norm, layer_norm, group_norm and mean against the NumPy reference (shapes, optional
weight and bias, dtypes, a large mean offset), their modules, torch cross-checks, the
channel-blocked kernels inside compiled graphs, and the error cases torch raises."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convc
import reference
from widths import WIDTHS, narrowed
from convc import ConvcError, nn, ops
from reference import assert_close

dtypes = st.sampled_from([np.float32, np.float64])
seeds = st.integers(0, 2**32 - 1)


def _maybe(rng, flag, shape, dtype, low=-2.0, high=2.0):
    return rng.uniform(low, high, shape).astype(dtype) if flag else None


def assert_standardized(actual, expected, rows, weight, eps=1e-5):
    """Equal within the rounding of a standardization in the input's precision: the mean rounds
    to within eps * |mean| of itself, an error that the deviations carry, scaled by 1/std (up to
    1/sqrt(eps)), into rows whose values lie close together; then the weight scales it."""
    rows = rows.astype(np.float64)
    mean, std = rows.mean(axis=1), np.sqrt(rows.var(axis=1) + eps)
    conditioning = 1.0 + float(np.max(np.abs(mean) / std, initial=0.0))
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    unit = 16 * float(np.finfo(actual.dtype).eps) * np.sqrt(max(1, rows.shape[1]))
    scale = 1.0 if weight is None else max(1.0, float(np.max(np.abs(weight), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=unit, atol=unit * conditioning * scale)


@given(st.lists(st.integers(1, 6), min_size=2, max_size=5).map(tuple), dtypes, st.booleans(), st.booleans(), seeds)
def test_batch_norm_matches_reference(shape, dtype, with_weight, with_bias, seed):
    rng = np.random.default_rng(seed)
    channels = shape[1]
    x = rng.standard_normal(shape).astype(dtype)
    mean, var = rng.standard_normal(channels).astype(dtype), rng.uniform(0.1, 3, channels).astype(dtype)
    weight, bias = _maybe(rng, with_weight, channels, dtype), _maybe(rng, with_bias, channels, dtype)
    eps = float(rng.choice([1e-5, 1e-3, 0.0]))
    assert_close(ops.batch_norm(x, mean, var, weight, bias, eps),
                 reference.batch_norm(x, mean, var, weight, bias, eps), terms=4)


@st.composite
def layer_norm_cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=1, max_size=4)))
    if draw(st.booleans()):  # a long last axis: several vectors and a tail
        shape = shape[:-1] + (draw(st.integers(17, 130)),)
    normalized = shape[len(shape) - draw(st.integers(1, len(shape))):]
    return shape, normalized, draw(dtypes), draw(st.booleans()), draw(st.booleans()), draw(seeds)


@given(layer_norm_cases())
def test_layer_norm_matches_reference(case):
    shape, normalized, dtype, with_weight, with_bias, seed = case
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, shape).astype(dtype)
    weight, bias = _maybe(rng, with_weight, normalized, dtype), _maybe(rng, with_bias, normalized, dtype)
    assert_standardized(ops.layer_norm(x, normalized, weight, bias), reference.layer_norm(x, normalized, weight, bias),
                        x.reshape(-1, int(np.prod(normalized))), weight)


@st.composite
def group_norm_cases(draw):
    groups, per_group = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    spatial = tuple(draw(st.lists(st.integers(1, 9), min_size=0, max_size=3)))
    batch = draw(st.integers(1, 3))
    if batch * per_group * int(np.prod(spatial)) == 1:  # torch refuses a group of one value
        batch = 2
    shape = (batch, groups * per_group) + spatial
    return shape, groups, draw(dtypes), draw(st.booleans()), draw(st.booleans()), draw(seeds)


@given(group_norm_cases())
def test_group_norm_matches_reference(case):
    shape, groups, dtype, with_weight, with_bias, seed = case
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, shape).astype(dtype)
    channels = shape[1]
    weight, bias = _maybe(rng, with_weight, channels, dtype), _maybe(rng, with_bias, channels, dtype)
    assert_standardized(ops.group_norm(x, groups, weight, bias), reference.group_norm(x, groups, weight, bias),
                        x.reshape(shape[0] * groups, -1), weight)


@st.composite
def mean_cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=0, max_size=5)))
    if shape and draw(st.booleans()):  # a long axis somewhere: vectors, chunks and tails
        axis = draw(st.integers(0, len(shape) - 1))
        shape = shape[:axis] + (draw(st.integers(15, 150)),) + shape[axis + 1:]
    rank = len(shape)
    axes = draw(st.lists(st.integers(0, max(rank, 1) - 1), unique=True, max_size=max(rank, 1)))
    dims = [a - max(rank, 1) if draw(st.booleans()) else a for a in axes]  # negative forms too
    form = draw(st.sampled_from(["tuple", "list", "int"]))
    dim = dims[0] if form == "int" and dims else (list(dims) if form == "list" else tuple(dims))
    return shape, dim, draw(st.booleans()), draw(dtypes), draw(seeds)


@given(mean_cases())
def test_mean_matches_reference(case):
    shape, dim, keepdim, dtype, seed = case
    x = np.random.default_rng(seed).uniform(-5, 5, shape).astype(dtype)
    out = ops.mean(x, dim, keepdim)
    assert_close(np.asarray(out), reference.mean(x, tuple(dim) if isinstance(dim, list) else dim, keepdim),
                 terms=max(1, x.size))


def test_by_hand():
    x = np.array([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]])
    root = np.sqrt(2 / 3 + 1e-5)
    np.testing.assert_allclose(ops.layer_norm(x, (3,)), [[-1 / root, 0, 1 / root], [0, 0, 0]], rtol=1e-12)
    np.testing.assert_allclose(ops.layer_norm(x, [3], bias=np.full(3, 5.0)),
                               [[5 - 1 / root, 5, 5 + 1 / root], [5, 5, 5]], rtol=1e-12)
    # channel c: (x - mean[c]) / sqrt(var[c] + eps) * w[c] + b[c]
    bn = ops.batch_norm(x.T.copy(), np.array([1.0, 2.0]), np.array([4.0, 1.0]), np.array([2.0, 1.0]),
                        np.array([0.0, -1.0]), eps=0.0)
    np.testing.assert_allclose(bn, [[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    # two groups of two channels, each standardized over its 2 x 2 values (the second: mean 5, var 8)
    g = ops.group_norm(np.array([[[0.0, 2.0], [0.0, 2.0], [5.0, 5.0], [1.0, 9.0]]]), 2, eps=0.0)
    np.testing.assert_allclose(g, [[[-1, 1], [-1, 1], [0, 0], [-np.sqrt(2), np.sqrt(2)]]], rtol=1e-12)
    np.testing.assert_allclose(ops.mean(np.arange(6.0).reshape(2, 3), 1), [1.0, 4.0])
    np.testing.assert_allclose(ops.mean(np.arange(6.0).reshape(2, 3), (), keepdim=True), [[2.5]])
    assert ops.mean(np.float32(7.0), 0) == 7.0


def test_an_empty_mean_is_nan_and_empty_inputs_stay_empty():
    assert np.isnan(ops.mean(np.zeros((2, 0)), 1)).all() and ops.mean(np.zeros((2, 0)), 1).shape == (2,)
    assert ops.mean(np.zeros((0, 3), np.float32), 1).shape == (0,)
    assert ops.layer_norm(np.zeros((0, 4)), (4,)).shape == (0, 4)
    assert ops.group_norm(np.zeros((2, 6, 0)), 3).shape == (2, 6, 0)
    assert ops.batch_norm(np.zeros((0, 3, 2)), np.zeros(3), np.ones(3)).shape == (0, 3, 2)


@pytest.mark.parametrize("dtype, atol", [(np.float32, 2e-2), (np.float64, 1e-9)])
def test_statistics_are_stable_with_a_large_mean(dtype, atol):
    # the variance is a mean of squared deviations (two passes): E[x^2] - E[x]^2 would lose every
    # digit here in float32 (x^2 ~ 1e8, the spread ~ 1)
    rng = np.random.default_rng(0)
    x = (1e4 + rng.standard_normal((2, 4, 300))).astype(dtype)
    np.testing.assert_allclose(ops.layer_norm(x, (300,)), reference.layer_norm(x, (300,)), atol=atol)
    np.testing.assert_allclose(ops.group_norm(x, 2), reference.group_norm(x, 2), atol=atol)
    np.testing.assert_allclose(ops.mean(x, -1), reference.mean(x, -1), rtol=1e-6)


@settings(max_examples=12)
@given(st.sampled_from([(16, 16), (16, 4), (24, 3), (24, 8), (20, 2), (40, 40), (12, 4)]), dtypes,
       st.sampled_from(WIDTHS), seeds)
def test_blocked_norms_between_convs(channels_groups, dtype, bits, seed):
    # batch_norm with input-dependent statistics (not folded) and group_norm run blocked between
    # two convs: full and partial channel blocks, groups within a block, across blocks, and
    # groups that do not tile the blocks
    channels, groups = channels_groups
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, channels, 5, 6)).astype(dtype)
    w0, w1 = (rng.standard_normal((channels, channels, 3, 3)).astype(dtype) / 6 for _ in range(2))
    var, weight, bias = rng.uniform(0.5, 2, channels).astype(dtype), *rng.standard_normal((2, channels)).astype(dtype)

    def model(a):
        y = ops.conv2d(a, w0, padding=1)
        y = ops.batch_norm(y, ops.mean(a, (0, 2, 3)), var, weight, bias)
        return ops.conv2d(ops.group_norm(y, groups, weight, bias), w1, padding=1)

    with narrowed(bits):
        compiled = convc.compile(model, x, cache_dir=False)
    assert all(n.type.block for n in compiled.graph.op_nodes() if n.op.endswith("norm"))  # rows of 6: blocked
    y = reference.conv_nd(x, w0, padding=1)
    y = reference.batch_norm(y, reference.mean(x, (0, 2, 3)), var, weight, bias)
    expected = reference.conv_nd(reference.group_norm(y, groups, weight, bias), w1, padding=1)
    assert_close(compiled(x), expected, terms=9 * channels * 40)


def test_large_inputs_split_across_threads():
    # enough work that each kernel's outer loop runs in chunks on the thread pool
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 32, 30, 31)).astype(np.float32)
    channel = rng.uniform(0.5, 2, (4, 32)).astype(np.float32)
    assert_close(ops.batch_norm(x, *channel), reference.batch_norm(x, *channel), terms=4)
    assert_standardized(ops.layer_norm(x, (30, 31)), reference.layer_norm(x, (30, 31)), x.reshape(128, -1), None)
    assert_standardized(ops.group_norm(x, 8), reference.group_norm(x, 8), x.reshape(32, -1), None)
    for dim in ((2, 3), 0, (0, 3), 1):
        assert_close(ops.mean(x, dim), reference.mean(x, dim), terms=x.size)
    w = rng.standard_normal((32, 32, 1, 1)).astype(np.float32) / 6

    def model(a):  # blocked batch_norm and group_norm between two convs
        y = ops.batch_norm(ops.conv2d(a, w), ops.mean(a, (0, 2, 3)), *channel[:2])
        return ops.conv2d(ops.group_norm(y, 4), w)

    y = reference.batch_norm(reference.conv_nd(x, w), reference.mean(x, (0, 2, 3)), *channel[:2])
    assert_close(convc.compile(model, x, cache_dir=False)(x), reference.conv_nd(reference.group_norm(y, 4), w),
                 terms=32 * 40)


def test_norms_trace_and_compile_at_every_level():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 10)).astype(np.float32)
    weight = rng.standard_normal(10).astype(np.float32)

    def model(a):
        return ops.mean(ops.group_norm(ops.layer_norm(a, (10,), weight), 3), (-1,), keepdim=True)

    expected = reference.mean(reference.group_norm(reference.layer_norm(x, (10,), weight), 3), (-1,), True)
    for level in (0, 1, 2):
        assert_close(convc.compile(model, x, opt_level=level, cache_dir=False)(x), expected, terms=60)


def test_torch_agrees():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((3, 8, 5, 7)).astype(dtype)
        t = torch.from_numpy(x)
        mean, var, weight, bias = (rng.uniform(0.2, 2, 8).astype(dtype) for _ in range(4))
        tm, tv, tw, tb = map(torch.from_numpy, (mean, var, weight, bias))
        close = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ops.batch_norm(x, mean, var, None, bias, 1e-3),
                                   F.batch_norm(t, tm, tv, None, tb, eps=1e-3).numpy(), **close)
        np.testing.assert_allclose(ops.layer_norm(x, (5, 7), None, bias[:7].reshape(1, 7).repeat(5, 0)),
                                   F.layer_norm(t, (5, 7), None, torch.from_numpy(bias[:7]).repeat(5, 1)).numpy(),
                                   **close)
        np.testing.assert_allclose(ops.group_norm(x, 4, weight, None, 1e-2),
                                   F.group_norm(t, 4, tw, None, 1e-2).numpy(), **close)
        for dim, keepdim in [(1, False), ((0, -1), True), ((), False), ([2, 3], False)]:
            np.testing.assert_allclose(ops.mean(x, dim, keepdim), torch.mean(t, dim, keepdim).numpy(), **close)


def test_modules_match_torch_modules():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 5, 4)).astype(np.float32) * 3 + 1
    pairs = [(nn.BatchNorm2d(6, eps=1e-3, momentum=0.3), torch.nn.BatchNorm2d(6, eps=1e-3, momentum=0.3)),
             (nn.BatchNorm2d(6, affine=False, track_running_stats=False),
              torch.nn.BatchNorm2d(6, affine=False, track_running_stats=False)),
             (nn.LayerNorm([5, 4]), torch.nn.LayerNorm([5, 4])), (nn.LayerNorm(4, bias=False), torch.nn.LayerNorm(4, bias=False)),
             (nn.GroupNorm(3, 6), torch.nn.GroupNorm(3, 6)), (nn.GroupNorm(2, 6, affine=False), torch.nn.GroupNorm(2, 6, affine=False))]
    for ours, theirs in pairs:
        theirs.eval()
        for name, value in list(theirs.named_parameters()) + list(theirs.named_buffers()):
            ours_value = getattr(ours, name)
            np.testing.assert_array_equal(ours_value, value.detach().numpy())  # torch's initial values
            if value.dtype.is_floating_point:
                fresh = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
                ours_value[...] = fresh
                value.data.copy_(torch.from_numpy(fresh))
        with torch.no_grad():
            expected = theirs(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(ours(x), expected, rtol=1e-5, atol=1e-5)
    assert nn.BatchNorm2d(6, affine=False).weight is None and nn.GroupNorm(2, 6, bias=False).bias is None
    assert repr(nn.GroupNorm(3, 6)) == "GroupNorm(3, 6, eps=1e-05, affine=True)"


def test_batch_norm1d_takes_2d_and_3d_input():
    m = nn.BatchNorm1d(3)
    m.running_mean[:] = [1.0, 2.0, 3.0]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert_close(m(x), reference.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias), terms=4)
    assert m(np.zeros((2, 3, 4), np.float32)).shape == (2, 3, 4)
    with pytest.raises(ConvcError, match="BatchNorm1d: expected 2D or 3D input, got 4D input"):
        m(np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(ConvcError, match="BatchNorm2d: expected 4D input, got 3D input"):
        nn.BatchNorm2d(3)(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ConvcError, match="num_channels=6 must be divisible by num_groups=4"):
        nn.GroupNorm(4, 6)


X3 = np.zeros((2, 3, 4), np.float32)
V3 = np.ones(3, np.float32)


@pytest.mark.parametrize("call, error, pattern", [
    (lambda: ops.batch_norm(np.zeros(3, np.float32), V3, V3), ConvcError, "at least 2 dimensions"),
    (lambda: ops.batch_norm(X3, np.ones(4, np.float32), V3), ConvcError,
     r"running_mean must have shape \(3,\) to match the 3 input channels"),
    (lambda: ops.batch_norm(X3, V3, np.ones((1, 3), np.float32)), ConvcError, "running_var must be 1-D"),
    (lambda: ops.batch_norm(X3, V3, V3, np.ones(2, np.float32)), ConvcError, "weight must have shape"),
    (lambda: ops.batch_norm(X3, V3, V3, eps=-1.0), ConvcError, "eps=-1.0 must be non-negative"),
    (lambda: ops.batch_norm(X3, V3, V3.astype(np.float64)), TypeError, "must share one dtype"),
    (lambda: ops.batch_norm(X3.astype(np.int32), V3, V3), TypeError, "dtype int32"),
    (lambda: ops.batch_norm(X3, None, V3), TypeError, "running_mean is required"),
    (lambda: ops.batch_norm(X3, V3, V3, training=True), ConvcError, "training=True is not supported"),
    (lambda: ops.layer_norm(X3, 4), TypeError, "normalized_shape=4 must be a tuple or list of ints"),
    (lambda: ops.layer_norm(X3, (4.0,)), TypeError, "must be a tuple or list of ints"),
    (lambda: ops.layer_norm(X3, ()), ConvcError, "must contain at least one size"),
    (lambda: ops.layer_norm(X3, (3,)), ConvcError, r"expected input of shape \[\*, 3\], got \[2, 3, 4\]"),
    (lambda: ops.layer_norm(X3, (1, 2, 3, 4)), ConvcError, "must match the last axes"),
    (lambda: ops.layer_norm(X3, (3, 4), np.ones(12, np.float32)), ConvcError,
     r"weight must have the shape normalized_shape=\[3, 4\]"),
    (lambda: ops.group_norm(X3, 2), ConvcError, "num_groups=2 must divide the number of input channels"),
    (lambda: ops.group_norm(X3, 0), ConvcError, "num_groups=0 must be positive"),
    (lambda: ops.group_norm(X3, 3.0), TypeError, "num_groups=3.0 must be an int"),
    (lambda: ops.group_norm(np.zeros(3, np.float32), 1), ConvcError, "at least 2 dimensions"),
    (lambda: ops.group_norm(X3, 3, np.ones((3, 1), np.float32)), ConvcError, r"weight must have shape \(3,\)"),
    (lambda: ops.mean(X3, 3), ConvcError, r"dim=3 is out of range for a 3-D input \(expected -3 to 2\)"),
    (lambda: ops.mean(X3, -4), ConvcError, "dim=-4 is out of range"),
    (lambda: ops.mean(X3, (1, -2)), ConvcError, "dim 1 appears more than once"),
    (lambda: ops.mean(X3, 1.0), TypeError, "must be an int or a tuple of ints"),
    (lambda: ops.mean(X3, True), TypeError, "must be an int or a tuple of ints"),
    (lambda: ops.mean(X3, 1, keepdim=1), TypeError, "keepdim=1 must be a bool"),
    (lambda: ops.mean(np.float32(1.0), 1), ConvcError, r"expected -1 to 0"),
])
def test_rejections(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


@pytest.mark.parametrize("shape, groups", [((1, 6, 1), 6), ((1, 6), 6), ((1, 6, 1, 1), 6)])
def test_group_norm_of_one_value_per_group_is_an_error_as_in_torch(shape, groups):
    """torch.nn.functional.group_norm refuses a group of a single value, in eval mode too."""
    with pytest.raises(ConvcError, match="more than 1 value per group"):
        ops.group_norm(np.ones(shape, np.float32), groups)
    assert ops.group_norm(np.ones((2, *shape[1:]), np.float32), groups).shape == (2, *shape[1:])
