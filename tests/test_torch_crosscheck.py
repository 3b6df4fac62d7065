"""Cross-checks against PyTorch where it is installed (skipped cleanly where it is not)."""
import numpy as np
import pytest
from hypothesis import given

from convc import ConvcError, nn, ops
from reference import assert_close
from strategies import conv_cases

torch = pytest.importorskip("torch")
F = torch.nn.functional


@given(conv_cases())
def test_functional_conv_agrees_with_torch(case):
    expected = getattr(F, f"conv{case.rank}d")(
        torch.from_numpy(case.x), torch.from_numpy(case.w),
        None if case.bias is None else torch.from_numpy(case.bias),
        case.stride, case.padding, case.dilation, case.groups).numpy()
    actual = getattr(ops, f"conv{case.rank}d")(case.x, case.w, case.bias, case.stride, case.padding,
                                                 case.dilation, case.groups)
    assert_close(actual, expected, case.terms)


@given(conv_cases(modes=("zeros", "circular", "reflect", "replicate")))
def test_conv_modules_agree_with_torch_in_every_padding_mode(case):
    module_type = getattr(nn, f"Conv{case.rank}d")
    torch_type = getattr(torch.nn, f"Conv{case.rank}d")
    c_in, c_out, kernel = case.w.shape[1] * case.groups, case.w.shape[0], case.w.shape[2:]
    kwargs = dict(stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups,
                  bias=case.bias is not None, padding_mode=case.padding_mode)
    ours = module_type(c_in, c_out, kernel, dtype=case.x.dtype, **kwargs)
    ours.weight = case.w
    ours.bias = case.bias
    theirs = torch_type(c_in, c_out, kernel, dtype=torch.from_numpy(case.x).dtype, **kwargs)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(case.w))
        if case.bias is not None:
            theirs.bias.copy_(torch.from_numpy(case.bias))
        expected = theirs(torch.from_numpy(case.x)).numpy()
    assert_close(ours(case.x), expected, case.terms)


REJECTED = [
    dict(x=(1, 4, 8, 8), w=(6, 2, 3, 3), groups=3),
    dict(x=(1, 4, 8, 8), w=(6, 2, 3, 3), groups=1),
    dict(x=(1, 4, 2, 2), w=(4, 4, 3, 3)),
    dict(x=(1, 4, 8, 8), w=(4, 4, 3, 3), stride=0),
    dict(x=(1, 4, 8, 8), w=(4, 4, 3, 3), padding=-1),
    dict(x=(1, 4, 8, 8), w=(4, 4, 3, 3), padding="same", stride=2),
    dict(x=(1, 4, 8, 8), w=(4, 4, 3, 3), stride=(1, 1, 1)),
    dict(x=(4, 8), w=(4, 4, 3, 3)),
    dict(x=(1, 4, 8, 8), w=(4, 4, 0, 3)),
]


@pytest.mark.parametrize("case", REJECTED)
def test_conv2d_rejects_what_torch_rejects(case):
    x, w = np.zeros(case.pop("x"), np.float32), np.zeros(case.pop("w"), np.float32)
    with pytest.raises(Exception):
        F.conv2d(torch.from_numpy(x), torch.from_numpy(w), **case)
    with pytest.raises(ConvcError):
        ops.conv2d(x, w, **case)


def test_torch_tensors_are_accepted_as_inputs():
    x = torch.randn(1, 2, 6, 6)
    w = torch.randn(3, 2, 3, 3)
    out = ops.conv2d(x, w, padding=1)
    assert isinstance(out, np.ndarray)
    assert_close(out, F.conv2d(x, w, padding=1).numpy(), 18)
