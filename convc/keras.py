"""Keras-style layers (channels_last by default, weights built on the first call): SeparableConv2D.
Exposed as convc.nn.SeparableConv2D."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import ops
from .args import is_int, one_of
from .errors import ConvcError

ACTIVATIONS = {None: None, "linear": None, "relu": ops.relu, "relu6": ops.relu6, "sigmoid": ops.sigmoid,
               "tanh": ops.tanh, "gelu": ops.gelu, "silu": ops.silu, "swish": ops.silu,
               "hard_sigmoid": ops.hardsigmoid, "hard_silu": ops.hardswish, "hard_swish": ops.hardswish,
               "leaky_relu": lambda x: ops.leaky_relu(x, 0.2), "exponential": ops.exp}  # Keras 3's definitions


def glorot_uniform(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Keras glorot_uniform: U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out)), the receptive
    field (all but the last two axes) counted in both fans."""
    from .nn import uniform
    receptive = math.prod(shape[:-2])
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    return uniform(shape, math.sqrt(6.0 / (fan_in + fan_out)), dtype)


def _initializer(layer: str, name: str, value: Any) -> Any:
    choices = {"glorot_uniform": glorot_uniform, "zeros": lambda shape, dtype: np.zeros(shape, dtype),
               "ones": lambda shape, dtype: np.ones(shape, dtype)}
    if callable(value):
        return value
    return choices[one_of(layer, name, value, tuple(choices))]


def _pair(layer: str, name: str, value: Any) -> tuple[int, int]:
    if is_int(value):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(is_int(v) for v in value):
        raise ConvcError(f"{layer}: {name}={value!r} must be an int or a tuple of 2 ints")
    if any(v < 1 for v in value):
        raise ConvcError(f"{layer}: {name}={tuple(value)} must be strictly positive")
    return int(value[0]), int(value[1])


class SeparableConv2D:
    """Depthwise then pointwise 2-D convolution, as keras.layers.SeparableConv2D."""

    def __init__(self, filters: int, kernel_size: Any, strides: Any = (1, 1), padding: str = "valid",
                 data_format: str | None = None, dilation_rate: Any = (1, 1), depth_multiplier: int = 1,
                 activation: str | None = None, use_bias: bool = True,
                 depthwise_initializer: Any = "glorot_uniform", pointwise_initializer: Any = "glorot_uniform",
                 bias_initializer: Any = "zeros", depthwise_regularizer: Any = None, pointwise_regularizer: Any = None,
                 bias_regularizer: Any = None, activity_regularizer: Any = None, depthwise_constraint: Any = None,
                 pointwise_constraint: Any = None, bias_constraint: Any = None, name: str | None = None,
                 dtype: Any = None) -> None:
        layer = "SeparableConv2D"
        if not is_int(filters) or filters < 1:
            raise ConvcError(f"{layer}: filters={filters!r} must be a strictly positive int")
        if not is_int(depth_multiplier) or depth_multiplier < 1:
            raise ConvcError(f"{layer}: depth_multiplier={depth_multiplier!r} must be a strictly positive int")
        self.filters, self.depth_multiplier = int(filters), int(depth_multiplier)
        self.kernel_size = _pair(layer, "kernel_size", kernel_size)
        self.strides = _pair(layer, "strides", strides)
        self.dilation_rate = _pair(layer, "dilation_rate", dilation_rate)
        if not isinstance(padding, str):
            raise TypeError(f"{layer}: padding={padding!r} must be 'valid' or 'same'")
        self.padding = one_of(layer, "padding", padding.lower(), ("valid", "same"))
        self.data_format = one_of(layer, "data_format", data_format or "channels_last",
                                  ("channels_last", "channels_first"))
        if activation is not None and not isinstance(activation, str) and not callable(activation):
            raise TypeError(f"{layer}: activation={activation!r} must be None, a name or a callable")
        if isinstance(activation, str) or activation is None:
            if activation not in ACTIVATIONS:
                raise ConvcError(f"{layer}: activation={activation!r} is not supported; expected one of "
                                 f"{[a for a in ACTIVATIONS if a]}")
            self.activation = ACTIVATIONS[activation]
        else:
            self.activation = activation
        for arg, value in (("depthwise_regularizer", depthwise_regularizer),
                           ("pointwise_regularizer", pointwise_regularizer), ("bias_regularizer", bias_regularizer),
                           ("activity_regularizer", activity_regularizer), ("depthwise_constraint", depthwise_constraint),
                           ("pointwise_constraint", pointwise_constraint), ("bias_constraint", bias_constraint)):
            if value is not None:
                raise ConvcError(f"{layer}: {arg}={value!r} is not supported (convc runs inference only); pass None")
        self.use_bias = bool(use_bias)
        self._initializers = (_initializer(layer, "depthwise_initializer", depthwise_initializer),
                              _initializer(layer, "pointwise_initializer", pointwise_initializer),
                              _initializer(layer, "bias_initializer", bias_initializer))
        self.name, self.dtype = name, None if dtype is None else np.dtype(dtype)
        self.depthwise_kernel = self.pointwise_kernel = self.bias = None
        self.built = False

    def build(self, input_shape: tuple[int, ...], dtype: Any) -> None:
        """Create the weights for inputs of `input_shape` (channels from the data_format axis)."""
        if len(input_shape) != 4:
            raise ConvcError(f"SeparableConv2D: input must be 4-D, got shape {tuple(input_shape)}")
        channels = input_shape[-1] if self.data_format == "channels_last" else input_shape[1]
        dtype = self.dtype or np.dtype(dtype)
        depthwise, pointwise, bias = self._initializers
        self.depthwise_kernel = depthwise((*self.kernel_size, channels, self.depth_multiplier), dtype)
        self.pointwise_kernel = pointwise((1, 1, channels * self.depth_multiplier, self.filters), dtype)
        self.bias = bias((self.filters,), dtype) if self.use_bias else None
        self.built = True

    def __call__(self, inputs: Any) -> Any:
        if not self.built:
            self.build(tuple(inputs.shape), getattr(inputs, "dtype", np.float32))
        nhwc = self.data_format == "channels_last"
        strides = [1, *self.strides, 1] if nhwc else [1, 1, *self.strides]
        outputs = ops.apply("separable_conv2d", [inputs, self.depthwise_kernel, self.pointwise_kernel],
                            strides=strides, padding=self.padding.upper(), data_format="NHWC" if nhwc else "NCHW",
                            dilations=list(self.dilation_rate), strided_dilation=True)
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias if nhwc else self.bias.reshape(-1, 1, 1))
        return self.activation(outputs) if self.activation else outputs

    def __repr__(self) -> str:
        return (f"SeparableConv2D(filters={self.filters}, kernel_size={self.kernel_size}, strides={self.strides}, "
                f"padding={self.padding!r}, data_format={self.data_format!r}, dilation_rate={self.dilation_rate}, "
                f"depth_multiplier={self.depth_multiplier})")
