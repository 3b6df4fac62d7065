"""convc.from_onnx: ONNX's own backend node tests run through the importer and the compiler;
hand-built models (error listing, names, folding, the erf form of gelu, attribute forms) against
onnx's reference implementation or onnxruntime; models exported by torch.onnx.export (a small net,
and the four transformers models of tests/hf_models.py) against torch; the command line.

The node tests ship inside the onnx wheel up to onnx 1.22.0 (onnx/backend/test/data/node/<test>/
model.onnx with test_data_set_*/input_*.pb and output_*.pb); they are read straight out of that
wheel, found in $CONVC_ONNX_NODE_TESTS (the wheel, or a folder holding it) or in
~/.cache/convc/onnx-node-tests, where .ci/run downloads it (`pip download onnx==1.22.0 --no-deps
-d ~/.cache/convc/onnx-node-tests`). Without it those tests skip. Every node test whose op types
all have an entry in convc.onnx_ops.OPS (or fold, as Constant) runs, except the ones listed in
SKIPPED with their reasons; outputs are compared as onnx's backend runner compares them (same
shape and dtype, rtol 1e-3, atol 1e-7).

Inputs that ONNX models carry as initializers (integer shapes, axes, pads, indices, and Pad's
constant value) are given to the importer as initializers holding the test's values; the float
tensors stay graph inputs.
"""
from __future__ import annotations

import functools
import glob
import os
import zipfile

import numpy as np
import pytest

import convc

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from convc.onnx_ops import OPS  # noqa: E402

NODE_DIR = "onnx/backend/test/data/node/"
RTOL, ATOL = 1e-3, 1e-7  # onnx.backend.test.loader's defaults (no node test overrides them)
FOLDED = {"Constant"}  # op types with no entry that always fold at import time

