"""Kernel emitters for batch_norm, layer_norm and group_norm.

Statistics take two passes over each row or group, as torch's do: the mean, then the sum of
squared deviations from it (no cancellation when the mean is large against the spread), both with
the reduction building block (reduce.py). The output is one more pass of
y = (x - mean) * scale + bias, scale = rstd * weight, per channel (batch_norm, group_norm) or per
element (layer_norm); the deviation is taken first so that no rounding of x * scale survives in
it. Vectors of the host's lanes run along each row, with a narrower vector for its tail.
The outer loop runs over independent rows, channels or groups, split across threads. A fused
activation (the `activation` attribute) is applied to each output vector before its store.

On the channel-blocked layout (N, C/c, *S, c) batch_norm and group_norm take vectors of c
channels at once: batch_norm scales each block by its channels' vectors; group_norm sums each
block lane-wise (a vector of per-channel sums), adds the channels of each group from those sums,
and so covers any number of channels per group. Its outer loop runs over units of whole blocks
and whole groups (lcm(C/G, c) channels, or a whole sample where that does not tile the blocks).
"""
from __future__ import annotations

import math
from typing import Callable

import llvmlite.ir as ir

from convc.ir import Node
from convc.symbolic import Size
from convc.types import TensorType

from ..codegen import Kernel, as_value
from ..jit import host_target
from .conv_geometry import divmod_index
from .elementwise import activate
from .reduce import lane_sums, run_sum, squared_deviation
from .registry import Values, kernel

OPERAND_NAMES = {"batch_norm": ("x", "mean", "var", "weight", "bias"), "layer_norm": ("x", "weight", "bias"),
                 "group_norm": ("x", "weight", "bias")}


def _kernel(module: ir.Module, name: str, node: Node, in_types: list[TensorType]) -> Kernel:
    names = ("out",) + OPERAND_NAMES[node.op][:len(in_types)]
    return Kernel(module, name, node.type.dtype, len(names), names)


def _like(k: Kernel, value: ir.Value, width: int | None) -> ir.Value:
    """A scalar splatted to `width` lanes (a vector, or width None, unchanged)."""
    if width is None or isinstance(value.type, ir.VectorType):
        return value
    return k.splat(value, width)


def reciprocal_std(k: Kernel, variance: ir.Value, eps: float) -> ir.Value:
    """1 / sqrt(variance + eps)."""
    b = k.builder
    return b.fdiv(k.const(1.0, variance), k.intrinsic("sqrt", b.fadd(variance, k.const(eps, variance))))


def scaled(k: Kernel, rstd: ir.Value, weight: ir.Value | None) -> ir.Value:
    """rstd * weight (rstd without a weight)."""
    return rstd if weight is None else k.builder.fmul(rstd, weight)


def normalized(k: Kernel, x: ir.Value, mean: ir.Value, scale: ir.Value, bias: ir.Value | None) -> ir.Value:
    """(x - mean) * scale + bias."""
    deviation = k.builder.fsub(x, mean)
    return k.builder.fmul(deviation, scale) if bias is None else k.vfma(deviation, scale, bias)


def for_vectors(k: Kernel, length: int, lanes: int, body: Callable[[ir.Value, int], None]) -> None:
    """body(start, width) over a run of `length` elements: whole vectors in a loop, then the tail."""
    whole, tail = length // lanes, length % lanes
    if isinstance(tail, Size):
        raise TypeError(f"a run of {length} elements has a tail of a symbolic size")
    with k.loop(0, whole, "vec") as index:
        body(k.mul(index, lanes), lanes)
    if tail:
        body(k.value(whole * lanes), tail)


def normalize_run(k: Kernel, offset: ir.Value, length: int, lanes: int, mean: ir.Value, scale: ir.Value,
                  bias: ir.Value | None, activation: object = None) -> None:
    """out[offset + i] = activation((x[offset + i] - mean) * scale + bias) over a contiguous run
    (mean, scale and bias scalars, or vectors of `lanes`; bias None for none)."""
    out, x = k.args[0], k.args[1]

    def body(start: ir.Value, width: int) -> None:
        index = k.add(offset, start)
        value = normalized(k, k.vload(x, index, width), _like(k, mean, width), _like(k, scale, width),
                           None if bias is None else _like(k, bias, width))
        k.vstore(activate(k, activation, value), out, index)

    for_vectors(k, length, lanes, body)


