"""The pass pipeline: runs passes in order, verifies after each, and calls instruments around each
(IR printing after every pass, numbered dump files, timing)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

import numpy as np

from convc.ir import Graph
from convc.verifier import verify


Evaluate = Callable[[str, list[np.ndarray], dict[str, Any]], np.ndarray]
ChannelBlock = Callable[[str], int]  # dtype name -> channels per block of the blocked layout


class Pass:
    """A graph rewrite: `run(graph)` returns the rewritten graph (it may rewrite in place)."""

    name = "pass"

    def run(self, graph: Graph) -> Graph:
        raise NotImplementedError


class Instrument:
    """Hooks called around each pass."""

    def before(self, index: int, pass_: Pass, graph: Graph) -> None:
        pass

    def after(self, index: int, pass_: Pass, graph: Graph) -> None:
        pass


class PrintAfterAll(Instrument):
    """Prints the IR after every pass (like LLVM's -print-after-all)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def after(self, index: int, pass_: Pass, graph: Graph) -> None:
        stream = self.stream or sys.stdout
        stream.write(f"// ----- IR after {pass_.name} -----\n{graph.dump()}")


class DumpToDirectory(Instrument):
    """Writes the IR after each pass to DIR/NNN_<pass>.txt (000_input.txt is the graph before)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def before(self, index: int, pass_: Pass, graph: Graph) -> None:
        if index == 0:
            (self.directory / "000_input.txt").write_text(graph.dump())

    def after(self, index: int, pass_: Pass, graph: Graph) -> None:
        (self.directory / f"{index + 1:03d}_{pass_.name}.txt").write_text(graph.dump())


class Timing(Instrument):
    """Collects the wall time of each pass in `self.seconds` (pass name -> seconds)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = 0.0

    def before(self, index: int, pass_: Pass, graph: Graph) -> None:
        self._start = time.perf_counter()

    def after(self, index: int, pass_: Pass, graph: Graph) -> None:
        self.seconds[pass_.name] = self.seconds.get(pass_.name, 0.0) + time.perf_counter() - self._start


def instruments_for(dump: str | os.PathLike | bool | None) -> list[Instrument]:
    """`dump='all'` prints after each pass, a path is a dump directory, False switches dumping off;
    None (the default) takes the same switch from the environment variable CONVC_DUMP."""
    if dump is not None and not isinstance(dump, (str, os.PathLike)) and dump is not False:
        raise TypeError(f"compile: dump={dump!r} must be 'all', a directory path, False or None, "
                        f"got {type(dump).__name__}")
    if dump is None:
        dump = os.environ.get("CONVC_DUMP") or None
    if dump is None or dump is False:
        return []
    return [PrintAfterAll()] if str(dump) == "all" else [DumpToDirectory(dump)]


class Pipeline:
    """An ordered list of passes with verification and instruments."""

    def __init__(self, passes: Sequence[Pass], instruments: Sequence[Instrument] = (), verify_each: bool = True):
        self.passes = list(passes)
        self.instruments = list(instruments)
        self.verify_each = verify_each

    def run(self, graph: Graph) -> Graph:
        for index, pass_ in enumerate(self.passes):
            for instrument in self.instruments:
                instrument.before(index, pass_, graph)
            graph = pass_.run(graph)
            if self.verify_each:
                verify(graph)
            for instrument in self.instruments:
                instrument.after(index, pass_, graph)
        return graph


# every pass of default_pipeline, in pipeline order (the names `Options.disable` takes)
PASS_NAMES = ("shape_inference", "canonicalize_padding", "common_subexpressions", "fold_pad", "fold_constants",
              "fold_batch_norm", "dead_code", "fuse_broadcast", "fold_scale", "fold_bias", "fuse_epilogue",
              "merge_groups", "assign_layout", "fuse_residual", "fuse_separable", "fold_reorders", "fuse_elementwise")
REQUIRED_PASSES = ("shape_inference", "canonicalize_padding")  # the kernels expect their output


def default_pipeline(opt_level: int = 2, instruments: Sequence[Instrument] = (),
                     evaluate: Evaluate | None = None, channel_block: ChannelBlock | None = None,
                     disable: Sequence[str] = ()) -> Pipeline:
    """opt_level 0: shape inference and padding canonicalization; 1: plus common-subexpression
    elimination, pad folding into convs, constant folding (when the caller supplies `evaluate`,
    which runs one op on constants), batch-norm folding into convs and dead-code elimination; 2:
    plus the fusions and, when the caller supplies `channel_block` (the host's channels per block
    for a dtype), narrow-group merging, the blocked layout and the residual fusion on it;
    elementwise groups left over fuse last. Passes named in `disable` are left out (not the two
    that every opt level needs: ConvcError)."""
    from .assign_layout import AssignLayout
    from .canonicalize_padding import CanonicalizePadding
    from .common_subexpressions import CommonSubexpressions
    from .dead_code import DeadCodeElimination
    from .fold_batch_norm import FoldBatchNorm
    from .fold_bias import FoldBias
    from .fold_constants import FoldConstants
    from .fold_pad import FoldPad
    from .fold_reorders import FoldReorders
    from .fold_scale import FoldScale
    from .fuse_broadcast import FuseBroadcast
    from .fuse_elementwise import FuseElementwise
    from .fuse_epilogue import FuseEpilogue
    from .fuse_residual import FuseResidual
    from .fuse_separable import FuseSeparable
    from .merge_groups import MergeGroups
    from .shape_inference import ShapeInference

    passes: list[Pass] = [ShapeInference(), CanonicalizePadding()]
    if opt_level >= 1:
        passes += [CommonSubexpressions(), FoldPad()]
        if evaluate is not None:
            passes.append(FoldConstants(evaluate))
        passes.append(FoldBatchNorm())
        passes.append(DeadCodeElimination())
    if opt_level >= 2:
        passes += [FuseBroadcast(), FoldScale(), FoldBias(), FuseEpilogue()]
        if channel_block is None:
            passes.append(FuseSeparable())
        else:  # depthwise + pointwise pairs fuse in the layout they were given, with their residual
            passes += [MergeGroups(channel_block), AssignLayout(channel_block), FuseResidual(), FuseEpilogue(),
                       FuseSeparable(), FoldReorders()]
        passes += [FuseElementwise(), DeadCodeElimination()]
    required = sorted(set(disable) & set(REQUIRED_PASSES))
    if required:
        from convc.errors import ConvcError
        raise ConvcError(f"compile: disable={list(disable)!r}: {', '.join(required)} cannot be disabled "
                         f"(the kernels need its output)")
    return Pipeline([p for p in passes if p.name not in disable], instruments)