INTEGER = "integer tensors (convc computes float32 and float64)"
FLOAT16 = "float16 tensors (convc computes float32 and float64)"
SKIPPED: dict[str, str] = {
    **{f"test_{op}_{t}": INTEGER for op in ("add", "sub", "mul", "div") for t in
       ("int8", "int16", "uint8", "uint16", "uint32", "uint64")},
    **{f"test_{op}_{t}": INTEGER for op in ("max", "min") for t in
       ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")},
    **{f"test_{op}_float16": FLOAT16 for op in ("max", "min")},
    **{name: INTEGER for name in (
        "test_div_int32_trunc", "test_clip_default_int8_inbounds", "test_clip_default_int8_inbounds_expanded",
        "test_clip_default_int8_max", "test_clip_default_int8_min", "test_maxpool_2d_uint8",
        "test_pow_types_int32_float32", "test_pow_types_int32_int32", "test_pow_types_int64_float32",
        "test_pow_types_int64_int64")},
    **{f"test_{mode}_pad": "int32 data (convc computes float32 and float64); test_pad_modes runs the mode on "
       "float data" for mode in ("edge", "reflect", "wrap")},
    **{name: "the output is Shape's or Size's int64 value (such values fold to constants at import time; convc "
       "graphs return float tensors)" for name in (
        "test_shape", "test_shape_clip_end", "test_shape_clip_start", "test_shape_end_1", "test_shape_end_negative_1",
        "test_shape_example", "test_shape_start_1", "test_shape_start_1_end_2", "test_shape_start_1_end_negative_1",
        "test_shape_start_greater_than_end", "test_shape_start_negative_1", "test_size", "test_size_example")},
    **{name: "3-D pooling (convc pools 1-D and 2-D windows)" for name in (
        "test_averagepool_3d_default", "test_averagepool_3d_dilations_small",
        *(f"test_averagepool_3d_dilations_large_count_include_pad_is_{i}_ceil_mode_is_{c}"
          for i in (0, 1) for c in ("False", "True")),
        "test_maxpool_3d_default", "test_maxpool_3d_dilations", "test_maxpool_3d_dilations_use_ref_impl",
        "test_maxpool_3d_dilations_use_ref_impl_large")},
    "test_averagepool_2d_dilations": "dilated average pooling (convc's avg_pool, as torch's, has no dilation)",
    **{name: "MaxPool's Indices output (int64)" for name in (
        "test_maxpool_with_argmax_2d_precomputed_pads", "test_maxpool_with_argmax_2d_precomputed_strides")},
    **{name: "training_mode=1 (convc computes inference)" for name in (
        "test_batchnorm_epsilon_training_mode", "test_batchnorm_example_training_mode", "test_training_dropout",
        "test_training_dropout_default", "test_training_dropout_default_mask", "test_training_dropout_mask",
        "test_training_dropout_zero_ratio", "test_training_dropout_zero_ratio_mask")},
    **{name: "Dropout's bool mask output" for name in ("test_dropout_default_mask", "test_dropout_default_mask_ratio")},
    **{name: "a batched right operand (convc's matmul is linear: 1-D or 2-D right operands)" for name in (
        "test_matmul_1d_3d", "test_matmul_3d", "test_matmul_4d", "test_matmul_bcast")},
    "test_slice_neg_steps": "a negative step (convc slices forward)",
    "test_erf": "Erf alone (convc has no erf op; Erf imports within the erf form of gelu)",
    "test_identity_opt": "an optional-typed input (convc graphs take tensors)",
    "test_identity_sequence": "a sequence-typed input (convc graphs take tensors)",
}


def _wheel() -> str | None:
    place = os.environ.get("CONVC_ONNX_NODE_TESTS") or os.path.expanduser("~/.cache/convc/onnx-node-tests")
    if os.path.isfile(place):
        return place
    found = sorted(glob.glob(os.path.join(place, "onnx-1.22.0-*.whl")))
    return found[-1] if found else None


@functools.lru_cache(maxsize=1)
def _archive() -> zipfile.ZipFile | None:
    wheel = _wheel()
    return zipfile.ZipFile(wheel) if wheel else None


def _op_types(model: onnx.ModelProto) -> set[str]:
    return {node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            for node in model.graph.node}


@functools.lru_cache(maxsize=1)
def _supported_tests() -> dict[str, onnx.ModelProto]:
    """The node tests whose op types the importer maps, by name, with their models."""
    archive = _archive()
    if archive is None:
        return {}
    tests = {}
    for member in archive.namelist():
        if member.startswith(NODE_DIR) and member.endswith("/model.onnx"):
            model = onnx.load_from_string(archive.read(member))
            types = _op_types(model)
            if types and types <= set(OPS) | FOLDED:
                tests[member[len(NODE_DIR):].split("/")[0]] = model
    return tests


def _data_sets(name: str) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    archive = _archive()
    prefix = f"{NODE_DIR}{name}/"
    sets: dict[str, dict[str, dict[int, np.ndarray]]] = {}
    for member in archive.namelist():
        if not member.startswith(prefix + "test_data_set_") or not member.endswith(".pb"):
            continue
        folder, file = member[len(prefix):].split("/")
        kind, index = file[:-3].split("_")
        tensor = TensorProto()
        tensor.ParseFromString(archive.read(member))
        sets.setdefault(folder, {"input": {}, "output": {}})[kind][int(index)] = numpy_helper.to_array(tensor)
    return [([data["input"][i] for i in sorted(data["input"])], [data["output"][i] for i in sorted(data["output"])])
            for _, data in sorted(sets.items())]


def _bake(model: onnx.ModelProto, inputs: list[np.ndarray]) -> tuple[onnx.ModelProto, list[np.ndarray]]:
    """The model with its non-float inputs (and Pad's constant value) turned into initializers holding
    the test's values; the float inputs that remain."""
    baked = onnx.ModelProto()
    baked.CopyFrom(model)
    pad_values = {node.input[2] for node in model.graph.node if node.op_type == "Pad" and len(node.input) > 2}
    keep, remaining = [], []
    for info, value in zip(model.graph.input, inputs):
        if value.dtype in (np.float32, np.float64) and info.name not in pad_values:
            keep.append(info)
            remaining.append(value)
        else:
            baked.graph.initializer.append(numpy_helper.from_array(value, info.name))
    del baked.graph.input[:]
    baked.graph.input.extend(keep)
    return baked, remaining


def _run_node_test(name: str) -> None:
    model = _supported_tests()[name]
    for inputs, expected in _data_sets(name):
        baked, feeds = _bake(model, inputs)
        graph = convc.from_onnx(baked)
        outputs = convc.compile(graph)(*feeds)
        outputs = list(outputs) if isinstance(outputs, tuple) else [outputs]
        assert len(outputs) == len(expected)
        for out, ref in zip(outputs, expected):
            assert out.shape == ref.shape, f"{name}: shape {out.shape}, expected {ref.shape}"
            assert out.dtype == ref.dtype, f"{name}: dtype {out.dtype}, expected {ref.dtype}"
            np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL, err_msg=name)


