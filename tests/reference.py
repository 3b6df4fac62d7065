"""Independent NumPy reference implementations, written from the formulas of SEMANTICS.md.

This is the test oracle: plain loops over kernel taps and einsum, float64 accumulation, no code
shared with convc's kernels or shape rules.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

NP_PAD_MODE = {"zeros": "constant", "constant": "constant", "circular": "wrap", "reflect": "reflect",
               "replicate": "edge"}


def _tuple(value, rank):
    return tuple(value) * (rank if len(tuple(value)) == 1 else 1) if isinstance(value, (tuple, list)) else (value,) * rank


def conv_nd(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """torch.nn.functional.convNd (with nn.ConvNd's padding_mode), any rank, float64 math."""
    rank = w.ndim - 2
    unbatched = x.ndim == rank + 1
    if unbatched:
        x = x[None]
    stride, dilation = _tuple(stride, rank), _tuple(dilation, rank)
    kernel = w.shape[2:]
    if padding == "valid":
        lo = hi = (0,) * rank
    elif padding == "same":
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        lo = tuple(t // 2 for t in total)
        hi = tuple(t - l for t, l in zip(total, lo))
    else:
        lo = hi = _tuple(padding, rank)
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + list(zip(lo, hi)), mode=NP_PAD_MODE[padding_mode])
    n, c_in = x.shape[:2]
    c_out = w.shape[0]
    out_sizes = [(xp.shape[2 + i] - d * (k - 1) - 1) // s + 1
                 for i, (k, s, d) in enumerate(zip(kernel, stride, dilation))]
    out = np.zeros((n, c_out, *out_sizes))
    cin_g, cout_g = c_in // groups, c_out // groups
    w64 = w.astype(np.float64)
    for g in range(groups):
        xg = xp[:, g * cin_g:(g + 1) * cin_g]
        wg = w64[g * cout_g:(g + 1) * cout_g]
        for taps in itertools.product(*[range(k) for k in kernel]):
            window = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                           for t, d, s, o in zip(taps, dilation, stride, out_sizes))
            patch = xg[(slice(None), slice(None)) + window]
            out[:, g * cout_g:(g + 1) * cout_g] += np.einsum("nc...,oc->no...", patch, wg[(slice(None), slice(None)) + taps])
    if bias is not None:
        out += bias.astype(np.float64).reshape((1, c_out) + (1,) * rank)
    out = out.astype(x.dtype)
    return out[0] if unbatched else out


BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
          "maximum": np.maximum, "minimum": np.minimum}


def relu(x):
    return np.where(x < 0, 0, x).astype(x.dtype)


def relu6(x):
    return np.where(x > 6, 6, relu(x)).astype(x.dtype)


def sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(x.dtype)


def tanh(x):
    return np.tanh(x)


UNARY = {"relu": relu, "relu6": relu6, "sigmoid": sigmoid, "tanh": tanh}


