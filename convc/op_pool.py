"""Definitions of the window pools of torch.nn.functional: max_pool1d / max_pool2d, avg_pool1d /
avg_pool2d, and adaptive_avg_pool2d.

Per spatial axis of size L, with kernel k, stride s, padding p and dilation d, a window pool has
floor_or_ceil((L + 2p - d*(k-1) - 1) / s) + 1 outputs; with ceil_mode a last window that would
start in the right padding (at or past L + p in padded coordinates) is dropped. Output i's window
starts at i*s - p. Padding is at most k // 2. max reads the padding as -inf; avg divides by the
window clipped to the padded input (count_include_pad) or to the input (not count_include_pad).
adaptive_avg_pool2d's bin i of O over L covers [floor(i*L/O), ceil((i+1)*L/O)), as
adaptive_avg_pool1d's; a None output size keeps the input's.

The attributes keep torch's arguments (stride already resolved from None to kernel_size). Each
result channel comes from the same input channel, so the pools carry the traits channelwise and
blocked: between blocked convs they compute on the blocked layout.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .args import int_tuple, is_int
from .attributes import boolean, ints
from .errors import ConvcError
from .registry import AttrSchema, OpDef, register
from .types import TensorType

POOL_TRAITS = frozenset({"pool", "channelwise", "blocked"})


def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """Outputs of one axis by torch's rule (may be < 1, which the shape rule rejects). With
    ceil_mode, torch rounds the window count up and then drops a last window that would start in
    the right padding: in closed form (one floor, no comparison of sizes, so that it holds for a
    symbolic size too) the windows that start before size + padding, where the rounded-up count
    reaches past them (excess >= 0; padding <= kernel / 2 keeps excess below the stride)."""
    if not ceil_mode:
        return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    excess = padding - dilation * (kernel - 1) + stride - 1
    return (size + padding - 1 + min(excess, 0)) // stride + 1


def _flag(op: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name}={value!r} must be a bool, got {type(value).__name__}")
    return bool(value)


def _window(op: str, rank: int, kernel_size: Any, stride: Any, padding: Any) -> dict[str, Any]:
    kernel = int_tuple(op, "kernel_size", kernel_size, rank, minimum=1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride_t = kernel  # torch: an omitted (or empty) stride is the kernel size
    else:
        stride_t = int_tuple(op, "stride", stride, rank, minimum=1)
    return {"kernel_size": kernel, "stride": stride_t, "padding": int_tuple(op, "padding", padding, rank, minimum=0)}


def _normalize_max_pool(op: str, rank: int, kernel_size: Any, stride: Any = None, padding: Any = 0,
                        dilation: Any = 1, ceil_mode: Any = False) -> dict[str, Any]:
    return {**_window(op, rank, kernel_size, stride, padding),
            "dilation": int_tuple(op, "dilation", dilation, rank, minimum=1),
            "ceil_mode": _flag(op, "ceil_mode", ceil_mode)}


def _normalize_avg_pool(op: str, rank: int, kernel_size: Any, stride: Any = None, padding: Any = 0,
                        ceil_mode: Any = False, count_include_pad: Any = True) -> dict[str, Any]:
    return {**_window(op, rank, kernel_size, stride, padding), "ceil_mode": _flag(op, "ceil_mode", ceil_mode),
            "count_include_pad": _flag(op, "count_include_pad", count_include_pad)}


def _check_input(op: str, rank: int, x: TensorType, channels_may_be_empty: bool = False) -> None:
    if x.rank not in (rank + 1, rank + 2):
        raise ConvcError(f"{op}: input must be {rank + 1}-D (unbatched) or {rank + 2}-D (batched), got shape {x.shape}")
    checked = x.shape[-rank:] if channels_may_be_empty else x.shape[-rank - 1:]
    if 0 in checked:
        what = "spatial sizes" if channels_may_be_empty else "channels and spatial sizes"
        raise ConvcError(f"{op}: input {what} must be non-zero (only the batch may be empty), got shape {x.shape}")


def _infer_window_pool(op: str, rank: int, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    x = types[0]
    _check_input(op, rank, x)
    kernel, stride, padding = attrs["kernel_size"], attrs["stride"], attrs["padding"]
    dilation = attrs.get("dilation", (1,) * rank)
    for axis, (k, p) in enumerate(zip(kernel, padding)):
        if p > k // 2:
            raise ConvcError(f"{op}: padding={tuple(padding)} must be at most half of kernel_size={tuple(kernel)}, "
                             f"got padding {p} for kernel size {k} on spatial axis {axis}")
    out = []
    for axis, (size, k, s, p, d) in enumerate(zip(x.shape[-rank:], kernel, stride, padding, dilation)):
        length = pool_output_size(size, k, s, p, d, attrs["ceil_mode"])
        if length < 1:
            raise ConvcError(f"{op}: the output would be empty on spatial axis {axis}: input size {size}, "
                             f"kernel_size={k}, stride={s}, padding={p}, dilation={d} give {length} outputs")
        out.append(length)
    return TensorType(x.shape[:-rank] + tuple(out), x.dtype)


def pool_flops(types: list[TensorType], out: TensorType) -> int:
    """A pool reads every input element at least once and writes every output element."""
    return 4 * max(types[0].size, out.size)


def _max_schema(rank: int) -> AttrSchema:
    return AttrSchema({"kernel_size": ints(1, rank), "stride": ints(1, rank), "padding": ints(0, rank),
                       "dilation": ints(1, rank), "ceil_mode": boolean})


def _avg_schema(rank: int) -> AttrSchema:
    return AttrSchema({"kernel_size": ints(1, rank), "stride": ints(1, rank), "padding": ints(0, rank),
                       "ceil_mode": boolean, "count_include_pad": boolean})


for _rank in (1, 2):
    register(OpDef(f"max_pool{_rank}d", ("input",),
                   normalize=lambda kernel_size, r=_rank, **kw: _normalize_max_pool(f"max_pool{r}d", r, kernel_size,
                                                                                    **kw),
                   infer=lambda types, attrs, r=_rank: _infer_window_pool(f"max_pool{r}d", r, types, attrs),
                   attributes=_max_schema(_rank), traits=POOL_TRAITS, flops=pool_flops))
    register(OpDef(f"avg_pool{_rank}d", ("input",),
                   normalize=lambda kernel_size, r=_rank, **kw: _normalize_avg_pool(f"avg_pool{r}d", r, kernel_size,
                                                                                    **kw),
                   infer=lambda types, attrs, r=_rank: _infer_window_pool(f"avg_pool{r}d", r, types, attrs),
                   attributes=_avg_schema(_rank), traits=POOL_TRAITS, flops=pool_flops))


def _normalize_adaptive(output_size: Any) -> dict[str, Any]:
    op = "adaptive_avg_pool2d"
    if is_int(output_size):
        sizes: tuple = (int(output_size),) * 2
    elif isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ConvcError(f"{op}: output_size={tuple(output_size)!r} must have 2 elements, got {len(output_size)}")
        if not all(v is None or is_int(v) for v in output_size):
            raise TypeError(f"{op}: output_size={tuple(output_size)!r} must hold ints or None")
        sizes = tuple(None if v is None else int(v) for v in output_size)
    else:
        raise TypeError(f"{op}: output_size={output_size!r} must be an int or a pair of ints (or None), "
                        f"got {type(output_size).__name__}")
    if any(v is not None and v < 0 for v in sizes):
        raise ConvcError(f"{op}: output_size={sizes} must not hold negative sizes")
    return {"output_size": sizes}


def _sizes_or_none(value: Any) -> str | None:
    if not isinstance(value, tuple) or len(value) != 2:
        return "must be a list of 2 elements"
    if not all(v is None or (is_int(v) and v >= 0) for v in value):
        return "must hold ints >= 0 or none"
    return None


def _infer_adaptive(types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
    x = types[0]
    _check_input("adaptive_avg_pool2d", 2, x, channels_may_be_empty=True)
    out = tuple(size if wanted is None else wanted for size, wanted in zip(x.shape[-2:], attrs["output_size"]))
    return TensorType(x.shape[:-2] + out, x.dtype)


register(OpDef("adaptive_avg_pool2d", ("input",), normalize=_normalize_adaptive, infer=_infer_adaptive,
               attributes=AttrSchema({"output_size": _sizes_or_none}), traits=POOL_TRAITS, flops=pool_flops))
