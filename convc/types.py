"""Tensor types of the IR: a shape tuple and a dtype, with their textual form (f32[1,3,8,8])."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ConvcError

DTYPE_NAMES = {"f32": np.dtype(np.float32), "f64": np.dtype(np.float64)}
NAME_OF_DTYPE = {v: k for k, v in DTYPE_NAMES.items()}
MAX_BYTES = 1 << 48  # every extent (a zero-size axis counted as 1) times the element size


@dataclass(frozen=True)
class TensorType:
    """The static type of one IR value."""

    shape: tuple[int, ...]
    dtype: str  # "f32" or "f64"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_NAMES:
            raise ConvcError(f"dtype {self.dtype!r} is not supported; expected one of {sorted(DTYPE_NAMES)}")
        shape = tuple(int(d) for d in self.shape)
        object.__setattr__(self, "shape", shape)
        if any(d < 0 for d in shape):
            raise ConvcError(f"tensor type {self}: sizes must not be negative")
        if math.prod(max(d, 1) for d in shape) * DTYPE_NAMES[self.dtype].itemsize > MAX_BYTES:
            raise ConvcError(f"tensor type {self} is too large: its extents span more than 2**48 bytes, "
                             f"the address space of a process")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numpy_dtype(self) -> np.dtype:
        return DTYPE_NAMES[self.dtype]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"

    @staticmethod
    def of_array(array: np.ndarray) -> "TensorType":
        return TensorType(tuple(array.shape), dtype_name(array.dtype))


def dtype_name(dtype: np.dtype) -> str:
    """The IR name of a float dtype; TypeError for anything else."""
    name = NAME_OF_DTYPE.get(np.dtype(dtype))
    if name is None:
        raise TypeError(f"dtype {np.dtype(dtype)} is not supported; expected float32 or float64")
    return name