def channel_vector(k: Kernel, base: ir.Value, block: ir.Value, channels: int, lanes: int) -> ir.Value:
    """The `lanes` per-channel values of channel block `block` (zeros past the last channel)."""
    full, partial = divmod(channels, lanes)
    if not partial:
        return k.vload(base, k.mul(block, lanes), lanes)
    b = k.builder
    slot = k.alloca(k.vector_type(lanes), "channels")
    with b.if_else(b.icmp_signed("<", block, as_value(full))) as (whole, last):
        with whole:
            b.store(k.vload(base, k.mul(block, lanes), lanes), slot)
        with last:
            vector = ir.Constant(k.vector_type(lanes), [0.0] * lanes)
            for lane in range(partial):
                vector = b.insert_element(vector, k.load(base, full * lanes + lane), ir.Constant(ir.IntType(32), lane))
            b.store(vector, slot)
    return b.load(slot)


def _batch_norm_parameters(k: Kernel, params: list[ir.Value], eps: float) -> tuple[ir.Value, ir.Value, ir.Value | None]:
    """(mean, scale, bias) from batch_norm's per-channel operands, loaded (scalars or vectors)."""
    mean, var = params[:2]
    weight, bias = (params[2:] + [None, None])[:2]
    return mean, scaled(k, reciprocal_std(k, var, eps), weight), bias


