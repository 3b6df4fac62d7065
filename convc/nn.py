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


class _ConvBase(Module):
    """What convolution modules share: channel and group checks, kernel/stride/dilation, repr."""

    rank = 0
    defaults: dict[str, Any] = {}

    def _channels(self, in_channels: Any, out_channels: Any, groups: Any) -> None:
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

    def _window(self, kernel_size: Any, stride: Any, dilation: Any) -> None:
        name = type(self).__name__
        self.kernel_size = int_tuple(name, "kernel_size", kernel_size, self.rank, minimum=1)
        self.stride = int_tuple(name, "stride", stride, self.rank, minimum=1)
        self.dilation = int_tuple(name, "dilation", dilation, self.rank, minimum=1)

    def _parameters(self, weight_shape: tuple[int, ...], fan_in: int, bias: bool, dtype: Any) -> None:
        """torch's default: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = uniform(weight_shape, bound, dtype)
        self.bias = uniform((self.out_channels,), bound, dtype) if bias else None

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        for field, default in self.defaults.items():
            value = getattr(self, field)
            if value != (default * self.rank if isinstance(default, tuple) else default):
                text += f", {field}={value!r}"
        return text + (", bias=False" if self.bias is None else "")


class _ConvNd(_ConvBase):
    defaults = {"padding": (0,), "dilation": (1,), "groups": 1, "padding_mode": "zeros"}

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 dtype: Any = np.float32) -> None:
        name = type(self).__name__
        self._channels(in_channels, out_channels, groups)
        self._window(kernel_size, stride, dilation)
        self.padding_mode = one_of(name, "padding_mode", padding_mode, PADDING_MODES)
        if isinstance(padding, str):
            padding = one_of(name, "padding", padding, ("same", "valid"))
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ConvcError(f"{name}: padding='same' is not supported for strided convolutions "
                                 f"(stride={self.stride})")
            self.padding = padding
        else:
            self.padding = int_tuple(name, "padding", padding, self.rank, minimum=0)
        self._parameters((self.out_channels, self.in_channels // self.groups, *self.kernel_size),
                         (self.in_channels // self.groups) * math.prod(self.kernel_size), bias, dtype)

    def forward(self, input: Any) -> Any:
        return ops.apply(f"conv{self.rank}d", [input, self.weight, self.bias], stride=self.stride,
                         padding=self.padding, dilation=self.dilation, groups=self.groups,
                         padding_mode=self.padding_mode)


class Conv1d(_ConvNd):
    """1-D convolution module, as torch.nn.Conv1d."""
    rank = 1


class Conv2d(_ConvNd):
    """2-D convolution module, as torch.nn.Conv2d."""
    rank = 2


class Conv3d(_ConvNd):
    """3-D convolution module, as torch.nn.Conv3d."""
    rank = 3


class _ConvTransposeNd(_ConvBase):
    defaults = {"padding": (0,), "output_padding": (0,), "dilation": (1,), "groups": 1}

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 output_padding: Any = 0, groups: int = 1, bias: bool = True, dilation: Any = 1,
                 padding_mode: str = "zeros", dtype: Any = np.float32) -> None:
        name = type(self).__name__
        if padding_mode != "zeros":
            raise ConvcError(f"{name}: padding_mode={padding_mode!r} is not supported; transposed convolutions "
                             f"only support 'zeros'")
        self._channels(in_channels, out_channels, groups)
        if isinstance(padding, str):
            raise ConvcError(f"{name}: padding={padding!r} is not supported; transposed convolutions take an int "
                             f"or a tuple of ints")
        self._window(kernel_size, stride, dilation)
        self.padding = int_tuple(name, "padding", padding, self.rank, minimum=0)
        self.output_padding = int_tuple(name, "output_padding", output_padding, self.rank, minimum=0)
        self.padding_mode = padding_mode
        # torch computes fan_in from the weight's second axis: out_channels / groups
        self._parameters((self.in_channels, self.out_channels // self.groups, *self.kernel_size),
                         (self.out_channels // self.groups) * math.prod(self.kernel_size), bias, dtype)

    def output_padding_for(self, input_shape: tuple[int, ...], output_size: Any) -> tuple[int, ...]:
        """torch's conversion of a requested output size to output_padding, range-checked."""
        name = type(self).__name__
        if output_size is None:
            return self.output_padding
        try:
            requested = [int(v) for v in output_size]
        except TypeError:
            raise TypeError(f"{name}: output_size={output_size!r} must be a sequence of ints") from None
        leading = len(input_shape) - self.rank
        if len(requested) == leading + self.rank:
            requested = requested[leading:]
        if len(requested) != self.rank:
            raise ConvcError(f"{name}: for {len(input_shape)}D input, output_size must have {self.rank} or "
                             f"{leading + self.rank} elements (got {len(list(output_size))})")
        spatial = input_shape[leading:]
        smallest = [(size - 1) * s - 2 * p + d * (k - 1) + 1 for size, s, p, d, k in
                    zip(spatial, self.stride, self.padding, self.dilation, self.kernel_size)]
        largest = [low + s - 1 for low, s in zip(smallest, self.stride)]
        if any(not low <= size <= high for size, low, high in zip(requested, smallest, largest)):
            raise ConvcError(f"{name}: requested an output size of {requested}, but valid sizes range from "
                             f"{smallest} to {largest} (for an input of {list(spatial)})")
        return tuple(size - low for size, low in zip(requested, smallest))

    def forward(self, input: Any, output_size: Any = None) -> Any:
        shape = tuple(input.shape) if hasattr(input, "shape") else np.shape(input)
        if len(shape) not in (self.rank + 1, self.rank + 2):
            raise ConvcError(f"{type(self).__name__}: input must be {self.rank + 1}-D (unbatched) or "
                             f"{self.rank + 2}-D (batched), got shape {shape}")
        return ops.apply(f"conv_transpose{self.rank}d", [input, self.weight, self.bias], stride=self.stride,
                         padding=self.padding, output_padding=self.output_padding_for(shape, output_size),
                         groups=self.groups, dilation=self.dilation)


