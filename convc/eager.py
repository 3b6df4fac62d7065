"""Eager op calls: a one-op graph compiled once per (op, attributes, operand types), then cached,
so a repeated call costs a dictionary lookup, the input checks and one native call. The cache
keeps the DEFAULT_CACHE_SIZE most recently used kernels (CONVC_EAGER_CACHE_SIZE overrides it);
`clear_caches()` (public as `convc.clear_caches`) empties it and returns the memory."""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from .arrays import as_float_array
from .ir import Graph
from .options import Options, current, environment_eager_cache_size, environment_vector_bits, using
from .registry import get_op
from .types import TensorType

DEFAULT_CACHE_SIZE = 512
_cache: OrderedDict[tuple, Any] = OrderedDict()
_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    """A forked child has no thread that could release the parent's lock."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


def cache_size() -> int:
    return len(_cache)


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def clear_caches() -> None:
    """Drop every compiled kernel kept for reuse in this process (the eager op cache, the only
    in-memory compile cache) and return the memory it held to the operating system; kernels still
    referenced elsewhere (a Compiled the caller holds) stay. Entries of an on-disk cache stay too."""
    from .runtime.jit import release_memory
    clear_cache()
    release_memory()


def _vector_bits() -> int | None:
    """What sets the vector width kernels are generated for, besides the host (cheap to read): the
    running compile's option (an eager call folding constants inside a compile), else the
    environment's."""
    options = current()
    return options.vector_bits if options is not None else environment_vector_bits()


def run(op: str, operands: list[Any], attrs: dict[str, Any], dump: bool = True) -> np.ndarray:
    """The op on arrays, compiled on first use; `dump` lets CONVC_DUMP show the one-op graph's passes
    (constant folding inside a compile turns it off)."""
    opdef = get_op(op)
    arrays = [as_float_array(op, name, value) for value, name in zip(operands, opdef.operand_labels(len(operands)))]
    key = (op, repr(tuple(attrs.items())), tuple((a.shape, a.dtype.char) for a in arrays), _vector_bits())
    executable = _cache.get(key)
    if executable is None:
        types = [TensorType.of_array(a) for a in arrays]
        opdef.infer(types, attrs)  # raises for invalid shapes before anything is compiled
        executable = _compile(op, opdef.operand_labels(len(arrays)), attrs, types, dump)
        with _lock:
            _cache[key] = executable
            while len(_cache) > environment_eager_cache_size(DEFAULT_CACHE_SIZE):
                _cache.popitem(last=False)
    else:
        with _lock:
            if key in _cache:
                _cache.move_to_end(key)
    # the key pins every operand's shape and dtype, so the executable's own checks are skipped
    return executable.run_unchecked(arrays)


def _compile(op: str, names: tuple[str, ...], attrs: dict[str, Any], types: list[TensorType], dump: bool) -> Any:
    from .passes import default_pipeline
    from .compiler import channel_block
    from .passes.pipeline import instruments_for
    from .runtime.executor import compile_graph
    graph = Graph(op)
    operands = [graph.add_input(t, n.replace("[", "").replace("]", "")) for t, n in zip(types, names)]
    graph.outputs = [graph.add_node(op, operands, dict(attrs))]
    with using(current() or Options()) as options:
        pipeline = default_pipeline(2, instruments_for(None if dump else False), channel_block=channel_block)
        return compile_graph(graph, pipeline.run, f"eager {options.codegen_key()}")[0]
