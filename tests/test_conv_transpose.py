"""conv_transpose1d/2d/3d and the ConvTranspose modules against the NumPy reference."""
import math

import numpy as np
import pytest
from hypothesis import given

from convc import ConvcError, nn, ops
from reference import assert_close, conv_transpose_nd
from strategies import conv_transpose_cases


@given(conv_transpose_cases())
def test_conv_transpose_matches_reference(case):
    fn = getattr(ops, f"conv_transpose{case.rank}d")
    actual = fn(case.x, case.w, case.bias, case.stride, case.padding, case.output_padding, case.groups,
                case.dilation)
    expected = conv_transpose_nd(case.x, case.w, case.bias, case.stride, case.padding, case.output_padding,
                                 case.groups, case.dilation)
    assert_close(actual, expected, case.terms)


def test_stride_two_upsampling_by_hand():
    # each input value stamps the 2-tap kernel at twice its position: [1, 2] * [1, 10]
    out = ops.conv_transpose1d(np.array([[[1.0, 2.0]]]), np.array([[[1.0, 10.0]]]), stride=2)
    np.testing.assert_array_equal(out, [[[1.0, 10.0, 2.0, 20.0]]])
    # padding crops one output on each side; output_padding adds one back on the high side
    out = ops.conv_transpose1d(np.array([[[1.0, 2.0]]]), np.array([[[1.0, 10.0, 100.0]]]), stride=2, padding=1,
                               output_padding=1)
    np.testing.assert_array_equal(out, [[[10.0, 102.0, 20.0, 200.0]]])


def test_output_length_formula():
    x = np.zeros((1, 2, 7, 5), np.float32)
    w = np.zeros((2, 3, 4, 3), np.float32)
    out = ops.conv_transpose2d(x, w, stride=(3, 2), padding=(1, 2), output_padding=(2, 1), dilation=(1, 2))
    assert out.shape == (1, 3, (7 - 1) * 3 - 2 + 1 * 3 + 2 + 1, (5 - 1) * 2 - 4 + 2 * 2 + 1 + 1)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"output_padding": 2, "stride": 2}, r"output_padding=\(2, 2\) must be smaller than stride=\(2, 2\) or dilation=\(1, 1\)"),
    ({"padding": "same"}, r"conv_transpose2d: padding='same' is not supported"),
    ({"groups": 3}, r"groups=3 must divide in_channels=4"),
    ({"padding": 5}, r"output size -6 on spatial axis 0 is not positive"),
    ({"stride": 0}, r"stride=0 must be positive"),
])
def test_conv_transpose_rejections(kwargs, pattern):
    with pytest.raises(ConvcError, match=pattern):
        ops.conv_transpose2d(np.zeros((1, 4, 2, 2), np.float32), np.zeros((4, 2, 3, 3), np.float32), **kwargs)


def test_conv_transpose_weight_must_match_input_channels():
    with pytest.raises(ConvcError, match=r"input has 3 channels but weight \(4, 2, 3, 3\) expects"):
        ops.conv_transpose2d(np.zeros((1, 3, 5, 5), np.float32), np.zeros((4, 2, 3, 3), np.float32))


def test_module_initialization_uses_the_weights_second_axis_for_fan_in():
    nn.manual_seed(0)
    m = nn.ConvTranspose2d(8, 6, 3, groups=2)
    assert m.weight.shape == (8, 3, 3, 3)
    bound = 1 / math.sqrt(3 * 9)
    assert bound * 0.9 < np.abs(m.weight).max() <= bound and np.abs(m.bias).max() <= bound


def test_module_output_size_with_and_without_batch_and_channel_dims():
    m = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 5)).astype(np.float32)
    for size in [(8, 10), (1, 3, 8, 10), [7, 9]]:
        out = m(x, output_size=size)
        target = tuple(size[-2:])
        assert out.shape == (1, 3) + target
        extra = tuple(t - ((s - 1) * 2 - 2 + 3) for t, s in zip(target, (4, 5)))
        assert_close(out, conv_transpose_nd(x, m.weight, m.bias, 2, 1, extra), 18)


def test_module_output_size_out_of_range_states_the_range():
    m = nn.ConvTranspose1d(1, 1, 3, stride=2)
    with pytest.raises(ConvcError, match=r"requested an output size of \[12\], but valid sizes range from \[9\] to \[10\]"):
        m(np.zeros((1, 1, 4), np.float32), output_size=[12])
    with pytest.raises(ConvcError, match="output_size must have 1 or 3 elements"):
        m(np.zeros((1, 1, 4), np.float32), output_size=[9, 9])


def test_module_rejects_padding_modes_other_than_zeros():
    with pytest.raises(ConvcError, match="padding_mode='reflect' is not supported"):
        nn.ConvTranspose2d(2, 2, 3, padding_mode="reflect")


@pytest.mark.parametrize("kernel, stride, dilation, padding", [(40, 3, 1, 5), (3, 2, 200, 0), (5, 1, 50, 7)])
def test_wide_kernels_and_borders_take_the_gather_kernel(kernel, stride, dilation, padding):
    rng = np.random.default_rng(kernel)
    x = rng.standard_normal((2, 3, 17)).astype(np.float32)
    w = rng.standard_normal((3, 2, kernel)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    actual = ops.conv_transpose1d(x, w, b, stride=stride, padding=padding, dilation=dilation)
    assert_close(actual, conv_transpose_nd(x, w, b, stride, padding, 0, 1, dilation), 3 * kernel)
