"""The kernel emitter of each op, registered by the kernel module that owns it.

An emitter is emit(module, name, node, in_types, values) -> Kernel, where `values` holds the
operands that are compile-time constants (None for the others), for kernels that repack them on
the host (`Kernel.host_constants`); the values must not shape the generated code, which lowering
shares between identical nodes. Nodes that differ only in attributes the kernel takes at run time
share one body too: a `share_key(node, in_types, constants)` registered with the emitter names
the attributes and operand types that shape the code (None: all of them; `constants` says which
operands are compile-time constants), and the kernel's `bind` gives each node its run-time
values. An emitter registered with `symbolic=True` also emits code for types whose extents are
symbolic sizes (correct at every length from the graph's minimums on; see runtime.sizes);
lowering refuses the others on such types. A kernel module registers its emitters with `@kernel(op, ...)`,
or `@simple_kernel(op, ...)` for an emitter that reads only the node's attributes and result
type: emit(module, name, attrs, in_types, out_type). `emitter_for` is what lowering asks.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import llvmlite.ir as ir
import numpy as np

from convc.errors import ConvcError
from convc.ir import Node
from convc.types import TensorType

from ..codegen import Kernel

Values = list["np.ndarray | None"]
Emitter = Callable[[ir.Module, str, Node, list[TensorType], Values], Kernel]
SimpleEmitter = Callable[[ir.Module, str, dict[str, Any], list[TensorType], TensorType], Kernel]
F = TypeVar("F", bound=Callable[..., Kernel])

EMITTERS: dict[str, Emitter] = {}
ShareKey = Callable[[Node, list[TensorType], "tuple[bool, ...]"], "tuple | None"]
SHARE_KEYS: dict[str, ShareKey] = {}
SYMBOLIC: set[str] = set()  # ops whose emitters take symbolic sizes


def register_emitter(op: str, emit: Emitter) -> None:
    """Make `emit` the kernel of `op` (one per op)."""
    if op in EMITTERS:
        raise ConvcError(f"{op}: a kernel emitter is registered twice")
    EMITTERS[op] = emit


def kernel(*ops: str, share_key: ShareKey | None = None, symbolic: bool = False) -> Callable[[F], F]:
    """Decorator: registers emit(module, name, node, in_types, values) as the kernel of `ops`
    (and `share_key`, if given, as the key of the nodes that may share its code; `symbolic`:
    whether it takes symbolic sizes)."""
    def decorate(emit: F) -> F:
        for op in ops:
            register_emitter(op, emit)
            if share_key is not None:
                SHARE_KEYS[op] = share_key
            if symbolic:
                SYMBOLIC.add(op)
        return emit
    return decorate


def supports_symbolic(op: str) -> bool:
    """Whether the kernel of `op` takes symbolic sizes."""
    return op in SYMBOLIC


def code_key(node: Node, in_types: list[TensorType], constants: tuple[bool, ...]) -> tuple:
    """The node's attributes and operand types that shape its kernel's code (all of them unless
    its op's share_key says fewer), for lowering's sharing key."""
    share = SHARE_KEYS.get(node.op)
    key = share(node, in_types, constants) if share is not None else None
    return (repr(sorted(node.attrs.items())), tuple(in_types)) if key is None else ("shared", key)


def simple_kernel(*ops: str, symbolic: bool = False) -> Callable[[F], F]:
    """Decorator: registers emit(module, name, attrs, in_types, out_type) as the kernel of `ops`;
    the function itself is returned unchanged."""
    def decorate(emit: F) -> F:
        for op in ops:
            register_emitter(op, lambda module, name, node, in_types, values: emit(module, name, node.attrs,
                                                                                    in_types, node.type))
            if symbolic:
                SYMBOLIC.add(op)
        return emit
    return decorate


def emitter_for(op: str) -> Emitter:
    """The emitter of `op`; NotImplementedError naming the op where it has no kernel yet."""
    try:
        return EMITTERS[op]
    except KeyError:
        raise NotImplementedError(f"{op}: this op is defined (shapes and validation) but has no generated "
                                  f"kernel yet") from None
