"""Tracing and compile: graphs from functions and modules, Compiled objects, input checks, the cache."""
import gc
import time

import numpy as np
import pytest

import convc
from convc import ConvcError, eager, nn, ops
from reference import assert_close


def test_trace_records_inputs_constants_and_ops_with_the_parameter_names():
    w = np.ones((2, 3, 3), np.float32)
    graph = convc.trace(lambda signal: ops.relu(ops.conv1d(signal, w, padding=1)), np.zeros((1, 3, 7), np.float32))
    assert graph.inputs == ["signal"]
    assert [n.op for n in graph.nodes()] == ["input", "const", "conv1d", "relu"]
    assert str(graph.type_of(graph.outputs[0])) == "f32[1,2,7]"


def test_trace_supports_operators_and_several_outputs():
    def fn(a, b):
        return a * 2.0 + b, 1.0 - a / b
    a, b = np.full(3, 2.0), np.full(3, 4.0)
    compiled = convc.compile(fn, a, b)
    first, second = compiled(a, b)
    np.testing.assert_array_equal(first, a * 2 + b)
    np.testing.assert_array_equal(second, 1 - a / b)


def test_outputs_that_are_inputs_or_repeated_are_fresh_arrays():
    x = np.arange(4.0)
    compiled = convc.compile(lambda a: (a, ops.relu(a), ops.relu(a)), x)
    same, r1, r2 = compiled(x)
    assert same is not x and np.array_equal(same, x)
    assert r1 is not r2 and np.array_equal(r1, r2)


def test_trace_errors_are_clear():
    with pytest.raises(ConvcError, match="must return a traced convc.Tensor"):
        convc.trace(lambda a: 3, np.zeros(2))
    with pytest.raises(TypeError, match="must be callable"):
        convc.trace(42, np.zeros(2))
    with pytest.raises(TypeError, match="has dtype int64"):
        convc.trace(ops.relu, np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="no truth value"):
        convc.trace(lambda a: a if a else a, np.zeros(2))


def test_compiled_checks_its_inputs_before_running():
    compiled = convc.compile(ops.relu, np.zeros((2, 3), np.float32))
    with pytest.raises(ConvcError, match=r"input %x has shape \(3, 2\); the graph was compiled for \(2, 3\)"):
        compiled(np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError, match="dtype float64"):
        compiled(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="takes 1 inputs"):
        compiled()


def test_compile_of_a_module_exposes_graph_llvm_ir_and_asm():
    m = nn.Conv1d(4, 8, 5, padding="same", padding_mode="circular")
    compiled = convc.compile(lambda a: ops.relu(m(a)), np.zeros((2, 4, 50), np.float32))
    x = np.random.default_rng(0).standard_normal((2, 4, 50)).astype(np.float32)
    assert_close(compiled(x), ops.relu(m(x)), 20)
    assert "define void @convc_main" in compiled.llvm_ir
    assert "convc_main:" in compiled.asm and "vfmadd" in compiled.asm
    assert [n.attrs.get("activation") for n in compiled.graph.op_nodes() if n.op == "conv1d"] == ["relu"]


def test_a_graph_takes_example_inputs_that_match_its_input_types():
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    graph = convc.trace(lambda a, b: ops.relu(a - b), x, x)
    np.testing.assert_array_equal(convc.compile(graph, x, x)(x, -x), np.maximum(2 * x, 0))
    with pytest.raises(ConvcError, match=r"example input %b of graph @main is f32\[3,2\], but the graph's input %b "
                                         r"is f32\[2,3\]"):
        convc.compile(graph, x, x.T)
    with pytest.raises(ConvcError, match=r"example input %a of graph @main is f64\[2,3\]"):
        convc.compile(graph, x.astype(np.float64), x)
    with pytest.raises(ConvcError, match=r"takes 2 inputs \(%a, %b\), got 1 example inputs"):
        convc.compile(graph, x)


def test_compile_rejects_bad_options():
    with pytest.raises(ConvcError, match="opt_level=5 must be 0, 1 or 2"):
        convc.compile(ops.relu, np.zeros(2), opt_level=5)


def test_eager_calls_hit_the_cache():
    x = np.random.default_rng(0).standard_normal((1, 3, 9, 9)).astype(np.float32)
    w = np.ones((2, 3, 3, 3), np.float32)
    ops.conv2d(x, w, stride=2)
    size = eager.cache_size()
    start = time.perf_counter()
    for _ in range(20):
        ops.conv2d(x, w, stride=2)
    assert eager.cache_size() == size  # no new entries: the same kernel ran 20 times
    assert time.perf_counter() - start < 5  # generous: only guards against recompiling per call


def test_freed_compiled_graphs_leave_the_jit_usable():
    for size in range(3, 8):
        compiled = convc.compile(ops.tanh, np.zeros(size, np.float32))
        compiled.asm
        del compiled
        gc.collect()
    assert ops.tanh(np.zeros(9, np.float32)).sum() == 0