@kernel("batch_norm")
def emit_batch_norm(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    k = _kernel(module, name, node, in_types)
    out_type, eps, activation = node.type, node.attrs["eps"], node.attrs.get("activation")
    if out_type.size == 0:
        return k.finish()
    batch, channels = out_type.shape[:2]
    plane = math.prod(out_type.shape[2:])
    if out_type.block:
        lanes = out_type.block
        blocks = -(-channels // lanes)
        with k.outer_loop(batch * blocks, "nb") as nb:
            _, block = divmod_index(k, nb, blocks)
            params = [channel_vector(k, arg, block, channels, lanes) for arg in k.args[2:]]
            normalize_run(k, k.mul(nb, plane * lanes), plane * lanes, lanes, *_batch_norm_parameters(k, params, eps),
                          activation)
        return k.finish()
    lanes = host_target().lanes(out_type.dtype)
    if plane == 1:  # (N, C): vectors across the channels of each row
        with k.outer_loop(batch, "n") as n:
            def body(start: ir.Value, width: int) -> None:
                params = [k.vload(arg, start, width) for arg in k.args[2:]]
                index = k.add(k.mul(n, channels), start)
                value = normalized(k, k.vload(k.args[1], index, width), *_batch_norm_parameters(k, params, eps))
                k.vstore(activate(k, activation, value), k.args[0], index)
            for_vectors(k, channels, lanes, body)
        return k.finish()
    with k.outer_loop(batch * channels, "nc") as nc:
        _, channel = divmod_index(k, nc, channels)
        params = [k.load(arg, channel) for arg in k.args[2:]]
        normalize_run(k, k.mul(nc, plane), plane, lanes, *_batch_norm_parameters(k, params, eps), activation)
    return k.finish()


def _moments(k: Kernel, offset: ir.Value, count: int, lanes: int, eps: float) -> tuple[ir.Value, ir.Value]:
    """(mean, rstd) of `count` contiguous elements of the input at `offset`, in two passes."""
    b, x = k.builder, k.args[1]
    mean = b.fdiv(run_sum(k, x, offset, count, lanes), k.const(float(count)))
    variance = b.fdiv(run_sum(k, x, offset, count, lanes, squared_deviation(mean)), k.const(float(count)))
    return mean, reciprocal_std(k, variance, eps)


@kernel("layer_norm")
def emit_layer_norm(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    k = _kernel(module, name, node, in_types)
    out_type = node.type
    if out_type.size == 0:
        return k.finish()
    row = math.prod(node.attrs["normalized_shape"])
    lanes = host_target().lanes(out_type.dtype)
    weight, bias = (k.args[2:] + [None, None])[:2]
    with k.outer_loop(out_type.size // row, "row") as index:
        offset = k.mul(index, row)
        mean, rstd = _moments(k, offset, row, lanes, node.attrs["eps"])

        def body(start: ir.Value, width: int) -> None:
            at = k.add(offset, start)
            value = normalized(k, k.vload(k.args[1], at, width), k.splat(mean, width), k.splat(rstd, width), None)
            if weight is not None and bias is not None:
                value = k.vfma(value, k.vload(weight, start, width), k.vload(bias, start, width))
            elif weight is not None:
                value = k.builder.fmul(value, k.vload(weight, start, width))
            elif bias is not None:
                value = k.builder.fadd(value, k.vload(bias, start, width))
            k.vstore(activate(k, node.attrs.get("activation"), value), k.args[0], at)

        for_vectors(k, row, lanes, body)
    return k.finish()


@kernel("group_norm", symbolic=True)
def emit_group_norm(module: ir.Module, name: str, node: Node, in_types: list[TensorType], values: Values) -> Kernel:
    k = _kernel(module, name, node, in_types)
    out_type = node.type
    if out_type.size == 0:
        return k.finish()
    if out_type.block:
        return _blocked_group_norm(k, out_type, node.attrs["num_groups"], node.attrs["eps"],
                                   node.attrs.get("activation"))
    batch, channels = out_type.shape[:2]
    groups, plane = node.attrs["num_groups"], math.prod(out_type.shape[2:])
    per_group = channels // groups
    lanes = host_target().lanes(out_type.dtype)
    weight, bias = (k.args[2:] + [None, None])[:2]
    with k.outer_loop(batch * groups, "ng") as ng:
        offset = k.mul(ng, per_group * plane)
        mean, rstd = _moments(k, offset, per_group * plane, lanes, node.attrs["eps"])
        _, group = divmod_index(k, ng, groups)
        with k.loop(0, per_group, "c") as within:
            channel = k.add(k.mul(group, per_group), within)
            scale = scaled(k, rstd, None if weight is None else k.load(weight, channel))
            normalize_run(k, k.add(offset, k.mul(within, plane)), plane, lanes, mean, scale,
                          None if bias is None else k.load(bias, channel), node.attrs.get("activation"))
    return k.finish()


def _blocked_group_norm(k: Kernel, out_type: TensorType, groups: int, eps: float, activation: object) -> Kernel:
    """group_norm on (N, C/c, *S, c): per-channel sums of each block in vectors, group sums from
    those (see the module docstring)."""
    b, x = k.builder, k.args[1]
    lanes = out_type.block
    batch, channels = out_type.shape[:2]
    plane, per_group = math.prod(out_type.shape[2:]), channels // groups
    blocks = -(-channels // lanes)
    unit = math.lcm(per_group, lanes)
    if (blocks * lanes) % unit:
        unit = blocks * lanes
    unit_blocks, unit_groups = unit // lanes, min(unit // per_group, groups)
    elements = per_group * plane
    count = (b.sitofp(k.value(elements), k.ftype) if isinstance(elements, Size) else k.const(float(elements)))
    weight, bias = (k.args[2:] + [None, None])[:2]

    def array(label: str) -> ir.Value:
        return b.bitcast(k.alloca(ir.ArrayType(k.ftype, unit), label), k.ftype.as_pointer())

    sums, means, rstds = array("sums"), array("means"), array("rstds")
    with k.outer_loop(batch * blocks // unit_blocks, "nu") as nu:
        start = k.mul(nu, unit * plane)

        def per_block(step=None) -> None:
            with k.loop(0, unit_blocks, "b") as j:
                source = k.add(start, k.mul(j, plane * lanes))
                total = lane_sums(k, x, source, plane, lanes) if step is None else \
                    lane_sums(k, x, source, plane, lanes, step(k.vload(means, k.mul(j, lanes), lanes)))
                k.vstore(total, sums, k.mul(j, lanes))

        def group_statistic(fill: ir.Value, statistic: Callable[[ir.Value], ir.Value]) -> None:
            with k.loop(0, unit_groups, "g") as group:
                first = k.mul(group, per_group)
                value = statistic(b.fdiv(run_sum(k, sums, first, per_group, lanes), count))
                with k.loop(0, per_group, "i") as i:
                    k.store(value, fill, k.add(first, i))
            if unit_groups * per_group < unit:  # lanes past the last channel
                with k.loop(unit_groups * per_group, unit, "pad") as i:
                    k.store(k.const(0.0), fill, i)

        per_block()
        group_statistic(means, lambda mean: mean)
        per_block(squared_deviation)
        group_statistic(rstds, lambda variance: reciprocal_std(k, variance, eps))
        with k.loop(0, unit_blocks, "b") as j:
            _, unit_index = divmod_index(k, nu, blocks // unit_blocks)
            block = k.add(k.mul(unit_index, unit_blocks), j)
            gamma, beta = (None if arg is None else channel_vector(k, arg, block, channels, lanes)
                           for arg in (weight, bias))
            scale = scaled(k, k.vload(rstds, k.mul(j, lanes), lanes), gamma)
            normalize_run(k, k.add(start, k.mul(j, plane * lanes)), plane * lanes, lanes,
                          k.vload(means, k.mul(j, lanes), lanes), scale, beta, activation)
    return k.finish()
