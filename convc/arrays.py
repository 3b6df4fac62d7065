"""Host-side conversion of user arrays: anything with __array__ or DLPack to float NumPy arrays."""
from __future__ import annotations

from typing import Any

import numpy as np


def as_float_array(op: str, name: str, value: Any) -> np.ndarray:
    """`value` as a float32/float64 ndarray; TypeError for other dtypes or non-array objects."""
    if isinstance(value, np.ndarray):
        array = value
    elif hasattr(value, "__dlpack__") and not hasattr(value, "__array__"):
        array = np.from_dlpack(value)
    else:
        try:
            array = np.asarray(value)
        except Exception as error:  # the object's own conversion failed
            raise TypeError(f"{op}: {name} of type {type(value).__name__} cannot be converted to an array: "
                            f"{error}") from None
    if array.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: {name} has dtype {array.dtype}; expected float32 or float64")
    return array
