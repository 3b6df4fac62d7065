"""The ATen-to-convc table of convc.from_torch: ATEN maps each ATen op to convc ops.

A key names an op by its overload packet ("aten.add" covers add.Tensor and add.Scalar); its value
is a small function of a Call: the node's arguments bound by the op's schema (`c.self`, `c.weight`,
`c.alpha`, ..., the schema's defaults filled in, lists as tuples, graph values as traced convc
Tensors) and the shape and dtype torch computes for the result. The function returns what convc.ops
builds (a Tensor, or a tuple for ops with several results) and raises Unsupported(reason) for
argument values it cannot map. Adding an op is adding one entry.

The table also decides the ATen level: from_torch keeps the ops listed here whole and lets torch
decompose every other op to the core ATen set first, so composite ops arrive in pieces (hardswish
as add, clamp, mul and div; silu as sigmoid and mul; weight_norm as linalg_vector_norm, div and
mul) and an entry for a composite op (aten.linear, aten.batch_norm) keeps it whole. Entries built
from several convc ops (clamp, leaky_relu) stand until convc has the op itself.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from . import ops
from .tracing import Tensor
from .types import dtype_name


class Unsupported(Exception):
    """An ATen node whose arguments an entry cannot map; the message says which and why."""


class Call:
    """One ATen node to map: `op` (e.g. "aten.add.Tensor"), the schema-bound arguments as attributes,
    and the `shape` and `dtype` of torch's result (dtype None unless float32 or float64)."""

    def __init__(self, op: str, args: dict[str, Any], shape: tuple[int, ...] | None, dtype: np.dtype | None) -> None:
        self.op, self.args, self.shape, self.dtype = op, args, shape, dtype

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["args"][name]
        except KeyError:
            raise AttributeError(f"{self.__dict__.get('op')} has no argument {name!r}") from None

    def get(self, name: str, default: Any = None) -> Any:
        """An argument that only some overloads have (div's rounding_mode)."""
        return self.args.get(name, default)


def named_constant(graph: Any, value: np.ndarray, name: str) -> Tensor:
    """A constant of the graph being traced, named `name` as far as the IR allows (word characters
    and dots; a suffix where the name is taken)."""
    base = re.sub(r"[^A-Za-z0-9_.]", "_", name) or "const"
    unique, count = base, 0
    while unique in graph.dag:
        count += 1
        unique = f"{base}_{count}"
    return Tensor(graph, graph.add_const(np.array(value, copy=True), name=unique))


def _in_dtype(value: Any, dtype: np.dtype | None) -> Any:
    """`value` in the result's dtype: torch promotes a float32 operand to float64 (and a 0-d operand to
    the other's dtype); convc ops take one dtype, so a constant operand converts here, on import."""
    if not isinstance(value, Tensor) or dtype is None or value.dtype == dtype:
        return value
    node = value.graph.node(value.name)
    if node.op != "const" or node.value is None:
        raise Unsupported(f"operand %{value.name} is {value.type} but the result is {dtype_name(dtype)}; "
                          f"convc has no cast op")
    return named_constant(value.graph, node.value.astype(dtype), f"{value.name}.{dtype_name(dtype)}")


def _scaled(value: Any, alpha: Any) -> Any:
    if alpha == 1:
        return value
    return ops.mul(value, alpha) if isinstance(value, Tensor) else value * alpha


def _binary(fn: Callable, c: Call, a: Any, b: Any) -> Any:
    return fn(_in_dtype(a, c.dtype), _in_dtype(b, c.dtype))


def _div(c: Call) -> Any:
    mode = c.get("rounding_mode")
    if mode is not None:
        raise Unsupported(f"rounding_mode={mode!r} (convc divides without rounding)")
    return _binary(ops.div, c, c.self, c.other)


def _clamp(x: Any, low: Any, high: Any, dtype: np.dtype | None) -> Any:
    """torch.clamp as maximum then minimum: NaN propagates, and low > high gives high, as in torch."""
    if low is not None:
        x = ops.maximum(x, _in_dtype(low, dtype))
    if high is not None:
        x = ops.minimum(x, _in_dtype(high, dtype))
    return x


