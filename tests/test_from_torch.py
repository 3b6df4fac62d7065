"""convc.from_torch: torch modules captured with torch.export, mapped onto convc ops, compiled and
compared with torch's eager output (float32 and float64)."""
import inspect
import sys

import numpy as np
import pytest

import convc
from convc import ConvcError
from convc.torch_aten import ATEN
from reference import assert_close

torch = pytest.importorskip("torch")
tnn, F = torch.nn, torch.nn.functional
DTYPES = [torch.float32, torch.float64]


def compiled_outputs(model, *inputs):
    """convc's outputs of the model (a tuple, flattened as from_torch flattens) and torch's in eval mode."""
    graph = convc.from_torch(model, *inputs)
    ours = convc.compile(graph)(*(x.numpy() for x in inputs))
    model.eval()
    with torch.no_grad():
        theirs = torch.utils._pytree.tree_leaves(model(*inputs))
    return (ours if isinstance(ours, tuple) else (ours,)), [t.numpy() for t in theirs]


def source_line(fn, text):
    """The file line number of the line of `fn`'s source that contains `text`."""
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


class UNetish(tnn.Module):
    def __init__(self):
        super().__init__()
        self.encode = tnn.Sequential(tnn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"), tnn.ReLU6(),
                                     tnn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2), tnn.Dropout(0.1))
        self.decode = tnn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
        self.skip = tnn.Conv2d(3, 4, 1, bias=False)

    def forward(self, image, bias):
        y = self.decode(torch.relu(self.encode(image)))
        z = torch.sigmoid(y + self.skip(image)) * 2.0 - bias
        return F.pad(z.tanh(), (1, 1, 2, 0), mode="replicate"), torch.maximum(z, bias)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_torch_model_imports_and_computes_the_same(dtype):
    torch.manual_seed(0)
    model = UNetish().to(dtype)
    image, bias = torch.randn(2, 3, 16, 12, dtype=dtype), torch.randn(4, 1, 1, dtype=dtype)
    graph = convc.from_torch(model, image, bias)
    assert model.training  # exported in eval mode, left in the mode it came in
    assert graph.inputs == ["image", "bias"]
    assert {"conv2d", "conv_transpose2d", "pad", "maximum", "tanh", "relu6"} <= {n.op for n in graph.op_nodes()}
    ours, theirs = compiled_outputs(model, image, bias)
    assert len(ours) == 2
    for actual, expected in zip(ours, theirs):
        assert_close(actual, expected, 200)


def test_parameters_are_named_constants_in_the_ir():
    model = UNetish()
    graph = convc.from_torch(model, torch.randn(1, 3, 8, 8), torch.randn(4, 1, 1))
    text = str(graph)
    assert "%encode.0.weight = const f32[8,3,3,3]" in text
    assert "%decode.bias = const f32[4]" in text
    consts = {node.name: node.value for node in graph.consts()}
    np.testing.assert_array_equal(consts["encode.2.weight"], model.encode[2].weight.detach().numpy())
    assert convc.parse(text, consts) == graph


def test_one_dimensional_model_with_pooling():
    model = tnn.Sequential(tnn.Conv1d(2, 3, 5, padding="same", padding_mode="circular"), tnn.Tanh(),
                           tnn.AdaptiveAvgPool1d(7), tnn.ConvTranspose1d(3, 2, 3, stride=3))
    x = torch.randn(4, 2, 30)
    (out,), (expected,) = compiled_outputs(model, x)
    assert_close(out, expected, 30)


def test_functional_convs_with_lifted_tensor_constants():
    weight = torch.randn(6, 2, 3)

    class Functional(tnn.Module):
        def forward(self, x):
            return F.conv1d(x, weight, stride=2, padding=1, groups=2).relu()

    x = torch.randn(1, 4, 11)
    graph = convc.from_torch(Functional(), x)
    assert [n.value.shape for n in graph.consts()] == [(6, 2, 3)]
    (out,), (expected,) = compiled_outputs(Functional(), x)
    assert_close(out, expected, 6)


