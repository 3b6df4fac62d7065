"""Hypothesis strategies for convolution configurations that torch accepts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st


@dataclass
class ConvCase:
    rank: int
    x: np.ndarray
    w: np.ndarray
    bias: np.ndarray | None
    stride: tuple
    padding: object
    dilation: tuple
    groups: int
    padding_mode: str

    @property
    def terms(self) -> int:
        return int(np.prod(self.w.shape[1:]))


@st.composite
def conv_cases(draw, ranks=(1, 2, 3), modes=("zeros",), min_width=1):
    rank = draw(st.sampled_from(ranks))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    groups = draw(st.integers(1, 3))
    cin_g, cout_g = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    max_k = {1: 5, 2: 4, 3: 3}[rank]
    kernel = tuple(draw(st.integers(1, max_k)) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 4 if min_width == 1 else 2)) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    mode = draw(st.sampled_from(modes))
    padding_form = draw(st.sampled_from(["int", "tuple", "valid", "same"]))
    if padding_form == "same" and any(s != 1 for s in stride):
        padding_form = "tuple"
    if padding_form == "int":
        padding = draw(st.integers(0, 3))
        lo = hi = (padding,) * rank
    elif padding_form == "tuple":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(rank))
        lo = hi = padding
    elif padding_form == "valid":
        padding, lo, hi = "valid", (0,) * rank, (0,) * rank
    else:
        padding = "same"
        lo = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel))
        hi = tuple(d * (k - 1) - l for d, k, l in zip(dilation, kernel, lo))
    max_size = {1: 24, 2: 12, 3: 7}[rank]
    sizes = []
    for k, d, a, b in zip(kernel, dilation, lo, hi):
        smallest = max(1, d * (k - 1) + 1 - a - b)
        if mode == "reflect":
            smallest = max(smallest, max(a, b) + 1)
        elif mode == "circular":
            smallest = max(smallest, max(a, b))
        sizes.append(draw(st.integers(smallest, max(smallest, max_size) + 2)))
    if min_width > 1:  # the last axis wide enough for at least min_width outputs
        k, d, s = kernel[-1], dilation[-1], stride[-1]
        sizes[-1] = max(sizes[-1], (min_width - 1) * s + d * (k - 1) + 1 + draw(st.integers(0, 2 * min_width)))
    batched = draw(st.booleans())
    batch = draw(st.integers(1, 2))
    shape = ((batch,) if batched else ()) + (groups * cin_g, *sizes)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.uniform(-1, 1, shape).astype(dtype)
    w = rng.uniform(-1, 1, (groups * cout_g, cin_g, *kernel)).astype(dtype)
    bias = rng.uniform(-1, 1, groups * cout_g).astype(dtype) if draw(st.booleans()) else None
    return ConvCase(rank, x, w, bias, stride, padding, dilation, groups, mode)


@dataclass
class TransposeCase:
    rank: int
    x: np.ndarray
    w: np.ndarray
    bias: np.ndarray | None
    stride: tuple
    padding: tuple
    output_padding: tuple
    dilation: tuple
    groups: int

    @property
    def terms(self) -> int:
        return int(np.prod(self.w.shape[2:])) * self.w.shape[0] // self.groups


@st.composite
def conv_transpose_cases(draw, ranks=(1, 2, 3)):
    rank = draw(st.sampled_from(ranks))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    groups = draw(st.integers(1, 3))
    cin_g, cout_g = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, {1: 5, 2: 3, 3: 2}[rank])) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    sizes = tuple(draw(st.integers(1, {1: 12, 2: 6, 3: 4}[rank])) for _ in range(rank))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    # padding small enough that the output stays non-empty
    padding = []
    for size, k, s, d, q in zip(sizes, kernel, stride, dilation, output_padding):
        full = (size - 1) * s + d * (k - 1) + q + 1
        padding.append(draw(st.integers(0, min(3, (full - 1) // 2))))
    batched = draw(st.booleans())
    shape = ((draw(st.integers(1, 2)),) if batched else ()) + (groups * cin_g, *sizes)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.uniform(-1, 1, shape).astype(dtype)
    w = rng.uniform(-1, 1, (groups * cin_g, cout_g, *kernel)).astype(dtype)
    bias = rng.uniform(-1, 1, groups * cout_g).astype(dtype) if draw(st.booleans()) else None
    return TransposeCase(rank, x, w, bias, stride, tuple(padding), output_padding, dilation, groups)


window = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 2))  # size, stride, rate


@st.composite
def separable_cases(draw, data_formats=("NHWC", "NCHW"), min_cols=1):
    data_format = draw(st.sampled_from(data_formats))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    channels, mult, filters = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 5))
    stride_h, stride_w = draw(st.integers(1, 3)), draw(st.integers(1, 3))  # TF computes unequal strides too
    dilations = [1, 1] if max(stride_h, stride_w) > 1 else [draw(st.integers(1, 2)), draw(st.integers(1, 2))]
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    rows = draw(st.integers(dilations[0] * (kh - 1) + 1, 9))
    cols = draw(st.integers(max(min_cols, dilations[1] * (kw - 1) + 1), max(9, min_cols + 12)))
    batch = draw(st.integers(1, 2))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (batch, rows, cols, channels) if data_format == "NHWC" else (batch, channels, rows, cols)
    strides = [1, stride_h, stride_w, 1] if data_format == "NHWC" else [1, 1, stride_h, stride_w]
    return (rng.standard_normal(shape).astype(dtype), rng.standard_normal((kh, kw, channels, mult)).astype(dtype),
            rng.standard_normal((1, 1, channels * mult, filters)).astype(dtype), strides, padding, data_format,
            dilations)


@st.composite
def pad_cases(draw):
    mode = draw(st.sampled_from(["constant", "circular", "reflect", "replicate"]))
    if mode == "constant":
        rank = draw(st.integers(1, 5))
        pairs = draw(st.integers(0, rank))
    else:
        pairs = draw(st.integers(1, 3))
        rank = pairs + draw(st.integers(1, 2))
    shape = tuple(draw(st.integers(1, 5)) for _ in range(rank))
    amounts = []
    for i in range(pairs):
        size = shape[rank - 1 - i]
        limit = {"reflect": size - 1, "circular": size, "replicate": 4, "constant": 4}[mode]
        lo, hi = draw(st.integers(-size, limit)), draw(st.integers(-size, limit))
        assume(size + min(lo, 0) + min(hi, 0) >= 0)
        if mode == "circular":
            kept = size - max(0, -lo) - max(0, -hi)
            assume(kept > 0 and max(lo, hi) <= kept)
        if mode in ("reflect", "replicate"):
            assume(size + lo + hi > 0)
        amounts += [lo, hi]
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    x = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape).astype(dtype)
    return x, tuple(amounts), mode, draw(st.sampled_from([0.0, -2.5]))
