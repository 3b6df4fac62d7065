"""The compile caches: convc.clear_caches and the eager cache; the on-disk cache (hits, damaged and
foreign entries, concurrent writers, eviction, keys); compiled code freed when dropped."""
import gc
import os
import subprocess
import sys
import weakref

import numpy as np
import pytest

import convc
from convc import eager, ops
from convc.passes.pipeline import Pipeline
from convc.runtime import executor
from reference import assert_close, conv_nd, relu

INPUT = np.random.default_rng(7).standard_normal((1, 16, 10, 10)).astype(np.float32)
CHILD = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
import convc
from test_caches import INPUT, block_graph
np.save(sys.argv[2], convc.compile(block_graph(0), cache_dir=sys.argv[1])(INPUT))
"""


def block_weights(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((16, 16, 3, 3)).astype(np.float32), rng.standard_normal(16).astype(np.float32),
            rng.standard_normal((8, 16, 1, 1)).astype(np.float32))


def block_graph(seed: int) -> convc.Graph:
    """conv 3x3 + bias + relu, then a 1x1 conv: blocked kernels with packed weights on AVX hosts."""
    w1, b1, w2 = block_weights(seed)
    return convc.trace(lambda x: ops.conv2d(ops.relu(ops.conv2d(x, w1, b1, padding=1)), w2), INPUT)


def block_reference(seed: int) -> np.ndarray:
    w1, b1, w2 = block_weights(seed)
    return conv_nd(relu(conv_nd(INPUT, w1, b1, padding=1)), w2)


def entries(directory) -> list:
    return sorted(directory.glob("*.entry"))


@pytest.fixture(autouse=True)
def no_cache_from_the_environment(monkeypatch):
    monkeypatch.delenv("CONVC_CACHE_DIR", raising=False)
    monkeypatch.delenv("CONVC_CACHE_SIZE_MB", raising=False)


def refuse_compiling(monkeypatch) -> None:
    """From here on, a pass, lowering or LLVM compilation fails the test: graphs must come from the
    disk cache."""
    def refuse(*args):
        raise AssertionError("compiled, although the disk cache holds the graph")
    monkeypatch.setattr(executor, "lower", refuse)
    monkeypatch.setattr(executor, "CompileSession", refuse)
    monkeypatch.setattr(Pipeline, "run", refuse)


def test_clear_caches_frees_the_eager_kernels_and_later_calls_still_compute():
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 8))
    w = np.random.default_rng(2).standard_normal((5, 3, 3, 3))
    first = ops.conv2d(x, w, padding=1)
    kernels = [weakref.ref(executable) for executable in eager._cache.values()]
    assert kernels
    convc.clear_caches()
    assert eager.cache_size() == 0
    assert all(kernel() is None for kernel in kernels)  # engines and their machine code are gone
    again = ops.conv2d(x, w, padding=1)
    assert_close(again, conv_nd(x, w, padding=1), terms=27)
    np.testing.assert_array_equal(again, first)


def test_a_dropped_compiled_graph_frees_its_machine_code_without_the_cycle_collector():
    gc.disable()
    try:
        compiled = convc.compile(block_graph(0))
        engine = weakref.ref(compiled._executable.jit._engine)
        del compiled
        assert engine() is None
    finally:
        gc.enable()


def test_a_cache_hit_is_bit_identical_to_a_fresh_compile_and_right(tmp_path, monkeypatch):
    fresh = convc.compile(block_graph(0), cache_dir=False)
    stored = convc.compile(block_graph(0), cache_dir=tmp_path)
    assert len(entries(tmp_path)) == 1
    with monkeypatch.context() as patch:
        refuse_compiling(patch)
        hit = convc.compile(block_graph(0), cache_dir=tmp_path)
    expected = fresh(INPUT)
    assert_close(expected, block_reference(0), terms=16 * 9)
    np.testing.assert_array_equal(stored(INPUT), expected)
    np.testing.assert_array_equal(hit(INPUT), expected)
    assert hit.llvm_ir == fresh.llvm_ir and "define void @convc_main" in hit.llvm_ir
    assert hit.asm == fresh.asm
    assert hit.compile_times.cache_hit and not fresh.compile_times.cache_hit
    assert hit.graph.dump() == fresh.graph.dump()  # optimized on first use, as a miss would have


def test_a_hit_serves_a_graph_that_differs_only_in_value_names(tmp_path, monkeypatch):
    convc.compile(block_graph(0), cache_dir=tmp_path)
    w1, b1, w2 = block_weights(0)
    renamed = convc.trace(lambda image: ops.conv2d(ops.relu(ops.conv2d(image, w1, b1, padding=1)), w2), INPUT)
    assert renamed.inputs != block_graph(0).inputs and renamed == block_graph(0)
    refuse_compiling(monkeypatch)
    hit = convc.compile(renamed, cache_dir=tmp_path)
    assert_close(hit(INPUT), block_reference(0), terms=16 * 9)


def test_a_hit_keeps_running_after_its_entry_is_evicted_or_replaced(tmp_path, monkeypatch):
    """A hit maps the entry: deleting or replacing the file (as eviction and writers do) leaves the
    loaded graph whole."""
    convc.compile(block_graph(0), cache_dir=tmp_path)
    refuse_compiling(monkeypatch)
    hit = convc.compile(block_graph(0), cache_dir=tmp_path)
    (entry,) = entries(tmp_path)
    entry.unlink()
    entry.write_bytes(b"replaced")
    gc.collect()
    assert_close(hit(INPUT), block_reference(0), terms=16 * 9)


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_damaged_entry_is_ignored_with_a_warning_and_replaced(tmp_path, damage):
    convc.compile(block_graph(0), cache_dir=tmp_path)
    (entry,) = entries(tmp_path)
    data = bytearray(entry.read_bytes())
    if damage == "flipped byte":
        data[len(data) // 2] ^= 0x40
    else:
        del data[len(data) // 2:]
    entry.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match=entry.name):
        compiled = convc.compile(block_graph(0), cache_dir=tmp_path)
    assert_close(compiled(INPUT), block_reference(0), terms=16 * 9)
    hit = convc.compile(block_graph(0), cache_dir=tmp_path)  # the rewritten entry is whole again
    np.testing.assert_array_equal(hit(INPUT), compiled(INPUT))


def test_a_foreign_entry_under_a_graphs_key_is_never_run(tmp_path):
    convc.compile(block_graph(0), cache_dir=tmp_path)
    (first,) = entries(tmp_path)
    convc.compile(block_graph(1), cache_dir=tmp_path)
    (second,) = [e for e in entries(tmp_path) if e != first]
    second.write_bytes(first.read_bytes())  # graph 0's code filed under graph 1's key
    with pytest.warns(RuntimeWarning, match=f"ignoring .*{second.name}.*foreign"):
        compiled = convc.compile(block_graph(1), cache_dir=tmp_path)
    assert_close(compiled(INPUT), block_reference(1), terms=16 * 9)


def test_different_constants_get_different_entries(tmp_path, monkeypatch):
    for seed in (0, 1):
        convc.compile(block_graph(seed), cache_dir=tmp_path)
    assert len(entries(tmp_path)) == 2
    with monkeypatch.context() as patch:
        refuse_compiling(patch)
        hits = [convc.compile(block_graph(seed), cache_dir=tmp_path) for seed in (0, 1)]
    for seed, hit in zip((0, 1), hits):
        assert_close(hit(INPUT), block_reference(seed), terms=16 * 9)


def test_concurrent_writers_leave_one_valid_entry(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=os.path.dirname(__file__)))
    children = [subprocess.Popen([sys.executable, str(script), str(cache), str(tmp_path / f"out{i}.npy")],
                                 cwd=tmp_path, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for child in children:
        _, errors = child.communicate(timeout=600)
        assert child.returncode == 0, errors
        assert "convc compile cache" not in errors
    assert len(entries(cache)) == 1 and not list(cache.glob("*.tmp")) and not list(cache.glob(".*.tmp"))
    outputs = [np.load(tmp_path / f"out{i}.npy") for i in range(2)]
    with monkeypatch.context() as patch:
        refuse_compiling(patch)
        hit = convc.compile(block_graph(0), cache_dir=cache)
    for output in outputs:
        np.testing.assert_array_equal(hit(INPUT), output)
    assert_close(outputs[0], block_reference(0), terms=16 * 9)


def test_eviction_keeps_the_directory_within_the_bound_dropping_least_recently_used(tmp_path, monkeypatch):
    convc.compile(block_graph(0), cache_dir=tmp_path)
    (zero,) = entries(tmp_path)
    size = zero.stat().st_size
    monkeypatch.setenv("CONVC_CACHE_SIZE_MB", str(2.5 * size / 2**20))  # room for two entries
    convc.compile(block_graph(1), cache_dir=tmp_path)
    (one,) = [e for e in entries(tmp_path) if e != zero]
    os.utime(zero, (1_000_000, 1_000_000))
    os.utime(one, (2_000_000, 2_000_000))
    convc.compile(block_graph(0), cache_dir=tmp_path)  # a hit: zero becomes the most recently used
    convc.compile(block_graph(2), cache_dir=tmp_path)
    remaining = entries(tmp_path)
    assert zero in remaining and one not in remaining and len(remaining) == 2
    assert sum(e.stat().st_size for e in remaining) <= 2.5 * size


def test_the_environment_variable_selects_the_cache_and_false_switches_it_off(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVC_CACHE_DIR", str(tmp_path / "env"))
    convc.compile(block_graph(0), cache_dir=False)
    assert not (tmp_path / "env").exists()
    compiled = convc.compile(block_graph(0))
    assert entries(tmp_path / "env")
    assert_close(compiled(INPUT), block_reference(0), terms=16 * 9)


def test_a_cache_dir_that_is_not_a_path_is_a_type_error():
    with pytest.raises(TypeError, match=r"cache_dir=True must be a directory path"):
        convc.compile(block_graph(0), cache_dir=True)


def test_a_cache_dir_under_the_home_directory_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    convc.compile(block_graph(0), cache_dir="~/convc-cache")
    assert entries(tmp_path / "home" / "convc-cache") and not (tmp_path / "~").exists()


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX owners and modes")
def test_the_cache_directory_and_its_entries_are_private_to_the_user(tmp_path):
    directory = tmp_path / "made" / "cache"
    convc.compile(block_graph(0), cache_dir=directory)
    (entry,) = entries(directory)
    assert directory.stat().st_mode & 0o777 == 0o700
    assert entry.stat().st_mode & 0o077 == 0


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX owners and modes")
def test_a_directory_others_may_write_to_is_not_used(tmp_path):
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    with pytest.warns(RuntimeWarning, match=r"cannot use directory .*shared .*writable by group and others"):
        compiled = convc.compile(block_graph(0), cache_dir=directory)
    assert_close(compiled(INPUT), block_reference(0), terms=16 * 9)
    assert not entries(directory)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX owners and modes")
def test_an_entry_others_may_write_to_or_another_user_owns_is_never_loaded(tmp_path, monkeypatch):
    convc.compile(block_graph(0), cache_dir=tmp_path)
    (entry,) = entries(tmp_path)
    entry.chmod(0o664)
    with pytest.warns(RuntimeWarning, match=rf"ignoring .*{entry.name}: writable by its group"):
        compiled = convc.compile(block_graph(0), cache_dir=tmp_path)
    assert_close(compiled(INPUT), block_reference(0), terms=16 * 9)
    assert entry.stat().st_mode & 0o077 == 0  # rewritten private
    real_uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real_uid + 1)
    with pytest.warns(RuntimeWarning, match=r"not by this user"):
        convc.compile(block_graph(0), cache_dir=tmp_path)
