"""Execution of a compiled graph: checks inputs on the host, then one native call of the entry.

A graph with symbolic sizes reads the symbols' values off its inputs' shapes (checked against
the dims' bounds and the graph's minimums), takes the frame of those lengths (runtime.frames; kept
per distinct lengths, FRAMES_KEPT at most) and grows its arena to the largest a call has needed:
repeated lengths allocate nothing but their outputs."""
from __future__ import annotations

import ctypes
import os
import threading
import time
import weakref
from typing import Any, Callable

import numpy as np

from convc.arrays import as_float_array
from convc.compile_times import CompileTimes
from convc.errors import ConvcError
from convc.ir import Graph
from convc.types import TensorType

from . import disk_cache, threads
from .frames import Frame
from .jit import CodeTarget, CompileSession, JitModule, ObjectCode
from .lower import ENTRY, Lowered, Program, lower

_ENTRY_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
FRAMES_KEPT = 256  # frames of distinct lengths an executable keeps (the oldest goes first)
_live: weakref.WeakSet[Executable] = weakref.WeakSet()  # whose own locks a forked child replaces


def _after_fork_in_child() -> None:
    """A thread of the parent may have held an executable's lock; the child has no such thread."""
    for executable in list(_live):
        executable._own_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Executable:
    """A graph's machine code plus everything its calls need: constants, arena, buffer table.
    `input_names` name the inputs in errors (the caller's graph's; the program's by default)."""

    def __init__(self, program: Program, code: ObjectCode, input_names: list[str] | None = None,
                 times: CompileTimes | None = None) -> None:
        start = time.perf_counter()
        if program.parallel:
            threads.link_pool()  # its entry point, which the machine code calls, is linked by name
        self.jit = JitModule(code)
        if times is not None:
            times.stages["load machine code"] = time.perf_counter() - start
        self.name = program.name
        self._program_inputs = [name for name, _ in program.inputs]
        self.input_names = list(input_names or self._program_inputs)
        self.input_types = [t for _, t in program.inputs]
        self.output_names = [name for name, _ in program.outputs]
        self.output_types = [t for _, t in program.outputs]
        self._slots = program.slots
        self._entry = _ENTRY_TYPE(self.jit.address(ENTRY))
        self._consts = program.arrays
        self._symbolic = program.symbolic
        self._frames: dict[tuple[int, ...], Frame] = {}
        self._buffers = (ctypes.c_void_p * (program.arena_slot + 1 + bool(program.stamps) + bool(program.symbolic)))()
        self._buffers_address = ctypes.addressof(self._buffers)
        for name, value in self._consts.items():
            self._buffers[program.slots[name]] = value.ctypes.data
        self._arena_slot = program.arena_slot
        self._new_arena(program.arena_bytes)
        self.stamps = np.zeros(program.stamps, np.uint64)  # a profiling build's cycle counts per kernel
        if program.stamps:
            self._buffers[program.arena_slot + 1 + bool(program.symbolic)] = self.stamps.ctypes.data
        self._computed = set(program.computed_outputs)
        self._parallel = program.parallel
        self._workers_started = False
        self._own_lock = threading.Lock()
        _live.add(self)

    def _lock(self) -> threading.Lock:
        """The pool's lock (looked up per call: a forked child replaces it), its workers started on
        the first parallel run, or this graph's own."""
        if not self._parallel:
            return self._own_lock
        if not self._workers_started:
            threads.ensure_pool()
            self._workers_started = True
        return threads.lock

    def check_inputs(self, arrays: tuple[Any, ...]) -> list[np.ndarray]:
        checked, _ = self._checked(arrays)
        return checked

    def _checked(self, arrays: tuple[Any, ...]) -> tuple[list[np.ndarray], Frame | None]:
        """The inputs as C-contiguous arrays of the compiled types, and the frame of their
        lengths where the graph's sizes are symbolic."""
        if len(arrays) != len(self.input_types):
            raise TypeError(f"@{self.name} takes {len(self.input_types)} inputs "
                            f"({', '.join('%' + n for n in self.input_names)}), got {len(arrays)}")
        inputs = [as_float_array(f"@{self.name}", f"input %{name}", value)
                  for name, value in zip(self.input_names, arrays)]
        expected_types, frame = self.input_types, None
        if self._symbolic is not None:
            for name, expected, array in zip(self.input_names, self.input_types, inputs):
                if array.ndim != expected.rank:
                    raise ConvcError(f"@{self.name}: input %{name} has rank {array.ndim} (shape {array.shape}); the "
                                     f"graph was compiled for rank {expected.rank} ({expected})")
            values = self._symbolic.lengths(self.name, self.input_names, [a.shape for a in inputs])
            expected_types = [t.substitute(values) for t in self.input_types]
            frame = self._frame(values)
        checked = []
        for name, expected, array in zip(self.input_names, expected_types, inputs):
            actual = TensorType.of_array(array)
            if actual != expected:
                if actual.dtype != expected.dtype:
                    raise TypeError(f"@{self.name}: input %{name} has dtype {array.dtype}; the graph was "
                                    f"compiled for {expected.numpy_dtype}")
                raise ConvcError(f"@{self.name}: input %{name} has shape {actual.shape}; the graph was "
                                 f"compiled for {expected.shape}")
            checked.append(np.asarray(array, order="C"))
        return checked, frame

    def _frame(self, values: dict[str, int]) -> Frame:
        key = tuple(values[s] for s in self._symbolic.symbols)
        frame = self._frames.pop(key, None)
        if frame is None:
            frame = self._symbolic.frame(values)
            if len(self._frames) >= FRAMES_KEPT:
                self._frames.pop(next(iter(self._frames)))
        self._frames[key] = frame  # the most recent last
        return frame

    def run_unchecked(self, arrays: list[np.ndarray]) -> np.ndarray:
        """The single output of a one-op graph whose inputs are known to have the compiled types."""
        inputs = [a if a.flags.c_contiguous else np.asarray(a, order="C") for a in arrays]
        out_type = self.output_types[0]
        result = np.empty(out_type.shape, out_type.numpy_dtype)
        self._execute(inputs, {self.output_names[0]: result})
        return result

    def _execute(self, inputs: list[np.ndarray], results: dict[str, np.ndarray], frame: Frame | None = None) -> None:
        """Point the buffer table at this call's inputs and outputs (and frame) and run the entry."""
        with self._lock():
            if frame is not None:
                self._bind_frame(frame)
            for name, array in zip(self._program_inputs, inputs):
                self._buffers[self._slots[name]] = array.ctypes.data
            for name, array in results.items():
                self._buffers[self._slots[name]] = array.ctypes.data
            self._entry(self._buffers_address)

    def _new_arena(self, nbytes: int) -> None:
        """An arena of `nbytes` (64-byte aligned in the buffer table)."""
        self._arena = np.empty(nbytes + 64, np.uint8)
        base = self._arena.ctypes.data
        self._buffers[self._arena_slot] = base + (-base % 64)

    def _bind_frame(self, frame: Frame) -> None:
        """The frame, its parameter arrays and an arena large enough for it in the buffer table."""
        if frame.arena_bytes + 64 > self._arena.size:
            self._new_arena(frame.arena_bytes)
        for slot, array in frame.params.items():
            self._buffers[slot] = array.ctypes.data
        self._buffers[self._arena_slot + 1] = frame.values.ctypes.data

    @property
    def minimums(self) -> dict[str, int]:
        """Each symbol's smallest value the graph's ops accept (none for fixed sizes)."""
        return dict(self._symbolic.minimums) if self._symbolic is not None else {}

    def lengths(self, *arrays: Any) -> dict[str, int]:
        """The symbols' values that a call with these inputs takes (none for fixed sizes); the
        same checks as a call."""
        if self._symbolic is None:
            return {}
        inputs = [as_float_array(f"@{self.name}", f"input %{name}", value)
                  for name, value in zip(self.input_names, arrays)]
        return self._symbolic.lengths(self.name, self.input_names, [a.shape for a in inputs])

    def __call__(self, *arrays: Any) -> list[np.ndarray]:
        inputs, frame = self._checked(arrays)
        shapes = frame.output_shapes if frame is not None else [t.shape for t in self.output_types]
        results = {n: np.empty(shape, t.numpy_dtype) for n, t, shape in zip(self.output_names, self.output_types, shapes)
                   if n in self._computed}
        self._execute(inputs, results, frame)
        outputs, seen = [], set()
        host = {**self._consts, **dict(zip(self._program_inputs, inputs))}
        for name in self.output_names:
            value = results.get(name)
            if value is None or name in seen:
                value = (host[name] if value is None else value).copy()
            outputs.append(value)
            seen.add(name)
        return outputs

    @property
    def llvm_ir(self) -> str:
        return self.jit.llvm_ir

    @property
    def asm(self) -> str:
        return self.jit.asm


