"""The codegen toolkit's vector building blocks, run through the JIT against NumPy."""
import ctypes

import llvmlite.ir as ir
import numpy as np
import pytest

from convc.runtime.codegen import Kernel
from convc.runtime.jit import JitModule


@pytest.mark.parametrize("dtype, lanes", [("f32", 4), ("f32", 8), ("f32", 16), ("f64", 8)])
def test_transpose_and_prefix_stores(dtype, lanes):
    module = ir.Module("transpose")
    k = Kernel(module, "transpose", dtype, 2)
    rows = [k.vload(k.args[1], i * lanes, lanes) for i in range(lanes)]
    for i, row in enumerate(k.transpose(rows)):
        k.vstore_prefix(row, k.args[0], i * lanes, lanes - i % 3)  # some rows only partly
    k.function.linkage = "external"
    k.finish()
    jit = JitModule(module)
    run = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(
        jit.address("transpose"))
    numpy_dtype = np.float32 if dtype == "f32" else np.float64
    square = np.random.default_rng(lanes).standard_normal((lanes, lanes)).astype(numpy_dtype)
    out = np.full((lanes, lanes), np.nan, numpy_dtype)
    run(out.ctypes.data, square.ctypes.data, 0, 1)
    for i in range(lanes):
        count = lanes - i % 3
        np.testing.assert_array_equal(out[i, :count], square[:count, i])
        assert np.isnan(out[i, count:]).all()