def _hardtanh(c: Call) -> Any:
    if (c.min_val, c.max_val) == (0, 6):
        return ops.relu6(c.self)
    return _clamp(c.self, c.min_val, c.max_val, c.dtype)


def _pow(c: Call) -> Any:
    x, exponent = c.self, c.exponent
    if not isinstance(x, Tensor):
        raise Unsupported("a number raised to a tensor power")
    if not isinstance(exponent, Tensor):
        return x if exponent == 1 else ops.mul(x, x) if exponent == 2 else ops.pow(x, exponent)
    return ops.pow(x, _in_dtype(exponent, c.dtype))


def _dims(c: Call) -> tuple[int, ...]:
    """A reduction's `dim` argument as a tuple (None or empty: every axis, as torch reads it)."""
    dim = c.get("dim")
    if dim is None or dim == ():
        return tuple(range(len(c.self.shape)))
    return tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)


def _mean(c: Call) -> Any:
    if c.get("dtype") is not None:
        raise Unsupported("mean with a dtype argument")
    return ops.mean(c.self, _dims(c), c.get("keepdim", False))


def _summed(x: Tensor, dims: tuple[int, ...], keepdim: bool) -> Any:
    """The sum over `dims`, as the mean times the count of the reduced elements."""
    count = int(np.prod([x.shape[d] for d in dims]))
    return ops.mul(ops.mean(x, dims, keepdim), float(count))


def _sum(c: Call) -> Any:
    if c.get("dtype") is not None:
        raise Unsupported("sum with a dtype argument")
    return _summed(c.self, _dims(c), c.get("keepdim", False))


def _vector_norm(c: Call) -> Any:
    """linalg_vector_norm (weight_norm's norm): the 2-norm as sqrt(sum of squares)."""
    if c.ord != 2 or c.get("dtype") is not None:
        raise Unsupported(f"vector norm of order {c.ord!r} (convc maps the 2-norm)")
    return ops.sqrt(_summed(ops.mul(c.self, c.self), _dims(c), c.keepdim))


def _batch_norm(c: Call) -> Any:
    if c.training:
        raise Unsupported("batch_norm in training mode (convc computes inference with running statistics)")
    if c.running_mean is None or c.running_var is None:
        raise Unsupported("batch_norm without running statistics")
    return ops.batch_norm(c.input, c.running_mean, c.running_var, c.weight, c.bias, c.eps)


def _no_training_batch_norm(c: Call) -> tuple:
    """_native_batch_norm_legit_no_training: (out, saved mean, saved rstd); only out is used."""
    out = ops.batch_norm(c.input, c.running_mean, c.running_var, c.weight, c.bias, c.eps)
    return out, None, None


def _avg_pool(rank: int) -> Callable[[Call], Any]:
    def pool(c: Call) -> Any:
        if c.get("divisor_override") is not None:
            raise Unsupported("avg_pool with divisor_override")
        fn = ops.avg_pool1d if rank == 1 else ops.avg_pool2d
        return fn(c.self, c.kernel_size, c.stride or None, c.padding, c.ceil_mode, c.count_include_pad)
    return pool


def _max_pool(rank: int) -> Callable[[Call], Any]:
    def pool(c: Call) -> Any:
        fn = ops.max_pool1d if rank == 1 else ops.max_pool2d
        out = fn(c.self, c.kernel_size, c.stride or None, c.padding, c.dilation, c.ceil_mode)
        return (out, None) if c.op.startswith("aten.max_pool2d_with_indices") else out
    return pool


def _select(c: Call) -> Any:
    """x.select(dim, i): a one-wide slice without its axis."""
    size = c.self.shape[c.dim]
    index = c.index + size if c.index < 0 else c.index
    return ops.squeeze(ops.slice(c.self, c.dim, index, index + 1), c.dim)


def _addmm(c: Call) -> Any:
    """bias + mat1 @ mat2 where mat2 is a weight's transpose (what linear decomposes to)."""
    if c.beta != 1 or c.alpha != 1:
        raise Unsupported("addmm with beta or alpha other than 1")
    return ops.linear(c.mat1, ops.transpose(c.mat2, 0, 1), c.self)


_CONV = {1: ops.conv1d, 2: ops.conv2d, 3: ops.conv3d}
_CONV_TRANSPOSE = {1: ops.conv_transpose1d, 2: ops.conv_transpose2d, 3: ops.conv_transpose3d}


