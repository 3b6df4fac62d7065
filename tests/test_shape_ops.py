"""The layout ops (transpose, permute, reshape, flatten, squeeze, unsqueeze, slice, cat, split) against
NumPy, eagerly and compiled, with torch's rules for dims, bounds and shapes (cross-checked where
torch is installed); the tiled transpose on the host's vector width and forced to 256 bits; and
the views of the memory plan: which nodes become views, that they run no kernel, and that they stay
correct when their root's buffer would be reused, when they are graph outputs, and when their root
is a graph input or a constant."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import convc
from convc import ConvcError, nn, ops
from convc.runtime.lower import lower
from convc.runtime.memory import plan_memory
import reference
from widths import WIDTHS, narrowed

dtypes = st.sampled_from([np.float32, np.float64])
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


def array(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def both(fn, x):
    """fn eagerly and compiled (the op as the graph's output, then feeding a kernel as a view could)."""
    eager = fn(x)
    compiled = convc.compile(lambda a: ops.mul(fn(a), 1.0), x)(x)
    return eager, compiled


# values ------------------------------------------------------------------------------------------
@settings(max_examples=25)
@given(st.data(), shapes, dtypes)
def test_transpose_and_permute_match_numpy(data, shape, dtype):
    x = array(shape, dtype)
    rank = max(len(shape), 1)
    dim0, dim1 = data.draw(st.integers(-rank, rank - 1)), data.draw(st.integers(-rank, rank - 1))
    expected = np.swapaxes(x, dim0, dim1) if shape else x
    for out in both(lambda a: ops.transpose(a, dim0, dim1), x):
        np.testing.assert_array_equal(out, expected)
    dims = [d - len(shape) * data.draw(st.booleans()) for d in data.draw(st.permutations(range(len(shape))))]
    for out in both(lambda a: ops.permute(a, dims), x):
        np.testing.assert_array_equal(out, np.transpose(x, dims))


@pytest.mark.parametrize("vector_bits", WIDTHS, ids=lambda bits: f"{bits}bit")
@pytest.mark.parametrize("shape, dims", [((37, 45), (1, 0)), ((3, 40, 33, 2), (0, 3, 2, 1)), ((2, 64, 16), (0, 2, 1)),
                                         ((17, 5, 19), (2, 1, 0)), ((1, 300, 200), (2, 0, 1))])
def test_tiled_transposes_match_numpy(vector_bits, shape, dims):
    for dtype in (np.float32, np.float64):
        x = array(shape, dtype)
        with narrowed(vector_bits):
            out = convc.compile(lambda a: ops.permute(a, dims), x)(x)
        np.testing.assert_array_equal(out, np.transpose(x, dims))


@settings(max_examples=25)
@given(st.data(), shapes, dtypes)
def test_reshape_flatten_squeeze_unsqueeze_match_numpy(data, shape, dtype):
    x = array(shape, dtype)
    target = list(data.draw(st.permutations(shape)))
    if target and data.draw(st.booleans()) and 0 not in shape:
        target[data.draw(st.integers(0, len(target) - 1))] = -1
    for out in both(lambda a: ops.reshape(a, target), x):
        np.testing.assert_array_equal(out, x.reshape(target))
    rank = max(len(shape), 1)
    start, end = sorted([data.draw(st.integers(0, rank - 1)), data.draw(st.integers(0, rank - 1))])
    expected = x.reshape(shape[:start] + (-1,) + shape[end + 1:]) if shape and x.size else x.reshape(
        shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:])
    for out in both(lambda a: ops.flatten(a, start - rank * data.draw(st.booleans()), end), x):
        np.testing.assert_array_equal(out, expected)
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    for out in both(lambda a: ops.squeeze(ops.unsqueeze(a, axis), axis), x):
        np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(ops.squeeze(x), np.squeeze(x))


@settings(max_examples=30)
@given(st.data(), hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6), dtypes)
def test_slice_matches_python_slicing(data, shape, dtype):
    x = array(shape, dtype)
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    bound = st.none() | st.integers(-9, 9)
    start, end, step = data.draw(bound), data.draw(bound), data.draw(st.integers(1, 3))
    expected = reference.torch_slice(x, dim, start, end, step)
    for out in both(lambda a: ops.slice(a, dim, start, end, step), x):
        np.testing.assert_array_equal(out, expected)


