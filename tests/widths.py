"""The vector widths every kernel path is tested at: 128 bits, 256 bits and the host's widest
(the narrower ones forced through the `vector_bits` option), so each path runs wherever the suite
runs."""
import contextlib

from convc.options import Options, using
from convc.runtime.jit import host_target

NATIVE_BITS = host_target().vector_bits
WIDTHS = sorted(bits for bits in {128, 256, NATIVE_BITS} if bits <= NATIVE_BITS)


@contextlib.contextmanager
def narrowed(bits):
    """Compile (and run) with `bits`-wide vectors inside the block: convc.compile and the eager ops
    take the block's options as their defaults."""
    with using(Options(vector_bits=bits)):
        yield
