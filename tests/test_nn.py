"""convc.nn modules: torch's initialization, validation, repr, padding modes, Sequential."""
import math

import numpy as np
import pytest

from convc import ConvcError, nn, ops
from reference import assert_close, conv_nd


@pytest.mark.parametrize("cls, rank", [(nn.Conv1d, 1), (nn.Conv2d, 2), (nn.Conv3d, 3)])
def test_initialization_is_uniform_within_one_over_sqrt_fan_in(cls, rank):
    nn.manual_seed(0)
    m = cls(8, 12, 3, groups=2)
    bound = 1 / math.sqrt(4 * 3 ** rank)
    assert m.weight.shape == (12, 4) + (3,) * rank and m.weight.dtype == np.float32
    assert np.abs(m.weight).max() <= bound and np.abs(m.weight).max() > 0.9 * bound
    assert m.bias.shape == (12,) and np.abs(m.bias).max() <= bound
    assert abs(float(m.weight.mean())) < bound / 5  # centred, not one-sided


def test_manual_seed_makes_initialization_repeatable():
    nn.manual_seed(5)
    a = nn.Conv2d(2, 2, 3).weight
    nn.manual_seed(5)
    np.testing.assert_array_equal(a, nn.Conv2d(2, 2, 3).weight)


def test_module_matches_the_functional_reference_in_float64():
    m = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2, dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((3, 4, 9, 8))
    assert_close(m(x), conv_nd(x, m.weight, m.bias, (2, 1), (1, 0), (1, 2), 2), 12)


@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate"])
def test_same_padding_in_every_mode_matches_the_reference(mode):
    m = nn.Conv1d(2, 3, 4, padding="same", padding_mode=mode, bias=False)
    x = np.random.default_rng(3).standard_normal((2, 2, 7)).astype(np.float32)
    assert m.bias is None
    assert_close(m(x), conv_nd(x, m.weight, None, 1, "same", 1, 1, mode), 8)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(in_channels=4, out_channels=6, kernel_size=3, groups=3), "groups=3 must divide in_channels=4"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, groups=4), "groups=4 must divide out_channels=6"),
    (dict(in_channels=4, out_channels=4, kernel_size=0), "kernel_size=0 must be positive"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, padding="same", stride=2), "padding='same' is not supported"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, padding_mode="mirror"), "padding_mode='mirror'"),
    (dict(in_channels=0, out_channels=4, kernel_size=3), "in_channels=0"),
])
def test_constructor_rejects_what_torch_rejects(kwargs, pattern):
    with pytest.raises(ConvcError, match=pattern):
        nn.Conv2d(**kwargs)


def test_repr_reads_like_torch():
    text = repr(nn.Conv2d(16, 33, (3, 5), stride=(2, 1), padding=(4, 2), dilation=(3, 1), padding_mode="reflect"))
    assert text == ("Conv2d(16, 33, kernel_size=(3, 5), stride=(2, 1), padding=(4, 2), dilation=(3, 1), "
                    "padding_mode='reflect')")
    assert repr(nn.Conv1d(2, 2, 3, bias=False)) == "Conv1d(2, 2, kernel_size=(3,), stride=(1,), bias=False)"
    assert "(1): ReLU()" in repr(nn.Sequential(nn.Conv1d(1, 1, 1), nn.ReLU()))


def test_sequential_applies_modules_in_order():
    nn.manual_seed(1)
    conv = nn.Conv1d(2, 2, 1)
    seq = nn.Sequential(conv, nn.Sigmoid(), ops.relu6)
    x = np.random.default_rng(0).standard_normal((1, 2, 5)).astype(np.float32)
    assert_close(seq(x), ops.relu6(ops.sigmoid(conv(x))))
    with pytest.raises(TypeError, match="argument 1"):
        nn.Sequential(conv, 3)
