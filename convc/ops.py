"""convc.ops: the functional ops. Called on arrays they run JIT-compiled kernels (eagerly, cached);
called inside convc.trace on traced Tensors they record graph nodes. Semantics follow
torch.nn.functional for the channels-first ops and TensorFlow for the TF ops."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import eager
from .args import as_int, is_int
from .arrays import as_float_array
from .errors import ConvcError
from .op_shape import wrap_dim
from .registry import get_op
from .tracing import Tensor, current_graph, record

Array = Any


_normalized: dict[tuple, dict[str, Any]] = {}


def _plain(value: Any) -> bool:
    """Whether a value's repr identifies it exactly: ints, floats, strings, None and tuples of ints.
    The memo keys on the repr, since 1, 1.0 and True (and 0.0 and -0.0) hash and compare alike."""
    return type(value) in (int, float, str, type(None)) or (
        type(value) is tuple and all(type(v) is int for v in value))


def normalize(op: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The op's canonical attributes, memoized for plain argument values (callers never mutate them),
    so that no earlier call changes how a later one is validated."""
    plain = all(_plain(v) for v in arguments.values())
    key = (op, tuple((k, repr(v)) for k, v in arguments.items())) if plain else None
    attrs = _normalized.get(key) if key else None
    if attrs is None:
        attrs = get_op(op).normalize(**arguments)
        if key:
            if len(_normalized) > 4096:
                _normalized.clear()
            _normalized[key] = attrs
    return attrs


def apply(op: str, operands: Sequence[Any], **arguments: Any) -> Any:
    """Normalize the arguments by the op's definition, then trace or execute the op."""
    opdef = get_op(op)
    operands = list(operands)
    while len(operands) > opdef.required_operands and operands[-1] is None and not opdef.variadic:
        operands.pop()
    for value, name in zip(operands, opdef.operand_labels(len(operands))):
        if value is None:
            raise TypeError(f"{op}: {name} is required, got None")
    attrs = normalize(op, arguments)
    if current_graph() is not None:  # inside a trace every op is recorded; constant ones fold at compile time
        return record(op, operands, attrs)
    if any(isinstance(v, Tensor) for v in operands):
        raise TypeError(f"{op}: a traced convc.Tensor was used outside its convc.trace")
    return eager.run(op, operands, attrs)


