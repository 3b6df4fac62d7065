"""Lowering of a canonical Graph to LLVM modules: one per distinct kernel, and the entry function's.

The entry `convc_main(i8** buffers)` receives, in order, the graph inputs, the outputs, the
constants and the arena; it calls each op's kernel on pointers into those buffers. A kernel with
enough work runs on every core: its task wrapper `task(args, chunk, chunks)` runs the chunk-th of
`chunks` equal pieces of the kernel's outer loop, and the entry hands the task to the native pool
(convc.runtime.threads), whose threads claim the chunks as they come free. A node the memory plan
makes a view has no kernel: its users get a pointer into its root's buffer. Each kernel (with its
task wrapper and prologue) is a module of its own, which the entry's module declares and calls by
name, so that the modules compile apart, in parallel, and link in one engine.

A graph with symbolic sizes (graph.dims) is lowered once for every length (runtime.sizes): the
entry and each kernel take the call's frame, the arena's offsets come from it, extents are IR
evaluated from its symbols, and what the host works out per set of lengths (the buffers'
placement, the kernels' run-time parameters) is the program's `symbolic` part (runtime.frames).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import llvmlite.ir as ir
import numpy as np

from convc.compile_times import KernelTime
from convc.dynamic import input_axes
from convc.errors import ConvcError
from convc.ir import Graph, Node
from convc.registry import get_op
from convc.symbolic import Size, generic_of, generic_values
from convc.types import TensorType

from .codegen import FLOAT_TYPES, I64, Kernel, i64
from .frames import KernelParams, SymbolicProgram
from .kernels import code_key, emitter_for, supports_symbolic
from .memory import Plan, aligned, buffer_intervals, plan_memory
from .sizes import FrameLayout, SizeEmitter, symbolic_lowering
from .threads import BYTE_PTR, RUN_SYMBOL, TASK_TYPE, chunk_count, pool_size

ENTRY = "convc_main"
PARALLEL_MIN_WORK = 200_000  # flops (or elements x 4) below which a fork/join costs more than it saves


def model_threads() -> int:
    """Threads the model's parallel kernels are split for: the pool's, at most the running
    compile's `threads` option; 1 runs every kernel on the caller. Lowering starts no pool: a
    model whose kernels run on it starts it when its machine code is loaded."""
    from convc.options import current
    options = current()
    if options is not None and options.threads == 1:
        return 1
    pool = pool_size()
    return pool if options is None or options.threads is None else min(pool, options.threads)


def work_estimate(node: Node, in_types: list[TensorType]) -> int:
    """Rough arithmetic of one op: its definition's flops where it counts them (convolutions),
    4 per output element otherwise."""
    flops = get_op(node.op).flops
    return flops(in_types, node.type) if flops is not None else 4 * node.type.size


def _task(module: ir.Module, kernel: ir.Function, extent: int | Size, name: str) -> ir.Function:
    """task(args, chunk, chunks): the kernel on the chunk-th of `chunks` equal pieces of its outer
    loop; a symbolic extent is read from the args table, after the pointers."""
    task = ir.Function(module, TASK_TYPE, name)
    builder = ir.IRBuilder(task.append_basic_block("entry"))
    args, chunk, chunks = task.args
    table = builder.bitcast(args, BYTE_PTR.as_pointer())
    pointers = [builder.bitcast(builder.load(builder.gep(table, [i64(i)])), arg.type)
                for i, arg in enumerate(kernel.args[:-2])]
    if isinstance(extent, Size):
        extent_value = builder.ptrtoint(builder.load(builder.gep(table, [i64(len(pointers))])), I64)
    else:
        extent_value = i64(extent)
    lo = builder.sdiv(builder.mul(chunk, extent_value), chunks)
    hi = builder.sdiv(builder.mul(builder.add(chunk, i64(1)), extent_value), chunks)
    builder.call(kernel, pointers + [lo, hi])
    builder.ret_void()
    return task


@dataclass
class Program:
    """Everything a call of a compiled graph needs besides its machine code (what the disk cache
    stores beside the object files): the graph's signature, the buffer table's layout and the
    arrays bound in it. Value names are the lowered graph's own; callers bind inputs by position."""

    name: str
    inputs: list[tuple[str, TensorType]]
    outputs: list[tuple[str, TensorType]]
    slots: dict[str, int]        # value name -> index in the buffer array (inputs, outputs, arrays)
    computed_outputs: list[str]  # outputs that kernels write (not graph inputs or constants)
    arena_bytes: int
    arena_slot: int
    parallel: bool               # whether any kernel runs on the thread pool
    arrays: dict[str, np.ndarray]  # bound to their slots: the graph's constants, the emitters' packed arrays
    stamps: int = 0              # a profiling build's cycle-counter stamps (a u64 buffer after the arena's slot)
    symbolic: SymbolicProgram | None = None  # symbolic sizes: the frame's slot follows the arena's


