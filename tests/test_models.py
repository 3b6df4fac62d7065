"""Acceptance: the models of tests/hf_models.py (from the `transformers` package, random weights, eval mode, batch 1)
imported with convc.from_torch, compiled, and every output compared with torch's eager output
(rtol 1e-3, atol 1e-4 x max|reference|), float32. Skipped without torch and transformers."""
import numpy as np
import pytest

import convc

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from hf_models import MODELS  # noqa: E402


@pytest.mark.parametrize("name", list(MODELS))
def test_model_matches_torch(name):
    model, inputs = MODELS[name]()
    with torch.no_grad():
        expected = [t.numpy() for t in torch.utils._pytree.tree_leaves(model(*inputs))]
    graph = convc.from_torch(model, *(x.numpy() for x in inputs))
    compiled = convc.compile(graph)
    actual = compiled(*(x.numpy() for x in inputs))
    actual = actual if isinstance(actual, tuple) else (actual,)
    assert len(actual) == len(expected)
    for ours, theirs in zip(actual, expected):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4 * float(np.abs(theirs).max()))
    # no reorder sits between two convs: every reorder reads a graph input or a non-conv op, or feeds one
    convs = {n.name for n in compiled.graph.op_nodes() if n.op.startswith("conv") or n.op == "separable_conv2d"}
    for node in compiled.graph.op_nodes():
        if node.op == "reorder" and node.operands[0] in convs:
            assert not any(user.name in convs for user in compiled.graph.users(node.name)), str(compiled.graph)
