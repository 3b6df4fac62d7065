"""The IR: printing, parsing back, structural equality, the verifier, Graphviz output."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import convc
from convc import ConvcError, Graph, TensorType, nn, ops, parse, verify

BLOCK = """\
graph @block(%x: f32[1,32,112,112]) {
  %w0 = const f32[32,1,3,3]
  %0 = conv2d(%x, %w0) {stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=32, padding_mode="zeros"} : f32[1,32,112,112]
  %1 = relu(%0) : f32[1,32,112,112]
  return %1
}
"""


def test_parse_then_print_is_the_identity():
    assert str(parse(BLOCK)) == BLOCK


def test_parsed_graph_verifies_and_names_its_parts():
    graph = parse(BLOCK, consts={"w0": np.zeros((32, 1, 3, 3), np.float32)})
    verify(graph)
    assert graph.name == "block" and graph.inputs == ["x"] and graph.outputs == ["1"]
    assert graph.type_of("0") == TensorType((1, 32, 112, 112), "f32")
    assert graph.node("0").attrs["groups"] == 32 and graph.node("0").attrs["pad_lo"] == (1, 1)


@given(st.sampled_from([1, 2, 3]), st.booleans(), st.sampled_from(["same", "valid", 1, (0, 2, 1)]),
       st.sampled_from(["zeros", "circular", "reflect", "replicate"]), st.sampled_from([np.float32, np.float64]))
def test_round_trip_of_traced_graphs(rank, bias, padding, mode, dtype):
    padding = padding[:rank] if isinstance(padding, tuple) else padding
    nn.manual_seed(0)
    conv = getattr(nn, f"Conv{rank}d")(2, 4, 3, padding=padding, bias=bias, padding_mode=mode, dtype=dtype)
    graph = convc.trace(lambda x: ops.tanh(ops.mul(conv(x), 2.0)), np.zeros((1, 2) + (5,) * rank, dtype))
    values = {n.name: n.value for n in graph.consts()}
    again = parse(str(graph), consts=values)
    assert again == graph
    assert str(again) == str(graph)
    verify(again)


def test_structural_equality_ignores_names_but_not_structure():
    a = parse(BLOCK)
    b = parse(BLOCK.replace("%x", "%input").replace("%w0", "%weight").replace("%0", "%conv").replace("%1", "%out"))
    assert a == b
    assert a != parse(BLOCK.replace("groups=32", "groups=1").replace("f32[32,1,3,3]", "f32[32,32,3,3]"))
    assert a != parse(BLOCK.replace("relu", "tanh"))


def test_constant_values_take_part_in_equality_when_both_are_known():
    a = parse(BLOCK, consts={"w0": np.zeros((32, 1, 3, 3), np.float32)})
    b = parse(BLOCK, consts={"w0": np.ones((32, 1, 3, 3), np.float32)})
    assert a != b and a == parse(BLOCK)


@pytest.mark.parametrize("text, pattern", [
    ("", "empty text"),
    ("graph main() {\n}", "expected 'graph @name"),
    ("graph @g(%x: f32[2]) {\n  %0 = frobnicate(%x) : f32[2]\n  return %0\n}", "unknown op 'frobnicate'"),
    ("graph @g(%x: f32[2]) {\n  %0 = relu(%y) : f32[2]\n  return %0\n}", "undefined value %y"),
    ("graph @g(%x: f32[2]) {\n  %0 = relu(%x) : f32[2]\n  return %9\n}", "returns undefined value %9"),
    ("graph @g(%x: f32[2]) {\n  %0 = relu(%x) : f32[2]\n}", "no 'return'"),
    ("graph @g(%x: f32[2]) {\n  what is this\n  return %x\n}", "cannot read 'what is this'"),
    ("graph @g(%x: f32[2]) {\n  %0 = relu(%x) {a=[1,} : f32[2]\n  return %0\n}", "line 2"),
])
def test_parse_errors_say_where_and_what(text, pattern):
    with pytest.raises(ConvcError, match=pattern):
        parse(text)


def test_verifier_rejects_a_type_that_breaks_the_shape_rule():
    graph = parse(BLOCK)
    graph.node("0").type = TensorType((1, 32, 110, 110), "f32")
    with pytest.raises(ConvcError, match=r"%0 = conv2d is typed f32\[1,32,110,110\] but its shape rule gives f32\[1,32,112,112\]"):
        verify(graph)


def test_parser_rejects_a_result_type_that_breaks_the_shape_rule():
    with pytest.raises(ConvcError, match=r"line 3: %0 = conv2d is typed f32\[1,32,110,110\], but its shape rule "
                                         r"gives f32\[1,32,112,112\]"):
        parse(BLOCK.replace(": f32[1,32,112,112]\n  %1", ": f32[1,32,110,110]\n  %1"))


@pytest.mark.parametrize("text, pattern", [
    ("graph @g(%x: i32[2]) {\n  return %x\n}", r"line 1: dtype 'i32' is not supported; expected one of \['f32', 'f64'\]"),
    ("graph @g(%x: f32[2]) {\n  %c = const bf16[2]\n  return %x\n}", r"line 2: dtype 'bf16' is not supported"),
    ("graph @g(%x: f32[1,3,4611686018427387904]) {\n  return %x\n}", r"f32\[1,3,4611686018427387904\] is too large"),
    ("graph @g(%x: f32[2]) {\n  %0 = add(%x, %x) {activation=\"relu\"} : f32[2]\n  return %0\n}",
     r"add: unknown attribute activation='relu'; add takes no attributes"),
    ("graph @g(%x: f32[1,2,5]) {\n  %w = const f32[2,2,3]\n  %0 = conv1d(%x, %w) {stride=[1], padding=[0], dilation=[1], "
     "groups=1, depthwise_activation=\"relu\"} : f32[1,2,3]\n  return %0\n}", r"conv1d: unknown attribute depthwise_activation"),
    ("graph @g(%x: f32[1,2,5]) {\n  %w = const f32[2,2,3]\n  %0 = conv1d(%x, %w) {stride=[1], padding=[0], pad_lo=[0], pad_hi=[0], "
     "dilation=[1], groups=1} : f32[1,2,3]\n  return %0\n}", r"conv1d: unknown attribute pad_lo"),
])
def test_parser_rejects_what_no_kernel_could_run(text, pattern):
    with pytest.raises(ConvcError, match=pattern):
        parse(text)


def test_tensor_sizes_are_exact_integers():
    big = TensorType((1 << 20, 1 << 20), "f32")
    assert big.size == 1 << 40
    with pytest.raises(ConvcError, match="too large"):
        TensorType((3, 1 << 62), "f32")
    with pytest.raises(ConvcError, match="must not be negative"):
        TensorType((3, -1), "f64")


def test_verifier_rejects_untyped_values_and_missing_outputs():
    graph = Graph("g")
    x = graph.add_input(TensorType((2,), "f32"), "x")
    graph.outputs = [graph.add_node("relu", [x])]
    with pytest.raises(ConvcError, match="has no type"):
        verify(graph)
    graph.outputs = []
    with pytest.raises(ConvcError, match="returns nothing"):
        verify(graph)


def test_to_dot_has_a_node_per_value_and_an_edge_per_operand():
    dot = parse(BLOCK).to_dot()
    assert dot.startswith('digraph "block"')
    assert '"x" -> "0" [label="0"]' in dot and '"w0" -> "0" [label="1"]' in dot and '"0" -> "1"' in dot
    assert dot.count("->") == 4  # x, w0 -> conv; conv -> relu; relu -> return


def test_rewrites_keep_edges_and_operands_in_step():
    graph = parse(BLOCK)
    extra = graph.add_node("tanh", ["0"], type=graph.type_of("0"))
    graph.replace_all_uses("1", extra)
    graph.remove("1")
    assert graph.outputs == [extra]
    verify(graph)
    with pytest.raises(ConvcError, match="still used"):
        graph.remove("0")


@given(st.text(max_size=200))
def test_parse_of_arbitrary_text_raises_only_convc_errors(text):
    try:
        parse(text)
    except ConvcError:
        pass


@given(st.integers(0, len(BLOCK) - 1), st.integers(0, len(BLOCK)), st.text(max_size=12))
def test_parse_of_damaged_ir_raises_only_convc_errors(start, end, insert):
    damaged = BLOCK[:start] + insert + BLOCK[max(start, end):]
    try:
        graph = parse(damaged)
    except ConvcError:
        return
    try:
        verify(graph)
    except ConvcError:
        pass


@pytest.mark.parametrize("attrs, pattern", [
    ("stride=[0,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=32", r"stride=\(0, 1\) must be positive"),
    ("stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,-2], groups=32", "dilation=.* must be positive"),
    ("stride=[1,1], pad_lo=[1,1], pad_hi=[-1,1], dilation=[1,1], groups=32", r"pad_hi=\(-1, 1\) must be >= 0"),
    ("stride=[1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=32", "stride=.* must have 2 elements"),
    ("stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1]", r"missing attribute\(s\) \['groups'\]"),
    ("stride=[1,1], dilation=[1,1], groups=32", "needs the attributes"),
    ("stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=32, speed=9", "unknown attribute speed=9"),
    ("stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=32, activation=\"gelu\"", "activation='gelu'"),
])
def test_malformed_attributes_in_ir_text_are_rejected_before_any_kernel(attrs, pattern):
    text = BLOCK.replace('stride=[1,1], pad_lo=[1,1], pad_hi=[1,1], dilation=[1,1], groups=32, padding_mode="zeros"',
                         attrs)
    with pytest.raises(ConvcError, match=pattern):  # when parsed, or at the latest when verified
        convc.compile(parse(text, consts={"w0": np.zeros((32, 1, 3, 3), np.float32)}))
