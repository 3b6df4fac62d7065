"""Layout assignment and residual fusion, as IR text before and after: a conv chain is reordered
only at its ends, a residual block stays blocked, plain users get one plain copy, and convs
without a blocked kernel keep the plain layout."""
import numpy as np

from convc import parse, verify
from convc.passes.assign_layout import AssignLayout
from convc.passes.dead_code import DeadCodeElimination
from convc.passes.fuse_epilogue import FuseEpilogue
from convc.passes.fuse_residual import FuseResidual
from convc.passes.pipeline import Pipeline
from convc.passes.shape_inference import ShapeInference


def run(text, *passes):
    return Pipeline([ShapeInference(), AssignLayout(lambda dtype: 16 if dtype == "f32" else 8), *passes]).run(
        parse(text))


CONV = 'stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=1, padding_mode="zeros"'


def test_a_conv_chain_is_reordered_only_at_its_ends():
    before = f"""
graph @chain(%x: f32[1,3,8,8], %w0: f32[32,3,3,3], %w1: f32[32,32,3,3]) {{
  %0 = conv2d(%x, %w0) {{{CONV}}}
  %1 = relu(%0)
  %2 = conv2d(%1, %w1) {{{CONV}}}
  %3 = sigmoid(%2)
  return %3
}}"""
    after = f"""
graph @chain(%x: f32[1,3,8,8], %w0: f32[32,3,3,3], %w1: f32[32,32,3,3]) {{
  %r = reorder(%x) {{block=16}} : f32[1,3,8,8;c16]
  %0 = conv2d(%r, %w0) {{{CONV}}} : f32[1,32,8,8;c16]
  %1 = relu(%0) : f32[1,32,8,8;c16]
  %2 = conv2d(%1, %w1) {{{CONV}}} : f32[1,32,8,8;c16]
  %3 = sigmoid(%2) : f32[1,32,8,8;c16]
  %p = reorder(%3) {{block=0}} : f32[1,32,8,8]
  return %p
}}"""
    assert run(before) == parse(after)


def test_a_residual_block_stays_blocked_and_fuses_its_add():
    before = f"""
graph @block(%x: f32[2,16,6,6]) {{
  %w0 = const f32[16,16,3,3]
  %w1 = const f32[16,16,3,3]
  %0 = conv2d(%x, %w0) {{{CONV}, activation="relu"}}
  %1 = conv2d(%0, %w1) {{{CONV}}}
  %2 = add(%1, %x)
  %3 = relu(%2)
  return %3
}}"""
    after = f"""
graph @block(%x: f32[2,16,6,6]) {{
  %w0 = const f32[16,16,3,3]
  %w1 = const f32[16,16,3,3]
  %r = reorder(%x) {{block=16}} : f32[2,16,6,6;c16]
  %0 = conv2d(%r, %w0) {{{CONV}, activation="relu"}} : f32[2,16,6,6;c16]
  %b = const f32[16]
  %1 = conv2d(%0, %w1, %b, %r) {{{CONV}, activation="relu"}} : f32[2,16,6,6;c16]
  %p = reorder(%1) {{block=0}} : f32[2,16,6,6]
  return %p
}}"""
    w = np.zeros((16, 16, 3, 3), np.float32)
    result = run(before, FuseResidual(), FuseEpilogue(), DeadCodeElimination())
    assert result == parse(after, consts={"w0": w, "w1": w, "b": np.zeros(16, np.float32)})


def test_plain_users_and_outputs_share_one_plain_copy():
    before = f"""
graph @g(%x: f64[1,8,5,5], %w: f64[8,8,3,3]) {{
  %0 = conv2d(%x, %w) {{{CONV}}}
  %1 = pad(%0) {{pad_lo=[0,0,1,1], pad_hi=[0,0,1,1], mode="reflect", value=0.0}}
  return %0, %1
}}"""
    after = f"""
graph @g(%x: f64[1,8,5,5], %w: f64[8,8,3,3]) {{
  %r = reorder(%x) {{block=8}} : f64[1,8,5,5;c8]
  %0 = conv2d(%r, %w) {{{CONV}}} : f64[1,8,5,5;c8]
  %p = reorder(%0) {{block=0}} : f64[1,8,5,5]
  %1 = pad(%p) {{pad_lo=[0,0,1,1], pad_hi=[0,0,1,1], mode="reflect", value=0.0}} : f64[1,8,7,7]
  return %p, %1
}}"""
    assert run(before) == parse(after)


def test_convs_without_a_blocked_kernel_and_lone_elementwise_ops_stay_plain():
    narrow_groups = 'stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=8, padding_mode="zeros"'
    text = f"""
graph @g(%x: f32[1,32,6,6], %u: f32[32,6,6], %w: f32[32,4,3,3], %v: f32[32,32,3,3]) {{
  %0 = conv2d(%x, %w) {{{narrow_groups}}}
  %1 = conv2d(%u, %v) {{{CONV}}}
  %2 = relu(%x)
  return %0, %1, %2
}}"""
    # groups of 4 channels do not fill a block; an unbatched input; an activation with no conv
    assert run(text) == Pipeline([ShapeInference()]).run(parse(text))


def test_a_depthwise_conv_is_blocked_only_beside_other_blocked_convs():
    depthwise = 'stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=32, padding_mode="zeros"'
    alone = f"""
graph @g(%x: f32[1,32,6,6], %w: f32[32,1,3,3]) {{
  %0 = conv2d(%x, %w) {{{depthwise}}}
  return %0
}}"""
    assert run(alone) == Pipeline([ShapeInference()]).run(parse(alone))
    beside = f"""
graph @g(%x: f32[1,32,6,6], %w: f32[32,1,3,3], %v: f32[32,32,3,3]) {{
  %0 = conv2d(%x, %w) {{{depthwise}}}
  %1 = conv2d(%0, %v) {{{CONV}}}
  return %1
}}"""
    assert [n.type.block for n in run(beside).op_nodes()] == [16, 16, 16, 0]


def test_the_verifier_rejects_layouts_no_kernel_could_run():
    import pytest
    from convc import ConvcError
    with pytest.raises(ConvcError, match="reorder: converts between the plain and a channel-blocked layout"):
        parse("graph @g(%x: f32[1,8,4,4]) {\n  %0 = reorder(%x) {block=0} : f32[1,8,4,4]\n  return %0\n}")
    with pytest.raises(ConvcError, match="not all laid out as the result"):
        verify(parse("graph @g(%x: f32[1,8,4,4;c8], %y: f32[1,8,4,4]) {\n  %0 = add(%x, %y) : f32[1,8,4,4;c8]\n"
              "  return %0\n}"))
    with pytest.raises(ConvcError, match="has no kernel for channel-blocked tensors"):
        verify(parse("graph @g(%x: f32[1,8,4,4;c8]) {\n  %0 = pad(%x) {pad_lo=[0,0,1,1], pad_hi=[0,0,1,1], "
              "mode=\"reflect\", value=0.0} : f32[1,8,6,6;c8]\n  return %0\n}"))