def conv1d(input: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Array:
    """1-D convolution over (N, C_in, L) or unbatched (C_in, L) input, as torch.nn.functional.conv1d."""
    return apply("conv1d", [input, weight, bias], stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv2d(input: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Array:
    """2-D convolution over (N, C_in, H, W) or (C_in, H, W) input, as torch.nn.functional.conv2d."""
    return apply("conv2d", [input, weight, bias], stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv3d(input: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Array:
    """3-D convolution over (N, C_in, D, H, W) or (C_in, D, H, W) input, as torch.nn.functional.conv3d."""
    return apply("conv3d", [input, weight, bias], stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv_transpose1d(input: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Array:
    """1-D transposed convolution, as torch.nn.functional.conv_transpose1d."""
    return apply("conv_transpose1d", [input, weight, bias], stride=stride, padding=padding,
                 output_padding=output_padding, groups=groups, dilation=dilation)


def conv_transpose2d(input: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Array:
    """2-D transposed convolution, as torch.nn.functional.conv_transpose2d."""
    return apply("conv_transpose2d", [input, weight, bias], stride=stride, padding=padding,
                 output_padding=output_padding, groups=groups, dilation=dilation)


def conv_transpose3d(input: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Array:
    """3-D transposed convolution, as torch.nn.functional.conv_transpose3d."""
    return apply("conv_transpose3d", [input, weight, bias], stride=stride, padding=padding,
                 output_padding=output_padding, groups=groups, dilation=dilation)


def adaptive_avg_pool1d(input: Array, output_size: Any) -> Array:
    """Adaptive average pooling over the last axis, as torch.nn.functional.adaptive_avg_pool1d."""
    return apply("adaptive_avg_pool1d", [input], output_size=output_size)


def pad(input: Array, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Array:
    """Pads (or crops, with negative amounts) the last axes, as torch.nn.functional.pad."""
    return apply("pad", [input], pad=pad, mode=mode, value=value)


def extract_patches(images: Array, sizes: Sequence[int], strides: Sequence[int], rates: Sequence[int],
                    padding: str) -> Array:
    """Image patches of NHWC images into the depth axis, as tf.image.extract_patches."""
    return apply("extract_patches", [images], sizes=sizes, strides=strides, rates=rates, padding=padding)


def separable_conv2d(input: Array, depthwise_filter: Array, pointwise_filter: Array, strides: Sequence[int],
                     padding: str, data_format: str = "NHWC", dilations: Any = None) -> Array:
    """Depthwise then pointwise convolution, as tf.nn.separable_conv2d."""
    return apply("separable_conv2d", [input, depthwise_filter, pointwise_filter], strides=strides,
                 padding=padding, data_format=data_format, dilations=dilations)


def broadcast_to(input: Array, shape: Sequence[int]) -> Array:
    """Broadcast to `shape` by NumPy / tf.broadcast_to rules."""
    return apply("broadcast_to", [input], shape=shape)


def _binary(op: str, a: Any, b: Any) -> Any:
    """Python scalars take the dtype of the other operand, as NumPy's weak scalars do."""
    def dtype_of(x: Any) -> Any:
        return x.dtype if isinstance(x, (Tensor, np.ndarray)) else None
    if isinstance(a, (int, float)) and not isinstance(a, bool) and dtype_of(b) is not None:
        a = np.asarray(a, dtype_of(b))
    if isinstance(b, (int, float)) and not isinstance(b, bool) and dtype_of(a) is not None:
        b = np.asarray(b, dtype_of(a))
    return apply(op, [a, b])


def add(a: Array, b: Array) -> Array:
    """a + b with NumPy broadcasting."""
    return _binary("add", a, b)


def sub(a: Array, b: Array) -> Array:
    """a - b with NumPy broadcasting."""
    return _binary("sub", a, b)


def mul(a: Array, b: Array) -> Array:
    """a * b with NumPy broadcasting."""
    return _binary("mul", a, b)


def div(a: Array, b: Array) -> Array:
    """a / b with NumPy broadcasting (IEEE: x/0 is inf or nan)."""
    return _binary("div", a, b)


def maximum(a: Array, b: Array) -> Array:
    """Elementwise maximum, NaN-propagating, as numpy.maximum."""
    return _binary("maximum", a, b)


def minimum(a: Array, b: Array) -> Array:
    """Elementwise minimum, NaN-propagating, as numpy.minimum."""
    return _binary("minimum", a, b)


def relu(x: Array) -> Array:
    """max(x, 0), NaN kept, as torch.relu."""
    return apply("relu", [x])


def relu6(x: Array) -> Array:
    """min(max(x, 0), 6), as torch.nn.functional.relu6."""
    return apply("relu6", [x])


def sigmoid(x: Array) -> Array:
    """1 / (1 + exp(-x)), as torch.sigmoid."""
    return apply("sigmoid", [x])


def tanh(x: Array) -> Array:
    """Hyperbolic tangent, as torch.tanh."""
    return apply("tanh", [x])


# --- normalization and reductions (issue 8, group B): batch_norm, layer_norm, group_norm, mean ---

def _ones_for_weight(bias: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Ones in place of an absent weight when a bias is given (torch then computes y * 1 + bias)."""
    dtype = getattr(bias, "dtype", None)
    if dtype is None:
        dtype = np.asarray(bias).dtype
    return np.ones(shape, dtype if dtype in (np.float32, np.float64) else np.float32)


def _channels(input: Any) -> int:
    shape = tuple(input.shape) if hasattr(input, "shape") else np.shape(input)
    return shape[1] if len(shape) > 1 else 0


def batch_norm(input: Array, running_mean: Array, running_var: Array, weight: Array | None = None,
               bias: Array | None = None, eps: float = 1e-5, *, training: bool = False,
               momentum: float = 0.1) -> Array:
    """Batch normalization with running statistics over channel axis 1 of (N, C, *), as
    torch.nn.functional.batch_norm in inference (training=True is not supported; momentum is
    unused there)."""
    if training:
        from .errors import ConvcError
        raise ConvcError("batch_norm: training=True is not supported; convc computes inference only "
                         "(running statistics)")
    if weight is None and bias is not None:
        weight = _ones_for_weight(bias, (_channels(input),))
    return apply("batch_norm", [input, running_mean, running_var, weight, bias], eps=eps)


def layer_norm(input: Array, normalized_shape: Sequence[int], weight: Array | None = None,
               bias: Array | None = None, eps: float = 1e-5) -> Array:
    """Normalization over the last len(normalized_shape) axes, as torch.nn.functional.layer_norm."""
    if weight is None and bias is not None and isinstance(normalized_shape, (tuple, list)):
        weight = _ones_for_weight(bias, tuple(normalized_shape))
    return apply("layer_norm", [input, weight, bias], normalized_shape=normalized_shape, eps=eps)


def group_norm(input: Array, num_groups: int, weight: Array | None = None, bias: Array | None = None,
               eps: float = 1e-5) -> Array:
    """Normalization over groups of channels of (N, C, *), as torch.nn.functional.group_norm."""
    if weight is None and bias is not None:
        weight = _ones_for_weight(bias, (_channels(input),))
    return apply("group_norm", [input, weight, bias], num_groups=num_groups, eps=eps)


def mean(input: Array, dim: Any, keepdim: bool = False) -> Array:
    """The mean over the axes `dim` (an int or a tuple; an empty tuple or None means all), as
    torch.mean."""
    return apply("mean", [input], dim=dim, keepdim=keepdim)


# --- linear and the layout ops (issue 8, group D): linear, transpose, permute, reshape, flatten, ---
# --- squeeze, unsqueeze, slice, cat, split. `slice` below shadows the builtin in this module. ---

def _shape(op: str, name: str, value: Any) -> tuple[int, ...]:
    """The shape of an operand: a traced Tensor's, or its array's (dtype checked)."""
    return value.shape if isinstance(value, Tensor) else as_float_array(op, name, value).shape


def linear(input: Array, weight: Array, bias: Array | None = None) -> Array:
    """input @ weight.T + bias over the last axis (any leading axes), as torch.nn.functional.linear.
    The bias holds one value per output feature (or a single value); as torch also: a 1-D weight
    gives the dot product over the last axis (and takes no bias), and a 2-D input takes a bias of
    one row per input row, (rows, 1) or (rows, out_features) (torch.addmm's)."""
    weight_shape = _shape("linear", "weight", weight)
    if len(weight_shape) == 1:
        if bias is not None:
            raise ConvcError(f"linear: a 1-D weight (shape {weight_shape}) takes no bias; give a 2-D weight "
                             f"(out_features, in_features) with a bias")
        return squeeze(linear(input, unsqueeze(weight, 0)), -1)
    if bias is not None:
        input_shape, bias_shape = _shape("linear", "input", input), _shape("linear", "bias", bias)
        if (len(input_shape) == 2 and len(weight_shape) == 2 and len(bias_shape) == 2
                and bias_shape[0] == input_shape[0] != 1 and bias_shape[1] in (1, weight_shape[0])):
            return add(apply("linear", [input, weight]), bias)
    return apply("linear", [input, weight, bias])


def transpose(x: Array, dim0: int, dim1: int) -> Array:
    """x with axes dim0 and dim1 swapped, as torch.transpose."""
    return apply("transpose", [x], dim0=dim0, dim1=dim1)


def permute(x: Array, dims: Sequence[int]) -> Array:
    """x with its axes in the order `dims`, as torch.permute."""
    return apply("permute", [x], dims=dims)


def reshape(x: Array, shape: Sequence[int]) -> Array:
    """x's elements in `shape` (one size may be -1, inferred), as torch.reshape."""
    return apply("reshape", [x], shape=shape)


def flatten(x: Array, start_dim: int = 0, end_dim: int = -1) -> Array:
    """x with axes start_dim..end_dim joined into one, as torch.flatten."""
    return apply("flatten", [x], start_dim=start_dim, end_dim=end_dim)


def squeeze(x: Array, dim: int | Sequence[int] | None = None) -> Array:
    """x without the axes `dim` (an int or a tuple) of size 1, every size-1 axis where dim is None,
    as torch.squeeze; a named axis of another size stays."""
    return apply("squeeze", [x], dim=dim)


def unsqueeze(x: Array, dim: int) -> Array:
    """x with a new axis of size 1 at `dim` (-x.ndim - 1 <= dim <= x.ndim), as torch.unsqueeze."""
    return apply("unsqueeze", [x], dim=dim)


def slice(x: Array, dim: int, start: int | None, end: int | None, step: int = 1) -> Array:
    """x[start:end:step] along `dim`, as torch's slicing (aten.slice): negative bounds count from
    the end, both are clamped to the axis, None means the axis' start or end; step >= 1."""
    return apply("slice", [x], dim=dim, start=start, end=end, step=step)


def cat(tensors: Sequence[Array], dim: int = 0) -> Array:
    """The tensors joined along `dim`, as torch.cat (1-D empty tensors are skipped, as torch does)."""
    if not isinstance(tensors, (tuple, list)):
        raise TypeError(f"cat: tensors must be a list or tuple of tensors, got {type(tensors).__name__}")
    if not tensors:
        raise ConvcError("cat: tensors=[] must hold at least one tensor")
    return apply("cat", list(tensors), dim=dim)


def split(x: Array, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple[Array, ...]:
    """x cut along `dim` into pieces, as torch.split: an int gives pieces of that size (the last one
    smaller when the axis does not divide), a list gives the sizes of the pieces, which must add up
    to the axis' size. Each piece is a slice (a view where the memory plan allows)."""
    shape = _shape("split", "x", x)
    if not shape:
        raise ConvcError("split: x must be at least 1-D, got shape ()")
    axis = wrap_dim("split", "dim", as_int("split", "dim", dim), len(shape))
    size = shape[axis]
    if is_int(split_size_or_sections):
        piece = int(split_size_or_sections)
        if piece < 0:
            raise ConvcError(f"split: split_size={piece} must be non-negative")
        if piece == 0 and size:
            raise ConvcError(f"split: split_size=0 is only allowed for an axis of size 0, got size {size} on "
                             f"axis {axis}")
        sections = [piece] * (size // piece) + ([size % piece] if size % piece else []) if size else [0]
    elif isinstance(split_size_or_sections, (tuple, list)) and all(is_int(s) for s in split_size_or_sections):
        sections = [int(s) for s in split_size_or_sections]
        if any(s < 0 for s in sections):
            raise ConvcError(f"split: sections={sections} must not be negative")
        if sum(sections) != size:
            raise ConvcError(f"split: sections={sections} must add up to the size {size} of axis {axis} "
                             f"(shape {shape}), got {sum(sections)}")
    else:
        raise TypeError(f"split: split_size_or_sections={split_size_or_sections!r} must be an int or a list of ints")
    pieces, start = [], 0
    for length in sections:
        pieces.append(slice(x, axis, start, start + length))
        start += length
    return tuple(pieces)



# --- group A: elementwise math and activations (definitions in convc/op_math.py, kernels in
# runtime/kernels/math_forms.py). Note: `abs` and `pow` below shadow the builtins in this module.

def gelu(x: Array, approximate: str = "none") -> Array:
    """x * 0.5 * (1 + erf(x / sqrt(2))), or with approximate='tanh' 0.5 * x * (1 + tanh(sqrt(2 / pi)
    * (x + 0.044715 * x**3))), as torch.nn.functional.gelu."""
    return apply("gelu", [x], approximate=approximate)


def silu(x: Array) -> Array:
    """x * sigmoid(x), as torch.nn.functional.silu."""
    return apply("silu", [x])


def hardswish(x: Array) -> Array:
    """x * clamp(x + 3, 0, 6) / 6, as torch.nn.functional.hardswish."""
    return apply("hardswish", [x])


def hardsigmoid(x: Array) -> Array:
    """clamp(x + 3, 0, 6) / 6, as torch.nn.functional.hardsigmoid."""
    return apply("hardsigmoid", [x])


def leaky_relu(x: Array, negative_slope: float = 0.01) -> Array:
    """x where x > 0, else x * negative_slope, as torch.nn.functional.leaky_relu."""
    return apply("leaky_relu", [x], negative_slope=negative_slope)


def hardtanh(x: Array, min_val: float = -1.0, max_val: float = 1.0) -> Array:
    """x clamped to [min_val, max_val], as torch.nn.functional.hardtanh (min_val > max_val is an error)."""
    return apply("hardtanh", [x], min_val=min_val, max_val=max_val)


def clamp(x: Array, min: float | None = None, max: float | None = None) -> Array:
    """min(max(x, min), max) with either bound left out, as torch.clamp (at least one bound; NaN kept)."""
    return apply("clamp", [x], min=min, max=max)


def exp(x: Array) -> Array:
    """e ** x, as torch.exp."""
    return apply("exp", [x])


def sin(x: Array) -> Array:
    """Sine, as torch.sin."""
    return apply("sin", [x])


def cos(x: Array) -> Array:
    """Cosine, as torch.cos."""
    return apply("cos", [x])


def sqrt(x: Array) -> Array:
    """Square root (NaN below 0), as torch.sqrt."""
    return apply("sqrt", [x])


def rsqrt(x: Array) -> Array:
    """1 / sqrt(x), as torch.rsqrt."""
    return apply("rsqrt", [x])


def reciprocal(x: Array) -> Array:
    """1 / x, as torch.reciprocal."""
    return apply("reciprocal", [x])


def neg(x: Array) -> Array:
    """-x, as torch.neg."""
    return apply("neg", [x])


def abs(x: Array) -> Array:
    """|x|, as torch.abs."""
    return apply("abs", [x])


def pow(x: Array, exponent: Array | float) -> Array:
    """x ** exponent, as torch.pow: a number exponent (x * x for 2, sqrt for 0.5, ... as torch
    computes them), or an array broadcast with x (a number x takes the exponent's dtype)."""
    if isinstance(exponent, (int, float, np.integer, np.floating)) and not isinstance(exponent, bool):
        return apply("pow_scalar", [x], exponent=exponent)
    return _binary("pow", x, exponent)


# --- pooling (group C) ------------------------------------------------------------------------


def max_pool1d(input: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False) -> Array:
    """Max over sliding windows of (N, C, L) or (C, L) input (padding reads as -inf), as
    torch.nn.functional.max_pool1d."""
    return apply("max_pool1d", [input], kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                 ceil_mode=ceil_mode)


def max_pool2d(input: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False) -> Array:
    """Max over sliding windows of (N, C, H, W) or (C, H, W) input (padding reads as -inf), as
    torch.nn.functional.max_pool2d."""
    return apply("max_pool2d", [input], kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                 ceil_mode=ceil_mode)


def avg_pool1d(input: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Array:
    """Mean over sliding windows of (N, C, L) or (C, L) input, as torch.nn.functional.avg_pool1d."""
    return apply("avg_pool1d", [input], kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                 count_include_pad=count_include_pad)


def avg_pool2d(input: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Array:
    """Mean over sliding windows of (N, C, H, W) or (C, H, W) input, as torch.nn.functional.avg_pool2d."""
    return apply("avg_pool2d", [input], kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                 count_include_pad=count_include_pad)


def adaptive_avg_pool2d(input: Array, output_size: Any) -> Array:
    """Adaptive average pooling over the last two axes (an int, or a pair whose None entries keep
    the input's size), as torch.nn.functional.adaptive_avg_pool2d."""
    return apply("adaptive_avg_pool2d", [input], output_size=output_size)
