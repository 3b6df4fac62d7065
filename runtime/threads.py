"""A native thread pool, emitted once per process as LLVM IR, that runs kernel tasks on every core.

`convc_parallel_run(task, args, n)` publishes a job (task, args, n) and bumps an atomic
generation counter; workers, which spin on that counter for a while after each job and then
sleep on a futex, run task(args, tid, n) for their tid and count themselves done; the caller
runs tid 0 itself and spins until every worker has finished. Workers are POSIX threads running
native code only, so they never touch the GIL; one Python lock serializes whole parallel
executions, since there is one job slot. A forked child has the pool's memory but none of its
threads, so the workers are started again there, from the current generation.
"""
from __future__ import annotations

import ctypes
import os
import threading

import llvmlite.binding as llvm
import llvmlite.ir as ir

from .codegen import I64, i64
from .jit import JitModule, host_target

I32 = ir.IntType(32)
BYTE_PTR = ir.IntType(8).as_pointer()
TASK_TYPE = ir.FunctionType(ir.VoidType(), [BYTE_PTR, I64, I64])
RUN_SYMBOL = "convc_parallel_run"
SPIN_ROUNDS = 200_000  # about a millisecond of pause instructions before a worker sleeps
SYS_FUTEX, FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 202, 128, 129

lock = threading.Lock()  # one parallel execution at a time (the job slot is global)


def num_threads() -> int:
    """CONVC_NUM_THREADS if set, else the number of cores this process may run on."""
    value = os.environ.get("CONVC_NUM_THREADS")
    if value:
        return max(1, int(value))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def _pool_module(workers: int) -> ir.Module:
    module = ir.Module("convc_pool")
    task_ptr = TASK_TYPE.as_pointer()

    def global_(name: str, type_: ir.Type) -> ir.GlobalVariable:
        variable = ir.GlobalVariable(module, type_, name)
        variable.initializer = ir.Constant(type_, None)
        variable.linkage = "internal"
        return variable

    generation, done = global_("generation", I32), global_("done", I64)
    start_generation = global_("start_generation", I32)  # what new workers take as already seen
    job_task, job_args, job_threads = global_("job_task", task_ptr), global_("job_args", BYTE_PTR), global_("job_threads", I64)
    syscall = ir.Function(module, ir.FunctionType(I64, [I64], var_arg=True), "syscall")
    pause = (ir.Function(module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
             if host_target().triple.startswith("x86_64") else None)

    # worker(tid): forever { wait for a new generation; run the job; count done }
    worker = ir.Function(module, ir.FunctionType(BYTE_PTR, [BYTE_PTR]), "convc_pool_worker")
    b = ir.IRBuilder(worker.append_basic_block("entry"))
    tid = b.ptrtoint(worker.args[0], I64)
    seen_slot = b.alloca(I32)
    spins = b.alloca(I64)
    b.store(b.load_atomic(start_generation, "acquire", 4), seen_slot)
    wait = worker.append_basic_block("wait")
    spin = worker.append_basic_block("spin")
    sleep = worker.append_basic_block("sleep")
    run = worker.append_basic_block("run")
    b.branch(wait)
    b.position_at_end(wait)
    b.store(i64(0), spins)
    b.branch(spin)
    b.position_at_end(spin)
    current = b.load_atomic(generation, "acquire", 4)
    changed = b.icmp_unsigned("!=", current, b.load(seen_slot))
    count = b.add(b.load(spins), i64(1))
    b.store(count, spins)
    if pause is not None:
        with b.if_then(b.not_(changed)):
            b.call(pause, [])
    b.cbranch(changed, run, sleep)
    b.position_at_end(sleep)
    keep_spinning = b.icmp_signed("<", count, i64(SPIN_ROUNDS))
    with b.if_then(b.not_(keep_spinning)):
        b.call(syscall, [i64(SYS_FUTEX), b.ptrtoint(generation, I64), i64(FUTEX_WAIT_PRIVATE),
                         b.zext(b.load(seen_slot), I64), i64(0), i64(0), i64(0)])
        b.store(i64(0), spins)
    b.branch(spin)
    b.position_at_end(run)
    b.store(current, seen_slot)
    threads = b.load(job_threads)
    with b.if_then(b.icmp_signed("<", tid, threads)):
        b.call(b.load(job_task), [b.load(job_args), tid, threads])
    b.atomic_rmw("add", done, i64(1), "release")
    b.branch(wait)

    # reset(): new workers wait for the job after the current one (used before starting them)
    reset = ir.Function(module, ir.FunctionType(ir.VoidType(), []), "convc_pool_reset")
    b = ir.IRBuilder(reset.append_basic_block("entry"))
    b.store_atomic(b.load_atomic(generation, "acquire", 4), start_generation, "release", 4)
    b.ret_void()

    # run(task, args, n): publish, wake, do tid 0, wait for all workers
    runner = ir.Function(module, ir.FunctionType(ir.VoidType(), [task_ptr, BYTE_PTR, I64]), RUN_SYMBOL)
    b = ir.IRBuilder(runner.append_basic_block("entry"))
    task, args, threads = runner.args
    b.store(task, job_task)
    b.store(args, job_args)
    b.store(threads, job_threads)
    b.store_atomic(i64(0), done, "release", 8)
    b.atomic_rmw("add", generation, ir.Constant(I32, 1), "release")
    b.call(syscall, [i64(SYS_FUTEX), b.ptrtoint(generation, I64), i64(FUTEX_WAKE_PRIVATE), i64(2**31 - 1),
                     i64(0), i64(0), i64(0)])
    b.call(task, [args, i64(0), threads])
    join = runner.append_basic_block("join")
    finished = runner.append_basic_block("finished")
    b.branch(join)
    b.position_at_end(join)
    if pause is not None:
        b.call(pause, [])
    b.cbranch(b.icmp_signed(">=", b.load_atomic(done, "acquire", 8), i64(workers)), finished, join)
    b.position_at_end(finished)
    b.ret_void()
    return module


class _Pool:
    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.jit = JitModule(_pool_module(threads - 1))
        llvm.add_symbol(RUN_SYMBOL, self.jit.address(RUN_SYMBOL))
        self.start_workers()

    def start_workers(self) -> None:
        ctypes.CFUNCTYPE(None)(self.jit.address("convc_pool_reset"))()
        libc = ctypes.CDLL(None, use_errno=True)
        worker = self.jit.address("convc_pool_worker")
        for tid in range(1, self.threads):
            handle = ctypes.c_ulong()
            if libc.pthread_create(ctypes.byref(handle), None, ctypes.c_void_p(worker), ctypes.c_void_p(tid)):
                raise OSError(ctypes.get_errno(), "pthread_create failed for a convc worker")
            libc.pthread_detach(handle)


def _after_fork_in_child() -> None:
    global lock
    lock = threading.Lock()
    if _pool is not None:
        _pool.start_workers()


_pool: _Pool | None = None
_pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def ensure_pool() -> int:
    """Start the pool (once) and return its number of threads, the caller included."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _Pool(num_threads())
        return _pool.threads
