"""Narrow-group merging and per-channel operands on the blocked layout.

Grouped convs whose groups are narrower than a channel block (any rank, stride, dilation,
padding, bias, activation), at both vector widths, agree with the float64 reference, and where
the merge rule applies the compiled conv has fewer, block-wide groups and runs blocked. A
squeeze-excitation block (per-channel scale between blocked convs) compiles with no reorder
inside it."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

import convc
import reference as ref
from convc import ops
from convc.passes.merge_groups import MAX_MERGE, block_diagonal, merge_count
from reference import assert_close
from widths import WIDTHS, narrowed


def lanes_of(bits: int) -> int:
    return bits // 32


@pytest.mark.parametrize("cin_g, cout_g, groups, lanes, row, stride, expected", [
    (8, 8, 20, 16, 7, 1, 2),      # RegNet's groups of 8 on AVX-512, a late stage
    (8, 8, 20, 16, 31, 1, 2),     # two groups merged: rows narrower than two vectors
    (8, 8, 20, 16, 32, 1, None),  # the plain kernel fills its vectors along the row
    (8, 8, 20, 16, 56, 2, 2),     # ... unless its rows are strided
    (4, 4, 16, 16, 15, 1, 4),
    (4, 4, 16, 16, 16, 1, None),  # four groups merged: rows narrower than one vector only
    (4, 8, 8, 16, 7, 1, 4),       # both widths must become whole blocks
    (2, 2, 32, 16, 7, 1, None),   # 8 groups would be merged: more than MAX_MERGE
    (8, 8, 5, 16, 7, 1, None),    # 2 does not divide 5 groups
    (16, 32, 4, 16, 7, 1, None),  # already whole blocks
    (8, 8, 20, 8, 7, 1, None),
    (4, 4, 6, 8, 7, 1, 2),
    (3, 3, 16, 8, 7, 1, None),    # 8 groups of 3 channels: more than MAX_MERGE
])
def test_merge_count(cin_g, cout_g, groups, lanes, row, stride, expected):
    assert merge_count(cin_g, cout_g, groups, lanes, row, stride) == expected
    if expected is not None:
        assert expected <= MAX_MERGE and groups % expected == 0
        assert (expected * cin_g) % lanes == 0 and (expected * cout_g) % lanes == 0


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.sampled_from([1, 2, 4]), st.integers(1, 3))
def test_block_diagonal_is_the_same_conv(cin_g, cout_g, merged_groups, k, kernel):
    """The merged weight with groups/k groups computes the grouped conv exactly (reference conv)."""
    groups = merged_groups * k
    rng = np.random.default_rng(cin_g * 100 + cout_g * 10 + k)
    w = rng.standard_normal((groups * cout_g, cin_g, kernel)).astype(np.float32)
    x = rng.standard_normal((2, groups * cin_g, 9)).astype(np.float32)
    merged = block_diagonal(w, groups, k)
    assert merged.shape == (groups * cout_g, k * cin_g, kernel)
    np.testing.assert_allclose(ref.conv_nd(x, merged, groups=merged_groups), ref.conv_nd(x, w, groups=groups),
                               rtol=1e-12, atol=1e-12)


@st.composite
def grouped_convs(draw):
    rank = draw(st.sampled_from([1, 2, 2, 3]))
    cin_g = draw(st.sampled_from([1, 2, 4, 8, 3, 5]))
    cout_g = draw(st.sampled_from([1, 2, 4, 8, 6]))
    groups = draw(st.sampled_from([2, 4, 6, 8]))
    kernel = draw(st.integers(1, 3))
    spatial = tuple(draw(st.integers(kernel, 9 if rank < 3 else 5)) for _ in range(rank))
    return dict(rank=rank, cin_g=cin_g, cout_g=cout_g, groups=groups, kernel=kernel, spatial=spatial,
                stride=draw(st.sampled_from([1, 2])), padding=draw(st.integers(0, kernel - 1)),
                dilation=draw(st.sampled_from([1, 2])) if kernel > 1 else 1,
                bias=draw(st.booleans()), relu=draw(st.booleans()), dtype=draw(st.sampled_from(["float32", "float64"])))


CONV = {1: ops.conv1d, 2: ops.conv2d, 3: ops.conv3d}


def _grouped_case(case: dict, seed: int):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(case["dtype"])
    groups, rank = case["groups"], case["rank"]
    x = rng.standard_normal((1, groups * case["cin_g"], *case["spatial"])).astype(dtype)
    w = rng.standard_normal((groups * case["cout_g"], case["cin_g"]) + (case["kernel"],) * rank).astype(dtype)
    b = rng.standard_normal(groups * case["cout_g"]).astype(dtype) if case["bias"] else None
    return x, w, b


@pytest.mark.parametrize("bits", WIDTHS)
@settings(max_examples=25, deadline=None)
@given(case=grouped_convs(), seed=st.integers(0, 2**16))
def test_grouped_convs_match_reference(bits, case, seed):
    x, w, b = _grouped_case(case, seed)
    if any((n + 2 * case["padding"] - case["dilation"] * (case["kernel"] - 1) - 1) < 0 for n in case["spatial"]):
        return  # no output position
    conv = CONV[case["rank"]]

    def model(t):
        y = conv(t, w, b, case["stride"], case["padding"], case["dilation"], case["groups"])
        return ops.relu(y) if case["relu"] else y

    with narrowed(bits):
        compiled = convc.compile(model, x, cache_dir=False)
        note(str(compiled.graph))
        actual = compiled(x)
    expected = ref.conv_nd(x, w, b, case["stride"], case["padding"], case["dilation"], case["groups"])
    if case["relu"]:
        expected = ref.relu(expected)
    assert_close(actual, expected, terms=w[0].size)
    lanes = bits // (32 if case["dtype"] == "float32" else 64)
    (node,) = [n for n in compiled.graph.op_nodes() if n.op.startswith("conv")]
    k = merge_count(case["cin_g"], case["cout_g"], case["groups"], lanes, node.type.shape[-1], case["stride"])
    depthwise = case["cin_g"] == 1 and case["cout_g"] == 1
    if k is not None and not depthwise:
        assert node.attrs["groups"] == case["groups"] // k
        blocked = {node.type.block, compiled.graph.type_of(node.operands[0]).block, node.attrs.get("block")}
        assert lanes in blocked  # blocked result, input, or both plain with the blocked kernel
    else:
        assert node.attrs["groups"] == case["groups"]


def se_block(x, w1, w2, w_down, w_up, groups):
    """RegNet-Y's bottleneck: 1x1, grouped 3x3, squeeze-excitation, 1x1, residual."""
    y = ops.relu(ops.conv2d(x, w1))
    y = ops.relu(ops.conv2d(y, w2, None, 1, 1, 1, groups))
    s = ops.sigmoid(ops.conv2d(ops.relu(ops.conv2d(ops.adaptive_avg_pool2d(y, 1), w_down)), w_up))
    y = ops.mul(y, s)
    return ops.relu(ops.add(ops.conv2d(y, w1), x))


