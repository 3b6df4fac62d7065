"""The `convc` command line: dump a model's IR at any stage, run it, benchmark the kernels, export it.

A model file is a Python file that defines
    model           a function of convc.ops, a convc.nn module, or a torch.nn.Module (imported
                    with convc.from_torch: torch.export, ATen ops mapped onto convc's)
    example_inputs  a tuple of arrays or torch tensors (or a function returning one) fixing
                    shapes and dtypes
and optionally
    reference       a function of the same inputs returning the expected output(s); for a
                    torch model without one, torch's own eager output is the reference.
A model file may also be an ONNX model (MODEL.onnx, imported with convc.from_onnx): its inputs are
random normal arrays of the declared shapes, or the arrays of `--inputs FILE.npz` (by input name,
or arr_0, arr_1, ... in order); with onnxruntime installed, its output is the reference.

`convc run` judges the compiled model against `reference`: the same number of outputs, the same
shapes, and every value within |out - ref| <= atol + rtol * |ref| (a NaN matches a NaN, an
infinity only the same infinity; dtypes may differ). The defaults, --rtol 1e-4 --atol 1e-5, suit
float32 ops; raise --atol for long sums that cancel to near zero. Against a whole model's own
output (torch's or onnxruntime's) the defaults are those of deep float32 nets: --rtol 1e-3 and
an --atol of 1e-4 x the largest |reference| value.

An exception raised by the model file (at import, in example_inputs(), model or reference) is
printed as a traceback of the file's own frames, without convc's and runpy's.

`convc dump MODEL --stage timing` prints where the compile's time went (stages, passes, LLVM parts,
kernels). `convc bench --help` lists the benchmarks; `convc bench --only NAME ...` runs some of them;
`convc bench MODEL` times a model's compiled calls. `convc export MODEL --out DIR` writes the model
as DIR/NAME.so + DIR/NAME.h, to build into a C program (examples/c/run_model.c).

Exit status: 0 success; 1 the outputs differ from `reference`, convc rejected the model, or the
model file raised; 2 a usage error (no such file, no `model`, an unknown benchmark name).
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

STAGES = ("traced", "optimized", "llvm", "asm", "timing")
RTOL, ATOL = 1e-4, 1e-5


class UsageError(Exception):
    """A problem with what the user asked for; printed without a traceback."""


class ReferenceMismatch(Exception):
    """The compiled model's outputs differ from the model file's `reference`."""


class UserCodeError(Exception):
    """An exception raised while running the model file's code; carries its filtered traceback."""

    def __init__(self, file: Path, where: str, error: Exception) -> None:
        super().__init__(f"{type(error).__name__} {where} of {file}:")
        self.traceback = user_traceback(error, file)


def _reported_errors() -> tuple[type[Exception], ...]:
    """The errors convc raises on purpose for an invalid model (as opposed to its own bugs)."""
    from .errors import ConvcError
    return ConvcError, TypeError, NotImplementedError


def _convc_files() -> set[str]:
    """The source files of convc's imported modules (the only ones a traceback can pass through)."""
    return {os.path.realpath(module.__file__) for name, module in list(sys.modules.items())
            if (name == "convc" or name.startswith("convc.")) and getattr(module, "__file__", None)}


def _is_convc_frame(filename: str, convc_files: set[str]) -> bool:
    return os.path.realpath(filename) in convc_files


def user_traceback(error: BaseException, file: Path) -> str:
    """`error`'s traceback (and those it chains) without convc's, runpy's and importlib's frames;
    frames of the model file itself are always kept."""
    convc_files, user_file = _convc_files(), os.path.realpath(file)

    def keep(filename: str) -> bool:
        if os.path.realpath(filename) == user_file:
            return True
        return not (filename == runpy.__file__ or filename.startswith(("<frozen runpy", "<frozen importlib"))
                    or _is_convc_frame(filename, convc_files))

    def strip(exc: traceback.TracebackException | None) -> None:
        if exc is None:
            return
        exc.stack = traceback.StackSummary.from_list([f for f in exc.stack if keep(f.filename)])
        for linked in (exc.__cause__, exc.__context__, *(getattr(exc, "exceptions", None) or ())):
            strip(linked)

    summary = traceback.TracebackException.from_exception(error)
    strip(summary)
    return "".join(summary.format())


