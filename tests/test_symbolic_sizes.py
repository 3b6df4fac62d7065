"""Symbolic sizes (convc.symbolic, convc.dynamic): expressions against Python's integer arithmetic,
their printed form read back, the shape rules of conv, transposed conv, pool, pad and reshape ops
traced with a symbolic axis against the same rules traced at each length (the preconditions found
are the first length from which they agree), and the errors of bad `dynamic=` specs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convc
from convc import ConvcError, Dim, ops
from convc.dynamic import preconditions
from convc.symbolic import Size, parse_extent, symbol


# expressions -----------------------------------------------------------------------------------
@st.composite
def expressions(draw, depth=3):
    """(a Size or int, the same as a function of (T, H)) built by + - * // from T, H and ints."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        leaf = draw(st.sampled_from(["T", "H", "int"]))
        if leaf == "int":
            value = draw(st.integers(-9, 9))
            return value, lambda t, h, value=value: value
        return symbol(leaf), (lambda t, h: t) if leaf == "T" else (lambda t, h: h)
    a, fa = draw(expressions(depth - 1))
    operator = draw(st.sampled_from(["+", "-", "*int", "*", "//"]))
    if operator in ("*int", "//"):
        n = draw(st.integers(1, 7))
        if operator == "*int":
            return a * n, lambda t, h: fa(t, h) * n
        return a // n, lambda t, h: fa(t, h) // n
    b, fb = draw(expressions(depth - 1))
    if operator == "+":
        return a + b, lambda t, h: fa(t, h) + fb(t, h)
    if operator == "-":
        return a - b, lambda t, h: fa(t, h) - fb(t, h)
    return a * b, lambda t, h: fa(t, h) * fb(t, h)


@settings(max_examples=300, deadline=None)
@given(expressions(), st.lists(st.tuples(st.integers(0, 500), st.integers(0, 50)), min_size=1, max_size=8))
def test_an_expression_evaluates_as_python_ints_do_and_reads_back_equal(case, points):
    expression, function = case
    for t, h in points:
        value = expression.evaluate({"T": t, "H": h}) if isinstance(expression, Size) else expression
        assert value == function(t, h)
    back = parse_extent(str(expression))
    assert back == expression and str(back) == str(expression)


