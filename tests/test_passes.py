"""Passes as IR text before and after, the pipeline's dumps, and numeric equality across opt levels."""
import numpy as np
import pytest

import convc
from convc import nn, ops, parse
from convc.passes.canonicalize_padding import CanonicalizePadding
from convc.passes.dead_code import DeadCodeElimination
from convc.passes.fuse_epilogue import FuseEpilogue
from convc.passes.shape_inference import ShapeInference
from convc.passes.pipeline import Pipeline, default_pipeline
import reference
from reference import assert_close


def run_passes(text, *passes):
    return Pipeline([ShapeInference(), *passes]).run(parse(text))


def test_same_padding_becomes_asymmetric_explicit_pads():
    before = """
graph @g(%x: f32[1,2,9,9], %w: f32[3,2,4,3]) {
  %0 = conv2d(%x, %w) {stride=[1,1], padding="same", dilation=[1,2], groups=1, padding_mode="zeros"}
  return %0
}"""
    after = """
graph @g(%x: f32[1,2,9,9], %w: f32[3,2,4,3]) {
  %0 = conv2d(%x, %w) {stride=[1,1], pad_lo=[1,2], pad_hi=[2,2], dilation=[1,2], groups=1, padding_mode="zeros"} : f32[1,3,9,9]
  return %0
}"""
    assert run_passes(before, CanonicalizePadding()) == parse(after)


def test_padding_mode_is_dropped_where_nothing_is_padded():
    before = """
graph @g(%x: f32[1,2,9], %w: f32[3,2,3]) {
  %0 = conv1d(%x, %w) {stride=[2], padding=[0], dilation=[1], groups=1, padding_mode="reflect"}
  return %0
}"""
    result = run_passes(before, CanonicalizePadding())
    assert result.node("0").attrs["padding_mode"] == "zeros"
    assert result.node("0").attrs["pad_lo"] == (0,) and "padding" not in result.node("0").attrs


CONV_RELU = """
graph @g(%x: f32[1,2,6,6], %w: f32[2,2,3,3]) {
  %0 = conv2d(%x, %w) {stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=1, padding_mode="zeros"}
  %1 = relu(%0)
  return %1
}"""


def test_activation_fuses_into_the_conv_it_follows():
    expected = """
graph @g(%x: f32[1,2,6,6], %w: f32[2,2,3,3]) {
  %0 = conv2d(%x, %w) {stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=1, padding_mode="zeros", activation="relu"} : f32[1,2,6,6]
  return %0
}"""
    assert run_passes(CONV_RELU, FuseEpilogue()) == parse(expected)


def test_activation_does_not_fuse_into_a_conv_used_elsewhere():
    shared = CONV_RELU.replace("return %1", "return %1, %0")
    result = run_passes(shared, FuseEpilogue())
    assert [n.op for n in result.op_nodes()] == ["conv2d", "relu"]
    assert "activation" not in result.node("0").attrs


def test_dead_code_elimination_keeps_only_what_outputs_need():
    text = """
graph @g(%x: f32[4], %y: f32[4]) {
  %c = const f32[4]
  %0 = relu(%x)
  %1 = add(%x, %c)
  %2 = tanh(%1)
  return %0
}"""
    result = run_passes(text, DeadCodeElimination())
    assert [n.op for n in result.nodes()] == ["input", "input", "relu"]
    assert result.inputs == ["x", "y"]


def test_shape_inference_errors_name_the_node():
    text = """
graph @g(%x: f32[1,3,5,5], %w: f32[4,2,3,3]) {
  %bad = conv2d(%x, %w) {stride=[1,1], padding=[0,0], dilation=[1,1], groups=1, padding_mode="zeros"}
  return %bad
}"""
    with pytest.raises(convc.ConvcError, match=r"shape_inference: %bad = conv2d: conv2d: input has 3 channels"):
        run_passes(text)


