"""Random graphs through the whole compiler.

Chains of ops compiled without and with every fusion (opt_level 0 and 2) stay within a rigorous
rounding bound of a float64 evaluation of the same chain. Random DAGs -- branches, residual adds, values shared by several users,
several outputs (an intermediate that is used later, the same value twice, an input) -- compiled at
opt_level 2 (and 0 or 1 for some) agree with an independent NumPy evaluator built on reference.py,
so that fusion, constant folding and arena reuse are all checked against the definition.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import given, note
from hypothesis import strategies as st

import convc
import reference
from convc import ops
from reference import assert_close

STEPS = ["conv", "depthwise", "pointwise", "bias_add", "channel_add", "activation", "broadcast_add", "pad", "scale"]


def _apply(step, x, rng, dtype, ns=ops):
    """One chain step on `x` through the namespace `ns`: convc.ops, or `Bounded`'s float64 reference
    (the constants are drawn from `rng` in the same order either way)."""
    channels = x.shape[1]
    if step == "conv":
        return ns.conv2d(x, rng.standard_normal((channels, channels, 3, 3)).astype(dtype) / 3, padding=1)
    if step == "depthwise":
        mult = int(rng.integers(1, 3))
        w = rng.standard_normal((channels * mult, 1, 3, 3)).astype(dtype) / 3
        return ns.conv2d(x, w, rng.standard_normal(channels * mult).astype(dtype), padding=1, groups=channels)
    if step == "pointwise":
        return ns.conv2d(x, rng.standard_normal((channels, channels, 1, 1)).astype(dtype) / channels)
    if step == "bias_add":
        return ns.add(x, rng.standard_normal((channels, 1, 1)).astype(dtype))
    if step == "channel_add":
        return ns.add(rng.standard_normal((1, channels, 1, 1)).astype(dtype), x)
    if step == "activation":
        return getattr(ns, str(rng.choice(["relu", "relu6", "sigmoid", "tanh"])))(x)
    if step == "broadcast_add":
        return ns.add(x, ns.broadcast_to(rng.standard_normal((x.shape[-1],)).astype(dtype), x.shape))
    if step == "pad":
        return ns.pad(x, (1, 1, 0, 1), mode=str(rng.choice(["constant", "reflect", "replicate", "circular"])))
    return ns.mul(x, 0.5)


class Bounded:
    """A value computed in float64 from the float32/float64 inputs and constants, with a bound on
    the error of any evaluation in the working precision (unit roundoff `u`), whatever the order of
    its sums: a sum of n products adds n*u times the sum of their magnitudes (the classic bound of
    a dot product, FMAs or not, any association), a rounded add u times its result, a unary op with
    a derivative of at most 1 passes the error on and adds a few u of its result (the vector
    sigmoid and tanh are within a few ulp)."""

    u = 0.0  # set per chain: half the machine epsilon of the working dtype

    def __init__(self, value: np.ndarray, error: np.ndarray) -> None:
        self.value, self.error = value, error

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.shape

    @classmethod
    def exact(cls, array: np.ndarray) -> "Bounded":
        return cls(np.asarray(array, np.float64), np.zeros(np.shape(array)))

    @classmethod
    def _of(cls, x) -> "Bounded":
        return x if isinstance(x, Bounded) else cls.exact(x)

    @classmethod
    def conv2d(cls, x, w, bias=None, padding=0, groups=1):
        x, w64 = cls._of(x), np.asarray(w, np.float64)
        terms = int(np.prod(w.shape[1:])) + (bias is not None)
        value = reference.conv_nd(x.value, w64, None if bias is None else np.asarray(bias, np.float64),
                                  padding=padding, groups=groups)
        magnitude = reference.conv_nd(np.abs(x.value), np.abs(w64),
                                      None if bias is None else np.abs(np.asarray(bias, np.float64)),
                                      padding=padding, groups=groups)
        propagated = reference.conv_nd(x.error, np.abs(w64), None, padding=padding, groups=groups)
        return cls(value, propagated + terms * cls.u * magnitude)

    @classmethod
    def add(cls, a, b):
        a, b = cls._of(a), cls._of(b)
        value = a.value + b.value
        return cls(value, a.error + b.error + cls.u * np.abs(value))

    @classmethod
    def mul(cls, x, factor):  # by a power of two: exact
        return cls(x.value * factor, x.error * abs(factor))

    @classmethod
    def broadcast_to(cls, small, shape):
        return cls.exact(np.broadcast_to(np.asarray(small, np.float64), shape))

    @classmethod
    def pad(cls, x, amounts, mode):
        return cls(reference.pad(x.value, amounts, mode), reference.pad(x.error, amounts, mode))

    @classmethod
    def _unary(cls, x, fn):
        value = fn(x.value)
        return cls(value, x.error + 8 * cls.u * np.abs(value))

    relu = classmethod(lambda cls, x: cls._unary(x, reference.relu))
    relu6 = classmethod(lambda cls, x: cls._unary(x, reference.relu6))
    sigmoid = classmethod(lambda cls, x: cls._unary(x, reference.sigmoid))
    tanh = classmethod(lambda cls, x: cls._unary(x, np.tanh))


@given(st.lists(st.sampled_from(STEPS), min_size=1, max_size=6), st.integers(0, 2**32 - 1),
       st.sampled_from([np.float32, np.float64]), st.sampled_from([(1, 3, 6, 9), (2, 2, 5, 20)]))
def test_random_chains_at_every_opt_level_stay_within_the_rounding_bound_of_the_float64_reference(
        steps, seed, dtype, shape):
    def chain(x, ns):
        rng = np.random.default_rng(seed)  # the same constants in every trace
        for step in steps:
            x = _apply(step, x, rng, dtype, ns)
        return x
    x = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    Bounded.u = float(np.finfo(dtype).eps) / 2
    expected = chain(Bounded.exact(x), Bounded)
    # the result is rounded to the working dtype once more, and the bound is a worst case, so a
    # factor of 2 over it catches any real error (a wrong tap, a lost term) while rounding never can
    bound = 2 * (expected.error + Bounded.u * np.abs(expected.value)) + np.finfo(dtype).tiny
    for level in (0, 2):
        actual = convc.compile(lambda a: chain(a, ops), x, opt_level=level)(x)
        assert actual.dtype == dtype and actual.shape == expected.shape
        excess = np.abs(actual - expected.value) - bound
        assert excess.max() <= 0, f"opt_level {level}: off by {np.abs(actual - expected.value).max():.3g} " \
                                  f"where the bound is {bound.flat[excess.argmax()]:.3g}"


@dataclass
class Step:
    """One op of a random DAG: `op` applied to earlier values `args` (indices) and constants."""
    op: str
    args: tuple[int, ...]
    shape: tuple[int, ...]
    attrs: dict = field(default_factory=dict)
    consts: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        consts = {name: value.shape for name, value in self.consts.items()}
        return f"Step({self.op}, args={self.args}, shape={self.shape}, attrs={self.attrs}, consts={consts})"


@dataclass
class Dag:
    """Inputs, then steps whose results are values len(inputs), len(inputs) + 1, ...; the model
    returns the values `outputs` (as a tuple, or the one value alone)."""
    inputs: list[np.ndarray]
    steps: list[Step]
    outputs: tuple[int, ...]
    as_tuple: bool
    opt_levels: tuple[int, ...]

    @property
    def terms(self) -> int:
        """A rounding budget for assert_close: the widest conv sum times the number of steps."""
        widest = max([int(np.prod(s.consts["weight"].shape[1:])) for s in self.steps if "weight" in s.consts] + [1])
        return widest * len(self.steps)


OPS = ["conv3x3", "conv1x1", "depthwise", "separable", "pad_conv", "residual", "binary", "binary", "channel_add",
       "unary", "broadcast_add", "scale"]
CHANNELS = st.sampled_from([1, 2, 3, 5, 8, 16])  # 8 and 16 fill the vector lanes of the blocked conv kernels
EPILOGUES = [(), ("unary",), ("channel_add",), ("channel_add", "unary")]  # what may follow a conv


def _draw_steps(draw, rng, dtype, shapes: list[tuple[int, ...]], op: str | None = None) -> list[Step]:
    """One random op (two for a separable pair) on earlier values, the newest one preferred so
    that graphs get deep; a given `op` applies to the newest value."""
    a = len(shapes) - 1 if op else draw(st.one_of(st.just(len(shapes) - 1), st.integers(0, len(shapes) - 1)))
    n, c, h, w = shape = shapes[a]
    op = op or draw(st.sampled_from(OPS))

    def const(*dims, scale=1.0):
        return (rng.standard_normal(dims) * scale).astype(dtype)

    def conv(source, source_shape, c_out, k, stride, padding, groups=1):
        c_in, rows, cols = source_shape[1:]
        consts = {"weight": const(c_out, c_in // groups, k, k, scale=(c_in // groups * k * k) ** -0.5)}
        if draw(st.booleans()):
            consts["bias"] = const(c_out)
        out = (n, c_out, (rows + 2 * padding - k) // stride + 1, (cols + 2 * padding - k) // stride + 1)
        return Step("conv", (source,), out, {"stride": stride, "padding": padding, "groups": groups}, consts)

    def stride():
        return draw(st.sampled_from([1, 2] if min(h, w) >= 4 else [1]))

    if op == "conv3x3":
        return [conv(a, shape, draw(st.one_of(st.just(c), CHANNELS)), 3, stride(), 1)]
    if op == "conv1x1":
        return [conv(a, shape, draw(st.one_of(st.just(c), CHANNELS)), 1, stride(), 0)]
    if op == "residual":  # conv(a) + a, as in a ResNet block
        operands = draw(st.sampled_from([(len(shapes), a), (a, len(shapes))]))
        k = draw(st.sampled_from([1, 3]))
        return [conv(a, shape, c, k, 1, k // 2), Step("add", operands, shape)]
    if op in ("depthwise", "separable"):
        depthwise = conv(a, shape, c * draw(st.integers(1, 2)), 3, stride(), 1, groups=c)
        if op == "depthwise":
            return [depthwise]
        # the pointwise conv reads the depthwise result, the value after the current ones
        return [depthwise, conv(len(shapes), depthwise.shape, draw(CHANNELS), 1, 1, 0)]
    if op == "pad_conv":  # a pad, then a valid conv whose kernel restores the shape
        mode = draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
        amounts = tuple(draw(st.integers(0, 1)) for _ in range(4))  # left, right, top, bottom
        value = draw(st.sampled_from([0.0, -1.5])) if mode == "constant" else 0.0
        kh, kw = 1 + amounts[2] + amounts[3], 1 + amounts[0] + amounts[1]
        consts = {"weight": const(c, c, kh, kw, scale=(c * kh * kw) ** -0.5)}
        if draw(st.booleans()):
            consts["bias"] = const(c)
        return [Step("pad_conv", (a,), shape, {"pad": amounts, "mode": mode, "value": value}, consts)]
    if op == "binary":
        b = draw(st.sampled_from([i for i, s in enumerate(shapes) if s == shape]))
        return [Step(draw(st.sampled_from(["add", "sub", "mul", "maximum"])), (a, b), shape)]
    if op == "channel_add":
        bias_shape = draw(st.sampled_from([(c, 1, 1), (1, c, 1, 1)]))
        return [Step("channel_add", (a,), shape, {"const_first": draw(st.booleans())}, {"bias": const(*bias_shape)})]
    if op == "unary":
        return [Step(draw(st.sampled_from(sorted(reference.UNARY))), (a,), shape)]
    if op == "broadcast_add":
        small = draw(st.sampled_from([(w,), (c, 1, 1), (1, 1, h, w), (1,)]))
        return [Step("broadcast_add", (a,), shape, {}, {"small": const(*small)})]
    return [Step("scale", (a,), shape, {"factor": draw(st.sampled_from([0.5, -2.0]))})]


@st.composite
def dags(draw) -> Dag:
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    width = draw(st.one_of(st.integers(3, 9), st.integers(16, 20)))  # 16 and up: the separable kernel's rows
    shape = (draw(st.integers(1, 2)), draw(CHANNELS), draw(st.integers(3, 6)), width)
    inputs = [rng.standard_normal(shape).astype(dtype) for _ in range(draw(st.integers(1, 2)))]
    shapes, steps = [shape] * len(inputs), []
    for _ in range(draw(st.integers(1, 8))):
        for step in _draw_steps(draw, rng, dtype, shapes):
            steps.append(step)
            shapes.append(step.shape)
        tails = EPILOGUES if steps[-1].op in ("conv", "pad_conv") else [(), ("unary",)]  # fusion candidates
        for op in draw(st.sampled_from(tails)):
            steps += _draw_steps(draw, rng, dtype, shapes, op)
            shapes.append(steps[-1].shape)
    used_later = sorted({a for step in steps for a in step.args})  # outputs that are also operands
    extra = draw(st.lists(st.one_of(st.sampled_from(used_later), st.integers(0, len(shapes) - 1)), max_size=2))
    outputs = (len(shapes) - 1, *extra)
    as_tuple = len(outputs) > 1 or draw(st.booleans())
    return Dag(inputs, steps, outputs, as_tuple, draw(st.sampled_from([(2,), (2,), (0, 2), (1, 2)])))


def _convc_step(step: Step, values: list) -> object:
    x = values[step.args[0]]
    if step.op == "conv":
        return ops.conv2d(x, step.consts["weight"], step.consts.get("bias"), **step.attrs)
    if step.op == "pad_conv":
        return ops.conv2d(ops.pad(x, step.attrs["pad"], step.attrs["mode"], step.attrs["value"]),
                          step.consts["weight"], step.consts.get("bias"))
    if step.op in reference.BINARY:
        return getattr(ops, step.op)(x, values[step.args[1]])
    if step.op == "channel_add":
        bias = step.consts["bias"]
        return ops.add(bias, x) if step.attrs["const_first"] else ops.add(x, bias)
    if step.op in reference.UNARY:
        return getattr(ops, step.op)(x)
    if step.op == "broadcast_add":
        return ops.add(x, ops.broadcast_to(step.consts["small"], step.shape))
    return ops.mul(x, step.attrs["factor"])


def _numpy_step(step: Step, values: list[np.ndarray]) -> np.ndarray:
    x = values[step.args[0]]
    if step.op == "conv":
        return reference.conv_nd(x, step.consts["weight"], step.consts.get("bias"), **step.attrs)
    if step.op == "pad_conv":
        padded = reference.pad(x, step.attrs["pad"], step.attrs["mode"], step.attrs["value"])
        return reference.conv_nd(padded, step.consts["weight"], step.consts.get("bias"))
    if step.op in reference.BINARY:
        return reference.BINARY[step.op](x, values[step.args[1]])
    if step.op == "channel_add":
        return x + step.consts["bias"]
    if step.op in reference.UNARY:
        return reference.UNARY[step.op](x)
    if step.op == "broadcast_add":
        return x + np.broadcast_to(step.consts["small"], step.shape)
    return x * x.dtype.type(step.attrs["factor"])


def _walk(dag: Dag, inputs: list, apply) -> object:
    values = list(inputs)
    for step in dag.steps:
        values.append(apply(step, values))
    outputs = tuple(values[i] for i in dag.outputs)
    return outputs if dag.as_tuple else outputs[0]


@given(dags())
def test_random_dags_match_the_numpy_reference(dag):
    expected = _walk(dag, dag.inputs, _numpy_step)
    expected = expected if dag.as_tuple else (expected,)
    for level in dag.opt_levels:
        note(f"opt_level={level}")
        compiled = convc.compile(lambda *xs: _walk(dag, xs, _convc_step), *dag.inputs, opt_level=level)
        actual = compiled(*dag.inputs)
        assert isinstance(actual, tuple) == dag.as_tuple, f"opt_level {level}"
        actual = actual if dag.as_tuple else (actual,)
        assert len(actual) == len(expected), f"opt_level {level}"
        for out, ref in zip(actual, expected):
            assert_close(out, ref, dag.terms)
