"""Parallel compilation of a graph's kernel modules in worker processes.

llvmlite runs LLVM behind one lock, so threads do not compile in parallel; processes do. A
graph's kernel modules are grouped, in the order lowering completes them, into parts of about
PART_CHARS characters of IR; idle workers take each part as soon as it is whole, so LLVM runs while
Python still lowers, and once the last module is in, the calling thread and the workers share the
parts left, largest first, so both cores stay busy to the end. Which modules form a part depends
on their order and sizes only, never on timing, so a graph's code is the same however it was
compiled (in workers or in-process).

A worker is a plain Python process running convc/runtime/llvm_compile.py by path (it imports
llvmlite, not convc: no fork of a process whose LLVM locks may be held, no re-import of the
user's main module, as multiprocessing's spawn would do). Workers start lazily (`warm` starts
them ahead, while the caller traces and optimizes), are reused across compiles, exit when their
stdin closes (at the caller's exit, or its death) and are killed if they do not. A worker that
dies or hangs past PART_TIMEOUT is dropped and its part compiled in-process; a part the worker
reports an error for is compiled in-process too, which raises the real error as it would be
without workers (the worker stays).

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

from convc.compile_times import PartTime

from . import llvm_compile

PART_CHARS = 150_000  # IR text of one part (a kernel or two): small enough to balance, large enough to amortize
PART_TIMEOUT = 600.0  # seconds after which a worker's part is taken back and compiled here
Target = tuple[str, str, str, bool]  # LLVM cpu, features, triple; position-independent code
_LAUNCH = "import runpy, sys; sys.argv[:] = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def worker_count() -> int:
    """Worker processes a compile may use (CONVC_COMPILE_WORKERS, else cores - 1)."""
    from convc.options import environment_compile_workers
    count = environment_compile_workers()
    if count is not None:
        return count
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, cores - 1)


class _Worker:
    """One worker process for one target."""

    def __init__(self, target: Target) -> None:
        self.target = target
        cpu, features, triple, pic = target
        self.process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, llvm_compile.__file__,
             json.dumps({"cpu": cpu, "features": features, "triple": triple, "pic": pic})],
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


def warm(cpu: str, features: str, triple: str, pic: bool = False) -> None:
    """Start the workers a compile will want, so that their start-up overlaps the caller's work."""
    target = (cpu, features, triple, pic)
    with _lock:
        keep = [w for w in _idle if w.alive() and w.target == target]
        stale = [w for w in _idle if w not in keep]
        _idle[:] = keep + [_Worker(target) for _ in range(worker_count() - len(keep))]
    for worker in stale:
        worker.close()


def _take_idle(target: Target) -> list[_Worker]:
    """The started workers for `target` that no compile is using (only `warm` starts workers: an
    eager op's compile never waits for one)."""
    with _lock:
        taken = [w for w in _idle if w.alive() and w.target == target][:worker_count()]
        for worker in taken:
            _idle.remove(worker)
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


class Session:
    """One compile: modules are submitted as lowering completes them and grouped into parts; idle
    workers compile each part as soon as it is whole, and once the last module is in, the caller
    and the workers share the parts left, largest first. Results come in the parts' order."""

    def __init__(self, cpu: str, features: str, triple: str, pic: bool = False) -> None:
        self.target = (cpu, features, triple, pic)
        self.open: list[tuple[str, str]] = []  # (module name, IR text) of the part being filled
        self.queued: list[tuple[int, list[tuple[str, str]]]] = []  # whole parts no one compiles yet
        self.parts = 0
        self.results: dict[int, tuple[bytes, bytes]] = {}
        self.times: list[PartTime] = []
        self.errors: list[BaseException] = []
        self.closed = False
        self.condition = threading.Condition()
        self.workers = _take_idle(self.target)
        self.feeders = []
        for worker in self.workers:
            busy_since = [0.0]
            thread = threading.Thread(target=self._feed, args=(worker, busy_since), daemon=True)
            thread.start()
            self.feeders.append((thread, worker, busy_since))

    def submit(self, name: str, text: str) -> None:
        """Module `name`'s IR text, into the open part (which is queued once it is full)."""
        with self.condition:
            if self.open and sum(len(t) for _, t in self.open) + len(text) > PART_CHARS:
                self._queue_open()
            self.open.append((name, text))

    def _queue_open(self) -> None:
        self.queued.append((self.parts, self.open))
        self.parts, self.open = self.parts + 1, []
        self.condition.notify()

    def finish(self) -> list[tuple[bytes, bytes]]:
        """Every module compiled: (object file, compressed optimized IR) per part, in part order."""
        with self.condition:
            if self.open:
                self._queue_open()
            self.closed = True
            self.queued.sort(key=lambda part: -sum(len(t) for _, t in part[1]))
            self.condition.notify_all()
        while (part := self._claim(wait=False)) is not None:
            self._here(*part)
        for thread, worker, busy_since in self.feeders:
            while thread.is_alive():
                thread.join(0.05)
                if busy_since[0] and time.monotonic() - busy_since[0] > PART_TIMEOUT:
                    worker.process.kill()  # its feeder sees the pipe close and compiles the part here
        _give_back(self.workers)
        if self.errors:
            raise self.errors[0]
        return [self.results[index] for index in range(self.parts)]

    def _claim(self, wait: bool) -> tuple[int, list[tuple[str, str]]] | None:
        """The next whole part, waiting for one while modules still come if `wait`."""
        with self.condition:
            while wait and not self.queued and not self.closed and not self.errors:
                self.condition.wait()
            if not self.queued or self.errors:
                return None
            return self.queued.pop(0)

    def _here(self, index: int, part: list[tuple[str, str]]) -> None:
        """Part `index` compiled in this process."""
        start = time.perf_counter()
        try:
            result = llvm_compile.compile_texts([text for _, text in part], *self.target)
        except BaseException as error:  # raised by `finish` once every thread is done
            with self.condition:
                self.errors.append(error)
            return
        self._done(index, part, result, time.perf_counter() - start, "here")

    def _done(self, index: int, part: list[tuple[str, str]], result: tuple[bytes, bytes], seconds: float,
              where: str) -> None:
        with self.condition:
            self.results[index] = result
            self.times.append(PartTime([name for name, _ in part], seconds, where))

    def _feed(self, worker: _Worker, busy_since: list[float]) -> None:
        """Send parts to `worker` until none is left. A part it reports an error for is compiled
        here (to raise the error); if it dies, its part is compiled here and it is dropped."""
        while (claimed := self._claim(wait=True)) is not None:
            index, part = claimed
            busy_since[0] = start = time.monotonic()
            try:
                result = worker.compile([text for _, text in part])
            except RuntimeError:
                self._here(index, part)
                continue
            except (OSError, EOFError, ValueError):
                worker.close()
                self._here(index, part)
                return
            finally:
                busy_since[0] = 0.0
            self._done(index, part, result, time.monotonic() - start, "worker")
