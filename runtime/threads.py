"""A native thread pool, emitted once per process as LLVM IR, that runs kernel tasks on every core.

`convc_parallel_run(task, args, chunks)` runs task(args, chunk, chunks) for every chunk in
[0, chunks). Chunks are claimed, not assigned: one atomic word holds `chunks << 32 | next`, and
whoever runs a chunk first takes it with a fetch-add on that word. The caller publishes the job,
bumps a generation counter that wakes the workers, claims chunks itself like any worker, and then
waits only for the chunks that others claimed and have not finished yet. A worker that the OS has
descheduled therefore delays nobody unless it was descheduled inside a chunk, and the caller
finishes alone what no one else took (OpenMP's dynamic schedule, with the caller as a worker).

Why late workers are harmless: a fetch-add that returns next < chunks owns chunk `next` of the job
whose word it incremented, and that job cannot finish (so the caller cannot publish another one)
before the chunk is counted in `finished`; the task and arguments are read only after such a claim.
A fetch-add that returns next >= chunks owns nothing and touches nothing else. `finished` is reset
before the next job's word is published, and every increment of it belongs to the current job.

Every wait is bounded in spinning: a worker without a job spins with `pause` for a few
microseconds (the next kernel of the same graph), then calls sched_yield for about a millisecond
(still quick to notice the next call, while a busy neighbour process gets the core at once), then
sleeps on a futex; the caller's join spins briefly and then sleeps on a futex that the last
finisher wakes. These mirror OpenMP's OMP_WAIT_POLICY / GOMP_SPINCOUNT and ONNX Runtime's
allow_spinning: spinning buys latency only while the core is otherwise idle. Workers are POSIX
threads running native code only, so they never touch the GIL; one Python lock serializes whole
parallel executions, since there is one job slot.

A forked child has the pool's memory, possibly mid-job, but none of its threads and none of the
Python threads that held its locks: the child gets fresh locks, an empty job slot and new workers.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading

import llvmlite.binding as llvm
import llvmlite.ir as ir

from .codegen import I64, i64
from .jit import JitModule, host_target

I32 = ir.IntType(32)
BYTE_PTR = ir.IntType(8).as_pointer()
TASK_TYPE = ir.FunctionType(ir.VoidType(), [BYTE_PTR, I64, I64])  # task(args, chunk, chunks)
RUN_SYMBOL = "convc_parallel_run"
CHUNKS_PER_THREAD = 4  # enough for the caller to absorb a missing worker's share in small pieces
# spin budgets, in rounds (a pause takes about 28 ns and a sched_yield about 0.5 us on the Zen 4
# they were measured on): pause long enough to catch the next kernel of the same graph, yield for
# about a millisecond between calls, then sleep; the caller's join pauses ~60 us before sleeping
WORKER_PAUSE_ROUNDS = 200
WORKER_YIELD_ROUNDS = 2_000
JOIN_PAUSE_ROUNDS = 2_000
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129
# the futex system call's number on each Linux architecture (asm/unistd.h); elsewhere the pool
# has no way to sleep, so it runs with the caller's thread only
FUTEX_SYSCALLS = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98, "riscv64": 98,
                  "loongarch64": 98, "ppc64le": 221, "ppc64": 221, "s390x": 238}

lock = threading.Lock()  # one parallel execution at a time (the job slot is global)


def num_threads() -> int:
    """CONVC_NUM_THREADS if set, else the number of cores this process may run on."""
    from convc.options import environment_threads
    value = environment_threads()
    if value is not None:
        return value
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def futex_syscall() -> int | None:
    """This host's futex system call number, or None where the pool cannot sleep on one."""
    if not sys.platform.startswith("linux"):
        return None
    return FUTEX_SYSCALLS.get(platform.machine().lower())


def i32(value: int) -> ir.Constant:
    return ir.Constant(I32, value)


def _blocks(function: ir.Function, *names: str) -> list[ir.Block]:
    return [function.append_basic_block(name) for name in names]


def chunk_count(extent: int, threads: int) -> int:
    """How many chunks a parallel loop of `extent` iterations is split into on `threads` threads."""
    return max(1, min(extent, threads * CHUNKS_PER_THREAD))