def _node_test_params() -> list:
    tests = _supported_tests()
    if not tests:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason="the onnx 1.22.0 wheel with the node tests is not available; download it with: pip download "
                   "onnx==1.22.0 --no-deps -d ~/.cache/convc/onnx-node-tests"))]
    return [pytest.param(name, marks=pytest.mark.skip(reason=SKIPPED[name])) if name in SKIPPED else name
            for name in sorted(tests)]


@pytest.mark.parametrize("name", _node_test_params())
def test_onnx_node_test(name: str) -> None:
    _run_node_test(name)


def test_skipped_node_tests_exist_and_are_rejected_with_one_error():
    """Every entry of SKIPPED names a supported-op node test, and the importer refuses it (a
    ConvcError naming what it cannot do), rather than computing something else."""
    tests = _supported_tests()
    if not tests:
        pytest.skip("the onnx 1.22.0 wheel with the node tests is not available")
    assert not set(SKIPPED) - set(tests), "SKIPPED names tests that do not exist or are not selected"
    for name in SKIPPED:
        model = tests[name]
        try:
            inputs = _data_sets(name)[0][0]
        except Exception:  # a sequence or optional input, which is not a TensorProto
            inputs = None
        if inputs is not None:
            model, _ = _bake(model, inputs)
        with pytest.raises(convc.ConvcError, match="^from_onnx: "):
            convc.from_onnx(model)


# hand-built models, checked against onnx's reference implementation --------------------------

