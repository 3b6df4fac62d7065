"""Tensor types of the IR: a shape tuple and a dtype, with their textual form (f32[1,3,8,8]). An
extent may be a symbolic size (convc.symbolic.Size: f32[1,80,T], f32[1,512,(T-1)//2+1])."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ConvcError
from .symbolic import Size, substitute, symbols_of

DTYPE_NAMES = {"f32": np.dtype(np.float32), "f64": np.dtype(np.float64)}
NAME_OF_DTYPE = {v: k for k, v in DTYPE_NAMES.items()}
MAX_BYTES = 1 << 48  # every extent (a zero-size axis counted as 1) times the element size


@dataclass(frozen=True)
class TensorType:
    """The static type of one IR value: its logical shape, dtype and memory layout.

    `block` 0 is the plain C-contiguous layout. A channel-blocked tensor (block c > 0, written
    f32[1,64,56,56;c16]) keeps the logical shape (N, C, *spatial) but is stored as
    (N, ceil(C/c), *spatial, c): channel c0 lives at block c0 // c, lane c0 % c; the lanes past C
    in the last block hold unspecified values that no kernel reads."""

    shape: tuple[int, ...]
    dtype: str  # "f32" or "f64"
    block: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_NAMES:
            raise ConvcError(f"dtype {self.dtype!r} is not supported; expected one of {sorted(DTYPE_NAMES)}")
        shape = tuple(d if isinstance(d, Size) else int(d) for d in self.shape)
        object.__setattr__(self, "shape", shape)
        if any(d < 0 for d in shape):
            raise ConvcError(f"tensor type {self}: sizes must not be negative")
        if self.block and (self.block < 0 or len(shape) < 3 or isinstance(shape[1], Size)):
            raise ConvcError(f"tensor type {self}: a channel block needs a positive size and a batched "
                             f"channels-first tensor (N, C, *spatial) with a fixed number of channels")
        if self.symbolic:
            return  # its extents are checked per call, where they have values
        if math.prod(max(d, 1) for d in self.storage_shape) * DTYPE_NAMES[self.dtype].itemsize > MAX_BYTES:
            raise ConvcError(f"tensor type {self} is too large: its extents span more than 2**48 bytes, "
                             f"the address space of a process")

    @property
    def symbolic(self) -> bool:
        """Whether an extent is a symbolic size (convc.symbolic)."""
        return any(isinstance(d, Size) for d in self.shape)

    def symbols(self) -> set[str]:
        return symbols_of(self.shape)

    def substitute(self, values: dict[str, int]) -> "TensorType":
        """The type with the symbols' values in its extents."""
        return TensorType(tuple(substitute(d, values) for d in self.shape), self.dtype, self.block)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numpy_dtype(self) -> np.dtype:
        return DTYPE_NAMES[self.dtype]

    @property
    def size(self) -> int:
        """Number of logical elements."""
        return math.prod(self.shape)

    @property
    def storage_shape(self) -> tuple[int, ...]:
        """The shape in memory: (N, ceil(C/c), *spatial, c) for a blocked tensor."""
        if not self.block:
            return self.shape
        return (self.shape[0], -(-self.shape[1] // self.block), *self.shape[2:], self.block)

    @property
    def storage_size(self) -> int:
        """Number of elements in memory (the padded lanes of a blocked tensor included)."""
        return math.prod(self.storage_shape)

    def with_block(self, block: int) -> "TensorType":
        return TensorType(self.shape, self.dtype, block)

    def __str__(self) -> str:
        layout = f";c{self.block}" if self.block else ""
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}{layout}]"

    @staticmethod
    def of_array(array: np.ndarray) -> "TensorType":
        return TensorType(tuple(array.shape), dtype_name(array.dtype))


def dtype_name(dtype: np.dtype) -> str:
    """The IR name of a float dtype; TypeError for anything else."""
    name = NAME_OF_DTYPE.get(np.dtype(dtype))
    if name is None:
        raise TypeError(f"dtype {np.dtype(dtype)} is not supported; expected float32 or float64")
    return name
