"""Benchmark helpers shared by `convc bench` and benchmarks/: timing, FLOP counts, the peak, torch."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


def best_seconds(fn: Callable[[], Any], min_time: float = 0.2, repeats: int = 5) -> float:
    """Best per-call time of `fn` over `repeats` rounds of at least `min_time` seconds each."""
    fn()
    calls, elapsed = 1, 0.0
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time / repeats or calls >= 1 << 20:
            break
        calls *= 2
    best = elapsed / calls
    for _ in range(repeats - 1):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def conv_flops(out_shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> int:
    """2 * MACs of a convolution: every output element sums C_in/groups * prod(K) products."""
    return 2 * int(np.prod(out_shape)) * int(np.prod(weight_shape[1:]))


@dataclass(frozen=True)
class ConvShape:
    name: str
    x: tuple[int, ...]
    w: tuple[int, ...]
    stride: int = 1
    padding: int = 0
    groups: int = 1


SHAPES = [
    ConvShape("resnet_3x3", (1, 64, 56, 56), (64, 64, 3, 3), padding=1),
    ConvShape("resnet_1x1", (1, 256, 56, 56), (64, 256, 1, 1)),
    ConvShape("stem_7x7_s2", (1, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3),
    ConvShape("depthwise_3x3", (1, 128, 56, 56), (128, 1, 3, 3), padding=1, groups=128),
    ConvShape("conv1d_k5", (8, 64, 1024), (64, 64, 5), padding=2),
    ConvShape("conv3d_3x3x3", (1, 16, 16, 32, 32), (32, 16, 3, 3, 3), padding=1),
]


def machine_peak_gflops(dtype: str = "f32") -> tuple[float, int]:
    """(measured single-core FMA peak, number of cores)."""
    from .runtime.peak import fma_peak_gflops
    return fma_peak_gflops(dtype), os.cpu_count() or 1


def torch_conv(shape: ConvShape, x: np.ndarray, w: np.ndarray) -> Callable[[], Any] | None:
    """A callable running torch's conv on the same data, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    fn = getattr(torch.nn.functional, f"conv{len(shape.w) - 2}d")
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)

    def run() -> Any:
        with torch.no_grad():
            return fn(tx, tw, None, shape.stride, shape.padding, 1, shape.groups)
    return run


def run_conv_benchmarks(shapes: list[ConvShape] = SHAPES, min_time: float = 0.3,
                        write: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Time convc's eager conv against torch (when installed) on each shape; print one line each."""
    from . import ops
    peak, cores = machine_peak_gflops()
    write(f"FMA peak (measured): {peak:.1f} GFLOP/s per core, {cores} cores -> {peak * cores:.1f} GFLOP/s f32")
    write(f"{'shape':<16}{'convc ms':>10}{'GFLOP/s':>10}{'% peak':>8}{'torch ms':>10}{'torch/convc':>12}")
    rows = []
    rng = np.random.default_rng(0)
    for shape in shapes:
        x = rng.standard_normal(shape.x).astype(np.float32)
        w = rng.standard_normal(shape.w).astype(np.float32)
        conv = getattr(ops, f"conv{len(shape.w) - 2}d")
        out = conv(x, w, None, shape.stride, shape.padding, 1, shape.groups)
        ours = best_seconds(lambda: conv(x, w, None, shape.stride, shape.padding, 1, shape.groups), min_time)
        gflops = conv_flops(out.shape, shape.w) / ours / 1e9
        reference = torch_conv(shape, x, w)
        theirs = best_seconds(reference, min_time) if reference else None
        row = {"shape": shape.name, "convc_s": ours, "gflops": gflops, "peak_pct": 100 * gflops / (peak * cores),
               "torch_s": theirs}
        rows.append(row)
        torch_text = f"{theirs * 1e3:>10.3f}{theirs / ours:>12.2f}" if theirs else f"{'-':>10}{'-':>12}"
        write(f"{shape.name:<16}{ours * 1e3:>10.3f}{gflops:>10.1f}{row['peak_pct']:>8.1f}{torch_text}")
    return rows