def _model():
    nn.manual_seed(7)
    first = nn.Conv2d(3, 4, 3, padding="same", padding_mode="replicate")
    second = nn.Conv2d(4, 4, 3, stride=2, groups=2)
    return lambda x: ops.add(ops.relu6(second(ops.sigmoid(first(x)))), 1.0), first, second


@pytest.mark.parametrize("opt_level", [0, 1, 2])
def test_every_opt_level_computes_the_same(opt_level):
    fn, first, second = _model()
    x = np.random.default_rng(0).standard_normal((2, 3, 11, 10)).astype(np.float32)
    hidden = reference.sigmoid(reference.conv_nd(x, first.weight, first.bias, padding=1, padding_mode="replicate"))
    expected = reference.relu6(reference.conv_nd(hidden, second.weight, second.bias, stride=2, groups=2)) + 1
    compiled = convc.compile(fn, x, opt_level=opt_level)
    assert_close(compiled(x), expected.astype(np.float32), 36)
    fused = [n.attrs.get("activation") for n in compiled.graph.op_nodes() if n.op == "conv2d"]
    relu6_plus_one = (("relu6", (0,)), ("add", (1, 1.0)))  # the scalar add fuses after the activation
    assert fused == (["sigmoid", relu6_plus_one] if opt_level == 2 else [None, None])


def test_dump_all_prints_the_ir_after_each_pass(capsys):
    fn, _, _ = _model()
    convc.compile(fn, np.zeros((1, 3, 8, 8), np.float32), dump="all")
    printed = capsys.readouterr().out
    for name in ("shape_inference", "canonicalize_padding", "fold_pad", "fold_constants", "dead_code", "fuse_broadcast",
                 "fold_scale", "fold_bias", "fuse_epilogue", "fuse_separable"):
        assert f"// ----- IR after {name} -----" in printed


def test_dump_directory_gets_numbered_files_that_parse(tmp_path, monkeypatch):
    fn, _, _ = _model()
    monkeypatch.setenv("CONVC_DUMP", str(tmp_path / "by_env"))
    convc.compile(fn, np.zeros((1, 3, 8, 8), np.float32), opt_level=1)
    names = sorted(p.name for p in (tmp_path / "by_env").iterdir())
    assert names == ["000_input.txt", "001_shape_inference.txt", "002_canonicalize_padding.txt",
                     "003_common_subexpressions.txt", "004_fold_pad.txt", "005_fold_constants.txt",
                     "006_fold_batch_norm.txt", "007_dead_code.txt"]
    assert "pad_lo" in (tmp_path / "by_env" / "002_canonicalize_padding.txt").read_text()
    parse((tmp_path / "by_env" / "007_dead_code.txt").read_text())


def test_dump_false_switches_off_the_environment_dump(tmp_path, monkeypatch, capsys):
    fn, _, _ = _model()
    monkeypatch.setenv("CONVC_DUMP", "all")
    convc.compile(fn, np.zeros((1, 3, 8, 8), np.float32), dump=False)
    assert "IR after" not in capsys.readouterr().out


def test_eager_ops_honour_convc_dump(tmp_path, monkeypatch):
    from convc import eager
    monkeypatch.setenv("CONVC_DUMP", str(tmp_path))
    eager.clear_cache()
    ops.relu6(np.zeros((3, 5), np.float64))
    assert "relu6(" in (tmp_path / "000_input.txt").read_text()


@pytest.mark.parametrize("dump", [123, 1.5, ["all"], True])
def test_dump_of_the_wrong_type_is_a_type_error_naming_dump(dump):
    fn, _, _ = _model()
    with pytest.raises(TypeError, match=r"dump=.* must be 'all', a directory path, False or None"):
        convc.compile(fn, np.zeros((1, 3, 8, 8), np.float32), dump=dump)


