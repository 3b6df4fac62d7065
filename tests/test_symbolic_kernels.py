"""Graphs compiled once with a symbolic length, run at many lengths: each call against the NumPy
reference at that length (every vector width), the checks a call's lengths go through (bounds,
the ops' minimums, one symbol on two inputs, rank), no compile after the first, and the ops
whose kernels take fixed sizes only refused by name."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_close, conv_nd, conv_transpose_nd
from widths import WIDTHS, narrowed

import convc
from convc import ConvcError, Dim, ops

ACTIVATIONS = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0),
               "leaky_relu": lambda v: np.where(v < 0, 0.1 * v, v)}


def _activation(name, y):
    if name == "relu":
        return ops.relu(y)
    if name == "leaky_relu":
        return ops.leaky_relu(y, 0.1)
    return y


def shortest(kernel: int, stride: int, padding: int, dilation: int, mode: str) -> int:
    """torch's shortest input of a conv1d: one output, and a reflect pad narrower than the input."""
    low = max(1, dilation * (kernel - 1) + 1 - 2 * padding)
    if mode == "reflect":
        low = max(low, padding + 1)
    if mode == "circular":
        low = max(low, padding)
    return low


@st.composite
def conv_stacks(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    channels = draw(st.integers(16, 40))
    layers = []
    for _ in range(draw(st.integers(1, 2))):
        kernel, dilation = draw(st.integers(1, 7)), draw(st.integers(1, 3))
        stride = draw(st.sampled_from([1, 1, 2, 3]))
        padding = draw(st.integers(0, dilation * (kernel - 1) // 2 + 1))
        mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
        if mode != "zeros" and padding == 0:
            mode = "zeros"
        layers.append((kernel, stride, padding, dilation, mode, draw(st.sampled_from(sorted(ACTIVATIONS, key=str)))))
    residual = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    lengths = draw(st.lists(st.integers(0, 90), min_size=2, max_size=4))
    return dtype, channels, layers, residual, seed, lengths


def _lowest_length(layers) -> int:
    """The shortest input every layer accepts (each layer's output feeds the next)."""
    for length in range(1, 10_000):
        size = length
        for kernel, stride, padding, dilation, mode, _ in layers:
            if size < shortest(kernel, stride, padding, dilation, mode):
                break
            size = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
        else:
            return length
    raise AssertionError("no length")


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
@settings(max_examples=8)
@given(case=conv_stacks())
def test_a_conv_stack_compiled_once_matches_the_reference_at_every_length(vector_bits, case):
    """Conv layers (any kernel, stride, dilation, padding and padding mode, activations fused),
    then, with `residual`, a same-length conv whose input is added to its output."""
    dtype, channels, layers, residual, seed, lengths = case
    rng = np.random.default_rng(seed)
    kernels = [kernel for kernel, *_ in layers] + [3]
    weights = [((rng.uniform(-1, 1, (channels, channels, kernel)) / np.sqrt(channels * kernel)).astype(dtype),
                rng.uniform(-1, 1, channels).astype(dtype)) for kernel in kernels]

    def model(x):
        y = x
        for (w, b), (_, stride, padding, dilation, mode, activation) in zip(weights, layers):
            y = _activation(activation, ops.apply("conv1d", [y, w, b], stride=stride, padding=padding,
                                                  dilation=dilation, groups=1, padding_mode=mode))
        return ops.conv1d(y, *weights[-1], padding=1) + y if residual else y

    def reference(x):
        y = x.astype(np.float64)
        for (w, b), (_, stride, padding, dilation, mode, activation) in zip(weights, layers):
            y = ACTIVATIONS[activation](conv_nd(y, w, b, stride, padding, dilation, padding_mode=mode))
        return (conv_nd(y, *weights[-1], 1, 1) + y if residual else y).astype(dtype)

    low = _lowest_length(layers)
    example = rng.uniform(-1, 1, (1, channels, low + 40)).astype(dtype)
    with narrowed(vector_bits):
        compiled = convc.compile(model, example, dynamic={0: {2: "T"}})
        for length in sorted({low, low + 1, *(low + extra for extra in lengths), 300}):
            x = rng.uniform(-1, 1, (1, channels, length)).astype(dtype)
            assert_close(compiled(x), reference(x), channels * 7 * 3)
        if low > 1:
            with pytest.raises(ConvcError, match=f"size {low - 1} on axis 2 \\(T\\).*T >= {low}"):
                compiled(rng.uniform(-1, 1, (1, channels, low - 1)).astype(dtype))


@st.composite
def transposed_convs(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    c_in, c_out = draw(st.integers(3, 40)), draw(st.sampled_from([3, 8, 16, 17, 32, 40]))
    kernel, stride, dilation = draw(st.integers(1, 9)), draw(st.integers(1, 5)), draw(st.integers(1, 2))
    padding = draw(st.integers(0, dilation * (kernel - 1)))
    output_padding = draw(st.integers(0, max(0, min(stride, dilation) - 1)))
    activation = draw(st.sampled_from(sorted(ACTIVATIONS, key=str)))
    return (dtype, c_in, c_out, kernel, stride, dilation, padding, output_padding, activation,
            draw(st.booleans()), draw(st.integers(0, 2**32 - 1)), draw(st.lists(st.integers(1, 70), min_size=2, max_size=4)))


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
@settings(max_examples=8)
@given(case=transposed_convs())
def test_a_transposed_conv_compiled_once_matches_the_reference_at_every_length(vector_bits, case):
    """A transposed conv (its phases at run-time lengths) between two convs, blocked or (fewer
    output channels than a block) plain, at every stride, dilation, padding and output padding."""
    dtype, c_in, c_out, kernel, stride, dilation, padding, output_padding, activation, bias, seed, lengths = case
    rng = np.random.default_rng(seed)
    u = (rng.uniform(-1, 1, (c_in, c_in, 3)) / np.sqrt(3 * c_in)).astype(dtype)
    t = (rng.uniform(-1, 1, (c_in, c_out, kernel)) / np.sqrt(c_in * kernel)).astype(dtype)
    b = rng.uniform(-1, 1, c_out).astype(dtype) if bias else None
    v = (rng.uniform(-1, 1, (16, c_out, 1)) / np.sqrt(c_out)).astype(dtype)

    def model(x):
        y = ops.conv_transpose1d(ops.conv1d(x, u, padding=1), t, b, stride=stride, padding=padding,
                                 output_padding=output_padding, dilation=dilation)
        return ops.conv1d(_activation(activation, y), v)

    def reference(x):
        y = conv_transpose_nd(conv_nd(x.astype(np.float64), u, None, 1, 1), t, b, stride, padding, output_padding,
                              1, dilation)
        return conv_nd(ACTIVATIONS[activation](y), v).astype(dtype)

    low = next(n for n in range(1, 100) if (n - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding >= 0)
    with narrowed(vector_bits):
        compiled = convc.compile(model, rng.uniform(-1, 1, (1, c_in, low + 30)).astype(dtype), dynamic={0: {2: "T"}})
        lanes = vector_bits // (8 * np.dtype(dtype).itemsize)
        (node,) = [n for n in compiled.graph.op_nodes() if n.op == "conv_transpose1d"]
        assert bool(node.type.block) == (c_out >= lanes)
        for length in sorted({low, *(low + extra for extra in lengths), 200}):
            x = rng.uniform(-1, 1, (1, c_in, length)).astype(dtype)
            assert_close(compiled(x), reference(x), c_in * 3 * kernel + c_out)


@st.composite
def narrow_convs(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    c_in, c_out = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    kernel = draw(st.sampled_from([1, 2, 3, 7, 11, 33]))
    dilation, stride = draw(st.integers(1, 3)), draw(st.sampled_from([1, 1, 2, 3]))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    padding = draw(st.integers(0, dilation * (kernel - 1)))
    activation = draw(st.sampled_from(sorted(ACTIVATIONS, key=str)))
    lengths = draw(st.lists(st.integers(0, 150), min_size=2, max_size=4))
    return dtype, c_in, c_out, kernel, dilation, stride, mode, padding, activation, draw(st.integers(0, 2**32 - 1)), lengths


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
@settings(max_examples=10)
@given(case=narrow_convs())
def test_a_plain_conv_with_its_residual_compiled_once_matches_the_reference_at_every_length(vector_bits, case):
    """Convs narrower than a block run the plain kernel, its row's bulk bounds computed at run
    time and its borders checked lane by lane (every padding mode), residual and activation fused."""
    dtype, c_in, c_out, kernel, dilation, stride, mode, padding, activation, seed, lengths = case
    rng = np.random.default_rng(seed)
    w, v = (rng.uniform(-1, 1, (2, c_out, c_in, kernel)) / np.sqrt(c_in * kernel)).astype(dtype)
    b = rng.uniform(-1, 1, c_out).astype(dtype)

    def conv(x, weight, bias=None):
        return ops.apply("conv1d", [x, weight] + ([bias] if bias is not None else []), stride=stride,
                         padding=padding, dilation=dilation, groups=1, padding_mode=mode)

    def reference(x):
        y = conv_nd(x, w, b, stride, padding, dilation, padding_mode=mode)
        return ACTIVATIONS[activation](y + conv_nd(x, v, None, stride, padding, dilation, padding_mode=mode))

    low = shortest(kernel, stride, padding, dilation, mode)
    with narrowed(vector_bits):
        compiled = convc.compile(lambda x: _activation(activation, conv(x, w, b) + conv(x, v)),
                                 rng.uniform(-1, 1, (1, c_in, low + 60)).astype(dtype), dynamic={0: {2: "T"}})
        if max(c_in, c_out) < vector_bits // (8 * np.dtype(dtype).itemsize):  # narrower than a block
            assert not any(n.type.block for n in compiled.graph.op_nodes())
        for length in sorted({low, *(low + extra for extra in lengths), 700}):
            x = rng.uniform(-1, 1, (1, c_in, length)).astype(dtype)
            assert_close(compiled(x), reference(x).astype(dtype), 2 * c_in * kernel + 2)


def test_elementwise_chains_broadcast_over_a_symbolic_axis():
    rng = np.random.default_rng(1)
    scale = rng.uniform(0.5, 2, (1, 8, 1)).astype(np.float32)
    offset = rng.uniform(-1, 1, (1, 1, 1)).astype(np.float32)
    compiled = convc.compile(lambda x, y: ops.tanh(x * scale + offset) - ops.sigmoid(y),
                             np.zeros((1, 8, 50), np.float32), np.zeros((1, 8, 50), np.float32),
                             dynamic={0: {2: "T"}, 1: {2: "T"}})
    for length in (1, 2, 15, 16, 17, 333, 4096):
        x, y = rng.uniform(-3, 3, (2, 1, 8, length)).astype(np.float32)
        expected = np.tanh(x * scale + offset) - 1 / (1 + np.exp(-y.astype(np.float64)))
        assert_close(compiled(x, y), expected.astype(np.float32), 4)


def _two_convs():
    rng = np.random.default_rng(2)
    w = (rng.uniform(-1, 1, (24, 24, 5)) / 10).astype(np.float32)
    return w, lambda x: ops.conv1d(ops.relu(ops.conv1d(x, w)), w, padding=2)


def test_a_call_checks_the_lengths_against_the_bounds_and_the_ops_minimum():
    w, model = _two_convs()
    compiled = convc.compile(model, np.zeros((1, 24, 64), np.float32), dynamic={0: {2: Dim("T", max=500)}})
    with pytest.raises(ConvcError, match=r"input %x has size 4 on axis 2 \(T\); the graph's ops need T >= 5"):
        compiled(np.zeros((1, 24, 4), np.float32))
    with pytest.raises(ConvcError, match=r"size 501 on axis 2 \(T\); T is declared in \[1, 500\]"):
        compiled(np.zeros((1, 24, 501), np.float32))
    with pytest.raises(ConvcError, match="rank 2"):
        compiled(np.zeros((24, 64), np.float32))
    with pytest.raises(ConvcError, match=r"shape \(1, 23, 64\)"):
        compiled(np.zeros((1, 23, 64), np.float32))
    x = np.random.default_rng(3).uniform(-1, 1, (1, 24, 5)).astype(np.float32)
    assert_close(compiled(x), conv_nd(np.maximum(conv_nd(x, w), 0), w, None, 1, 2), 24 * 5 * 2)


def test_one_symbol_on_two_inputs_must_take_one_value():
    compiled = convc.compile(lambda x, y: x + y, np.zeros((1, 4, 8), np.float32), np.zeros((1, 4, 8), np.float32),
                             dynamic={0: {2: "T"}, 1: {2: "T"}})
    with pytest.raises(ConvcError, match="input %y has size 9 on axis 2 \\(T\\), but another input gives T=8"):
        compiled(np.zeros((1, 4, 8), np.float32), np.zeros((1, 4, 9), np.float32))


def test_calls_at_new_lengths_compile_nothing_and_reuse_the_arena(monkeypatch):
    w, model = _two_convs()
    compiled = convc.compile(model, np.zeros((1, 24, 64), np.float32), dynamic={0: {2: "T"}})
    from convc.runtime import executor, lower

    def refuse(*args, **kwargs):
        raise AssertionError("compiled again")
    monkeypatch.setattr(lower, "lower", refuse)
    monkeypatch.setattr(executor, "lower", refuse)
    executable = compiled._executable
    rng = np.random.default_rng(4)
    compiled(rng.uniform(-1, 1, (1, 24, 900)).astype(np.float32))
    arena = executable._arena
    for length in rng.integers(5, 900, 40):
        x = rng.uniform(-1, 1, (1, 24, int(length))).astype(np.float32)
        assert_close(compiled(x), conv_nd(np.maximum(conv_nd(x, w), 0), w, None, 1, 2), 24 * 5 * 2)
    assert executable._arena is arena  # the largest length came first: no call grew it


def test_ops_without_symbolic_kernels_are_refused_by_name():
    with pytest.raises(ConvcError, match="kernels take fixed sizes only: adaptive_avg_pool1d"):
        convc.compile(lambda x: ops.adaptive_avg_pool1d(ops.relu(x), 4), np.zeros((1, 3, 20), np.float32),
                      dynamic={0: {2: "T"}})


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
def test_a_speech_feature_block_runs_every_length_from_its_minimum(vector_bits):
    """wav2vec2's first layers: a reshape of the waveform (a view), a strided conv from one plain
    channel, group_norm on the blocked layout and gelu fused into the convs; T >= 20 for one output
    of the second conv."""
    from reference import gelu
    rng = np.random.default_rng(5)
    channels = 24
    w0 = (rng.standard_normal((channels, 1, 10)) / 3).astype(np.float32)
    w1 = (rng.standard_normal((channels, channels, 3)) / 8).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, channels).astype(np.float32), rng.standard_normal(channels).astype(np.float32)

    def model(x):
        y = ops.conv1d(ops.reshape(x, (1, 1, -1)), w0, stride=5)
        return ops.gelu(ops.conv1d(ops.gelu(ops.group_norm(y, channels, gamma, beta)), w1, stride=2))

    def reference(x):
        y = conv_nd(x.reshape(1, 1, -1).astype(np.float64), w0, None, 5)
        y = (y - y.mean(axis=2, keepdims=True)) / np.sqrt(y.var(axis=2, keepdims=True) + 1e-5)
        return gelu(conv_nd(gelu(y * gamma[:, None] + beta[:, None]), w1, None, 2)).astype(np.float32)

    with narrowed(vector_bits):
        compiled = convc.compile(model, np.zeros((1, 400), np.float32), dynamic={0: {1: "T"}})
        for length in (20, 21, 29, 30, 401, 3333):
            x = rng.standard_normal((1, length)).astype(np.float32)
            assert_close(compiled(x), reference(x), 300)
        with pytest.raises(ConvcError, match="T >= 20"):
            compiled(np.zeros((1, 19), np.float32))


def test_from_torch_with_a_dynamic_axis_matches_torch_at_every_length():
    """A waveform encoder exported with its time axis symbolic: torch's shape arithmetic
    (the unsqueeze of an indexing, strided conv lengths) becomes convc's expressions of T."""
    torch = pytest.importorskip("torch")

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = torch.nn.Conv1d(1, 24, 10, stride=5)
            self.norm = torch.nn.GroupNorm(24, 24)
            self.second = torch.nn.Conv1d(24, 24, 3, stride=2, padding=1)

        def forward(self, waveform):
            y = torch.nn.functional.gelu(self.norm(self.first(waveform[:, None])))
            return torch.nn.functional.leaky_relu(self.second(y), 0.1)

    torch.manual_seed(0)
    model = Encoder().eval()
    graph = convc.from_torch(model, torch.randn(1, 400), dynamic={"waveform": {1: "T"}})
    assert str(graph.type_of(graph.inputs[0])) == "f32[1,T]"
    compiled = convc.compile(graph)
    for length in (15, 16, 19, 20, 1001, 4444):  # torch's group_norm needs 2 values per group: T >= 15
        x = torch.randn(1, length)
        with torch.no_grad():
            expected = model(x).numpy()
        assert_close(compiled(x.numpy()), expected, 24 * 3 * 4)
    with pytest.raises(ConvcError, match="T >= 15"):
        compiled(np.zeros((1, 14), np.float32))
    with pytest.raises(ConvcError, match="no input of Encoder"):
        convc.from_torch(model, torch.randn(1, 400), dynamic={"audio": {1: "T"}})


def test_a_symbolic_graph_profiles_at_the_inputs_lengths_and_export_says_it_takes_fixed_sizes(tmp_path):
    w = np.random.default_rng(6).uniform(-1, 1, (32, 32, 3)).astype(np.float32)
    compiled = convc.compile(lambda x: ops.relu(ops.conv1d(x, w)), np.zeros((1, 32, 80), np.float32),
                             dynamic={0: {2: "T"}})
    for length in (40, 400):
        rows = compiled.profile(np.zeros((1, 32, length), np.float32), repeat=2)
        (conv,) = [row for row in rows if row["op"] == "conv1d"]
        assert conv["shapes"].startswith(f"f32[1,32,{length}") and f"-> f32[1,32,{length - 2}" in conv["shapes"]
        assert conv["gflops"] is not None and conv["ms"] > 0
        flops = 2 * 32 * 32 * 3 * (length - 2)
        assert conv["gflops"] == pytest.approx(flops / (conv["ms"] * 1e6))
    with pytest.raises(ConvcError, match=r"size 2 on axis 2 \(T\)"):
        compiled.profile(np.zeros((1, 32, 2), np.float32))
    with pytest.raises(ConvcError, match="the C API takes fixed shapes"):
        convc.export(compiled, tmp_path / "model.so")


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
def test_transposes_and_reshapes_copy_at_every_length(vector_bits):
    """A (batch, time, features) input transposed to channels first, through a conv, and flattened
    at the end (graph outputs: the copies run as kernels, not as views)."""
    rng = np.random.default_rng(4)
    w = (rng.uniform(-1, 1, (1, 20, 3)) / 8).astype(np.float32)

    def model(x):
        t = ops.transpose(x, 1, 2)
        return ops.reshape(ops.conv1d(t, w, padding=1), (1, -1)), ops.transpose(t + 1.0, 1, 2)

    with narrowed(vector_bits):
        compiled = convc.compile(model, np.zeros((1, 40, 20), np.float32), dynamic={0: {1: "T"}})
        for length in (1, 2, 15, 16, 17, 33, 250, 1000):
            x = rng.uniform(-1, 1, (1, length, 20)).astype(np.float32)
            flat, back = compiled(x)
            assert_close(flat, conv_nd(x.transpose(0, 2, 1), w, None, 1, 1).reshape(1, -1).astype(np.float32), 60)
            assert_close(back, x + np.float32(1.0), 1)
