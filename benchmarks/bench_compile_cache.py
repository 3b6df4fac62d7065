"""The on-disk compile cache on a 50-conv graph (1x16x32x32, 3x3 convs with padding 1, each followed
by relu): compile without the cache, the first compile into an empty cache directory (cold: it
compiles and writes the entry), the second compile in the same process (warm) and in a new process
(warm, as the next run of a program sees it). Seconds per compile, tracing and passes included.
Usage: python benchmarks/bench_compile_cache.py [--convs N]"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.pop("CONVC_CACHE_DIR", None)

import convc  # noqa: E402
from convc import ops  # noqa: E402

SHAPE = (1, 16, 32, 32)


def chain(convs: int):
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((16, 16, 3, 3)).astype(np.float32) / 12 for _ in range(convs)]

    def fn(x):
        for weight in weights:
            x = ops.relu(ops.conv2d(x, weight, padding=1))
        return x
    return fn


def timed_compile(convs: int, cache_dir) -> tuple[float, convc.Compiled]:
    example = np.ones(SHAPE, np.float32)
    start = time.perf_counter()
    compiled = convc.compile(chain(convs), example, cache_dir=cache_dir)
    return time.perf_counter() - start, compiled


def main(convs: int) -> None:
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    timed_compile(1, False)  # imports and the thread pool, outside every measurement
    uncached, reference = timed_compile(convs, False)
    with tempfile.TemporaryDirectory() as directory:
        cold, first = timed_compile(convs, directory)
        warm, second = timed_compile(convs, directory)
        child = subprocess.run([sys.executable, __file__, "--convs", str(convs), "--child", directory],
                               check=True, capture_output=True, text=True)
        new_process = float(child.stdout.split()[-1])
        entry_bytes = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
    assert np.array_equal(first(x), reference(x)) and np.array_equal(second(x), reference(x))
    print(f"{convs}-conv graph {SHAPE}, cache entry {entry_bytes / 2**20:.2f} MB")
    print(f"{'compile':<42}{'seconds':>9}")
    for name, seconds in [("without the cache", uncached), ("first, cold cache (compiles, writes)", cold),
                          ("second, warm cache, same process", warm),
                          ("second, warm cache, new process", new_process)]:
        print(f"{name:<42}{seconds:>9.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--convs", type=int, default=50, help="convolutions in the chain")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # time one warm compile from this directory
    args = parser.parse_args()
    if args.child:
        timed_compile(1, False)
        print(timed_compile(args.convs, args.child)[0])
    else:
        main(args.convs)
