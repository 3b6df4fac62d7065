"""Definitions of pad (torch.nn.functional.pad) and adaptive_avg_pool1d.

pad's traced attributes keep torch's flat `pad` list (last axis first); canonicalization turns
it into per-axis `pad_lo` / `pad_hi` over every axis of the input, read by `pad_amounts`.
"""
from __future__ import annotations

from typing import Any

from .args import is_int, one_of
from .attributes import choice, integer, ints, number
from .errors import ConvcError
from .registry import AttrSchema, OpDef, register
from .types import TensorType

PAD_MODES = ("constant", "circular", "reflect", "replicate")
# non-constant modes: accepted pad lengths and, for each, the input ranks torch accepts
NON_CONSTANT_RANKS = {2: (2, 3), 4: (3, 4), 6: (4, 5)}


def _normalize_pad(pad: Any, mode: str = "constant", value: Any = 0.0) -> dict[str, Any]:
    if not isinstance(pad, (tuple, list)) or not all(is_int(p) for p in pad):
        raise TypeError(f"pad: pad={pad!r} must be a tuple of ints")
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2:
        raise ConvcError(f"pad: pad={pad} must have an even length ((lo, hi) pairs from the last axis)")
    mode = one_of("pad", "mode", mode, PAD_MODES)
    if value is None:
        value = 0.0
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"pad: value={value!r} must be a number")
    if mode != "constant" and value != 0:
        raise ConvcError(f"pad: value={value!r} is only meaningful with mode='constant', got mode={mode!r}")
    return {"pad": pad, "mode": mode, "value": float(value)}


def pad_amounts(attrs: dict[str, Any], rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(pad_lo, pad_hi) over every axis of a rank-`rank` input."""
    if "pad_lo" in attrs:
        return tuple(attrs["pad_lo"]), tuple(attrs["pad_hi"])
    lo, hi = [0] * rank, [0] * rank
    for pair in range(len(attrs["pad"]) // 2):
        lo[rank - 1 - pair], hi[rank - 1 - pair] = attrs["pad"][2 * pair], attrs["pad"][2 * pair + 1]
    return tuple(lo), tuple(hi)


def _infer_pad(types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    x, mode = types[0], attrs["mode"]
    if "pad" in attrs:
        length = len(attrs["pad"])
        if length // 2 > x.rank:
            raise ConvcError(f"pad: pad={attrs['pad']} pads {length // 2} axes but the input has only "
                             f"{x.rank} (shape {x.shape})")
        if mode != "constant" and x.rank not in NON_CONSTANT_RANKS.get(length, ()):
            accepted = "; ".join(f"length {n} for {a}-D or {b}-D input" for n, (a, b) in NON_CONSTANT_RANKS.items())
            raise ConvcError(f"pad: mode={mode!r} does not accept a pad of length {length} for a {x.rank}-D input "
                             f"(shape {x.shape}); accepted: {accepted}")
    lo, hi = pad_amounts(attrs, x.rank)
    shape = []
    for axis, (size, a, b) in enumerate(zip(x.shape, lo, hi)):
        if mode == "reflect" and (a >= size or b >= size) and (a or b):
            raise ConvcError(f"pad: mode='reflect' needs each pad < input size, got ({a}, {b}) for size {size} "
                             f"on axis {axis}")
        kept = size - max(0, -a) - max(0, -b)  # circular wraps around the input left after cropping
        if mode == "circular" and (a > kept or b > kept):
            raise ConvcError(f"pad: mode='circular' wraps at most once, so each pad must be <= the input size "
                             f"left after cropping, got ({a}, {b}) for size {size} on axis {axis}")
        if mode == "replicate" and size == 0 and (a > 0 or b > 0):
            raise ConvcError(f"pad: mode='replicate' cannot pad the empty axis {axis}")
        if mode in ("reflect", "replicate") and size + a + b < 1 and (a or b):
            raise ConvcError(f"pad: mode={mode!r} needs a non-empty result, but pad ({a}, {b}) crops axis {axis} "
                             f"of size {size} to {size + a + b}")
        if size + a + b < 0:
            raise ConvcError(f"pad: pad ({a}, {b}) crops axis {axis} of size {size} to a negative size")
        shape.append(size + a + b)
    return TensorType(tuple(shape), x.dtype)


def canonical_pad_attrs(attrs: dict[str, Any], types: list[TensorType]) -> dict[str, Any]:
    """Per-axis pad_lo / pad_hi over every axis of the input in place of torch's flat list."""
    if "pad" not in attrs:
        return attrs
    pad_lo, pad_hi = pad_amounts(attrs, types[0].rank)
    return {"pad_lo": pad_lo, "pad_hi": pad_hi, "mode": attrs["mode"], "value": attrs["value"]}


register(OpDef("pad", ("input",), normalize=_normalize_pad, infer=_infer_pad,
               attributes=AttrSchema({"mode": choice(PAD_MODES), "value": number},
                                     ({"pad": ints()}, {"pad_lo": ints(), "pad_hi": ints()})),
               traits=frozenset({"pad"}), canonicalize=canonical_pad_attrs))


def _normalize_pool(output_size: Any) -> dict[str, Any]:
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 1:
            raise ConvcError(f"adaptive_avg_pool1d: output_size={tuple(output_size)} must contain one int, "
                             f"got {len(output_size)}")
        output_size = output_size[0]
    if not is_int(output_size):
        raise TypeError(f"adaptive_avg_pool1d: output_size={output_size!r} must be an int")
    if output_size < 0:
        raise ConvcError(f"adaptive_avg_pool1d: output_size={output_size} must be >= 0")
    return {"output_size": int(output_size)}


def _infer_pool(types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    x = types[0]
    if x.rank not in (2, 3):
        raise ConvcError(f"adaptive_avg_pool1d: input must be 2-D (unbatched) or 3-D (batched), got shape {x.shape}")
    if 0 in x.shape[-2:]:
        raise ConvcError(f"adaptive_avg_pool1d: input channels and length must be non-zero, got shape {x.shape}")
    return TensorType(x.shape[:-1] + (attrs["output_size"],), x.dtype)


register(OpDef("adaptive_avg_pool1d", ("input",), normalize=_normalize_pool, infer=_infer_pool,
               attributes=AttrSchema({"output_size": integer(0)}), traits=frozenset({"pool"})))