def test_expressions_are_canonical():
    t, h = symbol("T"), symbol("H")
    assert (t - 1) // 2 + 1 == (t + 1) // 2 and str((t - 1) // 2 + 1) == "(T+1)//2"
    assert (2 * t + 4) // 2 == t + 2 and t + t == 2 * t and t - t == 0
    assert (h * t * 3) // (t * h) == 3 and str(t * h) == "H*T"
    assert str(2 * ((t + 1) // 4)) == "2*((T+1)//4)" and str(-((t + 1) // 2)) == "-((T+1)//2)"
    with pytest.raises(ConvcError, match="does not divide"):
        (t + 1) // h


# shape rules -----------------------------------------------------------------------------------
@st.composite
def layers(draw):
    """A 1-D layer on (N, C, T) and its name, each of its attributes drawn."""
    kind = draw(st.sampled_from(["conv", "conv_transpose", "max_pool", "avg_pool", "pad", "reshape", "add"]))
    kernel, stride, dilation = draw(st.integers(1, 7)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    if kind == "conv":
        mode = draw(st.sampled_from(["zeros", "reflect", "circular"]))
        padding = "same" if stride == 1 and draw(st.booleans()) else draw(st.integers(0, 6))
        w = np.ones((3, 3, kernel), np.float32)
        return lambda x: ops.apply("conv1d", [x, w], stride=stride, padding=padding, dilation=dilation, groups=1,
                                   padding_mode=mode)
    if kind == "conv_transpose":
        padding, extra = draw(st.integers(0, 5)), draw(st.integers(0, max(stride, dilation) - 1))
        w = np.ones((3, 3, kernel), np.float32)
        return lambda x: ops.conv_transpose1d(x, w, None, stride, padding, extra, 1, dilation)
    if kind in ("max_pool", "avg_pool"):
        padding, ceil = draw(st.integers(0, kernel // 2)), draw(st.booleans())
        if kind == "max_pool":
            return lambda x: ops.max_pool1d(x, kernel, stride, padding, dilation, ceil_mode=ceil)
        return lambda x: ops.avg_pool1d(x, kernel, stride, padding, ceil_mode=ceil)
    if kind == "pad":
        amounts = (draw(st.integers(-3, 5)), draw(st.integers(-3, 5)))
        mode = draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
        return lambda x: ops.pad(x, amounts, mode=mode)
    if kind == "reshape":  # through the product C*T and back
        return lambda x: ops.reshape(ops.flatten(x, 1), (1, 3, -1))
    return lambda x: ops.add(x, ops.relu(x))


def _output_types(fn, length, dynamic=None):
    graph = convc.trace(fn, np.zeros((1, 3, length), np.float32), dynamic=dynamic)
    return graph, [graph.type_of(o) for o in graph.outputs]


@settings(max_examples=60, deadline=None)
@given(st.lists(layers(), min_size=1, max_size=3), st.integers(30, 60), st.integers(0, 2**32 - 1))
def test_a_symbolic_axis_gives_the_types_of_every_length_from_its_precondition_on(chain, example, seed):
    def fn(x):
        for layer in chain:
            x = layer(x)
        return x

    try:
        symbolic, (typed,) = _output_types(fn, example, {0: {2: "T"}})
    except ConvcError as error:  # the example itself is too short for the chain
        assert "T" not in str(error) or "not an expression" not in str(error)
        with pytest.raises(ConvcError):
            _output_types(fn, example)
        return
    minimum = preconditions(symbolic)["T"]
    rng = np.random.default_rng(seed)
    for length in sorted({*range(minimum, minimum + 12), *rng.integers(minimum, 400, 6).tolist()}):
        _, (concrete,) = _output_types(fn, length)
        assert typed.substitute({"T": length}) == concrete, length
    if minimum > 1:  # below the precondition the rule refuses the length or gives other sizes
        try:
            _, (concrete,) = _output_types(fn, minimum - 1)
        except ConvcError:
            return
        assert typed.substitute({"T": minimum - 1}) != concrete


def test_two_symbolic_axes_of_a_2d_conv_and_their_preconditions():
    w = np.ones((4, 3, 3, 3), np.float32)

    def fn(x):
        return ops.max_pool2d(ops.conv2d(x, w, stride=2, padding=1), 3, 2, ceil_mode=True)

    graph = convc.trace(fn, np.zeros((1, 3, 64, 48), np.float32), dynamic={"x": {2: "H", 3: Dim("W", min=9)}})
    out = graph.type_of(graph.outputs[0])
    assert str(out) == "f32[1,4,(H+1)//4,(W+1)//4]"
    assert preconditions(graph) == {"H": 3, "W": 9}  # W's bound is above its own precondition (3)
    for h, w_ in [(3, 9), (4, 10), (17, 33), (224, 224)]:
        concrete = convc.trace(fn, np.zeros((1, 3, h, w_), np.float32))
        assert out.substitute({"H": h, "W": w_}) == concrete.type_of(concrete.outputs[0])


def test_one_name_on_two_inputs_is_one_size():
    graph = convc.trace(lambda a, b: ops.add(a, b), np.zeros((1, 2, 5), np.float32), np.zeros((1, 2, 5), np.float32),
                        dynamic={0: {2: "T"}, 1: {-1: "T"}})
    assert str(graph.type_of(graph.outputs[0])) == "f32[1,2,T]"
    with pytest.raises(ConvcError, match="add"):
        convc.trace(lambda a, b: ops.add(a, b), np.zeros((1, 2, 5), np.float32), np.zeros((1, 2, 5), np.float32),
                    dynamic={0: {2: "T"}, 1: {2: "U"}})


# the printed form --------------------------------------------------------------------------------
def test_a_symbolic_graph_prints_and_reads_back_with_its_bounds():
    w = np.ones((4, 8, 4), np.float32)
    graph = convc.trace(lambda x: ops.conv_transpose1d(ops.relu(x), w, stride=4, padding=2),
                        np.zeros((2, 4, 20), np.float32), dynamic={0: {0: "N", 2: Dim("T", min=2, max=4096)}})
    text = str(graph)
    assert "dim T {min=2, max=4096}" in text and "f32[N,8,4*T-4]" in text and "dim N" not in text
    back = convc.parse(text, consts={c.name: c.value for c in graph.consts()})
    assert back == graph and back.dims == graph.dims
    with pytest.raises(ConvcError, match="is typed f32\\[N,8,4\\*T\\], but its shape rule gives f32\\[N,8,4\\*T-4\\]"):
        convc.parse(text.replace("f32[N,8,4*T-4]", "f32[N,8,4*T]"))
    with pytest.raises(ConvcError, match="'dim' names a symbolic size"):
        convc.parse(text.replace("dim T", "dim U"))


# errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dynamic, message", [
    ({3: {2: "T"}}, "3 is no input"),
    ({"y": {2: "T"}}, "'y' is no input"),
    ({0: {3: "T"}}, "axis 3 is not an axis of input 'x'"),
    ({0: {2: 5}}, "expected a name or a convc.Dim"),
    ({0: [2]}, "expected {axis: name or Dim}"),
    ({0: {2: Dim("T", min=40)}}, "size 20 is outside T's range \\[40, inf\\]"),
    ({0: {1: "T", 2: Dim("T", min=2)}}, "T is given two ranges"),
])
def test_bad_dynamic_specs_are_errors_that_say_why(dynamic, message):
    with pytest.raises(ConvcError, match=message):
        convc.trace(lambda x: ops.relu(x), np.zeros((1, 3, 20), np.float32), dynamic=dynamic)


def test_dims_validate_their_fields():
    for kwargs, message in [({"name": "1T"}, "must be an identifier"), ({"name": "T", "min": -1}, "not be negative"),
                            ({"name": "T", "min": 4, "max": 3}, "below min"), ({"name": "T", "min": 1.5}, "an int")]:
        with pytest.raises(ConvcError, match=message):
            Dim(**kwargs)


def test_dynamic_applies_to_traced_functions_only():
    graph = convc.trace(lambda x: ops.relu(x), np.zeros((1, 3, 20), np.float32))
    with pytest.raises(ConvcError, match="dynamic= applies to a function"):
        convc.compile(graph, dynamic={0: {2: "T"}})
