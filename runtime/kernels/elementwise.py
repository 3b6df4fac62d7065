"""Kernel emitters for the elementwise ops and broadcast_to: strided loop nests with NumPy
broadcasting.

The scalar ops (SCALAR_OPS) take scalars or vectors alike, so conv epilogues apply them to
whole accumulator vectors; each one is the kernel of the elementwise op of its name, called with
the node's attributes as keyword arguments (the math ops and activations are in math_forms).
`activate` applies a fused activation attribute (convc.fused_activation) the same way, and
`run_program` an elementwise program (convc.elementwise_program): the `fused_elementwise` kernel
is the loop nest below with a program as its scalar op.

Each operand is read through its own strides, 0 on broadcast axes, so a broadcast input is never
materialized. Axes that are contiguous for every operand are merged, so the innermost loop is as
long as possible; it runs in whole vectors (a broadcast operand splatted), its tail element by
element.
"""
from __future__ import annotations

from typing import Any, Callable

import llvmlite.ir as ir

from convc.elementwise_program import Program, check_program, steps
from convc.fused_activation import activation_program
from convc.ir import Node
from convc.types import TensorType

from ..codegen import Kernel, i64
from ..jit import host_target
from .math_forms import MATH_FORMS, exp
from .registry import Values, kernel

ScalarOp = Callable[..., ir.Value]
CHUNK_VECTORS = 64  # vectors per job of the parallel loop over a single merged axis  # (kernel, operand values, **attributes) -> value