def compile_graph(graph: Graph, optimize: Callable[[Graph], Graph], settings: str,
                  cache_dir: disk_cache.CacheOption = None,
                  times: CompileTimes | None = None) -> tuple[Executable, Graph | None]:
    """`graph` optimized by `optimize` (a pass pipeline that `settings` describes), lowered and
    compiled; or, when the disk cache that `cache_dir` selects holds it, loaded from there without
    running a pass. Returns the executable and the optimized graph (None on a hit)."""
    times = CompileTimes() if times is None else times
    for node in graph.consts():
        if node.value is None:
            raise ConvcError(f"compile: constant %{node.name} has no value; re-attach it with "
                             f"convc.parse(text, consts={{'{node.name}': array}})")
    start = time.perf_counter()
    cache = None if graph.dims else disk_cache.open_cache(cache_dir)  # symbolic programs bind host code
    key = None if cache is None else cache.key(graph, settings)
    hit = None if cache is None else cache.load(key)
    if cache is not None:
        times.stages["disk cache lookup"] = time.perf_counter() - start
    if hit is not None:
        times.cache_hit = True
        return Executable(*hit, input_names=graph.inputs, times=times), None
    optimized = optimize(graph)
    lowered, code = lower_and_compile(optimized, times)
    if lowered.program.symbolic is not None:
        from convc.dynamic import preconditions
        lowered.program.symbolic.minimums = preconditions(graph)
    if cache is not None:
        cache.store(key, lowered.program, code)
    return Executable(lowered.program, code, input_names=graph.inputs, times=times), optimized


def lower_and_compile(graph: Graph, times: CompileTimes, profile: bool = False,
                      target: CodeTarget | None = None) -> tuple[Lowered, ObjectCode]:
    """The graph lowered (a profiling build if `profile`), each kernel module compiling (by the
    workers) as soon as it is complete, for `target` (the host's JIT by default)."""
    start = time.perf_counter()
    session = CompileSession(target)
    lowered = lower(graph, session.submit, profile)
    lowered_at = time.perf_counter()
    code = session.finish()
    times.stages["lower (Python; LLVM in workers meanwhile)"] = lowered_at - start
    times.stages["LLVM optimize + codegen (rest)"] = time.perf_counter() - lowered_at
    times.parts = session.part_times
    times.kernels = lowered.kernel_times
    for kernel in times.kernels:
        kernel.ir_chars = session.ir_chars.get(kernel.name, 0)
    return lowered, code