def test_transposed_conv_padding_becomes_a_crop_of_the_full_output():
    before = """
graph @g(%x: f32[1,2,5], %w: f32[2,3,4]) {
  %0 = conv_transpose1d(%x, %w) {stride=[2], padding=[2], output_padding=[1], dilation=[1], groups=1}
  return %0
}"""
    after = """
graph @g(%x: f32[1,2,5], %w: f32[2,3,4]) {
  %0 = conv_transpose1d(%x, %w) {stride=[2], pad_lo=[2], pad_hi=[1], dilation=[1], groups=1} : f32[1,3,9]
  return %0
}"""
    assert run_passes(before, CanonicalizePadding()) == parse(after)


def test_pad_list_becomes_per_axis_amounts():
    before = """
graph @g(%x: f32[2,3,4]) {
  %0 = pad(%x) {pad=[1,-1,0,2], mode="constant", value=0.5}
  return %0
}"""
    after = """
graph @g(%x: f32[2,3,4]) {
  %0 = pad(%x) {pad_lo=[0,0,1], pad_hi=[0,2,-1], mode="constant", value=0.5} : f32[2,5,4]
  return %0
}"""
    assert run_passes(before, CanonicalizePadding()) == parse(after)


def test_tf_same_padding_with_strides_puts_the_extra_on_the_high_side():
    before = """
graph @g(%x: f32[1,10,9,2]) {
  %0 = extract_patches(%x) {sizes=[4,3], strides=[3,2], rates=[1,2], padding="SAME"}
  return %0
}"""
    after = """
graph @g(%x: f32[1,10,9,2]) {
  %0 = extract_patches(%x) {sizes=[4,3], strides=[3,2], rates=[1,2], pad_lo=[1,2], pad_hi=[2,2]} : f32[1,4,5,24]
  return %0
}"""
    # rows: out 4, total (4-1)*3 + 4 - 10 = 3 -> (1, 2); cols: out 5, total (5-1)*2 + 5 - 9 = 4 -> (2, 2)
    assert run_passes(before, CanonicalizePadding()) == parse(after)


def test_separable_padding_is_canonical_and_computes_the_same():
    x = np.random.default_rng(0).standard_normal((1, 7, 8, 3)).astype(np.float32)
    dw = np.random.default_rng(1).standard_normal((3, 2, 3, 2)).astype(np.float32)
    pw = np.random.default_rng(2).standard_normal((1, 1, 6, 4)).astype(np.float32)
    fn = lambda a: ops.separable_conv2d(a, dw, pw, [1, 2, 2, 1], "SAME")  # noqa: E731
    compiled = convc.compile(fn, x)
    node = compiled.graph.op_nodes()[0]
    # rows: out 4, total (4-1)*2 + 3 - 7 = 2 -> (1, 1); cols: out 4, total (4-1)*2 + 2 - 8 = 0
    assert node.attrs["pad_lo"] == (1, 0) and node.attrs["pad_hi"] == (1, 0) and "padding" not in node.attrs
    assert_close(compiled(x), reference.separable_conv2d(x, dw, pw, [1, 2, 2, 1], "SAME"), 24)


def test_timing_instrument_records_every_pass():
    from convc.passes import default_pipeline
    from convc.passes.pipeline import Timing
    timing = Timing()
    default_pipeline(2, [timing]).run(parse(CONV_RELU))
    assert set(timing.seconds) == {"shape_inference", "canonicalize_padding", "common_subexpressions", "fold_pad",
                                   "fold_batch_norm", "dead_code", "fuse_broadcast", "fold_scale", "fold_bias",
                                   "fuse_epilogue", "fuse_separable", "fuse_elementwise"}  # no evaluate: no constant folding
    assert all(seconds >= 0 for seconds in timing.seconds.values())