class _PoolEmitter:
    """The pool's globals and its functions: claim (shared), worker, run and reset."""

    def __init__(self) -> None:
        self.module = ir.Module("convc_pool")
        self.claim_word = self._global("claim_word", I64)  # chunks << 32 | next unclaimed chunk
        self.finished = self._global("finished", I32)  # chunks of the current job run to the end
        self.joining = self._global("joining", I32)  # 1 while the caller sleeps in its join
        self.generation = self._global("generation", I32)  # bumped per job; the workers' futex
        self.sleepers = self._global("sleepers", I32)  # workers asleep on `generation`
        self.stopping = self._global("stopping", I32)  # 1: workers return at the next generation
        self.job_task = self._global("job_task", TASK_TYPE.as_pointer())
        self.job_args = self._global("job_args", BYTE_PTR)
        self.syscall = ir.Function(self.module, ir.FunctionType(I64, [I64], var_arg=True), "syscall")
        self.sched_yield = ir.Function(self.module, ir.FunctionType(I32, []), "sched_yield")
        self.pause = (ir.Function(self.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
                      if host_target().triple.startswith("x86_64") else None)
        self.claim = self._claim()

    def _global(self, name: str, type_: ir.Type) -> ir.GlobalVariable:
        variable = ir.GlobalVariable(self.module, type_, name)
        variable.initializer = ir.Constant(type_, None)
        variable.linkage = "internal"
        return variable

    def _futex(self, b: ir.IRBuilder, word: ir.GlobalVariable, op: int, value: ir.Value) -> None:
        number = futex_syscall()
        if number is None:  # no workers are started on such a host, so no one waits or wakes
            return
        b.call(self.syscall, [i64(number), b.ptrtoint(word, I64), i64(op), b.zext(value, I64),
                              i64(0), i64(0), i64(0)])

    def _relax(self, b: ir.IRBuilder) -> None:
        if self.pause is not None:
            b.call(self.pause, [])

    def _pause_while(self, b: ir.IRBuilder, rounds: ir.Value, limit: int, spin: ir.Block, other: ir.Block,
                     again: ir.Block) -> ir.Value:
        """Count a round; for the first `limit` rounds pause in `spin` and go back to `again`, after
        that go to `other`. Returns the count (builder left at the end of `spin`'s branch)."""
        count = b.add(b.load(rounds), i64(1))
        b.store(count, rounds)
        b.cbranch(b.icmp_unsigned("<=", count, i64(limit)), spin, other)
        b.position_at_end(spin)
        self._relax(b)
        b.branch(again)
        return count

    def _claim(self) -> ir.Function:
        """claim(): run chunks of the current job until none is left; wake a sleeping joiner."""
        claim = ir.Function(self.module, ir.FunctionType(ir.VoidType(), []), "convc_pool_claim")
        claim.linkage = "internal"
        b = ir.IRBuilder(claim.append_basic_block("entry"))
        take, run, out = _blocks(claim, "take", "run", "out")
        b.branch(take)
        b.position_at_end(take)
        word = b.atomic_rmw("add", self.claim_word, i64(1), "acq_rel")
        chunk, chunks = b.and_(word, i64(0xFFFFFFFF)), b.lshr(word, i64(32))
        b.cbranch(b.icmp_unsigned("<", chunk, chunks), run, out)
        b.position_at_end(run)
        task = b.load_atomic(self.job_task, "monotonic", 8)
        args = b.load_atomic(self.job_args, "monotonic", 8)
        b.call(task, [args, chunk, chunks])
        before = b.atomic_rmw("add", self.finished, i32(1), "seq_cst")
        with b.if_then(b.icmp_unsigned("==", b.add(before, i32(1)), b.trunc(chunks, I32))):
            with b.if_then(b.icmp_unsigned("!=", b.load_atomic(self.joining, "seq_cst", 4), i32(0))):
                self._futex(b, self.finished, FUTEX_WAKE_PRIVATE, i32(1))
        b.branch(take)
        b.position_at_end(out)
        b.ret_void()
        return claim

    def worker(self) -> None:
        """worker(unused): forever { claim chunks; wait for the next generation: pause, yield, sleep }."""
        worker = ir.Function(self.module, ir.FunctionType(BYTE_PTR, [BYTE_PTR]), "convc_pool_worker")
        b = ir.IRBuilder(worker.append_basic_block("entry"))
        seen, rounds = b.alloca(I32, name="seen"), b.alloca(I64, name="rounds")
        b.store(b.load_atomic(self.generation, "acquire", 4), seen)
        work, wait, new_job, idle, spin, not_spin, give_way, sleep, leave = _blocks(
            worker, "work", "wait", "new_job", "idle", "spin", "not_spin", "give_way", "sleep", "leave")
        # a worker that starts after a stop bumped `generation` would wait for the next one forever
        b.cbranch(b.icmp_unsigned("!=", b.load_atomic(self.stopping, "seq_cst", 4), i32(0)), leave, work)
        b.position_at_end(work)
        b.call(self.claim, [])
        b.store(i64(0), rounds)
        b.branch(wait)
        b.position_at_end(wait)
        current = b.load_atomic(self.generation, "acquire", 4)
        b.cbranch(b.icmp_unsigned("!=", current, b.load(seen)), new_job, idle)
        b.position_at_end(new_job)
        b.store(current, seen)
        b.cbranch(b.icmp_unsigned("!=", b.load_atomic(self.stopping, "seq_cst", 4), i32(0)), leave, work)
        b.position_at_end(leave)
        b.ret(ir.Constant(BYTE_PTR, None))
        b.position_at_end(idle)
        count = self._pause_while(b, rounds, WORKER_PAUSE_ROUNDS, spin, not_spin, wait)
        b.position_at_end(not_spin)
        b.cbranch(b.icmp_unsigned("<=", count, i64(WORKER_PAUSE_ROUNDS + WORKER_YIELD_ROUNDS)), give_way, sleep)
        b.position_at_end(give_way)
        b.call(self.sched_yield, [])
        b.branch(wait)
        b.position_at_end(sleep)
        # counted among the sleepers before the futex re-checks `generation`, so a job published
        # after that check sees the sleeper and wakes it
        b.atomic_rmw("add", self.sleepers, i32(1), "seq_cst")
        self._futex(b, self.generation, FUTEX_WAIT_PRIVATE, b.load(seen))
        b.atomic_rmw("sub", self.sleepers, i32(1), "seq_cst")
        b.store(i64(0), rounds)
        b.branch(wait)

    def runner(self) -> None:
        """run(task, args, chunks): publish, wake sleepers, claim chunks too, join the claimed ones."""
        runner = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [TASK_TYPE.as_pointer(), BYTE_PTR, I64]),
                             RUN_SYMBOL)
        b = ir.IRBuilder(runner.append_basic_block("entry"))
        task, args, chunks = runner.args
        rounds = b.alloca(I64, name="rounds")
        b.store(i64(0), rounds)
        b.store_atomic(task, self.job_task, "monotonic", 8)
        b.store_atomic(args, self.job_args, "monotonic", 8)
        b.store_atomic(i32(0), self.finished, "monotonic", 4)
        b.store_atomic(b.shl(chunks, i64(32)), self.claim_word, "release", 8)
        b.atomic_rmw("add", self.generation, i32(1), "seq_cst")
        with b.if_then(b.icmp_unsigned("!=", b.load_atomic(self.sleepers, "seq_cst", 4), i32(0))):
            self._futex(b, self.generation, FUTEX_WAKE_PRIVATE, i32(2**31 - 1))
        b.call(self.claim, [])
        total = b.trunc(chunks, I32)
        join, wait, spin, sleep, done = _blocks(runner, "join", "wait", "spin", "sleep", "done")
        b.branch(join)
        b.position_at_end(join)
        b.cbranch(b.icmp_unsigned(">=", b.load_atomic(self.finished, "acquire", 4), total), done, wait)
        b.position_at_end(wait)
        self._pause_while(b, rounds, JOIN_PAUSE_ROUNDS, spin, sleep, join)
        b.position_at_end(sleep)
        # `joining` is set before `finished` is read again, so the last finisher sees it and wakes us
        b.store_atomic(i32(1), self.joining, "seq_cst", 4)
        seen = b.load_atomic(self.finished, "seq_cst", 4)
        with b.if_then(b.icmp_unsigned("<", seen, total)):
            self._futex(b, self.finished, FUTEX_WAIT_PRIVATE, seen)
        b.branch(join)
        b.position_at_end(done)
        b.store_atomic(i32(0), self.joining, "release", 4)
        b.ret_void()

    def reset(self) -> None:
        """reset(): an empty job slot and no sleepers (a forked child's state before new workers)."""
        reset = ir.Function(self.module, ir.FunctionType(ir.VoidType(), []), "convc_pool_reset")
        b = ir.IRBuilder(reset.append_basic_block("entry"))
        for variable in (self.claim_word, self.finished, self.joining, self.sleepers, self.stopping):
            b.store_atomic(ir.Constant(variable.value_type, 0), variable, "seq_cst",
                           8 if variable.value_type == I64 else 4)
        b.ret_void()

    def stop(self) -> None:
        """stop(): every worker returns (a shared library's shutdown joins them); no job may run."""
        stop = ir.Function(self.module, ir.FunctionType(ir.VoidType(), []), "convc_pool_stop")
        b = ir.IRBuilder(stop.append_basic_block("entry"))
        b.store_atomic(i32(1), self.stopping, "seq_cst", 4)
        b.atomic_rmw("add", self.generation, i32(1), "seq_cst")
        self._futex(b, self.generation, FUTEX_WAKE_PRIVATE, i32(2**31 - 1))
        b.ret_void()


