"""Padding canonicalization: every padding form becomes explicit per-side `pad_lo` / `pad_hi`.

- convs: 'same', 'valid', int, tuple; a non-zero padding_mode stays on the conv, whose kernel
  reads the border through index arithmetic, and is dropped where nothing is padded;
- transposed convs: padding and output_padding (the crop of the full output on each side);
- pad: torch's flat list (last axis first) as per-axis amounts over every axis;
- extract_patches and separable_conv2d: TF 'SAME' / 'VALID' with strides and rates.
"""
from __future__ import annotations

from convc.ir import Graph
from convc.op_conv import conv_pads, conv_transpose_pads
from convc.op_pad_pool import pad_amounts
from convc.op_tf import patch_pads, separable_pads
from convc.registry import has_trait

from .pipeline import Pass


class CanonicalizePadding(Pass):
    name = "canonicalize_padding"

    def run(self, graph: Graph) -> Graph:
        for node in graph.op_nodes():
            if has_trait(node.op, "conv") and "padding" in node.attrs:
                kernel = graph.type_of(node.operands[1]).shape[2:]
                pad_lo, pad_hi = conv_pads(node.attrs, kernel)
                mode = node.attrs.get("padding_mode", "zeros")
                if not any(pad_lo) and not any(pad_hi):
                    mode = "zeros"
                attrs = {key: value for key, value in node.attrs.items() if key not in ("padding", "padding_mode")}
                node.attrs = {"stride": attrs.pop("stride"), "pad_lo": pad_lo, "pad_hi": pad_hi, **attrs,
                              "padding_mode": mode}
            elif has_trait(node.op, "conv_transpose") and "padding" in node.attrs:
                pad_lo, pad_hi = conv_transpose_pads(node.attrs)
                node.attrs = {"stride": node.attrs["stride"], "pad_lo": pad_lo, "pad_hi": pad_hi,
                              "dilation": node.attrs["dilation"], "groups": node.attrs["groups"]}
            elif node.op == "pad" and "pad" in node.attrs:
                pad_lo, pad_hi = pad_amounts(node.attrs, graph.type_of(node.operands[0]).rank)
                node.attrs = {"pad_lo": pad_lo, "pad_hi": pad_hi, "mode": node.attrs["mode"],
                              "value": node.attrs["value"]}
            elif node.op == "extract_patches" and "padding" in node.attrs:
                pad_lo, pad_hi = patch_pads(node.attrs, graph.type_of(node.operands[0]).shape)
                attrs = {k: v for k, v in node.attrs.items() if k != "padding"}
                node.attrs = {**attrs, "pad_lo": pad_lo, "pad_hi": pad_hi}
            elif node.op == "separable_conv2d" and "padding" in node.attrs:
                kernel = graph.type_of(node.operands[1]).shape[:2]
                pad_lo, pad_hi = separable_pads(node.attrs, graph.type_of(node.operands[0]).shape, kernel)
                attrs = {k: v for k, v in node.attrs.items() if k != "padding"}
                node.attrs = {**attrs, "pad_lo": pad_lo, "pad_hi": pad_hi}
        return graph
