"""Padding canonicalization: every padding form becomes explicit per-side `pad_lo` / `pad_hi`.

Each op's definition says how (OpDef.canonicalize, beside the op's padding rules):
- convs: 'same', 'valid', int, tuple; a non-zero padding_mode stays on the conv, whose kernel
  reads the border through index arithmetic, and is dropped where nothing is padded;
- transposed convs: padding and output_padding (the crop of the full output on each side);
- pad: torch's flat list (last axis first) as per-axis amounts over every axis;
- extract_patches and separable_conv2d: TF 'SAME' / 'VALID' with strides and rates.
"""
from __future__ import annotations

from convc.ir import Graph
from convc.registry import get_op

from .pipeline import Pass


class CanonicalizePadding(Pass):
    name = "canonicalize_padding"

    def run(self, graph: Graph) -> Graph:
        for node in graph.op_nodes():
            canonicalize = get_op(node.op).canonicalize
            if canonicalize is not None:
                node.attrs = canonicalize(node.attrs, [graph.type_of(o) for o in node.operands])
        return graph