@settings(max_examples=30)
@given(st.data(), hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5), dtypes)
def test_cat_and_split_match_numpy(data, shape, dtype):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    parts = []
    for index in range(data.draw(st.integers(1, 4))):
        part_shape = list(shape)
        part_shape[dim] = data.draw(st.integers(0, 4))
        parts.append(array(tuple(part_shape), dtype, index))
    expected = np.concatenate(parts, axis=dim)
    np.testing.assert_array_equal(ops.cat(parts, dim), expected)
    np.testing.assert_array_equal(convc.compile(lambda *a: ops.cat(list(a), dim), *parts)(*parts), expected)
    size = expected.shape[dim]
    pieces = data.draw(st.integers(0, size + 2) if size else st.just(2))
    if size and not pieces:
        pieces = 1
    sections = data.draw(st.lists(st.integers(0, size), max_size=4))
    sections = sections + [size - sum(sections)] if sum(sections) <= size else [size]
    for how in (pieces, sections):
        wanted = reference.split(expected, how, dim)
        for got in (ops.split(expected, how, dim), convc.compile(lambda a: ops.split(a, how, dim), expected)(expected)):
            assert len(got) == len(wanted)
            for a, b in zip(got, wanted):
                np.testing.assert_array_equal(a, b)


def test_layout_ops_by_hand():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(ops.transpose(x, 0, 1), [[0, 3], [1, 4], [2, 5]])
    np.testing.assert_array_equal(ops.reshape(x, (3, -1)), [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(ops.slice(x, 1, -2, None), [[1, 2], [4, 5]])
    np.testing.assert_array_equal(ops.slice(x, 1, 0, 100, 2), [[0, 2], [3, 5]])
    np.testing.assert_array_equal(ops.slice(x, 0, 5, 9), np.zeros((0, 3)))
    np.testing.assert_array_equal(ops.cat([x, np.zeros(0, np.float32), x[:, :1]], 1), [[0, 1, 2, 0], [3, 4, 5, 3]])
    assert ops.flatten(np.array(3.0)).shape == (1,)
    assert ops.squeeze(np.zeros((1, 3, 1)), (0, 2)).shape == (3,)
    assert ops.squeeze(np.zeros((2, 3)), 0).shape == (2, 3)  # not of size 1: kept
    assert [p.shape for p in ops.split(np.zeros(5), 2)] == [(2,), (2,), (1,)]
    assert nn.Flatten()(np.zeros((2, 3, 4))).shape == (2, 12)
    assert repr(nn.Flatten(0, 1)) == "Flatten(start_dim=0, end_dim=1)"


# errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, error, pattern", [
    (lambda x: ops.transpose(x, 0, 3), ConvcError, r"dim1=3 is out of range for a 3-D input .*\[-3, 2\]"),
    (lambda x: ops.transpose(x, 0, 1.0), TypeError, "dim1=1.0 must be an int"),
    (lambda x: ops.permute(x, (0, 1)), ConvcError, "must order every axis of the 3-D input"),
    (lambda x: ops.permute(x, (0, 1, -3)), ConvcError, "duplicate dims are not allowed"),
    (lambda x: ops.reshape(x, (5, -1)), ConvcError, r"shape=\(5, -1\) is invalid for an input of 24 elements"),
    (lambda x: ops.reshape(x, (-1, -1)), ConvcError, "only one dimension can be inferred"),
    (lambda x: ops.reshape(x, (-2, 12)), ConvcError, "invalid size -2 at index 0"),
    (lambda x: ops.reshape(np.zeros((0, 3)), (-1, 0)), ConvcError, "the -1 could be any size"),
    (lambda x: ops.reshape(x, (3, 2.0)), TypeError, "must be an int or a tuple of ints"),
    (lambda x: ops.flatten(x, 2, 1), ConvcError, "start_dim=2 cannot come after end_dim=1"),
    (lambda x: ops.flatten(x, 3), ConvcError, "start_dim=3 is out of range"),
    (lambda x: ops.squeeze(x, (0, -3)), ConvcError, "names axis 0 more than once"),
    (lambda x: ops.squeeze(x, 3), ConvcError, "dim=3 is out of range"),
    (lambda x: ops.unsqueeze(x, 4), ConvcError, r"dim=4 is out of range for a 3-D input .*\[-4, 3\]"),
    (lambda x: ops.slice(x, 0, 0, 2, 0), ConvcError, "step=0 must be positive"),
    (lambda x: ops.slice(np.array(1.0), 0, 0, 1), ConvcError, "cannot be applied to a 0-D tensor"),
    (lambda x: ops.slice(x, 3, 0, 1), ConvcError, "dim=3 is out of range"),
    (lambda x: ops.cat([]), ConvcError, "must hold at least one tensor"),
    (lambda x: ops.cat(x), TypeError, "must be a list or tuple of tensors"),
    (lambda x: ops.cat([x, x[0]]), ConvcError, "the same number of dimensions"),
    (lambda x: ops.cat([x, x[:, :2]], 2), ConvcError, r"must match except in dimension 2: expected size 3 but got "
                                                      r"size 2 on axis 1 for tensors\[1\]"),
    (lambda x: ops.cat([x, np.array(1.0, np.float32)]), ConvcError, r"tensors\[1\] is 0-D"),
    (lambda x: ops.cat([x, x.astype(np.float64)]), TypeError, "share one dtype"),
    (lambda x: ops.cat([x, None]), TypeError, r"tensors\[1\] is required"),
    (lambda x: ops.cat([x, x], 3), ConvcError, "dim=3 is out of range"),
    (lambda x: ops.split(x, 0), ConvcError, "split_size=0 is only allowed for an axis of size 0"),
    (lambda x: ops.split(x, -1), ConvcError, "split_size=-1 must be non-negative"),
    (lambda x: ops.split(x, [1, 2], 2), ConvcError, r"sections=\[1, 2\] must add up to the size 4 of axis 2"),
    (lambda x: ops.split(x, [5, -1], 2), ConvcError, "must not be negative"),
    (lambda x: ops.split(x, 2.0), TypeError, "must be an int or a list of ints"),
    (lambda x: ops.split(np.array(1.0), 1), ConvcError, "must be at least 1-D"),
])
def test_layout_op_rejections(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(np.zeros((2, 3, 4), np.float32))


TORCH_CASES = [
    ("transpose", (), (0, -1)), ("transpose", (), (0, 1)), ("transpose", (2, 3), (-2, 1)), ("transpose", (2, 3), (0, 2)),
    ("permute", (2, 3), ((0, 0),)), ("permute", (2, 3), ((0,),)), ("permute", (2, 3), ((-1, 0),)), ("permute", (), ((),)),
    ("reshape", (0, 3), ((-1, 0),)), ("reshape", (6,), ((-1, -1),)), ("reshape", (6,), ((-2, 3),)),
    ("reshape", (6,), ((4, 2),)), ("reshape", (6,), ((),)), ("reshape", (1,), ((),)), ("reshape", (0, 3), ((-1,),)),
    ("reshape", (6,), ((4, -1),)), ("reshape", (2, 3, 4), ((4, -1, 2),)),
    ("flatten", (), ()), ("flatten", (), (-1, 0)), ("flatten", (), (1,)), ("flatten", (2, 3, 4), (2, 1)),
    ("flatten", (2, 3, 4), (1, 1)), ("flatten", (2, 3, 4), (3,)), ("flatten", (0, 3), ()), ("flatten", (2, 3, 4), (-2,)),
    ("squeeze", (1, 3, 1), ((0, 2),)), ("squeeze", (), (0,)), ("squeeze", (), (1,)), ("squeeze", (1, 3), ((0, 0),)),
    ("squeeze", (1, 3), (3,)), ("squeeze", (1, 3, 1), ()), ("squeeze", (1, 3, 1), ((),)), ("squeeze", (2, 1), (-1,)),
    ("unsqueeze", (), (-1,)), ("unsqueeze", (2,), (2,)), ("unsqueeze", (2,), (-3,)), ("unsqueeze", (2, 3), (-1,)),
    ("slice", (5,), (0, -2, None)), ("slice", (5,), (0, -9, 2)), ("slice", (5,), (0, 3, 1)), ("slice", (5,), (0, 1, 100, 2)),
    ("slice", (5,), (0, 1, 4, 0)), ("slice", (5,), (0, 1, 4, -1)), ("slice", (), (0, 0, 1)), ("slice", (5,), (1, 0, 1)),
    ("slice", (5,), (0, 9, 12)), ("slice", (5,), (0, -7, -6)), ("slice", (4, 6), (-1, -4, -1, 2)),
    ("cat", [(0,), (0,)], (5,)), ("cat", [(0,), (2, 3)], (5,)), ("cat", [(2, 3), ()], ()), ("cat", [(2, 3), (0,), (2, 1)], (-1,)),
    ("cat", [(2, 3), (2, 3, 4)], ()), ("cat", [(0, 3), (2, 4)], ()), ("cat", [(2, 0), (3, 0)], ()), ("cat", [(1, 0), (2, 5)], ()),
    ("cat", [(2, 0), (2, 5)], (1,)), ("cat", [(2, 3)], (2,)), ("cat", [(0,)], (-1,)),
    ("split", (5,), (2,)), ("split", (5,), (0,)), ("split", (0,), (0,)), ("split", (0,), (2,)), ("split", (5,), (-1,)),
    ("split", (5,), ([1, 2],)), ("split", (5,), ([1, -1, 5],)), ("split", (5,), ([5, 0],)), ("split", (5,), (7,)),
    ("split", (5,), ([],)), ("split", (0,), ([],)), ("split", (), (1,)), ("split", (2, 6), ((2, 4), -1)), ("split", (4,), (2, 1)),
]


@pytest.mark.parametrize("op, shape, args", TORCH_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(TORCH_CASES)])
def test_layout_ops_accept_and_reject_what_torch_does(op, shape, args):
    torch = pytest.importorskip("torch")
    if op == "cat":
        arrays = [array(s, np.float32, i) for i, s in enumerate(shape)]
        tensors = [torch.from_numpy(a) for a in arrays]
        ours, theirs = (lambda: ops.cat(arrays, *args)), (lambda: torch.cat(tensors, *args))
    else:
        x = array(shape)
        special = {"slice": torch.ops.aten.slice.Tensor, "permute": lambda t, d: t.permute(d)}
        theirs_fn = special[op] if op in special else getattr(torch, op)
        ours, theirs = (lambda: getattr(ops, op)(x, *args)), (lambda: theirs_fn(torch.from_numpy(x), *args))
    try:
        expected = theirs()
    except (RuntimeError, IndexError, ValueError):
        with pytest.raises(ConvcError):
            ours()
        return
    got = ours()
    if isinstance(expected, (tuple, list)):
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b.numpy())
    else:
        np.testing.assert_array_equal(got, expected.numpy())


