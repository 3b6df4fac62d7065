"""The host side of a graph with symbolic sizes: what a call's lengths make of the frame.

A `SymbolicProgram` holds what lowering could not fix: the arena's buffers as live intervals with
sizes that are expressions, the scratch regions after them, and the kernels' run-time parameter
arrays (their `bind`, evaluated on the node's types at the call's lengths). `frame(values)` places
the buffers for those lengths (the same first-fit as a fixed-size plan) and returns the frame the
generated code reads (runtime.sizes: the symbols' values, then each arena buffer's offset), the
arena's size and the parameter arrays by buffer-table slot. The executor keeps frames per
distinct lengths.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from convc.errors import ConvcError
from convc.ir import Node
from convc.symbolic import Dim, substitute
from convc.types import TensorType

from .memory import Interval, place

Bind = Callable[[Node, list[TensorType]], dict[int, np.ndarray]]


@dataclass(frozen=True)
class Frame:
    """What one set of lengths gives a call: the frame array, the arena's bytes, the parameter
    arrays by buffer-table slot and the output shapes."""

    values: np.ndarray
    arena_bytes: int
    params: dict[int, np.ndarray]
    output_shapes: list[tuple[int, ...]]


@dataclass
class KernelParams:
    """A kernel's run-time parameter arrays: `bind(node, in_types)` on the node's types at a
    call's lengths; `slots` maps the kernel's buffer positions to buffer-table slots."""

    node: Node
    in_types: list[TensorType]
    bind: Bind
    slots: dict[int, int]

    def at(self, values: dict[str, int]) -> dict[int, np.ndarray]:
        node = copy.copy(self.node)
        node.type = self.node.type.substitute(values)
        arrays = self.bind(node, [t.substitute(values) for t in self.in_types])
        return {self.slots[position]: np.ascontiguousarray(array) for position, array in arrays.items()
                if position in self.slots}


@dataclass
class SymbolicProgram:
    """See the module docstring. `input_axes` lists, per input, (axis, symbol) of its symbolic
    axes; `minimums` each symbol's smallest value from which the graph's types hold."""

    symbols: tuple[str, ...]
    dims: dict[str, Dim]
    minimums: dict[str, int]
    input_axes: list[list[tuple[int, str]]]
    intervals: list[Interval]
    scratch_bytes: list[int]
    output_types: list[TensorType]
    params: list[KernelParams] = field(default_factory=list)

    def frame(self, values: dict[str, int]) -> Frame:
        offsets, arena = place([(start, end, substitute(size, values)) for start, end, size in self.intervals])
        for size in self.scratch_bytes:
            offsets.append(arena)
            arena += size
        frame = np.array([values[s] for s in self.symbols] + offsets, np.int64)
        params: dict[int, np.ndarray] = {}
        for kernel in self.params:
            params.update(kernel.at(values))
        shapes = [t.substitute(values).shape for t in self.output_types]
        return Frame(frame, arena, params, shapes)

    def lengths(self, graph_name: str, names: list[str], shapes: list[tuple[int, ...]]) -> dict[str, int]:
        """The symbols' values that the inputs' shapes give; a ConvcError naming the input, the axis,
        the length and the range or minimum where one is outside what the graph was compiled for,
        or where one symbol takes two values."""
        values: dict[str, int] = {}
        for name, axes, shape in zip(names, self.input_axes, shapes):
            for axis, symbol in axes:
                length = shape[axis]
                seen = values.setdefault(symbol, length)
                if seen != length:
                    raise ConvcError(f"@{graph_name}: input %{name} has size {length} on axis {axis} ({symbol}), but "
                                     f"another input gives {symbol}={seen}")
                dim = self.dims[symbol]
                low = max(dim.min, self.minimums.get(symbol, dim.min))
                if length < low or (dim.max is not None and length > dim.max):
                    why = (f"the graph's ops need {symbol} >= {low}" if length < low and low > dim.min
                           else f"{symbol} is declared in [{dim.min}, {dim.max if dim.max is not None else 'inf'}]")
                    raise ConvcError(f"@{graph_name}: input %{name} has size {length} on axis {axis} ({symbol}); "
                                     f"{why}")
        return values
