"""Definitions of the TensorFlow-style ops: extract_patches and separable_conv2d (NHWC by default).

Their 'SAME' / 'VALID' padding is resolved by `tf_same_pads`, the one home of TF's SAME rule.
"""
from __future__ import annotations

from typing import Any

from .args import is_int, one_of
from .attributes import EPILOGUE, activation, choice, ints
from .errors import ConvcError
from .registry import AttrSchema, OpDef, register, same_dtype
from .types import TensorType


def _tf_padding(value: Any) -> str | None:
    return None if value in ("SAME", "VALID") else "must be 'SAME' or 'VALID'"


TF_PADS = ({"padding": _tf_padding}, {"pad_lo": ints(0, 2), "pad_hi": ints(0, 2)})  # TF padding, or canonical


def windowed_size(size: int, kernel: int, stride: int, dilation: int, pad_lo: int, pad_hi: int) -> int:
    """Output length of a window sliding over a padded axis (0 if the window never fits)."""
    return max(0, (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1)


def check_valid_window(op: str, size: int, kernel: int, stride: int, dilation: int, padding: str) -> None:
    """TF's rule: with 'VALID', (size - extent + stride) / stride, truncated toward zero, must not be
    negative (a window a little larger than the input gives an empty output, a larger one an error)."""
    if padding != "VALID":
        return
    extent = dilation * (kernel - 1) + 1
    numerator = size - extent + stride
    if (numerator // stride if numerator >= 0 else -(-numerator // stride)) < 0:
        raise ConvcError(f"{op}: with padding='VALID' the window extent {extent} (size {kernel}, rate {dilation}) "
                         f"is too large for an input of size {size}: the output size would be negative")


def tf_same_pads(size: int, kernel: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    """(pad_lo, pad_hi) of TF padding; SAME puts the odd extra element on the high side."""
    if padding == "VALID":
        return 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def patch_pads(attrs: dict[str, Any], shape: tuple[int, ...]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(pad_lo, pad_hi) over (rows, cols) of extract_patches, canonical or from 'SAME'/'VALID'."""
    if "pad_lo" in attrs:
        return tuple(attrs["pad_lo"]), tuple(attrs["pad_hi"])
    pads = [tf_same_pads(shape[1 + i], attrs["sizes"][i], attrs["strides"][i], attrs["rates"][i], attrs["padding"])
            for i in range(2)]
    return (pads[0][0], pads[1][0]), (pads[0][1], pads[1][1])


def separable_pads(attrs: dict[str, Any], shape: tuple[int, ...],
                   kernel: tuple[int, ...]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(pad_lo, pad_hi) over (rows, cols) of separable_conv2d's depthwise step."""
    if "pad_lo" in attrs:
        return tuple(attrs["pad_lo"]), tuple(attrs["pad_hi"])
    rows, cols = (shape[1], shape[2]) if attrs["data_format"] == "NHWC" else (shape[2], shape[3])
    pads = [tf_same_pads(size, kernel[i], attrs["strides"][i], attrs["dilations"][i], attrs["padding"])
            for i, size in enumerate((rows, cols))]
    return (pads[0][0], pads[1][0]), (pads[0][1], pads[1][1])


def _four(op: str, name: str, value: Any, layout: str = "NHWC") -> tuple[int, int]:
    """A TF [1, r, c, 1] (or [1, 1, r, c] for NCHW) list -> (r, c)."""
    if not isinstance(value, (tuple, list)) or not all(is_int(v) for v in value):
        raise TypeError(f"{op}: {name}={value!r} must be a list of 4 ints")
    if len(value) != 4:
        raise ConvcError(f"{op}: {name}={list(value)} must have 4 elements, got {len(value)}")
    outer = (value[0], value[3]) if layout == "NHWC" else (value[0], value[1])
    inner = (value[1], value[2]) if layout == "NHWC" else (value[2], value[3])
    if outer != (1, 1):
        where = "first and last" if layout == "NHWC" else "first two"
        raise ConvcError(f"{op}: {name}={list(value)} must be 1 in its {where} (batch and depth) elements")
    if any(v < 1 for v in inner):
        raise ConvcError(f"{op}: {name}={list(value)} must be positive")
    return int(inner[0]), int(inner[1])


def _normalize_extract_patches(sizes: Any, strides: Any, rates: Any, padding: Any) -> dict[str, Any]:
    op = "extract_patches"
    return {"sizes": _four(op, "sizes", sizes), "strides": _four(op, "strides", strides),
            "rates": _four(op, "rates", rates), "padding": one_of(op, "padding", padding, ("VALID", "SAME"))}


def _infer_extract_patches(types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    x = types[0]
    if x.rank != 4:
        raise ConvcError(f"extract_patches: images must be 4-D [batch, rows, cols, depth], got shape {x.shape}")
    (kh, kw), (sh, sw), (rh, rw) = attrs["sizes"], attrs["strides"], attrs["rates"]
    if "padding" in attrs:
        for axis in range(2):
            check_valid_window("extract_patches", x.shape[1 + axis], attrs["sizes"][axis], attrs["strides"][axis],
                               attrs["rates"][axis], attrs["padding"])
    lo, hi = patch_pads(attrs, x.shape)
    oh = windowed_size(x.shape[1], kh, sh, rh, lo[0], hi[0])
    ow = windowed_size(x.shape[2], kw, sw, rw, lo[1], hi[1])
    return TensorType((x.shape[0], oh, ow, kh * kw * x.shape[3]), x.dtype)


def _canonical_patches_attrs(attrs: dict[str, Any], types: list[TensorType]) -> dict[str, Any]:
    if "padding" not in attrs:
        return attrs
    pad_lo, pad_hi = patch_pads(attrs, types[0].shape)
    return {**{k: v for k, v in attrs.items() if k != "padding"}, "pad_lo": pad_lo, "pad_hi": pad_hi}


register(OpDef("extract_patches", ("images",), normalize=_normalize_extract_patches,
               infer=_infer_extract_patches,
               attributes=AttrSchema({"sizes": ints(1, 2), "strides": ints(1, 2), "rates": ints(1, 2)}, TF_PADS),
               traits=frozenset({"patches"}), canonicalize=_canonical_patches_attrs))


def _normalize_separable(strides: Any, padding: Any, data_format: str = "NHWC", dilations: Any = None,
                         strided_dilation: bool = False) -> dict[str, Any]:
    """TF's arguments -> attributes. `strided_dilation` (set by the Keras layer only, which computes
    the definition as Keras 3 does) lifts the functional op's ban on strides > 1 with dilations > 1."""
    op = "separable_conv2d"
    data_format = one_of(op, "data_format", data_format, ("NHWC", "NCHW"))
    stride = _four(op, "strides", strides, data_format)
    if dilations is None:
        dilation = (1, 1)
    elif is_int(dilations):
        dilation = (int(dilations),) * 2
    elif isinstance(dilations, (tuple, list)) and len(dilations) == 2 and all(is_int(d) for d in dilations):
        dilation = (int(dilations[0]), int(dilations[1]))
    else:
        raise ConvcError(f"{op}: dilations={dilations!r} must be None, an int or a list of 2 ints")
    if any(d < 1 for d in dilation):
        raise ConvcError(f"{op}: dilations={list(dilation)} must be positive")
    if max(stride) > 1 and max(dilation) > 1 and not strided_dilation:
        raise ConvcError(f"{op}: strides={list(stride)} > 1 cannot be combined with dilations={list(dilation)} > 1")
    return {"strides": stride, "padding": one_of(op, "padding", padding, ("VALID", "SAME")),
            "data_format": data_format, "dilations": dilation}


def _infer_separable(types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    op = "separable_conv2d"
    dtype = same_dtype(op, types, ("input", "depthwise_filter", "pointwise_filter", "depthwise_bias", "bias"))
    x, dw, pw = types[:3]
    if x.rank != 4:
        raise ConvcError(f"{op}: input must be 4-D, got shape {x.shape}")
    nhwc = attrs["data_format"] == "NHWC"
    n, h, w, c = x.shape if nhwc else (x.shape[0], x.shape[2], x.shape[3], x.shape[1])
    if dw.rank != 4 or dw.shape[2] != c:
        raise ConvcError(f"{op}: depthwise_filter must be 4-D [kh, kw, {c}, multiplier] for {c} input channels, "
                         f"got shape {dw.shape}")
    kh, kw, _, mult = dw.shape
    if pw.rank != 4 or pw.shape[:3] != (1, 1, c * mult):
        raise ConvcError(f"{op}: pointwise_filter must be 4-D [1, 1, {c * mult}, out_channels], got shape {pw.shape}")
    if 0 in (kh, kw, mult, pw.shape[3]):
        raise ConvcError(f"{op}: filter sizes must be positive, got {dw.shape} and {pw.shape}")
    (sh, sw), (rh, rw) = attrs["strides"], attrs["dilations"]
    if "padding" in attrs:
        for size, k, s_, d in zip((h, w), (kh, kw), attrs["strides"], attrs["dilations"]):
            check_valid_window(op, size, k, s_, d, attrs["padding"])
    lo, hi = separable_pads(attrs, x.shape, (kh, kw))
    oh = windowed_size(h, kh, sh, rh, lo[0], hi[0])
    ow = windowed_size(w, kw, sw, rw, lo[1], hi[1])
    f = pw.shape[3]
    if len(types) not in (3, 5, 6):
        raise ConvcError(f"{op}: takes 3 operands, or 5 with depthwise_bias and bias (6 with a residual), "
                         f"got {len(types)}")
    if len(types) >= 5 and (types[3].shape != (c * mult,) or types[4].shape != (f,)):
        raise ConvcError(f"{op}: depthwise_bias must have shape ({c * mult},) and bias ({f},), got "
                         f"{types[3].shape} and {types[4].shape}")
    out = (n, oh, ow, f) if nhwc else (n, f, oh, ow)
    if len(types) == 6 and types[5].shape != out:
        raise ConvcError(f"{op}: the residual must have the output's shape {out}, got {types[5].shape}")
    return TensorType(out, dtype)


def _canonical_separable_attrs(attrs: dict[str, Any], types: list[TensorType]) -> dict[str, Any]:
    if "padding" not in attrs:
        return attrs
    pad_lo, pad_hi = separable_pads(attrs, types[0].shape, types[1].shape[:2])
    return {**{k: v for k, v in attrs.items() if k != "padding"}, "pad_lo": pad_lo, "pad_hi": pad_hi}


def _separable_flops(types: list[TensorType], out: TensorType) -> int:
    """Multiply-adds x 2: the depthwise window, then the pointwise row, per output position."""
    kh, kw, c, mult = types[1].shape
    filters = types[2].shape[3]
    return 2 * (out.size // filters) * c * mult * (kh * kw + filters)


# depthwise_bias and bias, a residual (added before the activation), and the attributes
# depthwise_activation and activation are set only by the depthwise + pointwise fusion pass; the
# public op takes the three tensors of TF's.
register(OpDef("separable_conv2d", ("input", "depthwise_filter", "pointwise_filter", "depthwise_bias", "bias",
                                    "residual"),
               normalize=_normalize_separable, infer=_infer_separable, min_operands=3, flops=_separable_flops,
               attributes=AttrSchema({"strides": ints(1, 2), "data_format": choice(("NHWC", "NCHW")),
                                      "dilations": ints(1, 2)}, TF_PADS,
                                     {**EPILOGUE, "depthwise_activation": activation}),
               traits=frozenset({"separable", "has_epilogue", "blocked"}), canonicalize=_canonical_separable_attrs,
               channel_axis=lambda attrs, rank: rank - 1 if attrs["data_format"] == "NHWC" else 1,
               bias_operand=4, bias_fill=lambda types: [types[2].shape[2]]))  # a zero depthwise_bias