def assert_close(actual, expected, terms=1):
    """Equal shape and dtype, and values within the rounding of a `terms`-long float sum."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    eps = float(np.finfo(actual.dtype).eps)
    scale = 16 * eps * max(1.0, float(np.sqrt(terms)))
    np.testing.assert_allclose(actual, expected, rtol=scale, atol=scale * max(1.0, np.sqrt(terms)))


def conv_transpose_nd(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """torch conv_transposeNd by its definition: every input element scatters x * w into
    out[i*stride - padding + k*dilation] (kept where that lies inside the output)."""
    rank = w.ndim - 2
    unbatched = x.ndim == rank + 1
    if unbatched:
        x = x[None]
    stride, padding = _tuple(stride, rank), _tuple(padding, rank)
    output_padding, dilation = _tuple(output_padding, rank), _tuple(dilation, rank)
    n, c_in = x.shape[:2]
    cin_g, cout_g = c_in // groups, w.shape[1]
    kernel = w.shape[2:]
    out_sizes = [(l - 1) * s - 2 * p + d * (k - 1) + q + 1 for l, s, p, d, k, q in
                 zip(x.shape[2:], stride, padding, dilation, kernel, output_padding)]
    full = [(l - 1) * s + d * (k - 1) + 1 + q for l, s, d, k, q in zip(x.shape[2:], stride, dilation, kernel,
                                                                         output_padding)]
    out = np.zeros((n, cout_g * groups, *[f + p for f, p in zip(full, padding)]))
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    for g in range(groups):
        xg = x64[:, g * cin_g:(g + 1) * cin_g]
        wg = w64[g * cin_g:(g + 1) * cin_g]
        for taps in itertools.product(*[range(k) for k in kernel]):
            window = tuple(slice(t * d, t * d + (l - 1) * s + 1, s)
                           for t, d, s, l in zip(taps, dilation, stride, x.shape[2:]))
            contribution = np.einsum("nc...,co->no...", xg, wg[(slice(None), slice(None)) + taps])
            out[(slice(None), slice(g * cout_g, (g + 1) * cout_g)) + window] += contribution
    crop = tuple(slice(p, p + size) for p, size in zip(padding, out_sizes))
    out = out[(slice(None), slice(None)) + crop]
    if bias is not None:
        out = out + bias.astype(np.float64).reshape((1, -1) + (1,) * rank)
    out = out.astype(x.dtype)
    return out[0] if unbatched else out


def pad(x, amounts, mode="constant", value=0.0):
    """torch F.pad: (lo, hi) pairs from the last axis; negative amounts crop first (circular wraps
    around what the crop leaves)."""
    pairs = [(0, 0)] * x.ndim
    for i in range(len(amounts) // 2):
        pairs[x.ndim - 1 - i] = (amounts[2 * i], amounts[2 * i + 1])
    crop = tuple(slice(max(0, -lo), x.shape[a] - max(0, -hi)) for a, (lo, hi) in enumerate(pairs))
    widths = [(max(0, lo), max(0, hi)) for lo, hi in pairs]
    if mode == "constant":
        return np.pad(x[crop], widths, mode="constant", constant_values=value).astype(x.dtype)
    if mode == "circular":
        return np.pad(x[crop], widths, mode="wrap")
    # reflect and replicate mirror around the original edges; a crop never meets a pad on one side
    padded = np.pad(x, widths, mode=NP_PAD_MODE[mode])
    return padded[tuple(slice(max(0, -lo), padded.shape[a] - max(0, -hi)) for a, (lo, hi) in enumerate(pairs))]


def adaptive_avg_pool1d(x, output_size):
    """Bin i covers [floor(i*L/O), ceil((i+1)*L/O)) of the last axis."""
    length = x.shape[-1]
    out = np.empty(x.shape[:-1] + (output_size,), x.dtype)
    for i in range(output_size):
        start, end = (i * length) // output_size, -((-(i + 1) * length) // output_size)
        out[..., i] = x[..., start:end].astype(np.float64).mean(axis=-1)
    return out


def _tf_pads(size, kernel, stride, rate, padding):
    extent = rate * (kernel - 1) + 1
    if padding == "VALID":
        return max(0, -(-(size - extent + 1) // stride)), 0
    out = -(-size // stride)
    return out, max((out - 1) * stride + extent - size, 0) // 2


def extract_patches(images, sizes, strides, rates, padding):
    """tf.image.extract_patches from its formula, with plain loops."""
    batch, rows, cols, depth = images.shape
    kh, kw, sh, sw, rh, rw = sizes[1], sizes[2], strides[1], strides[2], rates[1], rates[2]
    out_h, top = _tf_pads(rows, kh, sh, rh, padding)
    out_w, left = _tf_pads(cols, kw, sw, rw, padding)
    out = np.zeros((batch, out_h, out_w, kh * kw * depth), images.dtype)
    for i in range(out_h):
        for j in range(out_w):
            for a in range(kh):
                for c in range(kw):
                    y, x = i * sh + a * rh - top, j * sw + c * rw - left
                    if 0 <= y < rows and 0 <= x < cols:
                        out[:, i, j, (a * kw + c) * depth:(a * kw + c + 1) * depth] = images[:, y, x, :]
    return out


def separable_conv2d(x, depthwise, pointwise, strides, padding, data_format="NHWC", dilations=None):
    """tf.nn.separable_conv2d: a depthwise conv (channel c -> outputs c*M + m) then a 1x1 conv."""
    if data_format == "NCHW":
        x = x.transpose(0, 2, 3, 1)
        strides = [1, strides[2], strides[3], 1]
    rh, rw = dilations or (1, 1)
    kh, kw, channels, mult = depthwise.shape
    batch, rows, cols, _ = x.shape
    out_h, top = _tf_pads(rows, kh, strides[1], rh, padding)
    out_w, left = _tf_pads(cols, kw, strides[2], rw, padding)
    middle = np.zeros((batch, out_h, out_w, channels, mult))
    x64 = x.astype(np.float64)
    for i in range(out_h):
        for j in range(out_w):
            for a in range(kh):
                for c in range(kw):
                    y, z = i * strides[1] + a * rh - top, j * strides[2] + c * rw - left
                    if 0 <= y < rows and 0 <= z < cols:
                        middle[:, i, j] += x64[:, y, z, :, None] * depthwise[a, c].astype(np.float64)
    out = np.einsum("nhwk,kf->nhwf", middle.reshape(batch, out_h, out_w, channels * mult),
                    pointwise[0, 0].astype(np.float64)).astype(x.dtype)
    return out.transpose(0, 3, 1, 2) if data_format == "NCHW" else out


# --- normalization and reductions (issue 8, group B) ---

def _affine(y, weight, bias, shape):
    if weight is not None:
        y = y * weight.astype(np.float64).reshape(shape)
    if bias is not None:
        y = y + bias.astype(np.float64).reshape(shape)
    return y


def _standardize(x64, axes, eps):
    """(x - mean) / sqrt(biased variance + eps) over `axes`."""
    mean = x64.mean(axis=axes, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x64 - mean) / np.sqrt(var + eps)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, eps=1e-5):
    """(x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c] along axis 1, float64 math."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x.astype(np.float64) - running_mean.astype(np.float64).reshape(shape)) / np.sqrt(
        running_var.astype(np.float64).reshape(shape) + eps)
    return _affine(y, weight, bias, shape).astype(x.dtype)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Standardized over the last len(normalized_shape) axes, then weight * y + bias."""
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    y = _standardize(x.astype(np.float64), axes, eps) if x.size else x.astype(np.float64)
    return _affine(y, weight, bias, tuple(normalized_shape)).astype(x.dtype)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Standardized over each group of C / num_groups channels (and every spatial position)."""
    n, c = x.shape[:2]
    y = x.astype(np.float64)
    if x.size:
        y = _standardize(y.reshape(n, num_groups, -1), (2,), eps).reshape(x.shape)
    return _affine(y, weight, bias, (1, c) + (1,) * (x.ndim - 2)).astype(x.dtype)


