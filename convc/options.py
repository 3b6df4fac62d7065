"""Compile options: one frozen `Options` object, and the environment variables that seed its
defaults, read and validated here only.

    convc.compile(model, x, options=convc.Options(opt_level=1, threads=1))
    convc.compile(model, x, vector_bits=256)          # keyword fields override `options`

A field left None takes its environment variable (CONVC_DUMP, CONVC_CACHE_DIR, CONVC_NUM_THREADS,
CONVC_VECTOR_BITS) when the options are resolved at the start of a compile; a bad value is a
ConvcError naming the variable. While a compile (or an eager call) runs, its resolved options are
`current()`: the kernel emitters read the vector width and the lowering the thread count from
there, and the disk-cache key and the eager cache key are built from them, never from the raw
environment. Other variables (CONVC_CACHE_SIZE_MB, CONVC_EAGER_CACHE_SIZE,
CONVC_COMPILE_WORKERS) steer caches and worker processes only and are read through the
functions below.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from typing import Any, Iterator, Sequence

from .errors import ConvcError

VECTOR_BITS = (128, 256, 512)


def _environment(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None or value.strip() == "" else value.strip()


def _whole_number(name: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConvcError(f"{name}={text!r} must be a whole number >= {minimum}")
    return value


def environment_vector_bits() -> int | None:
    text = _environment("CONVC_VECTOR_BITS")
    if text is None:
        return None
    if text not in {str(bits) for bits in VECTOR_BITS}:
        raise ConvcError(f"CONVC_VECTOR_BITS={text!r} must be one of 128, 256, 512")
    return int(text)


def environment_threads() -> int | None:
    text = _environment("CONVC_NUM_THREADS")
    return None if text is None else _whole_number("CONVC_NUM_THREADS", text, 1)


def environment_compile_workers() -> int | None:
    text = _environment("CONVC_COMPILE_WORKERS")
    return None if text is None else _whole_number("CONVC_COMPILE_WORKERS", text, 0)


def environment_eager_cache_size(default: int) -> int:
    text = _environment("CONVC_EAGER_CACHE_SIZE")
    return default if text is None else _whole_number("CONVC_EAGER_CACHE_SIZE", text, 1)


@dataclasses.dataclass(frozen=True)
class Options:
    """Every compile option. `opt_level` 0, 1 or 2; `dump` 'all', a directory, False or None
    (CONVC_DUMP); `cache_dir` a directory, False or None (CONVC_CACHE_DIR); `threads` the most
    threads a compiled model runs on (1: the caller alone; None: CONVC_NUM_THREADS, else every
    core); `target` None or the host CPU's name (code runs on the host; convc.export names other
    CPUs); `vector_bits` 128, 256 or 512, at most the host's (None: CONVC_VECTOR_BITS, else the
    host's widest); `instruments` pass instruments (convc.passes.pipeline.Instrument) called
    around each pass; `disable` names of passes not to run (`convc.passes.PASS_NAMES`)."""

    opt_level: int = 2
    dump: str | os.PathLike | bool | None = None
    cache_dir: str | os.PathLike | bool | None = None
    threads: int | None = None
    target: str | None = None
    vector_bits: int | None = None
    instruments: Sequence[Any] = ()
    disable: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.opt_level not in (0, 1, 2) or isinstance(self.opt_level, bool):
            raise ConvcError(f"compile: opt_level={self.opt_level!r} must be 0, 1 or 2")
        if self.dump is not None and self.dump is not False and not isinstance(self.dump, (str, os.PathLike)):
            raise TypeError(f"compile: dump={self.dump!r} must be 'all', a directory path, False or None, "
                            f"got {type(self.dump).__name__}")
        if (self.cache_dir is not None and self.cache_dir is not False
                and not isinstance(self.cache_dir, (str, os.PathLike))):
            raise TypeError(f"compile: cache_dir={self.cache_dir!r} must be a directory path, None (use "
                            f"CONVC_CACHE_DIR) or False (no disk cache)")
        if self.threads is not None and (not isinstance(self.threads, int) or isinstance(self.threads, bool)
                                         or self.threads < 1):
            raise ConvcError(f"compile: threads={self.threads!r} must be a whole number >= 1 or None")
        if self.vector_bits is not None and self.vector_bits not in VECTOR_BITS:
            raise ConvcError(f"compile: vector_bits={self.vector_bits!r} must be one of 128, 256, 512 or None")
        if self.target is not None and not isinstance(self.target, str):
            raise TypeError(f"compile: target={self.target!r} must be a CPU name or None")
        if isinstance(self.disable, str):
            object.__setattr__(self, "disable", (self.disable,))
        object.__setattr__(self, "disable", tuple(self.disable))
        object.__setattr__(self, "instruments", tuple(self.instruments))
        if self.disable:
            from .passes import PASS_NAMES
            unknown = [name for name in self.disable if name not in PASS_NAMES]
            if unknown:
                raise ConvcError(f"compile: disable={list(self.disable)!r}: no pass named "
                                 f"{', '.join(map(repr, unknown))}; passes: {', '.join(PASS_NAMES)}")

    @classmethod
    def of(cls, options: "Options | None" = None, **fields: Any) -> "Options":
        """`options` (default Options()) with `fields` replacing its own; unknown fields are an error."""
        if options is not None and not isinstance(options, Options):
            raise TypeError(f"compile: options={options!r} must be a convc.Options")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - names)
        if unknown:
            raise TypeError(f"compile: unknown option(s) {', '.join(unknown)}; options: {', '.join(sorted(names))}")
        base = options or cls()
        return dataclasses.replace(base, **fields) if fields else base

    def resolved(self) -> "Options":
        """The options with their environment defaults filled in and checked against the host."""
        from .runtime.jit import host_target
        host = host_target()
        native = host.native_vector_bits
        bits = self.vector_bits if self.vector_bits is not None else environment_vector_bits()
        bits = native if bits is None else bits
        if bits > native:
            raise ConvcError(f"compile: vector_bits={bits} is wider than this host's {native}-bit vectors "
                             f"({host.cpu})")
        if self.target not in (None, "host", host.cpu):
            raise ConvcError(f"compile: target={self.target!r}: compiled code runs on this host ({host.cpu}); "
                             f"convc.export builds for other CPUs")
        threads = self.threads if self.threads is not None else environment_threads()
        dump = self.dump if self.dump is not None else (_environment("CONVC_DUMP") or False)
        cache_dir = self.cache_dir if self.cache_dir is not None else (_environment("CONVC_CACHE_DIR") or False)
        return dataclasses.replace(self, vector_bits=bits, threads=threads, target=host.cpu, dump=dump,
                                   cache_dir=cache_dir)

    def codegen_key(self) -> str:
        """What of these (resolved) options the machine code depends on (for cache keys)."""
        return f"opt_level={self.opt_level} vector_bits={self.vector_bits} threads={self.threads} " \
               f"disable={sorted(self.disable)}"


_current: contextvars.ContextVar[Options | None] = contextvars.ContextVar("convc_options", default=None)


def current() -> Options | None:
    """The resolved options of the compile running in this context, or None outside one."""
    return _current.get()


@contextlib.contextmanager
def using(options: Options) -> Iterator[Options]:
    """Run the block with `options` resolved as `current()`."""
    resolved = options.resolved()
    token = _current.set(resolved)
    try:
        yield resolved
    finally:
        _current.reset(token)