@dataclass
class KernelCall:
    """One kernel the entry calls, in order: its node, op, operand and result types, flops and
    whether it runs on the thread pool (what a profile row reports)."""

    node: str
    op: str
    in_types: list[TensorType]
    out_type: TensorType
    flops: int | Size | None
    parallel: bool  # on the pool (with symbolic sizes: where the work at the generic lengths is enough)


@dataclass
class Lowered:
    modules: list[ir.Module]   # the entry's module, then one per distinct kernel
    program: Program
    kernel_times: list[KernelTime] = field(default_factory=list)  # each kernel's emission
    calls: list[KernelCall] = field(default_factory=list)  # the entry's kernel calls, in order


Finished = Callable[[ir.Module], None]


def _emit(emitted_for: dict[tuple, Kernel], tasks: dict[str, ir.Function], name: str, node: Node,
          in_types: list[TensorType], values: list[np.ndarray | None], finished: Finished) -> Kernel:
    """The node's kernel. A kernel's code depends only on the op, the attributes that shape it
    and the operand types (code_key: all, or fewer where the kernel takes some at run time), the
    result type and which operands are constants (their values only shape the packed host
    constants), so a node identical in those reuses the function emitted first, with host constants
    of its own (from the kernel's `pack` and `bind`, or else its emitter run again in a scratch
    module), and LLVM compiles the code once. A kernel's module, once complete (with the task
    wrapper that runs it on the pool), goes to `finished`."""
    constants = tuple(v is not None for v in values)
    key = (node.op, code_key(node, in_types, constants), node.type, constants)
    emit = emitter_for(node.op)
    first = emitted_for.get(key)
    if first is None:
        emitted_for[key] = emitted = emit(ir.Module(name=name), name, node, in_types, values)
        for kernel in (emitted, emitted.prologue):
            if kernel is not None:
                kernel.function.linkage = ""  # called from the entry's module
        function = emitted.function
        if emitted.extent > 1:
            tasks[function.name] = _task(function.module, function, emitted.extent, f"task_{function.name}")
        finished(function.module)
        return emitted
    if not any(v is not None for v in values) and first.bind is None:
        return first
    shared = copy.copy(first)
    if not any(v is not None for v in values):
        shared.host_constants = dict(first.host_constants)
    elif first.pack is not None:
        shared.host_constants = first.pack(values)
    else:  # the emitter again, in a scratch module, for its host constants alone
        shared.host_constants = emit(ir.Module(name=f"{name}.constants"), name, node, in_types, values).host_constants
    if first.bind is not None:  # frame_params: placeholders, bound per call's lengths (runtime.frames)
        bound = ({p: first.host_constants[p] for p in first.frame_params} if first.frame_params
                 else first.bind(node, in_types))
        shared.host_constants = {**shared.host_constants, **bound}
    return shared


def _declared(module: ir.Module, function: ir.Function) -> ir.Function:
    """`function` of another module, declared in `module`."""
    return module.globals.get(function.name) or ir.Function(module, function.function_type, function.name)


