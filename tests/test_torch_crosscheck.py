"""Cross-checks against PyTorch where it is installed (skipped cleanly where it is not)."""
import numpy as np
import pytest
from hypothesis import given

from convc import ConvcError, nn, ops
from reference import assert_close
from strategies import conv_cases, conv_transpose_cases, pad_cases

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


@given(conv_transpose_cases())
def test_conv_transpose_agrees_with_torch(case):
    expected = getattr(F, f"conv_transpose{case.rank}d")(
        torch.from_numpy(case.x), torch.from_numpy(case.w), None if case.bias is None else torch.from_numpy(case.bias),
        case.stride, case.padding, case.output_padding, case.groups, case.dilation).numpy()
    actual = getattr(ops, f"conv_transpose{case.rank}d")(case.x, case.w, case.bias, case.stride, case.padding,
                                                           case.output_padding, case.groups, case.dilation)
    assert_close(actual, expected, case.terms)


@given(pad_cases())
def test_pad_agrees_with_torch(case):
    x, amounts, mode, value = case
    kwargs = {"value": value} if mode == "constant" else {}
    try:
        expected = F.pad(torch.from_numpy(x), amounts, mode=mode, **kwargs).numpy()
    except (RuntimeError, NotImplementedError, ValueError):
        with pytest.raises(ConvcError):
            ops.pad(x, amounts, mode=mode, **kwargs)
        return
    np.testing.assert_array_equal(ops.pad(x, amounts, mode=mode, **kwargs), expected)


@pytest.mark.parametrize("length, size", [(10, 3), (7, 7), (5, 8), (9, 4), (1, 5), (13, 1), (6, 0)])
def test_adaptive_avg_pool1d_agrees_with_torch(length, size):
    x = np.random.default_rng(length).standard_normal((2, 3, length)).astype(np.float32)
    expected = F.adaptive_avg_pool1d(torch.from_numpy(x), size).numpy()
    assert_close(ops.adaptive_avg_pool1d(x, size), expected, length)


def test_conv_transpose_module_agrees_with_torch_on_output_size():
    ours = nn.ConvTranspose3d(2, 4, (3, 2, 3), stride=(2, 3, 1), padding=(1, 0, 1), groups=2)
    theirs = torch.nn.ConvTranspose3d(2, 4, (3, 2, 3), stride=(2, 3, 1), padding=(1, 0, 1), groups=2)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight))
        theirs.bias.copy_(torch.from_numpy(ours.bias))
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)  # unbatched
    for size in [(6, 11, 5), (2, 5, 12, 5)]:
        expected = theirs(torch.from_numpy(x), output_size=size).detach().numpy()
        assert_close(ours(x, output_size=size), expected, 36)
    with pytest.raises(ValueError):
        theirs(torch.from_numpy(x), output_size=(9, 9, 9))
    with pytest.raises(ConvcError):
        ours(x, output_size=(9, 9, 9))


@pytest.mark.parametrize("case", [
    dict(x=(1, 2, 5, 5), w=(2, 3, 3, 3), stride=2, output_padding=2),
    dict(x=(1, 2, 5, 5), w=(2, 3, 3, 3), padding=4),
    dict(x=(1, 3, 5, 5), w=(2, 3, 3, 3)),
    dict(x=(1, 2, 5, 5), w=(2, 3, 3, 3), groups=2, stride=0),
])
def test_conv_transpose2d_rejects_what_torch_rejects(case):
    x, w = np.zeros(case.pop("x"), np.float32), np.zeros(case.pop("w"), np.float32)
    with pytest.raises(Exception):
        F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), **case)
    with pytest.raises(ConvcError):
        ops.conv_transpose2d(x, w, **case)
