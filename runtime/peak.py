"""Measures the host's FMA peak with a generated kernel of independent vector FMA chains."""
from __future__ import annotations

import ctypes
import functools
import time

import llvmlite.ir as ir

from .codegen import I64, i64
from .jit import JitModule, host_target

CHAINS = 12  # independent accumulators: enough to hide FMA latency on two pipes


@functools.lru_cache(maxsize=None)
def fma_peak_gflops(dtype: str = "f32", seconds: float = 0.2) -> float:
    """Single-core GFLOP/s of back-to-back vector FMAs (2 flops per lane)."""
    scalar = ir.FloatType() if dtype == "f32" else ir.DoubleType()
    lanes = host_target().vector_bits // (32 if dtype == "f32" else 64)
    vector = ir.VectorType(scalar, lanes)
    module = ir.Module("peak")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, scalar.as_pointer()]), "peak")
    suffix = f"v{lanes}{'f32' if dtype == 'f32' else 'f64'}"
    fma = ir.Function(module, ir.FunctionType(vector, [vector] * 3), f"llvm.fma.{suffix}")
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    entry, loop, done = builder.block, fn.append_basic_block("loop"), fn.append_basic_block("done")
    seed = builder.load(fn.args[1])
    splat = builder.insert_element(ir.Constant(vector, None), seed, i64(0))
    splat = builder.shuffle_vector(splat, ir.Constant(vector, None), ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))
    builder.branch(loop)
    builder.position_at_end(loop)
    counter = builder.phi(I64)
    counter.add_incoming(i64(0), entry)
    accumulators = []
    for _ in range(CHAINS):
        phi = builder.phi(vector)
        phi.add_incoming(splat, entry)
        accumulators.append(phi)
    updated = [builder.call(fma, [acc, splat, splat]) for acc in accumulators]
    for phi, value in zip(accumulators, updated):
        phi.add_incoming(value, loop)
    following = builder.add(counter, i64(1))
    counter.add_incoming(following, loop)
    builder.cbranch(builder.icmp_signed("<", following, fn.args[0]), loop, done)
    builder.position_at_end(done)
    total = updated[0]
    for value in updated[1:]:
        total = builder.fadd(total, value)
    builder.store(builder.extract_element(total, i64(0)), fn.args[1])
    builder.ret_void()
    jit = JitModule(module)
    c_scalar = ctypes.c_float if dtype == "f32" else ctypes.c_double
    run = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.POINTER(c_scalar))(jit.address("peak"))
    cell = c_scalar(0.0)
    iterations = 1_000_000
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        run(iterations, ctypes.byref(cell))
        best = min(best, time.perf_counter() - start)
    return iterations * CHAINS * lanes * 2 / best / 1e9


@functools.lru_cache(maxsize=None)
def cycle_counter_hz(seconds: float = 0.05) -> float:
    """Ticks per second of llvm.readcyclecounter (the TSC on x86), against the wall clock over
    `seconds`: the rate at which a profiling build's stamps become time."""
    module = ir.Module("cycles")
    fn = ir.Function(module, ir.FunctionType(I64, []), "cycles")
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    builder.ret(builder.call(ir.Function(module, ir.FunctionType(I64, []), "llvm.readcyclecounter"), []))
    jit = JitModule(module)
    read = ctypes.CFUNCTYPE(ctypes.c_int64)(jit.address("cycles"))
    wall, ticks = time.perf_counter(), read()
    while time.perf_counter() - wall < seconds:
        pass
    return (read() - ticks) / (time.perf_counter() - wall)