def mean(x, dim, keepdim=False):
    """torch.mean: an int or a tuple of axes (negatives from the end); () or None: every axis."""
    if x.ndim == 0:
        return x.copy()
    axes = tuple(range(x.ndim)) if dim is None or dim == () else dim
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.mean(x.astype(np.float64), axis=axes, keepdims=keepdim)).astype(x.dtype)


# --- linear and the layout ops (issue 8, group D) ---

def linear(x, weight, bias=None):
    """x @ weight.T + bias over the last axis, float64 math (bias: one value per output feature)."""
    out = np.einsum("...k,nk->...n", x.astype(np.float64), weight.astype(np.float64))
    if bias is not None:
        out = out + bias.astype(np.float64).reshape(-1)
    return out.astype(x.dtype)


def torch_slice(x, dim, start, end, step=1):
    """aten.slice: None is the axis' start or end; a negative bound counts from the end; both are
    then clamped to [0, size] and an end before the start gives nothing (Python's slicing does the
    same for a positive step)."""
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, end, step)
    return x[tuple(index)]


def cat(tensors, dim=0):
    """torch.cat: 1-D empty tensors are skipped where other tensors are joined."""
    kept = [t for t in tensors if t.shape != (0,)]
    return np.concatenate(kept, axis=dim) if kept else tensors[0].copy()


