"""compiled.profile and `convc bench MODEL --profile`: one row per kernel in execution order, flop
rates that follow from the shapes, a profiling build that computes what the normal build does."""
import pathlib

import numpy as np
import pytest

import convc
from convc import ops
from convc.cli import main
from convc.runtime.memory import plan_memory

ROOT = pathlib.Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(3)
X = RNG.standard_normal((1, 8, 24, 24)).astype(np.float32)
W1 = RNG.standard_normal((16, 8, 3, 3)).astype(np.float32)
W2 = RNG.standard_normal((8, 16, 1, 1)).astype(np.float32)


def model(x):
    return ops.sigmoid(ops.conv2d(ops.relu(ops.conv2d(x, W1, padding=1)), W2)) * x


def conv_flops(out_shape, weight):
    """2 flops (multiply, add) per weight element per output position."""
    n, _, h, w = out_shape
    return 2 * n * h * w * weight.size


def test_one_row_per_kernel_in_order_with_rates_from_the_shapes():
    compiled = convc.compile(model, X)
    rows = compiled.profile(X, repeat=5)
    graph = compiled.graph
    views = plan_memory(graph).views
    kernels = [n for n in graph.op_nodes() if n.name not in views]
    assert [row["nodes"] for row in rows] == [[n.name] for n in kernels]
    assert [row["op"] for row in rows] == [n.op for n in kernels]
    assert all(row["ms"] > 0 for row in rows)
    assert sum(row["percent"] for row in rows) == pytest.approx(100)
    convs = [row for row in rows if row["op"] == "conv2d"]
    assert len(convs) == 2
    for row, weight in zip(convs, (W1, W2)):
        assert row["shapes"].startswith("f32[1,") and "-> f32[1," in row["shapes"]
        flops = conv_flops((1, weight.shape[0], 24, 24), weight)
        assert row["gflops"] * row["ms"] * 1e6 == pytest.approx(flops)
        assert row["percent_of_peak"] > 0
    for row in rows:
        assert row["layout"] == "plain" or row["layout"].startswith("c")


def test_the_profiling_build_computes_what_the_compiled_graph_does():
    compiled = convc.compile(model, X)
    compiled.profile(X, repeat=1)
    x = RNG.standard_normal(X.shape).astype(np.float32)
    np.testing.assert_array_equal(compiled._profiler.executable(x)[0], compiled(x))


def test_a_profile_after_a_disk_cache_hit(tmp_path):
    convc.compile(model, X, cache_dir=tmp_path)
    hit = convc.compile(model, X, cache_dir=tmp_path)
    assert hit.compile_times.cache_hit
    assert [row["op"] for row in hit.profile(X, repeat=2)][:2] == ["conv2d", "conv2d"]


@pytest.mark.parametrize("repeat", [0, -1, 1.5, True])
def test_repeat_must_be_a_positive_whole_number(repeat):
    with pytest.raises(convc.ConvcError, match="repeat"):
        convc.compile(model, X).profile(X, repeat=repeat)


def test_bench_profile_prints_the_kernel_table(capsys):
    assert main(["bench", str(ROOT / "examples" / "conv_stack.py"), "--profile", "--repeat", "3",
                 "--min-time", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "per kernel (median of 3 calls" in out and "conv2d" in out and "GFLOP/s" in out
    assert out.rstrip().splitlines()[-1].startswith("total")


def test_bench_profile_needs_a_model(capsys):
    assert main(["bench", "--profile"]) == 2
    assert "--profile times the kernels of a model" in capsys.readouterr().err


def test_a_separable_conv_counts_its_depthwise_and_pointwise_flops():
    x = RNG.standard_normal((1, 20, 20, 8)).astype(np.float32)
    depthwise = RNG.standard_normal((3, 3, 8, 2)).astype(np.float32)
    pointwise = RNG.standard_normal((1, 1, 16, 12)).astype(np.float32)
    compiled = convc.compile(
        lambda x: ops.separable_conv2d(x, depthwise, pointwise, strides=[1, 1, 1, 1], padding="SAME"), x)
    (row,) = [r for r in compiled.profile(x, repeat=2) if r["op"] == "separable_conv2d"]
    positions = 20 * 20
    expected = 2 * positions * 16 * 9 + 2 * positions * 12 * 16  # depthwise window, then pointwise row
    assert row["gflops"] * row["ms"] * 1e6 == pytest.approx(expected)


def test_the_cycle_counter_rate_is_measured_against_the_wall_clock():
    """A profile converts cycle stamps at this rate (not by the call's wall time, which would
    spread the host's work around the call over the kernels)."""
    from convc.runtime.peak import cycle_counter_hz
    assert 1e8 < cycle_counter_hz() < 1e11
