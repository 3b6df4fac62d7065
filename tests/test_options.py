"""convc.Options: field validation, environment defaults (validated, named in the error), and each
option's effect on what is compiled: vector width, thread count, disabled passes, instruments,
target, and the disk-cache key."""
import dataclasses

import numpy as np
import pytest
from convc.passes import PASS_NAMES
from convc.passes.pipeline import Instrument
from convc.runtime.jit import host_target
from reference import assert_close, conv_nd, relu

import convc
from convc import ConvcError, ops
from convc.options import Options

NATIVE_BITS = host_target().native_vector_bits
RNG = np.random.default_rng(11)
X = RNG.standard_normal((1, 16, 12, 12)).astype(np.float32)
W = RNG.standard_normal((32, 16, 3, 3)).astype(np.float32)
B = RNG.standard_normal(32).astype(np.float32)


def model(x):
    return ops.relu(ops.conv2d(x, W, B, padding=1))


EXPECTED = relu(conv_nd(X, W, B, padding=1))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("CONVC_VECTOR_BITS", "CONVC_NUM_THREADS", "CONVC_DUMP", "CONVC_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("fields, message", [
    ({"opt_level": 3}, "opt_level=3 must be 0, 1 or 2"),
    ({"opt_level": True}, "opt_level=True"),
    ({"threads": 0}, "threads=0 must be a whole number >= 1"),
    ({"threads": 2.5}, "threads=2.5"),
    ({"vector_bits": 384}, "vector_bits=384 must be one of 128, 256, 512"),
    ({"disable": ["fuse_everything"]}, "no pass named 'fuse_everything'"),
])
def test_bad_fields_are_errors_that_name_the_field(fields, message):
    with pytest.raises(ConvcError, match=message):
        Options(**fields)


def test_fields_of_the_wrong_kind_and_unknown_fields_are_type_errors():
    with pytest.raises(TypeError, match="dump=3"):
        Options(dump=3)
    with pytest.raises(TypeError, match="cache_dir=1.5"):
        Options(cache_dir=1.5)
    with pytest.raises(TypeError, match="unknown option.*vector_width"):
        convc.compile(model, X, vector_width=256)
    with pytest.raises(TypeError, match="must be a convc.Options"):
        convc.compile(model, X, options={"opt_level": 1})


def test_keyword_fields_override_the_options_object_which_stays_unchanged():
    base = Options(opt_level=1, threads=1)
    merged = Options.of(base, opt_level=0)
    assert (merged.opt_level, merged.threads) == (0, 1)
    assert base.opt_level == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.opt_level = 2


@pytest.mark.parametrize("name, value, message", [
    ("CONVC_VECTOR_BITS", "abc", "CONVC_VECTOR_BITS='abc' must be one of 128, 256, 512"),
    ("CONVC_NUM_THREADS", "0", "CONVC_NUM_THREADS='0' must be a whole number >= 1"),
    ("CONVC_NUM_THREADS", "two", "CONVC_NUM_THREADS='two'"),
])
def test_a_bad_environment_variable_is_an_error_naming_it(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConvcError, match=message):
        convc.compile(model, X)


