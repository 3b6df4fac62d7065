"""Reading generated assembly in tests: the hot loop of a kernel, and the check that it is a
loop of full-width FMAs with no stack traffic (a spill in the hot path is a bug)."""
import re

import pytest

from convc.runtime.jit import host_target

# the checks read x86 assembly (vfmadd, zmm/ymm/xmm, rsp); other hosts' code is not read
x86_only = pytest.mark.skipif(not host_target().triple.startswith(("x86_64", "i686")),
                              reason="reads x86 assembly; this host is " + host_target().triple)


def hot_loop(asm: str, function: str) -> list[str]:
    """The innermost loop with the most FMAs in one function of the assembly."""
    lines = asm[asm.index(f"{function}:"):].splitlines()
    end = next(i for i, line in enumerate(lines) if line.strip().startswith(".Lfunc_end"))
    lines = lines[:end]
    labels = {line.rstrip(":"): i for i, line in enumerate(lines) if re.match(r"^\.LBB\w+:", line)}
    spans = []
    for i, line in enumerate(lines):
        match = re.match(r"\s+j\w+\s+(\.LBB\w+)", line)
        if match and labels.get(match.group(1), i + 1) <= i:
            spans.append((labels[match.group(1)], i))
    innermost = [(a, b) for a, b in spans if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in spans)]
    return max((lines[a:b + 1] for a, b in innermost), key=lambda body: sum("vfmadd" in line for line in body))


def assert_clean_hot_loop(asm: str, op: str, vector_bits: int, min_fmas: int) -> None:
    """The hot loop of the first kernel of `op` has at least `min_fmas` FMAs, all on full-width
    registers, and no stack traffic."""
    function = next(name for name in re.findall(rf"^(\w+{op}):", asm, re.M))
    loop = hot_loop(asm, function)
    fmas = [line for line in loop if "vfmadd" in line]
    register = {512: "zmm", 256: "ymm", 128: "xmm"}[vector_bits]
    assert len(fmas) >= min_fmas and all(register in line for line in fmas)
    assert not [line for line in loop if "rsp" in line], "stack traffic in the hot loop"
