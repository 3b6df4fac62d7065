"""conv1d/2d/3d kernels against the NumPy reference: property tests and readable hand cases."""
import numpy as np
import pytest
from hypothesis import given

from convc import ops
from reference import assert_close, conv_nd
from strategies import conv_cases


@given(conv_cases())
def test_conv_matches_reference(case):
    fn = getattr(ops, f"conv{case.rank}d")
    actual = fn(case.x, case.w, case.bias, stride=case.stride, padding=case.padding,
                dilation=case.dilation, groups=case.groups)
    expected = conv_nd(case.x, case.w, case.bias, case.stride, case.padding, case.dilation, case.groups)
    assert_close(actual, expected, case.terms)


def check_with_padding_mode(case):
    """The conv op with nn.Conv's padding_mode (as the modules call it) against the reference."""
    actual = ops.apply(f"conv{case.rank}d", [case.x, case.w, case.bias], stride=case.stride,
                       padding=case.padding, dilation=case.dilation, groups=case.groups,
                       padding_mode=case.padding_mode)
    expected = conv_nd(case.x, case.w, case.bias, case.stride, case.padding, case.dilation, case.groups,
                       case.padding_mode)
    assert_close(actual, expected, case.terms)


@given(conv_cases(modes=("circular", "reflect", "replicate")))
def test_conv_padding_modes_match_reference(case):
    check_with_padding_mode(case)


def test_conv1d_by_hand():
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]], np.float32)
    w = np.array([[[1.0, 0.0, -1.0]]], np.float32)
    # cross-correlation: out[i] = x[i] - x[i + 2], with one zero on each side
    np.testing.assert_array_equal(ops.conv1d(x, w, padding=1), [[[-2.0, -2.0, -2.0, 3.0]]])
    np.testing.assert_array_equal(ops.conv1d(x, w, np.array([10.0], np.float32)), [[[8.0, 8.0]]])


def test_conv2d_stride_larger_than_kernel_and_one_wide_input():
    x = np.arange(1 * 2 * 7 * 1, dtype=np.float64).reshape(1, 2, 7, 1)
    w = np.ones((3, 2, 1, 1))
    out = ops.conv2d(x, w, stride=(3, 5))
    assert_close(out, conv_nd(x, w, stride=(3, 5)))
    assert out.shape == (1, 3, 3, 1)


def test_depthwise_with_multiplier_and_unbatched_input():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 9, 11)).astype(np.float32)
    w = rng.standard_normal((12, 1, 3, 3)).astype(np.float32)
    out = ops.conv2d(x, w, padding="same", groups=6)
    assert out.shape == (12, 9, 11)
    assert_close(out, conv_nd(x, w, padding="same", groups=6), 9)


def test_circular_padding_by_hand():
    # circular pad of [1, 2, 3] by 1 is [3, 1, 2, 3, 1]; the 3-tap sum kernel sums windows of it
    x = np.array([[[1.0, 2.0, 3.0]]])
    out = ops.apply("conv1d", [x, np.ones((1, 1, 3))], stride=1, padding=1, dilation=1, groups=1,
                    padding_mode="circular")
    np.testing.assert_array_equal(out, [[[6.0, 6.0, 6.0]]])
    out = ops.apply("conv1d", [x, np.ones((1, 1, 3))], stride=1, padding=1, dilation=1, groups=1,
                    padding_mode="reflect")
    np.testing.assert_array_equal(out, [[[5.0, 6.0, 7.0]]])  # [2, 1, 2, 3, 2]


def test_non_contiguous_and_negative_strided_inputs_are_copied():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 10, 12)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    view = x[:, :, ::-1, ::2]
    assert_close(ops.conv2d(view, w, padding=1), conv_nd(np.ascontiguousarray(view), w, padding=1), 27)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_is_fresh_contiguous_array_of_input_dtype(dtype):
    x = np.ones((1, 1, 4, 4), dtype)
    w = np.ones((1, 1, 2, 2), dtype)
    a, b = ops.conv2d(x, w), ops.conv2d(x, w)
    assert a.dtype == dtype and a.flags.c_contiguous and a is not b
    a[...] = 0
    np.testing.assert_array_equal(b, 4.0)


@given(conv_cases(ranks=(1, 2), modes=("zeros", "circular", "reflect", "replicate"), min_width=8))
def test_wide_rows_take_the_vector_tile_path(case):
    """Rows at least one vector wide: register tiles, edge vectors and padding lanes."""
    check_with_padding_mode(case)


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_very_wide_kernels_use_a_runtime_tap_loop(mode):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 300)).astype(np.float32)
    w = rng.standard_normal((3, 2, 101)).astype(np.float32)
    actual = ops.apply("conv1d", [x, w], stride=1, padding=50, dilation=1, groups=1, padding_mode=mode)
    assert_close(actual, conv_nd(x, w, padding=50, padding_mode=mode), 202)


def test_huge_padding_and_dilation_compile_quickly():
    # borders far wider than a vector take the row path instead of compile-time edge vectors
    x = np.random.default_rng(5).standard_normal((1, 2, 9)).astype(np.float32)
    w = np.random.default_rng(6).standard_normal((2, 2, 3)).astype(np.float32)
    assert_close(ops.conv1d(x, w, padding=300, dilation=250), conv_nd(x, w, padding=300, dilation=250), 6)