def test_a_bad_eager_cache_size_does_not_break_import(monkeypatch):
    import subprocess
    import sys
    monkeypatch.setenv("CONVC_EAGER_CACHE_SIZE", "lots")
    result = subprocess.run([sys.executable, "-c", "import convc"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    from convc import eager
    with pytest.raises(ConvcError, match="CONVC_EAGER_CACHE_SIZE='lots'"):
        eager.run("relu", [np.zeros((3, 17, 29), np.float32)], {}, dump=False)  # a new kernel: the bound is read


def test_the_environment_seeds_defaults_and_a_field_wins_over_it(monkeypatch):
    if NATIVE_BITS < 256:
        pytest.skip("the host has no 256-bit vectors")
    monkeypatch.setenv("CONVC_VECTOR_BITS", "256")
    assert Options().resolved().vector_bits == 256
    assert Options(vector_bits=NATIVE_BITS).resolved().vector_bits == NATIVE_BITS
    monkeypatch.setenv("CONVC_NUM_THREADS", "1")
    assert Options().resolved().threads == 1
    assert Options(threads=2).resolved().threads == 2


@pytest.mark.parametrize("bits", sorted({128, 256, NATIVE_BITS} - {b for b in (256, 512) if b > NATIVE_BITS}))
def test_vector_bits_selects_the_channel_block_and_the_values_stay_right(bits):
    compiled = convc.compile(model, X, vector_bits=bits)
    assert compiled.options.vector_bits == bits
    block = bits // 32
    graph = compiled.graph
    # A conv reads the blocked layout through a reorder, or plain input that it packs itself
    # (its `block` attribute); either way the channel block is the width's lane count.
    blocks = {
        graph.type_of(node.operands[0]).block or node.attrs.get("block")
        for node in graph.nodes()
        if node.op == "conv2d"
    }
    assert blocks == {block}, blocks
    assert_close(compiled(X), EXPECTED, 16 * 9 * 4)
    assert f"<{block} x float>" in compiled.llvm_ir
    if bits < NATIVE_BITS:
        assert f"<{2 * block} x float>" not in compiled.llvm_ir


@pytest.mark.skipif(NATIVE_BITS >= 512, reason="the host has 512-bit vectors, the widest")
def test_vector_bits_wider_than_the_host_is_an_error():
    with pytest.raises(ConvcError, match=f"vector_bits=512 is wider than this host's {NATIVE_BITS}-bit"):
        convc.compile(model, X, vector_bits=512)


def test_a_target_other_than_the_host_is_an_error_and_the_host_name_is_accepted():
    with pytest.raises(ConvcError, match="target='not-a-cpu'.*runs on this host"):
        convc.compile(model, X, target="not-a-cpu")
    compiled = convc.compile(model, X, target=host_target().cpu)
    assert compiled.options.target == host_target().cpu
    assert_close(compiled(X), EXPECTED, 16 * 9 * 4)


def test_one_thread_runs_every_kernel_on_the_caller_with_the_same_values():
    single = convc.compile(model, X, threads=1)
    assert "call void @convc_parallel_run" not in single.llvm_ir
    np.testing.assert_array_equal(single(X), convc.compile(model, X, threads=1)(X))
    assert_close(single(X), EXPECTED, 16 * 9 * 4)


class Seen(Instrument):
    def __init__(self):
        self.names = []

    def after(self, index, pass_, graph):
        self.names.append(pass_.name)


def test_instruments_see_every_pass_and_disable_leaves_passes_out():
    everything = Seen()
    convc.compile(model, X, instruments=[everything])
    assert "fuse_epilogue" in everything.names and "assign_layout" in everything.names
    assert set(everything.names) <= set(PASS_NAMES)
    fewer = Seen()
    compiled = convc.compile(model, X, instruments=[fewer], disable=("fuse_epilogue",))
    assert "fuse_epilogue" not in fewer.names
    assert "relu" in {node.op for node in compiled.graph.nodes()}  # not fused into the conv
    assert_close(compiled(X), EXPECTED, 16 * 9 * 4)


def test_the_passes_every_kernel_needs_cannot_be_disabled():
    with pytest.raises(ConvcError, match="shape_inference cannot be disabled"):
        convc.compile(model, X, disable=["shape_inference"])


def test_the_disk_cache_keys_on_the_options_that_change_the_code(tmp_path):
    if NATIVE_BITS < 256:
        pytest.skip("the host has no wider vectors than 128 bits")
    first = convc.compile(model, X, cache_dir=tmp_path, vector_bits=128)
    assert len(list(tmp_path.glob("*.entry"))) == 1
    again = convc.compile(model, X, cache_dir=tmp_path, vector_bits=128)
    assert len(list(tmp_path.glob("*.entry"))) == 1  # a hit
    np.testing.assert_array_equal(first(X), again(X))
    convc.compile(model, X, cache_dir=tmp_path, vector_bits=256)
    convc.compile(model, X, cache_dir=tmp_path, vector_bits=128, disable=["fuse_epilogue"])
    assert len(list(tmp_path.glob("*.entry"))) == 3  # each a miss with its own entry


def test_options_are_recorded_on_the_compiled_graph_with_defaults_filled_in(monkeypatch):
    monkeypatch.setenv("CONVC_NUM_THREADS", "1")
    compiled = convc.compile(model, X, opt_level=1)
    assert compiled.options.opt_level == 1
    assert compiled.options.threads == 1
    assert compiled.options.vector_bits == NATIVE_BITS
    assert compiled.options.cache_dir is False
