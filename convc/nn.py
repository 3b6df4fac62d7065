"""convc.nn: modules that own NumPy parameters, initialised as their reference does, and are called
like functions (eagerly on arrays, or symbolically inside convc.trace)."""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from . import ops
from .args import as_int, int_tuple, one_of
from .errors import ConvcError
from .op_conv import PADDING_MODES

_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed the generator that initialises module parameters."""
    global _rng
    _rng = np.random.default_rng(seed)


def uniform(shape: tuple[int, ...], bound: float, dtype: Any) -> np.ndarray:
    return _rng.uniform(-bound, bound, size=shape).astype(dtype)


class Module:
    """Base of convc modules: parameters are plain attributes holding NumPy arrays."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class _ConvNd(Module):
    rank = 0

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 dtype: Any = np.float32) -> None:
        name = type(self).__name__
        self.in_channels = as_int(name, "in_channels", in_channels)
        self.out_channels = as_int(name, "out_channels", out_channels)
        self.groups = as_int(name, "groups", groups)
        if self.groups < 1:
            raise ConvcError(f"{name}: groups={groups} must be positive")
        if self.in_channels < 1 or self.out_channels < 1:
            raise ConvcError(f"{name}: in_channels={in_channels} and out_channels={out_channels} must be positive")
        if self.in_channels % self.groups:
            raise ConvcError(f"{name}: groups={groups} must divide in_channels={in_channels}")
        if self.out_channels % self.groups:
            raise ConvcError(f"{name}: groups={groups} must divide out_channels={out_channels}")
        self.kernel_size = int_tuple(name, "kernel_size", kernel_size, self.rank, minimum=1)
        self.stride = int_tuple(name, "stride", stride, self.rank, minimum=1)
        self.dilation = int_tuple(name, "dilation", dilation, self.rank, minimum=1)
        self.padding_mode = one_of(name, "padding_mode", padding_mode, PADDING_MODES)
        if isinstance(padding, str):
            padding = one_of(name, "padding", padding, ("same", "valid"))
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ConvcError(f"{name}: padding='same' is not supported for strided convolutions "
                                 f"(stride={self.stride})")
            self.padding = padding
        else:
            self.padding = int_tuple(name, "padding", padding, self.rank, minimum=0)
        fan_in = (self.in_channels // self.groups) * math.prod(self.kernel_size)
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = uniform((self.out_channels, self.in_channels // self.groups, *self.kernel_size), bound, dtype)
        self.bias = uniform((self.out_channels,), bound, dtype) if bias else None

    def forward(self, input: Any) -> Any:
        return ops.apply(f"conv{self.rank}d", [input, self.weight, self.bias], stride=self.stride,
                         padding=self.padding, dilation=self.dilation, groups=self.groups,
                         padding_mode=self.padding_mode)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0,) * self.rank:
            text += f", padding={self.padding!r}"
        if self.dilation != (1,) * self.rank:
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        return text


class Conv1d(_ConvNd):
    """1-D convolution module, as torch.nn.Conv1d."""
    rank = 1


class Conv2d(_ConvNd):
    """2-D convolution module, as torch.nn.Conv2d."""
    rank = 2


class Conv3d(_ConvNd):
    """3-D convolution module, as torch.nn.Conv3d."""
    rank = 3


class _Activation(Module):
    fn: Callable[[Any], Any] = staticmethod(ops.relu)

    def forward(self, input: Any) -> Any:
        return type(self).fn(input)


class ReLU(_Activation):
    fn = staticmethod(ops.relu)


class ReLU6(_Activation):
    fn = staticmethod(ops.relu6)


class Sigmoid(_Activation):
    fn = staticmethod(ops.sigmoid)


class Tanh(_Activation):
    fn = staticmethod(ops.tanh)


class Sequential(Module):
    """Calls its modules (or any callables) in order."""

    def __init__(self, *modules: Callable) -> None:
        for index, module in enumerate(modules):
            if not callable(module):
                raise TypeError(f"Sequential: argument {index} ({module!r}) is not callable")
        self.modules = list(modules)

    def forward(self, input: Any) -> Any:
        for module in self.modules:
            input = module(input)
        return input

    def __getitem__(self, index: int) -> Callable:
        return self.modules[index]

    def __len__(self) -> int:
        return len(self.modules)

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {m!r}" for i, m in enumerate(self.modules))
        return f"Sequential({inner}\n)"