def _value_info(name: str, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _model(nodes, inputs, outputs, initializers=None, opset=17, name="g") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              initializer=[numpy_helper.from_array(np.asarray(v), k)
                                           for k, v in (initializers or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _reference(model: onnx.ModelProto, *arrays: np.ndarray, runtime: bool = False) -> list[np.ndarray]:
    """The model's outputs by onnx's reference implementation, or by onnxruntime (`runtime`) where
    the reference implementation is known to be wrong (it computes MaxPool's SAME_LOWER with one
    output too few, and ignores ConvTranspose's output_shape without auto_pad)."""
    names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if runtime:
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, dict(zip(names, arrays)))
    from onnx.reference import ReferenceEvaluator
    return ReferenceEvaluator(model).run(None, dict(zip(names, arrays)))


def _check(model: onnx.ModelProto, *arrays: np.ndarray, rtol=1e-5, atol=1e-6, runtime=False) -> convc.Graph:
    graph = convc.from_onnx(model)
    outputs = convc.compile(graph)(*arrays)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    expected = _reference(model, *arrays, runtime=runtime)
    assert len(outputs) == len(expected)
    for out, ref in zip(outputs, expected):
        assert out.shape == ref.shape and out.dtype == ref.dtype
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol)
    return graph


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_every_problem_is_listed_in_one_error_with_node_names():
    nodes = [
        helper.make_node("Softmax", ["x"], ["s1"], name="soft1"),
        helper.make_node("Softmax", ["s1"], ["s2"], name="soft2"),
        helper.make_node("Concat", ["s2", "x"], ["cat"], name="cat"),  # no axis; judged behind the Softmaxes
        helper.make_node("MaxPool", ["v"], ["pooled"], name="pool3d", kernel_shape=[2, 2, 2]),
        helper.make_node("Fancy", ["x"], ["fancy"], name="fancy", domain="com.example"),
        helper.make_node("Relu", ["z"], ["r"], name="relu"),
    ]
    model = _model(nodes, [_value_info("x", [1, 4]), _value_info("v", [1, 1, 4, 4, 4]), _value_info("z", ["batch", 3]),
                           _value_info("ids", [1, 4], TensorProto.INT64)],
                   [_value_info("cat", None), _value_info("pooled", None), _value_info("fancy", None),
                    _value_info("r", None)])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(convc.ConvcError) as error:
        convc.from_onnx(model)
    message = str(error.value)
    assert message.startswith("from_onnx: the model (graph 'g', opset 17) cannot be imported; 6 problems:")
    for part in ("input 'z' has dynamic sizes ['batch', 3]", "input_shapes={'z': (...)}",
                 "input 'ids' is int64 (convc graphs take float32 and float64)",
                 "Softmax (2 nodes; no entry in convc.onnx_ops.OPS)", "node 'soft1'", "node 'soft2'",
                 "Concat (1 node; nodes convc cannot map)", "node 'cat': required attribute 'axis' is missing",
                 "MaxPool (1 node; nodes convc cannot map)", "node 'pool3d': an input of rank 5",
                 "com.example.Fancy (1 node; no entry in convc.onnx_ops.OPS)"):
        assert part in message, message
    assert "relu" not in message


def test_opset_below_11_is_refused():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_value_info("x", [2])], [_value_info("y", [2])], opset=10)
    with pytest.raises(convc.ConvcError, match="opset 10: convc imports ONNX opset 11 and up"):
        convc.from_onnx(model)