def test_broadcast_to_feeding_elementwise_ops_is_read_in_place():
    from convc.passes.fuse_broadcast import FuseBroadcast
    before = """
graph @g(%x: f32[2,3,4], %b: f32[3,1]) {
  %0 = broadcast_to(%b) {shape=[2,3,4]}
  %1 = add(%x, %0)
  %2 = mul(%0, %0)
  %3 = broadcast_to(%b) {shape=[3,4]}
  return %1, %2, %3
}"""
    after = """
graph @g(%x: f32[2,3,4], %b: f32[3,1]) {
  %0 = broadcast_to(%b) {shape=[2,3,4]} : f32[2,3,4]
  %1 = add(%x, %b) : f32[2,3,4]
  %2 = mul(%b, %0) : f32[2,3,4]
  %3 = broadcast_to(%b) {shape=[3,4]} : f32[3,4]
  return %1, %2, %3
}"""
    # in mul one operand can read b in place, not both (mul(b, b) would be [3,1]);
    # a broadcast_to that is a graph output stays
    assert run_passes(before, FuseBroadcast(), DeadCodeElimination()) == parse(after)


def test_broadcast_fusion_computes_the_same():
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((3, 1)).astype(np.float32)
    fn = lambda x, b: ops.sub(ops.broadcast_to(b, (2, 3, 4)), x)  # noqa: E731
    compiled = convc.compile(fn, x, b)
    assert [n.op for n in compiled.graph.op_nodes()] == ["sub"]
    np.testing.assert_array_equal(compiled(x, b), np.broadcast_to(b, (2, 3, 4)) - x)


def _mobile_block(channels, filters, multiplier=1, stride=1, dilation=1, bias=True):
    nn.manual_seed(11)
    return nn.Sequential(nn.Conv2d(channels, channels * multiplier, 3, stride=stride, padding=dilation,
                                   dilation=dilation, groups=channels, bias=bias),
                         nn.ReLU6(), nn.Conv2d(channels * multiplier, filters, 1, bias=bias), nn.ReLU())


@pytest.mark.parametrize("multiplier, stride, dilation, bias", [(1, 1, 1, True), (2, 2, 1, False), (1, 1, 2, True)])
def test_depthwise_then_pointwise_fuses_into_one_separable_node(multiplier, stride, dilation, bias):
    model = _mobile_block(4, 6, multiplier, stride, dilation, bias)
    x = np.random.default_rng(0).standard_normal((2, 4, 40, 36)).astype(np.float32)
    # the plain pipeline's fusion (host-independent; on the host's blocked layout the blocked rule decides)
    fused = default_pipeline(2).run(convc.trace(model, x))
    (node,) = fused.op_nodes()
    assert node.op == "separable_conv2d" and node.attrs["data_format"] == "NCHW"
    assert node.attrs["depthwise_activation"] == "relu6" and node.attrs["activation"] == "relu"
    assert [fused.type_of(o).shape for o in node.operands[1:]] == [
        (3, 3, 4, multiplier), (1, 1, 4 * multiplier, 6), (4 * multiplier,), (6,)]
    depthwise, pointwise = model[0], model[2]
    hidden = reference.relu6(reference.conv_nd(x, depthwise.weight, depthwise.bias, stride=stride, padding=dilation,
                                               dilation=dilation, groups=4))
    expected = reference.relu(reference.conv_nd(hidden, pointwise.weight, pointwise.bias))
    assert_close(convc.compile(fused)(x), expected, 36 * multiplier)
    assert_close(convc.compile(model, x)(x), expected, 36 * multiplier)


