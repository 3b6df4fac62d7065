"""The other ops against their references in the same run: transposed convs and pad against torch
(CPU), separable_conv2d against TensorFlow (NHWC) and against torch's depthwise + pointwise pair.
Peers that are not installed are skipped. Usage: python benchmarks/bench_ops.py"""
import os

import numpy as np

from convc import ops
from convc.bench import best_seconds, machine_peak_gflops

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
rng = np.random.default_rng(0)


def row(name: str, flops: float, ours: float, peers: dict) -> None:
    peak, cores = machine_peak_gflops()
    text = f"{name:<34}{ours * 1e3:>9.3f} ms"
    if flops:
        text += f"{flops / ours / 1e9:>8.1f} GFLOP/s {100 * flops / ours / 1e9 / (peak * cores):>5.1f}% peak"
    for peer, seconds in peers.items():
        text += f"   {peer} {seconds * 1e3:.3f} ms ({seconds / ours:.2f}x)"
    print(text)


def main() -> None:
    try:
        import torch
        F = torch.nn.functional
    except ImportError:
        torch = None
    try:
        import tensorflow as tf
    except ImportError:
        tf = None

    x = rng.standard_normal((1, 64, 28, 28)).astype(np.float32)
    w = rng.standard_normal((64, 32, 4, 4)).astype(np.float32)
    out = ops.conv_transpose2d(x, w, stride=2, padding=1)
    flops = 2 * x.size * w.shape[1] * 16
    peers = {}
    if torch:
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        peers["torch"] = best_seconds(lambda: F.conv_transpose2d(tx, tw, stride=2, padding=1))
    row(f"conv_transpose2d 64->32 k4 s2 {out.shape[2]}x{out.shape[3]}", flops,
        best_seconds(lambda: ops.conv_transpose2d(x, w, stride=2, padding=1)), peers)

    images = rng.standard_normal((1, 56, 56, 64)).astype(np.float32)
    depthwise = rng.standard_normal((3, 3, 64, 1)).astype(np.float32)
    pointwise = rng.standard_normal((1, 1, 64, 128)).astype(np.float32)
    flops = 2 * 56 * 56 * (64 * 9 + 64 * 128)
    peers = {}
    if tf:
        peers["tf"] = best_seconds(lambda: tf.nn.separable_conv2d(images, depthwise, pointwise, [1, 1, 1, 1], "SAME"))
    if torch:
        nchw = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        dw_t = torch.from_numpy(depthwise.transpose(2, 3, 0, 1).copy())
        pw_t = torch.from_numpy(pointwise.transpose(3, 2, 0, 1).copy())
        peers["torch dw+pw"] = best_seconds(lambda: F.conv2d(F.conv2d(nchw, dw_t, padding=1, groups=64), pw_t))
    row("separable_conv2d 56x56 64->128 NHWC", flops,
        best_seconds(lambda: ops.separable_conv2d(images, depthwise, pointwise, [1, 1, 1, 1], "SAME")), peers)

    big = rng.standard_normal((8, 64, 64, 64)).astype(np.float32)
    peers = {"torch": best_seconds(lambda: F.pad(torch.from_numpy(big), (3, 3, 3, 3), mode="reflect"))} if torch else {}
    row("pad reflect 3 of 8x64x64x64", 0, best_seconds(lambda: ops.pad(big, (3, 3, 3, 3), mode="reflect")), peers)

    seq = rng.standard_normal((16, 256, 1000)).astype(np.float32)
    peers = {"torch": best_seconds(lambda: F.adaptive_avg_pool1d(torch.from_numpy(seq), 37))} if torch else {}
    row("adaptive_avg_pool1d 16x256x1000->37", 0, best_seconds(lambda: ops.adaptive_avg_pool1d(seq, 37)), peers)


if __name__ == "__main__":
    main()
