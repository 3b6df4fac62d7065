"""A transposed-convolution upsampler (x2 then x2), traced, compiled and checked against NumPy.

Run it directly (`python examples/upsampler.py`) or with `convc run examples/upsampler.py`.
"""
import numpy as np

import convc
from convc import nn

nn.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(8, 16, 3, padding=1),
    nn.ReLU(),
    nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1),   # 12x12 -> 24x24
    nn.ReLU(),
    nn.ConvTranspose2d(8, 3, 3, stride=2, padding=1, output_padding=1),  # 24x24 -> 48x48
    nn.Sigmoid(),
)
example_inputs = (np.random.default_rng(1).standard_normal((1, 8, 12, 12)).astype(np.float32),)


def _conv(x, w, b):
    """3x3 convolution with one zero on each side, in NumPy (float64)."""
    x = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    h, wd = x.shape[2] - 2, x.shape[3] - 2
    out = sum(np.einsum("nchw,oc->nohw", x[:, :, i:i + h, j:j + wd], w[:, :, i, j]) for i in range(3) for j in range(3))
    return out + b[None, :, None, None]


def _conv_transpose(x, w, b, stride, padding, output_padding):
    """Scatter form: input (i, j) adds x * w[:, :, a, c] at (i*stride + a, j*stride + c), then crop."""
    n, _, h, wd = x.shape
    k = w.shape[2]
    full = np.zeros((n, w.shape[1], (h - 1) * stride + k + output_padding, (wd - 1) * stride + k + output_padding))
    for a in range(k):
        for c in range(k):
            full[:, :, a:a + (h - 1) * stride + 1:stride, c:c + (wd - 1) * stride + 1:stride] += np.einsum(
                "nchw,co->nohw", x, w[:, :, a, c])
    size = ((h - 1) * stride - 2 * padding + k + output_padding, (wd - 1) * stride - 2 * padding + k + output_padding)
    return full[:, :, padding:padding + size[0], padding:padding + size[1]] + b[None, :, None, None]


def reference(x):
    conv, _, up1, _, up2, _ = model.modules
    y = np.maximum(_conv(x.astype(np.float64), conv.weight, conv.bias), 0)
    y = np.maximum(_conv_transpose(y, up1.weight, up1.bias, 2, 1, 0), 0)
    y = _conv_transpose(y, up2.weight, up2.bias, 2, 1, 1)
    return (1 / (1 + np.exp(-y))).astype(np.float32)


if __name__ == "__main__":
    print(model)
    compiled = convc.compile(model, *example_inputs)
    print("optimized IR:\n" + str(compiled.graph))
    out = compiled(*example_inputs)
    error = float(np.max(np.abs(out - reference(*example_inputs))))
    print(f"output {out.dtype}{list(out.shape)}, max abs error vs NumPy reference: {error:.2e}")
    assert error < 1e-4, error
    print("OK")
