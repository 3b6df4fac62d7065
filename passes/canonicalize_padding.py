"""Padding canonicalization: every conv's padding ('same', 'valid', int, tuple) becomes explicit
per-side `pad_lo` / `pad_hi`; a non-zero padding_mode stays on the conv, whose kernel reads the
border through index arithmetic, and is dropped where nothing is padded."""
from __future__ import annotations

from convc.ir import Graph
from convc.op_conv import conv_pads
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
        return graph
