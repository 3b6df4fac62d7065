"""A PyTorch model imported with convc.from_torch, compiled, checked against torch and timed.

With the `transformers` package installed (`pip install ".[models]"`), the model is ResNet-18 built
from its config with random weights (no download); otherwise a small residual CNN defined here.
Without torch the script says so and exits. It is also a model file for the command line:
`convc dump examples/from_torch.py --stage optimized`, `convc run examples/from_torch.py`.
"""
import sys
import time

import numpy as np

try:
    import torch
except ImportError:
    torch = None


def small_cnn():
    """conv-bn-relu stem, max pool, a residual block, global average pool, a linear classifier."""
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
            self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + x)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.MaxPool2d(3, stride=2, padding=1), Residual(32), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(32, 10))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return "a small residual CNN", model.eval(), (torch.randn(1, 3, 64, 64),)


def build():
    try:
        import transformers
    except ImportError:
        return small_cnn()
    config = transformers.ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
                                       embedding_size=64)
    torch.manual_seed(0)
    return "ResNet-18 (transformers, random weights)", transformers.ResNetModel(config).eval(), \
        (torch.randn(1, 3, 224, 224),)


if torch is not None:
    description, model, example_inputs = build()


def best_ms(fn, repeats=20):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main():
    if torch is None:
        print("torch is not installed (pip install torch==2.13.0): nothing to import. OK")
        return
    import convc
    inputs = [x.numpy() for x in example_inputs]
    start = time.perf_counter()
    graph = convc.from_torch(model, *inputs)
    compiled = convc.compile(graph)
    print(f"{description}: imported {len(graph.op_nodes())} ops, compiled to {len(compiled.graph.op_nodes())} "
          f"kernels in {time.perf_counter() - start:.1f} s")
    counts = {}
    for node in compiled.graph.op_nodes():
        counts[node.op] = counts.get(node.op, 0) + 1
    print("optimized IR:", ", ".join(f"{count} {op}" for op, count in sorted(counts.items(), key=lambda c: -c[1])))
    outputs = compiled(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    with torch.no_grad():
        expected = [t.numpy() for t in torch.utils._pytree.tree_leaves(model(*example_inputs))]
    worst = max(float(np.abs(o - e).max() / max(np.abs(e).max(), 1e-30)) for o, e in zip(outputs, expected))
    torch.set_num_threads(2)
    with torch.no_grad():
        theirs = best_ms(lambda: model(*example_inputs))
    ours = best_ms(lambda: compiled(*inputs))
    print(f"max |convc - torch| / max|torch| = {worst:.2e}; convc {ours:.2f} ms, torch eager {theirs:.2f} ms "
          f"(2 threads): {theirs / ours:.2f}x")
    if worst > 1e-3:
        sys.exit("convc's outputs differ from torch's")
    print("OK")


if __name__ == "__main__":
    main()
