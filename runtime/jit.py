"""The LLVM JIT for the host CPU: one target machine, O3 module passes, MCJIT engines kept alive."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import llvmlite.binding as llvm
import llvmlite.ir as ir


@dataclass(frozen=True)
class HostTarget:
    """The host CPU as LLVM sees it."""

    cpu: str
    features: str
    triple: str

    @property
    def vector_bits(self) -> int:
        """Widest float vector register: 512 with AVX-512F, 256 with AVX, else 128."""
        enabled = set(f[1:] for f in self.features.split(",") if f.startswith("+"))
        if "avx512f" in enabled:
            return 512
        return 256 if "avx" in enabled else 128


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


class JitModule:
    """A module compiled to machine code; keeps its engine (and so its code) alive."""

    def __init__(self, module: ir.Module) -> None:
        machine, host = _target_machine()
        module.triple = host.triple
        module.data_layout = str(machine.target_data)
        parsed = llvm.parse_assembly(str(module))
        parsed.verify()
        tuning = llvm.create_pipeline_tuning_options(speed_level=3)
        tuning.loop_vectorization = True
        tuning.slp_vectorization = True
        builder = llvm.create_pass_builder(machine, tuning)
        builder.getModulePassManager().run(parsed, builder)
        self.llvm_ir = str(parsed)
        self._module = parsed
        self._engine = llvm.create_mcjit_compiler(parsed, machine)
        self._engine.finalize_object()

    def address(self, name: str) -> int:
        return self._engine.get_function_address(name)

    @functools.cached_property
    def asm(self) -> str:
        return _target_machine()[0].emit_assembly(self._module)
