"""Definition of `reorder`: a change of memory layout (plain <-> channel-blocked), inserted by the
layout-assignment pass at the borders of a region of ops with blocked kernels. The logical shape
and the values stay; only the storage order changes (see TensorType)."""
from __future__ import annotations

from typing import Any

from .args import as_int
from .attributes import integer
from .errors import ConvcError
from .registry import AttrSchema, OpDef, register
from .types import TensorType


def _normalize_reorder(block: Any) -> dict[str, Any]:
    block = as_int("reorder", "block", block)
    if block < 0:
        raise ConvcError(f"reorder: block={block} must be 0 (plain) or a positive channel block")
    return {"block": block}


def _infer_reorder(types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    source, block = types[0], attrs["block"]
    if bool(source.block) == bool(block):
        raise ConvcError(f"reorder: converts between the plain and a channel-blocked layout; the input "
                         f"{source} cannot become block={block}")
    return source.with_block(block)


register(OpDef("reorder", ("input",), normalize=_normalize_reorder, infer=_infer_reorder,
               attributes=AttrSchema({"block": integer(0)}), traits=frozenset({"reorder", "blocked"})))
