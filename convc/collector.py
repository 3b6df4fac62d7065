"""Python's cyclic garbage collector held off while convc compiles or imports a model.

A compile builds hundreds of thousands of short-lived Python objects (IR nodes, llvmlite
instructions), which set off full collections; each full collection walks every object of the
process, the caller's too (a traced torch model brings ~400k), and costs 0.2-0.3 s. Measured on
ResNet-18 (znver4): three full collections, 0.72 s of a 2.47 s compile. The objects a compile
leaves behind are reference-counted away as usual; only cycles wait for the next collection after
the compile, which runs as it would have. Nested and concurrent compiles share one pause: the
collector is switched on again when the last of them ends, if it was on when the first began.
"""
from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No automatic garbage collection inside the block (explicit gc.collect() still works)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