def split(x, split_size_or_sections, dim=0):
    """torch.split: pieces of an int size (the last smaller), or the listed sizes."""
    size = x.shape[dim]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        bounds = list(range(step, size, step)) if size else []
    elif not split_size_or_sections:
        return ()
    else:
        bounds = list(np.cumsum(split_size_or_sections)[:-1])
    return tuple(np.split(x, bounds, axis=dim))


# --- elementwise math and activations (issue 8, group A); float64 math, rounded once ---

def _f64(x):
    return np.asarray(x).astype(np.float64)


_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def gelu(x, approximate="none"):
    """torch.nn.functional.gelu: x * Phi(x), Phi(x) = erfc(-x / sqrt(2)) / 2 (the same value as
    (1 + erf(x / sqrt(2))) / 2, without its cancellation for negative x); or the tanh form."""
    v = _f64(x)
    if approximate == "tanh":
        with np.errstate(invalid="ignore"):
            return (0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))).astype(x.dtype)
    with np.errstate(invalid="ignore"):
        return (v * 0.5 * _erfc(-v / math.sqrt(2))).astype(x.dtype)


def silu(x):
    v = _f64(x)
    with np.errstate(over="ignore", invalid="ignore"):
        return (v / (1 + np.exp(-v))).astype(x.dtype)


def hardsigmoid(x):
    return (np.minimum(np.maximum(_f64(x) + 3, 0), 6) / 6).astype(x.dtype)


def hardswish(x):
    v = _f64(x)
    with np.errstate(invalid="ignore"):
        return (v * np.minimum(np.maximum(v + 3, 0), 6) / 6).astype(x.dtype)


def leaky_relu(x, negative_slope=0.01):
    v = _f64(x)
    with np.errstate(invalid="ignore"):
        return np.where(v > 0, v, v * negative_slope).astype(x.dtype)


def clamp(x, min=None, max=None):
    """torch.clamp: NaN stays NaN, a NaN bound makes everything NaN, min > max gives max."""
    v = _f64(x)
    if min is not None:
        v = np.where(v < min, min, v) if not math.isnan(min) else np.full_like(v, np.nan)
    if max is not None:
        v = np.where(v > max, max, v) if not math.isnan(max) else np.full_like(v, np.nan)
    return v.astype(x.dtype)


def hardtanh(x, min_val=-1.0, max_val=1.0):
    return clamp(x, min_val, max_val)


def power(x, exponent):
    """torch.pow of an array by a number or an array (NumPy's float64 power, rounded once)."""
    with np.errstate(all="ignore"):
        return np.power(_f64(x), _f64(exponent)).astype(x.dtype if isinstance(x, np.ndarray) else exponent.dtype)


def _unary_f64(fn):
    def apply(x):
        with np.errstate(all="ignore"):
            return fn(_f64(x)).astype(x.dtype)
    return apply


MATH = {"exp": _unary_f64(np.exp), "sin": _unary_f64(np.sin), "cos": _unary_f64(np.cos),
        "sqrt": _unary_f64(np.sqrt), "rsqrt": _unary_f64(lambda v: 1 / np.sqrt(v)),
        "reciprocal": _unary_f64(lambda v: 1 / v), "neg": _unary_f64(np.negative), "abs": _unary_f64(np.abs)}


# --- pooling (group C) ------------------------------------------------------------------------


