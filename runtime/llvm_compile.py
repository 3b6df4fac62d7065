"""LLVM's part of a compile: IR text in, optimized IR and a relocatable object file out.

This file imports nothing of convc (only llvmlite), so that a compile worker process
(convc.runtime.compile_pool) can run it by path without importing the convc package. The JIT
(convc.runtime.jit) compiles through the same functions in-process, so a kernel compiled by a
worker and one compiled in-process are the same machine code.

Run as a script, it is a worker: it reads requests from stdin and answers on stdout, one at a
time, until stdin closes. A request is `count` (u32) then `count` IR texts, each a u64 length and
its UTF-8 bytes; the texts are parsed, linked into one module, optimized and compiled. The answer
is status 0, the object file and the zlib-compressed optimized IR (each a u64 length and bytes), or
status 1 and an error message.
"""
from __future__ import annotations

import contextlib
import functools
import json
import struct
import sys
import threading
import zlib
from typing import BinaryIO, Iterator

import llvmlite.binding as llvm
from llvmlite.binding import ffi


@functools.lru_cache(maxsize=None)
def initialize() -> None:
    """The native target and asm printer."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


# The pre-RA machine scheduler hoists every weight load of a register tile and spills, so it is off
# while convc generates code. LLVM options belong to the whole process: a worker process (ours)
# switches it off for good; in the caller's process it is off only while some thread is inside
# `compile_texts` (counted, so that concurrent compiles overlap safely) and restored after, so
# other users of LLVM in the process (numba) keep their code generation.
_scheduler_lock = threading.Lock()
_scheduler_users = 0
_own_process = False


@contextlib.contextmanager
def machine_scheduler_off() -> Iterator[None]:
    global _scheduler_users
    if _own_process:
        yield
        return
    with _scheduler_lock:
        _scheduler_users += 1
        if _scheduler_users == 1:
            llvm.set_option("", "-enable-misched=false")
    try:
        yield
    finally:
        with _scheduler_lock:
            _scheduler_users -= 1
            if _scheduler_users == 0:
                llvm.set_option("", "-enable-misched=true")  # the default of x86 and AArch64


def target_machine(cpu: str, features: str, triple: str, pic: bool = False) -> llvm.TargetMachine:
    """A new target machine (an MCJIT engine owns, and frees, the one it is given): for the JIT, or
    with `pic` for position-independent code that a shared library links (convc.export)."""
    initialize()
    target = llvm.Target.from_triple(triple)
    if pic:
        return target.create_target_machine(cpu=cpu, features=features, opt=3, reloc="pic", codemodel="default")
    return target.create_target_machine(cpu=cpu, features=features, opt=3, codemodel="jitdefault", jit=True)


@contextlib.contextmanager
def parsed(text: str) -> Iterator[llvm.ModuleRef]:
    """`text` parsed into a scratch context; the module and the context are freed on exit (types and
    constants interned in a context live as long as it does, so the global one would grow)."""
    context = llvm.create_context()
    try:
        module = llvm.parse_assembly(text, context=context)
        try:
            yield module
        finally:
            module.close()
    finally:
        context.close()


def optimize(module: llvm.ModuleRef, machine: llvm.TargetMachine) -> None:
    """LLVM's O3 module pipeline, without its loop unrolling."""
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


def compile_texts(texts: list[str], cpu: str, features: str, triple: str, pic: bool = False) -> tuple[bytes, bytes]:
    """The modules of `texts` linked into one, optimized and compiled: (object file, optimized IR
    zlib-compressed); position-independent if `pic`."""
    machine = target_machine(cpu, features, triple, pic)
    context = llvm.create_context()
    try:
        modules = [llvm.parse_assembly(text, context=context) for text in texts]
        module = modules[0]
        try:
            for other in modules[1:]:
                module.link_in(other)  # takes `other` over (and frees it)
            module.verify()
            optimize(module, machine)
            with machine_scheduler_off():
                obj = machine.emit_object(module)
            return obj, zlib.compress(str(module).encode())
        finally:
            module.close()
    finally:
        context.close()


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


def _read_texts(stream: BinaryIO) -> list[str]:
    (count,) = struct.unpack("<I", _read_exact(stream, 4))
    return [_read_exact(stream, struct.unpack("<Q", _read_exact(stream, 8))[0]).decode() for _ in range(count)]


def write_request(stream: BinaryIO, texts: list[str]) -> None:
    """One request to a worker: the IR texts of one part."""
    chunks = [struct.pack("<I", len(texts))]
    for text in texts:
        data = text.encode()
        chunks += [struct.pack("<Q", len(data)), data]
    stream.write(b"".join(chunks))
    stream.flush()


def read_answer(stream: BinaryIO) -> tuple[bytes, bytes]:
    """A worker's answer: (object file, compressed optimized IR); RuntimeError with the worker's
    message if it failed, EOFError if it is gone."""
    status = _read_exact(stream, 1)
    fields = []
    for _ in range(2 if status == b"\0" else 1):
        fields.append(_read_exact(stream, struct.unpack("<Q", _read_exact(stream, 8))[0]))
    if status != b"\0":
        raise RuntimeError(fields[0].decode(errors="replace"))
    return fields[0], fields[1]


def serve(target: dict[str, str], requests: BinaryIO, answers: BinaryIO) -> None:
    """The worker's loop: answer each request until `requests` closes."""
    global _own_process
    initialize()
    llvm.set_option("", "-enable-misched=false")
    _own_process = True
    while True:
        try:
            texts = _read_texts(requests)
        except EOFError:
            return
        try:
            fields = [b"\0", *compile_texts(texts, target["cpu"], target["features"], target["triple"],
                                                   bool(target.get("pic")))]
        except Exception as error:  # reported to the caller, who compiles in-process to raise it there
            fields = [b"\1", f"{type(error).__name__}: {error}".encode()]
        answers.write(fields[0] + b"".join(struct.pack("<Q", len(f)) + f for f in fields[1:]))
        answers.flush()


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]), sys.stdin.buffer, sys.stdout.buffer)
