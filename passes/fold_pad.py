"""Pad folding: a `pad` feeding a convolution becomes the convolution's own padding.

- a constant pad of zeros adds its amounts to a zero-padded conv's pad_lo / pad_hi;
- a circular, reflect or replicate pad becomes the padding_mode of a conv that pads nothing
  itself, whose kernel then reads the border through index arithmetic (no padded copy).

Only pads that grow the spatial axes (no crop, nothing on the batch or channel axes) fold. The pad
node stays for its other users; dead-code elimination drops it when none is left.
"""
from __future__ import annotations

from convc.ir import Graph, Node
from convc.op_conv import spatial_rank
from convc.registry import has_trait

from .pipeline import Pass

MODE_OF_PAD = {"constant": "zeros", "circular": "circular", "reflect": "reflect", "replicate": "replicate"}


def _spatial_amounts(pad: Node, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The pad's (lo, hi) over the last `rank` axes, if it pads only those and crops nothing."""
    lo, hi = pad.attrs["pad_lo"], pad.attrs["pad_hi"]
    outer = len(lo) - rank
    if outer < 1 or any(lo[:outer]) or any(hi[:outer]) or min(lo + hi) < 0:
        return None
    return tuple(lo[outer:]), tuple(hi[outer:])


class FoldPad(Pass):
    name = "fold_pad"

    def run(self, graph: Graph) -> Graph:
        for conv in graph.op_nodes():
            if has_trait(conv.op, "conv") and "pad_lo" in conv.attrs:
                self._fold(graph, conv)
        return graph

    def _fold(self, graph: Graph, conv: Node) -> None:
        pad = graph.node(conv.operands[0])
        if pad.op != "pad" or "pad_lo" not in pad.attrs:
            return
        amounts = _spatial_amounts(pad, spatial_rank(conv.op))
        if amounts is None:
            return
        mode, conv_mode = MODE_OF_PAD[pad.attrs["mode"]], conv.attrs["padding_mode"]
        if mode == "zeros":
            if pad.attrs["value"] != 0 or conv_mode != "zeros":
                return
        elif any(conv.attrs["pad_lo"]) or any(conv.attrs["pad_hi"]):
            return
        conv.attrs["pad_lo"] = tuple(a + b for a, b in zip(conv.attrs["pad_lo"], amounts[0]))
        conv.attrs["pad_hi"] = tuple(a + b for a, b in zip(conv.attrs["pad_hi"], amounts[1]))
        if any(amounts[0]) or any(amounts[1]):
            conv.attrs["padding_mode"] = mode
        graph.set_operands(conv.name, [pad.operands[0]] + conv.operands[1:])
