"""pad, adaptive_avg_pool1d and broadcast_to against the NumPy reference, with their rules."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convc import ConvcError, nn, ops
import reference
from strategies import pad_cases


@given(pad_cases())
def test_pad_matches_reference(case):
    x, amounts, mode, value = case
    kwargs = {"value": value} if mode == "constant" else {}
    np.testing.assert_array_equal(ops.pad(x, amounts, mode=mode, **kwargs), reference.pad(x, amounts, mode, value))


def test_pad_by_hand():
    x = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(ops.pad(x, (2, 1), mode="reflect"), [[3, 2, 1, 2, 3, 2]])
    np.testing.assert_array_equal(ops.pad(x, (2, 1), mode="replicate"), [[1, 1, 1, 2, 3, 3]])
    np.testing.assert_array_equal(ops.pad(x, (2, 1), mode="circular"), [[2, 3, 1, 2, 3, 1]])
    np.testing.assert_array_equal(ops.pad(x, (-1, 1), value=9.0), [[2, 3, 9]])
    np.testing.assert_array_equal(ops.pad(x, (0, 0, 1, 0), value=7.0), [[7, 7, 7], [1, 2, 3]])


@pytest.mark.parametrize("shape, amounts, mode, pattern", [
    ((2, 3), (1,), "constant", "must have an even length"),
    ((2, 3), (1, 1, 1, 1, 1, 1), "constant", "pads 3 axes but the input has only 2"),
    ((2, 3, 4), (0, 4), "reflect", r"mode='reflect' needs each pad < input size, got \(0, 4\) for size 4"),
    ((2, 3, 4), (5, 0), "circular", "wraps at most once"),
    ((2, 3, 4, 5), (1, 1), "reflect", "does not accept a pad of length 2 for a 4-D input"),
    ((4,), (1, 1), "replicate", "does not accept a pad of length 2 for a 1-D input"),
    ((2, 3), (-2, -2), "constant", "crops axis 1 of size 3 to a negative size"),
    ((2, 1), (0, -1), "replicate", r"mode='replicate' needs a non-empty result, but pad \(0, -1\) crops axis 1"),
    ((2, 3), (1, 1), "mirror", "mode='mirror' is not supported"),
])
def test_pad_rejections(shape, amounts, mode, pattern):
    with pytest.raises(ConvcError, match=pattern):
        ops.pad(np.zeros(shape, np.float32), amounts, mode=mode)


def test_reflect_rule_counts_against_the_axis_size():
    ops.pad(np.zeros((1, 1, 4)), (3, 3), mode="reflect")
    with pytest.raises(ConvcError, match=r"needs each pad < input size, got \(4, 0\) for size 4"):
        ops.pad(np.zeros((1, 1, 4)), (4, 0), mode="reflect")


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 20), st.integers(0, 25), st.booleans())
def test_adaptive_avg_pool1d_matches_reference(batch, channels, length, size, batched):
    shape = ((batch,) if batched else ()) + (channels, length)
    x = np.random.default_rng(length * 31 + size).standard_normal(shape).astype(np.float32)
    reference.assert_close(ops.adaptive_avg_pool1d(x, size), reference.adaptive_avg_pool1d(x, size), length)


def test_adaptive_avg_pool1d_bins_by_hand():
    x = np.array([[[0.0, 1.0, 2.0, 3.0, 4.0]]])
    # bins of 5 into 3: [0, 2), [1, 4), [3, 5) -- they overlap
    np.testing.assert_allclose(ops.adaptive_avg_pool1d(x, 3), [[[0.5, 2.0, 3.5]]])
    # more bins than values repeats them
    np.testing.assert_allclose(ops.adaptive_avg_pool1d(np.array([[1.0, 3.0]]), 4), [[1.0, 1.0, 3.0, 3.0]])
    np.testing.assert_allclose(nn.AdaptiveAvgPool1d(1)(x), [[[2.0]]])


@pytest.mark.parametrize("shape, size, error, pattern", [
    ((5,), 2, ConvcError, "must be 2-D \\(unbatched\\) or 3-D"),
    ((2, 3, 0), 2, ConvcError, "must be non-zero"),
    ((2, 3, 4), -1, ConvcError, "output_size=-1 must be >= 0"),
    ((2, 3, 4), (2, 2), ConvcError, "must contain one int"),
    ((2, 3, 4), 1.5, TypeError, "must be an int"),
])
def test_adaptive_avg_pool1d_rejections(shape, size, error, pattern):
    with pytest.raises(error, match=pattern):
        ops.adaptive_avg_pool1d(np.zeros(shape, np.float32), size)


@given(st.data())
def test_broadcast_to_matches_numpy(data):
    target = data.draw(st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple))
    source = tuple(data.draw(st.sampled_from([1, d])) for d in target[len(target) - data.draw(st.integers(0, len(target))):])
    x = np.random.default_rng(0).standard_normal(source).astype(np.float32)
    out = ops.broadcast_to(x, target)
    np.testing.assert_array_equal(out, np.broadcast_to(x, target))
    assert out.flags.c_contiguous and out.flags.writeable


def test_broadcast_to_rejections():
    with pytest.raises(ConvcError, match=r"axis 0 has size 2, which must be 1 or 3"):
        ops.broadcast_to(np.zeros((2, 3)), (3, 3))
    with pytest.raises(ConvcError, match="has more dimensions than shape"):
        ops.broadcast_to(np.zeros((2, 3)), (3,))
    with pytest.raises(ConvcError, match="must not hold negative sizes"):
        ops.broadcast_to(np.zeros(3), (-1, 3))