# views -------------------------------------------------------------------------------------------
def _kernels(graph):
    """The op names that have a kernel function in the lowered (unoptimized) module."""
    return sorted({f.name.split("_", 1)[1] for m in lower(graph).modules for f in m.functions if f.name.startswith("k") and f.blocks})


def test_views_run_no_kernel_and_copies_do():
    x = array((4, 3, 8))

    def model(a):
        y = ops.relu(a)
        flat = ops.flatten(ops.unsqueeze(y, 0), 1)       # views
        head = ops.slice(ops.reshape(y, (12, 8)), 0, 2, 9)   # a view at an offset
        strided = ops.slice(y, 2, 0, 8, 2)                # not contiguous: a copy
        inner = ops.slice(y, 1, 1, 3)                     # not the outermost axis: a copy
        moved = ops.permute(ops.reshape(y, (4, 3, 1, 8)), (0, 2, 1, 3))  # moves a unit axis only: a view
        return (ops.tanh(flat), ops.tanh(head), ops.tanh(strided), ops.tanh(inner), ops.tanh(moved))

    compiled = convc.compile(model, x)
    plan = plan_memory(compiled.graph)
    by_op = {}
    for node in compiled.graph.op_nodes():
        by_op.setdefault(node.op, []).append(node.name in plan.views)
    assert by_op["reshape"] == [True, True] and by_op["flatten"] == [True] and by_op["unsqueeze"] == [True]
    assert by_op["slice"] == [True, False, False] and by_op["permute"] == [True]
    head = next(n for n in compiled.graph.op_nodes() if n.op == "slice" and n.name in plan.views)
    assert plan.views[head.name][1] == 2 * 8 * 4  # rows 2.. of the (12, 8) view, in bytes
    assert _kernels(compiled.graph) == ["relu", "slice", "tanh"]
    y = np.maximum(x, 0)
    expected = (y.reshape(1, -1), y.reshape(12, 8)[2:9], y[:, :, ::2], y[:, 1:3], y.reshape(4, 1, 3, 8))
    for out, want in zip(compiled(x), expected):
        reference.assert_close(out, np.tanh(want), 4)


