"""Resident memory of compiled kernels, from /proc/self/statm (Linux).

1. The eager cache with 60 distinct conv2d kernels: filled, emptied with convc.clear_caches(),
   filled again. The first fill includes the compiler's one-time working memory (Python object
   arenas and LLVM heap that stay with the process); the second shows what each cached kernel holds.
2. 1,000 compile-and-drop cycles of a one-conv graph (after 20 warm-up cycles), then clear_caches.

Goal (issue 6): under 200 KB per cached kernel, RSS flat within 10 MB over the cycles, and
clear_caches returning the kernels' memory.
Usage: python benchmarks/bench_memory.py [--cycles N]"""
import argparse
import gc
import os
import platform

import numpy as np

os.environ.pop("CONVC_CACHE_DIR", None)  # measure in-memory kernels only

import convc  # noqa: E402
from convc import ops  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
KERNELS = 60


def cpu_name() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    return names[0] if names else platform.machine()


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20


def settled_rss_mb() -> float:
    gc.collect()
    return rss_mb()


def eager_kernels(weight: np.ndarray) -> None:
    """One new cached kernel per call: the input width grows by one each time."""
    for width in range(KERNELS):
        ops.conv2d(np.ones((1, 8, 12, 8 + width), np.float32), weight, padding=1)


def main(cycles: int) -> None:
    weight = np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float32)
    from convc.runtime.jit import host_target
    print(f"host: {cpu_name()} ({host_target().cpu}), convc {convc.__version__}")
    ops.conv2d(np.ones((1, 8, 5, 5), np.float32), weight, padding=1)  # imports, the pool, first-use caches
    convc.clear_caches()

    start = settled_rss_mb()
    eager_kernels(weight)
    first = settled_rss_mb()
    convc.clear_caches()
    cleared = settled_rss_mb()
    eager_kernels(weight)
    second = settled_rss_mb()
    convc.clear_caches()
    print(f"eager cache, {KERNELS} conv2d kernels (RSS {start:.1f} MB before):")
    print(f"  first fill    -> {first:6.1f} MB  {(first - start) * 1024 / KERNELS:6.0f} KB per kernel "
          f"(with the compiler's one-time working memory)")
    print(f"  clear_caches  -> {cleared:6.1f} MB  {(first - cleared) * 1024 / KERNELS:6.0f} KB per kernel returned")
    print(f"  second fill   -> {second:6.1f} MB  {(second - cleared) * 1024 / KERNELS:6.0f} KB per kernel held "
          f"(goal < 200 KB)")

    graph = convc.trace(lambda x: ops.conv2d(x, weight, padding=1), np.ones((1, 8, 16, 16), np.float32))
    for _ in range(20):  # the allocator's pools reach their working size
        convc.compile(graph, cache_dir=False)
    start = settled_rss_mb()
    for cycle in range(1, cycles + 1):
        convc.compile(graph, cache_dir=False)
        if cycle % max(1, cycles // 4) == 0:
            print(f"  after {cycle:5d} compile-and-drop cycles: RSS {rss_mb():.1f} MB")
    end = settled_rss_mb()
    convc.clear_caches()
    cleared = settled_rss_mb()
    print(f"compile-and-drop, {cycles} cycles: RSS {start:.1f} -> {end:.1f} MB, {end - start:+.1f} MB "
          f"({(end - start) * 1024 / cycles:.1f} KB per compile; goal within 10 MB); "
          f"after clear_caches {cleared:.1f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=1000, help="compile-and-drop cycles")
    main(parser.parse_args().cycles)
