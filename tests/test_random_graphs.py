"""Random chains of ops compiled with every fusion (opt_level 2) compute what the unoptimized graph
(opt_level 0) computes: the passes' interplay, not just each pass alone."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import convc
from convc import ops
from reference import assert_close

STEPS = ["conv", "depthwise", "pointwise", "bias_add", "channel_add", "activation", "broadcast_add", "pad", "scale"]


def _apply(step, x, rng, dtype):
    channels = x.shape[1]
    if step == "conv":
        return ops.conv2d(x, rng.standard_normal((channels, channels, 3, 3)).astype(dtype) / 3, padding=1)
    if step == "depthwise":
        mult = int(rng.integers(1, 3))
        w = rng.standard_normal((channels * mult, 1, 3, 3)).astype(dtype) / 3
        return ops.conv2d(x, w, rng.standard_normal(channels * mult).astype(dtype), padding=1, groups=channels)
    if step == "pointwise":
        return ops.conv2d(x, rng.standard_normal((channels, channels, 1, 1)).astype(dtype) / channels)
    if step == "bias_add":
        return ops.add(x, rng.standard_normal((channels, 1, 1)).astype(dtype))
    if step == "channel_add":
        return ops.add(rng.standard_normal((1, channels, 1, 1)).astype(dtype), x)
    if step == "activation":
        return getattr(ops, str(rng.choice(["relu", "relu6", "sigmoid", "tanh"])))(x)
    if step == "broadcast_add":
        return ops.add(x, ops.broadcast_to(rng.standard_normal((x.shape[-1],)).astype(dtype), x.shape))
    if step == "pad":
        return ops.pad(x, (1, 1, 0, 1), mode=str(rng.choice(["constant", "reflect", "replicate", "circular"])))
    return ops.mul(x, 0.5)


@given(st.lists(st.sampled_from(STEPS), min_size=1, max_size=6), st.integers(0, 2**32 - 1),
       st.sampled_from([np.float32, np.float64]), st.sampled_from([(1, 3, 6, 9), (2, 2, 5, 20)]))
def test_random_chains_compute_the_same_at_every_opt_level(steps, seed, dtype, shape):
    def model(x):
        rng = np.random.default_rng(seed)  # the same constants in every trace
        for step in steps:
            x = _apply(step, x, rng, dtype)
        return x
    x = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    optimized = convc.compile(model, x)(x)
    plain = convc.compile(model, x, opt_level=0)(x)
    assert_close(optimized, plain, 9 * 4 * 2 ** len(steps))
