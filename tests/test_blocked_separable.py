"""The depthwise + pointwise fusion on the channel-blocked layout: a blocked depthwise conv2d
feeding a blocked 1x1 conv becomes one blocked separable_conv2d (row buffer on the stack), with
the 1x1 conv's bias, residual and activation, and a plain output where a reorder folds in;
compared with the NumPy reference at the host's vector width and at 256 bits."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convc
from convc import ops
from convc.passes.fuse_separable import rereads_pay
from convc.runtime.jit import host_target
from widths import WIDTHS, narrowed
from reference import assert_close, conv_nd



@st.composite
def separable_cases(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    lanes = 8 if dtype == np.float64 else 16
    channels = draw(st.integers(2, 2 * lanes + 3))  # one channel is a dense conv, not a depthwise one
    filters = draw(st.integers(lanes, 2 * lanes + 3))  # the 1x1 conv is blocked at every width
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(2))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(2))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(2))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(2))
    sizes = [draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 12)) for k, d, p in zip(kernel, dilation, padding)]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.uniform(-1, 1, (draw(st.integers(1, 2)), channels, *sizes)).astype(dtype)
    dw = rng.uniform(-1, 1, (channels, 1, *kernel)).astype(dtype)
    pw = rng.uniform(-1, 1, (filters, channels, 1, 1)).astype(dtype)
    biases = [rng.uniform(-1, 1, n).astype(dtype) if draw(st.booleans()) else None for n in (channels, filters)]
    dw_activation = draw(st.sampled_from([None, "relu6"]))
    epilogue = draw(st.sampled_from([None, "relu", "residual", "residual+relu"]))
    consumer = draw(st.sampled_from(["output", "conv"]))  # a blocked user keeps the output blocked
    return x, dw, pw, biases, stride, padding, dilation, dw_activation, epilogue, consumer


def reference(x, dw, pw, biases, stride, padding, dilation, dw_activation):
    y = conv_nd(x, dw, biases[0], stride, padding, dilation, x.shape[1])
    if dw_activation:
        y = np.clip(y, 0, 6)
    return conv_nd(y, pw, biases[1])


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
@settings(max_examples=40, deadline=None)
@given(case=separable_cases())
def test_blocked_separable_matches_reference(vector_bits, case):
    x, dw, pw, biases, stride, padding, dilation, dw_activation, epilogue, consumer = case
    expected = reference(x, dw, pw, biases, stride, padding, dilation, dw_activation)
    residual = np.random.default_rng(3).uniform(-1, 1, expected.shape).astype(x.dtype)
    last = np.random.default_rng(4).uniform(-1, 1, (8, pw.shape[0], 1, 1)).astype(x.dtype)

    def model(x, r):
        y = ops.conv2d(x, dw, biases[0], stride, padding, dilation, x.shape[1])
        y = ops.relu6(y) if dw_activation else y
        z = ops.conv2d(y, pw, biases[1])
        z = ops.add(z, r) if epilogue and epilogue.startswith("residual") else z
        z = ops.relu(z) if epilogue and epilogue.endswith("relu") else z
        return ops.conv2d(z, last) if consumer == "conv" else z

    with narrowed(vector_bits):
        compiled = convc.compile(model, x, residual)
        actual = compiled(x, residual)
    lanes = vector_bits // (32 if x.dtype == np.float32 else 64)
    fused = [n for n in compiled.graph.op_nodes() if n.op == "separable_conv2d"]
    assert len(fused) == rereads_pay(expected.shape)  # fused unless rereading the 1x1 weights costs more
    for node in fused:
        assert compiled.graph.type_of(node.operands[0]).block == lanes
        assert len(node.operands) == (6 if epilogue and epilogue.startswith("residual") else 5)
    if epilogue and epilogue.startswith("residual"):
        expected = expected + residual
    if epilogue and epilogue.endswith("relu"):
        expected = np.maximum(expected, 0)
    if consumer == "conv":
        expected = conv_nd(expected, last)
    assert_close(actual, expected, int(np.prod(dw.shape[1:])) * pw.shape[1] + 8 * pw.shape[0])


def test_an_inverted_residual_block_is_one_conv_and_one_separable_kernel():
    """MobileNetV2's block: 1x1 expand (relu6), depthwise 3x3 (relu6), 1x1 project, + input. The
    layout stays blocked from the first conv to the residual add, which the fused kernel takes."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 24, 14, 14)).astype(np.float32)
    expand, dw = rng.standard_normal((144, 24, 1, 1)).astype(np.float32) / 5, rng.standard_normal((144, 1, 3, 3))
    project = rng.standard_normal((24, 144, 1, 1)).astype(np.float32) / 10
    dw = dw.astype(np.float32)

    def block(x):
        y = ops.relu6(ops.conv2d(x, expand))
        y = ops.relu6(ops.conv2d(y, dw, None, 1, 1, 1, 144))
        return ops.add(ops.conv2d(y, project), x)

    compiled = convc.compile(block, x)
    lanes = host_target().lanes("f32")
    assert [(n.op, n.type.block) for n in compiled.graph.op_nodes()] == [
        ("reorder", lanes), ("conv2d", lanes), ("separable_conv2d", lanes), ("reorder", 0)]
    fused = compiled.graph.op_nodes()[2]
    assert len(fused.operands) == 6 and fused.attrs["depthwise_activation"] == "relu6"
    y = np.clip(conv_nd(x, expand), 0, 6)
    y = np.clip(conv_nd(y, dw, None, 1, 1, 1, 144), 0, 6)
    assert_close(compiled(x), conv_nd(y, project) + x, 144 * 10)


