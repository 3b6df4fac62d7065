"""Batch-norm folding as IR text before and after and in values (convolutions of every kind and
rank, linear), the cases that keep their batch_norm and still compute right, and the layout of a
batch_norm left between two blocked convs (no reorder between them)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convc
import reference
from convc import ops, parse
from convc.passes.assign_layout import AssignLayout
from convc.passes.dead_code import DeadCodeElimination
from convc.passes.fold_batch_norm import FoldBatchNorm
from convc.passes.pipeline import Pipeline
from convc.passes.shape_inference import ShapeInference
from convc.registry import REGISTRY
from reference import assert_close
from strategies import conv_cases, conv_transpose_cases

CONV = 'stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=1, padding_mode="zeros"'


def _statistics(rng, channels, dtype, affine=(True, True)):
    mean, var = rng.standard_normal(channels).astype(dtype), rng.uniform(0.2, 2, channels).astype(dtype)
    weight = rng.uniform(-2, 2, channels).astype(dtype) if affine[0] else None
    bias = rng.uniform(-2, 2, channels).astype(dtype) if affine[1] else None
    return mean, var, weight, bias


def test_a_batch_norm_after_a_conv_folds_into_its_weight_and_bias():
    before = f"""
graph @g(%x: f32[1,3,6,6]) {{
  %w = const f32[4,3,3,3]
  %m = const f32[4]
  %v = const f32[4]
  %s = const f32[4]
  %t = const f32[4]
  %0 = conv2d(%x, %w) {{{CONV}}}
  %1 = batch_norm(%0, %m, %v, %s, %t) {{eps=0.001}}
  %2 = relu(%1)
  return %2
}}"""
    after = f"""
