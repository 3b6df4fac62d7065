"""The conv workloads of CNNs and audio nets: convc (compiled graph, constant weights) against
PyTorch, ONNX Runtime and OpenVINO (each with 2 threads), interleaved in one run.

Prints per workload: ms, GFLOP/s and % of the measured FMA peak of both cores for convc, each
peer's ms, and best peer time / convc time (> 1: convc is faster). Peers that are not installed
are skipped with a note. Usage: python benchmarks/bench_peers.py [--only NAME ...] [--rounds N]
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

THREADS = 2


@dataclass(frozen=True)
class Layer:
    """One conv (or transposed conv) of a workload, torch's argument conventions."""

    kind: str  # "conv" or "conv_transpose"
    w: tuple[int, ...]
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    bias: bool = False
    relu: bool = False
    residual: bool = False  # add the workload's input before the activation


@dataclass(frozen=True)
class Workload:
    name: str
    x: tuple[int, ...]
    layers: tuple[Layer, ...]
    notes: str = field(default="")


def conv(w, **kw) -> Layer:
    return Layer("conv", w, **kw)


WORKLOADS = [
    Workload("resnet_3x3", (1, 64, 56, 56), (conv((64, 64, 3, 3), padding=1),)),
    Workload("resnet_3x3_b8", (8, 64, 56, 56), (conv((64, 64, 3, 3), padding=1),)),
    Workload("resnet_stem", (1, 3, 224, 224), (conv((64, 3, 7, 7), stride=2, padding=3),)),
    Workload("pointwise", (1, 256, 56, 56), (conv((64, 256, 1, 1)),)),
    Workload("depthwise", (1, 144, 56, 56), (conv((144, 1, 3, 3), padding=1, groups=144),)),
    Workload("grouped", (1, 128, 56, 56), (conv((128, 4, 3, 3), padding=1, groups=32),)),
    Workload("dw_separable", (1, 32, 112, 112), (conv((32, 1, 3, 3), padding=1, groups=32), conv((64, 32, 1, 1)))),
    Workload("wav2vec_l0", (1, 1, 16000), (conv((512, 1, 10), stride=5),)),
    Workload("wav2vec_l1", (1, 512, 3199), (conv((512, 512, 3), stride=2),)),
    Workload("tcn_dilated", (1, 64, 16384), (conv((64, 64, 3), dilation=4, padding=4, bias=True),)),
    Workload("dcgan_up", (1, 128, 16, 16), (Layer("conv_transpose", (128, 64, 4, 4), stride=2, padding=1),)),
    Workload("hifigan_up", (1, 512, 100), (Layer("conv_transpose", (512, 256, 16), stride=8, padding=4, bias=True),)),
    Workload("video3d", (1, 16, 16, 56, 56), (conv((32, 16, 3, 3, 3), padding=1),)),
    Workload("resnet_l3", (1, 256, 14, 14), (conv((256, 256, 3, 3), padding=1),)),
    Workload("resnet_l4", (1, 512, 7, 7), (conv((512, 512, 3, 3), padding=1),)),
    Workload("mbv2_pw_7x7", (1, 960, 7, 7), (conv((160, 960, 1, 1)),)),
    Workload("hifigan_res", (1, 128, 2048), (conv((128, 128, 3), dilation=3, padding=3, bias=True),)),
    Workload("chain", (1, 64, 56, 56), (conv((64, 64, 3, 3), padding=1, bias=True, relu=True),
                                        conv((64, 64, 3, 3), padding=1, bias=True, relu=True, residual=True)),
             "conv+bias+relu -> conv+bias+residual+relu"),
]


def weights(workload: Workload, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray | None]]:
    rng = np.random.default_rng(seed)
    out = []
    for layer in workload.layers:
        w = (rng.standard_normal(layer.w) / np.sqrt(np.prod(layer.w[1:]))).astype(np.float32)
        channels = layer.w[0] if layer.kind == "conv" else layer.w[1] * layer.groups
        out.append((w, rng.standard_normal(channels).astype(np.float32) if layer.bias else None))
    return out


