"""Definitions of the channels-first convolutions: conv1d/2d/3d and conv_transpose1d/2d/3d.

Traced attributes keep the user's padding (a tuple, or 'same'); padding canonicalization
replaces it by explicit per-side `pad_lo` / `pad_hi`, which `conv_pads` reads in either form.
"""
from __future__ import annotations

from typing import Any

from .args import as_int, int_tuple, one_of
from .attributes import EPILOGUE, choice, integer, ints
from .errors import ConvcError
from .registry import AttrSchema, OpDef, Rule, register, same_dtype
from .types import TensorType

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")


def _groups(op: str, groups: Any) -> int:
    groups = as_int(op, "groups", groups)
    if groups < 1:
        raise ConvcError(f"{op}: groups={groups} must be positive")
    return groups


def normalize_conv(op: str, rank: int, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                   groups: Any = 1, padding_mode: str = "zeros") -> dict[str, Any]:
    """User arguments of conv{rank}d -> canonical attributes."""
    stride_t = int_tuple(op, "stride", stride, rank, minimum=1)
    dilation_t = int_tuple(op, "dilation", dilation, rank, minimum=1)
    if isinstance(padding, str):
        padding = one_of(op, "padding", padding, ("same", "valid"))
        if padding == "valid":
            padding = (0,) * rank
        elif any(s != 1 for s in stride_t):
            raise ConvcError(f"{op}: padding='same' is not supported for strided convolutions "
                             f"(stride={stride_t}); use stride=1 or explicit padding")
    else:
        padding = int_tuple(op, "padding", padding, rank, minimum=0)
    return {"stride": stride_t, "padding": padding, "dilation": dilation_t,
            "groups": _groups(op, groups),
            "padding_mode": one_of(op, "padding_mode", padding_mode, PADDING_MODES)}