def test_a_view_keeps_its_root_alive_while_the_arena_is_reused():
    x = array((2, 64))

    def model(a):
        root = ops.relu(a)
        view = ops.reshape(root, (128,))
        t1 = ops.tanh(a)          # same size as root: would reuse its buffer once the view was forgotten
        t2 = ops.sigmoid(t1)
        t3 = ops.mul(t2, 3.0)
        return ops.add(ops.reshape(t3, (128,)), view)

    compiled = convc.compile(model, x, opt_level=1)
    plan = plan_memory(compiled.graph)
    root = next(n.name for n in compiled.graph.op_nodes() if n.op == "relu")
    others = [n.name for n in compiled.graph.op_nodes() if n.op in ("tanh", "sigmoid")]
    assert all(plan.offsets[o] != plan.offsets[root] for o in others)
    expected = 3.0 / (1.0 + np.exp(-np.tanh(x))) + np.maximum(x, 0)
    reference.assert_close(compiled(x), expected.reshape(128).astype(np.float32), 4)


def test_views_returned_or_of_inputs_and_constants_are_fresh_arrays():
    x = array((3, 4))
    big = array((4, 3), seed=1)

    def model(a):
        y = ops.relu(a)
        return (ops.reshape(a, (12,)), y, ops.flatten(y), ops.add(ops.reshape(big, (3, 4)), ops.reshape(a, (3, 4))),
                ops.tanh(ops.reshape(y, (4, 3))))

    compiled = convc.compile(model, x, opt_level=0)  # no constant folding: the constant's reshape stays
    views = plan_memory(compiled.graph).views
    roots = sorted(compiled.graph.node(root).op for root, _ in views.values())
    assert roots == ["const", "input", "relu"]  # a constant, a graph input and a computed output
    flat, y, flat_y, total, moved = compiled(x)
    assert not np.shares_memory(flat, x) and not np.shares_memory(flat_y, y)
    np.testing.assert_array_equal(flat, x.reshape(12))
    np.testing.assert_array_equal(flat_y, np.maximum(x, 0).reshape(12))
    reference.assert_close(total, big.reshape(3, 4) + x)
    reference.assert_close(moved, np.tanh(np.maximum(x, 0).reshape(4, 3)), 4)
    y[...] = -1.0  # the caller owns every output: nothing else changes
    np.testing.assert_array_equal(flat_y, np.maximum(x, 0).reshape(12))
    again = compiled(x)
    np.testing.assert_array_equal(again[1], np.maximum(x, 0))


