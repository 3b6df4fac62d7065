"""What a target CPU can run, asked of LLVM: its widest vector and the x86 features its code uses.

An ahead-of-time build (convc.export) may name a CPU other than the host's. LLVM knows every CPU's
features but llvmlite does not list them, so each feature that convc's kernels depend on is probed:
a one-instruction function compiled for the CPU, whose assembly shows whether LLVM used the
feature's instruction. A shared library checks the features found here with cpuid before it runs
(convc.export), so a build for a CPU the host lacks fails with an error code instead of SIGILL.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass

from convc.errors import ConvcError

from . import llvm_compile
from .jit import CodeTarget, host_target

# feature -> (IR of a function named after it, what its assembly shows when LLVM used the feature)
_PROBES = {
    "avx": ("<8 x float> @avx(<8 x float> %a, <8 x float> %b) {\n  %c = fadd <8 x float> %a, %b\n"
            "  ret <8 x float> %c\n}", r"vaddps\s+%ymm"),
    "avx2": ("<8 x i32> @avx2(<8 x i32> %a, <8 x i32> %b) {\n  %c = add <8 x i32> %a, %b\n"
             "  ret <8 x i32> %c\n}", r"vpaddd\s+%ymm"),
    "fma": ("<4 x float> @fma(<4 x float> %a, <4 x float> %b, <4 x float> %c) {\n"
            "  %d = call <4 x float> @llvm.fma.v4f32(<4 x float> %a, <4 x float> %b, <4 x float> %c)\n"
            "  ret <4 x float> %d\n}", r"vfmadd"),
    "avx512f": ("<16 x float> @avx512f(<16 x float> %a, <16 x float> %b) {\n  %c = fadd <16 x float> %a, %b\n"
                "  ret <16 x float> %c\n}", r"vaddps\s+%zmm"),
    "avx512bw": ("<32 x i16> @avx512bw(<32 x i16> %a, <32 x i16> %b) {\n  %c = add <32 x i16> %a, %b\n"
                 "  ret <32 x i16> %c\n}", r"vpaddw\s+%zmm"),
    "avx512dq": ("<8 x i64> @avx512dq(<8 x i64> %a, <8 x i64> %b) {\n  %c = mul <8 x i64> %a, %b\n"
                 "  ret <8 x i64> %c\n}", r"vpmullq\s+%zmm"),
    "avx512vl": ("<4 x i64> @avx512vl(<4 x i64> %a, <4 x i64> %b) {\n  %c = mul <4 x i64> %a, %b\n"
                 "  ret <4 x i64> %c\n}", r"vpmullq\s+%ymm"),
}
_DECLARATIONS = "declare <4 x float> @llvm.fma.v4f32(<4 x float>, <4 x float>, <4 x float>)\n"


@dataclass(frozen=True)
class TargetCpu:
    """A CPU to generate a shared library's code for."""

    target: CodeTarget  # position-independent
    vector_bits: int    # its widest float vector
    features: tuple[str, ...]  # the probed x86 features it has (checked by the library before it runs)


def target_cpu(cpu: str | None) -> TargetCpu:
    """The host's CPU (None or its own name) or the named LLVM CPU ("znver4", "x86-64-v3"); a
    ConvcError if LLVM does not know the name."""
    host = host_target()
    if cpu is not None and not isinstance(cpu, str):
        raise TypeError(f"export: cpu={cpu!r} must be an LLVM CPU name or None")
    if cpu in (None, "", "host", host.cpu):
        target = CodeTarget(host.cpu, host.features, host.triple, pic=True)
    else:
        target = CodeTarget(cpu, "", host.triple, pic=True)
    if not host.triple.startswith("x86_64"):
        if target.cpu != host.cpu:
            raise ConvcError(f"export: cpu={cpu!r}: only the host CPU ({host.cpu}) is supported on {host.triple}")
        return TargetCpu(target, host.native_vector_bits, ())
    assembly, complaints = _probe_assembly(target)
    if "not a recognized processor" in complaints:
        raise ConvcError(f"export: cpu={cpu!r} is not a CPU LLVM knows for {host.triple} "
                         f"(for example 'x86-64-v3', 'x86-64-v4', 'znver4', 'skylake-avx512', or None for the host)")
    if complaints:
        raise ConvcError(f"export: LLVM does not accept cpu={cpu!r}: {complaints.strip()}")
    features = tuple(name for name, (_, shows) in _PROBES.items() if re.search(shows, _body(assembly, name)))
    bits = 512 if "avx512f" in features else 256 if "avx" in features else 128
    return TargetCpu(target, bits, features)


def _body(assembly: str, name: str) -> str:
    """The assembly of function `name` (from its label to the next function's)."""
    match = re.search(rf"^{name}:\n(.*?)(?=^\w+:\n|\Z)", assembly, re.M | re.S)
    return match.group(1) if match else ""


def _probe_assembly(target: CodeTarget) -> tuple[str, str]:
    """The probes' assembly for `target` (empty if LLVM complained), and what LLVM wrote to stderr
    while it made the target machine (where it names an unknown CPU, which would abort the process
    at code generation)."""
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            machine = llvm_compile.target_machine(target.cpu, target.features, target.triple)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        complaints = captured.read().decode(errors="replace")
    if complaints:
        return "", complaints
    with llvm_compile.parsed(_DECLARATIONS + "\n".join(f"define {ir}" for ir, _ in _PROBES.values())) as module:
        return machine.emit_assembly(module), ""