def test_depthwise_pointwise_fusion_as_ir_text():
    from convc.passes.fuse_separable import FuseSeparable
    before = """
graph @g(%x: f32[1,2,5,20]) {
  %wd = const f32[2,1,3,3]
  %wp = const f32[3,2,1,1]
  %0 = conv2d(%x, %wd) {stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=2, padding_mode="zeros"}
  %1 = conv2d(%0, %wp) {stride=[1,1], pad_lo=[0,0], pad_hi=[0,0], dilation=[1,1], groups=1, padding_mode="zeros"}
  return %1
}"""
    after = """
graph @g(%x: f32[1,2,5,20]) {
  %c0 = const f32[3,3,2,1]
  %c1 = const f32[1,1,2,3]
  %c2 = const f32[2]
  %c3 = const f32[3]
  %2 = separable_conv2d(%x, %c0, %c1, %c2, %c3) {strides=[1,1], data_format="NCHW", dilations=[1,1], pad_lo=[1,1], pad_hi=[1,1]} : f32[1,3,5,20]
  return %2
}"""
    rng = np.random.default_rng(0)
    weights = {"wd": rng.standard_normal((2, 1, 3, 3)).astype(np.float32),
               "wp": rng.standard_normal((3, 2, 1, 1)).astype(np.float32)}
    result = Pipeline([ShapeInference(), FuseSeparable(), DeadCodeElimination()]).run(parse(before, weights))
    assert result == parse(after)
    fused = {n.type.shape: n.value for n in result.consts()}
    np.testing.assert_array_equal(fused[(3, 3, 2, 1)][:, :, 1, 0], weights["wd"][1, 0])
    np.testing.assert_array_equal(fused[(1, 1, 2, 3)][0, 0], weights["wp"][:, :, 0, 0].T)


def _kernels(compiled):
    return [n.op for n in compiled.graph.op_nodes() if n.op != "reorder"]


def test_no_fusion_where_it_would_not_pay_or_not_apply():
    x = np.random.default_rng(1).standard_normal((1, 4, 12, 10)).astype(np.float32)
    # rows of 10 outputs: the plain per-pixel kernel would be slower (the plain pipeline's rule; where
    # the host's block puts 4 channels on the blocked layout, the blocked rule decides instead)
    narrow = default_pipeline(2).run(convc.trace(_mobile_block(4, 6), x))
    assert [n.op for n in narrow.op_nodes()] == ["conv2d", "conv2d"]
    wide = np.random.default_rng(2).standard_normal((1, 4, 12, 32)).astype(np.float32)
    block = _mobile_block(4, 6)
    plain = convc.compile(lambda a: block[2](block[0](a)), wide)
    assert _kernels(plain) == ["separable_conv2d"]
    def depthwise_also_returned(a):
        middle = block[0](a)
        return block[2](middle), middle
    twice = convc.compile(depthwise_also_returned, wide)
    assert _kernels(twice) == ["conv2d", "conv2d"]
    weights_as_inputs = convc.compile(lambda a, w: ops.conv2d(ops.conv2d(a, w, padding=1, groups=4), block[2].weight),
                                      wide, block[0].weight)
    assert _kernels(weights_as_inputs) == ["conv2d", "conv2d"]


def test_constant_per_channel_add_folds_into_the_conv_bias():
    from convc.passes.fold_bias import FoldBias
    before = """
graph @g(%x: f32[1,2,6,6]) {
  %w = const f32[3,2,3,3]
  %b = const f32[3]
  %c = const f32[3,1,1]
  %0 = conv2d(%x, %w, %b) {stride=[1,1], pad_lo=[0,0], pad_hi=[0,0], dilation=[1,1], groups=1, padding_mode="zeros"}
  %1 = add(%c, %0)
  %2 = relu(%1)
  return %2
}"""
    values = {"w": np.ones((3, 2, 3, 3), np.float32), "b": np.array([1, 2, 3], np.float32),
              "c": np.array([10, 20, 30], np.float32).reshape(3, 1, 1)}
    result = Pipeline([ShapeInference(), FoldBias(), FuseEpilogue(), DeadCodeElimination()]).run(parse(before, values))
    (conv,) = result.op_nodes()
    assert conv.op == "conv2d" and conv.attrs["activation"] == "relu"
    np.testing.assert_array_equal(result.node(conv.operands[2]).value, [11, 22, 33])