def broadcast_strides(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a C-contiguous `shape` read as `out_shape` (0 on broadcast axes)."""
    padded = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    strides, step = [0] * len(out_shape), 1
    for axis in reversed(range(len(out_shape))):
        strides[axis] = step if padded[axis] != 1 else 0
        step *= padded[axis]
    return tuple(strides)


def merge_axes(shape: tuple[int, ...], strides: list[tuple[int, ...]]) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """Merge neighbouring axes that every operand walks contiguously; drop size-1 axes."""
    kept = [a for a in range(len(shape)) if shape[a] != 1]
    dims, merged = [], [[] for _ in strides]
    for axis in kept:
        if dims and all(s[axis] * shape[axis] == m[-1] for s, m in zip(strides, merged)):
            dims[-1] *= shape[axis]
            for s, m in zip(strides, merged):
                m[-1] = s[axis]
            continue
        dims.append(shape[axis])
        for s, m in zip(strides, merged):
            m.append(s[axis])
    return tuple(dims), [tuple(m) for m in merged]


def emit_elementwise(module: ir.Module, name: str, in_types: list[TensorType], out_type: TensorType,
                     scalar_op: ScalarOp) -> Kernel:
    """out[i] = scalar_op(in0[i'], in1[i'], ...) over out_type's shape with broadcasting; on
    channel-blocked tensors over their storage (operands blocked alike, or single values)."""
    out_shape = out_type.storage_shape
    strides = [broadcast_strides(out_shape, out_shape)] + [broadcast_strides(t.storage_shape, out_shape)
                                                           for t in in_types]
    dims, merged = merge_axes(out_shape, strides)
    k = Kernel(module, name, out_type.dtype, 1 + len(in_types), ["out"] + [f"in{i}" for i in range(len(in_types))])
    if out_type.size == 0:
        return k.finish()

    lanes = host_target().lanes(out_type.dtype)
    vector_axis = bool(dims) and dims[-1] >= lanes and all(m[-1] in (0, 1) for m in merged)

    def vectors(offsets: list[ir.Value | int], lo: ir.Value, hi: ir.Value) -> None:
        """Elements [lo, hi) of the innermost axis in whole vectors (operands contiguous or
        broadcast along it), the rest one by one: the math is vector code whatever LLVM's loop
        vectorizer makes of it (sin's rare far-argument branch keeps it from vectorizing a
        scalar loop)."""
        b = k.builder
        steps_ = [m[-1] for m in merged]
        count = b.udiv(b.sub(hi, lo), i64(lanes))
        with k.loop(0, count, "v") as v:
            first = b.add(lo, k.mul(v, lanes))
            values = [k.vload(ptr, k.add(off, first), lanes) if step else k.splat(k.load(ptr, off), lanes)
                      for ptr, off, step in zip(k.args[1:], offsets[1:], steps_[1:])]
            k.vstore(scalar_op(k, values), k.args[0], k.add(offsets[0], first))
        with k.loop(b.add(lo, k.mul(count, lanes)), hi, "tail") as index:
            values = [k.load(ptr, k.add(off, index) if step else off)
                      for ptr, off, step in zip(k.args[1:], offsets[1:], steps_[1:])]
            k.store(scalar_op(k, values), k.args[0], k.add(offsets[0], index))

    def nest(depth: int, offsets: list[ir.Value | int]) -> None:
        if depth == len(dims):
            values = [k.load(ptr, off) for ptr, off in zip(k.args[1:], offsets[1:])]
            k.store(scalar_op(k, values), k.args[0], offsets[0])
            return
        if vector_axis and depth == len(dims) - 1 and depth > 0:
            vectors(offsets, i64(0), k.value(dims[-1]))
            return
        loop = k.outer_loop(dims[0], "i0") if depth == 0 else k.loop(0, dims[depth], f"i{depth}")
        with loop as index:
            nest(depth + 1, [k.add(off, k.mul(index, m[depth])) if m[depth] else off
                             for off, m in zip(offsets, merged)])

    if vector_axis and len(dims) == 1:  # one axis: the parallel loop runs over chunks of it
        chunk = lanes * CHUNK_VECTORS
        with k.outer_loop(-(-dims[0] // chunk), "chunk") as index:
            b = k.builder
            lo = k.mul(index, chunk)
            end = b.add(lo, i64(chunk))
            hi = b.select(b.icmp_unsigned("<", end, k.value(dims[0])), end, k.value(dims[0]))
            vectors([0] * len(strides), lo, hi)
        return k.finish()
    if dims:
        nest(0, [0] * len(strides))
    else:
        with k.outer_loop(1, "scalar"):
            nest(0, [0] * len(strides))
    return k.finish()


def _relu(k: Kernel, v: list[ir.Value]) -> ir.Value:
    # NaN stays NaN, as torch's relu does: select(x < 0, 0, x)
    zero = k.const(0.0, v[0])
    return k.builder.select(k.builder.fcmp_ordered("<", v[0], zero), zero, v[0])


def _relu6(k: Kernel, v: list[ir.Value]) -> ir.Value:
    low, six = _relu(k, v), k.const(6.0, v[0])
    return k.builder.select(k.builder.fcmp_ordered(">", low, six), six, low)


def _sigmoid(k: Kernel, v: list[ir.Value]) -> ir.Value:
    """1 / (1 + exp(-x)) with the inline vector exp: no library call per lane (a call inside a
    conv epilogue would spill the accumulators)."""
    b = k.builder
    one = k.const(1.0, v[0])
    return b.fdiv(one, b.fadd(one, exp(k, b.fneg(v[0]))))


SCALAR_OPS: dict[str, ScalarOp] = {
    "add": lambda k, v: k.builder.fadd(v[0], v[1]),
    "sub": lambda k, v: k.builder.fsub(v[0], v[1]),
    "mul": lambda k, v: k.builder.fmul(v[0], v[1]),
    "div": lambda k, v: k.builder.fdiv(v[0], v[1]),
    "maximum": lambda k, v: k.intrinsic("maximum", v[0], v[1]),
    "minimum": lambda k, v: k.intrinsic("minimum", v[0], v[1]),
    "relu": _relu,
    "relu6": _relu6,
    "sigmoid": _sigmoid,
    **MATH_FORMS,
}


def run_program(k: Kernel, program: Program, inputs: list[ir.Value]) -> ir.Value:
    """The result of `program` on `inputs` (scalars, or vectors of one width); its scalar
    constants take the inputs' type."""
    values = list(inputs)
    for op, refs, attrs in steps(program):
        like = next((values[r] for r in refs if isinstance(r, int)), values[0])
        operands = [values[r] if isinstance(r, int) else k.const(float(r), like) for r in refs]
        values.append(SCALAR_OPS[op](k, operands, **attrs))
    return values[-1]


def activate(k: Kernel, activation: Any, value: ir.Value) -> ir.Value:
    """`value` (a scalar or a vector) through a fused `activation` attribute, with the attributes
    it carries; unchanged where the attribute is None."""
    if activation is None:
        return value
    return run_program(k, activation_program(activation), [value])


@kernel(*SCALAR_OPS, symbolic=True)
def _elementwise(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    form, attrs = SCALAR_OPS[node.op], node.attrs
    return emit_elementwise(module, name, in_types, node.type, lambda k, values: form(k, values, **attrs))


@kernel("fused_elementwise", symbolic=True)
def _fused_elementwise(module: ir.Module, name: str, node: Node, in_types: list[TensorType],
                       values: Values) -> Kernel:
    program = check_program(node.attrs["program"], len(in_types), "fused_elementwise")
    return emit_elementwise(module, name, in_types, node.type, lambda k, operands: run_program(k, program, operands))


@kernel("broadcast_to", symbolic=True)
def _broadcast_to(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    return emit_elementwise(module, name, in_types, node.type, lambda k, operands: operands[0])