def conv_pads(attrs: dict[str, Any], kernel: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Explicit (pad_lo, pad_hi) of a conv, from canonical pads or from the user's padding."""
    if "pad_lo" in attrs:
        return tuple(attrs["pad_lo"]), tuple(attrs["pad_hi"])
    padding = attrs["padding"]
    if padding == "same":
        total = [d * (k - 1) for d, k in zip(attrs["dilation"], kernel)]
        lo = tuple(t // 2 for t in total)
        return lo, tuple(t - l for t, l in zip(total, lo))
    return tuple(padding), tuple(padding)


def _split_input(op: str, rank: int, x: TensorType, argument: str = "input") -> tuple[bool, int]:
    """(batched, channels) of a channels-first input of spatial rank `rank`."""
    if x.rank not in (rank + 1, rank + 2):
        raise ConvcError(f"{op}: {argument} must be {rank + 1}-D (unbatched) or {rank + 2}-D (batched), "
                         f"got shape {x.shape}")
    return x.rank == rank + 2, x.shape[-rank - 1]


def _check_bias(op: str, types: list[TensorType], channels: int) -> None:
    if len(types) > 2 and types[2].shape != (channels,):
        raise ConvcError(f"{op}: bias must have shape ({channels},) to match the output channels, "
                         f"got {types[2].shape}")


def _check_weight_rank(op: str, rank: int, w: TensorType) -> None:
    if w.rank != rank + 2:
        raise ConvcError(f"{op}: weight must be {rank + 2}-D, got shape {w.shape}")


def _check_padding_mode(op: str, attrs: dict[str, Any], spatial: tuple[int, ...],
                        lo: tuple[int, ...], hi: tuple[int, ...]) -> None:
    mode = attrs.get("padding_mode", "zeros")
    for axis, (size, a, b) in enumerate(zip(spatial, lo, hi)):
        if mode == "reflect" and max(a, b) >= size:
            raise ConvcError(f"{op}: padding_mode='reflect' needs padding < input size on every axis, "
                             f"got padding ({a}, {b}) for size {size} on spatial axis {axis}")
        if mode == "circular" and max(a, b) > size:
            raise ConvcError(f"{op}: padding_mode='circular' needs padding <= input size on every axis "
                             f"(it wraps at most once), got padding ({a}, {b}) for size {size} "
                             f"on spatial axis {axis}")
        if mode == "replicate" and size == 0 and max(a, b) > 0:
            raise ConvcError(f"{op}: padding_mode='replicate' needs a non-empty input on spatial axis {axis}")


def infer_conv(op: str, rank: int, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    names = ("input", "weight", "bias", "residual")
    dtype = same_dtype(op, types, names)
    x, w = types[0], types[1]
    batched, c_in = _split_input(op, rank, x)
    _check_weight_rank(op, rank, w)
    groups = attrs["groups"]
    c_out, kernel = w.shape[0], w.shape[2:]
    if c_in % groups != 0:
        raise ConvcError(f"{op}: groups={groups} must divide in_channels={c_in}")
    if c_out % groups != 0:
        raise ConvcError(f"{op}: groups={groups} must divide out_channels={c_out} (weight.shape[0])")
    if c_in != w.shape[1] * groups:
        raise ConvcError(f"{op}: input has {c_in} channels but weight {w.shape} with groups={groups} "
                         f"expects weight.shape[1] * groups = {w.shape[1] * groups}")
    if c_out == 0 or c_in == 0:
        raise ConvcError(f"{op}: input channels ({c_in}) and output channels ({c_out}, weight.shape[0]) "
                         f"must be positive")
    if 0 in kernel:
        raise ConvcError(f"{op}: kernel size {kernel} (weight.shape[2:]) must be positive")
    _check_bias(op, types, c_out)
    lo, hi = conv_pads(attrs, kernel)
    spatial = x.shape[-rank:]
    if 0 in spatial:
        raise ConvcError(f"{op}: input spatial size {spatial} must be positive; only the batch may be empty")
    _check_padding_mode(op, attrs, spatial, lo, hi)
    out = []
    for axis, (size, k, s, d, a, b) in enumerate(zip(spatial, kernel, attrs["stride"], attrs["dilation"], lo, hi)):
        padded, extent = size + a + b, d * (k - 1) + 1
        if padded < extent:
            raise ConvcError(f"{op}: kernel extent {extent} (kernel_size={k}, dilation={d}) is larger than "
                             f"the padded input size {padded} on spatial axis {axis}")
        out.append((padded - extent) // s + 1)
    shape = ((x.shape[0],) if batched else ()) + (c_out, *out)
    if len(types) > 3 and types[3].shape != shape:
        raise ConvcError(f"{op}: residual must have the output's shape {shape}, got {types[3].shape}")
    return TensorType(shape, dtype)


def normalize_conv_transpose(op: str, rank: int, stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                             groups: Any = 1, dilation: Any = 1) -> dict[str, Any]:
    if isinstance(padding, str):
        raise ConvcError(f"{op}: padding={padding!r} is not supported; transposed convolutions take "
                         f"an int or a tuple of ints")
    return {"stride": int_tuple(op, "stride", stride, rank, minimum=1),
            "padding": int_tuple(op, "padding", padding, rank, minimum=0),
            "output_padding": int_tuple(op, "output_padding", output_padding, rank, minimum=0),
            "dilation": int_tuple(op, "dilation", dilation, rank, minimum=1),
            "groups": _groups(op, groups)}


def conv_transpose_pads(attrs: dict[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Explicit (pad_lo, pad_hi) cropped from the full transposed output: the user's padding on
    both sides, less output_padding on the high side (a negative pad_hi extends the output)."""
    if "pad_lo" in attrs:
        return tuple(attrs["pad_lo"]), tuple(attrs["pad_hi"])
    padding, extra = attrs["padding"], attrs["output_padding"]
    return tuple(padding), tuple(p - q for p, q in zip(padding, extra))


def infer_conv_transpose(op: str, rank: int, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    dtype = same_dtype(op, types, ("input", "weight", "bias"))
    x, w = types[0], types[1]
    batched, c_in = _split_input(op, rank, x)
    _check_weight_rank(op, rank, w)
    groups = attrs["groups"]
    if w.shape[0] % groups != 0:
        raise ConvcError(f"{op}: groups={groups} must divide in_channels={w.shape[0]} (weight.shape[0])")
    if c_in != w.shape[0]:
        raise ConvcError(f"{op}: input has {c_in} channels but weight {w.shape} expects "
                         f"weight.shape[0] = {w.shape[0]}")
    c_out = w.shape[1] * groups
    if c_in == 0 or c_out == 0 or 0 in w.shape[2:]:
        raise ConvcError(f"{op}: channels and kernel sizes must be positive, got input {x.shape} and weight {w.shape}")
    if 0 in x.shape[-rank:]:
        raise ConvcError(f"{op}: input spatial size {x.shape[-rank:]} must be positive; only the batch may be empty")
    _check_bias(op, types, c_out)
    stride, dilation = attrs["stride"], attrs["dilation"]
    if "output_padding" in attrs:
        output_padding = attrs["output_padding"]
        if any(p >= s and p >= d for p, s, d in zip(output_padding, stride, dilation)):
            raise ConvcError(f"{op}: output_padding={output_padding} must be smaller than stride={stride} "
                             f"or dilation={dilation}")
    lo, hi = conv_transpose_pads(attrs)
    out = []
    for axis, (size, k, s, a, b, d) in enumerate(zip(x.shape[-rank:], w.shape[2:], stride, lo, hi, dilation)):
        length = (size - 1) * s + d * (k - 1) + 1 - a - b
        if length < 1:
            raise ConvcError(f"{op}: output size {length} on spatial axis {axis} is not positive "
                             f"(input size {size}, kernel_size={k}, stride={s}, padding={a}, dilation={d})")
        out.append(length)
    shape = ((x.shape[0],) if batched else ()) + (c_out, *out)
    return TensorType(shape, dtype)


def canonical_conv_attrs(attrs: dict[str, Any], types: list[TensorType]) -> dict[str, Any]:
    """Explicit pad_lo / pad_hi in place of a conv's padding; a padding_mode is dropped (zeros)
    where nothing is padded."""
    if "padding" not in attrs:
        return attrs
    pad_lo, pad_hi = conv_pads(attrs, types[1].shape[2:])
    mode = attrs.get("padding_mode", "zeros")
    if not any(pad_lo) and not any(pad_hi):
        mode = "zeros"
    rest = {key: value for key, value in attrs.items() if key not in ("padding", "padding_mode")}
    return {"stride": rest.pop("stride"), "pad_lo": pad_lo, "pad_hi": pad_hi, **rest, "padding_mode": mode}


def canonical_conv_transpose_attrs(attrs: dict[str, Any], types: list[TensorType]) -> dict[str, Any]:
    """Explicit pad_lo / pad_hi in place of a transposed conv's padding and output_padding."""
    if "padding" not in attrs:
        return attrs
    pad_lo, pad_hi = conv_transpose_pads(attrs)
    return {"stride": attrs["stride"], "pad_lo": pad_lo, "pad_hi": pad_hi, "dilation": attrs["dilation"],
            "groups": attrs["groups"]}


def conv_flops(types: list[TensorType], out: TensorType) -> int:
    """Multiply-adds x 2 of a (transposed) conv: every output element takes a weight row."""
    weight = types[1]
    return 2 * out.size * max(1, weight.size // max(1, weight.shape[0]))


def _conv_padding(rank: int) -> Rule:
    explicit = ints(0, rank)
    return lambda value: None if value in ("same", "valid") else explicit(value)


def _conv_schema(rank: int, transposed: bool) -> AttrSchema:
    common = {"stride": ints(1, rank), "dilation": ints(1, rank), "groups": integer(1)}
    if transposed:
        return AttrSchema(common, ({"padding": ints(0, rank), "output_padding": ints(0, rank)},
                                   {"pad_lo": ints(0, rank), "pad_hi": ints(None, rank)}),
                          {**EPILOGUE, "block": integer(0)})
    return AttrSchema(common, ({"padding": _conv_padding(rank)}, {"pad_lo": ints(0, rank), "pad_hi": ints(0, rank)}),
                      {**EPILOGUE, "padding_mode": choice(PADDING_MODES), "block": integer(0)})


for _rank in (1, 2, 3):
    # the channel axis precedes the spatial ones (batched or not); the bias is operand 2
    _facts = dict(min_operands=2, channel_axis=lambda attrs, rank, r=_rank: rank - r - 1, bias_operand=2,
                  flops=conv_flops)
    # a residual (added before the activation) is set only by the residual fusion, with a bias
    register(OpDef(f"conv{_rank}d", ("input", "weight", "bias", "residual"),
                   normalize=lambda r=_rank, **kw: normalize_conv(f"conv{r}d", r, **kw),
                   infer=lambda types, attrs, r=_rank: infer_conv(f"conv{r}d", r, types, attrs),
                   attributes=_conv_schema(_rank, transposed=False),
                   traits=frozenset({"conv", "has_epilogue", "blocked"}),
                   canonicalize=canonical_conv_attrs, **_facts))
    register(OpDef(f"conv_transpose{_rank}d", ("input", "weight", "bias"),
                   normalize=lambda r=_rank, **kw: normalize_conv_transpose(f"conv_transpose{r}d", r, **kw),
                   infer=lambda types, attrs, r=_rank: infer_conv_transpose(f"conv_transpose{r}d", r, types, attrs),
                   attributes=_conv_schema(_rank, transposed=True),
                   traits=frozenset({"conv_transpose", "has_epilogue", "blocked"}),
                   canonicalize=canonical_conv_transpose_attrs, **_facts))


def spatial_rank(op: str) -> int:
    """The spatial rank of a conv or conv_transpose op name (conv2d -> 2)."""
    return int(op[-2])
