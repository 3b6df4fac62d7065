"""Independent NumPy reference implementations, written from the formulas of SEMANTICS.md.

This is the test oracle: plain loops over kernel taps and einsum, float64 accumulation, no code
shared with convc's kernels or shape rules.
"""
from __future__ import annotations

import itertools

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
