"""TensorFlow-style ops: extract_patches on the example of its documentation, and a Keras-style
SeparableConv2D model traced, compiled and checked against a NumPy reference.

Run it directly (`python examples/tf_ops.py`) or with `convc run examples/tf_ops.py`.
"""
import numpy as np

import convc
from convc import nn, ops

# tf.image.extract_patches' documented example: 3x3 patches of a 10x10 image of 1..100, strides 5
n = 10
image = np.array([[[[x * n + y + 1] for y in range(n)] for x in range(n)]], np.float32)
patches = ops.extract_patches(image, sizes=[1, 3, 3, 1], strides=[1, 5, 5, 1], rates=[1, 1, 1, 1], padding="VALID")
documented = [[[[1, 2, 3, 11, 12, 13, 21, 22, 23], [6, 7, 8, 16, 17, 18, 26, 27, 28]],
               [[51, 52, 53, 61, 62, 63, 71, 72, 73], [56, 57, 58, 66, 67, 68, 76, 77, 78]]]]

nn.manual_seed(0)
first = nn.SeparableConv2D(16, 3, padding="same", depth_multiplier=2, activation="relu")
second = nn.SeparableConv2D(8, 3, strides=2, padding="valid")


def model(images):
    return second(first(images))


example_inputs = (np.random.default_rng(2).standard_normal((2, 24, 24, 3)).astype(np.float32),)
model(*example_inputs)  # Keras layers build their weights on the first call


def _separable(x, depthwise, pointwise, bias, stride, same):
    """Depthwise then pointwise convolution in NumPy (NHWC, float64)."""
    kh, kw, channels, mult = depthwise.shape
    if same:
        x = np.pad(x, [(0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)])
    out_h, out_w = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    middle = np.zeros((x.shape[0], out_h, out_w, channels, mult))
    for a in range(kh):
        for c in range(kw):
            window = x[:, a:a + (out_h - 1) * stride + 1:stride, c:c + (out_w - 1) * stride + 1:stride]
            middle += window[..., None] * depthwise[a, c]
    return middle.reshape(*middle.shape[:3], -1) @ pointwise[0, 0] + bias


def reference(images):
    y = np.maximum(_separable(images.astype(np.float64), first.depthwise_kernel, first.pointwise_kernel,
                              first.bias, 1, True), 0)
    return _separable(y, second.depthwise_kernel, second.pointwise_kernel, second.bias, 2, False).astype(np.float32)


if __name__ == "__main__":
    print("extract_patches of the documented example:\n", patches[..., :].astype(int))
    assert np.array_equal(patches, documented)
    compiled = convc.compile(model, *example_inputs)
    print("optimized IR:\n" + str(compiled.graph))
    out = compiled(*example_inputs)
    error = float(np.max(np.abs(out - reference(*example_inputs))))
    print(f"output {out.dtype}{list(out.shape)}, max abs error vs NumPy reference: {error:.2e}")
    assert error < 1e-4, error
    print("OK")