def layer_flops(layer: Layer, x_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    if layer.kind == "conv":
        return 2 * int(np.prod(out_shape)) * int(np.prod(layer.w[1:]))
    return 2 * int(np.prod(x_shape)) * int(np.prod(layer.w[1:]))  # each input meets C_out/g * K weights


# the engines -------------------------------------------------------------------------------------
def apply_layers(functional: Any, workload: Workload, params: list, x: Any) -> Any:
    """The workload's layers through `functional` (convc.ops or torch.nn.functional: the same
    names and argument orders); a residual adds the workload's input before the activation."""
    y = x
    for layer, (w, b) in zip(workload.layers, params):
        rank = len(layer.w) - 2
        if layer.kind == "conv":
            y2 = getattr(functional, f"conv{rank}d")(y, w, b, layer.stride, layer.padding, layer.dilation, layer.groups)
        else:
            y2 = getattr(functional, f"conv_transpose{rank}d")(y, w, b, layer.stride, layer.padding, 0, layer.groups,
                                                               layer.dilation)
        if layer.residual:
            y2 = y2 + x
        y = functional.relu(y2) if layer.relu else y2
    return y


def convc_runner(workload: Workload, params: list) -> tuple[Callable[[np.ndarray], Any], float, int]:
    """(run, compile seconds, kernels after fusion)."""
    import convc
    from convc import ops

    example = np.zeros(workload.x, np.float32)
    start = time.perf_counter()
    compiled = convc.compile(lambda x: apply_layers(ops, workload, params, x), example)
    seconds = time.perf_counter() - start
    return compiled, seconds, len(compiled.graph.op_nodes())


def torch_runner(workload: Workload, params: list) -> Callable[[np.ndarray], Any] | None:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(THREADS)
    tparams = [(torch.from_numpy(w), None if b is None else torch.from_numpy(b)) for w, b in params]

    def run(x: np.ndarray) -> Any:
        with torch.no_grad():
            return apply_layers(F, workload, tparams, torch.from_numpy(x)).numpy()
    return run


def onnx_model(workload: Workload, params: list, out_shape: tuple[int, ...]) -> Any:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits, current = [], [], "x"
    for index, (layer, (w, b)) in enumerate(zip(workload.layers, params)):
        rank = len(layer.w) - 2
        inputs = [current, f"w{index}"]
        inits.append(numpy_helper.from_array(w, f"w{index}"))
        if b is not None:
            inputs.append(f"b{index}")
            inits.append(numpy_helper.from_array(b, f"b{index}"))
        out = f"y{index}"
        nodes.append(helper.make_node("Conv" if layer.kind == "conv" else "ConvTranspose", inputs, [out],
                                      kernel_shape=list(layer.w[2:]), strides=[layer.stride] * rank,
                                      pads=[layer.padding] * (2 * rank), dilations=[layer.dilation] * rank,
                                      group=layer.groups))
        if layer.residual:
            nodes.append(helper.make_node("Add", [out, "x"], [out + "r"]))
            out += "r"
        if layer.relu:
            nodes.append(helper.make_node("Relu", [out], [out + "a"]))
            out += "a"
        current = out
    nodes.append(helper.make_node("Identity", [current], ["out"]))
    graph = helper.make_graph(nodes, workload.name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, workload.x)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ort_session(model: bytes | str) -> Callable[..., Any] | None:
    """ONNX Runtime on an ONNX model (serialized, or a path) with THREADS intra-op threads:
    run(*inputs) -> its outputs in order; None where onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda *inputs: session.run(None, dict(zip(names, inputs)))


def openvino_session(model: bytes | str) -> Callable[..., Any] | None:
    """OpenVINO on an ONNX model (serialized, or a path), THREADS threads, float32 precision:
    run(*inputs) -> its outputs, indexable in order; None where openvino is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    compiled = core.compile_model(core.read_model(model), "CPU",
                                  {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY",
                                   "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return lambda *inputs: request.infer(dict(enumerate(inputs)))


def best_of(fn: Callable[[], Any], min_time: float) -> float:
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_time / 4 or calls < 3:
        fn()
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    repeats = max(1, int(min_time / 4 / max(per_call, 1e-6)))
    best = per_call
    for _ in range(4):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help=f"workloads: {', '.join(w.name for w in WORKLOADS)}")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per workload (best is kept)")
    parser.add_argument("--min-time", type=float, default=0.4, help="seconds per measurement")
    args = parser.parse_args()
    os.environ.setdefault("CONVC_NUM_THREADS", str(THREADS))
    from convc.runtime.jit import host_target
    from convc.runtime.peak import fma_peak_gflops
    host = host_target()
    peak = fma_peak_gflops("f32") * THREADS
    print(f"CPU: {cpu_name()} ({host.cpu}), {host.vector_bits}-bit vectors; FMA peak measured "
          f"{peak / THREADS:.1f} GFLOP/s per core, {peak:.1f} on {THREADS} cores; f32; {THREADS} threads everywhere")
    selected = [w for w in WORKLOADS if not args.only or w.name in args.only]
    header = f"{'workload':<14}{'convc ms':>9}{'GFLOP/s':>9}{'%peak':>7}{'compile s':>10}{'kernels':>8}" \
             f"{'torch ms':>9}{'ORT ms':>9}{'OV ms':>9}{'best/convc':>11}"
    print(header)
    notes, ratios = set(), {}
    for workload in selected:
        params = weights(workload)
        x = np.random.default_rng(1).standard_normal(workload.x).astype(np.float32)
        compiled, compile_s, kernels = convc_runner(workload, params)
        expected = compiled(x)
        engines: dict[str, Callable[[], Any]] = {"convc": lambda: compiled(x)}
        peers = {"torch": torch_runner(workload, params)}
        try:
            model = onnx_model(workload, params, expected.shape)
            for peer, session in (("ORT", ort_session), ("OV", openvino_session)):
                run = session(model.SerializeToString())
                peers[peer] = None if run is None else (lambda r: lambda x: r(x)[0])(run)
        except ImportError:
            peers["ORT"] = peers["OV"] = None
        for name, runner in peers.items():
            if runner is None:
                notes.add(f"{name} is not installed: skipped")
                continue
            result = runner(x)
            error = float(np.max(np.abs(result - expected))) / (float(np.max(np.abs(expected))) or 1.0)
            if error > 1e-3:
                notes.add(f"{workload.name}: {name} differs from convc by {error:.2g} (relative)")
            engines[name] = (lambda r: lambda: r(x))(runner)
        times = {name: float("inf") for name in engines}
        for _ in range(args.rounds):
            for name, fn in engines.items():
                times[name] = min(times[name], best_of(fn, args.min_time))
        flops, shape = 0, workload.x
        for layer in workload.layers:
            out = expected.shape if layer is workload.layers[-1] else shape  # inner layers keep spatial size here
            flops += layer_flops(layer, shape, out)
            shape = out
        ours = times["convc"]
        gflops = flops / ours / 1e9
        peer_times = [times[n] for n in ("torch", "ORT", "OV") if n in times]
        ratio = min(peer_times) / ours if peer_times else float("nan")
        ratios[workload.name] = ratio
        cells = "".join(f"{times[n] * 1e3:>9.3f}" if n in times else f"{'-':>9}" for n in ("torch", "ORT", "OV"))
        print(f"{workload.name:<14}{ours * 1e3:>9.3f}{gflops:>9.1f}{100 * gflops / peak:>7.1f}{compile_s:>10.2f}"
              f"{kernels:>8}{cells}{ratio:>11.2f}", flush=True)
    finite = [r for r in ratios.values() if np.isfinite(r)]
    if finite:
        print(f"geometric mean of best peer / convc: {float(np.exp(np.mean(np.log(finite)))):.2f} "
              f"over {len(finite)} workloads")
    for note in sorted(notes):
        print(f"note: {note}")


if __name__ == "__main__":
    main()
