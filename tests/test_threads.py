"""The native thread pool: every chunk of every job runs exactly once, results stay exact whatever
the chunking and thread count, and a child forked at any moment (a lock held by another thread, a
parallel kernel in flight) compiles and runs graphs. Thread counts and forks run in subprocesses,
each with a timeout, so that a deadlock fails a test instead of hanging the suite."""
import ctypes
import os
import subprocess
import sys
import textwrap

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np
import pytest

import convc
from convc import ops
from convc.runtime import threads
from convc.runtime.codegen import I64
from convc.runtime.jit import JitModule
from reference import assert_close, conv_nd

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
RUN_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def _counting_task() -> JitModule:
    """count(args, chunk, chunks): atomically adds 1 to ((i64*)args)[chunk]."""
    module = ir.Module("count_chunks")
    task = ir.Function(module, threads.TASK_TYPE, "count_chunk")
    b = ir.IRBuilder(task.append_basic_block("entry"))
    counts = b.bitcast(task.args[0], I64.as_pointer())
    b.atomic_rmw("add", b.gep(counts, [task.args[1]]), ir.Constant(I64, 1), "seq_cst")
    b.ret_void()
    return JitModule(module)


def test_every_chunk_of_every_job_runs_exactly_once():
    threads.ensure_pool()
    task = _counting_task()
    run = RUN_TYPE(llvm.address_of_symbol(threads.RUN_SYMBOL))
    chunk_counts = [1 + job % 37 for job in range(3000)]
    # one row per job: a late worker that touched a finished job's arguments would show up there
    counts = np.zeros((len(chunk_counts), max(chunk_counts)), np.int64)
    with threads.lock:
        for job, chunks in enumerate(chunk_counts):
            run(task.address("count_chunk"), counts[job].ctypes.data, chunks)
    expected = np.zeros_like(counts)
    for job, chunks in enumerate(chunk_counts):
        expected[job, :chunks] = 1
    np.testing.assert_array_equal(counts, expected)