def test_concurrent_python_threads_share_the_native_pool_safely():
    import threading
    from reference import conv_nd
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 30, 30)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    expected = conv_nd(x, w, padding=1)
    failures = []

    def work():
        for _ in range(10):
            try:
                assert_close(ops.conv2d(x, w, padding=1), expected, 144)
            except AssertionError as error:
                failures.append(error)
    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_compiled_graphs_keep_the_weights_they_were_traced_with():
    m = nn.Conv1d(1, 1, 1, bias=False)
    m.weight[...] = 2.0
    x = np.ones((1, 1, 3), np.float32)
    compiled = convc.compile(m, x)
    m.weight[...] = 5.0
    np.testing.assert_array_equal(compiled(x), np.full((1, 1, 3), 2.0, np.float32))
    np.testing.assert_array_equal(m(x), np.full((1, 1, 3), 5.0, np.float32))


def test_zero_dimensional_values_keep_their_shape():
    compiled = convc.compile(lambda a: (ops.mul(a, 3.0), a), np.float64(2.0))
    product, same = compiled(np.float64(2.0))
    assert product.shape == () and same.shape == () and product == 6.0
    graph = convc.trace(lambda a: ops.add(a, np.float32(1.0)), np.zeros(3, np.float32))
    assert graph.consts()[0].type.shape == ()


def test_a_forked_child_can_run_parallel_kernels():
    import multiprocessing
    x = np.random.default_rng(0).standard_normal((1, 16, 40, 40)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((16, 16, 3, 3)).astype(np.float32)
    expected = ops.conv2d(x, w, padding=1)  # starts the thread pool in the parent
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        result = pool.apply_async(ops.conv2d, (x, w, None, 1, 1))
        np.testing.assert_array_equal(result.get(timeout=60), expected)


def test_the_eager_cache_keeps_only_the_most_recent_kernels(monkeypatch):
    monkeypatch.setenv("CONVC_EAGER_CACHE_SIZE", "3")
    eager.clear_cache()
    arrays = [np.zeros(n, np.float32) for n in range(1, 6)]
    for a in arrays:
        ops.relu(a)
    assert eager.cache_size() == 3
    ops.relu(arrays[2])  # still cached: no growth, and it becomes the most recent
    ops.relu(np.zeros(9, np.float32))
    assert eager.cache_size() == 3
    np.testing.assert_array_equal(ops.relu(np.array([-1.0, 2.0])), [0.0, 2.0])


def test_compiled_returns_what_the_function_returns():
    x = np.arange(3.0)
    assert isinstance(convc.compile(lambda a: (ops.relu(a),), x)(x), tuple)
    assert isinstance(convc.compile(lambda a: ops.relu(a), x)(x), np.ndarray)
    assert len(convc.compile(lambda a: [ops.relu(a), a], x)(x)) == 2


def test_identical_nodes_share_one_kernel_and_keep_their_own_weights():
    """Convs alike in op, attributes and types are compiled once; each call still reads its own
    (packed) weights."""
    from reference import conv_nd
    rng = np.random.default_rng(3)
    weights = [rng.standard_normal((32, 32, 3, 3)).astype(np.float32) / 20 for _ in range(4)]
    biases = [rng.standard_normal(32).astype(np.float32) for _ in range(4)]

    def model(x):
        for w, b in zip(weights, biases):
            x = ops.relu(ops.conv2d(x, w, b, 1, 1))
        return ops.max_pool2d(x, 1)  # a blocked consumer: the last conv stays blocked like the others

    x = rng.standard_normal((1, 32, 12, 12)).astype(np.float32)
    compiled = convc.compile(model, x)
    conv_kernels = {line.split("@")[1].split("(")[0] for line in compiled.llvm_ir.splitlines()
                    if line.startswith("define") and "_conv2d(" in line}
    assert len(conv_kernels) <= 2, conv_kernels  # one kernel and its task wrapper (or the two inlined)
    expected = x
    for w, b in zip(weights, biases):
        expected = np.maximum(conv_nd(expected, w, b, 1, 1), 0)
    assert_close(compiled(x), expected, 32 * 9 * 4)


def test_eager_kernels_follow_a_change_of_vector_width(monkeypatch):
    """The eager cache keys on the vector width setting: a blocked eager conv compiled at 512 bits
    is not reused once CONVC_VECTOR_BITS asks for 256."""
    from reference import conv_nd
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((1, 16, 6, 6)).astype(np.float32), rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    first = ops.conv2d(x, w, None, 1, 1)
    monkeypatch.setenv("CONVC_VECTOR_BITS", "256")
    hits = len(eager._cache)
    second = ops.conv2d(x, w, None, 1, 1)
    assert len(eager._cache) == hits + 1  # a new entry, not the 512-bit kernel
    assert_close(first, conv_nd(x, w, None, 1, 1), 144)
    assert_close(second, conv_nd(x, w, None, 1, 1), 144)


def test_traced_tensors_support_neg_pow_and_abs():
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(1, 3, 4)
    compiled = convc.compile(lambda t: abs(-t) ** 2 + 2.0 ** t, x)
    assert {"neg", "abs"} <= {n.op for n in convc.trace(lambda t: abs(-t) ** 2 + 2.0 ** t, x).op_nodes()}
    expected = np.abs(-x.astype(np.float64)) ** 2 + 2.0 ** x.astype(np.float64)
    assert_close(compiled(x), expected.astype(np.float32), 4)
