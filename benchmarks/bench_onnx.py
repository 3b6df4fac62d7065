"""ONNX models through convc.from_onnx against ONNX Runtime and OpenVINO, all reading the same .onnx
file, 2 threads each, interleaved in one run.

The models are those of tests/hf_models.py (HiFi-GAN, the wav2vec2 feature encoder, MobileNetV2,
ResNet-18; random weights, batch 1, float32) exported with torch.onnx.export(..., dynamo=False,
opset_version=17); without torch and transformers, a small conv net written with onnx.helper;
`--model FILE.onnx ...` times given files instead. Inputs are random normal arrays of the declared
shapes. Prints per model: convc ms, compile seconds, kernels after fusion, each peer's ms, best peer
/ convc (> 1: convc is faster) and convc's largest difference from ONNX Runtime. Peers that are not
installed, or that cannot load a model, are skipped with a note.
Usage: python benchmarks/bench_onnx.py [--only NAME ...] [--model FILE.onnx ...] [--rounds N] [--min-time S]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from bench_models import onnx_bytes, openvino_runner, ort_runner  # noqa: E402
from bench_peers import THREADS, best_of, cpu_name  # noqa: E402

os.environ.setdefault("CONVC_NUM_THREADS", str(THREADS))


def small_conv_net() -> bytes:
    """A residual conv net (stem, two 3x3 blocks, pooling, classifier) written with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    weights: dict[str, np.ndarray] = {}

    def param(name: str, *shape: int) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        weights[name] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        return name

    nodes = [helper.make_node("Conv", ["image", param("stem.w", 32, 3, 3, 3), param("stem.b", 32)], ["s"],
                              strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["s"], ["s_relu"])]
    last = "s_relu"
    for block in range(2):
        p = f"block{block}"
        nodes += [helper.make_node("Conv", [last, param(f"{p}.w1", 32, 32, 3, 3), param(f"{p}.b1", 32)], [f"{p}.c1"],
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"{p}.c1"], [f"{p}.r1"]),
                  helper.make_node("Conv", [f"{p}.r1", param(f"{p}.w2", 32, 32, 3, 3), param(f"{p}.b2", 32)],
                                   [f"{p}.c2"], pads=[1, 1, 1, 1]),
                  helper.make_node("Add", [f"{p}.c2", last], [f"{p}.sum"]),
                  helper.make_node("Relu", [f"{p}.sum"], [f"{p}.out"])]
        last = f"{p}.out"
    nodes += [helper.make_node("GlobalAveragePool", [last], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"]),
              helper.make_node("Gemm", ["flat", param("fc.w", 10, 32), param("fc.b", 10)], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "small_conv_net",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 112, 112])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def exported_models(only: list[str] | None) -> dict[str, Callable[[], bytes | None]]:
    """name -> a function exporting the model (the transformers models, or the small net without them)."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        from hf_models import MODELS
    except ImportError:
        print("(torch or transformers missing: timing a small conv net written with onnx.helper)")
        return {"small_conv_net": small_conv_net}

    def export(build: Callable[[], tuple[Any, tuple]]) -> Callable[[], bytes | None]:
        def run() -> bytes | None:
            model, inputs = build()
            return onnx_bytes(model, inputs)
        return run
    return {name: export(build) for name, build in MODELS.items() if not only or name in only}


def time_model(name: str, path: str, rounds: int, min_time: float) -> None:
    import convc
    start = time.perf_counter()
    try:
        compiled = convc.compile(convc.from_onnx(path))
    except convc.ConvcError as error:
        print(f"{name:18s} convc cannot import it: {str(error).splitlines()[0]}")
        return
    compile_seconds = time.perf_counter() - start
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal(compiled.graph.type_of(i).shape).astype(compiled.graph.type_of(i).numpy_dtype)
             for i in compiled.graph.inputs]
    runners: dict[str, Callable[[], Any] | None] = {"convc": lambda: compiled(*feeds)}
    for peer, make in (("ORT", ort_runner), ("OV", openvino_runner)):
        try:
            runners[peer] = make(path, feeds)  # both read the same file
        except Exception as error:  # noqa: BLE001 - a peer that cannot load the model is reported, not fatal
            print(f"  ({peer} cannot load {name}: {type(error).__name__}: {str(error)[:120]})")
            runners[peer] = None
    best = {key: float("inf") for key in runners}
    for _ in range(rounds):
        for key, run in runners.items():
            if run is not None:
                best[key] = min(best[key], best_of(run, min_time) * 1e3)
    difference = "-"
    if runners["ORT"] is not None:
        ours = compiled(*feeds)
        ours = ours if isinstance(ours, tuple) else (ours,)
        theirs = runners["ORT"]()
        difference = f"{max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(ours, theirs)):.2g}"
    peers = [best[k] for k in ("ORT", "OV") if runners.get(k) is not None]
    cells = [f"{best[k]:8.2f}" if runners.get(k) is not None else f"{'-':>8s}" for k in ("ORT", "OV")]
    ratio = f"{min(peers) / best['convc']:10.2f}" if peers else f"{'-':>10s}"
    print(f"{name:18s} {best['convc']:9.2f} {compile_seconds:9.1f} {len(compiled.graph.op_nodes()):7d} "
          f"{cells[0]} {cells[1]} {ratio} {difference:>9s}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="models of tests/hf_models.py to time")
    parser.add_argument("--model", nargs="*", metavar="FILE.onnx", help="ONNX files to time instead")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per model (best is kept)")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per measurement")
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}; {THREADS} threads each; float32")
    print(f"{'model':18s} {'convc ms':>9s} {'compile s':>9s} {'kernels':>7s} {'ORT ms':>8s} {'OV ms':>8s} "
          f"{'best/convc':>10s} {'max |diff|':>9s}")
    if args.model:
        for path in args.model:
            time_model(os.path.basename(path), path, args.rounds, args.min_time)
        return
    with tempfile.TemporaryDirectory() as folder:
        for name, export in exported_models(args.only).items():
            exported = export()
            if exported is None:
                continue
            path = os.path.join(folder, f"{name}.onnx")
            with open(path, "wb") as file:
                file.write(exported)
            time_model(name, path, args.rounds, args.min_time)


if __name__ == "__main__":
    main()