def _by_rank(table: dict[int, Callable], c: Call) -> Callable:
    rank = c.weight.ndim - 2
    if rank not in table:
        raise Unsupported(f"a weight of rank {c.weight.ndim} (convc convolves 1-3 spatial axes)")
    return table[rank]


def _conv(c: Call) -> Any:
    """aten.conv1d/2d/3d; the .padding overloads carry 'same' or 'valid'."""
    return _by_rank(_CONV, c)(c.input, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)


def _conv_transpose(c: Call) -> Any:
    return _by_rank(_CONV_TRANSPOSE, c)(c.input, c.weight, c.bias, c.stride, c.padding, c.output_padding,
                                        c.groups, c.dilation)


def _convolution(c: Call) -> Any:
    """aten.convolution (and aten._convolution): the core form of every convolution."""
    if c.transposed:
        return _conv_transpose(c)
    return _conv(c)


def _to_copy(c: Call) -> Any:
    if c.dtype is None:
        raise Unsupported("a conversion to a dtype other than float32 or float64")
    return _in_dtype(c.self, c.dtype)


def _view(c: Call) -> Any:
    """view, reshape, squeeze, unsqueeze, flatten: the data under torch's result shape (a view in
    convc's buffer plan where memory allows); a view of a constant (`self.mean[:, None]`) becomes
    the constant in its new shape."""
    if tuple(c.self.shape) == c.shape:
        return c.self
    node = c.self.graph.node(c.self.name)
    if node.op == "const" and node.value is not None:
        return named_constant(c.self.graph, node.value.reshape(c.shape), f"{c.self.name}.view")
    symbolic = [i for i, size in enumerate(c.shape) if not isinstance(size, int)]
    if len(symbolic) > 1:
        raise Unsupported(f"a reshape to {len(symbolic)} symbolic sizes ({c.shape}); one is inferred as -1")
    return ops.reshape(c.self, tuple(-1 if i in symbolic else size for i, size in enumerate(c.shape)))


def _expand(c: Call) -> Any:
    return c.self if tuple(c.self.shape) == c.shape else ops.broadcast_to(c.self, c.shape)


def _identity(c: Call) -> Any:
    return c.self