def test_names_initializers_and_output_order(tmp_path):
    """Inputs keep their ONNX names (characters the IR does not allow become _), initializers are
    constants named after them, and the outputs come in the graph's order."""
    weight, bias = _rand(4, 3, 3, 3, seed=1), _rand(4, seed=2)
    nodes = [helper.make_node("Conv", ["input.1", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["first"]),
             helper.make_node("Tanh", ["x:0"], ["second"])]
    model = _model(nodes, [_value_info("input.1", [1, 3, 6, 6]), _value_info("x:0", [2, 5])],
                   [_value_info("second", [2, 5]), _value_info("first", [1, 4, 6, 6])],
                   {"conv.weight": weight, "conv.bias": bias}, name="net")
    path = tmp_path / "net.onnx"
    onnx.save(model, str(path))
    graph = _check(onnx.load(str(path)), _rand(1, 3, 6, 6), _rand(2, 5))
    assert graph.name == "net" and graph.inputs == ["input.1", "x_0"]
    assert {c.name for c in graph.consts()} >= {"conv.weight", "conv.bias"}
    np.testing.assert_array_equal(graph.node("conv.weight").value, weight)
    assert str(convc.from_onnx(str(path))) == str(graph)  # a path, as a ModelProto
    assert str(convc.from_onnx(path.read_bytes())) == str(graph)


def test_shape_arithmetic_folds_and_input_shapes_fixes_dynamic_sizes():
    """torch's flatten as exported: Shape -> Gather -> Unsqueeze -> Concat -> Reshape leaves one
    reshape in the graph."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
             helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
             helper.make_node("Unsqueeze", ["batch", "axes"], ["batch1"]),
             helper.make_node("Concat", ["batch1", "minus_one"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    model = _model(nodes, [_value_info("x", ["N", 3, 4, 4])], [_value_info("y", ["N", 48])],
                   {"axes": np.array([0], np.int64), "minus_one": np.array([-1], np.int64)})
    with pytest.raises(convc.ConvcError, match="dynamic sizes"):
        convc.from_onnx(model)
    graph = convc.from_onnx(model, input_shapes={"x": (2, 3, 4, 4)})
    assert [n.op for n in graph.op_nodes()] == ["reshape"]
    x = _rand(2, 3, 4, 4)
    np.testing.assert_array_equal(convc.compile(graph)(x), x.reshape(2, 48))
    with pytest.raises(convc.ConvcError, match="fixes it at 3"):
        convc.from_onnx(model, input_shapes={"x": (2, 5, 4, 4)})


SQRT2 = np.float32(np.sqrt(2))


@pytest.mark.parametrize("form", ["torch", "half_first", "reciprocal", "half_constant_first"])
def test_the_erf_form_of_gelu_becomes_one_gelu(form):
    nodes = [helper.make_node("Mul" if form == "reciprocal" else "Div",
                              ["x", "inv_sqrt2" if form == "reciprocal" else "sqrt2"], ["scaled"]),
             helper.make_node("Erf", ["scaled"], ["erf"]),
             helper.make_node("Add", ["one", "erf"], ["plus"])]
    if form == "half_first":  # 0.5 * x * (1 + erf(x / sqrt(2))), as transformers writes it
        nodes += [helper.make_node("Mul", ["x", "half"], ["hx"]), helper.make_node("Mul", ["hx", "plus"], ["y"])]
    elif form == "half_constant_first":
        nodes += [helper.make_node("Mul", ["plus", "half"], ["hp"]), helper.make_node("Mul", ["hp", "x"], ["y"])]
    else:  # x * (1 + erf) * 0.5, as torch.onnx exports nn.GELU
        nodes += [helper.make_node("Mul", ["x", "plus"], ["xp"]), helper.make_node("Mul", ["xp", "half"], ["y"])]
    model = _model(nodes, [_value_info("x", [3, 40])], [_value_info("y", [3, 40])],
                   {"sqrt2": SQRT2, "inv_sqrt2": np.float32(1 / np.sqrt(2)), "one": np.float32(1),
                    "half": np.float32(0.5)})
    x = _rand(3, 40) * 3
    graph = _check(model, x)
    assert [n.op for n in graph.op_nodes()] == ["gelu"]


def test_an_erf_whose_pieces_are_used_elsewhere_is_not_fused():
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["scaled"]), helper.make_node("Erf", ["scaled"], ["erf"]),
             helper.make_node("Add", ["erf", "one"], ["plus"]), helper.make_node("Mul", ["x", "plus"], ["xp"]),
             helper.make_node("Mul", ["xp", "half"], ["y"])]
    model = _model(nodes, [_value_info("x", [4])], [_value_info("y", [4]), _value_info("plus", [4])],
                   {"sqrt2": SQRT2, "one": np.float32(1), "half": np.float32(0.5)})
    with pytest.raises(convc.ConvcError, match="Erf alone|Erf imports as part of gelu"):
        convc.from_onnx(model)


@pytest.mark.parametrize("mode, numpy_mode", [("constant", "constant"), ("reflect", "reflect"), ("edge", "edge"),
                                              ("wrap", "wrap")])
def test_pad_modes(mode, numpy_mode):
    """Pad in every mode on float data (the node tests of edge, reflect and wrap are integer)."""
    x = _rand(1, 3, 4, 5)
    pads = np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)
    nodes = [helper.make_node("Pad", ["x", "pads", "value"] if mode == "constant" else ["x", "pads"], ["y"], mode=mode)]
    model = _model(nodes, [_value_info("x", [1, 3, 4, 5])], [_value_info("y", [1, 3, 7, 8])],
                   {"pads": pads, "value": np.float32(1.5)})
    graph = convc.from_onnx(model)
    width = [(0, 0), (0, 0), (1, 2), (2, 1)]
    expected = np.pad(x, width, numpy_mode, **({"constant_values": 1.5} if mode == "constant" else {}))
    np.testing.assert_array_equal(convc.compile(graph)(x), expected)


def test_pad_with_axes_and_negative_pads_crops():
    x = _rand(2, 3, 6)
    model = _model([helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"])], [_value_info("x", [2, 3, 6])],
                   [_value_info("y", [2, 3, 5])], {"pads": np.array([-2, 1], np.int64), "axes": np.array([-1], np.int64)},
                   opset=18)
    expected = np.concatenate([x[..., 2:], np.zeros((2, 3, 1), np.float32)], axis=-1)
    np.testing.assert_array_equal(convc.compile(convc.from_onnx(model))(x), expected)


# (op, attributes, weight shape, oracle): onnxruntime, except where it refuses the attributes
WINDOWS = [
    ("Conv", dict(auto_pad="SAME_UPPER", strides=[2, 2]), (8, 3, 3, 3), "ort"),
    ("Conv", dict(auto_pad="SAME_LOWER", strides=[2, 1], dilations=[1, 2]), (8, 3, 3, 3), "reference"),
    ("Conv", dict(pads=[0, 1, 2, 1], group=3), (6, 1, 3, 2), "ort"),
    ("ConvTranspose", dict(strides=[2, 2], pads=[1, 0, 0, 2], output_padding=[1, 1]), (3, 4, 3, 3), "ort"),
    ("ConvTranspose", dict(strides=[2, 3], output_shape=[15, 22], auto_pad="SAME_UPPER"), (3, 2, 3, 4), "ort"),
    ("ConvTranspose", dict(strides=[3, 2], output_shape=[25, 22], dilations=[2, 1]), (3, 2, 3, 3), "ort"),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER"), None, "ort"),
    ("MaxPool", dict(kernel_shape=[2, 3], strides=[2, 2], pads=[1, 0, 0, 2], ceil_mode=1, dilations=[2, 1]), None,
     "ort"),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[2, 0, 0, 1], count_include_pad=0), None, "ort"),
    ("AveragePool", dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 0, 0], count_include_pad=1, ceil_mode=1),
     None, "ort"),
    ("AveragePool", dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2]), None, "ort"),
]


@pytest.mark.parametrize("op, attrs, weight, oracle", WINDOWS, ids=[f"{w[0]}-{i}" for i, w in enumerate(WINDOWS)])
def test_window_attributes_match_the_reference(op, attrs, weight, oracle):
    """auto_pad, asymmetric pads, output_shape, output_padding, ceil_mode, count_include_pad: the
    forms that torch's arguments cannot say directly."""
    x = _rand(1, 3, 8, 11)
    inputs = ["x", "w", "b"] if weight else ["x"]
    channels = weight[1] * attrs.get("group", 1) if op == "ConvTranspose" else weight[0] if weight else 0
    model = _model([helper.make_node(op, inputs, ["y"], **attrs)], [_value_info("x", [1, 3, 8, 11])],
                   [_value_info("y", None)], {"w": _rand(*weight, seed=3), "b": _rand(channels, seed=4)} if weight
                   else None)
    _check(model, x, rtol=1e-4, atol=1e-5, runtime=oracle == "ort")


def test_opset_11_attribute_forms():
    """Before opset 13 (and 18) Squeeze, Unsqueeze and Split take their axes and sizes as attributes,
    ReduceMean until opset 18."""
    nodes = [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0, 3]),
             helper.make_node("Squeeze", ["u"], ["s"], axes=[0]),
             helper.make_node("ReduceMean", ["s"], ["m"], axes=[-1], keepdims=0),
             helper.make_node("Split", ["m"], ["a", "b"], axis=1, split=[1, 3]),
             helper.make_node("Clip", ["b", "low", "high"], ["c"])]
    model = _model(nodes, [_value_info("x", [2, 4, 5])], [_value_info("a", None), _value_info("c", None)],
                   {"low": np.float32(-0.2), "high": np.float32(0.3)}, opset=11)
    _check(model, _rand(2, 4, 5))


