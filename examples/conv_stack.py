"""A small conv stack: traced, dumped, compiled, executed and checked against a NumPy reference.

Run it directly (`python examples/conv_stack.py`), or hand it to the command line:
`convc dump examples/conv_stack.py --stage traced` / `convc run examples/conv_stack.py`.
"""
import numpy as np

import convc
from convc import nn, ops

nn.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1, padding_mode="reflect"),
    nn.ReLU(),
    nn.Conv2d(16, 16, 3, stride=2, padding="valid", groups=4),
    nn.Tanh(),
    nn.Conv2d(16, 8, 1),
)
example_inputs = (np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32),)


def _conv(x, w, b, stride=1, padding=0, groups=1, mode="constant"):
    """Direct NumPy convolution (float64), written out independently of convc."""
    x = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (padding, padding), (padding, padding)], mode=mode)
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, co, oh, ow))
    for g in range(groups):
        xs = x[:, g * cg:(g + 1) * cg]
        ws = w[g * (co // groups):(g + 1) * (co // groups)]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i:i + (oh - 1) * stride + 1:stride, j:j + (ow - 1) * stride + 1:stride]
                out[:, g * (co // groups):(g + 1) * (co // groups)] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    return out + b[None, :, None, None]


def reference(x):
    a, _, b, _, c = model.modules
    y = np.maximum(_conv(x, a.weight, a.bias, padding=1, mode="reflect"), 0)
    y = np.tanh(_conv(y, b.weight, b.bias, stride=2, groups=4))
    return _conv(y, c.weight, c.bias).astype(np.float32)


if __name__ == "__main__":
    graph = convc.trace(model, *example_inputs)
    print("traced IR:\n" + str(graph))
    compiled = convc.compile(graph)
    print("optimized IR:\n" + str(compiled.graph))
    print("LLVM IR (first lines):\n" + "\n".join(compiled.llvm_ir.splitlines()[:12]) + "\n...")
    out = compiled(*example_inputs)
    error = float(np.max(np.abs(out - reference(*example_inputs))))
    print(f"output {out.dtype}{list(out.shape)}, max abs error vs NumPy reference: {error:.2e}")
    assert error < 1e-4, error
    print("OK")