class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution module, as torch.nn.ConvTranspose1d."""
    rank = 1


class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution module, as torch.nn.ConvTranspose2d."""
    rank = 2


class ConvTranspose3d(_ConvTransposeNd):
    """3-D transposed convolution module, as torch.nn.ConvTranspose3d."""
    rank = 3


class AdaptiveAvgPool1d(Module):
    """Adaptive average pooling over the last axis, as torch.nn.AdaptiveAvgPool1d."""

    def __init__(self, output_size: Any) -> None:
        self.output_size = output_size

    def forward(self, input: Any) -> Any:
        return ops.adaptive_avg_pool1d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


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


from .keras import SeparableConv2D  # noqa: E402  (Keras-style layer, re-exported here)


# --- normalization modules (issue 8, group B): BatchNorm1d/2d/3d, LayerNorm, GroupNorm ---

def _count(name: str, argument: str, value: Any, minimum: int) -> int:
    value = as_int(name, argument, value)
    if value < minimum:
        raise ConvcError(f"{name}: {argument}={value} must be >= {minimum}")
    return value


class _BatchNorm(Module):
    """Batch normalization for inference: running statistics (zeros and ones until set), weight
    ones and bias zeros (affine), as torch's; with track_running_stats=False the statistics of
    the batch itself, as torch computes them in eval mode. momentum is kept and unused; device is
    accepted for torch's signature and ignored."""

    ranks: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: Any = None, dtype: Any = np.float32, *,
                 bias: bool = True) -> None:
        self.num_features = _count(type(self).__name__, "num_features", num_features, 0)
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        self.weight = np.ones(self.num_features, dtype) if self.affine else None
        self.bias = np.zeros(self.num_features, dtype) if self.affine and bias else None
        tracked = self.track_running_stats
        self.running_mean = np.zeros(self.num_features, dtype) if tracked else None
        self.running_var = np.ones(self.num_features, dtype) if tracked else None
        self.num_batches_tracked = np.array(0, np.int64) if tracked else None

    def forward(self, input: Any) -> Any:
        rank = len(tuple(input.shape) if hasattr(input, "shape") else np.shape(input))
        if rank not in self.ranks:
            expected = " or ".join(f"{r}D" for r in self.ranks)
            raise ConvcError(f"{type(self).__name__}: expected {expected} input, got {rank}D input")
        mean, var = self.running_mean, self.running_var
        if mean is None or var is None:  # batch statistics: two passes, the biased variance
            axes = (0,) + tuple(range(2, rank))
            centred = ops.sub(input, ops.mean(input, axes, keepdim=True))
            mean, var = ops.mean(input, axes), ops.mean(ops.mul(centred, centred), axes)
        return ops.batch_norm(input, mean, var, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) input, as torch.nn.BatchNorm1d in eval mode."""
    ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) input, as torch.nn.BatchNorm2d in eval mode."""
    ranks = (4,)