def test_constant_per_channel_scale_folds_into_the_conv_weight_and_bias():
    from convc.passes.fold_scale import FoldScale
    before = """
graph @g(%x: f32[1,2,6,6], %r: f32[1,3,4,4]) {
  %w = const f32[3,2,3,3]
  %b = const f32[3]
  %c = const f32[3,1,1]
  %0 = conv2d(%x, %w, %b) {stride=[1,1], pad_lo=[0,0], pad_hi=[0,0], dilation=[1,1], groups=1, padding_mode="zeros"}
  %1 = mul(%c, %0)
  %2 = add(%1, %r)
  return %2
}"""
    values = {"w": np.ones((3, 2, 3, 3), np.float32), "b": np.array([1, 2, 3], np.float32),
              "c": np.array([10, 20, -1], np.float32).reshape(3, 1, 1)}
    result = Pipeline([ShapeInference(), FoldScale(), DeadCodeElimination()]).run(parse(before, values))
    conv, add = result.op_nodes()
    assert conv.op == "conv2d" and add.op == "add" and add.operands[0] == conv.name
    np.testing.assert_array_equal(result.node(conv.operands[1]).value[:, 0, 0, 0], [10, 20, -1])
    np.testing.assert_array_equal(result.node(conv.operands[2]).value, [10, 40, -3])


SCALED = {  # op, weight shape, input shape, reference, scale shapes that fold
    "conv1d": (lambda x, w, b: ops.conv1d(x, w, b, 1, 1, 1, 2), (6, 2, 3), (2, 4, 7),
               lambda x, w, b: reference.conv_nd(x, w, b, 1, 1, 1, 2), [(6, 1), (1, 6, 1), (1,)]),
    "conv2d": (lambda x, w, b: ops.conv2d(x, w, b, 2), (5, 3, 3, 3), (1, 3, 8, 8),
               lambda x, w, b: reference.conv_nd(x, w, b, 2), [(5, 1, 1), (1, 5, 1, 1), ()]),
    "conv3d": (lambda x, w, b: ops.conv3d(x, w, b), (4, 2, 2, 2, 2), (1, 2, 4, 4, 4),
               lambda x, w, b: reference.conv_nd(x, w, b), [(4, 1, 1, 1)]),
    "conv_transpose2d": (lambda x, w, b: ops.conv_transpose2d(x, w, b, 2, 0, 0, 2), (4, 3, 3, 3), (1, 4, 5, 5),
                         lambda x, w, b: reference.conv_transpose_nd(x, w, b, 2, 0, 0, 2), [(6, 1, 1)]),
    "linear": (lambda x, w, b: ops.linear(x, w, b), (5, 7), (3, 7), reference.linear, [(5,), (1, 5)]),
}


@pytest.mark.parametrize("name", sorted(SCALED))
@pytest.mark.parametrize("bias", [False, True])
def test_per_channel_scales_fold_and_compute_the_reference(name, bias):
    op, w_shape, x_shape, oracle, shapes = SCALED[name]
    rng = np.random.default_rng(len(name))
    w = rng.standard_normal(w_shape).astype(np.float32)
    x = rng.standard_normal(x_shape).astype(np.float32)
    out_shape = oracle(x, w, None).shape
    b = rng.standard_normal(out_shape[1]).astype(np.float32) if bias else None
    spatial = [(1, 1) + out_shape[2:]] if len(out_shape) > 2 else []  # varies along other axes: stays a mul
    for shape in shapes + spatial:
        scale = rng.standard_normal(shape).astype(np.float32)
        compiled = convc.compile(lambda t: ops.mul(scale, op(t, w, b)), x, cache_dir=False)
        folds = scale.size in (1, out_shape[1])
        assert ("mul" in [n.op for n in compiled.graph.op_nodes()]) != folds, compiled.graph.dump()
        expected = (scale.astype(np.float64) * oracle(x.astype(np.float64), w.astype(np.float64), b)).astype(np.float32)
        assert_close(compiled(x), expected, terms=w[0].size)