@contextmanager
def _user_code(file: Path, where: str) -> Iterator[None]:
    """Turn an exception of the model file's code into a UserCodeError; an unexpected exception
    raised inside convc itself (a convc bug) propagates with its full traceback."""
    try:
        yield
    except Exception as error:
        frames = list(traceback.walk_tb(error.__traceback__))
        raised_in_convc = bool(frames) and _is_convc_frame(frames[-1][0].f_code.co_filename, _convc_files())
        if raised_in_convc and not isinstance(error, _reported_errors()):
            raise
        raise UserCodeError(file, where, error) from error


def load_model(path: str, inputs_file: str | None = None) -> tuple[Any, tuple[Any, ...], Any]:
    """(model, example_inputs, reference or None) from a model file; `inputs_file` (.npz) replaces the
    example inputs. An ONNX model's `model` is its imported Graph."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{path}: no such file")
    if file.suffix == ".onnx":
        return _load_onnx(file, inputs_file)
    with _user_code(file, "at import"):
        namespace = runpy.run_path(str(file), run_name="__convc_model__")
    model = namespace.get("model")
    if model is None or not callable(model):
        raise UsageError(f"{path} defines no callable `model`; define `model` (a function of convc.ops or a "
                         f"convc.nn module) and `example_inputs` (a tuple of arrays)")
    inputs = namespace.get("example_inputs")
    if callable(inputs):
        with _user_code(file, "in example_inputs()"):
            inputs = inputs()
    if inputs is None:
        raise UsageError(f"{path} defines no `example_inputs`; define a tuple of arrays that fixes the input "
                         f"shapes and dtypes")
    if isinstance(inputs, np.ndarray) or not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    inputs = tuple(_array(x) for x in inputs)
    if inputs_file:
        inputs = _npz_inputs(inputs_file, [f"arg{i}" for i in range(len(inputs))])
    reference = namespace.get("reference")
    if reference is None and _is_torch_module(model):
        reference = _torch_reference(model)
    return model, inputs, reference


def _load_onnx(file: Path, inputs_file: str | None) -> tuple[Any, tuple[Any, ...], Any]:
    import convc
    graph = convc.from_onnx(str(file))
    if inputs_file:
        inputs = _npz_inputs(inputs_file, graph.inputs)
    else:
        rng = np.random.default_rng(0)
        types = [graph.type_of(name) for name in graph.inputs]
        inputs = tuple(rng.standard_normal(t.shape).astype(t.numpy_dtype) for t in types)
    return graph, inputs, _onnxruntime_reference(file)


def _npz_inputs(path: str, names: Sequence[str]) -> tuple[np.ndarray, ...]:
    """The arrays of an .npz file for the inputs `names`: by name, or arr_0, arr_1, ... by position."""
    if not Path(path).is_file():
        raise UsageError(f"--inputs {path}: no such file")
    try:
        with np.load(path) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as error:  # not an npz file, or a damaged one
        raise UsageError(f"--inputs {path}: cannot read it as an .npz file ({type(error).__name__}: {error})") from None
    inputs = []
    for index, name in enumerate(names):
        key = name if name in arrays else f"arr_{index}"
        if key not in arrays:
            raise UsageError(f"--inputs {path} has no array for input {index} ({name!r}); its arrays: "
                             f"{', '.join(arrays) or 'none'}")
        inputs.append(arrays[key])
    return tuple(inputs)


def _onnxruntime_reference(file: Path) -> Any:
    """onnxruntime's output for the model, if onnxruntime is installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    try:
        session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own limits; convc's result is still shown
        print(f"convc: onnxruntime cannot load {file.name} ({type(error).__name__}); no reference", file=sys.stderr)
        return None

    def reference(*inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)}))
    reference.whole_model = True
    return reference


def _is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _array(value: Any) -> Any:
    """A torch tensor as a NumPy array (convc's inputs); anything else unchanged."""
    torch = sys.modules.get("torch")
    return value.detach().cpu().numpy() if torch is not None and isinstance(value, torch.Tensor) else value


