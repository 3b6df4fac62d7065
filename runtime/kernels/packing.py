"""Host-side packing of constant conv operands into the orders of the blocked kernels, done once
per compile: weights grouped by register tile, biases padded to whole channel blocks, every
array 64-byte aligned."""
from __future__ import annotations

import numpy as np


def aligned(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A copy of `array` whose data starts on an `alignment`-byte boundary."""
    raw = np.empty(array.nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    out = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def pack_weights(weight: np.ndarray, lanes: int, vectors: int) -> np.ndarray:
    """torch's (C_out, C_in/groups, *K) weights -> (C_out/(c*vectors), C_in_g/c, *K, c_in, vectors,
    c_out): for one input channel, the weights of a tile's `vectors` output blocks are contiguous.
    Padded with zeros to whole blocks (per group, whose output blocks are whole); 64-byte aligned."""
    c_out, cin_g, kernel = weight.shape[0], weight.shape[1], weight.shape[2:]
    out_blocks, in_blocks = -(-c_out // lanes), -(-cin_g // lanes)
    padded = np.zeros((out_blocks * lanes, in_blocks * lanes, *kernel), weight.dtype)
    padded[:c_out, :cin_g] = weight
    blocked = padded.reshape(out_blocks // vectors, vectors, lanes, in_blocks, lanes, *kernel)
    order = (0, 3, *range(5, 5 + len(kernel)), 4, 1, 2)
    return aligned(np.ascontiguousarray(blocked.transpose(order)))


def pack_bias(bias: np.ndarray | None, c_out: int, lanes: int, dtype: np.dtype) -> np.ndarray:
    """The bias padded with zeros to whole blocks (zeros where the conv has none); 64-byte aligned."""
    padded = np.zeros(-(-c_out // lanes) * lanes, dtype)
    if bias is not None:
        padded[:c_out] = bias
    return aligned(padded)


def pack_depthwise_weights(weight: np.ndarray, lanes: int) -> np.ndarray:
    """(C, 1, *K) -> (C/c, *K, c), zero-padded to whole blocks."""
    channels, kernel = weight.shape[0], weight.shape[2:]
    blocks = -(-channels // lanes)
    padded = np.zeros((blocks * lanes, *kernel), weight.dtype)
    padded[:channels] = weight[:, 0]
    moved = np.moveaxis(padded.reshape(blocks, lanes, *kernel), 1, -1)
    return aligned(np.ascontiguousarray(moved))
