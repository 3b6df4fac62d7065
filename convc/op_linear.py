"""Definition of linear (torch.nn.functional.linear): y = x @ W^T + b over the last axis of x,
any leading axes, W of shape (out_features, in_features).

The op's bias holds one value per output feature (or a single value), so that bias folding and
batch-norm folding can add to it; torch's other forms (a 1-D weight, a bias with one row per
input row) are composed from other ops by convc.ops.linear. Its kernel applies a fused
activation (trait has_epilogue) and reads its bias like a conv's, per output feature.
"""
from __future__ import annotations

import math
from typing import Any

from .attributes import EPILOGUE
from .errors import ConvcError
from .registry import AttrSchema, OpDef, register, same_dtype
from .types import TensorType


def linear_rows(x: TensorType) -> int:
    """The rows of the product: the input's leading axes flattened."""
    return math.prod(x.shape[:-1])


def _infer_linear(types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    dtype = same_dtype("linear", types, ("input", "weight", "bias"))
    x, w = types[0], types[1]
    if x.rank < 1 or w.rank < 1:
        raise ConvcError(f"linear: input and weight must be at least 1-D, got shapes {x.shape} and {w.shape}")
    if w.rank != 2:
        raise ConvcError(f"linear: weight must be 2-D (out_features, in_features), got shape {w.shape}")
    if x.shape[-1] != w.shape[1]:
        raise ConvcError(f"linear: input of shape {x.shape} and weight of shape {w.shape} cannot be multiplied: "
                         f"input.shape[-1] = {x.shape[-1]} must equal in_features = weight.shape[1] = {w.shape[1]}")
    features = w.shape[0]
    if len(types) > 2:
        b = types[2].shape
        if len(b) > 2 or (b and b[-1] not in (1, features)) or (len(b) == 2 and b[0] != 1):
            raise ConvcError(f"linear: bias of shape {b} must broadcast to ({features},), one value per output "
                             f"feature (out_features = weight.shape[0] = {features})")
    return TensorType(x.shape[:-1] + (features,), dtype)


def linear_flops(types: list[TensorType], out: TensorType) -> int:
    """Multiply-adds x 2: every output element takes a row of in_features products."""
    return 2 * out.size * max(1, types[1].shape[1])


register(OpDef("linear", ("input", "weight", "bias"), normalize=lambda: {}, infer=_infer_linear, min_operands=2,
               attributes=AttrSchema(optional=dict(EPILOGUE)), traits=frozenset({"has_epilogue"}),
               channel_axis=lambda attrs, rank: rank - 1, bias_operand=2, flops=linear_flops))
