"""convc.from_torch: a torch.nn.Module built from the ops convc knows, traced into a convc Graph.

torch.fx records the module's forward; each call is replayed with convc's op or module of the
same semantics (parameters copied as constants), under convc.trace. Anything else is a
ConvcError naming it.
"""
from __future__ import annotations

import inspect
import operator
from typing import Any, Callable

import numpy as np

from . import nn, ops
from .errors import ConvcError
from .ir import Graph
from .tracing import trace


def _array(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _conv_module(torch: Any, module: Any) -> Callable:
    rank = len(module.kernel_size)
    transposed = isinstance(module, (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d))
    cls = getattr(nn, f"ConvTranspose{rank}d" if transposed else f"Conv{rank}d")
    weight = _array(module.weight)
    kwargs = dict(stride=module.stride, padding=module.padding, dilation=module.dilation, groups=module.groups,
                  bias=module.bias is not None, padding_mode=module.padding_mode, dtype=weight.dtype)
    if transposed:
        kwargs["output_padding"] = module.output_padding
    ours = cls(module.in_channels, module.out_channels, module.kernel_size, **kwargs)
    ours.weight = weight
    ours.bias = None if module.bias is None else _array(module.bias)
    return ours


def _module(torch: Any, module: Any) -> Callable:
    tnn = torch.nn
    if isinstance(module, (tnn.Conv1d, tnn.Conv2d, tnn.Conv3d, tnn.ConvTranspose1d, tnn.ConvTranspose2d,
                           tnn.ConvTranspose3d)):
        return _conv_module(torch, module)
    simple = {tnn.ReLU: ops.relu, tnn.ReLU6: ops.relu6, tnn.Sigmoid: ops.sigmoid, tnn.Tanh: ops.tanh,
              tnn.Identity: lambda x: x, tnn.Dropout: lambda x: x}
    for cls, fn in simple.items():
        if type(module) is cls:
            return fn
    if isinstance(module, tnn.AdaptiveAvgPool1d):
        return nn.AdaptiveAvgPool1d(module.output_size)
    raise ConvcError(f"from_torch: module {type(module).__name__} is not supported; convc imports "
                     f"Conv/ConvTranspose 1-3d, AdaptiveAvgPool1d, ReLU, ReLU6, Sigmoid, Tanh, Identity, Dropout")


def _functions(torch: Any) -> dict[Any, Callable]:
    F = torch.nn.functional
    table = {F.conv1d: ops.conv1d, F.conv2d: ops.conv2d, F.conv3d: ops.conv3d,
             F.conv_transpose1d: ops.conv_transpose1d, F.conv_transpose2d: ops.conv_transpose2d,
             F.conv_transpose3d: ops.conv_transpose3d, F.pad: ops.pad,
             F.adaptive_avg_pool1d: ops.adaptive_avg_pool1d, F.relu: ops.relu, torch.relu: ops.relu,
             F.relu6: ops.relu6, torch.sigmoid: ops.sigmoid, F.sigmoid: ops.sigmoid, torch.tanh: ops.tanh,
             F.tanh: ops.tanh, torch.add: ops.add, operator.add: ops.add, torch.sub: ops.sub, operator.sub: ops.sub,
             torch.mul: ops.mul, operator.mul: ops.mul, torch.div: ops.div, operator.truediv: ops.div,
             torch.maximum: ops.maximum, torch.minimum: ops.minimum}
    return table


METHODS = {"relu": ops.relu, "sigmoid": ops.sigmoid, "tanh": ops.tanh, "add": ops.add, "sub": ops.sub,
           "mul": ops.mul, "div": ops.div}
IGNORED_KWARGS = {"inplace": False}


def _call(fn: Callable, name: str, args: tuple, kwargs: dict) -> Any:
    for key, harmless in IGNORED_KWARGS.items():
        if kwargs.get(key, harmless) != harmless:
            raise ConvcError(f"from_torch: {name}({key}={kwargs[key]!r}) is not supported")
        kwargs.pop(key, None)
    if name in ("add", "sub") and kwargs.pop("alpha", 1) != 1:
        raise ConvcError(f"from_torch: {name} with alpha != 1 is not supported")
    return fn(*args, **kwargs)


def from_torch(module: Any, *example_inputs: Any) -> Graph:
    """Trace a torch.nn.Module (conv, transposed conv, pad, pooling and elementwise ops) into a
    convc Graph, its parameters as constants; the example inputs fix shapes and dtypes."""
    try:
        import torch
        import torch.fx
    except ImportError:
        raise ImportError("convc.from_torch needs PyTorch: pip install torch==2.13.0 (or the convc[torch] extra)") \
            from None
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch: module must be a torch.nn.Module, got {type(module).__name__}")
    try:
        traced = torch.fx.symbolic_trace(module)
    except Exception as error:  # torch.fx reports why it cannot trace the forward
        raise ConvcError(f"from_torch: torch.fx cannot trace {type(module).__name__}: {error}") from None
    functions = _functions(torch)
    modules = {name: _module(torch, sub) for name, sub in traced.named_modules() if name and not list(sub.children())}
    arrays = [_array(x) if isinstance(x, torch.Tensor) else x for x in example_inputs]

    def replay(*inputs: Any) -> Any:
        values: dict[Any, Any] = {}
        remaining = list(inputs)

        def value(argument: Any) -> Any:
            if isinstance(argument, torch.fx.Node):
                return values[argument]
            if isinstance(argument, torch.Tensor):
                return _array(argument)
            if isinstance(argument, (tuple, list)):
                return type(argument)(value(a) for a in argument)
            return argument

        for node in traced.graph.nodes:
            args = tuple(value(a) for a in node.args)
            kwargs = {k: value(v) for k, v in node.kwargs.items()}
            if node.op == "placeholder":
                if not remaining:
                    raise ConvcError(f"from_torch: the module takes an input {node.target!r} that no example "
                                     f"input was given for")
                values[node] = remaining.pop(0)
            elif node.op == "get_attr":
                values[node] = _array(operator.attrgetter(node.target)(traced))
            elif node.op == "call_module":
                values[node] = modules[node.target](*args, **kwargs)
            elif node.op == "call_function":
                fn = functions.get(node.target)
                if fn is None:
                    raise ConvcError(f"from_torch: function {getattr(node.target, '__name__', node.target)} is not "
                                     f"supported")
                values[node] = _call(fn, getattr(node.target, "__name__", str(node.target)), args, kwargs)
            elif node.op == "call_method":
                if node.target not in METHODS:
                    raise ConvcError(f"from_torch: method Tensor.{node.target} is not supported")
                values[node] = _call(METHODS[node.target], node.target, args, kwargs)
            elif node.op == "output":
                return args[0]
        raise ConvcError("from_torch: the traced module has no output")

    replay.__name__ = type(module).__name__
    names = [node.target for node in traced.graph.nodes if node.op == "placeholder"]
    replay.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  (the graph's input names)
        [inspect.Parameter(str(name), inspect.Parameter.POSITIONAL_ONLY) for name in names])
    return trace(replay, *arrays)