def test_split_is_traced_as_slices_and_views_where_contiguous():
    x = array((6, 5))
    compiled = convc.compile(lambda a: tuple(ops.tanh(p) for p in ops.split(ops.relu(a), [1, 3, 2]))
                             + tuple(ops.tanh(p) for p in ops.split(ops.relu(a), 2, 1)), x)
    plan = plan_memory(compiled.graph)
    slices = [n for n in compiled.graph.op_nodes() if n.op == "slice"]
    assert [s.name in plan.views for s in slices] == [True] * 3 + [False] * 3
    y = np.maximum(x, 0)
    for out, want in zip(compiled(x), (y[:1], y[1:4], y[4:], y[:, :2], y[:, 2:4], y[:, 4:])):
        reference.assert_close(out, np.tanh(want), 4)


def test_flatten_between_a_blocked_conv_and_linear():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 16, 6, 6)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32) / 12
    fc = rng.standard_normal((10, 32 * 4 * 4)).astype(np.float32) / 20
    model = lambda a: ops.linear(ops.flatten(ops.relu(ops.conv2d(a, w)), 1), fc)  # noqa: E731
    expected = reference.linear(np.maximum(reference.conv_nd(x, w), 0).reshape(2, -1), fc)
    reference.assert_close(convc.compile(model, x)(x), expected, 16 * 9 * 512)


def test_the_ir_of_the_layout_ops_parses_back():
    x = array((2, 3, 4))
    graph = convc.trace(lambda a: (ops.cat([a, ops.transpose(ops.permute(a, (1, 0, 2)), 0, 1), a], -1),
                                   ops.slice(a, 1, -2, None), ops.squeeze(ops.unsqueeze(a, 0)),
                                   ops.flatten(ops.reshape(a, (4, -1)))), x)
    assert convc.parse(str(graph)) == graph
    optimized = convc.compile(graph).graph
    assert convc.parse(str(optimized)) == optimized
    assert "cat(%a, %1, %a) {dim=2}" in str(optimized)