class BatchNorm3d(_BatchNorm):
    """Batch normalization of (N, C, D, H, W) input, as torch.nn.BatchNorm3d in eval mode."""
    ranks = (5,)


class LayerNorm(Module):
    """Normalization over the last axes, as torch.nn.LayerNorm: weight ones and bias zeros of
    normalized_shape (an int or a tuple) when elementwise_affine (bias=False drops the bias)."""

    def __init__(self, normalized_shape: Any, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device: Any = None, dtype: Any = np.float32) -> None:
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        try:
            self.normalized_shape = tuple(as_int("LayerNorm", "normalized_shape", d) for d in shape)
        except TypeError:
            raise TypeError(f"LayerNorm: normalized_shape={normalized_shape!r} must be an int or a tuple of "
                            f"ints") from None
        self.eps, self.elementwise_affine = eps, bool(elementwise_affine)
        self.weight = np.ones(self.normalized_shape, dtype) if self.elementwise_affine else None
        self.bias = np.zeros(self.normalized_shape, dtype) if self.elementwise_affine and bias else None

    def forward(self, input: Any) -> Any:
        return ops.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Normalization over groups of channels, as torch.nn.GroupNorm: weight ones and bias zeros
    of num_channels when affine (bias=False drops the bias)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device: Any = None, dtype: Any = np.float32, *, bias: bool = True) -> None:
        self.num_groups = _count("GroupNorm", "num_groups", num_groups, 1)
        self.num_channels = _count("GroupNorm", "num_channels", num_channels, 0)
        if self.num_channels % self.num_groups:
            raise ConvcError(f"GroupNorm: num_channels={num_channels} must be divisible by num_groups={num_groups}")
        self.eps, self.affine = eps, bool(affine)
        self.weight = np.ones(self.num_channels, dtype) if self.affine else None
        self.bias = np.zeros(self.num_channels, dtype) if self.affine and bias else None

    def forward(self, input: Any) -> Any:
        return ops.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


# --- linear and layout modules (issue 8, group D): Linear, Flatten ---

class Linear(Module):
    """y = x @ weight.T + bias over the last axis, as torch.nn.Linear: weight (out_features,
    in_features) and bias (out_features) ~ U(-1/sqrt(in_features), 1/sqrt(in_features)) (torch's
    kaiming-uniform with a = sqrt(5)); zeros where in_features is 0."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = np.float32) -> None:
        self.in_features = as_int("Linear", "in_features", in_features)
        self.out_features = as_int("Linear", "out_features", out_features)
        if self.in_features < 0 or self.out_features < 0:
            raise ConvcError(f"Linear: in_features={in_features} and out_features={out_features} must not be negative")
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features else 0.0
        self.weight = uniform((self.out_features, self.in_features), bound, dtype)
        self.bias = uniform((self.out_features,), bound, dtype) if bias else None

    def forward(self, input: Any) -> Any:
        return ops.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """Joins axes start_dim..end_dim into one, as torch.nn.Flatten (the batch axis stays by default)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        self.start_dim = as_int("Flatten", "start_dim", start_dim)
        self.end_dim = as_int("Flatten", "end_dim", end_dim)

    def forward(self, input: Any) -> Any:
        return ops.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# --- pooling (group C) ------------------------------------------------------------------------