@pytest.mark.parametrize("constant", [np.ones((1, 1, 6), np.float32), np.ones((2, 3, 1, 1), np.float32)])
def test_adds_that_vary_along_other_axes_do_not_fold(constant):
    w = np.ones((3, 2, 3, 3), np.float32)
    fn = lambda x: ops.add(ops.conv2d(x, w), constant)  # noqa: E731
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    compiled = convc.compile(fn, x)
    assert [n.op for n in compiled.graph.op_nodes()] == ["conv2d", "add"]
    assert_close(compiled(x), (reference.conv_nd(x, w) + constant).astype(np.float32), 18)


def test_keras_layer_bias_and_activation_fold_into_the_separable_kernel():
    nn.manual_seed(0)
    layer = nn.SeparableConv2D(5, 3, padding="same", activation="relu6", bias_initializer="ones")
    x = np.random.default_rng(0).standard_normal((1, 9, 10, 3)).astype(np.float32)
    layer(x)
    compiled = convc.compile(layer, x)
    (node,) = compiled.graph.op_nodes()
    assert node.op == "separable_conv2d" and node.attrs["activation"] == "relu6" and len(node.operands) == 5
    expected = reference.relu6(reference.separable_conv2d(x, layer.depthwise_kernel, layer.pointwise_kernel,
                                                          [1, 1, 1, 1], "SAME") + layer.bias)
    assert_close(compiled(x), expected.astype(np.float32), 32)


def test_a_bias_that_is_a_graph_input_is_left_alone():
    w = np.ones((3, 2, 1, 1), np.float32)
    fn = lambda x, b: ops.add(ops.conv2d(x, w, b), np.ones((3, 1, 1), np.float32))  # noqa: E731
    compiled = convc.compile(fn, np.zeros((1, 2, 4, 4), np.float32), np.zeros(3, np.float32))
    assert [n.op for n in compiled.graph.op_nodes()] == ["conv2d", "add"]


def test_constant_subgraphs_fold_at_opt_level_1():
    w = np.random.default_rng(0).standard_normal((2, 3, 3)).astype(np.float32)
    scale = np.array([0.5, 2.0], np.float32).reshape(2, 1, 1)
    fn = lambda x: ops.conv1d(x, ops.mul(ops.tanh(w), scale), padding=1)  # noqa: E731
    x = np.random.default_rng(1).standard_normal((1, 3, 9)).astype(np.float32)
    folded = convc.compile(fn, x, opt_level=1)
    assert [n.op for n in folded.graph.op_nodes()] == ["conv1d"]
    weight = folded.graph.node(folded.graph.op_nodes()[0].operands[1]).value
    np.testing.assert_allclose(weight, np.tanh(w) * scale, rtol=1e-6)
    assert_close(folded(x), reference.conv_nd(x, np.tanh(w.astype(np.float64)) * scale, padding=1).astype(np.float32), 9)


def test_large_constant_results_are_not_folded():
    from convc.passes.fold_constants import FOLD_LIMIT, FoldConstants

    def evaluate(op, values, attrs):
        raise AssertionError(f"{op} should not be folded")
    text = f"""
graph @g(%x: f32[{FOLD_LIMIT + 1}]) {{
  %c = const f32[1]
  %0 = broadcast_to(%c) {{shape=[{FOLD_LIMIT + 1}]}}
  %1 = add(%x, %0)
  return %1
}}"""
    result = Pipeline([ShapeInference(), FoldConstants(evaluate)]).run(parse(text, {"c": np.ones(1, np.float32)}))
    assert [n.op for n in result.op_nodes()] == ["broadcast_to", "add"]


