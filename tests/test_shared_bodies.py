"""Kernel bodies shared by convs that differ only in sizes the kernel takes at run time: padded 1-D
forward convs on blocked tensors read their padding, dilation and kernel size from a params
buffer (a RuntimeRow), so the dilated convs of an audio model's residual blocks compile once. Checked
against the NumPy reference at every vector width and padding mode, the interior-tile bounds
against a brute-force count, and the sharing itself on a hand case."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convc
from convc import ops
from convc.runtime.kernels.conv_blocked_nest import runtime_row_params
from convc.runtime.kernels.conv_geometry import Axis
from reference import assert_close, conv_nd
from widths import WIDTHS, narrowed


@given(size=st.integers(1, 80), kernel=st.integers(1, 9), stride=st.integers(1, 3), dilation=st.integers(1, 5),
       pad_lo=st.integers(0, 12), pad_hi=st.integers(0, 12), width=st.integers(1, 14))
def test_interior_tiles_are_those_reading_inside_the_input(size, kernel, stride, dilation, pad_lo, pad_hi, width):
    out = (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1
    if out < 1:
        return
    _, _, low, high, *_ = runtime_row_params(Axis(size, out, kernel, stride, dilation, pad_lo), width, 1, 1)
    for tile in range(out // width):
        columns = [o * stride + k * dilation - pad_lo for o in range(tile * width, (tile + 1) * width)
                   for k in range(kernel)]
        assert (low <= tile < high) == all(0 <= c < size for c in columns), tile


@st.composite
def chains(draw):
    """A chain of 1-D convs of one channel count, each with its own kernel size, dilation and
    padding (most 'same', so that they share a body), some through an activation."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    lanes = 8 if dtype == np.float64 else 16
    channels = draw(st.integers(lanes // 2, 2 * lanes + 3))
    kernels = draw(st.lists(st.sampled_from([1, 3, 5, 7, 11]), min_size=1, max_size=2))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    length = draw(st.integers(30, 90))
    layers, sizes = [], []
    for _ in range(draw(st.integers(2, 4))):
        kernel = draw(st.sampled_from(kernels))
        dilation = draw(st.integers(1, 4))
        same = dilation * (kernel - 1) // 2
        padding = same if draw(st.booleans()) else draw(st.integers(max(0, same - 2), same + 2))
        if mode in ("reflect", "circular"):
            padding = min(padding, length - 1)
        length += 2 * padding - dilation * (kernel - 1)
        if length < 20:
            break
        layers.append((dilation, padding, draw(st.sampled_from([None, "relu", "leaky_relu"]))))
        sizes.append(kernel)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.uniform(-1, 1, (draw(st.integers(1, 2)), channels, length)).astype(dtype)
    weights = [((rng.uniform(-1, 1, (channels, channels, kernel)) / np.sqrt(channels * kernel)).astype(dtype),
                rng.uniform(-1, 1, channels).astype(dtype)) for kernel in sizes]  # values stay about 1
    return x, mode, layers, weights


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
@settings(max_examples=15, deadline=None)
@given(case=chains())
def test_conv_chains_with_runtime_padding_and_dilation_match_reference(vector_bits, case):
    x, mode, layers, weights = case

    def model(x):
        for (dilation, padding, activation), (w, b) in zip(layers, weights):
            x = ops.apply("conv1d", [x, w, b], stride=1, padding=padding, dilation=dilation, groups=1,
                          padding_mode=mode)
            x = ops.relu(x) if activation == "relu" else ops.leaky_relu(x, 0.1) if activation else x
        return x

    expected = x.astype(np.float64)
    for (dilation, padding, activation), (w, b) in zip(layers, weights):
        expected = conv_nd(expected, w.astype(np.float64), b, 1, padding, dilation, 1, mode)
        if activation == "relu":
            expected = np.maximum(expected, 0)
        elif activation:
            expected = np.where(expected > 0, expected, 0.1 * expected)
    with narrowed(vector_bits):
        compiled = convc.compile(model, x, cache_dir=False)
        got = compiled(x)
    assert_close(got, expected.astype(x.dtype), len(layers) * (x.shape[1] * max(w.shape[2] for w, _ in weights) + 1))


def test_dilated_convs_of_residual_blocks_share_one_body():
    """'Same' convs of kernels 3, 7 and 11 with dilations 1, 3 and 5 and a fused leaky_relu
    (HiFi-GAN's residual blocks) compile one conv body; a last one, writing the plain output, has
    its own."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 32, 256)).astype(np.float32)
    layers = [(kernel, dilation) for kernel in (3, 7, 11) for dilation in (1, 3, 5)]
    weights = [(rng.uniform(-1, 1, (32, 32, kernel)) / np.sqrt(32 * kernel)).astype(np.float32) for kernel, _ in layers]
    last = rng.uniform(-0.18, 0.18, (32, 32, 3)).astype(np.float32)

    def same(kernel, dilation):
        return dilation * (kernel - 1) // 2

    def model(x):
        for w, (kernel, dilation) in zip(weights, layers):
            x = ops.leaky_relu(ops.conv1d(x, w, padding=same(kernel, dilation), dilation=dilation), 0.1)
        return ops.conv1d(x, last, padding=1)

    compiled = convc.compile(model, x, cache_dir=False)
    convs = [n for n in compiled.graph.op_nodes() if n.op == "conv1d"]
    emitted = [k for k in compiled.compile_times.kernels if k.op == "conv1d"]
    assert len(convs) == len(layers) + 1 and len(emitted) == 2
    expected = x.astype(np.float64)
    for w, (kernel, dilation) in zip(weights, layers):
        expected = conv_nd(expected, w, None, 1, same(kernel, dilation), dilation)
        expected = np.where(expected > 0, expected, 0.1 * expected)
    assert_close(compiled(x), conv_nd(expected, last, None, 1, 1, 1).astype(np.float32), len(layers) * (32 * 11 + 1))