@pytest.mark.parametrize("bits", WIDTHS)
def test_squeeze_excitation_block_stays_blocked(bits):
    rng = np.random.default_rng(0)
    channels, groups = 32, 4
    x = rng.standard_normal((1, channels, 9, 9)).astype(np.float32)
    w1 = rng.standard_normal((channels, channels, 1, 1)).astype(np.float32) * 0.2
    w2 = rng.standard_normal((channels, channels // groups, 3, 3)).astype(np.float32) * 0.2
    w_down = rng.standard_normal((8, channels, 1, 1)).astype(np.float32) * 0.2
    w_up = rng.standard_normal((channels, 8, 1, 1)).astype(np.float32) * 0.2
    with narrowed(bits):
        compiled = convc.compile(lambda t: se_block(t, w1, w2, w_down, w_up, groups), x, cache_dir=False)
        actual = compiled(x)
    graph = compiled.graph
    reorders = [n for n in graph.op_nodes() if n.op == "reorder"]
    assert len(reorders) == 2, graph.dump()  # the input in, the output out
    (grouped,) = [n for n in graph.op_nodes() if n.op == "conv2d" and graph.type_of(n.operands[1]).shape[2] == 3]
    assert grouped.type.block == lanes_of(bits)
    scale = [n for n in graph.op_nodes() if n.op in ("mul", "fused_elementwise")
             and any(graph.type_of(o).shape == (1, channels, 1, 1) for o in n.operands)]
    assert scale and all(n.type.block for n in scale), graph.dump()

    def reference(t):
        y = ref.relu(ref.conv_nd(t, w1))
        y = ref.relu(ref.conv_nd(y, w2, padding=1, groups=groups))
        pooled = y.mean(axis=(2, 3), keepdims=True)
        s = ref.sigmoid(ref.conv_nd(ref.relu(ref.conv_nd(pooled, w_down)), w_up))
        return ref.relu(ref.conv_nd(y * s, w1) + t)
    assert_close(actual, reference(x), terms=channels * 9)


@pytest.mark.parametrize("bits", WIDTHS)
def test_channel_broadcast_operands_on_the_blocked_layout(bits):
    """Operands of shape (1, C, 1, W) and (N, C, 1, 1), and a constant layer scale (C, 1, 1),
    against a blocked (N, C, H, W) result read in its layout; a (1, 1, H, W) operand cannot, so
    the op runs plain."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 20, 5, 6)).astype(np.float32)
    w = rng.standard_normal((20, 20, 1, 1)).astype(np.float32) * 0.3
    row = rng.standard_normal((1, 20, 1, 6)).astype(np.float32)
    per_sample = rng.standard_normal((2, 20, 1, 1)).astype(np.float32)
    mask = rng.standard_normal((1, 1, 5, 6)).astype(np.float32)
    layer_scale = rng.standard_normal((20, 1, 1)).astype(np.float32)

    def model(t):
        y = ops.conv2d(t, w)
        y = ops.add(ops.mul(y, per_sample), row)
        z = ops.relu(ops.conv2d(t, w))
        return ops.conv2d(y, w), ops.mul(ops.conv2d(t, w), mask), ops.conv2d(ops.add(z, ops.mul(layer_scale, z)), w)

    with narrowed(bits):
        compiled = convc.compile(model, x, cache_dir=False)
        first, second, third = compiled(x)
    y = ref.conv_nd(x, w) * per_sample + row
    assert_close(first, ref.conv_nd(y, w), terms=40)
    assert_close(second, ref.conv_nd(x, w) * mask, terms=20)
    z = ref.relu(ref.conv_nd(x, w))
    assert_close(third, ref.conv_nd(z + layer_scale * z, w), terms=40)
    graph = compiled.graph
    for node in graph.op_nodes():
        if node.op in ("mul", "add", "fused_elementwise"):
            shapes = {graph.type_of(o).shape for o in node.operands}
            assert bool(node.type.block) == ((1, 1, 5, 6) not in shapes), graph.dump()
