"""The ONNX-to-convc table of convc.from_onnx: OPS maps each ONNX op type to convc ops.

A key is an op type of the default ONNX domain ("Conv"); its value is a small function of a Node:
the node's inputs (`n.tensor(i)`, an operand for a convc op; `n.const(i)`, a value the import needs
as a NumPy array, such as Reshape's shape or Pad's pads), its attributes (`n.attr("strides",
default)`; without a default the attribute is required) and whether its optional outputs are read.
The function returns what convc.ops builds (a Tensor, or a tuple for ops with
several outputs), or a NumPy array for a value that static shapes determine (Shape's), and raises
Unsupported(reason) for what it cannot map. Adding an op is adding one entry.

Nodes whose inputs are all known at import time never reach the table: the importer folds them
with onnx's reference implementation (shape arithmetic, Constant, ops on initializers). ONNX's
NCHW ops follow the same conventions as torch's, so most entries translate attributes only:
ONNX's pads (all begins, then all ends) become torch's pad list or a symmetric padding, auto_pad is
resolved on the static shapes, and padding that torch's ops cannot express (asymmetric, or larger
than half a pooling window) becomes an explicit pad, which the compiler folds into the conv.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from . import ops
from .torch_aten import Unsupported
from .tracing import Tensor

_REQUIRED = object()


class MissingAttribute(Unsupported):
    """A node lacks an attribute that its op requires."""


class Node:
    """One ONNX node to map: `op_type`, `name`, `opset` (of the default domain), `inputs` and
    `outputs` (value names; "" is an absent optional input or output), its attributes by name, and
    the importer's values (`values`: known arrays and traced tensors by name; `used`: whether a value
    is read later)."""

    def __init__(self, op_type: str, name: str, opset: int, inputs: Sequence[str], outputs: Sequence[str],
                 attrs: dict[str, Any], values: Any, used: Callable[[str], bool]) -> None:
        self.op_type, self.name, self.opset = op_type, name, opset
        self.inputs, self.outputs, self.attrs = list(inputs), list(outputs), attrs
        self.values, self._used = values, used

    def has(self, index: int) -> bool:
        """Whether optional input `index` is given."""
        return index < len(self.inputs) and self.inputs[index] != ""

    def tensor(self, index: int) -> Tensor:
        """Input `index` as an operand of a convc op (a constant becomes a graph constant named after it)."""
        if not self.has(index):
            raise Unsupported(f"input {index} is required")
        return self.values.tensor(self.inputs[index])

    def const(self, index: int) -> np.ndarray:
        """Input `index`, which the import needs as a value (a constant or computed from static shapes)."""
        if not self.has(index):
            raise Unsupported(f"input {index} is required")
        value = self.values.constant(self.inputs[index])
        if value is None:
            raise Unsupported(f"input {index} ({self.inputs[index]!r}) is computed at run time; convc needs its "
                              f"value when importing (an initializer, a Constant, or arithmetic on static shapes)")
        return value

    def ints(self, index: int) -> list[int]:
        return [int(v) for v in self.const(index).reshape(-1)]

    def attr(self, name: str, default: Any = _REQUIRED) -> Any:
        if name in self.attrs:
            value = self.attrs[name]
            return value.decode() if isinstance(value, bytes) else value
        if default is _REQUIRED:
            raise MissingAttribute(f"required attribute {name!r} is missing")
        return default

    def used(self, index: int) -> bool:
        """Whether output `index` exists and something reads it."""
        return index < len(self.outputs) and self.outputs[index] != "" and self._used(self.outputs[index])

    def only_first_output(self, what: str) -> None:
        for index in range(1, len(self.outputs)):
            if self.used(index):
                raise Unsupported(f"output {index} ({what}) is used; convc computes only output 0")


def _float(value: Any) -> float:
    return float(np.asarray(value).reshape(()))


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise Unsupported(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def _torch_pad(lo: Sequence[int], hi: Sequence[int]) -> list[int]:
    """torch's pad list (last axis first) for per-axis pads, trimmed to the last padded axis."""
    padded = [i for i in range(len(lo)) if lo[i] or hi[i]]
    pad: list[int] = []
    for i in range(len(lo) - 1, (padded[0] if padded else len(lo)) - 1, -1):
        pad += [lo[i], hi[i]]
    return pad


