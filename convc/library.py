"""Running a library that convc.export wrote, from Python with ctypes and NumPy only.

`load(path)` opens `model.so`, reads the model's name and version from the header beside it
(`model.h`; without one, the name is the file's stem and no version is compared), checks that the
two belong together, and returns a callable that checks its inputs as a compiled graph does and
returns its outputs the same way. Nothing here imports llvmlite or the compiler.
"""
from __future__ import annotations

import ctypes
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConvcError

DTYPE_CODES = {"f32": 0, "f64": 1}  # the C API's dtype codes (convc.export writes them)
DTYPES = {0: np.dtype(np.float32), 1: np.dtype(np.float64)}
RETURN_CODES = {0: "success", 1: "a null pointer among the arguments",
                2: "this CPU lacks a feature the library was compiled for",
                3: "out of memory for the workspace"}
MAX_RANK = 16


class Library:
    """An exported model: call it on arrays (C-contiguous copies are made where needed)."""

    def __init__(self, path: Path, name: str, expected_version: str | None) -> None:
        self.path, self.name = path, name
        try:
            self._lib = ctypes.CDLL(str(path))
        except OSError as error:
            raise ConvcError(f"load: cannot open {path}: {error}") from None
        try:
            version = self._function("version", ctypes.c_char_p)
        except AttributeError:
            raise ConvcError(f"load: {path} has no {name}_version: not a convc library of a model named {name!r}") \
                from None
        self.version = version().decode()
        if expected_version is not None and self.version != expected_version:
            raise ConvcError(f"load: {path} is version {self.version!r} but its header says {expected_version!r} "
                             f"(a header and a library of different exports)")
        self._run = self._function("run", ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
        self.input_types = self._signature("input")
        self.output_types = self._signature("output")

    def _function(self, suffix: str, result: Any, *arguments: Any) -> Any:
        function = getattr(self._lib, f"{self.name}_{suffix}")
        function.restype, function.argtypes = result, list(arguments)
        return function

    def _signature(self, kind: str) -> list[tuple[tuple[int, ...], np.dtype]]:
        count = self._function(f"num_{kind}s", ctypes.c_int)()
        shape_of = self._function(f"{kind}_shape", ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int64))
        dtype_of = self._function(f"{kind}_dtype", ctypes.c_int, ctypes.c_int)
        types = []
        for index in range(count):
            dims = (ctypes.c_int64 * MAX_RANK)()
            rank = shape_of(index, dims)
            if not 0 <= rank <= MAX_RANK or dtype_of(index) not in DTYPES:
                raise ConvcError(f"load: {self.path}: {kind} {index} has rank {rank} and dtype code {dtype_of(index)}")
            types.append((tuple(dims[:rank]), DTYPES[dtype_of(index)]))
        return types

    def set_num_threads(self, threads: int) -> None:
        """Threads the library's pool runs on from the next call (0: every core)."""
        self._function("set_num_threads", None, ctypes.c_int)(int(threads))

    def shutdown(self) -> None:
        """Join the pool's workers and free the library's workspace (a later call starts them again)."""
        self._function("shutdown", None)()

    def __call__(self, *arrays: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        if len(arrays) != len(self.input_types):
            raise TypeError(f"{self.name} takes {len(self.input_types)} inputs, got {len(arrays)}")
        inputs = []
        for index, (value, (shape, dtype)) in enumerate(zip(arrays, self.input_types)):
            array = np.asarray(value)
            if array.dtype != dtype:
                raise TypeError(f"{self.name}: input {index} has dtype {array.dtype}; the library takes {dtype}")
            if array.shape != shape:
                raise ConvcError(f"{self.name}: input {index} has shape {array.shape}; the library takes {shape}")
            inputs.append(np.ascontiguousarray(array))
        outputs = [np.empty(shape, dtype) for shape, dtype in self.output_types]
        input_table = (ctypes.c_void_p * max(1, len(inputs)))(*[a.ctypes.data for a in inputs])
        output_table = (ctypes.c_void_p * max(1, len(outputs)))(*[a.ctypes.data for a in outputs])
        status = self._run(input_table, output_table)
        if status != 0:
            raise ConvcError(f"{self.name}_run in {self.path} returned {status}: "
                             f"{RETURN_CODES.get(status, 'an unknown error')}")
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def __repr__(self) -> str:
        return f"<convc.Library {self.name} from {self.path}>"


def load(path: str | os.PathLike, name: str | None = None) -> Library:
    """The library at `path` (written by convc.export); `name` its model's name (default: the one
    in the header beside it, else the file's stem)."""
    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise ConvcError(f"load: no library at {path}")
    header = path.with_suffix(".h")
    expected = None
    if header.is_file():
        text = header.read_text(errors="replace")
        found = re.search(r'^#define (\w+)_VERSION "([^"]*)"', text, re.M)
        prototype = re.search(r"^const char \*(\w+)_version\(void\);", text, re.M)
        if found and prototype:
            name = name or prototype.group(1)
            expected = found.group(2) if found.group(1) == name.upper() else None
    return Library(path, name or path.stem, expected)
