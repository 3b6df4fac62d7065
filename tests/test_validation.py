"""Every validation rule of the ops built so far: the error type, and a message that names the
op, the argument and the value."""
import numpy as np
import pytest

from convc import ConvcError, ops

X = np.zeros((1, 4, 8, 8), np.float32)
W = np.zeros((6, 2, 3, 3), np.float32)


def test_convc_error_is_a_value_error():
    assert issubclass(ConvcError, ValueError)


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"stride": 0}, ConvcError, r"conv2d: stride=0 must be positive"),
    ({"stride": (1, 1, 1)}, ConvcError, r"conv2d: stride=\(1, 1, 1\) must have 1 or 2 elements"),
    ({"stride": 1.5}, TypeError, r"conv2d: stride=1.5 must be an int"),
    ({"dilation": -1}, ConvcError, r"conv2d: dilation=-1 must be positive"),
    ({"padding": -1}, ConvcError, r"conv2d: padding=-1 must be >= 0"),
    ({"padding": "full"}, ConvcError, r"conv2d: padding='full' is not supported"),
    ({"padding": "same", "stride": 2}, ConvcError, r"conv2d: padding='same' is not supported for strided"),
    ({"groups": 0}, ConvcError, r"conv2d: groups=0 must be positive"),
    ({"groups": 3}, ConvcError, r"conv2d: groups=3 must divide in_channels=4"),
    ({"groups": 4}, ConvcError, r"conv2d: groups=4 must divide out_channels=6"),
    ({"groups": 1}, ConvcError, r"conv2d: input has 4 channels but weight \(6, 2, 3, 3\) with groups=1"),
    ({"groups": 2, "padding": 0, "dilation": 4}, ConvcError, r"conv2d: kernel extent 9 .* larger than the padded input size 8"),
])
def test_conv2d_argument_rules(kwargs, error, pattern):
    kwargs = {"groups": 2, **kwargs}
    with pytest.raises(error, match=pattern):
        ops.conv2d(X, W, **kwargs)


def test_conv_shape_and_dtype_rules():
    with pytest.raises(ConvcError, match=r"conv2d: input must be 3-D \(unbatched\) or 4-D \(batched\), got shape \(8, 8\)"):
        ops.conv2d(np.zeros((8, 8), np.float32), W)
    with pytest.raises(ConvcError, match=r"conv2d: weight must be 4-D, got shape \(6, 2, 3\)"):
        ops.conv2d(X, np.zeros((6, 2, 3), np.float32), groups=2)
    with pytest.raises(ConvcError, match=r"conv2d: bias must have shape \(6,\)"):
        ops.conv2d(X, W, np.zeros(5, np.float32), groups=2)
    with pytest.raises(TypeError, match=r"conv2d: operands must share one dtype, got input=f32, weight=f64"):
        ops.conv2d(X, W.astype(np.float64), groups=2)
    with pytest.raises(TypeError, match=r"conv2d: input has dtype int64"):
        ops.conv2d(X.astype(np.int64), W, groups=2)
    with pytest.raises(TypeError, match=r"conv2d: weight has dtype bool"):
        ops.conv2d(X, W.astype(bool), groups=2)
    with pytest.raises(ConvcError, match=r"conv2d: kernel size \(0, 3\)"):
        ops.conv2d(X, np.zeros((6, 2, 0, 3), np.float32), groups=2)
    with pytest.raises(ConvcError, match=r"conv2d: input spatial size \(0, 8\) must be positive"):
        ops.conv2d(np.zeros((1, 4, 0, 8), np.float32), W, groups=2, padding=1)
    with pytest.raises(TypeError, match=r"conv2d: weight is required"):
        ops.conv2d(X, None)


def test_padding_mode_rules():
    x = np.zeros((1, 1, 3), np.float32)
    w = np.zeros((1, 1, 3), np.float32)
    with pytest.raises(ConvcError, match=r"padding_mode='reflect' needs padding < input size"):
        ops.apply("conv1d", [x, w], padding=3, padding_mode="reflect")
    with pytest.raises(ConvcError, match=r"padding_mode='circular' needs padding <= input size"):
        ops.apply("conv1d", [x, w], padding=4, padding_mode="circular")
    with pytest.raises(ConvcError, match=r"padding_mode='mirror' is not supported"):
        ops.apply("conv1d", [x, w], padding_mode="mirror")


def test_a_failed_call_leaves_no_state_behind():
    with pytest.raises(ConvcError):
        ops.conv2d(X, W, groups=3)
    np.testing.assert_array_equal(ops.conv2d(np.ones((1, 4, 3, 3), np.float32), np.ones((6, 2, 3, 3), np.float32),
                                  groups=2), np.full((1, 6, 1, 1), 18.0, np.float32))


@pytest.mark.parametrize("name, first, second", [("stride", 1, 1.0), ("stride", 1, True), ("stride", (1, 1), (1.0, 1)),
                                                 ("padding", 0, False), ("dilation", 2, 2.0)])
def test_no_earlier_call_changes_how_a_later_one_is_validated(name, first, second):
    x, w = np.ones((1, 2, 5, 5), np.float32), np.ones((2, 2, 3, 3), np.float32)
    ops.conv2d(x, w, **{name: first})
    with pytest.raises(TypeError, match=f"{name}=.* must"):
        ops.conv2d(x, w, **{name: second})