ATEN: dict[str, Callable[[Call], Any]] = {
    # convolutions
    "aten.convolution": _convolution,
    "aten._convolution": _convolution,
    "aten.conv1d": _conv,
    "aten.conv2d": _conv,
    "aten.conv3d": _conv,
    "aten.conv_transpose1d": _conv_transpose,
    "aten.conv_transpose2d": _conv_transpose,
    "aten.conv_transpose3d": _conv_transpose,
    # padding and pooling
    "aten.pad": lambda c: ops.pad(c.self, c.pad, c.mode, c.value),
    "aten.constant_pad_nd": lambda c: ops.pad(c.self, c.pad, "constant", c.value),
    "aten.reflection_pad1d": lambda c: ops.pad(c.self, c.padding, "reflect"),
    "aten.reflection_pad2d": lambda c: ops.pad(c.self, c.padding, "reflect"),
    "aten.reflection_pad3d": lambda c: ops.pad(c.self, c.padding, "reflect"),
    "aten.replication_pad1d": lambda c: ops.pad(c.self, c.padding, "replicate"),
    "aten.replication_pad2d": lambda c: ops.pad(c.self, c.padding, "replicate"),
    "aten.replication_pad3d": lambda c: ops.pad(c.self, c.padding, "replicate"),
    "aten._pad_circular": lambda c: ops.pad(c.self, c.pad, "circular"),
    "aten.adaptive_avg_pool1d": lambda c: ops.adaptive_avg_pool1d(c.self, c.output_size),
    # activations
    "aten.adaptive_avg_pool2d": lambda c: ops.adaptive_avg_pool2d(c.self, c.output_size),
    "aten.max_pool1d": _max_pool(1),
    "aten.max_pool2d": _max_pool(2),
    "aten.max_pool2d_with_indices": _max_pool(2),
    "aten.avg_pool1d": _avg_pool(1),
    "aten.avg_pool2d": _avg_pool(2),

    "aten.batch_norm": _batch_norm,
    "aten._native_batch_norm_legit_no_training": _no_training_batch_norm,
    "aten.layer_norm": lambda c: ops.layer_norm(c.input, c.normalized_shape, c.weight, c.bias, c.eps),
    "aten.group_norm": lambda c: ops.group_norm(c.input, c.num_groups, c.weight, c.bias, c.eps),
    "aten.mean": _mean,
    "aten.sum": _sum,
    "aten.linalg_vector_norm": _vector_norm,
    "aten.linear": lambda c: ops.linear(c.input, c.weight, c.bias),
    "aten.addmm": _addmm,

    "aten.relu": lambda c: ops.relu(c.self),
    "aten.relu6": lambda c: ops.relu6(c.self),
    "aten.hardtanh": _hardtanh,
    "aten.sigmoid": lambda c: ops.sigmoid(c.self),
    "aten.tanh": lambda c: ops.tanh(c.self),
    "aten.leaky_relu": lambda c: ops.leaky_relu(c.self, c.negative_slope),
    "aten.gelu": lambda c: ops.gelu(c.self, c.approximate),
    "aten.silu": lambda c: ops.silu(c.self),
    "aten.hardswish": lambda c: ops.hardswish(c.self),
    "aten.hardsigmoid": lambda c: ops.hardsigmoid(c.self),
    "aten.exp": lambda c: ops.exp(c.self),
    "aten.sin": lambda c: ops.sin(c.self),
    "aten.cos": lambda c: ops.cos(c.self),
    "aten.sqrt": lambda c: ops.sqrt(c.self),
    "aten.rsqrt": lambda c: ops.rsqrt(c.self),
    "aten.abs": lambda c: ops.abs(c.self),
    "aten.clamp": lambda c: _clamp(c.self, c.min, c.max, c.dtype),
    "aten.clamp_min": lambda c: _clamp(c.self, c.min, None, c.dtype),
    "aten.clamp_max": lambda c: _clamp(c.self, None, c.max, c.dtype),
    # arithmetic (Tensor and Scalar overloads)
    "aten.add": lambda c: _binary(ops.add, c, c.self, _scaled(c.other, c.alpha)),
    "aten.sub": lambda c: _binary(ops.sub, c, c.self, _scaled(c.other, c.alpha)),
    "aten.rsub": lambda c: _binary(ops.sub, c, c.other, _scaled(c.self, c.alpha)),
    "aten.mul": lambda c: _binary(ops.mul, c, c.self, c.other),
    "aten.div": _div,
    "aten.maximum": lambda c: _binary(ops.maximum, c, c.self, c.other),
    "aten.minimum": lambda c: _binary(ops.minimum, c, c.self, c.other),
    "aten.neg": lambda c: ops.neg(c.self),
    "aten.reciprocal": lambda c: ops.reciprocal(c.self),
    "aten.pow": _pow,
    # identities at inference (dropout in eval mode and contiguous decompose to clone or alias), views
    "aten.clone": _identity,
    "aten.alias": _identity,
    "aten.detach": _identity,
    "aten.lift_fresh_copy": _identity,
    "aten._to_copy": _to_copy,
    "aten.view": _view,
    "aten._unsafe_view": _view,
    "aten.reshape": _view,
    "aten.flatten": _view,
    "aten.squeeze": _view,
    "aten.unsqueeze": _view,
    "aten.permute": lambda c: ops.permute(c.self, c.dims),
    "aten.transpose": lambda c: ops.transpose(c.self, c.dim0, c.dim1),
    "aten.t": lambda c: ops.transpose(c.self, 0, 1) if len(c.self.shape) == 2 else c.self,
    "aten.slice": lambda c: ops.slice(c.self, c.dim, c.start, c.end, c.step),
    "aten.select": _select,
    "aten.cat": lambda c: ops.cat(list(c.tensors), c.dim),
    "aten.split": lambda c: ops.split(c.self, c.split_size, c.dim),
    "aten.split_with_sizes": lambda c: ops.split(c.self, list(c.split_sizes), c.dim),
    "aten.expand": _expand,
    # checks that export inserts; they compute nothing
    "aten._assert_tensor_metadata": lambda c: None,
    "aten._assert_scalar": lambda c: None,
}
