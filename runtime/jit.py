"""The LLVM JIT for the host CPU: O3 module passes, object files, and an MCJIT engine per graph.

A graph's kernels are separate modules (convc.runtime.lower), compiled in parts, in parallel by
worker processes where there is enough code (convc.runtime.compile_pool); each part is optimized
at O3 in a scratch LLVM context and compiled to a relocatable object file for the host
(convc.runtime.llvm_compile). The object files are then loaded into one MCJIT engine, which links
their calls by name and owns the machine code; dropping the JitModule frees it. The same object
files can come from the on-disk cache instead (convc.runtime.disk_cache), so a cache hit and a
fresh compile load code the same way. Only the optimized IR is kept besides the engine,
zlib-compressed; `llvm_ir` and `asm` are produced from it when asked.
"""
from __future__ import annotations

import ctypes
import functools
import gc
import weakref
import zlib
from dataclasses import dataclass

import llvmlite.binding as llvm
import llvmlite.ir as ir

from . import llvm_compile


@dataclass(frozen=True)
class HostTarget:
    """The host CPU as LLVM sees it."""

    cpu: str
    features: str
    triple: str

    @property
    def native_vector_bits(self) -> int:
        """Widest float vector register of the host: 512 with AVX-512F, 256 with AVX, else 128."""
        enabled = set(f[1:] for f in self.features.split(",") if f.startswith("+"))
        return 512 if "avx512f" in enabled else 256 if "avx" in enabled else 128

    @property
    def vector_bits(self) -> int:
        """The vector width the kernels use: the running compile's `vector_bits` option
        (convc.options.current()), else CONVC_VECTOR_BITS, else the host's widest; never wider
        than the host's (a narrower one exercises the narrower kernels on a wider host)."""
        from convc.options import current, environment_vector_bits
        options = current()
        requested = options.vector_bits if options is not None else environment_vector_bits()
        native = self.native_vector_bits
        return native if requested is None else min(native, requested)

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
    llvm_compile.initialize()
    return HostTarget(llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten(), llvm.get_process_triple())


def _target_machine() -> tuple[llvm.TargetMachine, HostTarget]:
    """A new target machine for the host: an MCJIT engine owns (and frees) the one it is given."""
    host = host_target()
    return llvm_compile.target_machine(host.cpu, host.features, host.triple), host


@dataclass(frozen=True)
class CodeTarget:
    """What object code is generated for: an LLVM CPU name and features ("" for the CPU's own), the
    host's triple, and whether the code is position-independent (for a shared library)."""

    cpu: str
    features: str
    triple: str
    pic: bool = False

    @staticmethod
    def host() -> CodeTarget:
        host = host_target()
        return CodeTarget(host.cpu, host.features, host.triple)


@dataclass(frozen=True)
class ObjectCode:
    """Compiled modules: an object file for the host per part, and each part's optimized IR,
    zlib-compressed. The parts call each other's functions by name; one engine links them."""

    objects: tuple[bytes, ...]
    compressed_irs: tuple[bytes, ...]


def prepared(module: ir.Module) -> str:
    """The IR text of `module` for the host (its triple and data layout set)."""
    host = host_target()
    module.triple = host.triple
    module.data_layout = _data_layout()
    return str(module)


def _release(module: ir.Module) -> None:
    """Empty `module` once its text is made: its functions' bodies and its table of globals (a
    function keeps its name, type and module, for the calls other modules make). llvmlite's objects
    refer to each other (an instruction to its block and a block to its terminator, a phi to the
    values of a loop, a function to its module and back), so a lowered model left some 300k objects
    in reference cycles that only a collection of the cyclic garbage collector frees (0.2 s after
    HiFi-GAN's compile); cut, they are freed at once."""
    for function in module.functions:
        for block in function.blocks:
            for instruction in block.instructions:
                if isinstance(instruction, ir.PhiInstr):
                    instruction.incomings.clear()
            block.instructions.clear()
            block.terminator = None
        function.blocks.clear()
    module.globals.clear()
    module.metadata.clear()
    module.namedmetadata.clear()
    module._metadatacache.clear()


@functools.lru_cache(maxsize=None)
def _data_layout() -> str:
    return str(_target_machine()[0].target_data)


def compile_module(module: ir.Module) -> ObjectCode:
    """Optimize `module` at O3 and compile it to an object file for the host CPU, in this process."""
    host = host_target()
    obj, compressed_ir = llvm_compile.compile_texts([prepared(module)], host.cpu, host.features, host.triple)
    return ObjectCode((obj,), (compressed_ir,))


def warm_workers(target: CodeTarget | None = None) -> None:
    """Start the compile workers now, so that their start-up overlaps tracing and the passes."""
    from . import compile_pool
    target = target or CodeTarget.host()
    compile_pool.warm(target.cpu, target.features, target.triple, target.pic)


class CompileSession:
    """Modules compiled as they are submitted: by idle compile workers where `warm_workers` started
    some (convc.runtime.compile_pool), else in-process when the last is in."""

    def __init__(self, target: CodeTarget | None = None) -> None:
        from . import compile_pool
        target = target or CodeTarget.host()
        self._session = compile_pool.Session(target.cpu, target.features, target.triple, target.pic)
        self.ir_chars: dict[str, int] = {}  # module name -> characters of its IR text

    def submit(self, module: ir.Module) -> None:
        """Compile `module`; its function bodies are dropped once its text is made (see `_release`)."""
        text = prepared(module)
        _release(module)
        self.ir_chars[module.name] = len(text)
        self._session.submit(module.name, text)

    @property
    def part_times(self) -> list:
        """Each LLVM part's kernel modules, seconds and where it ran (convc.compile_times.PartTime)."""
        return self._session.times

    def finish(self) -> ObjectCode:
        results = self._session.finish()
        return ObjectCode(tuple(obj for obj, _ in results), tuple(text for _, text in results))


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
        for object_file in code.objects:
            engine.add_object_file(llvm.ObjectFileRef.from_data(object_file))
        engine.finalize_object()
        self._engine = engine
        self._compressed_irs = code.compressed_irs
        weakref.finalize(self, _free_engine, engine, context).atexit = False

    def address(self, name: str) -> int:
        return self._engine.get_function_address(name)

    @property
    def llvm_ir(self) -> str:
        """The optimized LLVM IR the machine code was compiled from, part after part."""
        return "\n".join(zlib.decompress(text).decode() for text in self._compressed_irs)

    @property
    def asm(self) -> str:
        """The host assembly, compiled again from the optimized IR (code generation is deterministic)."""
        listings = []
        for text in self._compressed_irs:
            with llvm_compile.parsed(zlib.decompress(text).decode()) as module, \
                    llvm_compile.machine_scheduler_off():
                listings.append(_target_machine()[0].emit_assembly(module))
        return "\n".join(listings)
