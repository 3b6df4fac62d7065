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
from reference import assert_close, conv_nd
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
