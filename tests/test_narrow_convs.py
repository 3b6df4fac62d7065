"""Convs with fewer input and output channels than a vector has lanes, on rows of 4 vectors or
more, run the plain kernel, vectorized along the row, with their residual add and activation fused
in (the blocked layout would leave lanes of every vector empty): checked against the NumPy reference at every vector width, every padding
mode, kernels wide enough to take the tap loop (and the row path beyond it), on the IR the
passes make, and on the hot loop's assembly."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convc
from convc import ops, parse
from convc.passes.assign_layout import AssignLayout
from convc.passes.fuse_epilogue import FuseEpilogue
from convc.passes.fuse_residual import FuseResidual
from convc.passes.pipeline import Pipeline
from convc.passes.shape_inference import ShapeInference
from asm import assert_clean_hot_loop, x86_only
from reference import assert_close, conv_nd, conv_transpose_nd
from widths import WIDTHS, narrowed

ACTIVATIONS = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0), "tanh": np.tanh,
               "leaky_relu": lambda v: np.where(v < 0, 0.1 * v, v)}


@st.composite
def narrow_cases(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rank = draw(st.sampled_from([1, 1, 2]))
    c_in, c_out = draw(st.integers(1, 12)), draw(st.integers(1, 7))
    kernel = draw(st.sampled_from([1, 3, 7, 11, 19, 33])) if rank == 1 else draw(st.integers(1, 5))
    dilation = draw(st.integers(1, 3))
    stride = draw(st.sampled_from([1, 1, 2, 3]))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    padding = draw(st.integers(0, dilation * (kernel - 1)))
    reach = dilation * (kernel - 1) + 1
    low = max(1, reach - 2 * padding, padding + 1 if mode in ("reflect", "circular") else 1)
    length = draw(st.integers(low, low + 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    spatial = (length,) if rank == 1 else (reach + draw(st.integers(0, 3)), length)  # rows are not padded
    shape = (draw(st.integers(1, 2)), c_in, *spatial)
    x = rng.uniform(-1, 1, shape).astype(dtype)
    w = (rng.uniform(-1, 1, (c_out, c_in, *(kernel,) * rank)) / np.sqrt(c_in * kernel ** rank)).astype(dtype)
    b = rng.uniform(-1, 1, c_out).astype(dtype)
    activation = draw(st.sampled_from(sorted(ACTIVATIONS, key=str)))
    return x, w, b, stride, padding if rank == 1 else (0, padding), dilation, mode, activation


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
@settings(max_examples=30, deadline=None)
@given(case=narrow_cases())
def test_a_narrow_conv_with_its_residual_and_activation_matches_the_reference(vector_bits, case):
    x, w, b, stride, padding, dilation, mode, activation = case
    expected = conv_nd(x, w, b, stride, padding, dilation, padding_mode=mode)
    residual = np.random.default_rng(1).uniform(-1, 1, expected.shape).astype(x.dtype)
    conv = "conv1d" if x.ndim == 3 else "conv2d"

    def model(x, r):
        y = ops.add(ops.apply(conv, [x, w, b], stride=stride, padding=padding, dilation=dilation, groups=1,
                              padding_mode=mode), r)
        return getattr(ops, activation)(y, 0.1) if activation == "leaky_relu" else (
            getattr(ops, activation)(y) if activation else y)

    with narrowed(vector_bits):
        compiled = convc.compile(model, x, residual)
        actual = compiled(x, residual)
    lanes = vector_bits // (32 if x.dtype == np.float32 else 64)
    if w.shape[0] < lanes and w.shape[1] < lanes and x.shape[-1] >= 4 * lanes:  # one plain kernel, all fused
        (node,) = [n for n in compiled.graph.op_nodes() if n.op != "const"]
        assert node.op == conv and not node.type.block and not node.attrs.get("block") and len(node.operands) == 4
    assert_close(actual, ACTIVATIONS[activation](expected + residual).astype(x.dtype), int(np.prod(w.shape[1:])) + 2)


def test_a_conv_narrower_than_a_block_stays_plain_and_fuses_its_residual():
    conv = 'stride=[1], pad_lo=[1], pad_hi=[1], dilation=[1], groups=1, padding_mode="zeros"'
    text = f"""