class ShapeDependent(tnn.Module):
    """Python control flow over shapes: torch.fx cannot trace it, torch.export runs it."""

    def __init__(self):
        super().__init__()
        self.convs = tnn.ModuleList([tnn.Conv1d(4, 4, 3, padding=1) for _ in range(3)])

    def forward(self, x):
        for conv in self.convs[: x.shape[-1] // 8]:
            x = torch.relu(conv(x))
        if x.shape[-1] % 2:
            x = F.pad(x, (0, 1), mode="reflect")
        return x


@pytest.mark.parametrize("dtype", DTYPES)
def test_control_flow_over_shapes(dtype):
    model = ShapeDependent().to(dtype)
    with pytest.raises(Exception):
        torch.fx.symbolic_trace(model)
    x = torch.randn(2, 4, 17, dtype=dtype)
    graph = convc.from_torch(model, x)
    assert [n.op for n in graph.op_nodes()].count("conv1d") == 2
    (out,), (expected,) = compiled_outputs(model, x)
    assert out.shape == (2, 4, 18)
    assert_close(out, expected, 12)


class Nested(tnn.Module):
    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(2, 3, 3)

    def forward(self, x):
        y = self.conv(x)
        return {"features": (y, [torch.relu(y), torch.sigmoid(y)]), "logits": y.tanh()}, x * 2


def test_nested_outputs_are_flattened_in_order():
    x = torch.randn(1, 2, 6, 5)
    graph = convc.from_torch(Nested(), x)
    assert len(graph.outputs) == 5
    model = Nested()
    ours, theirs = compiled_outputs(model, x)
    assert [o.shape for o in ours] == [(1, 3, 4, 3)] * 4 + [(1, 2, 6, 5)]
    for actual, expected in zip(ours, theirs):
        assert_close(actual, expected, 18)


class Arithmetic(tnn.Module):
    """Activations and arithmetic: in-place ops, alpha, scalars on either side, a float64 0-d buffer
    (torch computes in the other operand's dtype), a view of a buffer, an integer buffer no op uses,
    and the activations that torch decomposes into ops convc has (hardswish, hardsigmoid, silu)."""

    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(3, 4, 3, padding=1)
        self.act = tnn.ReLU(inplace=True)
        self.register_buffer("scale", torch.tensor(0.5, dtype=torch.float64))
        self.register_buffer("steps", torch.tensor(3))
        self.register_buffer("offset", torch.linspace(-1, 1, 4))

    def forward(self, x, y):
        z = self.act(self.conv(x)) + self.offset[:, None, None]
        z = torch.add(z, y, alpha=0.5) - torch.sub(y, 2.0, alpha=3)
        z = 1 - z / 3 + (-z) * self.scale
        z.mul_(2)
        a = F.hardtanh(z, -0.5, 2.0) + F.leaky_relu(z, 0.1) + F.leaky_relu(z, -0.3) + F.relu6(z)
        b = F.hardswish(z) + F.silu(z) * F.hardsigmoid(z) + z ** 2 + torch.clamp(z, min=-0.25)
        return torch.minimum(a, y).clamp(max=0.5), F.leaky_relu(b, 2.0) / torch.maximum(a, y)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_and_arithmetic(dtype):
    torch.manual_seed(1)
    model = Arithmetic().to(dtype)
    x, y = torch.randn(2, 3, 5, 7, dtype=dtype), torch.randn(4, 1, 7, dtype=dtype)
    ours, theirs = compiled_outputs(model, x, y)
    for actual, expected in zip(ours, theirs):
        assert_close(actual, expected, 100)


class Scaled(tnn.Module):
    def forward(self, weight):
        return torch.tanh(weight) * 0.5 + 0.25


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_parametrization_is_recorded_and_folded_at_compile_time(dtype):
    conv = tnn.Conv2d(3, 4, 3).to(dtype)
    torch.nn.utils.parametrize.register_parametrization(conv, "weight", Scaled())
    x = torch.randn(1, 3, 6, 6, dtype=dtype)
    graph = convc.from_torch(conv, x)
    assert {"tanh", "mul", "add"} <= {n.op for n in graph.op_nodes()}
    assert "parametrizations.weight.original" in {n.name for n in graph.consts()}
    optimized = convc.compile(graph).graph
    assert not {"tanh", "mul", "add"} & {n.op for n in optimized.op_nodes()}
    (out,), (expected,) = compiled_outputs(conv, x)
    assert_close(out, expected, 27)


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_norm_conv(dtype):
    weight_norm = torch.nn.utils.parametrizations.weight_norm
    model = tnn.Sequential(weight_norm(tnn.Conv1d(3, 5, 3, padding=1)), tnn.LeakyReLU(0.1),
                           weight_norm(tnn.ConvTranspose1d(5, 2, 4, stride=2))).to(dtype)
    x = torch.randn(1, 3, 9, dtype=dtype)
    graph = convc.from_torch(model, x)
    optimized = convc.compile(graph).graph
    assert {"conv1d", "conv_transpose1d"} <= {n.op for n in optimized.op_nodes()}
    (out,), (expected,) = compiled_outputs(model, x)
    assert_close(out, expected, 30)


class Unsupported(tnn.Module):
    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(2, 4, 3)
        self.norm = tnn.BatchNorm2d(4)

    def forward(self, x):
        y = self.norm(self.conv(x))
        y = torch.cumsum(y, 1) + 1
        return torch.atan(y.flatten(1))


def test_every_unsupported_op_is_listed_with_its_source_line():
    with pytest.raises(ConvcError) as caught:
        convc.from_torch(Unsupported(), torch.randn(1, 2, 5, 5))
    message = str(caught.value)
    assert message.startswith("from_torch: 2 ATen ops of Unsupported cannot be mapped onto convc ops")
    lines = message.splitlines()
    here = __file__.rsplit("/", 1)[-1]

    def use_of(header):
        return lines[lines.index(f"  {header} (1 use)") + 1]
    cumsum = source_line(Unsupported.forward, "cumsum")
    assert use_of("aten.cumsum").endswith(f"{here}:{cumsum}: y = torch.cumsum(y, 1) + 1")
    atan = source_line(Unsupported.forward, "atan")
    assert use_of("aten.atan").endswith(f"{here}:{atan}: return torch.atan(y.flatten(1))")
    assert "aten.batch_norm" not in message and "aten.flatten" not in message  # both map


def test_export_failures_and_wrong_arguments():
    class DataDependent(tnn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(ConvcError, match=r"torch.export.export\(strict=False\) cannot capture DataDependent: "
                                         r"GuardOnDataDependentSymNode: Could not guard on data-dependent"):
        convc.from_torch(DataDependent(), torch.randn(3))

    class InPlace(tnn.Module):
        def forward(self, x):
            x.add_(1)
            return x * 2

    with pytest.raises(ConvcError, match="InPlace writes into its input x in place"):
        convc.from_torch(InPlace(), torch.randn(3))
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        convc.from_torch(lambda x: x, torch.randn(2))


def test_without_torch_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"pip install torch==2\.13\.0") as caught:
        convc.from_torch(object(), np.zeros(2))
    assert isinstance(caught.value, ConvcError)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions_sum_mean_and_norm(dtype):
    class Reduce(tnn.Module):
        def forward(self, x):
            return (x.sum(dim=(2, 3), keepdim=True) * x, x.mean(1), torch.linalg.vector_norm(x, dim=-1))

    x = torch.randn(2, 3, 4, 5, dtype=dtype)
    ours, theirs = compiled_outputs(Reduce(), x)
    for out, expected in zip(ours, theirs, strict=True):
        assert_close(out, expected, 20)