def pool_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """Outputs per axis: floor_or_ceil((L + 2p - d(k-1) - 1) / s) + 1, less a ceil_mode window
    that would start in the right padding."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = -(-span // stride) + 1 if ceil_mode else span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _windows(x, kernel, stride, padding, dilation, ceil_mode, fill):
    """(x with N, padded by `fill` on every side far enough for every window, output sizes,
    unbatched); the window of output o along an axis starts at o*s in padded coordinates."""
    rank = len(kernel)
    unbatched = x.ndim == rank + 1
    x = x[None] if unbatched else x
    outs = [pool_output_size(n, k, s, p, d, ceil_mode)
            for n, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation)]
    reach = [max(n + 2 * p, (o - 1) * s + d * (k - 1) + 1)
             for n, o, k, s, p, d in zip(x.shape[2:], outs, kernel, stride, padding, dilation)]
    padded = np.full(x.shape[:2] + tuple(reach), fill, np.float64)
    padded[(..., *(slice(p, p + n) for p, n in zip(padding, x.shape[2:])))] = x
    return padded, outs, unbatched


def _window_slices(index, kernel, stride, dilation):
    return tuple(slice(o * s, o * s + d * (k - 1) + 1, d) for o, k, s, d in zip(index, kernel, stride, dilation))


def max_pool(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    """torch max_poolNd by its definition: the max of each window, the padding read as -inf."""
    rank = len(kernel)
    stride, padding, dilation = (_tuple(v, rank) for v in (stride or kernel, padding, dilation))
    padded, outs, unbatched = _windows(x, kernel, stride, padding, dilation, ceil_mode, -np.inf)
    out = np.empty(padded.shape[:2] + tuple(outs), np.float64)
    for index in np.ndindex(*outs):
        out[(..., *index)] = padded[(..., *_window_slices(index, kernel, stride, dilation))].max(
            axis=tuple(range(2, 2 + rank)))
    return (out[0] if unbatched else out).astype(x.dtype)


def avg_pool(x, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """torch avg_poolNd by its definition: each window's sum over the number of its elements
    inside the padded input (count_include_pad) or inside the input."""
    rank = len(kernel)
    stride, padding = (_tuple(v, rank) for v in (stride or kernel, padding))
    ones = (1,) * rank
    padded, outs, unbatched = _windows(x, kernel, stride, padding, ones, ceil_mode, 0.0)
    inside = np.zeros(padded.shape[2:])
    inside[tuple(slice(p, p + n) for p, n in zip(padding, x.shape[-rank:]))] = 1
    in_padded = np.zeros(padded.shape[2:])
    in_padded[tuple(slice(0, n + 2 * p) for p, n in zip(padding, x.shape[-rank:]))] = 1
    counted = in_padded if count_include_pad else inside
    out = np.empty(padded.shape[:2] + tuple(outs), np.float64)
    for index in np.ndindex(*outs):
        window = _window_slices(index, kernel, stride, ones)
        out[(..., *index)] = padded[(..., *window)].sum(axis=tuple(range(2, 2 + rank))) / counted[window].sum()
    return (out[0] if unbatched else out).astype(x.dtype)


def adaptive_avg_pool2d(x, output_size):
    """Bin (i, j) averages rows [floor(i*H/OH), ceil((i+1)*H/OH)) and likewise the columns; a None
    size keeps the input's."""
    sizes = (output_size, output_size) if isinstance(output_size, int) else output_size
    (height, width) = x.shape[-2:]
    out_h, out_w = (n if o is None else o for n, o in zip((height, width), sizes))
    out = np.empty(x.shape[:-2] + (out_h, out_w), np.float64)
    for i in range(out_h):
        rows = slice((i * height) // out_h, -((-(i + 1) * height) // out_h))
        for j in range(out_w):
            cols = slice((j * width) // out_w, -((-(j + 1) * width) // out_w))
            out[..., i, j] = x[..., rows, cols].astype(np.float64).mean(axis=(-2, -1))
    return out.astype(x.dtype)