def pool_module() -> ir.Module:
    """The pool's module: convc_pool_worker(unused), convc_parallel_run(task, args, chunks),
    convc_pool_reset() and convc_pool_stop()."""
    emitter = _PoolEmitter()
    emitter.worker()
    emitter.runner()
    emitter.reset()
    emitter.stop()
    return emitter.module


class _Pool:
    """The pool's machine code, linked at once (compiled models call its entry by name), and its
    workers, started on the first parallel run (a model loaded only to read its code starts none)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.jit = JitModule(pool_module())
        self.started = False
        llvm.add_symbol(RUN_SYMBOL, self.jit.address(RUN_SYMBOL))

    def start_workers(self) -> None:
        ctypes.CFUNCTYPE(None)(self.jit.address("convc_pool_reset"))()
        libc = ctypes.CDLL(None, use_errno=True)
        worker = self.jit.address("convc_pool_worker")
        for _ in range(1, self.threads):
            handle = ctypes.c_ulong()
            if libc.pthread_create(ctypes.byref(handle), None, ctypes.c_void_p(worker), None):
                raise OSError(ctypes.get_errno(), "pthread_create failed for a convc pool worker")
            libc.pthread_detach(handle)
        self.started = True


def _after_fork_in_child() -> None:
    """Fresh locks (the threads that held them are not in the child), an empty job slot, new workers."""
    global lock, _pool_lock
    lock, _pool_lock = threading.Lock(), threading.Lock()
    if _pool is not None and _pool.started:
        _pool.start_workers()


_pool: _Pool | None = None
_pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def pool_size() -> int:
    """The pool's number of threads (the caller included): the running pool's, else the number
    `ensure_pool` would start, without starting it (for lowering, cache keys and dump stages)."""
    with _pool_lock:
        if _pool is not None:
            return _pool.threads
    return num_threads() if futex_syscall() is not None else 1


def link_pool() -> int:
    """Compile the pool's code (once) and make its entry point known to the JIT linker; returns
    its number of threads, the caller included (only the caller where the host has no futex for
    idle workers to sleep on). No worker starts here."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _Pool(num_threads() if futex_syscall() is not None else 1)
        return _pool.threads


def ensure_pool() -> int:
    """`link_pool`, and the workers started (once); returns the number of threads."""
    count = link_pool()
    if not _pool.started:
        with _pool_lock:
            if not _pool.started:
                _pool.start_workers()
    return count