graph @g(%x: f32[1,3,6,6]) {{
  %w2 = const f32[4,3,3,3]
  %b2 = const f32[4]
  %0 = conv2d(%x, %w2, %b2) {{{CONV}}} : f32[1,4,6,6]
  %2 = relu(%0) : f32[1,4,6,6]
  return %2
}}"""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    mean, var, scale, shift = _statistics(rng, 4, np.float32)
    graph = parse(before, consts={"w": w, "m": mean, "v": var, "s": scale, "t": shift})
    folded = Pipeline([ShapeInference(), FoldBatchNorm(), DeadCodeElimination()]).run(graph.copy())
    assert folded == parse(after)
    assert "batch_norm" not in str(folded)
    factor = scale / np.sqrt(var.astype(np.float64) + 1e-3)
    np.testing.assert_allclose(folded.node(folded.node("0").operands[1]).value, w * factor[:, None, None, None],
                               rtol=1e-6)
    np.testing.assert_allclose(folded.node(folded.node("0").operands[2]).value, shift - mean * factor, rtol=1e-5,
                               atol=1e-6)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    expected = reference.relu(reference.batch_norm(reference.conv_nd(x, w, padding=1), mean, var, scale, shift, 1e-3))
    assert_close(convc.compile(graph, cache_dir=False)(x), expected, terms=27)


@settings(max_examples=25)
@given(st.one_of(conv_cases(), conv_transpose_cases()), st.booleans(), st.booleans(), st.sampled_from([1, 2]),
       st.integers(0, 2**32 - 1))
def test_folded_convs_compute_conv_then_batch_norm(case, with_weight, with_bias, opt_level, seed):
    transposed = not hasattr(case, "padding_mode")
    if transposed:
        kwargs = dict(stride=case.stride, padding=case.padding, output_padding=case.output_padding,
                      groups=case.groups, dilation=case.dilation)
        conv, ref = getattr(ops, f"conv_transpose{case.rank}d"), reference.conv_transpose_nd
    else:
        kwargs = dict(stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups)
        conv, ref = getattr(ops, f"conv{case.rank}d"), reference.conv_nd
    x = case.x if case.x.ndim == case.rank + 2 else case.x[None]  # batched: channels on axis 1
    y = ref(x, case.w, case.bias, **kwargs)
    rng = np.random.default_rng(seed)
    mean, var, weight, bias = _statistics(rng, y.shape[1], x.dtype, (with_weight, with_bias))
    compiled = convc.compile(lambda a: ops.batch_norm(conv(a, case.w, case.bias, **kwargs), mean, var, weight, bias),
                             x, opt_level=opt_level, cache_dir=False)
    assert [n.op for n in compiled.graph.op_nodes() if n.op == "batch_norm"] == []
    assert_close(compiled(x), reference.batch_norm(y, mean, var, weight, bias), terms=4 * case.terms)


def test_a_batch_norm_after_a_linear_folds():
    if "linear" not in REGISTRY:
        pytest.skip("no linear op")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    w, b = rng.standard_normal((6, 7)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    mean, var, weight, bias = _statistics(rng, 6, np.float32)
    for linear_bias, expected_bias in ((b, b), (None, 0.0), (np.float32(0.5).reshape(1), 0.5)):
        compiled = convc.compile(lambda a: ops.batch_norm(ops.linear(a, w, linear_bias), mean, var, weight, bias),
                                 x, opt_level=1, cache_dir=False)
        assert [n.op for n in compiled.graph.op_nodes()] == ["linear"]
        expected = reference.batch_norm(x.astype(np.float64) @ w.T + expected_bias, mean, var, weight, bias)
        assert_close(compiled(x), expected.astype(np.float32), terms=28)
    # a 3-D linear's features are its last axis, not batch_norm's axis 1: no fold
    x3 = rng.standard_normal((2, 6, 7)).astype(np.float32)
    w3 = rng.standard_normal((4, 7)).astype(np.float32)
    compiled = convc.compile(lambda a: ops.batch_norm(ops.linear(a, w3), mean, var, weight, bias), x3,
                             opt_level=1, cache_dir=False)
    assert "batch_norm" in [n.op for n in compiled.graph.op_nodes()]
    expected = reference.batch_norm(x3.astype(np.float64) @ w3.T, mean, var, weight, bias).astype(np.float32)
    assert_close(compiled(x3), expected, terms=28)


def _conv_then_norm(shared_conv=False, norm_on_input=False, weight_input=False, activation=False,
                    dependent_mean=False):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    mean, var, scale, shift = _statistics(rng, 4, np.float32)

    def model(a, weight):
        if norm_on_input:
            return ops.batch_norm(a, mean, var, scale, shift)
        y = ops.conv2d(a, weight, padding=1)
        if activation:
            y = ops.relu(y)
        stats = (ops.mean(a, (0, 2, 3)), var) if dependent_mean else (mean, var)
        normed = ops.batch_norm(y, *stats, scale, shift)
        return ops.add(normed, y) if shared_conv else normed

    def expected(a, weight):
        if norm_on_input:
            return reference.batch_norm(a, mean, var, scale, shift)
        y = reference.conv_nd(a, weight, padding=1)
        if activation:
            y = reference.relu(y)
        m = reference.mean(a, (0, 2, 3)) if dependent_mean else mean
        normed = reference.batch_norm(y, m, var, scale, shift)
        return normed + y if shared_conv else normed

    if weight_input:
        return convc.compile(model, x, w, cache_dir=False), (x, w), expected(x, w)
    return convc.compile(lambda a: model(a, w), x, cache_dir=False), (x,), expected(x, w)


@pytest.mark.parametrize("case", ["shared_conv", "norm_on_input", "weight_input", "activation", "dependent_mean"])
def test_unfoldable_batch_norms_stay_and_compute_right(case):
    compiled, inputs, expected = _conv_then_norm(**{case: True})
    assert "batch_norm" in [n.op for n in compiled.graph.op_nodes()]
    assert_close(compiled(*inputs), expected, terms=36 * 4)


def test_a_batch_norm_after_an_unbatched_conv_does_not_fold():
    # (C, H, W): batch_norm's axis 1 is H, not the conv's channels
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    mean, var, scale, shift = _statistics(rng, 5, np.float32)
    compiled = convc.compile(lambda a: ops.batch_norm(ops.conv2d(a, w, padding=1), mean, var, scale, shift), x,
                             cache_dir=False)
    assert "batch_norm" in [n.op for n in compiled.graph.op_nodes()]
    expected = reference.batch_norm(reference.conv_nd(x, w, padding=1), mean, var, scale, shift)
    assert_close(compiled(x), expected, terms=36 * 4)


def test_an_unfolded_batch_norm_keeps_the_blocked_layout_between_convs():
    text = f"""
graph @g(%x: f32[1,32,8,8], %m: f32[32], %v: f32[32]) {{
  %w0 = const f32[32,32,3,3]
  %w1 = const f32[32,32,3,3]
  %0 = conv2d(%x, %w0) {{{CONV}}}
  %1 = batch_norm(%0, %m, %v) {{eps=1e-05}}
  %2 = group_norm(%1) {{num_groups=4, eps=1e-05}}
  %3 = conv2d(%2, %w1) {{{CONV}}}
  return %3
}}"""
    after = f"""
graph @g(%x: f32[1,32,8,8], %m: f32[32], %v: f32[32]) {{
  %w0 = const f32[32,32,3,3]
  %w1 = const f32[32,32,3,3]
  %r = reorder(%x) {{block=16}} : f32[1,32,8,8;c16]
  %0 = conv2d(%r, %w0) {{{CONV}}} : f32[1,32,8,8;c16]
  %1 = batch_norm(%0, %m, %v) {{eps=1e-05}} : f32[1,32,8,8;c16]
  %2 = group_norm(%1) {{num_groups=4, eps=1e-05}} : f32[1,32,8,8;c16]
  %3 = conv2d(%2, %w1) {{{CONV}}} : f32[1,32,8,8;c16]
  %p = reorder(%3) {{block=0}} : f32[1,32,8,8]
  return %p
}}"""
    passes = [ShapeInference(), FoldBatchNorm(), AssignLayout(lambda dtype: 16)]
    assert Pipeline(passes).run(parse(text)) == parse(after)