def _torch_reference(model: Any) -> Any:
    """torch's eager output of the model in eval mode, flattened as from_torch flattens it."""
    import torch

    def reference(*inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        model.eval()
        with torch.no_grad():
            outputs = model(*(torch.from_numpy(np.ascontiguousarray(x)) for x in inputs))
        return tuple(_array(leaf) for leaf in torch.utils._pytree.tree_leaves(outputs))
    reference.whole_model = True
    return reference


def _trace(path: str, model: Any, inputs: tuple[Any, ...]) -> Any:
    import convc
    if isinstance(model, convc.Graph):  # an ONNX model, imported by load_model
        return model
    with _user_code(Path(path), "while tracing `model`"):
        if _is_torch_module(model):
            return convc.from_torch(model, *inputs)
        return convc.trace(model, *inputs)


def _announce(graph: Any) -> None:
    """A progress line on stderr before the (possibly long) passes, codegen and JIT."""
    print(f"convc: compiling {len(graph.op_nodes())} ops of @{graph.name} "
          f"(passes, LLVM codegen, JIT)...", file=sys.stderr, flush=True)


def _dump(args: argparse.Namespace) -> None:
    import convc
    model, inputs, _ = load_model(args.file)
    graph = _trace(args.file, model, inputs)
    if args.stage == "traced":
        sys.stdout.write(graph.dump())
        return
    _announce(graph)
    compiled = convc.compile(graph, opt_level=args.opt_level)
    if args.stage == "timing":
        sys.stdout.write(compiled.compile_times.table())
        return
    text = {"optimized": compiled.graph.dump(), "llvm": compiled.llvm_ir, "asm": compiled.asm}[args.stage]
    sys.stdout.write(text)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def compare_output(index: int, out: np.ndarray, expected: Any, rtol: float, atol: float) -> tuple[str | None, float]:
    """(a message naming output `index` and how it differs from `expected`, or None when it matches;
    the max abs difference over finite values) under |out - ref| <= atol + rtol * |ref|, NaN equal to NaN."""
    try:
        ref = np.asarray(expected, dtype=np.float64)
    except (TypeError, ValueError):
        return f"output {index}: `reference` returned {type(expected).__name__}, not an array of numbers", np.inf
    if ref.shape != out.shape:
        return f"output {index}: shape {list(out.shape)}, but `reference` gives shape {list(ref.shape)}", np.inf
    got = out.astype(np.float64)
    finite = np.isfinite(got) & np.isfinite(ref)
    with np.errstate(invalid="ignore"):
        diff = np.abs(got - ref)
        close = np.where(finite, diff <= atol + rtol * np.abs(ref), got == ref) | (np.isnan(got) & np.isnan(ref))
    worst = float(np.max(diff[finite], initial=0.0))
    if close.all():
        return None, worst
    excess = np.where(close, -np.inf, np.nan_to_num(diff - atol - rtol * np.abs(ref), nan=np.inf))
    at = np.unravel_index(int(np.argmax(excess)), out.shape)
    return (f"output {index}: {int((~close).sum())} of {close.size} values differ; worst at {list(map(int, at))}: "
            f"{got[at]:.7g} vs reference {ref[at]:.7g} (abs difference {diff[at]:.3g})"), worst


def check_reference(outputs: tuple[np.ndarray, ...], expected: tuple[Any, ...], rtol: float, atol: float) -> str:
    """The verdict line when every output matches `reference`; ReferenceMismatch naming each that does not."""
    tolerance = f"|out - ref| <= atol + rtol*|ref| with atol={atol:g}, rtol={rtol:g}"
    if len(outputs) != len(expected):
        raise ReferenceMismatch(f"the model returns {len(outputs)} output(s), `reference` returns {len(expected)}")
    results = [compare_output(i, out, ref, rtol, atol) for i, (out, ref) in enumerate(zip(outputs, expected))]
    problems = [message for message, _ in results if message]
    if problems:
        raise ReferenceMismatch(f"{len(problems)} of {len(outputs)} output(s) differ from `reference` "
                                f"({tolerance}):\n  " + "\n  ".join(problems))
    worst = max(difference for _, difference in results)
    return f"reference: match, {len(outputs)} output(s) within {tolerance}; max abs difference {worst:.3g}"


def _tolerances(args: argparse.Namespace, reference: Any, expected: tuple[Any, ...]) -> tuple[float, float]:
    """--rtol and --atol, or their defaults: a model's own output (`reference.whole_model`) is
    compared as deep float32 nets are, rtol 1e-3 and atol 1e-4 x the largest |reference|."""
    whole_model = getattr(reference, "whole_model", False)
    largest = max((float(np.abs(np.asarray(e, np.float64)).max()) for e in expected if np.size(e)), default=0.0)
    rtol = args.rtol if args.rtol is not None else 1e-3 if whole_model else RTOL
    atol = args.atol if args.atol is not None else 1e-4 * largest if whole_model else ATOL
    return rtol, atol


def _report_compile(compiled: "convc.Compiled", seconds: float) -> None:
    if compiled.compile_times.cache_hit:  # no pass ran: the optimized graph is not at hand
        print(f"loaded from the disk cache in {seconds:.3f} s")
    else:
        print(f"compiled {len(compiled.graph.op_nodes())} ops in {seconds:.3f} s")


def _run(args: argparse.Namespace) -> None:
    import convc
    for option, value in (("--rtol", args.rtol), ("--atol", args.atol)):
        if value is not None and not value >= 0:
            raise UsageError(f"{option} {value:g} must be a number >= 0")
    model, inputs, reference = load_model(args.file, args.inputs)
    start = time.perf_counter()
    graph = _trace(args.file, model, inputs)
    _announce(graph)
    compiled = convc.compile(graph, opt_level=args.opt_level)
    _report_compile(compiled, time.perf_counter() - start)
    outputs = _as_tuple(compiled(*inputs))
    for index, out in enumerate(outputs):
        print(f"output {index}: {out.dtype}{list(out.shape)}  min {out.min():.6g}  max {out.max():.6g}  "
              f"mean {out.mean():.6g}" if out.size else f"output {index}: {out.dtype}{list(out.shape)} (empty)")
    if reference is not None:
        with _user_code(Path(args.file), "in `reference`"):
            expected = _as_tuple(reference(*inputs))
        print(check_reference(outputs, expected, *_tolerances(args, reference, expected)))
    from .bench import best_seconds
    print(f"time per call: {best_seconds(lambda: compiled(*inputs)) * 1e3:.3f} ms")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 1")
    return value


def _bench(args: argparse.Namespace) -> None:
    if args.profile and not args.file:
        raise UsageError("--profile times the kernels of a model: give a model file (.py or .onnx)")
    if args.file:
        return _bench_model(args)
    from .bench import SHAPES, run_conv_benchmarks
    names = [s.name for s in SHAPES]
    unknown = [name for name in args.only or () if name not in names]
    if unknown:
        raise UsageError(f"no benchmark named {', '.join(unknown)}; choose from {', '.join(names)}")
    run_conv_benchmarks([s for s in SHAPES if not args.only or s.name in args.only], min_time=args.min_time)


def _bench_model(args: argparse.Namespace) -> None:
    """The compiled model's time per call on its example (or --inputs) inputs."""
    import convc
    from .bench import best_seconds
    if args.only:
        raise UsageError("--only names built-in benchmarks; give either a model file or --only")
    model, inputs, _ = load_model(args.file, args.inputs)
    start = time.perf_counter()
    graph = _trace(args.file, model, inputs)
    _announce(graph)
    compiled = convc.compile(graph)
    _report_compile(compiled, time.perf_counter() - start)
    print(f"time per call: {best_seconds(lambda: compiled(*inputs), args.min_time) * 1e3:.3f} ms")
    if args.profile:
        from .profiling import format_profile
        print(f"\nper kernel (median of {args.repeat} calls of a profiling build):")
        print(format_profile(compiled.profile(*inputs, repeat=args.repeat)), end="")


def _export(args: argparse.Namespace) -> None:
    """The model as DIR/NAME.so and DIR/NAME.h (convc.export)."""
    import re

    import convc
    name = args.name or re.sub(r"\W", "_", Path(args.file).stem)
    if not re.match(r"[A-Za-z_]", name):
        name = f"model_{name}"
    model, inputs, _ = load_model(args.file, None)
    start = time.perf_counter()
    graph = _trace(args.file, model, inputs)
    _announce(graph)
    print(f"exporting for {args.cpu or 'this host'} ...", flush=True)
    library = convc.export(graph, Path(args.out) / f"{name}.so", name=name, cpu=args.cpu, opt_level=args.opt_level)
    print(f"wrote {library} ({library.stat().st_size / 2**20:.1f} MB) and {library.with_suffix('.h')} in "
          f"{time.perf_counter() - start:.2f} s")
    print(f"build a C program with: cc -O2 -DMODEL={name} -include {library.with_suffix('.h')} "
          f"examples/c/run_model.c {library} -Wl,-rpath,{library.parent.resolve()} -lpthread -o run_{name}")


def _benchmark_list() -> str:
    from .bench import SHAPES
    lines = [f"  {s.name:<16}conv{len(s.w) - 2}d input {list(s.x)} weight {list(s.w)}"
             f"{f' stride {s.stride}' if s.stride != 1 else ''}{f' padding {s.padding}' if s.padding else ''}"
             f"{f' groups {s.groups}' if s.groups != 1 else ''}" for s in SHAPES]
    return "benchmarks:\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convc", description="convc: compile convolution graphs to CPU kernels "
                                     "through LLVM.", epilog=__doc__.split("\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    dump = commands.add_parser("dump", help="print a model's IR at one stage")
    dump.add_argument("file", metavar="MODEL", help="a model file (.py) or an ONNX model (.onnx)")
    dump.add_argument("--stage", choices=STAGES, default="optimized",
                      help="traced graph, optimized graph, LLVM IR, host assembly, or where the compile's time "
                           "went: each stage, pass, LLVM part and kernel (default: optimized)")
    dump.add_argument("--opt-level", type=int, choices=(0, 1, 2), default=2)
    dump.set_defaults(handler=_dump)
    run = commands.add_parser("run", help="compile a model, run it on its example inputs, check it against its "
                              "`reference`, time it")
    run.add_argument("file", metavar="MODEL", help="a model file (.py) or an ONNX model (.onnx)")
    run.add_argument("--inputs", metavar="FILE.npz", help="input arrays (by input name, or arr_0, arr_1, ...)")
    run.add_argument("--opt-level", type=int, choices=(0, 1, 2), default=2)
    run.add_argument("--rtol", type=float, default=None,
                     help=f"relative tolerance against `reference` (default {RTOL:g}, for float32 ops; 1e-3 "
                          f"against a whole model's own output)")
    run.add_argument("--atol", type=float, default=None,
                     help=f"absolute tolerance against `reference` (default {ATOL:g}, for float32 ops; 1e-4 x "
                          f"max|reference| against a whole model's own output)")
    run.set_defaults(handler=_run)
    bench = commands.add_parser("bench", help="time the conv kernels against the FMA peak (and torch if installed), "
                                "or a model's compiled time per call", epilog=_benchmark_list(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("file", nargs="?", metavar="MODEL", help="a model file (.py or .onnx) to time instead")
    bench.add_argument("--inputs", metavar="FILE.npz", help="the model's input arrays")
    bench.add_argument("--only", nargs="*", metavar="NAME", help="benchmark names to run (default: all, listed below)")
    bench.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement (default 0.3)")
    bench.add_argument("--profile", action="store_true", help="with MODEL: also print the time of each kernel")
    bench.add_argument("--repeat", type=_positive_int, default=10, help="calls a --profile row is the median of")
    bench.set_defaults(handler=_bench)
    export = commands.add_parser("export", help="write a model as a shared library and a C header, to run from C "
                                 "with no Python (convc.export)")
    export.add_argument("file", metavar="MODEL", help="a model file (.py) or an ONNX model (.onnx)")
    export.add_argument("--out", required=True, metavar="DIR", help="directory for NAME.so and NAME.h")
    export.add_argument("--name", help="the C prefix of the library's functions (default: the model file's name)")
    export.add_argument("--cpu", help="LLVM CPU to generate code for, e.g. znver4 or x86-64-v3 (default: this host)")
    export.add_argument("--opt-level", type=int, choices=(0, 1, 2), default=2)
    export.set_defaults(handler=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        args.handler(args)
    except UsageError as error:
        print(f"convc: error: {error}", file=sys.stderr)
        return 2
    except UserCodeError as error:
        print(f"convc: error: {error}\n{error.traceback}", file=sys.stderr, end="")
        return 1
    except ReferenceMismatch as error:
        print(f"convc: error: {error}", file=sys.stderr)
        return 1
    except _reported_errors() as error:
        print(f"convc: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
