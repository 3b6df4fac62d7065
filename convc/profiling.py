"""Per-kernel profile of a compiled graph: a profiling build of its entry stores the cycle counter
around every kernel call (the kernels and the thread pool run as in the normal build), converted
to milliseconds at the counter's rate measured against the wall clock (so the host's work around
a call is not spread over the kernels). A graph with symbolic
sizes is profiled at the inputs' lengths: its rows show the shapes and flops at those lengths."""
from __future__ import annotations

from typing import Any

import numpy as np

from .compile_times import CompileTimes
from .errors import ConvcError
from .ir import Graph
from .symbolic import substitute


class Profiler:
    """The profiling build of one optimized graph, compiled on construction."""

    def __init__(self, graph: Graph, minimums: dict[str, int] | None = None) -> None:
        from .runtime.executor import Executable, lower_and_compile
        lowered, code = lower_and_compile(graph, CompileTimes(), profile=True)
        self.calls = lowered.calls
        if lowered.program.symbolic is not None:
            lowered.program.symbolic.minimums = dict(minimums or {})
        self.executable = Executable(lowered.program, code, input_names=graph.inputs)

    def run(self, inputs: tuple[Any, ...], repeat: int) -> list[dict]:
        """One row per kernel call in execution order: nodes, op, shapes, layout, ms (median over
        `repeat` calls after one warm-up call), percent of the call, gflops, percent_of_peak."""
        from .runtime.peak import cycle_counter_hz, fma_peak_gflops
        from .runtime.threads import ensure_pool
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
            raise ConvcError(f"profile: repeat={repeat!r} must be a whole number >= 1")
        values = self.executable.lengths(*inputs)
        self.executable(*inputs)
        cycles = []
        for _ in range(repeat):
            self.executable(*inputs)
            cycles.append(np.diff(self.executable.stamps.astype(np.int64)))
        per_call = np.array(cycles, dtype=np.float64)  # (repeat, kernels)
        ms = np.median(per_call, axis=0) / cycle_counter_hz() * 1e3  # the host's call overhead left out
        total = float(ms.sum()) or 1.0
        threads = ensure_pool()
        rows = []
        for call, milliseconds in zip(self.calls, ms):
            flops = None if call.flops is None else substitute(call.flops, values)
            gflops = None if flops is None or milliseconds <= 0 else flops / (milliseconds * 1e6)
            peak = fma_peak_gflops(call.out_type.dtype) * (threads if call.parallel else 1)
            in_types, out_type = [t.substitute(values) for t in call.in_types], call.out_type.substitute(values)
            rows.append({"nodes": [call.node], "op": call.op,
                         "shapes": " x ".join(map(str, in_types)) + f" -> {out_type}",
                         "layout": f"c{out_type.block}" if out_type.block else "plain",
                         "ms": float(milliseconds), "percent": 100 * float(milliseconds) / total,
                         "gflops": gflops, "percent_of_peak": None if gflops is None else 100 * gflops / peak})
        return rows


def format_profile(rows: list[dict]) -> str:
    """The rows as an aligned text table, with the total."""
    lines = [f"{'node':<14} {'op':<22} {'layout':>6} {'ms':>9} {'%':>6} {'GFLOP/s':>9} {'% peak':>7}  shapes"]
    for row in rows:
        gflops = "" if row["gflops"] is None else f"{row['gflops']:.1f}"
        peak = "" if row["percent_of_peak"] is None else f"{row['percent_of_peak']:.1f}"
        lines.append(f"{','.join(row['nodes']):<14} {row['op']:<22} {row['layout']:>6} {row['ms']:9.4f} "
                     f"{row['percent']:6.1f} {gflops:>9} {peak:>7}  {row['shapes']}")
    lines.append(f"{'total':<14} {'':<22} {'':>6} {sum(r['ms'] for r in rows):9.4f}")
    return "\n".join(lines) + "\n"
