"""The garbage collector pause around compiles and imports: off inside, restored after, nested and
across threads, and left off when the caller had switched it off."""
import gc
import threading

import numpy as np
import pytest

import convc
from convc import collector


@pytest.fixture
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_paused_switches_off_and_restores(collector_on):
    with collector.paused():
        assert not gc.isenabled()
        with collector.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()


def test_paused_restores_after_an_error(collector_on):
    with pytest.raises(ValueError), collector.paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_paused_keeps_a_caller_disabled_collector_off(collector_on):
    gc.disable()
    with collector.paused():
        pass
    assert not gc.isenabled()


def test_overlapping_pauses_from_threads(collector_on):
    inside, release = threading.Event(), threading.Event()

    def hold():
        with collector.paused():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    inside.wait(10)
    with collector.paused():
        pass
    assert not gc.isenabled()  # the other thread's pause is still open
    release.set()
    thread.join()
    assert gc.isenabled()


def test_compile_leaves_the_collector_on(collector_on):
    x = np.random.default_rng(0).standard_normal((1, 2, 9)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((3, 2, 3)).astype(np.float32)
    compiled = convc.compile(lambda a: convc.ops.conv1d(a, w, padding=1), x, cache_dir=False)
    assert gc.isenabled()
    reference = np.stack([sum(np.convolve(np.pad(x[0, c], 1), w[o, c][::-1], "valid") for c in range(2))
                          for o in range(3)])[None]
    np.testing.assert_allclose(compiled(x), reference, rtol=1e-5, atol=1e-5)


def test_a_compile_leaves_no_instructions_in_reference_cycles():
    """Lowered modules are cut up once their text is made, so their instructions are freed by
    reference counting, not left for a collection (a model's lowering left ~300k such objects)."""
    import llvmlite.ir as ir
    x = np.random.rand(1, 8, 40).astype(np.float32)
    w = np.random.rand(8, 8, 3).astype(np.float32)

    def model(x):
        return convc.ops.relu(convc.ops.conv1d(x, w, padding=1))

    gc.collect()
    was = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        compiled = convc.compile(model, x, cache_dir=False)
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, (ir.Instruction, ir.Block))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was:
            gc.enable()
    assert left == []
    assert np.allclose(compiled(x), np.maximum(0, _conv1d(x, w, 1)), atol=1e-5)


def _conv1d(x, w, pad):
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    k = w.shape[2]
    length = padded.shape[2] - k + 1
    return np.stack([np.einsum("ock,ck->o", w, padded[0, :, t:t + k]) for t in range(length)], axis=-1)[None]
