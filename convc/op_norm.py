"""Definitions of the normalizations (torch.nn.functional): batch_norm (inference, running
statistics), layer_norm over the last axes, group_norm over groups of channels.

Each computes y = (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance. weight
and bias are optional trailing operands; the public functions pass ones for a missing weight
when a bias is given. batch_norm and group_norm keep channels apart (trait `channelwise`) and
have kernels for the channel-blocked layout.
"""
from __future__ import annotations

import numbers
from typing import Any

from .args import as_int, is_int
from .attributes import EPILOGUE, integer, ints, number
from .errors import ConvcError
from .registry import AttrSchema, OpDef, register, same_dtype
from .types import TensorType


def normalize_eps(op: str, eps: Any, non_negative: bool = False) -> float:
    """eps as a float; TypeError for anything but a real number."""
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool):
        raise TypeError(f"{op}: eps={eps!r} must be a number")
    if non_negative and eps < 0:
        raise ConvcError(f"{op}: eps={eps!r} must be non-negative")
    return float(eps)


def _check_parameter(op: str, name: str, given: TensorType, channels: int, exact: bool) -> None:
    """A per-channel operand: shape (C,), or (with exact=False, as torch's batch_norm) C elements."""
    if given.shape != (channels,) and (exact or given.size != channels):
        raise ConvcError(f"{op}: {name} must have shape ({channels},) to match the {channels} input channels "
                         f"(axis 1), got shape {given.shape}")


def _normalize_batch_norm(eps: Any = 1e-5) -> dict[str, Any]:
    return {"eps": normalize_eps("batch_norm", eps, non_negative=True)}


def _infer_batch_norm(types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    names = ("input", "running_mean", "running_var", "weight", "bias")
    dtype = same_dtype("batch_norm", types, names)
    x = types[0]
    if x.rank < 2:
        raise ConvcError(f"batch_norm: input must have at least 2 dimensions (N, C, ...), got shape {x.shape}")
    if attrs["eps"] < 0:
        raise ConvcError(f"batch_norm: eps={attrs['eps']!r} must be non-negative")
    channels = x.shape[1]
    for name, given in zip(names[1:], types[1:]):
        statistic = name.startswith("running")
        if statistic and given.rank != 1:
            raise ConvcError(f"batch_norm: {name} must be 1-D with {channels} elements, got shape {given.shape}")
        _check_parameter("batch_norm", name, given, channels, exact=False)
    return TensorType(x.shape, dtype)


def _normalize_layer_norm(normalized_shape: Any, eps: Any = 1e-5) -> dict[str, Any]:
    if not isinstance(normalized_shape, (tuple, list)) or not all(is_int(d) for d in normalized_shape):
        raise TypeError(f"layer_norm: normalized_shape={normalized_shape!r} must be a tuple or list of ints")
    shape = tuple(int(d) for d in normalized_shape)
    if not shape:
        raise ConvcError("layer_norm: normalized_shape=() must contain at least one size")
    return {"normalized_shape": shape, "eps": normalize_eps("layer_norm", eps)}


def _infer_layer_norm(types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    dtype = same_dtype("layer_norm", types, ("input", "weight", "bias"))
    x, shape = types[0], tuple(attrs["normalized_shape"])
    if not shape:
        raise ConvcError("layer_norm: normalized_shape=() must contain at least one size")
    if len(shape) > x.rank or x.shape[x.rank - len(shape):] != shape:
        raise ConvcError(f"layer_norm: normalized_shape={list(shape)} must match the last axes of the input, "
                         f"expected input of shape [*, {', '.join(map(str, shape))}], got {list(x.shape)}")
    for name, given in zip(("weight", "bias"), types[1:]):
        if given.shape != shape:
            raise ConvcError(f"layer_norm: {name} must have the shape normalized_shape={list(shape)}, "
                             f"got shape {list(given.shape)}")
    return TensorType(x.shape, dtype)


def _normalize_group_norm(num_groups: Any, eps: Any = 1e-5) -> dict[str, Any]:
    groups = as_int("group_norm", "num_groups", num_groups)
    if groups < 1:
        raise ConvcError(f"group_norm: num_groups={groups} must be positive")
    return {"num_groups": groups, "eps": normalize_eps("group_norm", eps)}


def _infer_group_norm(types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    dtype = same_dtype("group_norm", types, ("input", "weight", "bias"))
    x, groups = types[0], attrs["num_groups"]
    if x.rank < 2:
        raise ConvcError(f"group_norm: input must have at least 2 dimensions (N, C, ...), got shape {x.shape}")
    channels = x.shape[1]
    if channels % groups:
        raise ConvcError(f"group_norm: num_groups={groups} must divide the number of input channels, "
                         f"got input of shape {x.shape} ({channels} channels)")
    for name, given in zip(("weight", "bias"), types[1:]):
        _check_parameter("group_norm", name, given, channels, exact=True)
    values = x.shape[0] * (channels // groups)
    for size in x.shape[2:]:
        values = values * size
    if isinstance(values, int) and values == 1:  # torch's check, in eval mode too
        raise ConvcError(f"group_norm: expected more than 1 value per group, got input of shape {x.shape} "
                         f"with num_groups={groups}")
    return TensorType(x.shape, dtype)


# each norm applies a fused activation (the epilogue fusion sets it) to its output before the store
register(OpDef("batch_norm", ("input", "running_mean", "running_var", "weight", "bias"),
               normalize=_normalize_batch_norm, infer=_infer_batch_norm, min_operands=3,
               attributes=AttrSchema({"eps": number}, optional=dict(EPILOGUE)),
               traits=frozenset({"channelwise", "blocked", "has_epilogue"})))
register(OpDef("layer_norm", ("input", "weight", "bias"), normalize=_normalize_layer_norm,
               infer=_infer_layer_norm, min_operands=1,
               attributes=AttrSchema({"normalized_shape": ints(0), "eps": number}, optional=dict(EPILOGUE)),
               traits=frozenset({"has_epilogue"})))
register(OpDef("group_norm", ("input", "weight", "bias"), normalize=_normalize_group_norm,
               infer=_infer_group_norm, min_operands=1,
               attributes=AttrSchema({"num_groups": integer(1), "eps": number}, optional=dict(EPILOGUE)),
               traits=frozenset({"channelwise", "blocked", "has_epilogue"})))
