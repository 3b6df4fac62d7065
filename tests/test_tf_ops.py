"""extract_patches, separable_conv2d and SeparableConv2D against the NumPy reference and the
examples of TensorFlow's documentation."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convc import ConvcError, nn, ops
import reference
from strategies import separable_cases, window

N = 10
IMAGES = np.array([[[[x * N + y + 1] for y in range(N)] for x in range(N)]], np.float32)  # 1..100


def test_extract_patches_documentation_example():
    out = ops.extract_patches(IMAGES, sizes=[1, 3, 3, 1], strides=[1, 5, 5, 1], rates=[1, 1, 1, 1], padding="VALID")
    np.testing.assert_array_equal(out, [[[[1, 2, 3, 11, 12, 13, 21, 22, 23], [6, 7, 8, 16, 17, 18, 26, 27, 28]],
                                         [[51, 52, 53, 61, 62, 63, 71, 72, 73], [56, 57, 58, 66, 67, 68, 76, 77, 78]]]])


def test_extract_patches_documentation_example_with_rates():
    out = ops.extract_patches(IMAGES, sizes=[1, 3, 3, 1], strides=[1, 5, 5, 1], rates=[1, 2, 2, 1], padding="VALID")
    np.testing.assert_array_equal(out, [[[[1, 3, 5, 21, 23, 25, 41, 43, 45], [6, 8, 10, 26, 28, 30, 46, 48, 50]],
                                         [[51, 53, 55, 71, 73, 75, 91, 93, 95], [56, 58, 60, 76, 78, 80, 96, 98, 100]]]])


@given(st.integers(1, 2), st.integers(1, 9), st.integers(1, 9), st.integers(1, 3), window, window,
       st.sampled_from(["VALID", "SAME"]), st.sampled_from([np.float32, np.float64]))
def test_extract_patches_matches_reference(batch, rows, cols, depth, along_rows, along_cols, padding, dtype):
    (kh, sh, rh), (kw, sw, rw) = along_rows, along_cols
    if padding == "VALID" and (rows - rh * (kh - 1) - 1 + sh < 0 or cols - rw * (kw - 1) - 1 + sw < 0):
        return  # TF rejects these (tested below)
    images = np.random.default_rng(rows * 10 + cols).standard_normal((batch, rows, cols, depth)).astype(dtype)
    args = ([1, kh, kw, 1], [1, sh, sw, 1], [1, rh, rw, 1], padding)
    np.testing.assert_array_equal(ops.extract_patches(images, *args), reference.extract_patches(images, *args))


@pytest.mark.parametrize("args, pattern", [
    (([2, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID"), r"sizes=\[2, 3, 3, 1\] must be 1 in its first and last"),
    (([1, 3, 3, 1], [1, 0, 1, 1], [1, 1, 1, 1], "VALID"), r"strides=\[1, 0, 1, 1\] must be positive"),
    (([1, 3, 3], [1, 1, 1, 1], [1, 1, 1, 1], "VALID"), "must have 4 elements"),
    (([1, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1], "same"), "padding='same' is not supported"),
    (([1, 7, 7, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID"), "the output size would be negative"),
])
def test_extract_patches_rejections(args, pattern):
    with pytest.raises(ConvcError, match=pattern):
        ops.extract_patches(np.zeros((1, 5, 5, 2), np.float32), *args)


@given(separable_cases())
def test_separable_conv2d_matches_reference(case):
    x, depthwise, pointwise, strides, padding, data_format, dilations = case
    actual = ops.separable_conv2d(x, depthwise, pointwise, strides, padding, data_format, dilations)
    expected = reference.separable_conv2d(x, depthwise, pointwise, strides, padding, data_format, dilations)
    reference.assert_close(actual, expected, depthwise.size + pointwise.size)


@given(separable_cases(data_formats=("NCHW",), min_cols=20))
def test_wide_nchw_rows_take_the_register_tiled_separable_path(case):
    x, depthwise, pointwise, strides, padding, data_format, dilations = case
    actual = ops.separable_conv2d(x, depthwise, pointwise, strides, padding, data_format, dilations)
    expected = reference.separable_conv2d(x, depthwise, pointwise, strides, padding, data_format, dilations)
    reference.assert_close(actual, expected, depthwise.size + pointwise.size)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(strides=[1, 2, 2, 1], dilations=[2, 2]), "cannot be combined with dilations"),
    (dict(strides=[2, 1, 1, 1]), "must be 1 in its first and last"),
    (dict(data_format="NCDHW"), "data_format='NCDHW' is not supported"),
    (dict(padding="same"), "padding='same' is not supported"),
    (dict(dilations=[1, 2, 3]), "must be None, an int or a list of 2 ints"),
])
def test_separable_conv2d_rejections(kwargs, pattern):
    args = {"strides": [1, 1, 1, 1], "padding": "SAME", **kwargs}
    with pytest.raises(ConvcError, match=pattern):
        ops.separable_conv2d(np.zeros((1, 8, 8, 2), np.float32), np.zeros((3, 3, 2, 1), np.float32),
                             np.zeros((1, 1, 2, 3), np.float32), **args)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_separable_conv2d_computes_unequal_strides(data_format):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 9, 11, 3) if data_format == "NHWC" else (1, 3, 9, 11)).astype(np.float32)
    dw, pw = rng.standard_normal((3, 2, 3, 2)).astype(np.float32), rng.standard_normal((1, 1, 6, 4)).astype(np.float32)
    strides = [1, 2, 3, 1] if data_format == "NHWC" else [1, 1, 2, 3]
    for padding in ("SAME", "VALID"):
        actual = ops.separable_conv2d(x, dw, pw, strides, padding, data_format)
        expected = reference.separable_conv2d(x, dw, pw, strides, padding, data_format)
        assert actual.shape == expected.shape
        reference.assert_close(actual, expected, 18 + 6)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_keras_layer_computes_strides_with_dilation(data_format, padding):
    layer = nn.SeparableConv2D(3, 3, strides=(2, 3), padding=padding, dilation_rate=2, data_format=data_format,
                               depth_multiplier=2, bias_initializer="ones")
    x = np.random.default_rng(4).standard_normal((1, 2, 11, 13) if data_format == "channels_first" else (1, 11, 13, 2))
    out = layer(x)
    nhwc = x if data_format == "channels_last" else x.transpose(0, 2, 3, 1)
    expected = reference.separable_conv2d(nhwc, layer.depthwise_kernel, layer.pointwise_kernel, [1, 2, 3, 1],
                                          padding.upper(), dilations=(2, 2)) + 1.0
    if data_format == "channels_first":
        expected = expected.transpose(0, 3, 1, 2)
    assert out.shape == expected.shape
    reference.assert_close(out, expected, 18 + 4)


def test_separable_conv2d_shape_rejections():
    x, dw, pw = np.zeros((1, 8, 8, 2), np.float32), np.zeros((3, 3, 2, 1), np.float32), np.zeros((1, 1, 2, 3), np.float32)
    with pytest.raises(ConvcError, match="input must be 4-D"):
        ops.separable_conv2d(x[0], dw, pw, [1, 1, 1, 1], "SAME")
    with pytest.raises(ConvcError, match=r"pointwise_filter must be 4-D \[1, 1, 2, out_channels\]"):
        ops.separable_conv2d(x, dw, np.zeros((1, 1, 3, 3), np.float32), [1, 1, 1, 1], "SAME")
    with pytest.raises(ConvcError, match=r"depthwise_filter must be 4-D \[kh, kw, 2, multiplier\]"):
        ops.separable_conv2d(x, np.zeros((3, 3, 4, 1), np.float32), pw, [1, 1, 1, 1], "SAME")
    with pytest.raises(TypeError, match="operands must share one dtype"):
        ops.separable_conv2d(x, dw.astype(np.float64), pw, [1, 1, 1, 1], "SAME")


def test_keras_layer_builds_glorot_weights_on_first_call():
    nn.manual_seed(0)
    layer = nn.SeparableConv2D(8, 3, depth_multiplier=2)
    assert layer.depthwise_kernel is None
    x = np.random.default_rng(0).standard_normal((2, 7, 7, 4)).astype(np.float32)
    out = layer(x)
    assert layer.depthwise_kernel.shape == (3, 3, 4, 2) and layer.pointwise_kernel.shape == (1, 1, 8, 8)
    depthwise_limit = math.sqrt(6 / (9 * 4 + 9 * 2))
    pointwise_limit = math.sqrt(6 / (8 + 8))
    assert 0.8 * depthwise_limit < np.abs(layer.depthwise_kernel).max() <= depthwise_limit
    assert 0.8 * pointwise_limit < np.abs(layer.pointwise_kernel).max() <= pointwise_limit
    np.testing.assert_array_equal(layer.bias, np.zeros(8, np.float32))
    assert out.shape == (2, 5, 5, 8)
    expected = reference.separable_conv2d(x, layer.depthwise_kernel, layer.pointwise_kernel, [1, 1, 1, 1], "VALID")
    reference.assert_close(out, expected, 36 + 8)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_keras_layer_applies_bias_and_activation_last(data_format):
    layer = nn.SeparableConv2D(3, (2, 3), strides=2, padding="same", data_format=data_format, activation="relu",
                               bias_initializer="ones")
    x = np.random.default_rng(1).standard_normal((1, 2, 6, 7) if data_format == "channels_first" else (1, 6, 7, 2))
    out = layer(x)
    nhwc = x if data_format == "channels_last" else x.transpose(0, 2, 3, 1)
    expected = reference.separable_conv2d(nhwc, layer.depthwise_kernel, layer.pointwise_kernel, [1, 2, 2, 1], "SAME")
    expected = np.maximum(expected + 1.0, 0)
    if data_format == "channels_first":
        expected = expected.transpose(0, 3, 1, 2)
    reference.assert_close(out, expected, 12)
    assert out.dtype == np.float64  # the weights follow the first input's dtype


KERAS_ACTIVATIONS = {  # Keras 3's definitions, written out in NumPy
    "gelu": lambda y: 0.5 * y * (1 + np.vectorize(math.erf)(y / math.sqrt(2))),
    "silu": lambda y: y / (1 + np.exp(-y)), "swish": lambda y: y / (1 + np.exp(-y)),
    "hard_sigmoid": lambda y: np.clip(y + 3, 0, 6) / 6, "hard_silu": lambda y: y * np.clip(y + 3, 0, 6) / 6,
    "hard_swish": lambda y: y * np.clip(y + 3, 0, 6) / 6, "leaky_relu": lambda y: np.where(y > 0, y, 0.2 * y),
    "exponential": np.exp}


@pytest.mark.parametrize("activation", sorted(KERAS_ACTIVATIONS))
def test_keras_layer_activations(activation):
    layer = nn.SeparableConv2D(4, 3, padding="same", activation=activation)
    x = np.random.default_rng(2).standard_normal((1, 5, 6, 3))
    expected = reference.separable_conv2d(x, *_built(layer, x), [1, 1, 1, 1], "SAME")
    reference.assert_close(layer(x), KERAS_ACTIVATIONS[activation](expected), 27 + 3)


def _built(layer, x):
    """The layer's kernels (built on its first call)."""
    layer(x)
    return layer.depthwise_kernel, layer.pointwise_kernel


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(filters=0, kernel_size=3), "filters=0 must be a strictly positive int"),
    (dict(filters=2, kernel_size=3, padding="causal"), "padding='causal' is not supported"),
    (dict(filters=2, kernel_size=3, activation="gelu_fancy"), "activation='gelu_fancy' is not supported"),
    (dict(filters=2, kernel_size=(1, 2, 3)), "must be an int or a tuple of 2 ints"),
    (dict(filters=2, kernel_size=3, data_format="NHWC"), "data_format='NHWC' is not supported"),
])
def test_keras_layer_rejections(kwargs, pattern):
    with pytest.raises(ConvcError, match=pattern):
        nn.SeparableConv2D(**kwargs)
