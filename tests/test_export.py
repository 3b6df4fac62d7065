"""convc.export and convc.load: shared libraries that run a model without Python's compiler.

Libraries are checked against the JIT-compiled graph (bit-identical on the same host: the same
kernels, position-independent) and against NumPy references; a C program (examples/c/run_model.c)
is built with cc and run, from several threads at once; the loader runs without llvmlite; null
pointers, a CPU without a needed feature, a foreign header and bad arguments give error codes or
ConvcErrors. Skipped where no C compiler is present."""
import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import convc
from convc import shared_library
from convc import ops
from convc.runtime import cpu_features
from convc.runtime.jit import host_target
from reference import assert_close, conv_nd, relu

ROOT = Path(__file__).resolve().parent.parent
CC = os.environ.get("CC", "cc")
pytestmark = pytest.mark.skipif(shutil.which(CC) is None, reason=f"no C compiler ({CC}) on the PATH to link with")

RNG = np.random.default_rng(11)
X = RNG.standard_normal((1, 16, 12, 12)).astype(np.float32)
W1 = RNG.standard_normal((32, 16, 3, 3)).astype(np.float32)
B1 = RNG.standard_normal(32).astype(np.float32)
W2 = RNG.standard_normal((16, 32, 1, 1)).astype(np.float32)


def block(x):
    """conv 3x3 + bias + relu, then a 1x1 conv: blocked kernels, packed weights, the thread pool."""
    return ops.conv2d(ops.relu(ops.conv2d(x, W1, B1, padding=1)), W2)


def block_reference(x):
    return conv_nd(relu(conv_nd(x, W1, B1, padding=1)), W2)


def build_runner(library: Path, name: str, folder: Path) -> Path:
    """examples/c/run_model.c built against `library` and its header."""
    runner = folder / f"run_{name}"
    subprocess.run([CC, "-O2", "-Wall", "-Werror", f"-DMODEL={name}", "-include", str(library.with_suffix(".h")),
                    str(ROOT / "examples" / "c" / "run_model.c"), str(library), f"-Wl,-rpath,{library.parent}",
                    "-lpthread", "-o", str(runner)], check=True, capture_output=True, text=True)
    return runner


