"""Cross-checks of the TF-style ops against TensorFlow where it is installed (skipped where not)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convc import ConvcError, ops
import reference
from strategies import separable_cases, window

tf = pytest.importorskip("tensorflow")


@given(separable_cases())
def test_separable_conv2d(case):
    x, depthwise, pointwise, strides, padding, data_format, dilations = case
    if data_format == "NCHW":  # TF's CPU kernels implement NHWC only
        return
    expected = tf.nn.separable_conv2d(x, depthwise, pointwise, strides, padding, data_format, dilations).numpy()
    actual = ops.separable_conv2d(x, depthwise, pointwise, strides, padding, data_format, dilations)
    reference.assert_close(actual, expected, depthwise.size + pointwise.size)


@given(st.integers(1, 9), st.integers(1, 9), window, window, st.sampled_from(["VALID", "SAME"]))
def test_extract_patches(rows, cols, along_rows, along_cols, padding):
    (kh, sh, rh), (kw, sw, rw) = along_rows, along_cols
    images = np.random.default_rng(rows + 10 * cols).standard_normal((2, rows, cols, 3)).astype(np.float32)
    args = ([1, kh, kw, 1], [1, sh, sw, 1], [1, rh, rw, 1], padding)
    try:
        expected = tf.image.extract_patches(images, *args).numpy()
    except tf.errors.InvalidArgumentError:
        with pytest.raises(ConvcError):
            ops.extract_patches(images, *args)
        return
    np.testing.assert_array_equal(ops.extract_patches(images, *args), expected)


def test_broadcast_to():
    x = np.arange(3, dtype=np.float32).reshape(3, 1)
    np.testing.assert_array_equal(ops.broadcast_to(x, (2, 3, 4)), tf.broadcast_to(x, (2, 3, 4)).numpy())