# convolutions and pooling: windows over the spatial axes of (N, C, *spatial) -------------------

def _spatial(n: Node, name: str, rank: int, default: int) -> tuple[int, ...]:
    value = n.attr(name, None)
    if not value:
        return (default,) * rank
    if len(value) != rank:
        raise Unsupported(f"{name}={list(value)} must have {rank} values (one per spatial axis)")
    return tuple(int(v) for v in value)


def _window_pads(n: Node, sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                 dilations: Sequence[int]) -> tuple[list[int], list[int]]:
    """The (begins, ends) padding of each spatial axis, with auto_pad resolved on the static shapes."""
    rank = len(sizes)
    auto_pad = n.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        lo, hi = [], []
        for size, k, s, d in zip(sizes, kernel, strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            lo.append(small if auto_pad == "SAME_UPPER" else total - small)
            hi.append(total - lo[-1])
        return lo, hi
    if auto_pad == "VALID":
        return [0] * rank, [0] * rank
    if auto_pad != "NOTSET":
        raise Unsupported(f"auto_pad={auto_pad!r} (expected NOTSET, SAME_UPPER, SAME_LOWER or VALID)")
    pads = [int(p) for p in n.attr("pads", None) or [0] * (2 * rank)]
    if len(pads) != 2 * rank:
        raise Unsupported(f"pads={pads} must have {2 * rank} values (begins, then ends)")
    return pads[:rank], pads[rank:]


def _rank(x: Tensor, ranks: Sequence[int], what: str) -> int:
    rank = x.ndim - 2
    if rank not in ranks:
        raise Unsupported(f"an input of rank {x.ndim} ({what} over {', '.join(map(str, ranks))} spatial axes "
                          f"of (N, C, *spatial))")
    return rank


_CONV = {1: ops.conv1d, 2: ops.conv2d, 3: ops.conv3d}
_CONV_TRANSPOSE = {1: ops.conv_transpose1d, 2: ops.conv_transpose2d, 3: ops.conv_transpose3d}


def _conv(n: Node) -> Tensor:
    x, w = n.tensor(0), n.tensor(1)
    rank = _rank(x, (1, 2, 3), "convc convolves")
    kernel = w.shape[2:]
    strides, dilations = _spatial(n, "strides", rank, 1), _spatial(n, "dilations", rank, 1)
    lo, hi = _window_pads(n, x.shape[2:], kernel, strides, dilations)
    if lo != hi:  # asymmetric: an explicit zero pad, folded into the conv by the compiler
        x, lo = ops.pad(x, _torch_pad([0, 0] + lo, [0, 0] + hi)), [0] * rank
    bias = n.tensor(2) if n.has(2) else None
    return _CONV[rank](x, w, bias, strides, tuple(lo), dilations, n.attr("group", 1))


def _conv_transpose(n: Node) -> Tensor:
    """ONNX's output covers [begin, full + output_padding - end) of the full transposed conv (full =
    (L-1)*s + (k-1)*d + 1); torch's with padding p and output_padding q covers [p, full + q - p). The
    entry picks p = max(min(begin, end), 0) and q, and slices off what remains."""
    x, w = n.tensor(0), n.tensor(1)
    rank = _rank(x, (1, 2, 3), "convc convolves")
    kernel = w.shape[2:]
    strides, dilations = _spatial(n, "strides", rank, 1), _spatial(n, "dilations", rank, 1)
    extra = _spatial(n, "output_padding", rank, 0)
    full = [(size - 1) * s + (k - 1) * d + 1 for size, s, k, d in zip(x.shape[2:], strides, kernel, dilations)]
    auto_pad = n.attr("auto_pad", "NOTSET")
    wanted = n.attr("output_shape", None)
    if wanted or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        sizes = [int(v) for v in wanted][-rank:] if wanted else [size * s for size, s in zip(x.shape[2:], strides)]
        totals = [f + e - size for f, e, size in zip(full, extra, sizes)]
        lo = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals]
        hi = [t - b for t, b in zip(totals, lo)]
    else:
        lo, hi = _window_pads(n, x.shape[2:], kernel, strides, dilations)
    if min(lo) < 0:
        raise Unsupported(f"negative begin padding {lo}: an output that starts before the full transposed "
                          f"convolution")
    # a negative end extends the output past the full result, as output_padding does
    padding = [max(min(b, e), 0) for b, e in zip(lo, hi)]
    out_pad = [max(o - e + p, 0) for o, e, p in zip(extra, hi, padding)]
    bias = n.tensor(2) if n.has(2) else None
    y = _CONV_TRANSPOSE[rank](x, w, bias, strides, tuple(padding), tuple(out_pad), n.attr("group", 1), dilations)
    for axis in range(rank):
        start, length = lo[axis] - padding[axis], full[axis] + extra[axis] - lo[axis] - hi[axis]
        if start or length != y.shape[axis + 2]:
            y = ops.slice(y, axis + 2, start, start + length)
    return y