def test_pads_feeding_convs_fold_into_their_padding():
    from convc.passes.fold_pad import FoldPad
    before = """
graph @g(%x: f32[1,2,6,7]) {
  %w = const f32[3,2,3,3]
  %0 = pad(%x) {pad_lo=[0,0,1,2], pad_hi=[0,0,0,1], mode="constant", value=0.0}
  %1 = conv2d(%0, %w) {stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=1, padding_mode="zeros"}
  %2 = pad(%x) {pad_lo=[0,0,1,1], pad_hi=[0,0,2,1], mode="reflect", value=0.0}
  %3 = conv2d(%2, %w) {stride=[2,1], pad_lo=[0,0], pad_hi=[0,0], dilation=[1,1], groups=1, padding_mode="zeros"}
  %4 = pad(%x) {pad_lo=[0,0,1,1], pad_hi=[0,0,1,1], mode="constant", value=1.0}
  %5 = conv2d(%4, %w) {stride=[1,1], pad_lo=[0,0], pad_hi=[0,0], dilation=[1,1], groups=1, padding_mode="zeros"}
  %6 = pad(%x) {pad_lo=[0,1,1,1], pad_hi=[0,0,1,1], mode="constant", value=0.0}
  return %1, %3, %5, %6
}"""
    after = """
graph @g(%x: f32[1,2,6,7]) {
  %w = const f32[3,2,3,3]
  %1 = conv2d(%x, %w) {stride=[1,1], pad_lo=[2,3], pad_hi=[1,2], dilation=[1,1], groups=1, padding_mode="zeros"} : f32[1,3,7,10]
  %3 = conv2d(%x, %w) {stride=[2,1], pad_lo=[1,1], pad_hi=[2,1], dilation=[1,1], groups=1, padding_mode="reflect"} : f32[1,3,4,7]
  %4 = pad(%x) {pad_lo=[0,0,1,1], pad_hi=[0,0,1,1], mode="constant", value=1.0} : f32[1,2,8,9]
  %5 = conv2d(%4, %w) {stride=[1,1], pad_lo=[0,0], pad_hi=[0,0], dilation=[1,1], groups=1, padding_mode="zeros"} : f32[1,3,6,7]
  %6 = pad(%x) {pad_lo=[0,1,1,1], pad_hi=[0,0,1,1], mode="constant", value=0.0} : f32[1,3,8,9]
  return %1, %3, %5, %6
}"""
    # a pad of ones, or one that pads the channel axis, stays
    assert run_passes(before, FoldPad(), DeadCodeElimination()) == parse(after)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_folded_pads_compute_the_reference(mode, rank):
    rng = np.random.default_rng(rank)
    x = rng.standard_normal((2, 3) + (5,) * rank).astype(np.float64)
    w = rng.standard_normal((4, 3) + (3,) * rank)
    amounts = tuple([1, 2, 0, 1, 2, 1][:2 * rank])
    conv = getattr(ops, f"conv{rank}d")
    fn = lambda x: conv(ops.pad(x, amounts, mode=mode), w, padding=1 if mode == "constant" else 0)  # noqa: E731
    compiled = convc.compile(fn, x)
    assert [n.op for n in compiled.graph.op_nodes() if n.op != "reorder"] == [f"conv{rank}d"]
    padded = reference.pad(x, amounts, mode)
    assert_close(compiled(x), reference.conv_nd(padded, w, padding=1 if mode == "constant" else 0), 3 ** rank * 3)


def test_a_constant_broadcast_after_a_conv_folds_into_its_bias():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((1, 4, 8, 8)), rng.standard_normal((4, 4, 3, 3))
    b = rng.standard_normal((4, 1, 1))
    fn = lambda x: ops.relu(ops.add(ops.conv2d(x, w, padding=1), ops.broadcast_to(b, (1, 4, 8, 8))))  # noqa: E731
    compiled = convc.compile(fn, x)
    nodes = [n for n in compiled.graph.op_nodes() if n.op != "reorder"]
    assert [n.op for n in nodes] == ["conv2d"] and nodes[0].attrs["activation"] == "relu" and len(nodes[0].operands) == 3
    assert_close(compiled(x), np.maximum(reference.conv_nd(x, w, padding=1) + b, 0), 36)
