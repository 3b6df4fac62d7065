"""Validation of a node's attributes as they stand in the IR (traced or canonical form).

User arguments are validated by each op's `normalize`; attributes that arrive another way (parsed
IR text, a pass) are checked here against one table, before any shape rule reads them, so that
no malformed attribute can reach a kernel.
"""
from __future__ import annotations

from typing import Any, Callable

from .args import is_int
from .errors import ConvcError
from .op_conv import PADDING_MODES, spatial_rank
from .op_elementwise import UNARY_OPS
from .op_pad_pool import PAD_MODES
from .registry import has_trait


def _ints(minimum: int | None, length: Callable[[str], int | None]) -> Callable[[str, Any], str | None]:
    def check(op: str, value: Any) -> str | None:
        if not isinstance(value, tuple) or not all(is_int(v) for v in value):
            return "must be a list of ints"
        expected = length(op)
        if expected is not None and len(value) != expected:
            return f"must have {expected} elements"
        if minimum is not None and any(v < minimum for v in value):
            return "must be positive" if minimum == 1 else f"must be >= {minimum}"
        return None
    return check


def _choice(choices: tuple) -> Callable[[str, Any], str | None]:
    return lambda op, value: None if value in choices else f"must be one of {list(choices)}"


def _spatial(op: str) -> int | None:
    return spatial_rank(op) if op.startswith("conv") else 2 if op in ("extract_patches", "separable_conv2d") else None


def _padding(op: str, value: Any) -> str | None:
    if op.startswith("conv") and not op.startswith("conv_transpose") and value in ("same", "valid"):
        return None
    if op in ("extract_patches", "separable_conv2d"):
        return None if value in ("SAME", "VALID") else "must be 'SAME' or 'VALID'"
    return _ints(0, _spatial)(op, value)


def _pad_lo(op: str, value: Any) -> str | None:
    return _ints(None if op == "pad" else 0, _spatial)(op, value)


def _pad_hi(op: str, value: Any) -> str | None:
    return _ints(None if op == "pad" or op.startswith("conv_transpose") else 0, _spatial)(op, value)


def _int(minimum: int) -> Callable[[str, Any], str | None]:
    return lambda op, value: None if is_int(value) and value >= minimum else f"must be an int >= {minimum}"


RULES: dict[str, Callable[[str, Any], str | None]] = {
    "stride": _ints(1, _spatial), "dilation": _ints(1, _spatial), "strides": _ints(1, _spatial),
    "dilations": _ints(1, _spatial), "sizes": _ints(1, _spatial), "rates": _ints(1, _spatial),
    "output_padding": _ints(0, _spatial), "groups": _int(1), "output_size": _int(0),
    "padding": _padding, "pad_lo": _pad_lo, "pad_hi": _pad_hi, "pad": _ints(None, lambda op: None),
    "shape": _ints(0, lambda op: None), "padding_mode": _choice(PADDING_MODES), "mode": _choice(PAD_MODES),
    "value": lambda op, v: None if isinstance(v, (int, float)) and not isinstance(v, bool) else "must be a number",
    "data_format": _choice(("NHWC", "NCHW")), "activation": _choice(UNARY_OPS),
    "depthwise_activation": _choice(UNARY_OPS), "block": _int(0),
}
PADS = ({"padding"}, {"pad_lo", "pad_hi"})
REQUIRED: dict[str, tuple[set[str], tuple[set[str], ...]]] = {
    **{f"conv{r}d": ({"stride", "dilation", "groups"}, PADS) for r in (1, 2, 3)},
    **{f"conv_transpose{r}d": ({"stride", "dilation", "groups"}, ({"padding", "output_padding"}, {"pad_lo", "pad_hi"}))
       for r in (1, 2, 3)},
    "pad": ({"mode", "value"}, ({"pad"}, {"pad_lo", "pad_hi"})),
    "adaptive_avg_pool1d": ({"output_size"}, (set(),)),
    "extract_patches": ({"sizes", "strides", "rates"}, PADS),
    "separable_conv2d": ({"strides", "data_format", "dilations"}, PADS),
    "broadcast_to": ({"shape"}, (set(),)),
    "reorder": ({"block"}, (set(),)),
}


OPTIONAL_BY_TRAIT = {"has_epilogue": {"activation"}, "conv": {"padding_mode", "block"}, "conv_transpose": {"block"},
                     "separable": {"depthwise_activation"}}


def optional_attributes(op: str) -> set[str]:
    """The attributes an op may carry beyond its required ones, from its traits (a fused
    activation only where the kernel has an epilogue, and so on)."""
    return set().union(*(names for trait, names in OPTIONAL_BY_TRAIT.items() if has_trait(op, trait)))


def check_attributes(op: str, attrs: dict[str, Any]) -> None:
    """ConvcError unless `attrs` has the attributes `op` needs, each well-formed, and no others."""
    required, alternatives = REQUIRED.get(op, (set(), (set(),)))
    present = set(attrs)
    missing = required - present
    if missing:
        raise ConvcError(f"{op}: missing attribute(s) {sorted(missing)}")
    chosen = next((choice for choice in alternatives if choice <= present), None)
    if chosen is None:
        raise ConvcError(f"{op}: needs the attributes {' or '.join(str(sorted(c)) for c in alternatives)}")
    allowed = required | chosen | optional_attributes(op)
    for name, value in attrs.items():
        rule = RULES.get(name)
        if rule is None or name not in allowed:
            raise ConvcError(f"{op}: unknown attribute {name}={value!r}; {op} takes "
                             f"{', '.join(sorted(allowed)) or 'no attributes'}")
        problem = rule(op, value)
        if problem:
            raise ConvcError(f"{op}: attribute {name}={value!r} {problem}")
