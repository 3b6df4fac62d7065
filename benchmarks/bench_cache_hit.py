"""Per-call overhead of an eager op whose kernel is already compiled (a cache hit), on inputs so
small that the kernel itself costs almost nothing; torch's eager call on the same op for scale.
Usage: python benchmarks/bench_cache_hit.py"""
import time

import numpy as np

from convc import eager, ops
from convc.bench import best_seconds

x = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
w = np.random.default_rng(1).standard_normal((2, 2, 3, 3)).astype(np.float32)
v = np.zeros(16, np.float32)

if __name__ == "__main__":
    start = time.perf_counter()
    ops.conv2d(x, w, padding=1)
    print(f"first conv2d call (trace, passes, LLVM codegen, JIT): {(time.perf_counter() - start) * 1e3:.1f} ms")
    entries = eager.cache_size()
    rows = [("conv2d 1x2x5x5, 3x3", lambda: ops.conv2d(x, w, padding=1)), ("relu 16", lambda: ops.relu(v)),
            ("add 16 + 16", lambda: ops.add(v, v))]
    try:
        import torch
        tx, tw, tv = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(v)
        reference = {"conv2d 1x2x5x5, 3x3": lambda: torch.nn.functional.conv2d(tx, tw, padding=1),
                     "relu 16": lambda: torch.relu(tv), "add 16 + 16": lambda: torch.add(tv, tv)}
    except ImportError:
        reference = {}
    print(f"{'call':<22}{'convc us':>10}{'torch us':>10}")
    for name, fn in rows:
        ours = best_seconds(fn, 0.5) * 1e6
        theirs = best_seconds(reference[name], 0.5) * 1e6 if name in reference else float("nan")
        print(f"{name:<22}{ours:>10.1f}{theirs:>10.1f}")
    assert eager.cache_size() == entries + 2, "repeated calls must not compile again"
