"""Elementwise ops against NumPy: broadcasting, dtypes, NaN handling, scalars."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from convc import ConvcError, ops
from reference import BINARY, UNARY, assert_close

dtypes = st.sampled_from([np.float32, np.float64])


@given(st.sampled_from(sorted(BINARY)), hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=5),
       dtypes, st.integers(0, 2**32 - 1))
def test_binary_ops_broadcast_like_numpy(op, shapes, dtype, seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-2, 2, shapes.input_shapes[0]).astype(dtype)
    b = rng.uniform(0.5, 2, shapes.input_shapes[1]).astype(dtype)
    actual = getattr(ops, op)(a, b)
    expected = BINARY[op](a, b)
    assert actual.shape == shapes.result_shape
    assert_close(np.asarray(actual), np.asarray(expected, dtype=dtype))


@given(st.sampled_from(sorted(UNARY)), hnp.array_shapes(min_dims=0, max_dims=4, max_side=6), dtypes,
       st.integers(0, 2**32 - 1))
def test_unary_ops_match_reference(op, shape, dtype, seed):
    x = np.random.default_rng(seed).uniform(-10, 10, shape).astype(dtype)
    assert_close(np.asarray(getattr(ops, op)(x)), np.asarray(UNARY[op](x)), terms=4)


def test_nan_propagates_as_in_numpy_and_torch():
    x = np.array([np.nan, -1.0, 7.0, -0.5], np.float32)
    np.testing.assert_array_equal(ops.relu(x), [np.nan, 0.0, 7.0, 0.0])
    np.testing.assert_array_equal(ops.relu6(x), [np.nan, 0.0, 6.0, 0.0])
    np.testing.assert_array_equal(ops.maximum(x, np.float32(0)), [np.nan, 0.0, 7.0, 0.0])
    np.testing.assert_array_equal(ops.minimum(x, np.zeros(4, np.float32)), [np.nan, -1.0, 0.0, -0.5])


def test_division_by_zero_is_ieee():
    out = ops.div(np.array([1.0, -1.0, 0.0]), np.zeros(3))
    assert out[0] == np.inf and out[1] == -np.inf and np.isnan(out[2])


def test_sigmoid_saturates_without_overflow():
    out = ops.sigmoid(np.array([-1000.0, 0.0, 1000.0], np.float32))
    np.testing.assert_array_equal(out, np.array([0.0, 0.5, 1.0], np.float32))


def test_python_scalars_take_the_array_dtype():
    x = np.arange(4, dtype=np.float32)
    out = ops.mul(2.5, x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x * np.float32(2.5))


def test_mismatched_shapes_and_dtypes_are_rejected():
    with pytest.raises(ConvcError, match=r"add: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        ops.add(np.zeros((2, 3)), np.zeros(4))
    with pytest.raises(TypeError, match="dtype"):
        ops.add(np.zeros(3, np.float32), np.zeros(3, np.float64))
    with pytest.raises(TypeError, match="int64"):
        ops.relu(np.arange(3))