def lower(graph: Graph, finished: Finished = lambda module: None, profile: bool = False) -> Lowered:
    """The graph's modules; each is handed to `finished` as soon as it is complete (the entry's
    last), so that compiling can start while the rest is lowered. A `profile` build's entry also
    stores the cycle counter before the first kernel and after each (prologue included) into the
    stamps buffer, whose slot follows the arena's (and the frame's, with symbolic sizes)."""
    if not graph.dims:
        return _lower(graph, finished, profile, None)
    layout = FrameLayout(tuple(sorted(graph.dims)))
    with symbolic_lowering(layout), generic_values(graph.dims):
        return _lower(graph, finished, profile, layout)


def _is_symbolic(graph: Graph, node: Node) -> bool:
    return node.type.symbolic or any(graph.type_of(o).symbolic for o in node.operands)


def _lower(graph: Graph, finished: Finished, profile: bool, layout: FrameLayout | None) -> Lowered:
    module = ir.Module(name=graph.name)
    if layout is None:
        plan = plan_memory(graph)
        arena_names: list[str] = []
    else:  # offsets from the frame: each arena buffer's slot follows the symbols'
        arena_names, intervals, views = buffer_intervals(graph)
        plan = Plan({}, 0, views)
        unsupported = sorted({n.op for n in graph.op_nodes()  # a view has no kernel
                              if n.name not in views and _is_symbolic(graph, n) and not supports_symbolic(n.op)})
        if unsupported:
            raise ConvcError(f"compile: graph @{graph.name} has symbolic sizes ({', '.join(graph.dims)}) at ops "
                             f"whose kernels take fixed sizes only: {', '.join(unsupported)}; compile it with fixed "
                             f"sizes")
    params: list[KernelParams] = []
    scratch_sizes: list[int] = []
    slots: dict[str, int] = {}
    computed_outputs = [o for o in graph.outputs if graph.node(o).op not in ("input", "const")]
    for name in graph.inputs + computed_outputs:
        slots.setdefault(name, len(slots))
    kernels = []
    host_constants: dict[str, np.ndarray] = {}
    scratch: dict[str, int] = {}  # arena offsets of the kernels' scratch, one region after the plan's buffers
    scratch_bytes, scratch_used = plan.arena_bytes, 0
    emitted_for: dict[tuple, Kernel] = {}  # identical nodes share one kernel function
    tasks: dict[str, ir.Function] = {}  # kernel name -> its task wrapper
    kernel_times: list[KernelTime] = []
    for index, node in enumerate(graph.op_nodes()):
        if node.name in plan.views:  # shares its root's buffer: no kernel
            continue
        in_types = [graph.type_of(o) for o in node.operands]
        values = [graph.node(o).value if graph.node(o).op == "const" else None for o in node.operands]
        start, known = time.perf_counter(), len(emitted_for)
        try:
            emitted = _emit(emitted_for, tasks, f"k{index}_{node.op}", node, in_types, values, finished)
        except TypeError as error:  # a size used as an int where the emitter has no symbolic path
            if layout is None or not _is_symbolic(graph, node):
                raise
            raise ConvcError(f"compile: %{node.name} ({node.op}, {', '.join(map(str, in_types))} -> {node.type}): its "
                             f"kernel cannot take these symbolic sizes yet ({error}); compile with fixed sizes") from None
        if len(emitted_for) > known:
            kernel_times.append(KernelTime(emitted.function.module.name, node.op, time.perf_counter() - start))
        operands = [node.name] + list(node.operands)
        bound: dict[int, int] = {}
        for position, array in sorted(emitted.host_constants.items()):
            name = f"k{index}.arg{position}"
            host_constants[name], slots[name] = array, len(slots)
            operands[position:position + 1] = [name]
            if position in emitted.frame_params:
                bound[position] = slots[name]
        if bound:
            params.append(KernelParams(node, in_types, emitted.bind, bound))
        prologue_operands = []
        if emitted.prologue is not None:
            raw = [operands[p] for p in sorted(emitted.scratch) if p < len(operands)]
            start = scratch_bytes
            for position, elements in sorted(emitted.scratch.items()):
                name = f"k{index}.scratch{position}"
                scratch[name] = start
                if isinstance(elements, Size):
                    raise ConvcError(f"{node.op}: scratch of a symbolic size is not supported")
                region = aligned(elements * emitted.itemsize)
                if layout is not None:
                    arena_names.append(name)
                    scratch_sizes.append(region)
                start += region
                operands[position:position + 1] = [name]
            prologue_operands = [operands[p] for p in sorted(emitted.scratch)] + raw
            scratch_used = max(scratch_used, start - scratch_bytes)
        kernels.append((index, node, in_types, emitted, operands, prologue_operands))
    # the constants read at run time (by a kernel, a prologue or as an output); one only packed is not
    read = {plan.views.get(name, (name, 0))[0] for *_, operands, prologue_operands in kernels
            for name in operands + prologue_operands} | set(graph.outputs)
    const_names = [n.name for n in graph.consts() if n.name in read]
    for name in const_names:
        slots[name] = len(slots)
    arena_slot = len(slots)
    plan = Plan({**plan.offsets, **scratch}, scratch_bytes + scratch_used, plan.views)

    entry = ir.Function(module, ir.FunctionType(ir.VoidType(), [BYTE_PTR.as_pointer()]), ENTRY)
    buffers = entry.args[0]
    sizes: SizeEmitter | None = None
    frame: ir.Value | None = None
    if layout is not None:  # the frame and the sizes in a first block, the calls after
        prelude = entry.append_basic_block("sizes")
        prelude_builder = ir.IRBuilder(prelude)
        frame = prelude_builder.load(prelude_builder.gep(buffers, [i64(arena_slot + 1)]), name="frame")
        sizes = SizeEmitter(prelude, frame, layout)
    builder = ir.IRBuilder(entry.append_basic_block("entry"))
    arena = builder.load(builder.gep(buffers, [i64(arena_slot)]), name="arena")
    frame_index = {name: len(layout.symbols) + i for i, name in enumerate(arena_names)} if layout else {}

    def size(value: int | Size) -> ir.Value:
        return sizes.value(value) if isinstance(value, Size) else i64(value)

    def pointer(name: str, dtype: str) -> ir.Value:
        root, view_offset = plan.views.get(name, (name, 0))  # a view is its root's buffer at an offset
        if root in slots:
            raw = builder.load(builder.gep(buffers, [i64(slots[root])]), name=f"p.{root}")
        elif layout is not None:
            offset = sizes.slot(frame_index[root], f"o.{root}")
            raw = builder.gep(arena, [offset], name=f"p.{root}")
        else:
            raw = builder.gep(arena, [i64(plan.offsets[root])], name=f"p.{root}")
        if not (isinstance(view_offset, int) and view_offset == 0):
            raw = builder.gep(raw, [size(view_offset)], name=f"p.{name}")
        return builder.bitcast(raw, FLOAT_TYPES[dtype].as_pointer())

    tail = [frame] if frame is not None else []  # a symbolic lowering's kernels take the frame

    threads = model_threads()
    run_parallel = ir.Function(module, ir.FunctionType(ir.VoidType(), [TASK_TYPE.as_pointer(), BYTE_PTR, I64]),
                               RUN_SYMBOL)
    parallel = False
    calls: list[KernelCall] = []
    stamp = _stamper(module, builder, buffers, arena_slot + 1 + (layout is not None)) if profile else None
    if stamp:
        stamp(0)
    for index, node, in_types, emitted, operands, prologue_operands in kernels:
        kernel, extent = emitted.function, emitted.extent
        work = work_estimate(node, in_types)
        on_pool = threads > 1 and extent > 1 and work >= PARALLEL_MIN_WORK
        flops = get_op(node.op).flops
        calls.append(KernelCall(node.name, node.op, in_types, node.type,
                                None if flops is None else flops(in_types, node.type), on_pool))
        if emitted.prologue is not None:
            prologue = emitted.prologue
            pointers = [pointer(name, prologue.dtype) for name in prologue_operands]
            pointers += [builder.bitcast(p, FLOAT_TYPES[prologue.dtype].as_pointer()) for p in tail]
            builder.call(_declared(module, prologue.function), pointers + [i64(0), size(prologue.extent)])
        pointers = [pointer(name, emitted.dtype) for name in operands]
        pointers += [builder.bitcast(p, FLOAT_TYPES[emitted.dtype].as_pointer()) for p in tail]
        direct = (_declared(module, kernel), pointers + [i64(0), size(extent)])  # the call on this thread
        if on_pool:
            parallel = True
            symbolic_extent = isinstance(extent, Size)
            with builder.goto_entry_block():
                builder.position_at_start(builder.block)
                table = builder.alloca(BYTE_PTR, len(pointers) + symbolic_extent, name=f"args{index}")
            for slot, value in enumerate(pointers):
                builder.store(builder.bitcast(value, BYTE_PTR), builder.gep(table, [i64(slot)]))
            if symbolic_extent:
                builder.store(builder.inttoptr(size(extent), BYTE_PTR), builder.gep(table, [i64(len(pointers))]))
            chunks = chunk_count(generic_of(extent), threads)
            task = _declared(module, tasks[kernel.name])
            fork = (run_parallel, [task, builder.bitcast(table, BYTE_PTR), i64(chunks)])
            if isinstance(work, Size) or symbolic_extent:  # at short lengths a fork/join costs more than it saves
                worth = builder.and_(builder.icmp_signed(">=", size(work), i64(PARALLEL_MIN_WORK)),
                                     builder.icmp_signed(">", size(extent), i64(1)))
                with builder.if_else(worth) as (forked, alone):
                    with forked:
                        builder.call(*fork)
                    with alone:
                        builder.call(*direct)
            else:
                builder.call(*fork)
        else:
            builder.call(*direct)
        if stamp:
            stamp(len(calls))
    builder.ret_void()
    if sizes is not None:
        sizes.close(builder.function.blocks[1])
    finished(module)
    kernel_modules = list({id(e.function.module): e.function.module for e in emitted_for.values()}.values())
    bound_slots = {slot for kernel in params for slot in kernel.slots.values()}
    arrays = {**{name: np.asarray(graph.node(name).value, order="C") for name in const_names},
              **{name: array for name, array in host_constants.items() if slots[name] not in bound_slots}}
    symbolic = None
    if layout is not None:
        symbolic = SymbolicProgram(layout.symbols, dict(graph.dims), {}, input_axes(graph), intervals, scratch_sizes,
                                   [graph.type_of(n) for n in graph.outputs], params)
    program = Program(graph.name, [(n, graph.type_of(n)) for n in graph.inputs],
                      [(n, graph.type_of(n)) for n in graph.outputs], slots, computed_outputs, plan.arena_bytes,
                      arena_slot, parallel, arrays, len(calls) + 1 if profile else 0, symbolic)
    return Lowered([module, *kernel_modules], program, kernel_times, calls)


def _stamper(module: ir.Module, builder: ir.IRBuilder, buffers: ir.Value, slot: int) -> Callable[[int], None]:
    """stamp(i): the cycle counter into the i-th u64 of the buffer at `slot`."""
    counter = ir.Function(module, ir.FunctionType(I64, []), "llvm.readcyclecounter")
    stamps = builder.bitcast(builder.load(builder.gep(buffers, [i64(slot)])), I64.as_pointer(), name="stamps")

    def stamp(index: int) -> None:
        builder.store(builder.call(counter, []), builder.gep(stamps, [i64(index)]))
    return stamp
