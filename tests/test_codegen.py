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


def test_shared_constants_are_one_object_per_distinct_value():
    import llvmlite.ir as ir
    from convc.runtime.codegen import constant
    f32, i32 = ir.FloatType(), ir.IntType(32)
    assert constant(f32, 1.5) is constant(f32, 1.5)
    assert constant(ir.VectorType(i32, 4), [0, 1, 2, 3]) is constant(ir.VectorType(i32, 4), [0, 1, 2, 3])
    assert constant(f32, 0.0) is not constant(f32, -0.0)
    assert str(constant(f32, -0.0)) != str(constant(f32, 0.0))
    assert str(constant(i32, 1)) == "i32 1" and str(constant(ir.IntType(64), 1)) == "i64 1"
    assert str(constant(ir.VectorType(i32, 2), [1, 1])) == "<2 x i32> <i32 1, i32 1>"
    assert constant(ir.VectorType(f32, 2), None) is constant(ir.VectorType(f32, 2), None)
