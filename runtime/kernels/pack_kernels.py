"""Generated packing of conv weights and biases that are not constants (graph inputs, eager calls):
the prologue of a blocked conv kernel, run before it on every call, writes the same layouts that
runtime/kernels/packing.py writes on the host for constants, zeros included."""
from __future__ import annotations

import llvmlite.ir as ir

from ..codegen import Kernel, i64
from .conv_geometry import ConvGeometry, divmod_index


def _gather(k: Kernel, source: ir.Value, index: ir.Value, valid: ir.Value) -> ir.Value:
    """source[index] where valid, else 0 (reading a safe element instead)."""
    value = k.load(source, k.builder.select(valid, index, i64(0)))
    return k.builder.select(valid, value, k.const(0.0))


def _pack_bias(k: Kernel, packed: ir.Value, raw: ir.Value | None, c_out: int, lanes: int) -> None:
    with k.loop(0, -(-c_out // lanes) * lanes, "b") as index:
        valid = k.builder.icmp_signed("<", index, i64(c_out))
        k.store(_gather(k, raw, index, valid) if raw is not None else k.const(0.0), packed, index)


def emit_pack_prologue(module: ir.Module, name: str, dtype: str, geo: ConvGeometry, lanes: int, vectors: int,
                       transposed: bool, depthwise: bool, has_bias: bool) -> Kernel:
    """Kernel(packed weights, packed bias, raw weights[, raw bias])."""
    k = Kernel(module, name, dtype, 4 if has_bias else 3, ("w_packed", "bias_packed", "w", "bias"))
    packed, packed_bias, raw = k.args[:3]
    c, taps = lanes, geo.k_plane
    b = k.builder
    if depthwise:  # (C/c, *K, c)
        with k.outer_loop(-(-geo.c_out // c), "cb") as block:
            with k.loop(0, taps, "tap") as tap, k.loop(0, c, "lane") as lane:
                channel = k.add(k.mul(block, c), lane)
                valid = b.icmp_signed("<", channel, i64(geo.c_out))
                destination = k.add(k.mul(k.add(k.mul(block, taps), tap), c), lane)
                k.store(_gather(k, raw, k.add(k.mul(channel, taps), tap), valid), packed, destination)
    else:  # (C_out/(c*vectors), C_in_g/c, *K, c_in, vectors, c_out)
        in_blocks_g, out_blocks_g = -(-geo.cin_g // c), -(-geo.cout_g // c)
        with k.outer_loop(-(-geo.c_out // c) // vectors * in_blocks_g, "tgcib") as tgcib:
            tile_group, cib = divmod_index(k, tgcib, in_blocks_g)
            with k.loop(0, taps, "tap") as tap, k.loop(0, c, "ci") as ci, k.loop(0, vectors, "v") as v, \
                    k.loop(0, c, "co") as co_lane:
                out_block = k.add(k.mul(tile_group, vectors), v)
                co = k.add(k.mul(out_block, c), co_lane)
                ci_g = k.add(k.mul(cib, c), ci)
                valid = b.and_(b.icmp_signed("<", co, i64(geo.c_out)), b.icmp_signed("<", ci_g, i64(geo.cin_g)))
                if transposed:  # raw (C_in, C_out/g, *K)
                    group, _ = divmod_index(k, out_block, out_blocks_g)
                    co_local = b.sub(co, k.mul(group, geo.cout_g))
                    row = k.add(k.mul(k.add(k.mul(group, geo.cin_g), ci_g), geo.cout_g), co_local)
                else:  # raw (C_out, C_in/g, *K)
                    row = k.add(k.mul(co, geo.cin_g), ci_g)
                destination = k.add(k.mul(k.add(k.mul(k.add(k.mul(k.add(k.mul(tgcib, taps), tap), c), ci),
                                                       vectors), v), c), co_lane)
                k.store(_gather(k, raw, k.add(k.mul(row, taps), tap), valid), packed, destination)
    _pack_bias(k, packed_bias, k.args[3] if has_bias else None, geo.c_out, c)
    return k.finish()
