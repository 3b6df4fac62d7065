"""The compile driver: trace (if needed), run the pass pipeline, generate and JIT the kernels."""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping

import numpy as np

from . import collector
from .arrays import as_float_array
from .compile_times import CompileTimes
from .errors import ConvcError
from .ir import Graph
from .options import Options, current, using
from .tracing import trace
from .types import TensorType


class Compiled:
    """A compiled graph: call it on arrays like the traced function."""

    def __init__(self, graph: Graph | Callable[[], Graph], executable: Any, compile_times: CompileTimes | None = None,
                 tuple_result: bool | None = None, options: Options | None = None) -> None:
        self.options = options or Options()
        """The options it was compiled with (environment defaults filled in)."""
        self._graph = graph if isinstance(graph, Graph) else None
        self._optimized_again = None if isinstance(graph, Graph) else graph
        self._tuple_result = self._graph.tuple_result if tuple_result is None else tuple_result
        self._executable = executable
        self._profiler = None
        self.compile_times = compile_times or CompileTimes()
        """Where the compile's time went (convc.compile_times.CompileTimes; print its `table()`)."""

    @property
    def graph(self) -> Graph:
        """The optimized graph (after a disk-cache hit, which ran no pass, optimized on first use)."""
        if self._graph is None:
            with using(self.options):
                self._graph = self._optimized_again()
        return self._graph

    def __call__(self, *arrays: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """The outputs: one array, or a tuple where the traced function returned a tuple."""
        outputs = self._executable(*arrays)
        return tuple(outputs) if self._tuple_result or len(outputs) != 1 else outputs[0]

    def profile(self, *inputs: Any, repeat: int = 10) -> list[dict]:
        """One row per kernel (reorders and copies included) in execution order: `nodes`, `op`,
        `shapes`, `layout`, `ms` (median of `repeat` calls), `percent` of the call, `gflops` and
        `percent_of_peak` (None where the op counts no flops). The first call compiles a
        profiling build of the graph (cycle counter stamps between kernels); later calls reuse it.
        With symbolic sizes, the rows are those of the inputs' lengths."""
        from .profiling import Profiler
        if self._profiler is None:
            with using(self.options):
                self._profiler = Profiler(self.graph, self._executable.minimums)
        return self._profiler.run(inputs, repeat)

    @property
    def llvm_ir(self) -> str:
        """The optimized LLVM IR of every kernel and the entry function."""
        return self._executable.llvm_ir

    @property
    def asm(self) -> str:
        """The host assembly."""
        return self._executable.asm

    def __repr__(self) -> str:
        return f"<convc.Compiled @{self._executable.name}>"


def optimize(graph: Graph, options: Options | int = 2, dump: str | os.PathLike | bool | None = None,
             times: CompileTimes | None = None) -> Graph:
    """Run the pass pipeline that `options` (or an opt level, with `dump`) selects on a copy of
    `graph` (each pass's time into `times`)."""
    from .passes import default_pipeline
    from .passes.pipeline import Timing, instruments_for
    if not isinstance(options, Options):
        options = Options(opt_level=options, dump=dump)
    timing = Timing()
    instruments = [*instruments_for(options.dump), *options.instruments, timing]
    optimized = default_pipeline(options.opt_level, instruments, evaluate=_evaluate, channel_block=channel_block,
                                 disable=options.disable).run(graph.copy())
    if times is not None:
        times.stages.update({f"pass {name}": seconds for name, seconds in timing.seconds.items()})
    return optimized


def channel_block(dtype: str) -> int:
    """Channels per block of the blocked layout on this host: one vector register of `dtype`."""
    from .runtime.jit import host_target
    return host_target().lanes(dtype)


def _evaluate(op: str, values: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    """Run one op on constant values with the eager kernels (for constant folding)."""
    from . import eager
    return eager.run(op, values, attrs, dump=False)


def check_example_inputs(graph: Graph, example_inputs: tuple[Any, ...]) -> None:
    """Example inputs given with a Graph must match its input types; ConvcError naming the input."""
    if len(example_inputs) != len(graph.inputs):
        raise ConvcError(f"compile: graph @{graph.name} takes {len(graph.inputs)} inputs "
                         f"({', '.join('%' + n for n in graph.inputs)}), got {len(example_inputs)} example inputs")
    for name, value in zip(graph.inputs, example_inputs):
        expected = graph.type_of(name)
        actual = TensorType.of_array(as_float_array("compile", f"example input %{name}", value))
        if actual != expected:
            raise ConvcError(f"compile: example input %{name} of graph @{graph.name} is {actual}, "
                             f"but the graph's input %{name} is {expected}")


def compile(fn_or_graph: Callable | Graph, *example_inputs: Any, options: Options | None = None,
            dynamic: Mapping[Any, Any] | None = None, **fields: Any) -> Compiled:
    """Trace `fn_or_graph` on the example inputs (unless it is a Graph already), optimize it and
    JIT-compile its kernels for the host CPU, as `options` (a convc.Options) and the keyword
    `fields` (opt_level, dump, cache_dir, threads, target, vector_bits, instruments, disable:
    each replaces the field of `options`) say. `cache_dir` keeps the machine code in an on-disk
    cache across processes (None: the CONVC_CACHE_DIR environment variable, if set; False: off).
    Without `options`, the options of an enclosing `convc.options.using` block are the base.
    `dynamic` makes input axes symbolic as in `convc.trace`."""
    options = Options.of(options if options is not None else current(), **fields)
    if dynamic:
        if isinstance(fn_or_graph, Graph):
            raise ConvcError("compile: dynamic= applies to a function being traced; a Graph's input types "
                             "already say which sizes are symbolic")
        fn_or_graph, example_inputs = trace(fn_or_graph, *example_inputs, dynamic=dynamic), ()
    with collector.paused(), using(options) as resolved:
        from .runtime.executor import compile_graph
        from .runtime.jit import warm_workers
        warm_workers()
        times = CompileTimes()
        start = time.perf_counter()
        if isinstance(fn_or_graph, Graph):
            graph = fn_or_graph
            if example_inputs:
                check_example_inputs(graph, example_inputs)
        else:
            graph = trace(fn_or_graph, *example_inputs)
            times.stages["trace"] = time.perf_counter() - start
        executable, optimized = compile_graph(graph, lambda g: optimize(g, resolved, times=times),
                                              resolved.codegen_key(), resolved.cache_dir, times)
    if optimized is None:  # a disk-cache hit: the graph is optimized again only if asked for
        return Compiled(lambda: optimize(graph, resolved), executable, times, graph.tuple_result, resolved)
    return Compiled(optimized, executable, times, options=resolved)