def _pool(n: Node) -> Tensor:
    x = n.tensor(0)
    rank = _rank(x, (1, 2), "convc pools")
    kernel = tuple(int(k) for k in n.attr("kernel_shape"))
    if len(kernel) != rank:
        raise Unsupported(f"kernel_shape={list(kernel)} must have {rank} values (one per spatial axis)")
    strides, dilations = _spatial(n, "strides", rank, 1), _spatial(n, "dilations", rank, 1)
    lo, hi = _window_pads(n, x.shape[2:], kernel, strides, dilations)
    ceil_mode = bool(n.attr("ceil_mode", 0))
    is_max = n.op_type == "MaxPool"
    explicit = lo != hi or any(p > k // 2 for p, k in zip(lo, kernel))
    if is_max:
        n.only_first_output("Indices")
        if explicit:
            x, lo = ops.pad(x, _torch_pad([0, 0] + lo, [0, 0] + hi), "constant", -math.inf), [0] * rank
        pool = ops.max_pool1d if rank == 1 else ops.max_pool2d
        return pool(x, kernel, strides, tuple(lo), dilations, ceil_mode)
    if any(d != 1 for d in dilations):
        raise Unsupported(f"dilations={list(dilations)} (convc's average pools have no dilation)")
    include_pad = bool(n.attr("count_include_pad", 0))
    pool = ops.avg_pool1d if rank == 1 else ops.avg_pool2d
    if not explicit:
        return pool(x, kernel, strides, tuple(lo), ceil_mode, include_pad)
    pad = _torch_pad([0, 0] + lo, [0, 0] + hi)
    means = pool(ops.pad(x, pad), kernel, strides, 0, ceil_mode, True)
    if include_pad:
        return means
    # each window's mean over the zero-padded input, divided by the share of it that is real input
    # (a constant, folded by the compiler)
    ones = ops.pad(np.ones((1, 1) + x.shape[2:], x.dtype), pad)
    return ops.div(means, pool(ones, kernel, strides, 0, ceil_mode, True))


def _global_average_pool(n: Node) -> Tensor:
    x = n.tensor(0)
    if x.ndim == 3:
        return ops.adaptive_avg_pool1d(x, 1)
    if x.ndim == 4:
        return ops.adaptive_avg_pool2d(x, 1)
    return ops.mean(x, tuple(range(2, x.ndim)), keepdim=True)


def _pad(n: Node) -> Tensor:
    x = n.tensor(0)
    pads = n.ints(1) if n.has(1) else [int(p) for p in n.attr("pads")]
    value = _float(n.const(2)) if n.has(2) else float(n.attr("value", 0.0))
    axes = [_axis(a, x.ndim) for a in n.ints(3)] if n.has(3) else list(range(x.ndim))
    if len(pads) != 2 * len(axes):
        raise Unsupported(f"pads={pads} must have {2 * len(axes)} values (begins, then ends, of {len(axes)} axes)")
    lo, hi = [0] * x.ndim, [0] * x.ndim
    for i, axis in enumerate(axes):
        lo[axis], hi[axis] = pads[i], pads[len(axes) + i]
    modes = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
    mode = n.attr("mode", "constant")
    if mode not in modes:
        raise Unsupported(f"mode={mode!r} (expected one of {', '.join(modes)})")
    pad = _torch_pad(lo, hi)
    if not pad:
        return x
    return ops.pad(x, pad, modes[mode], value) if mode == "constant" else ops.pad(x, pad, modes[mode])


# normalization, products, reductions --------------------------------------------------------

def _batch_norm(n: Node) -> Tensor:
    if n.attr("training_mode", 0):
        raise Unsupported("training_mode=1 (convc computes inference, with the running statistics)")
    n.only_first_output("running statistics")
    return ops.batch_norm(n.tensor(0), n.tensor(3), n.tensor(4), n.tensor(1), n.tensor(2), n.attr("epsilon", 1e-5))


def _layer_norm(n: Node) -> Tensor | tuple[Tensor, ...]:
    """LayerNormalization; its optional outputs Mean and InvStdDev (over the normalized axes, kept as
    axes of size 1) are computed by convc ops where they are used."""
    x = n.tensor(0)
    axis = _axis(n.attr("axis", -1), x.ndim)
    shape, eps = x.shape[axis:], n.attr("epsilon", 1e-5)

    def affine(index: int) -> Tensor | None:
        if not n.has(index):
            return None
        value = n.tensor(index)
        return value if value.shape == shape else ops.broadcast_to(value, shape)
    y = ops.layer_norm(x, shape, affine(1), affine(2), eps)
    if not (n.used(1) or n.used(2)):
        return y
    axes = tuple(range(axis, x.ndim))
    mean = ops.mean(x, axes, keepdim=True)
    centred = ops.sub(x, mean)
    return y, mean, ops.rsqrt(ops.add(ops.mean(ops.mul(centred, centred), axes, keepdim=True), eps))


def _instance_norm(n: Node) -> Tensor:
    """InstanceNormalization is group_norm with one group per channel (torch.onnx exports GroupNorm as
    a reshape to (N, groups, -1), an InstanceNormalization, a reshape back and the affine ops)."""
    x = n.tensor(0)
    if x.ndim < 3:
        raise Unsupported(f"an input of rank {x.ndim} (InstanceNormalization takes (N, C, *spatial))")
    return ops.group_norm(x, x.shape[1], n.tensor(1), n.tensor(2), n.attr("epsilon", 1e-5))


def _gemm(n: Node) -> Tensor:
    a, b = n.tensor(0), n.tensor(1)
    if a.ndim != 2 or b.ndim != 2:
        raise Unsupported(f"Gemm multiplies 2-D matrices, got shapes {list(a.shape)} and {list(b.shape)}")
    if n.attr("transA", 0):
        a = ops.transpose(a, 0, 1)
    weight = b if n.attr("transB", 0) else ops.transpose(b, 0, 1)  # linear's weight is (out, in)
    alpha, beta = n.attr("alpha", 1.0), n.attr("beta", 1.0)
    bias = n.tensor(2) if n.has(2) and beta != 0 else None
    if bias is not None and beta != 1:
        bias = ops.mul(bias, beta)
    features = weight.shape[0]
    if alpha == 1 and bias is not None and bias.shape in ((features,), (1, features), (1,), ()):
        return ops.linear(a, weight, ops.reshape(bias, (-1,)) if bias.ndim > 1 else bias)
    y = ops.linear(a, weight)
    if alpha != 1:
        y = ops.mul(y, alpha)
    return y if bias is None else ops.add(y, bias)


def _matmul(n: Node) -> Tensor:
    """NumPy's matmul; a right operand of one or two axes maps onto linear."""
    a, b = n.tensor(0), n.tensor(1)
    if b.ndim == 1:
        return ops.linear(a, b)
    if b.ndim == 2:
        return ops.linear(a, ops.transpose(b, 0, 1))
    raise Unsupported(f"a right operand of shape {list(b.shape)}: convc multiplies by 1-D or 2-D right "
                      f"operands (linear), not batches of matrices")


def _reduce_mean(n: Node) -> Tensor:
    x = n.tensor(0)
    axes = n.ints(1) if n.has(1) else list(n.attr("axes", []) or [])
    if not axes:
        if n.attr("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.ndim))
    return ops.mean(x, tuple(_axis(a, x.ndim) for a in axes), keepdim=bool(n.attr("keepdims", 1)))


# elementwise --------------------------------------------------------------------------------

def _float_operand(n: Node, index: int) -> Tensor:
    value = n.values.constant(n.inputs[index]) if n.has(index) else None
    if value is not None and value.dtype.kind in "iub":  # Pow's integer exponent
        return n.values.tensor(n.inputs[index], dtype=n.tensor(0).dtype)
    return n.tensor(index)


def _pow(n: Node) -> Tensor:
    x = n.tensor(0)
    exponent = n.values.constant(n.inputs[1]) if n.has(1) else None
    if exponent is not None and exponent.size == 1 and np.broadcast_shapes(x.shape, exponent.shape) == x.shape:
        return ops.pow(x, _float(exponent))
    return ops.pow(x, _float_operand(n, 1))


def _variadic(fn: Callable[[Any, Any], Tensor]) -> Callable[[Node], Tensor]:
    def entry(n: Node) -> Tensor:
        result = n.tensor(0)
        for index in range(1, len(n.inputs)):
            result = fn(result, n.tensor(index))
        return result
    return entry


def _clip(n: Node) -> Tensor:
    x = n.tensor(0)
    bounds = [n.values.constant(n.inputs[i]) if n.has(i) else None for i in (1, 2)]
    if (n.has(1) and bounds[0] is None) or (n.has(2) and bounds[1] is None):  # bounds computed at run time
        low = ops.maximum(x, n.tensor(1)) if n.has(1) else x
        return ops.minimum(low, n.tensor(2)) if n.has(2) else low
    low, high = (None if b is None else _float(b) for b in bounds)
    if low is None and high is None:
        return x
    if (low, high) == (0.0, 6.0):
        return ops.relu6(x)
    if low == 0.0 and high is None:
        return ops.relu(x)
    return ops.clamp(x, low, high)


def _hard_sigmoid(n: Node) -> Tensor:
    x, alpha, beta = n.tensor(0), n.attr("alpha", 0.2), n.attr("beta", 0.5)
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5:
        return ops.hardsigmoid(x)
    return ops.clamp(ops.add(ops.mul(x, alpha), beta), 0.0, 1.0)


def _gelu(n: Node) -> Tensor:
    approximate = n.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise Unsupported(f"approximate={approximate!r} (expected 'none' or 'tanh')")
    return ops.gelu(n.tensor(0), approximate)


def _erf(n: Node) -> Tensor:
    raise Unsupported("convc has no erf op; Erf imports as part of gelu, x * 0.5 * (1 + erf(x / sqrt(2))) "
                      "(or x / sqrt(2) written x * (1 / sqrt(2)), and 0.5 * x first), where it becomes one gelu")


# layout -------------------------------------------------------------------------------------

def _reshape(n: Node) -> Tensor:
    x, shape = n.tensor(0), n.ints(1)
    if not n.attr("allowzero", 0):
        shape = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(shape)]
    return ops.reshape(x, tuple(shape))


def _flatten(n: Node) -> Tensor:
    x = n.tensor(0)
    axis = n.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    if not 0 <= axis <= x.ndim:
        raise Unsupported(f"axis={n.attr('axis', 1)} is out of range for rank {x.ndim}")
    return ops.reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


def _transpose(n: Node) -> Tensor:
    x = n.tensor(0)
    perm = n.attr("perm", None)
    return ops.permute(x, tuple(perm) if perm else tuple(range(x.ndim - 1, -1, -1)))


def _axes(n: Node, index: int) -> list[int] | None:
    """Axes given as input `index` (opset 13 and up) or as the attribute `axes` (before)."""
    if n.has(index):
        return n.ints(index)
    axes = n.attr("axes", None)
    return None if axes is None else [int(a) for a in axes]


def _squeeze(n: Node) -> Tensor:
    x, axes = n.tensor(0), _axes(n, 1)
    if axes is None:
        return ops.squeeze(x)
    axes = [_axis(a, x.ndim) for a in axes]
    wrong = [a for a in axes if x.shape[a] != 1]
    if wrong:
        raise Unsupported(f"axes {wrong} of {x.type} do not have size 1")
    return ops.squeeze(x, tuple(axes))


def _unsqueeze(n: Node) -> Tensor:
    x, axes = n.tensor(0), _axes(n, 1)
    if axes is None:
        raise MissingAttribute("required input or attribute 'axes' is missing")
    rank = x.ndim + len(axes)
    new = sorted(_axis(a, rank) for a in axes)
    shape, rest = [], iter(x.shape)
    for axis in range(rank):
        shape.append(1 if axis in new else next(rest))
    return ops.reshape(x, tuple(shape))


def _concat(n: Node) -> Tensor:
    parts = [n.tensor(i) for i in range(len(n.inputs)) if n.has(i)]
    return ops.cat(parts, _axis(n.attr("axis"), parts[0].ndim))


def _split(n: Node) -> tuple[Tensor, ...]:
    x = n.tensor(0)
    axis = _axis(n.attr("axis", 0), x.ndim)
    size = x.shape[axis]
    if n.has(1):
        sections = n.ints(1)
    elif n.attr("split", None):
        sections = [int(s) for s in n.attr("split")]
    else:
        count = n.attr("num_outputs", len(n.outputs))
        piece = -(-size // count)
        sections = [piece] * (size // piece) + ([size % piece] if size % piece else [])
        if n.opset < 18 and size % count:
            raise Unsupported(f"axis {axis} of size {size} does not split into {count} equal parts")
    if len(sections) != len(n.outputs):
        raise Unsupported(f"{len(sections)} pieces {sections} for {len(n.outputs)} outputs")
    return ops.split(x, sections, axis)


def _slice(n: Node) -> Tensor:
    x = n.tensor(0)
    starts, ends = n.ints(1), n.ints(2)
    axes = n.ints(3) if n.has(3) else list(range(len(starts)))
    steps = n.ints(4) if n.has(4) else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, x.ndim)
        size = x.shape[axis]
        if step < 1:
            raise Unsupported(f"step {step} on axis {axis} (convc slices forward, step >= 1)")
        start, end = (min(max(v + size if v < 0 else v, 0), size) for v in (start, end))
        if (start, end, step) != (0, size, 1):
            x = ops.slice(x, axis, start, end, step)
    return x


def _gather(n: Node) -> Any:
    """Gather with indices known at import time: slices of the data, joined (a scalar index drops the axis)."""
    x, indices = n.tensor(0), n.const(1)
    if indices.dtype.kind not in "iu":
        raise Unsupported(f"indices of dtype {indices.dtype}")
    axis = _axis(n.attr("axis", 0), x.ndim)
    size = x.shape[axis]
    flat = [int(i) + size if i < 0 else int(i) for i in indices.reshape(-1)]
    if any(not 0 <= i < size for i in flat):
        raise Unsupported(f"indices {indices.tolist()} are out of range for axis {axis} of size {size}")
    if indices.ndim == 0:
        return ops.squeeze(ops.slice(x, axis, flat[0], flat[0] + 1), axis)
    runs: list[list[int]] = []
    for i in flat:
        if runs and i == runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([i, i + 1])
    pieces = [ops.slice(x, axis, start, end) for start, end in runs]
    y = pieces[0] if len(pieces) == 1 else ops.cat(pieces, axis)
    shape = x.shape[:axis] + indices.shape + x.shape[axis + 1:]
    return y if y.shape == shape else ops.reshape(y, shape)


def _expand(n: Node) -> Tensor:
    x = n.tensor(0)
    try:
        shape = np.broadcast_shapes(x.shape, tuple(n.ints(1)))
    except ValueError:
        raise Unsupported(f"{x.type} does not broadcast to {n.ints(1)}") from None
    return x if shape == x.shape else ops.broadcast_to(x, shape)


def _shape(n: Node) -> np.ndarray:
    shape = n.values.shape_of(n.inputs[0])
    start, end = n.attr("start", 0), n.attr("end", None)
    return np.array(shape[slice(start, end)], dtype=np.int64)


def _dropout(n: Node) -> Tensor:
    if n.has(2) and bool(n.const(2)):
        raise Unsupported("training_mode=True (convc computes inference, where Dropout is the identity)")
    n.only_first_output("mask")
    return n.tensor(0)


OPS: dict[str, Callable[[Node], Any]] = {
    # convolutions, padding, pooling
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Pad": _pad,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _global_average_pool,
    # normalization, products, reductions
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "InstanceNormalization": _instance_norm,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "ReduceMean": _reduce_mean,
    # activations
    "Relu": lambda n: ops.relu(n.tensor(0)),
    "Clip": _clip,
    "LeakyRelu": lambda n: ops.leaky_relu(n.tensor(0), n.attr("alpha", 0.01)),
    "Sigmoid": lambda n: ops.sigmoid(n.tensor(0)),
    "Tanh": lambda n: ops.tanh(n.tensor(0)),
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": lambda n: ops.hardswish(n.tensor(0)),
    "Gelu": _gelu,
    "Erf": _erf,
    # arithmetic (NumPy broadcasting)
    "Add": lambda n: ops.add(n.tensor(0), n.tensor(1)),
    "Sub": lambda n: ops.sub(n.tensor(0), n.tensor(1)),
    "Mul": lambda n: ops.mul(n.tensor(0), n.tensor(1)),
    "Div": lambda n: ops.div(n.tensor(0), n.tensor(1)),
    "Max": _variadic(ops.maximum),
    "Min": _variadic(ops.minimum),
    "Sum": _variadic(ops.add),
    "Pow": _pow,
    "Sqrt": lambda n: ops.sqrt(n.tensor(0)),
    "Reciprocal": lambda n: ops.reciprocal(n.tensor(0)),
    "Neg": lambda n: ops.neg(n.tensor(0)),
    "Abs": lambda n: ops.abs(n.tensor(0)),
    "Exp": lambda n: ops.exp(n.tensor(0)),
    "Sin": lambda n: ops.sin(n.tensor(0)),
    "Cos": lambda n: ops.cos(n.tensor(0)),
    # layout
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    "Gather": _gather,
    "Expand": _expand,
    # shapes, identities at inference
    "Shape": _shape,
    "Size": lambda n: np.array(math.prod(n.values.shape_of(n.inputs[0])), dtype=np.int64),
    "Identity": lambda n: n.tensor(0),
    "Dropout": _dropout,
}