graph @g(%x: f32[1,8,64], %w: f32[8,8,3], %v: f32[16,8,3]) {{
  %0 = conv1d(%x, %w) {{{conv}}}
  %1 = add(%0, %x)
  %2 = conv1d(%1, %v) {{{conv}}}
  return %2
}}"""
    passes = [ShapeInference(), AssignLayout(lambda dtype: 16), FuseResidual(), FuseEpilogue()]
    result = Pipeline(passes).run(parse(text))
    narrow, wide = [n for n in result.op_nodes() if n.op == "conv1d"]
    assert not narrow.type.block and narrow.operands[0] == "x" and narrow.operands[3] == "x"
    assert wide.type.block == 16  # 16 output channels fill the block


@x86_only
@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
def test_the_hot_loop_of_a_wide_kernel_has_no_stack_spills(vector_bits):
    """Eleven taps of a 4x4 tile unrolled in one block were scheduled loads first, into spills;
    the tap loop keeps each step's FMAs within the registers."""
    x = np.zeros((1, 8, 4096), np.float32)
    w = np.random.default_rng(2).standard_normal((8, 8, 11)).astype(np.float32)
    with narrowed(vector_bits):
        compiled = convc.compile(lambda x: ops.conv1d(x, w, padding=5), x)
        assert_clean_hot_loop(compiled.asm, "conv1d", vector_bits, 8)


def test_a_transposed_conv_to_fewer_channels_than_a_block_runs_plain_with_the_stage_after_it():
    """A strided transposed conv cannot write its phases plain, so where its output is narrower
    than a block it reads a plain copy of its input, and the narrow stage after it (activation,
    convs with their residuals fused) stays plain: no reorder inside the stage."""
    conv = 'stride=[1], pad_lo=[1], pad_hi=[1], dilation=[1], groups=1, padding_mode="zeros"'
    text = f"""
graph @g(%x: f32[1,16,64], %u: f32[16,16,3], %t: f32[16,8,8], %w: f32[8,8,3]) {{
  %0 = conv1d(%x, %u) {{{conv}}}
  %1 = conv_transpose1d(%0, %t) {{stride=[4], pad_lo=[2], pad_hi=[2], dilation=[1], groups=1}}
  %2 = leaky_relu(%1) {{negative_slope=0.1}}
  %3 = conv1d(%2, %w) {{{conv}}}
  %4 = add(%3, %1)
  return %4
}}"""
    passes = [ShapeInference(), AssignLayout(lambda dtype: 16), FuseResidual(), FuseEpilogue()]
    result = Pipeline(passes).run(parse(text))
    nodes = {n.op: n for n in result.op_nodes() if n.op != "const"}
    assert nodes["conv_transpose1d"].type.block == 0 and nodes["leaky_relu"].type.block == 0
    (narrow,) = [n for n in result.op_nodes() if n.op == "conv1d" and n.type.shape[1] == 8]
    assert not narrow.type.block and len(narrow.operands) == 4  # the residual add fused, plain
    assert [n.type.block for n in result.op_nodes() if n.op == "reorder"] == [16, 0]  # in, and before %1


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
def test_a_wide_conv_then_a_narrow_transposed_stage_matches_the_reference(vector_bits):
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (1, 16, 64)).astype(np.float32)
    u = (rng.uniform(-1, 1, (16, 16, 3)) / 7).astype(np.float32)
    t = (rng.uniform(-1, 1, (16, 8, 8)) / 11).astype(np.float32)
    w = (rng.uniform(-1, 1, (8, 8, 3)) / 5).astype(np.float32)

    def model(x):
        y = ops.conv_transpose1d(ops.conv1d(x, u, padding=1), t, stride=4, padding=2)
        return ops.add(ops.conv1d(ops.leaky_relu(y, 0.1), w, padding=1), y)

    with narrowed(vector_bits):
        actual = convc.compile(model, x)(x)
    y = conv_transpose_nd(conv_nd(x, u, None, 1, 1, 1), t, None, 4, 2, 0, 1, 1)
    expected = (conv_nd(np.where(y < 0, 0.1 * y, y), w, None, 1, 1, 1) + y).astype(np.float32)
    assert_close(actual, expected, 16 * 3 * 3 + 8 * 3)