class _MaxPoolNd(Module):
    """What MaxPool1d and MaxPool2d share: torch's constructor, and its repr."""

    fn: Callable[..., Any] = staticmethod(ops.max_pool2d)

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:
        if return_indices:
            raise ConvcError(f"{type(self).__name__}: return_indices=True is not supported")
        self.kernel_size, self.padding, self.dilation, self.ceil_mode = kernel_size, padding, dilation, ceil_mode
        self.stride = stride if stride is not None else kernel_size

    def forward(self, input: Any) -> Any:
        return type(self).fn(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    """Max pooling over (N, C, L) or (C, L), as torch.nn.MaxPool1d."""

    fn = staticmethod(ops.max_pool1d)


class MaxPool2d(_MaxPoolNd):
    """Max pooling over (N, C, H, W) or (C, H, W), as torch.nn.MaxPool2d."""

    fn = staticmethod(ops.max_pool2d)


class _AvgPoolNd(Module):
    """What AvgPool1d and AvgPool2d share: torch's constructor, and its repr."""

    fn: Callable[..., Any] = staticmethod(ops.avg_pool2d)

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        self.kernel_size, self.padding = kernel_size, padding
        self.stride = stride if stride is not None else kernel_size
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def forward(self, input: Any) -> Any:
        return type(self).fn(input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    """Average pooling over (N, C, L) or (C, L), as torch.nn.AvgPool1d."""

    fn = staticmethod(ops.avg_pool1d)


class AvgPool2d(_AvgPoolNd):
    """Average pooling over (N, C, H, W) or (C, H, W), as torch.nn.AvgPool2d (no divisor_override)."""

    fn = staticmethod(ops.avg_pool2d)

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: Any = None) -> None:
        if divisor_override is not None:
            raise ConvcError(f"AvgPool2d: divisor_override={divisor_override!r} is not supported")
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)


class AdaptiveAvgPool2d(Module):
    """Adaptive average pooling over the last two axes, as torch.nn.AdaptiveAvgPool2d."""

    def __init__(self, output_size: Any) -> None:
        self.output_size = output_size

    def forward(self, input: Any) -> Any:
        return ops.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


# --- group A: activations (torch.nn's constructors; `inplace` is accepted and changes nothing,
# since every op returns a fresh array) ---

class GELU(Module):
    """x * Phi(x), exact (approximate='none') or its tanh approximation, as torch.nn.GELU."""

    def __init__(self, approximate: str = "none") -> None:
        ops.normalize("gelu", {"approximate": approximate})
        self.approximate = approximate

    def forward(self, input: Any) -> Any:
        return ops.gelu(input, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class _InplaceActivation(_Activation):
    def __init__(self, inplace: bool = False) -> None:
        self.inplace = inplace


class SiLU(_InplaceActivation):
    """x * sigmoid(x), as torch.nn.SiLU."""

    fn = staticmethod(ops.silu)


class Hardswish(_InplaceActivation):
    """x * relu6(x + 3) / 6, as torch.nn.Hardswish."""

    fn = staticmethod(ops.hardswish)


class Hardsigmoid(_InplaceActivation):
    """relu6(x + 3) / 6, as torch.nn.Hardsigmoid."""

    fn = staticmethod(ops.hardsigmoid)


class LeakyReLU(Module):
    """x for x > 0, else negative_slope * x, as torch.nn.LeakyReLU."""

    def __init__(self, negative_slope: float = 1e-2, inplace: bool = False) -> None:
        ops.normalize("leaky_relu", {"negative_slope": negative_slope})
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, input: Any) -> Any:
        return ops.leaky_relu(input, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Hardtanh(Module):
    """x clamped to [min_val, max_val], as torch.nn.Hardtanh (which needs max_val > min_val)."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> None:
        ops.normalize("hardtanh", {"min_val": min_val, "max_val": max_val})
        if not max_val > min_val:
            raise ConvcError(f"Hardtanh: max_val={max_val} must be greater than min_val={min_val}")
        self.min_val, self.max_val, self.inplace = min_val, max_val, inplace

    def forward(self, input: Any) -> Any:
        return ops.hardtanh(input, self.min_val, self.max_val)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"
