"""Lowering of a canonical Graph to one LLVM module: a kernel per op and an entry function.

The entry `convc_main(i8** buffers)` receives, in order, the graph inputs, the outputs, the
constants and the arena; it calls each op's kernel on pointers into those buffers.
"""
from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir as ir

from convc.ir import Graph

from .codegen import FLOAT_TYPES, i64
from .kernels import emitter_for
from .memory import Plan, plan_memory

ENTRY = "convc_main"


@dataclass
class Lowered:
    module: ir.Module
    plan: Plan
    slots: dict[str, int]      # value name -> index in the buffer array (inputs, outputs, consts)
    arena_slot: int
    const_names: list[str]


def lower(graph: Graph) -> Lowered:
    module = ir.Module(name=graph.name)
    plan = plan_memory(graph)
    slots: dict[str, int] = {}
    computed_outputs = [o for o in graph.outputs if graph.node(o).op not in ("input", "const")]
    for name in graph.inputs + computed_outputs:
        slots.setdefault(name, len(slots))
    const_names = [n.name for n in graph.consts()]
    for name in const_names:
        slots[name] = len(slots)
    arena_slot = len(slots)

    byte_ptr = ir.IntType(8).as_pointer()
    entry = ir.Function(module, ir.FunctionType(ir.VoidType(), [byte_ptr.as_pointer()]), ENTRY)
    builder = ir.IRBuilder(entry.append_basic_block("entry"))
    buffers = entry.args[0]
    arena = builder.load(builder.gep(buffers, [i64(arena_slot)]), name="arena")

    def pointer(name: str) -> ir.Value:
        raw = (builder.load(builder.gep(buffers, [i64(slots[name])]), name=f"p.{name}") if name in slots
               else builder.gep(arena, [i64(plan.offsets[name])], name=f"p.{name}"))
        return builder.bitcast(raw, FLOAT_TYPES[graph.type_of(name).dtype].as_pointer())

    for index, node in enumerate(graph.op_nodes()):
        in_types = [graph.type_of(o) for o in node.operands]
        kernel = emitter_for(node.op)(module, f"k{index}_{node.op}", node, in_types)
        builder.call(kernel, [pointer(node.name)] + [pointer(o) for o in node.operands])
    builder.ret_void()
    return Lowered(module, plan, slots, arena_slot, const_names)
