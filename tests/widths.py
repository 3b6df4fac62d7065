"""The vector widths every kernel path is tested at: the host's and 256 bits (forced on an
AVX-512 host through CONVC_VECTOR_BITS), so each path runs wherever the suite runs."""
import contextlib

import pytest

from convc.runtime.jit import host_target

NATIVE_BITS = host_target().vector_bits
WIDTHS = sorted({256, NATIVE_BITS})


@contextlib.contextmanager
def narrowed(bits):
    """Compile (and run) with `bits`-wide vectors inside the block."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVC_VECTOR_BITS", str(bits))
        yield