def test_layer_norm_statistics_outputs_and_float64():
    x = np.random.default_rng(5).standard_normal((2, 3, 8))
    node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y", "mean", "inv_std"], axis=1,
                            epsilon=1e-3)
    model = _model([node], [_value_info("x", [2, 3, 8], TensorProto.DOUBLE)],
                   [_value_info(n, None, TensorProto.DOUBLE) for n in ("y", "mean", "inv_std")],
                   {"scale": np.random.default_rng(6).random((3, 8)), "bias": np.random.default_rng(7).random((3, 8))})
    _check(model, x, rtol=1e-10, atol=1e-12)


def test_gemm_matmul_gather_split_and_slice_on_computed_tensors():
    nodes = [helper.make_node("Gemm", ["a", "w", "c"], ["g"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("MatMul", ["g", "m"], ["mm"]),
             helper.make_node("Gather", ["mm", "idx"], ["picked"], axis=1),
             helper.make_node("Gather", ["mm", "one"], ["column"], axis=-1),
             helper.make_node("Split", ["picked", "split"], ["p0", "p1"], axis=1),
             helper.make_node("Unsqueeze", ["column", "axes"], ["column_2d"]),
             helper.make_node("Sub", ["p1", "column_2d"], ["d"]),
             helper.make_node("Slice", ["d", "starts", "ends", "slice_axes", "steps"], ["s"])]
    model = _model(nodes, [_value_info("a", [3, 5])], [_value_info("s", None), _value_info("p0", None)],
                   {"w": _rand(4, 5, seed=1), "c": _rand(4, seed=2), "m": _rand(4, 6, seed=3),
                    "idx": np.array([4, 0, 1, 2, 5], np.int64), "one": np.array(1, np.int64),
                    "split": np.array([2, 3], np.int64), "axes": np.array([1], np.int64),
                    "starts": np.array([1, -2], np.int64), "ends": np.array([99, 3], np.int64),
                    "slice_axes": np.array([1, 0], np.int64), "steps": np.array([2, 1], np.int64)})
    _check(model, _rand(3, 5, seed=9), rtol=1e-5, atol=1e-5)


# models exported from torch ------------------------------------------------------------------

def _export(model, inputs, **options) -> bytes:
    import io
    import warnings
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, buffer, dynamo=False, opset_version=17, **options)
    return buffer.getvalue()


def _small_net():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                                      nn.MaxPool2d(3, 2, 1))
            self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.GELU(), nn.LeakyReLU(0.1),
                                      nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), nn.Hardswish())
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10), nn.LayerNorm(10))

        def forward(self, x):
            features = self.body(self.stem(x))
            padded = nn.functional.pad(features, (1, 2, 0, 1), mode="reflect")
            return self.head(features), torch.cat([padded, torch.sigmoid(padded)], dim=1)

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        bn = net.stem[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return net.eval(), (torch.randn(2, 3, 32, 32),)


def test_a_torch_export_matches_torch_and_onnxruntime():
    torch = pytest.importorskip("torch")
    net, inputs = _small_net()
    exported = _export(net, inputs, input_names=["image"])
    graph = convc.from_onnx(exported)
    assert graph.inputs == ["image"]
    assert "gelu" in {n.op for n in graph.op_nodes()}  # the erf form, fused
    outputs = convc.compile(graph)(inputs[0].numpy())
    with torch.no_grad():
        expected = [t.numpy() for t in net(*inputs)]
    for ours, theirs in zip(outputs, expected):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
    for ours, theirs in zip(outputs, session.run(None, {"image": inputs[0].numpy()})):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["hifigan", "wav2vec2_features", "mobilenet_v2", "resnet18"])