def run_in_c(runner: Path, inputs: list, folder: Path, *flags: str) -> tuple[list, str]:
    """The C program's outputs on `inputs` (raw files in, raw files out) and what it printed."""
    files = []
    for index, array in enumerate(inputs):
        files.append(folder / f"in{index}.bin")
        files[-1].write_bytes(np.ascontiguousarray(array).tobytes())
    done = subprocess.run([str(runner), *flags, "--out", str(folder / "out"), *map(str, files)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return [np.fromfile(folder / f"out{i}.bin", np.uint8) for i in range(8) if (folder / f"out{i}.bin").exists()], \
        done.stdout


def test_a_library_computes_what_the_jit_computes_bit_for_bit(tmp_path):
    compiled = convc.compile(block, X, cache_dir=False)
    library = convc.export(block, tmp_path / "block.so", X, name="block")
    assert library == tmp_path / "block.so" and library.with_suffix(".h").is_file()
    loaded = convc.load(library)
    expected = compiled(X)
    assert_close(expected, block_reference(X), terms=16 * 9 + 32)
    np.testing.assert_array_equal(loaded(X), expected)
    assert loaded.input_types == [((1, 16, 12, 12), np.dtype(np.float32))]
    assert loaded.output_types == [((1, 16, 12, 12), np.dtype(np.float32))]
    loaded.set_num_threads(1)  # chunks are the same work whoever runs them
    np.testing.assert_array_equal(loaded(X), expected)
    loaded.shutdown()
    np.testing.assert_array_equal(loaded(X), expected)  # the pool starts again
    loaded.shutdown()


def test_the_c_program_runs_the_model_from_several_threads(tmp_path):
    library = convc.export(convc.compile(block, X, cache_dir=False), tmp_path / "block.so", name="block")
    runner = build_runner(library, "block", tmp_path)
    (out,), printed = run_in_c(runner, [X], tmp_path, "--repeat", "3", "--concurrent", "4", "--threads", "2")
    assert "concurrent: 4 threads, 0 mismatches" in printed
    np.testing.assert_array_equal(out.view(np.float32).reshape(1, 16, 12, 12),
                                  convc.compile(block, X, cache_dir=False)(X))


def test_outputs_that_are_inputs_constants_or_repeated(tmp_path):
    x = RNG.standard_normal((1, 4, 9)).astype(np.float64)
    w = RNG.standard_normal((4, 4, 3))
    constant = RNG.standard_normal((2, 3))
    graph = convc.trace(lambda a: (ops.conv1d(a, w, padding=1), a, ops.conv1d(a, w, padding=1)), x)
    graph.outputs.append(graph.add_const(constant))
    compiled = convc.compile(graph, cache_dir=False)
    library = convc.load(convc.export(graph, tmp_path / "g.so", name="g"))
    expected, actual = compiled(x), library(x)
    assert isinstance(actual, tuple) and len(actual) == len(expected) == 4
    for ours, theirs in zip(actual, expected):
        assert ours.dtype == np.float64
        np.testing.assert_array_equal(ours, theirs)
    assert_close(actual[0], conv_nd(x, w, padding=1), terms=12)
    np.testing.assert_array_equal(actual[1], x)
    np.testing.assert_array_equal(actual[2], actual[0])
    np.testing.assert_array_equal(actual[3], constant)


def test_the_loader_needs_neither_llvmlite_nor_the_compiler(tmp_path):
    library = convc.export(block, tmp_path / "block.so", X, name="block")
    np.save(tmp_path / "x.npy", X)
    child = f"""
import sys
sys.modules["llvmlite"] = None  # any import of it fails
sys.path.insert(0, {str(ROOT)!r})
import numpy as np
import convc
out = convc.load({str(library)!r})(np.load({str(tmp_path / 'x.npy')!r}))
assert sys.modules["llvmlite"] is None and "convc.runtime.jit" not in sys.modules
np.save({str(tmp_path / 'out.npy')!r}, out)
"""
    subprocess.run([sys.executable, "-c", child], check=True, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), convc.compile(block, X, cache_dir=False)(X))


def test_null_pointers_are_error_codes(tmp_path):
    library = convc.export(block, tmp_path / "block.so", X, name="block")
    lib = ctypes.CDLL(str(library))
    out = np.empty((1, 16, 12, 12), np.float32)
    inputs = (ctypes.c_void_p * 1)(X.ctypes.data)
    outputs = (ctypes.c_void_p * 1)(out.ctypes.data)
    assert lib.block_run(None, outputs) == 1
    assert lib.block_run(inputs, None) == 1
    assert lib.block_run((ctypes.c_void_p * 1)(None), outputs) == 1
    assert lib.block_run(inputs, (ctypes.c_void_p * 1)(None)) == 1
    assert lib.block_run_with(inputs, outputs, None) == 1
    lib.block_workspace_size.restype = ctypes.c_size_t
    workspace = np.empty(lib.block_workspace_size(), np.uint8)
    assert lib.block_run_with(inputs, outputs, ctypes.c_void_p(workspace.ctypes.data)) == 0
    np.testing.assert_array_equal(out, convc.compile(block, X, cache_dir=False)(X))
    assert lib.block_input_shape(1, None) == -1 and lib.block_output_dtype(5) == -1
    lib.block_shutdown()


def _a_feature_the_host_lacks() -> str | None:
    flags = set(host_target().features.split(","))
    return next((f for f in shared_library.CPUID_BITS if f"-{f}" in flags), None)


def test_a_library_for_a_cpu_the_host_lacks_returns_an_error_code(tmp_path, monkeypatch):
    missing = _a_feature_the_host_lacks()
    if missing is None or not host_target().triple.startswith("x86_64"):
        pytest.skip("this host has every x86 feature the check knows")
    real = cpu_features.target_cpu

    def needing_more(cpu):
        chosen = real(cpu)
        return cpu_features.TargetCpu(chosen.target, chosen.vector_bits, (*chosen.features, missing))
    monkeypatch.setattr(cpu_features, "target_cpu", needing_more)
    library = convc.load(convc.export(block, tmp_path / "block.so", X, name="block"))
    with pytest.raises(convc.ConvcError, match="lacks a feature"):
        library(X)


@pytest.mark.skipif("avx2" not in cpu_features.target_cpu(None).features, reason="the host has no AVX2")
def test_a_library_for_a_named_cpu(tmp_path):
    chosen = cpu_features.target_cpu("x86-64-v3")
    assert chosen.vector_bits == 256 and {"avx", "avx2", "fma"} <= set(chosen.features)
    assert "avx512f" not in chosen.features
    library = convc.export(block, tmp_path / "v3.so", X, name="v3", cpu="x86-64-v3")
    assert_close(convc.load(library)(X), block_reference(X), terms=16 * 9 + 32)
    if shutil.which("objdump"):
        listing = subprocess.run(["objdump", "-d", str(library)], capture_output=True, text=True, check=True).stdout
        assert "%ymm" in listing and "%zmm" not in listing


def test_bad_arguments_are_convc_errors(tmp_path, monkeypatch):
    with pytest.raises(convc.ConvcError, match="C identifier"):
        convc.export(block, tmp_path / "a.so", X, name="3d-model")
    with pytest.raises(convc.ConvcError, match="not a CPU LLVM knows"):
        convc.export(block, tmp_path / "a.so", X, cpu="no-such-cpu")
    with pytest.raises(convc.ConvcError, match="no library"):
        convc.load(tmp_path / "missing.so")
    monkeypatch.setenv("CC", "no-such-compiler-xyz")
    with pytest.raises(convc.ConvcError, match="no-such-compiler-xyz"):
        convc.export(block, tmp_path / "a.so", X)


def test_a_header_of_another_export_is_refused(tmp_path):
    first = convc.export(block, tmp_path / "m.so", X, name="m")
    other = convc.export(lambda x: ops.relu(block(x)), tmp_path / "other" / "m.so", X, name="m")
    convc.load(first)
    shutil.copy(other.with_suffix(".h"), first.with_suffix(".h"))
    with pytest.raises(convc.ConvcError, match="different exports"):
        convc.load(first)


def test_the_command_line_exports_a_model_file(tmp_path, capsys):
    from convc.cli import main
    assert main(["export", str(ROOT / "examples" / "conv_stack.py"), "--out", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    library = convc.load(tmp_path / "conv_stack.so")
    assert library.name == "conv_stack" and library.input_types


ACCEPTANCE = ["hifigan", "wav2vec2_features", "mobilenet_v2", "resnet18"]


@pytest.mark.parametrize("name", ACCEPTANCE)
def test_acceptance_models_from_c_equal_the_jit(name, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from hf_models import MODELS
    model, inputs = MODELS[name]()
    arrays = [x.numpy() for x in inputs]
    compiled = convc.compile(convc.from_torch(model, *inputs), cache_dir=False)
    expected = compiled(*arrays)
    expected = expected if isinstance(expected, tuple) else (expected,)
    library = convc.export(compiled, tmp_path / f"{name}.so", name=name)
    outputs, _ = run_in_c(build_runner(library, name, tmp_path), arrays, tmp_path)
    assert len(outputs) == len(expected)
    for raw, ours in zip(outputs, expected):
        np.testing.assert_array_equal(raw.view(ours.dtype).reshape(ours.shape), ours)
