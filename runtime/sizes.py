"""Symbolic sizes in generated code: the frame a call passes and the IR that reads sizes from it.

A graph with symbolic sizes is lowered once for every length. Each call passes a *frame*, an i64
array that the host fills per distinct set of lengths: the symbols' values first (in the order of
`FrameLayout.symbols`), then the arena offset of every buffer the memory plan places (see
runtime.frames). The entry and every kernel of such a graph take the frame's address, and an
extent that is a `convc.symbolic.Size` becomes IR evaluated from the symbols' slots
(`SizeEmitter`): a constant plus products of symbols and floors, once per kernel, in the
function's first block, so that it dominates every use.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import llvmlite.ir as ir

from convc.symbolic import FloorDiv, Size

I64 = ir.IntType(64)


@dataclass(frozen=True)
class FrameLayout:
    """The frame's symbols, by slot."""

    symbols: tuple[str, ...]

    def slot(self, name: str) -> int:
        return self.symbols.index(name)


_layout: FrameLayout | None = None


@contextmanager
def symbolic_lowering(layout: FrameLayout) -> Iterator[None]:
    """Within the block every Kernel created takes the frame (see codegen.Kernel)."""
    global _layout
    saved, _layout = _layout, layout
    try:
        yield
    finally:
        _layout = saved


def frame_layout() -> FrameLayout | None:
    """The layout of the frame that kernels being lowered now take; None for fixed sizes."""
    return _layout


class SizeEmitter:
    """Sizes as i64 values of one function: emitted at the end of its first block (`block`, which
    the function's builder leaves before its own code and branches out of when done), each
    distinct expression once."""

    def __init__(self, block: ir.Block, frame: ir.Value, layout: FrameLayout) -> None:
        self.block = block
        self.builder = ir.IRBuilder(block)
        self.table = self.builder.bitcast(frame, I64.as_pointer(), name="frame")
        self.layout = layout
        self.cache: dict[object, ir.Value] = {}

    def value(self, size: Size | FloorDiv | str) -> ir.Value:
        found = self.cache.get(size)
        if found is None:
            # at the block's end again: allocas inserted at its start move a builder's place
            self.builder.position_at_end(self.block)
            found = self.cache[size] = self._emit(size)
        return found

    def slot(self, index: int, name: str = "") -> ir.Value:
        """The frame's i64 at `index`."""
        self.builder.position_at_end(self.block)
        return self.builder.load(self.builder.gep(self.table, [ir.Constant(I64, index)], inbounds=True), name=name)

    def close(self, successor: ir.Block) -> None:
        """End the block with a branch to `successor` (the function's code)."""
        self.builder.position_at_end(self.block)
        self.builder.branch(successor)

    def _emit(self, size: Size | FloorDiv | str) -> ir.Value:
        b = self.builder
        if isinstance(size, str):
            return self.slot(self.layout.slot(size), size)
        if isinstance(size, FloorDiv):
            numerator, divisor = self.value(size.numerator), ir.Constant(I64, size.divisor)
            # floor, not truncation: a numerator below zero (a length under a precondition) rounds down
            low = b.icmp_signed("<", numerator, ir.Constant(I64, 0))
            shifted = b.sub(numerator, b.select(low, ir.Constant(I64, size.divisor - 1), ir.Constant(I64, 0)))
            return b.sdiv(shifted, divisor)
        total: ir.Value = ir.Constant(I64, size.constant)
        for term, coefficient in size.terms:
            product: ir.Value = ir.Constant(I64, coefficient)
            for factor in term:
                product = b.mul(product, self.value(factor))
            total = b.add(total, product)
        return total
