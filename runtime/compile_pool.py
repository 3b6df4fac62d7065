"""Parallel compilation of a graph's kernel modules in worker processes.

llvmlite runs LLVM behind one lock, so threads do not compile in parallel; processes do. The
modules of one compile are grouped into parts of similar size; the calling thread and the idle
workers claim parts, largest first, until none is left, so both cores stay busy to the end.

A worker is a plain Python process running convc/runtime/llvm_compile.py by path (it imports
llvmlite, not convc: no fork of a process whose LLVM locks may be held, no re-import of the
user's main module, as multiprocessing's spawn would do). Workers start lazily (`warm` starts
them ahead, while the caller traces and optimizes), are reused across compiles, exit when their
stdin closes (at the caller's exit, or its death) and are killed if they do not. A worker that
dies, hangs past PART_TIMEOUT or answers with an error is dropped and its part compiled
in-process, where a real error is raised as it would be without workers.

CONVC_COMPILE_WORKERS sets the number of workers (0: compile in-process only); by default one
fewer than the cores this process may run on.
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from convc.errors import ConvcError

from . import llvm_compile

MIN_PARALLEL_CHARS = 400_000  # IR text below which a worker's round trip costs more than it saves
PARTS_PER_PROCESS = 3         # parts per compiling process: enough to balance, few enough to link
PART_TIMEOUT = 600.0          # seconds after which a worker's part is taken back and compiled here
_LAUNCH = "import runpy, sys; sys.argv[:] = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def worker_count() -> int:
    """Worker processes a compile may use (CONVC_COMPILE_WORKERS, else cores - 1)."""
    text = os.environ.get("CONVC_COMPILE_WORKERS")
    if text is not None and text.strip() != "":
        try:
            count = int(text)
        except ValueError:
            count = -1
        if count < 0:
            raise ConvcError(f"CONVC_COMPILE_WORKERS={text!r} must be a whole number >= 0")
        return count
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, cores - 1)


class _Worker:
    """One worker process for one target."""

    def __init__(self, target: tuple[str, str, str]) -> None:
        self.target = target
        cpu, features, triple = target
        self.process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, llvm_compile.__file__,
             json.dumps({"cpu": cpu, "features": features, "triple": triple})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def compile(self, texts: list[str]) -> tuple[bytes, bytes]:
        llvm_compile.write_request(self.process.stdin, texts)
        return llvm_compile.read_answer(self.process.stdout)

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self, wait: float = 0.0) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(wait)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


_lock = threading.Lock()
_idle: list[_Worker] = []  # started workers no compile is using


def warm(cpu: str, features: str, triple: str) -> None:
    """Start the workers a compile will want, so that their start-up overlaps the caller's work."""
    target = (cpu, features, triple)
    with _lock:
        keep = [w for w in _idle if w.alive() and w.target == target]
        stale = [w for w in _idle if w not in keep]
        _idle[:] = keep + [_Worker(target) for _ in range(worker_count() - len(keep))]
    for worker in stale:
        worker.close()


def _take(count: int, target: tuple[str, str, str]) -> list[_Worker]:
    with _lock:
        taken = [w for w in _idle if w.alive() and w.target == target][:count]
        for worker in taken:
            _idle.remove(worker)
    while len(taken) < count:
        taken.append(_Worker(target))
    return taken


def _give_back(workers: list[_Worker]) -> None:
    with _lock:
        _idle.extend(w for w in workers if w.alive())


def _shutdown() -> None:
    with _lock:
        workers, _idle[:] = list(_idle), []
    for worker in workers:
        worker.close(wait=1.0)


atexit.register(_shutdown)
if hasattr(os, "register_at_fork"):  # a forked child does not own its parent's workers
    os.register_at_fork(after_in_child=lambda: _idle.clear())


def split(sizes: list[int], parts: int) -> list[list[int]]:
    """Indexes of `sizes` grouped into at most `parts` groups of similar total (largest first,
    each into the lightest group), the groups ordered by total, largest first."""
    groups: list[list[int]] = [[] for _ in range(min(parts, len(sizes)))]
    totals = [0] * len(groups)
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        lightest = totals.index(min(totals))
        groups[lightest].append(index)
        totals[lightest] += sizes[index]
    return [sorted(g) for _, g in sorted(zip(totals, groups), key=lambda pair: -pair[0]) if g]


@dataclass
class _Compile:
    """The parts of one compile and who has claimed what."""

    parts: list[list[str]]
    target: tuple[str, str, str]
    results: list[tuple[bytes, bytes] | None] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    next_part: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> int | None:
        with self.lock:
            if self.next_part == len(self.parts) or self.errors:
                return None
            self.next_part += 1
            return self.next_part - 1

    def here(self, index: int) -> None:
        """Part `index` compiled in this process."""
        try:
            self.results[index] = llvm_compile.compile_texts(self.parts[index], *self.target)
        except BaseException as error:  # raised by the caller once every thread is done
            self.errors.append(error)


def _feed(job: _Compile, worker: _Worker, busy_since: list[float]) -> None:
    """Send parts to `worker` until none is left; a part it fails is compiled here instead."""
    while (index := job.claim()) is not None:
        busy_since[0] = time.monotonic()
        try:
            job.results[index] = worker.compile(job.parts[index])
        except (OSError, EOFError, RuntimeError, ValueError):
            worker.close()
            job.here(index)
            return
        finally:
            busy_since[0] = 0.0


def compile_parts(texts: list[str], cpu: str, features: str, triple: str) -> list[tuple[bytes, bytes]]:
    """The modules of `texts` compiled into one or more (object file, compressed optimized IR)."""
    target = (cpu, features, triple)
    workers = worker_count() if len(texts) > 1 and sum(map(len, texts)) >= MIN_PARALLEL_CHARS else 0
    if workers == 0:
        return [llvm_compile.compile_texts(texts, *target)]
    groups = split([len(t) for t in texts], PARTS_PER_PROCESS * (workers + 1))
    job = _Compile([[texts[i] for i in group] for group in groups], target)
    job.results = [None] * len(job.parts)
    taken = _take(min(workers, len(job.parts) - 1), target)
    feeders = []
    for worker in taken:
        busy_since = [0.0]
        thread = threading.Thread(target=_feed, args=(job, worker, busy_since), daemon=True)
        thread.start()
        feeders.append((thread, worker, busy_since))
    while (index := job.claim()) is not None:
        job.here(index)
    for thread, worker, busy_since in feeders:
        while thread.is_alive():
            thread.join(0.05)
            if busy_since[0] and time.monotonic() - busy_since[0] > PART_TIMEOUT:
                worker.process.kill()  # its feeder sees the pipe close and compiles the part here
    _give_back(taken)
    if job.errors:
        raise job.errors[0]
    return [result for result in job.results if result is not None]
