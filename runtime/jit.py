"""The LLVM JIT for the host CPU: O3 module passes, an object file, and an MCJIT engine per module.

A module is compiled in a scratch LLVM context (types, constants and metadata interned in a
context live as long as it does, so the global one would grow with every compile): it is
optimized at O3, compiled to a relocatable object file for the host, and the context is freed.
The object file is then loaded into its own MCJIT engine, which owns the machine code; dropping
the JitModule frees it. The same object file can come from the on-disk cache instead
(convc.runtime.disk_cache), so a cache hit and a fresh compile load code the same way. Only the
optimized IR is kept besides the engine, zlib-compressed; `llvm_ir` and `asm` are produced from
it when asked.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import os
import weakref
import zlib
from dataclasses import dataclass
from typing import Iterator

import llvmlite.binding as llvm
import llvmlite.ir as ir
from llvmlite.binding import ffi


@dataclass(frozen=True)
class HostTarget:
    """The host CPU as LLVM sees it."""

    cpu: str
    features: str
    triple: str

    @property
    def vector_bits(self) -> int:
        """Widest float vector register the kernels use: 512 with AVX-512F, 256 with AVX, else 128;
        CONVC_VECTOR_BITS=256 (or 128) narrows it, to exercise the narrower kernels on a wider host."""
        enabled = set(f[1:] for f in self.features.split(",") if f.startswith("+"))
        native = 512 if "avx512f" in enabled else 256 if "avx" in enabled else 128
        requested = os.environ.get("CONVC_VECTOR_BITS")
        return min(native, int(requested)) if requested in ("128", "256", "512") else native

    @property
    def l1d_bytes(self) -> int:
        """Size of one core's L1 data cache (from sysfs; 32 KiB where it does not say)."""
        return _l1d_bytes()

    def lanes(self, dtype: str) -> int:
        """Elements of `dtype` ('f32' or 'f64') in one vector register: the channel block."""
        return self.vector_bits // (32 if dtype == "f32" else 64)


@functools.lru_cache(maxsize=None)
def _l1d_bytes() -> int:
    for index in range(8):
        folder = f"/sys/devices/system/cpu/cpu0/cache/index{index}"
        try:
            with open(f"{folder}/level") as level, open(f"{folder}/type") as kind, open(f"{folder}/size") as size:
                if level.read().strip() == "1" and kind.read().strip() == "Data":
                    text = size.read().strip().upper()
                    return int(text.rstrip("KMB")) * {"K": 1 << 10, "M": 1 << 20}.get(text.rstrip("B")[-1], 1)
        except (OSError, ValueError):
            continue
    return 32 << 10


@functools.lru_cache(maxsize=None)
def host_target() -> HostTarget:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    # The pre-RA machine scheduler hoists every weight load of a register tile and spills.
    llvm.set_option("", "-enable-misched=false")
    return HostTarget(llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten(), llvm.get_process_triple())


def _target_machine() -> tuple[llvm.TargetMachine, HostTarget]:
    """A new target machine for the host: an MCJIT engine owns (and frees) the one it is given."""
    host = host_target()
    machine = llvm.Target.from_triple(host.triple).create_target_machine(
        cpu=host.cpu, features=host.features, opt=3, codemodel="jitdefault", jit=True)
    return machine, host


@dataclass(frozen=True)
class ObjectCode:
    """A compiled module: its object file for the host and its optimized IR, zlib-compressed."""

    object_file: bytes
    compressed_ir: bytes


@contextlib.contextmanager
def _parsed(text: str) -> Iterator[llvm.ModuleRef]:
    """`text` parsed into a scratch context; the module and the context are freed on exit."""
    context = llvm.create_context()
    try:
        module = llvm.parse_assembly(text, context=context)
        try:
            yield module
        finally:
            module.close()
    finally:
        context.close()


def _optimize(module: llvm.ModuleRef, machine: llvm.TargetMachine) -> None:
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization = True
    tuning.slp_vectorization = True
    # the emitters unroll what should be unrolled; LLVM's runtime unrolling of a 1x1 conv's channel
    # loop doubled its live vectors and spilled (10% of the FMA peak instead of 61%, znver4)
    tuning.loop_unrolling = False
    builder = llvm.create_pass_builder(machine, tuning)
    passes = builder.getModulePassManager()
    try:
        passes.run(module, builder)
    finally:
        # llvmlite 0.50's ModulePassManager inherits ObjectRef's no-op _dispose ahead of its own,
        # so close() would leak the whole O3 pipeline (about 250 KB a compile); free it here.
        ffi.lib.LLVMPY_DisposeNewModulePassManger(passes)
        passes.detach()


def compile_module(module: ir.Module) -> ObjectCode:
    """Optimize `module` at O3 and compile it to an object file for the host CPU."""
    machine, host = _target_machine()
    module.triple = host.triple
    module.data_layout = str(machine.target_data)
    with _parsed(str(module)) as parsed:
        parsed.verify()
        _optimize(parsed, machine)
        return ObjectCode(machine.emit_object(parsed), zlib.compress(str(parsed).encode()))


def release_memory() -> None:
    """Free the engines nothing references any more (reference cycles included) and hand the heap
    pages LLVM and Python freed back to the operating system (glibc's malloc_trim; a no-op elsewhere)."""
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _free_engine(engine: llvm.ExecutionEngine, context: llvm.ContextRef) -> None:
    engine.close()
    context.close()


class JitModule:
    """Machine code loaded into its own MCJIT engine, which keeps it alive as long as this object."""

    def __init__(self, code: ObjectCode | ir.Module) -> None:
        if isinstance(code, ir.Module):
            code = compile_module(code)
        machine, _ = _target_machine()
        # The engine's (empty) module gets a context of its own: engines are made and freed on any
        # thread, and an LLVM context must not be used by two at once. The finalizer owns both and
        # frees the engine before its context; were they freed by the garbage collector instead,
        # a reference cycle through this object could free the context first (a crash).
        context = llvm.create_context()
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly("", context=context), machine)
        engine.add_object_file(llvm.ObjectFileRef.from_data(code.object_file))
        engine.finalize_object()
        self._engine = engine
        self._compressed_ir = code.compressed_ir
        weakref.finalize(self, _free_engine, engine, context).atexit = False

    def address(self, name: str) -> int:
        return self._engine.get_function_address(name)

    @property
    def llvm_ir(self) -> str:
        """The optimized LLVM IR the machine code was compiled from."""
        return zlib.decompress(self._compressed_ir).decode()

    @property
    def asm(self) -> str:
        """The host assembly, compiled again from the optimized IR (code generation is deterministic)."""
        with _parsed(self.llvm_ir) as module:
            return _target_machine()[0].emit_assembly(module)