@pytest.mark.parametrize("threads_", [2, 3])
def test_chunk_count_covers_the_loop_and_never_exceeds_it(threads_):
    for extent in (1, 2, 5, 7, 8, 13, 100):
        chunks = threads.chunk_count(extent, threads_)
        assert 1 <= chunks <= extent
        bounds = [chunk * extent // chunks for chunk in range(chunks + 1)]
        assert bounds[0] == 0 and bounds[-1] == extent and all(a < b for a, b in zip(bounds, bounds[1:]))


def _uneven_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A conv whose output rows (2 images x 13 rows) split unevenly into chunks, bias included."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 13, 11)).astype(np.float32)
    w = rng.standard_normal((7, 5, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(7).astype(np.float32)
    return x, w, bias


def test_uneven_parallel_conv_matches_the_reference():
    x, w, bias = _uneven_case()
    compiled = convc.compile(lambda x: ops.conv2d(x, w, bias, padding=1), x)
    for _ in range(20):
        assert_close(compiled(x), conv_nd(x, w, bias, padding=1), terms=5 * 9)


THREAD_COUNT_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    import convc
    from convc import ops
    from test_threads import _uneven_case
    x, w, bias = _uneven_case()
    stack = convc.compile(lambda x: ops.relu(ops.conv2d(ops.conv2d(x, w, bias, padding=1),
                                                        np.ones((4, 7, 3, 3), np.float32), padding=1)), x)
    np.save(sys.argv[1], np.stack([stack(x) for _ in range(10)]))
""")


def test_one_two_and_oversubscribed_thread_counts_agree_exactly(tmp_path):
    script = tmp_path / "thread_count.py"
    script.write_text(THREAD_COUNT_SCRIPT.format(tests=TESTS_DIR))
    results = {}
    for count in ("1", "2", "7"):
        out = tmp_path / f"threads{count}.npy"
        subprocess.run([sys.executable, str(script), str(out)], cwd=tmp_path, check=True, timeout=300,
                       env={**os.environ, "CONVC_NUM_THREADS": count})
        results[count] = np.load(out)
    x, w, bias = _uneven_case()
    expected = conv_nd(conv_nd(x, w, bias, padding=1), np.ones((4, 7, 3, 3), np.float32), padding=1)
    assert_close(results["1"][0], np.maximum(expected, 0), terms=5 * 9 * 7 * 9)
    for count in ("1", "2", "7"):
        for repeat in results[count]:
            np.testing.assert_array_equal(repeat, results["1"][0], err_msg=f"CONVC_NUM_THREADS={count}")


FORK_SCRIPT = textwrap.dedent("""
    import os, sys, threading, time, traceback
    import numpy as np
    sys.path.insert(0, {tests!r})
    import convc
    from convc import eager, ops
    from convc.runtime import threads
    from reference import assert_close, conv_nd

    scenario = sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 32, 32)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    v = rng.standard_normal(5).astype(np.float32)

    def build():
        stack = convc.compile(lambda x: ops.relu(ops.conv2d(x, w, padding=1)), x)
        small = convc.compile(lambda v: ops.relu(v), v)
        assert stack._executable._parallel and not small._executable._parallel
        return stack, small

    def child(graphs):
        stack, small = graphs or build()
        assert_close(stack(x), np.maximum(conv_nd(x, w, padding=1), 0), terms=16 * 9)
        np.testing.assert_array_equal(small(v), np.maximum(v, 0))
        x2 = rng.standard_normal((1, 3, 9, 7)).astype(np.float32)
        w2 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
        assert_close(ops.conv2d(x2, w2, padding=1), conv_nd(x2, w2, padding=1), terms=27)
        fresh = convc.compile(lambda x: ops.conv2d(x, w, stride=2), x)
        assert_close(fresh(x), conv_nd(x, w, stride=2), terms=16 * 9)
        assert len(os.listdir("/proc/self/task")) == threads.ensure_pool(), "pool workers not restarted"

    def fork_and_check(graphs):
        pid = os.fork()
        if pid == 0:
            try:
                child(graphs)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        deadline = time.monotonic() + 120
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                sys.exit(f"{{scenario}}: the forked child deadlocked")
            time.sleep(0.02)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{{scenario}}: the forked child failed")

    def hold(lock, ready):
        with lock:
            ready.set()
            time.sleep(3600)

    ready = threading.Event()
    if scenario == "running":
        graphs = build()
        big_x = rng.standard_normal((1, 32, 96, 96)).astype(np.float32)
        big_w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
        long = convc.compile(lambda x: ops.conv2d(ops.conv2d(x, big_w, padding=1), big_w, padding=1), big_x)

        def loop():
            while True:
                long(big_x)
                ready.set()

        threading.Thread(target=loop, daemon=True).start()
        ready.wait()
        for _ in range(3):
            fork_and_check(graphs)
            time.sleep(0.013)
    else:
        graphs = None if scenario == "pool start" else build()
        lock = {{"pool": lambda: threads.lock, "pool start": lambda: threads._pool_lock,
                 "executable": lambda: graphs[1]._executable._own_lock, "eager": lambda: eager._lock}}[scenario]()
        threading.Thread(target=hold, args=(lock, ready), daemon=True).start()
        ready.wait()
        fork_and_check(graphs)
    print("child ok")
""")


@pytest.mark.skipif(not hasattr(os, "fork") or not os.path.isdir("/proc/self/task"), reason="needs fork and /proc")
@pytest.mark.parametrize("scenario", ["pool", "pool start", "executable", "eager", "running"])
def test_a_child_forked_while_a_lock_is_held_or_a_kernel_runs_compiles_and_runs_graphs(tmp_path, scenario):
    script = tmp_path / "fork.py"
    script.write_text(FORK_SCRIPT.format(tests=TESTS_DIR))
    env = {**os.environ, "CONVC_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", str(script), scenario],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "child ok" in result.stdout, result.stderr


LAZY_POOL_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    import convc
    from convc import ops
    from convc.runtime import threads

    def tasks():
        return len(os.listdir("/proc/self/task"))

    x = np.random.default_rng(0).standard_normal((1, 32, 40, 40)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((32, 32, 3, 3)).astype(np.float32)
    before = tasks()
    compiled = convc.compile(convc.trace(lambda a: ops.relu(ops.conv2d(a, w, padding=1)), x))
    assert compiled.llvm_ir and compiled.asm
    loaded = tasks()
    compiled(x)
    print(before, loaded, tasks(), threads.pool_size())
""")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc (Linux)")
def test_reading_a_compiled_models_code_starts_no_worker_and_its_first_run_starts_them(tmp_path):
    script = tmp_path / "lazy_pool.py"
    script.write_text(LAZY_POOL_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, check=False,
                            env={**os.environ, "CONVC_NUM_THREADS": "3", "CONVC_COMPILE_WORKERS": "0"})
    assert result.returncode == 0, result.stderr
    before, loaded, ran, size = map(int, result.stdout.split())
    assert size == 3
    assert loaded == before, "compiling and reading the code started threads"
    assert ran == before + 2, "the first run starts the pool's two workers"


@pytest.mark.parametrize(("machine", "number"), [("x86_64", 202), ("aarch64", 98), ("riscv64", 98),
                                                  ("ppc64le", 221), ("s390x", 238), ("mips", None)])
def test_futex_number_follows_the_architecture(monkeypatch, machine, number):
    monkeypatch.setattr(threads.sys, "platform", "linux")
    monkeypatch.setattr(threads.platform, "machine", lambda: machine)
    assert threads.futex_syscall() == number
    monkeypatch.setattr(threads.sys, "platform", "darwin")
    assert threads.futex_syscall() is None
