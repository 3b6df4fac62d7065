"""Whole models from the `transformers` package (tests/hf_models.py: HiFi-GAN, the wav2vec2
feature encoder, MobileNetV2, ResNet-18, RegNet-Y, the DAC encoder, PoolFormer; random weights,
batch 1, float32): convc (imported with
from_torch, compiled) against torch eager, ONNX Runtime and OpenVINO (the model exported with
torch.onnx.export), 2 threads each, interleaved in one run.

Prints per model: convc ms, compile seconds, kernels after fusion, each peer's ms, torch / convc
and best peer / convc (> 1: convc is faster). Peers that are not installed, or that cannot load
the exported model, are skipped with a note. Needs torch and transformers (`pip install
".[models]"`). Usage: python benchmarks/bench_models.py [--only NAME ...] [--rounds N]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
import warnings
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from bench_peers import THREADS, best_of, cpu_name, openvino_session, ort_session  # noqa: E402
from hf_models import MODELS  # noqa: E402


def onnx_bytes(model: Any, inputs: tuple) -> bytes | None:
    import torch
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, inputs, buffer, dynamo=False, opset_version=17)
    except Exception as error:  # noqa: BLE001 - a peer we cannot feed is reported, not fatal
        print(f"  (torch.onnx.export failed: {type(error).__name__}: {str(error)[:120]})")
        return None
    return buffer.getvalue()


def _bound(run: Callable[..., Any] | None, feeds: list[np.ndarray]) -> Callable[[], Any] | None:
    return None if run is None else lambda: run(*feeds)


def ort_runner(model: bytes | str, feeds: list[np.ndarray]) -> Callable[[], Any] | None:
    """ONNX Runtime on the model, called with `feeds`."""
    return _bound(ort_session(model), feeds)


def openvino_runner(model: bytes | str, feeds: list[np.ndarray]) -> Callable[[], Any] | None:
    """OpenVINO on the model, called with `feeds`."""
    return _bound(openvino_session(model), feeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help=f"models: {', '.join(MODELS)}")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per model (best is kept)")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per measurement")
    args = parser.parse_args()
    import torch

    import convc
    torch.set_num_threads(THREADS)
    os.environ.setdefault("CONVC_NUM_THREADS", str(THREADS))
    print(f"CPU: {cpu_name()}; {THREADS} threads each; float32, batch 1")
    print(f"{'model':18s} {'convc ms':>9s} {'compile s':>9s} {'kernels':>7s} {'torch ms':>9s} {'ORT ms':>8s} "
          f"{'OV ms':>8s} {'torch/convc':>11s} {'best/convc':>10s}")
    for name, build in MODELS.items():
        if args.only and name not in args.only:
            continue
        model, inputs = build()
        feeds = [x.numpy() for x in inputs]
        start = time.perf_counter()
        compiled = convc.compile(convc.from_torch(model, *feeds))
        compile_seconds = time.perf_counter() - start
        exported = onnx_bytes(model, inputs)
        runners: dict[str, Callable[[], Any] | None] = {"convc": lambda: compiled(*feeds)}
        with torch.no_grad():
            runners["torch"] = lambda: model(*inputs)
            for peer, make in (("ORT", ort_runner), ("OV", openvino_runner)):
                try:
                    runners[peer] = make(exported, feeds) if exported is not None else None
                except Exception as error:  # noqa: BLE001
                    print(f"  ({peer} cannot load {name}: {type(error).__name__}: {str(error)[:120]})")
                    runners[peer] = None
            best = {key: float("inf") for key in runners}
            for _ in range(args.rounds):
                for key, run in runners.items():
                    if run is not None:
                        best[key] = min(best[key], best_of(run, args.min_time) * 1e3)
        peers = [best[k] for k in ("torch", "ORT", "OV") if runners.get(k) is not None]
        cells = [f"{best[k]:8.2f}" if runners.get(k) is not None else f"{'-':>8s}" for k in ("ORT", "OV")]
        print(f"{name:18s} {best['convc']:9.2f} {compile_seconds:9.1f} {len(compiled.graph.op_nodes()):7d} "
              f"{best['torch']:9.2f} {cells[0]} {cells[1]} {best['torch'] / best['convc']:11.2f} "
              f"{min(peers) / best['convc']:10.2f}", flush=True)


if __name__ == "__main__":
    main()
