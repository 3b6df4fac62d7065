"""Compile time of the acceptance models: cold (a new process, empty disk cache) and warm (a new
process whose disk cache holds the model; the median of three), with the stages of each.

    python benchmarks/bench_compile.py [--only hifigan resnet18 ...] [--stages] [--onnx] [--dynamic]

With --dynamic, the time axis of the audio models is symbolic (one compile for every length;
such graphs skip the disk cache, so there is no warm compile to time).

Each figure is `convc.compile` on the graph `convc.from_torch` returned (the export by torch is
timed apart), in a process of its own, as a user's first compile is; with --onnx, on the graph
`convc.from_onnx` read from the model's torch.onnx.export file (made once, beforehand). Needs torch
and transformers (and onnx for --onnx).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

WARM_RUNS = 3  # warm compiles per model, each in a new process
DYNAMIC = {"hifigan": {0: {1: "T"}}, "wav2vec2_features": {0: {1: "T"}}}  # --dynamic: symbolic axes
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(model_name: str, cache_dir: str, onnx_path: str | None, dynamic: bool = False) -> None:
    """Build, import and compile one model; print its timings as JSON."""
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
    import convc
    import hf_models
    model, inputs = hf_models.MODELS[model_name]()
    start = time.perf_counter()
    if dynamic:
        graph = convc.from_torch(model, *inputs, dynamic=DYNAMIC[model_name])
    else:
        graph = convc.from_onnx(onnx_path) if onnx_path else convc.from_torch(model, *inputs)
    imported = time.perf_counter()
    compiled = convc.compile(graph, cache_dir=cache_dir)
    done = time.perf_counter()
    compiled(*[i.numpy() for i in inputs])
    times = compiled.compile_times
    print(json.dumps({"import": imported - start, "compile": done - imported, "stages": times.stages,
                      "hit": times.cache_hit, "table": times.table(top=8)}))


def export_onnx(model_name: str, path: str) -> str:
    """The model as an ONNX file at `path` (torch.onnx.export, opset 17), made in this process."""
    sys.path[:0] = [os.path.join(ROOT, "tests")]
    import warnings

    import hf_models
    import torch
    model, inputs = hf_models.MODELS[model_name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, path, dynamo=False, opset_version=17)
    return path


def run_child(model_name: str, cache_dir: str, onnx_path: str | None, dynamic: bool = False) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", model_name, cache_dir, onnx_path or ""]
                          + (["--dynamic"] if dynamic else []),
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{model_name}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=["hifigan", "wav2vec2_features", "mobilenet_v2", "resnet18"])
    parser.add_argument("--stages", action="store_true", help="print each cold compile's stage table")
    parser.add_argument("--onnx", action="store_true", help="import each model with from_onnx, not from_torch")
    parser.add_argument("--dynamic", action="store_true", help="compile the audio models with a symbolic time axis")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, cache, onnx_path = args.child
        child(name, cache, onnx_path or None, args.dynamic)
        return
    if args.dynamic:
        unknown = [name for name in args.only if name not in DYNAMIC]
        if unknown or args.onnx:
            parser.error(f"--dynamic takes {', '.join(DYNAMIC)} through from_torch")
    sys.path.insert(0, ROOT)
    from convc.runtime.compile_pool import worker_count
    from convc.runtime.jit import host_target
    host = host_target()
    print(f"{platform.processor() or platform.machine()}, LLVM cpu {host.cpu}, {host.vector_bits}-bit vectors, "
          f"{os.cpu_count()} cores, {worker_count()} compile worker(s)")
    if sys.dont_write_bytecode:
        print("PYTHONDONTWRITEBYTECODE is set: modules without a __pycache__ are compiled from source in "
              "every process (an installed package has its bytecode); unset it to time what users see")
    rows = []
    for name in args.only:
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as files:
            onnx_path = export_onnx(name, os.path.join(files, f"{name}.onnx")) if args.onnx else None
            cold = run_child(name, cache, onnx_path, args.dynamic)
            warms = sorted((run_child(name, cache, onnx_path, args.dynamic) for _ in range(WARM_RUNS)),
                           key=lambda run: run["compile"])
        assert args.dynamic or all(w["hit"] for w in warms), f"{name}: a compile after the first missed the disk cache"
        warm = warms[len(warms) // 2]
        warm["min"] = warms[0]["compile"]
        rows.append((name, cold, warm))
        if args.stages:
            print(f"\n{name}, cold:\n{cold['table']}\n{name}, warm:\n{warm['table']}")
    frontend = "from_onnx" if args.onnx else "from_torch"
    print(f"\n| model | {frontend} s | cold compile s | warm compile s, median of {WARM_RUNS} (min) |\n"
          f"|---|---:|---:|---:|")
    for name, cold, warm in rows:
        print(f"| {name} | {cold['import']:.2f} | {cold['compile']:.2f} | {warm['compile']:.3f} "
              f"({warm['min']:.3f}) |")


if __name__ == "__main__":
    main()
