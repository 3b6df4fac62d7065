"""convc.from_torch: torch modules traced into convc graphs, compared with torch's own output."""
import numpy as np
import pytest

import convc
from convc import ConvcError
from reference import assert_close

torch = pytest.importorskip("torch")
tnn, F = torch.nn, torch.nn.functional


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


def test_a_torch_model_imports_and_computes_the_same():
    torch.manual_seed(0)
    model = UNetish().eval()
    image, bias = torch.randn(2, 3, 16, 12), torch.randn(4, 1, 1)
    graph = convc.from_torch(model, image, bias)
    assert graph.inputs == ["image", "bias"]
    ops_used = {n.op for n in graph.op_nodes()}
    assert {"conv2d", "conv_transpose2d", "pad", "maximum", "tanh"} <= ops_used
    first, second = convc.compile(graph)(image.numpy(), bias.numpy())
    expected_first, expected_second = (t.detach().numpy() for t in model(image, bias))
    assert_close(first, expected_first, 200)
    assert_close(second, expected_second, 200)


def test_one_dimensional_model_with_pooling():
    model = tnn.Sequential(tnn.Conv1d(2, 3, 5, padding="same", padding_mode="circular"), tnn.Tanh(),
                           tnn.AdaptiveAvgPool1d(7), tnn.ConvTranspose1d(3, 2, 3, stride=3)).eval()
    x = torch.randn(4, 2, 30)
    out = convc.compile(convc.from_torch(model, x))(x.numpy())
    assert_close(out, model(x).detach().numpy(), 30)


def test_functional_convs_with_tensor_constants():
    weight = torch.randn(6, 2, 3)

    class Functional(tnn.Module):
        def forward(self, x):
            return F.conv1d(x, weight, stride=2, padding=1, groups=2).relu()

    x = torch.randn(1, 4, 11)
    out = convc.compile(convc.from_torch(Functional(), x))(x.numpy())
    assert_close(out, F.conv1d(x, weight, stride=2, padding=1, groups=2).relu().numpy(), 6)


def test_unsupported_parts_are_named():
    with pytest.raises(ConvcError, match="module BatchNorm2d is not supported"):
        convc.from_torch(tnn.Sequential(tnn.Conv2d(2, 2, 1), tnn.BatchNorm2d(2)), torch.randn(1, 2, 4, 4))

    class Softmax(tnn.Module):
        def forward(self, x):
            return torch.softmax(x, 1)
    with pytest.raises(ConvcError, match="function softmax is not supported"):
        convc.from_torch(Softmax(), torch.randn(2, 3))
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        convc.from_torch(lambda x: x, torch.randn(2))
