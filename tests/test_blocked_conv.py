"""Convolutions on the channel-blocked layout (compiled graphs with constant weights) against the
NumPy reference, on the host's vector width and forced to 256 bits (so the AVX2 tiles run on
AVX-512 hosts too): channel counts that are not multiples of the block, rows narrower than a
vector, 1-wide maps, strides, dilations, every padding mode, aligned groups, depthwise convs, fused
activations and residuals; transposed convs (per-phase) likewise; plus the register-tile choice and the hot loop's assembly."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import convc
from convc import ops
from convc.runtime.kernels.conv_blocked import MAX_ACCUMULATORS, blocked_tiling
from convc.runtime.kernels.conv_blocked_nest import shared_interior
from convc.runtime.kernels.conv_geometry import Axis, transposed_row
from asm import assert_clean_hot_loop, x86_only
from widths import WIDTHS, narrowed
from reference import assert_close, conv_nd, conv_transpose_nd, pad



@pytest.fixture(params=WIDTHS, ids=lambda bits: f"{bits}bit")
def vector_bits(request):
    with narrowed(request.param):
        yield request.param


def block_of(compiled, node):
    """The channel block a conv's kernel works in: its output's, its input's where it writes plain,
    or its `block` attribute where both are plain."""
    return node.type.block or compiled.graph.type_of(node.operands[0]).block or node.attrs.get("block", 0)


def blocked_nodes(compiled):
    return [n for n in compiled.graph.op_nodes() if n.op.startswith("conv") and block_of(compiled, n)]


@st.composite
def blocked_cases(draw):
    rank = draw(st.sampled_from([1, 2, 3]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    lanes = 8 if dtype == np.float64 else 16  # the widest block; narrower hosts block by fewer
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise"]))
    if kind == "grouped":
        groups, cin_g, cout_g = 2, lanes, lanes * draw(st.integers(1, 2))
    elif kind == "depthwise":
        groups, cin_g, cout_g = draw(st.integers(1, 2 * lanes + 3)), 1, 1
    else:
        groups, cin_g, cout_g = 1, draw(st.integers(1, 2 * lanes + 3)), draw(st.integers(lanes // 2, 2 * lanes + 3))
    kernel = tuple(draw(st.integers(1, {1: 5, 2: 3, 3: 2}[rank])) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(rank))
    sizes = []
    for k, d, p in zip(kernel, dilation, padding):
        smallest = max(1, d * (k - 1) + 1 - 2 * p, p + 1 if mode == "reflect" else p if mode == "circular" else 1)
        sizes.append(draw(st.integers(smallest, smallest + {1: 30, 2: 9, 3: 4}[rank])))
    batch = draw(st.integers(1, 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.uniform(-1, 1, (batch, groups * cin_g, *sizes)).astype(dtype)
    w = rng.uniform(-1, 1, (groups * cout_g, cin_g, *kernel)).astype(dtype)
    bias = rng.uniform(-1, 1, groups * cout_g).astype(dtype) if draw(st.booleans()) else None
    epilogue = draw(st.sampled_from([None, "relu", "residual", "residual+relu", "sigmoid"]))
    return x, w, bias, stride, padding, dilation, groups, mode, epilogue, draw(st.booleans())


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
@given(case=blocked_cases())
def test_blocked_conv_matches_reference(vector_bits, case):
    with narrowed(vector_bits):
        check_blocked_conv(vector_bits, case)


def check_blocked_conv(vector_bits, case):
    x, w, bias, stride, padding, dilation, groups, mode, epilogue, weights_as_inputs = case
    rank = x.ndim - 2
    conv = f"conv{rank}d"

    expected = conv_nd(x, w, bias, stride, padding, dilation, groups, mode)
    residual = np.random.default_rng(7).uniform(-1, 1, expected.shape).astype(x.dtype)

    weights = [w] if bias is None else [w, bias]
    depthwise = groups > 1 and w.shape[:2] == (groups, 1)
    # a depthwise conv is blocked beside other blocked convs only: an identity 1x1 conv comes first
    identity = np.eye(x.shape[1], dtype=x.dtype).reshape(x.shape[1], x.shape[1], *(1,) * rank)

    def model(x, r, *given):  # the weights as graph inputs (packed on each call) or as constants
        if depthwise:
            x = ops.apply(conv, [x, identity], stride=1, padding=0, dilation=1, groups=1)
        y = ops.apply(conv, [x, *(given or weights)], stride=stride, padding=padding, dilation=dilation,
                      groups=groups, padding_mode=mode)
        if epilogue and epilogue.startswith("residual"):
            y = ops.add(r, y)
        if epilogue and epilogue.endswith("relu"):
            y = ops.relu(y)
        return ops.sigmoid(y) if epilogue == "sigmoid" else y

    inputs = (x, residual, *weights) if weights_as_inputs else (x, residual)
    compiled = convc.compile(model, *inputs)
    if epilogue and epilogue.startswith("residual"):
        expected = expected + residual
    if epilogue and epilogue.endswith("relu"):
        expected = np.maximum(expected, 0)
    if epilogue == "sigmoid":
        expected = 1 / (1 + np.exp(-expected))
    lanes = vector_bits // (32 if x.dtype == np.float32 else 64)
    if depthwise:  # blocked when its identity conv is
        assert [block_of(compiled, n) for n in blocked_nodes(compiled)] == [lanes] * 2 * (
            groups >= lanes or (2 * groups >= lanes and x.shape[-1] < 4 * lanes))
    elif w.shape[0] // groups >= lanes or (2 * w.shape[0] // groups >= lanes
                                           and (x.shape[1] >= lanes or x.shape[-1] < 4 * lanes)):
        assert [block_of(compiled, n) for n in blocked_nodes(compiled)] == [lanes]
    assert_close(compiled(*inputs), expected, int(np.prod(w.shape[1:])) + 2)


@st.composite
def transposed_cases(draw):
    rank = draw(st.sampled_from([1, 2, 3]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    lanes = 8 if dtype == np.float64 else 16
    groups = draw(st.sampled_from([1, 1, 2]))
    cin_g = lanes if groups > 1 else draw(st.integers(1, 2 * lanes + 3))
    cout_g = lanes * draw(st.integers(1, 2)) if groups > 1 else draw(st.integers(lanes // 2, 2 * lanes + 3))
    kernel = tuple(draw(st.integers(1, {1: 8, 2: 4, 3: 2}[rank])) for _ in range(rank))
    stride = tuple(draw(st.integers(1, {1: 5, 2: 3, 3: 2}[rank])) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(rank))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    sizes = tuple(draw(st.integers(1, {1: 12, 2: 6, 3: 3}[rank])) for _ in range(rank))
    for size, k, s, d, p, o in zip(sizes, kernel, stride, dilation, padding, output_padding):
        assume((size - 1) * s - 2 * p + d * (k - 1) + o + 1 >= 1)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.uniform(-1, 1, (draw(st.integers(1, 2)), groups * cin_g, *sizes)).astype(dtype)
    w = rng.uniform(-1, 1, (groups * cin_g, cout_g, *kernel)).astype(dtype)
    bias = rng.uniform(-1, 1, groups * cout_g).astype(dtype) if draw(st.booleans()) else None
    return x, w, bias, stride, padding, output_padding, groups, dilation, draw(st.sampled_from([None, "relu", "tanh"]))


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
@given(case=transposed_cases())
def test_blocked_transposed_conv_matches_reference(vector_bits, case):
    x, w, bias, stride, padding, output_padding, groups, dilation, activation = case
    rank = x.ndim - 2

    def model(x):
        y = getattr(ops, f"conv_transpose{rank}d")(x, w, bias, stride, padding, output_padding, groups, dilation)
        return getattr(ops, activation)(y) if activation else y

    with narrowed(vector_bits):
        compiled = convc.compile(model, x)
        actual = compiled(x)
    assert [block_of(compiled, n) for n in compiled.graph.op_nodes() if n.op.startswith("conv")] == \
        [vector_bits // (32 if x.dtype == np.float32 else 64)]
    expected = conv_transpose_nd(x, w, bias, stride, padding, output_padding, groups, dilation)
    if activation:
        expected = np.maximum(expected, 0) if activation == "relu" else np.tanh(expected)
    assert_close(actual, expected, int(np.prod(w.shape[1:])) + 2)


def test_a_conv_chain_is_reordered_only_at_its_ends(vector_bits):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 20, 9, 11)).astype(np.float32)
    w1, b1 = rng.standard_normal((24, 20, 3, 3)).astype(np.float32) / 10, rng.standard_normal(24).astype(np.float32)
    w2, b2 = rng.standard_normal((20, 24, 3, 3)).astype(np.float32) / 10, rng.standard_normal(20).astype(np.float32)

    def block(x):
        y = ops.relu(ops.conv2d(x, w1, b1, padding=1))
        return ops.relu(ops.add(ops.conv2d(y, w2, b2, padding=1), x))

    compiled = convc.compile(block, x)
    lanes = vector_bits // 32
    ops_and_blocks = [(n.op, n.type.block) for n in compiled.graph.op_nodes()]
    assert ops_and_blocks == [("reorder", lanes), ("conv2d", lanes), ("conv2d", lanes), ("reorder", 0)]
    residual_conv = compiled.graph.op_nodes()[2]
    assert residual_conv.attrs["activation"] == "relu" and len(residual_conv.operands) == 4
    expected = np.maximum(conv_nd(np.maximum(conv_nd(x, w1, b1, padding=1), 0), w2, b2, padding=1) + x, 0)
    assert_close(compiled(x), expected, 24 * 9 * 2)


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
@settings(max_examples=15)
@given(rank=st.sampled_from([1, 2, 3]), channels=st.integers(1, 8), middle=st.integers(8, 40),
       out=st.integers(8, 40), transposed=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_convs_read_a_plain_input_and_write_a_plain_output(vector_bits, rank, channels, middle, out, transposed, seed):
    """The reorders at both ends fold into the convs: the first broadcasts from the plain input,
    the last scatters into the plain output (with its partial last block)."""
    rng = np.random.default_rng(seed)
    size = {1: 17, 2: 7, 3: 4}[rank]
    channels = min(channels, vector_bits // 32)  # a plain input folds into the conv when one block holds it
    x = rng.standard_normal((2, channels) + (size,) * rank).astype(np.float32)
    w1 = rng.standard_normal((middle, channels) + (3,) * rank).astype(np.float32)
    w2 = rng.standard_normal((middle, out) + (2,) * rank if transposed else (out, middle) + (3,) * rank)
    w2, b = w2.astype(np.float32), rng.standard_normal(out).astype(np.float32)

    def model(x):
        y = ops.relu(getattr(ops, f"conv{rank}d")(x, w1, None, 2, 1))
        if transposed:  # stride 1: one row phase (strided phases keep their reorder)
            return getattr(ops, f"conv_transpose{rank}d")(y, w2, b, 1, 1)
        return getattr(ops, f"conv{rank}d")(y, w2, b, 1, 1)

    with narrowed(vector_bits):
        compiled = convc.compile(model, x)
        actual = compiled(x)
    assert [n.op for n in compiled.graph.op_nodes()] == [f"conv{rank}d", f"conv_transpose{rank}d" if transposed
                                                         else f"conv{rank}d"]
    y = np.maximum(conv_nd(x, w1, None, 2, 1), 0)
    expected = conv_transpose_nd(y, w2, b, 1, 1) if transposed else conv_nd(y, w2, b, 1, 1)
    assert_close(actual, expected, middle * 3 ** rank + channels * 3 ** rank)


@pytest.mark.parametrize("shape, weight, stride", [((1, 1, 400), (40, 1, 10), 5), ((2, 3, 30, 31), (20, 3, 7, 7), 2)])
def test_a_conv_with_few_input_channels_runs_blocked_between_plain_tensors(vector_bits, shape, weight, stride):
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(weight).astype(np.float32)
    conv = getattr(ops, f"conv{len(shape) - 2}d")
    compiled = convc.compile(lambda x: conv(x, w, None, stride, 1), x)
    (node,) = compiled.graph.op_nodes()  # no reorder: the kernel reads and writes the plain tensors
    assert node.attrs["block"] == vector_bits // 32 and not node.type.block
    assert_close(compiled(x), conv_nd(x, w, None, stride, 1), int(np.prod(weight[1:])))


def test_blocked_values_feed_plain_users_and_outputs_through_one_reorder():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 7, 7)).astype(np.float32)
    w = rng.standard_normal((32, 16, 1, 1)).astype(np.float32)

    def model(x):
        y = ops.conv2d(x, w)
        return y, ops.pad(y, (1, 1, 1, 1), mode="reflect"), ops.tanh(y)

    compiled = convc.compile(model, x)
    conv = blocked_nodes(compiled)[0]
    plain = [n for n in compiled.graph.users(conv.name) if n.op == "reorder"]
    assert len(plain) == 1 and [n.op for n in compiled.graph.users(plain[0].name)] == ["pad"]
    assert plain[0].name in compiled.graph.outputs
    y = conv_nd(x, w)
    outputs = compiled(x)
    assert_close(outputs[0], y, 16)
    assert_close(outputs[1], pad(y, (1, 1, 1, 1), "reflect"), 16)
    assert_close(outputs[2], np.tanh(y), 16)


@pytest.mark.parametrize("kind", ["dense", "depthwise", "transposed"])
def test_weights_that_are_inputs_are_packed_on_every_call(vector_bits, kind):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 20, 7, 9)).astype(np.float32)
    shape = {"dense": (24, 20, 3, 3), "depthwise": (20, 1, 3, 3), "transposed": (20, 12, 4, 4)}[kind]

    identity = np.eye(20, dtype=np.float32).reshape(20, 20, 1, 1)

    def model(x, w, b):
        if kind == "transposed":
            return ops.conv_transpose2d(x, w, b, stride=2, padding=1)
        if kind == "depthwise":  # blocked beside another blocked conv
            return ops.conv2d(ops.conv2d(x, identity), w, b, padding=1, groups=20)
        return ops.conv2d(x, w, b, padding=1)

    channels = shape[1] if kind == "transposed" else shape[0]
    w, b = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(channels).astype(np.float32)
    compiled = convc.compile(model, x, w, b)
    assert len(blocked_nodes(compiled)) == (2 if kind == "depthwise" else 1)
    for _ in range(2):  # new weights each call: nothing of the first call's packing may stay
        w, b = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(channels).astype(np.float32)
        if kind == "transposed":
            expected = conv_transpose_nd(x, w, b, stride=2, padding=1)
        else:
            expected = conv_nd(x, w, b, padding=1, groups=20 if kind == "depthwise" else 1)
        assert_close(compiled(x, w, b), expected, int(np.prod(shape[1:])) * 2)


@pytest.mark.parametrize("bits, dtype", [(256, "f32"), (512, "f32"), (256, "f64"), (512, "f64")])
@pytest.mark.parametrize("blocks, width", [(1, 3), (4, 56), (32, 7), (10, 1599), (2, 1)])
def test_register_tiles_fit_the_registers(bits, dtype, blocks, width):
    class Host:
        vector_bits = bits

        def lanes(self, dtype):
            return bits // (32 if dtype == "f32" else 64)

    tiling = blocked_tiling(Host(), dtype, blocks, width)
    assert blocks % tiling.vectors == 0 and 1 <= tiling.width <= width
    assert tiling.vectors * tiling.width <= MAX_ACCUMULATORS[bits]
    assert tiling.lanes == Host().lanes(dtype)


@x86_only
def test_the_resnet_3x3_hot_loop_has_no_stack_spills(vector_bits):
    x = np.zeros((1, 64, 56, 56), np.float32)
    w = np.random.default_rng(2).standard_normal((64, 64, 3, 3)).astype(np.float32)
    compiled = convc.compile(lambda x: ops.conv2d(x, w, padding=1), x)
    # a register tile of 16 accumulators (12 with the 16 registers of 128-bit SSE code)
    assert_clean_hot_loop(compiled.asm, "conv2d", vector_bits, 12 if vector_bits == 128 else 16)


@pytest.mark.parametrize("shape, out, residual", [((1, 96, 7, 7), 40, False), ((2, 20, 3, 5, 7), 24, True),
                                                  ((2, 5, 7, 7), 24, False), ((1, 40, 14, 14), 16, True)])
def test_pointwise_convs_on_small_maps(vector_bits, shape, out, residual):
    """1x1 convs on small maps (rows narrower than a tile), 3-D included, reading a plain input
    (5 channels) or writing a plain output, with a residual epilogue."""
    rng = np.random.default_rng(len(shape) + out)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((out, shape[1]) + (1,) * (len(shape) - 2)).astype(np.float32)
    r = rng.standard_normal((shape[0], out) + shape[2:]).astype(np.float32)
    conv = getattr(ops, f"conv{len(shape) - 2}d")

    def model(x, r):
        y = conv(x, w)
        return ops.relu(ops.add(y, r)) if residual else y

    compiled = convc.compile(model, x, r)
    assert [block_of(compiled, n) for n in blocked_nodes(compiled)] == [vector_bits // 32]
    expected = conv_nd(x, w)
    assert_close(compiled(x, r), np.maximum(expected + r, 0) if residual else expected, shape[1])


@pytest.mark.parametrize("shape, weight, stride, padding", [((1, 32, 20), (32, 24, 16), 8, 4),
                                                            ((2, 20, 6, 5), (20, 16, 4, 4), 2, 1),
                                                            ((1, 16, 9), (16, 16, 7), 3, 2)])
def test_transposed_phases_share_one_interior_loop(vector_bits, shape, weight, stride, padding):
    """Phases with the same number of taps (kernel a multiple of the stride) run one interior
    loop, their first output, tap and offset read from tables; phases that differ (k7, s3) do not."""
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(weight).astype(np.float32)
    b = rng.standard_normal(weight[1]).astype(np.float32)
    conv = getattr(ops, f"conv_transpose{len(shape) - 2}d")
    compiled = convc.compile(lambda x: ops.relu(conv(x, w, b, stride, padding)), x)
    assert [block_of(compiled, n) for n in blocked_nodes(compiled)] == [vector_bits // 32]
    size = shape[-1]
    axis = Axis(size, (size - 1) * stride - 2 * padding + weight[-1], weight[-1], stride, 1, padding)
    assert (shared_interior(transposed_row(axis), size) is not None) == (weight[-1] % stride == 0)
    expected = np.maximum(conv_transpose_nd(x, w, b, stride, padding), 0)
    assert_close(compiled(x), expected, weight[0] * int(np.prod(weight[2:])))


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("shape, weight, dilation, padding", [((1, 24, 90), (20, 24, 11), 5, 25),
                                                              ((2, 16, 7, 40), (16, 16, 5, 9), 2, 8)])
def test_wide_edges_are_bounds_checked_at_run_time(vector_bits, mode, shape, weight, dilation, padding):
    """Rows whose edge tiles would unroll many taps (HiFi-GAN's k11 d5 p25) run their edges as a
    loop of one tile body that maps each tap's column by the padding mode at run time."""
    from convc.runtime.kernels.conv_blocked_nest import MAX_EDGE_TAPS
    assert 2 * -(-padding // 14) * weight[-1] > MAX_EDGE_TAPS  # at least a tile per side, every tap
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(weight).astype(np.float32)
    b = rng.standard_normal(weight[0]).astype(np.float32)
    rank = len(shape) - 2
    pads = (padding,) if rank == 1 else (1, padding)
    compiled = convc.compile(lambda x: ops.relu(ops.apply(f"conv{rank}d", [x, w, b], stride=1, padding=pads,
                                                          dilation=dilation, groups=1, padding_mode=mode)), x)
    assert [block_of(compiled, n) for n in blocked_nodes(compiled)] == [vector_bits // 32]
    expected = np.maximum(conv_nd(x, w, b, 1, pads, dilation, 1, mode), 0)
    assert_close(compiled(x), expected, int(np.prod(weight[1:])))


@pytest.mark.parametrize("shape, out, mode", [((2, 64, 5, 6), 256, "zeros"), ((1, 96, 4, 4), 512, "reflect"),
                                              ((1, 40, 3, 3, 3), 256, "replicate")])
def test_small_maps_with_many_weights_run_each_chunk_over_the_whole_map(vector_bits, shape, out, mode):
    """Late-stage convs (small maps, weights beyond L1): the reduction's chunks run outside the
    rows (each chunk's weights serve the whole map; the partial sums stay in L1) and prefetch the
    weights ahead; with bias, residual and activation, then a 1x1 conv to a plain output."""
    rank = len(shape) - 2
    rng = np.random.default_rng(out + rank)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((out, shape[1]) + (3,) * rank).astype(np.float32)
    bias = rng.standard_normal(out).astype(np.float32)
    r = rng.standard_normal((shape[0], out) + shape[2:]).astype(np.float32)
    head = rng.standard_normal((8, out) + (1,) * rank).astype(np.float32)
    conv = f"conv{rank}d"

    def model(x, r):
        y = ops.apply(conv, [x, w, bias], stride=1, padding=1, dilation=1, groups=1, padding_mode=mode)
        return ops.apply(conv, [ops.relu(ops.add(y, r)), head], stride=1, padding=0, dilation=1, groups=1)

    compiled = convc.compile(model, x, r)
    assert len(blocked_nodes(compiled)) == 2
    middle = np.maximum(conv_nd(x, w, bias, padding=1, padding_mode=mode) + r, 0)
    assert_close(compiled(x, r), conv_nd(middle, head), shape[1] * 3 ** rank + out)