def test_a_separable_pair_between_plain_tensors_writes_its_output_plain():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 32, 20, 40)).astype(np.float32)
    dw, pw = rng.standard_normal((32, 1, 3, 3)).astype(np.float32), rng.standard_normal((40, 32, 1, 1)).astype(np.float32)
    compiled = convc.compile(lambda x: ops.conv2d(ops.conv2d(x, dw, None, 1, 1, 1, 32), pw), x)
    lanes = host_target().lanes("f32")
    assert [(n.op, n.type.block) for n in compiled.graph.op_nodes()] == [("reorder", lanes), ("separable_conv2d", 0)]
    assert_close(compiled(x), conv_nd(conv_nd(x, dw, None, 1, 1, 1, 32), pw), 9 * 32)


def test_a_depthwise_result_also_added_as_the_residual_is_not_fused_away():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 16, 9, 9)).astype(np.float32)
    dw, pw = rng.standard_normal((16, 1, 3, 3)).astype(np.float32), rng.standard_normal((16, 16, 1, 1)).astype(np.float32)
    w0 = rng.standard_normal((16, 16, 1, 1)).astype(np.float32)

    def model(x):
        y = ops.conv2d(ops.conv2d(x, w0), dw, None, 1, 1, 1, 16)
        return ops.add(ops.conv2d(y, pw), y)

    compiled = convc.compile(model, x)
    y = conv_nd(conv_nd(x, w0), dw, None, 1, 1, 1, 16)
    assert_close(compiled(x), conv_nd(y, pw) + y, 16 * 16 * 9)


@pytest.mark.parametrize("channels, width", [(1, 16), (16, 40)])
def test_an_add_between_the_depthwise_and_the_1x1_conv_is_kept(channels, width):
    """A tensor added to the depthwise result (fused into it as a residual) is not dropped when the
    two convs would otherwise make one separable kernel."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((1, channels, 3, width)).astype(np.float32)
    dw = rng.standard_normal((channels, 1, 3, 3)).astype(np.float32)
    pw = rng.standard_normal((channels, channels, 1, 1)).astype(np.float32)
    t = rng.standard_normal((1, channels, 3, width)).astype(np.float32)
    compiled = convc.compile(lambda x: ops.conv2d(ops.conv2d(x, dw, None, 1, 1, 1, channels) + t, pw), x)
    expected = conv_nd(conv_nd(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), dw, None, 1, 0, 1, channels) + t, pw)
    assert_close(compiled(x), expected, 10 * channels)


@pytest.mark.parametrize("size, filters, fused", [(28, 32, True), (7, 160, False)])
def test_late_narrow_maps_keep_the_two_convs(size, filters, fused):
    """On a 7x7 map with 160 filters the fused kernel would read the 1x1 weights once per row,
    more than the intermediate tensor it saves: the depthwise and 1x1 convs stay apart there."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 48, size, size)).astype(np.float32)
    w0, dw = rng.standard_normal((48, 48, 1, 1)).astype(np.float32) / 7, rng.standard_normal((48, 1, 3, 3))
    pw = rng.standard_normal((filters, 48, 1, 1)).astype(np.float32) / 7
    dw = dw.astype(np.float32)

    def model(x):
        return ops.conv2d(ops.conv2d(ops.conv2d(x, w0), dw, None, 1, 1, 1, 48), pw)

    compiled = convc.compile(model, x)
    assert ("separable_conv2d" in {n.op for n in compiled.graph.op_nodes()}) == fused
    assert_close(compiled(x), conv_nd(conv_nd(conv_nd(x, w0), dw, None, 1, 1, 1, 48), pw), 48 * 10)
