"""The `convc` command line: dump a model's IR at any stage, run it, benchmark the kernels.

A model file is a Python file that defines
    model           a function of convc.ops, or a convc.nn module
    example_inputs  a tuple of arrays (or a function returning one) fixing shapes and dtypes
and optionally
    reference       a function of the same inputs returning the expected output(s), which
                    `convc run` compares against.
"""
from __future__ import annotations

import argparse
import runpy
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

STAGES = ("traced", "optimized", "llvm", "asm")


class UsageError(Exception):
    """A problem with what the user asked for; printed without a traceback."""


def load_model(path: str) -> tuple[Any, tuple[Any, ...], Any]:
    """(model, example_inputs, reference or None) from a model file."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{path}: no such file")
    namespace = runpy.run_path(str(file), run_name="__convc_model__")
    model = namespace.get("model")
    if model is None or not callable(model):
        raise UsageError(f"{path} defines no callable `model`; define `model` (a function of convc.ops or a "
                         f"convc.nn module) and `example_inputs` (a tuple of arrays)")
    inputs = namespace.get("example_inputs")
    if callable(inputs):
        inputs = inputs()
    if inputs is None:
        raise UsageError(f"{path} defines no `example_inputs`; define a tuple of arrays that fixes the input "
                         f"shapes and dtypes")
    if isinstance(inputs, np.ndarray) or not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    return model, tuple(inputs), namespace.get("reference")


def _announce(graph: Any) -> None:
    """A progress line on stderr before the (possibly long) passes, codegen and JIT."""
    print(f"convc: compiling {len(graph.op_nodes())} ops of @{graph.name} "
          f"(passes, LLVM codegen, JIT)...", file=sys.stderr, flush=True)


def _dump(args: argparse.Namespace) -> None:
    import convc
    model, inputs, _ = load_model(args.file)
    graph = convc.trace(model, *inputs)
    if args.stage == "traced":
        sys.stdout.write(graph.dump())
        return
    _announce(graph)
    compiled = convc.compile(graph, opt_level=args.opt_level)
    text = {"optimized": compiled.graph.dump(), "llvm": compiled.llvm_ir, "asm": compiled.asm}[args.stage]
    sys.stdout.write(text)


def _run(args: argparse.Namespace) -> None:
    import convc
    model, inputs, reference = load_model(args.file)
    start = time.perf_counter()
    graph = convc.trace(model, *inputs)
    _announce(graph)
    compiled = convc.compile(graph, opt_level=args.opt_level)
    print(f"compiled {len(compiled.graph.op_nodes())} ops in {time.perf_counter() - start:.3f} s")
    outputs = compiled(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    for index, out in enumerate(outputs):
        print(f"output {index}: {out.dtype}{list(out.shape)}  min {out.min():.6g}  max {out.max():.6g}  "
              f"mean {out.mean():.6g}" if out.size else f"output {index}: {out.dtype}{list(out.shape)} (empty)")
    if reference is not None:
        expected = reference(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        worst = max(float(np.max(np.abs(o - e), initial=0.0)) for o, e in zip(outputs, expected))
        print(f"max abs difference from reference: {worst:.3g}")
    from .bench import best_seconds
    print(f"time per call: {best_seconds(lambda: compiled(*inputs)) * 1e3:.3f} ms")


def _bench(args: argparse.Namespace) -> None:
    from .bench import SHAPES, run_conv_benchmarks
    shapes = [s for s in SHAPES if not args.only or s.name in args.only]
    if not shapes:
        raise UsageError(f"no benchmark named {args.only}; choose from {[s.name for s in SHAPES]}")
    run_conv_benchmarks(shapes, min_time=args.min_time)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convc", description="convc: compile convolution graphs to CPU kernels "
                                     "through LLVM.", epilog=__doc__.split("\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    dump = commands.add_parser("dump", help="print a model's IR at one stage")
    dump.add_argument("file", metavar="MODEL.py")
    dump.add_argument("--stage", choices=STAGES, default="optimized",
                      help="traced graph, optimized graph, LLVM IR or host assembly (default: optimized)")
    dump.add_argument("--opt-level", type=int, choices=(0, 1, 2), default=2)
    dump.set_defaults(handler=_dump)
    run = commands.add_parser("run", help="compile a model, run it on its example inputs, report and time it")
    run.add_argument("file", metavar="MODEL.py")
    run.add_argument("--opt-level", type=int, choices=(0, 1, 2), default=2)
    run.set_defaults(handler=_run)
    bench = commands.add_parser("bench", help="time the conv kernels against the FMA peak (and torch if installed)")
    bench.add_argument("--only", nargs="*", help="benchmark names to run")
    bench.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement (default 0.3)")
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .errors import ConvcError
    try:
        args.handler(args)
    except UsageError as error:
        print(f"convc: error: {error}", file=sys.stderr)
        return 2
    except (ConvcError, TypeError, NotImplementedError) as error:
        print(f"convc: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
