"""convc.ops: the functional ops. Called on arrays they run JIT-compiled kernels (eagerly, cached);
called inside convc.trace on traced Tensors they record graph nodes. Semantics follow
torch.nn.functional for the channels-first ops and TensorFlow for the TF ops."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import eager
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
    while len(operands) > opdef.required_operands and operands[-1] is None:
        operands.pop()
    for value, name in zip(operands, opdef.operand_names):
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