def test_exported_transformers_models_match_torch(name):
    """The four original models of tests/hf_models.py exported with torch.onnx.export (opset 17, the TorchScript
    exporter) match torch eager as tests/test_models.py requires of from_torch (about a minute on 2 cores)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from hf_models import MODELS
    model, inputs = MODELS[name]()
    with torch.no_grad():
        expected = [t.numpy() for t in torch.utils._pytree.tree_leaves(model(*inputs))]
    actual = convc.compile(convc.from_onnx(_export(model, inputs)))(*(x.numpy() for x in inputs))
    actual = actual if isinstance(actual, tuple) else (actual,)
    assert len(actual) == len(expected)
    for ours, theirs in zip(actual, expected):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4 * float(np.abs(theirs).max()))


# the command line -------------------------------------------------------------------------------

def test_cli_dumps_runs_and_times_an_onnx_file(tmp_path, capsys):
    from convc.cli import main
    weight = _rand(4, 3, 3, 3, seed=1)
    model = _model([helper.make_node("Conv", ["input.1", "conv.weight"], ["c"], pads=[1, 1, 1, 1]),
                    helper.make_node("Relu", ["c"], ["out"])],
                   [_value_info("input.1", [1, 3, 8, 8])], [_value_info("out", [1, 4, 8, 8])], {"conv.weight": weight})
    path = str(tmp_path / "tiny.onnx")
    onnx.save(model, path)
    assert main(["dump", path, "--stage", "traced"]) == 0
    out = capsys.readouterr().out
    assert "graph @g(%input.1: f32[1,3,8,8])" in out and "%conv.weight = const f32[4,3,3,3]" in out
    x = _rand(1, 3, 8, 8, seed=2)
    np.savez(tmp_path / "inputs.npz", **{"input.1": x})
    assert main(["run", path, "--inputs", str(tmp_path / "inputs.npz")]) == 0
    out = capsys.readouterr().out
    expected = _reference(model, x)[0]
    assert f"output 0: float32[1, 4, 8, 8]  min 0  max {expected.max():.6g}" in out
    if _has("onnxruntime"):  # its output is the reference
        assert "reference: match, 1 output(s)" in out
    assert main(["run", path]) == 0  # random inputs of the declared shapes
    assert "output 0: float32[1, 4, 8, 8]" in capsys.readouterr().out
    assert main(["bench", path, "--min-time", "0.01"]) == 0
    assert "time per call:" in capsys.readouterr().out
    assert main(["run", path, "--inputs", str(tmp_path / "missing.npz")]) == 2
    assert "no such file" in capsys.readouterr().err
    np.savez(tmp_path / "wrong.npz", other=x)
    assert main(["run", path, "--inputs", str(tmp_path / "wrong.npz")]) == 2
    assert "has no array for input 0 ('input.1')" in capsys.readouterr().err


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def test_cli_reports_an_unsupported_onnx_model(tmp_path, capsys):
    from convc.cli import main
    model = _model([helper.make_node("Softmax", ["x"], ["y"], name="soft")], [_value_info("x", [2, 3])],
                   [_value_info("y", [2, 3])])
    onnx.save(model, str(tmp_path / "soft.onnx"))
    assert main(["run", str(tmp_path / "soft.onnx")]) == 1
    err = capsys.readouterr().err
    assert "ConvcError: from_onnx: soft.onnx (graph 'g', opset 17) cannot be imported" in err and "node 'soft'" in err


def test_without_onnx_the_error_says_what_to_install(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(convc.ConvcError, match=r"pip install 'convc\[onnx\]'") as error:
        convc.from_onnx("model.onnx")
    assert isinstance(error.value, ImportError)
