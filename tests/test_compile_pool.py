"""Compiling a graph's kernels in worker processes: the same machine code as in-process, and a
compile that completes whatever happens to a worker (killed before or during a part, an error in
a part, several compiles at once, CONVC_COMPILE_WORKERS checked)."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import convc
from convc import ops
from convc.runtime import compile_pool
from convc.runtime.jit import CompileSession, host_target

from reference import assert_close, conv_nd


def _stack():
    """Three distinct convs (three kernel modules) and the NumPy reference of their composition."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 8, 20, 20)).astype(np.float32)
    weights = [rng.standard_normal(shape).astype(np.float32) for shape in [(16, 8, 3, 3), (12, 16, 5, 5), (8, 12, 1, 1)]]

    def model(x):
        y = ops.relu(ops.conv2d(x, weights[0], padding=1))
        y = ops.conv2d(y, weights[1], padding=2)
        return ops.conv2d(y, weights[2])

    def reference(x):
        y = np.maximum(conv_nd(x.astype(np.float64), weights[0].astype(np.float64), padding=(1, 1)), 0)
        y = conv_nd(y, weights[1].astype(np.float64), padding=(2, 2))
        return conv_nd(y, weights[2].astype(np.float64))

    return model, x, reference


def assert_matches(out, expected):
    """Three chained sums of up to 400 terms: float32 rounding grows with the largest value."""
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def _idle_workers():
    return [w for w in compile_pool._idle if w.alive()]


@pytest.fixture
def one_worker(monkeypatch):
    monkeypatch.setenv("CONVC_COMPILE_WORKERS", "1")
    host = host_target()
    compile_pool.warm(host.cpu, host.features, host.triple)
    assert len(_idle_workers()) == 1


def test_workers_compile_the_same_code_as_the_caller(one_worker, monkeypatch):
    model, x, reference = _stack()
    parallel = convc.compile(model, x, cache_dir=False)
    assert any(part.where == "worker" for part in parallel.compile_times.parts)
    monkeypatch.setenv("CONVC_COMPILE_WORKERS", "0")
    alone = convc.compile(model, x, cache_dir=False)
    assert {part.where for part in alone.compile_times.parts} == {"here"}
    out = parallel(x)
    np.testing.assert_array_equal(out, alone(x))
    assert_matches(out, reference(x))


def test_a_worker_killed_before_the_compile_is_replaced_by_the_caller(one_worker):
    _idle_workers()[0].process.kill()
    model, x, reference = _stack()
    compiled = convc.compile(model, x, cache_dir=False)
    assert_matches(compiled(x), reference(x))


def test_a_worker_killed_during_a_part_has_its_part_compiled_here(one_worker, monkeypatch):
    worker = _idle_workers()[0]
    original = compile_pool._Worker.compile

    def dies_mid_part(self, texts):
        llvm_request_sent = original.__get__(self)
        self.process.kill()
        return llvm_request_sent(texts)

    monkeypatch.setattr(compile_pool._Worker, "compile", dies_mid_part)
    model, x, reference = _stack()
    compiled = convc.compile(model, x, cache_dir=False)
    assert_matches(compiled(x), reference(x))
    assert worker.process.poll() is not None  # killed and reaped, not left behind
    assert worker not in compile_pool._idle
    assert {part.where for part in compiled.compile_times.parts} == {"here"}


def test_a_part_that_fails_in_a_worker_raises_the_llvm_error_here(one_worker):
    session = CompileSession()
    session._session.submit("broken", "this is not LLVM IR")
    with pytest.raises(RuntimeError, match="(?i)expected"):
        session.finish()
    assert len(_idle_workers()) == 1  # the worker itself is fine and stays


def test_compiles_from_several_threads_at_once(one_worker):
    model, x, reference = _stack()
    results, errors = {}, []

    def compile_and_run(index):
        try:
            results[index] = convc.compile(model, x, cache_dir=False)(x)
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=compile_and_run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 3
    for out in results.values():
        assert_matches(out, reference(x))


def test_a_bad_worker_count_names_the_variable(monkeypatch):
    monkeypatch.setenv("CONVC_COMPILE_WORKERS", "two")
    with pytest.raises(convc.ConvcError, match="CONVC_COMPILE_WORKERS='two'"):
        compile_pool.worker_count()
    monkeypatch.setenv("CONVC_COMPILE_WORKERS", "-1")
    with pytest.raises(convc.ConvcError, match="CONVC_COMPILE_WORKERS"):
        compile_pool.worker_count()


def test_workers_exit_with_their_process():
    script = (
        "import os, sys, numpy as np, convc\n"
        "from convc import ops\n"
        "from convc.runtime import compile_pool\n"
        "w = np.ones((4, 2, 3, 3), np.float32)\n"
        "convc.compile(lambda x: ops.conv2d(x, w), np.ones((1, 2, 8, 8), np.float32), cache_dir=False)\n"
        "print(' '.join(str(w.process.pid) for w in compile_pool._idle))\n")
    env = {**os.environ, "CONVC_COMPILE_WORKERS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    pids = [int(p) for p in done.stdout.split()]
    assert pids
    for pid in pids:  # gone (or the pid reused by another program)
        assert _not_a_compile_worker(pid)


def _not_a_compile_worker(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return b"llvm_compile" not in file.read()
    except OSError:
        return True


def test_an_in_process_compile_leaves_llvms_machine_scheduler_as_it_found_it(monkeypatch):
    """LLVM options are the whole process's: convc switches the pre-RA scheduler off only while it
    generates code, so another LLVM user in the process (numba) keeps its default."""
    from convc.runtime import llvm_compile
    seen = []
    monkeypatch.setenv("CONVC_COMPILE_WORKERS", "0")
    monkeypatch.setattr(llvm_compile.llvm, "set_option", lambda _name, option: seen.append(option))
    x = np.ones((1, 8, 6, 6), np.float32)
    w = np.full((8, 8, 3, 3), 0.5, np.float32)
    compiled = convc.compile(convc.trace(lambda a: ops.conv2d(a, w), x), cache_dir=False)
    assert_close(compiled(x), conv_nd(x, w), terms=72)
    assert seen and seen[-1] == "-enable-misched=true", seen
    assert "-enable-misched=false" in seen
