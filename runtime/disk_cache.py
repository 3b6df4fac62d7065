"""The opt-in on-disk compile cache: a graph's object code and lowering, reused across processes.

Switched on by `convc.compile(..., cache_dir=PATH)` or the CONVC_CACHE_DIR environment variable
(`cache_dir=None` reads the variable; `False` switches the cache off). Eager op kernels use the
variable too.

An entry is one file, `<key>.entry`, named by a sha256 key over everything that decides the
machine code: the graph's canonical text as the caller hands it over, before any pass, and the
settings of the pass pipeline (so a hit runs no pass); every constant's dtype, shape and bytes (the
passes fold them and the emitters pack them); every fact the host target reports (CPU
name, features, triple, the vector width the kernels use, cache sizes, ...); the thread count of
the pool (lowering emits parallel calls for it); the resolved compile options that steer code
generation (convc.options: opt level, vector width, threads, disabled passes); the versions of
convc, llvmlite and LLVM; and a digest of convc's sources (the version does not change while a
checkout is edited). The file holds a magic line, the sha256 of everything after it, then a JSON
header (format, key, section sizes, and the program: the optimized graph's signature and buffer
layout under its own value names, which a caller binds by position), the object files, the
zlib-compressed optimized IR (for `llvm_ir` and `asm`) and the arrays bound at run time (the
constants kernels read, the weights the emitters packed), each section zero-padded to 64 bytes so
that the file mapped into memory holds the arrays in place. Nothing is pickled.

The directory is created private (mode 0700). A directory or an entry that another user owns, or
that its group or others may write to, is not used (a warning names it): loaded machine code runs
as this user. A file whose magic, checksum, format or key does not match is ignored with a RuntimeWarning that
names it, never loaded; the graph is compiled again and the entry rewritten. Writers write a
temporary file and rename it into place, so readers and concurrent writers only ever see whole
entries. A hit touches the entry's mtime; after each write the least recently used entries are
deleted until the directory is within CONVC_CACHE_SIZE_MB (default 512).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import mmap
import os
import secrets
import stat
import struct
import time
import warnings
from pathlib import Path
from typing import Union

import llvmlite
import llvmlite.binding as llvm
import numpy as np

from convc.errors import ConvcError
from convc.ir import Graph
from convc.printer import print_graph
from convc.types import TensorType

from .jit import ObjectCode, host_target
from .lower import Program
from .threads import pool_size

CacheOption = Union[str, os.PathLike, bool, None]
FORMAT = 4  # 2: one object file and one optimized IR per part; 3: keyed before the passes; 4: aligned
MAGIC = b"convc-cache\n"
SUFFIX = ".entry"
DEFAULT_SIZE_MB = 512
STALE_TEMP_SECONDS = 3600  # a temporary file this old belongs to a writer that was killed
ALIGN = 64  # sections start 64-byte aligned: host arrays are used in place, as the emitters prepare them


def open_cache(option: CacheOption) -> DiskCache | None:
    """The cache that `option` asks for: a directory, None for CONVC_CACHE_DIR (off when unset), or
    False for none. A directory that cannot be created is a warning and no cache."""
    if option is None:
        option = os.environ.get("CONVC_CACHE_DIR", "").strip() or False
    if option is False:
        return None
    if isinstance(option, bool) or not isinstance(option, (str, os.PathLike)):
        raise TypeError(f"compile: cache_dir={option!r} must be a directory path, None (use CONVC_CACHE_DIR) "
                        f"or False (no disk cache)")
    directory = Path(option).expanduser()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        problem = _unsafe(directory.stat())
    except OSError as error:
        problem = str(error)
    if problem:
        warnings.warn(f"convc compile cache: cannot use directory {directory} ({problem}); compiling without it",
                      RuntimeWarning)
        return None
    return DiskCache(directory, _size_bound())


def _unsafe(status: os.stat_result) -> str | None:
    """Why machine code must not be loaded from a file or directory with this status: another user
    owns it, or others than its owner may write to it (they could plant code). None if safe."""
    if not hasattr(os, "getuid"):
        return None
    if status.st_uid != os.getuid():
        return f"owned by uid {status.st_uid}, not by this user (uid {os.getuid()})"
    if status.st_mode & 0o022:
        others = "group and others" if status.st_mode & 0o002 else "its group"
        return f"writable by {others} (mode {status.st_mode & 0o777:o})"
    return None


def _size_bound() -> int:
    text = os.environ.get("CONVC_CACHE_SIZE_MB", str(DEFAULT_SIZE_MB))
    try:
        megabytes = float(text)
    except ValueError:
        raise ConvcError(f"CONVC_CACHE_SIZE_MB={text!r} must be a number of megabytes") from None
    if not megabytes > 0:
        raise ConvcError(f"CONVC_CACHE_SIZE_MB={text!r} must be positive")
    return int(megabytes * 2**20)


@functools.lru_cache(maxsize=None)
def _source_digest() -> str:
    """sha256 over convc's Python sources (the IR core, passes and runtime)."""
    import convc
    from convc import passes, runtime
    files = {}  # by module path within convc, the same for an installed package and a checkout
    for prefix, package in (("", convc), ("passes/", passes), ("runtime/", runtime)):
        folder = Path(package.__file__).parent
        for path in folder.rglob("*.py"):
            files[prefix + path.relative_to(folder).as_posix()] = path
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].read_bytes() + b"\0")
    return digest.hexdigest()


class DiskCache:
    """One cache directory and its size bound in bytes."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def key(self, graph: Graph, settings: str) -> str:
        """The sha256 key of `graph`'s machine code on this host after the pass pipeline that
        `settings` describes (the thread pool's size is part of it)."""
        import convc
        host = host_target()
        facts = sorted((name, getattr(host, name)) for name in dir(host)
                       if not name.startswith("_") and not callable(getattr(host, name)))
        digest = hashlib.sha256()
        for part in (FORMAT, convc.__version__, llvmlite.__version__, llvm.llvm_version_info, _source_digest(),
                     facts, pool_size(), settings, print_graph(graph, canonical=True)):
            digest.update(str(part).encode() + b"\0")
        for node in graph.consts():
            value = np.ascontiguousarray(node.value)
            digest.update(f"{value.dtype.str}{value.shape}".encode() + b"\0")
            digest.update(value)
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / f"{key}{SUFFIX}"

    def load(self, key: str) -> tuple[Program, ObjectCode] | None:
        """The entry of `key`; None when there is none or it fails a check (then with a warning
        naming the file)."""
        path = self.path(key)
        try:
            status = path.lstat()
            problem = _unsafe(status) or (None if stat.S_ISREG(status.st_mode) else "it is not a regular file")
            if problem:
                return _ignore(path, problem)
            data = _read_aligned(path)
        except FileNotFoundError:
            return None
        except OSError as error:
            return _ignore(path, f"it cannot be read ({error})")
        prefix = len(MAGIC) + 32
        if len(data) < prefix + 4 or bytes(data[:len(MAGIC)]) != MAGIC:
            return _ignore(path, "it is not a convc cache entry (foreign or truncated)")
        if hashlib.sha256(data[prefix:]).digest() != bytes(data[len(MAGIC):prefix]):
            return _ignore(path, "its checksum does not match (corrupted or truncated)")
        try:
            (header_size,) = struct.unpack_from("<I", data, prefix)
            header = json.loads(bytes(data[prefix + 4:prefix + 4 + header_size]))
            if header.get("format") != FORMAT:
                return _ignore(path, f"it has format {header.get('format')!r}, not {FORMAT}")
            if header.get("key") != key:
                return _ignore(path, f"it holds key {header.get('key')!r} (a foreign entry)")
            loaded = _decode(header, data, _padded(prefix + 4 + header_size))
        except (ValueError, KeyError, IndexError, TypeError, ConvcError, struct.error) as error:
            return _ignore(path, f"its contents do not fit the graph ({error})")
        with contextlib.suppress(OSError):
            os.utime(path)
        return loaded

    def store(self, key: str, program: Program, code: ObjectCode) -> None:
        """Write the entry of `key` (atomically), then evict down to the size bound. A failed write
        is a warning: the compile itself has succeeded."""
        header, sections = _encode(key, program, code)
        header_bytes = json.dumps(header, separators=(",", ":")).encode()
        head = struct.pack("<I", len(header_bytes)) + header_bytes
        chunks = [head + bytes(_padded(len(MAGIC) + 32 + len(head)) - len(MAGIC) - 32 - len(head))]
        chunks += [section + bytes(_padded(len(section)) - len(section)) for section in sections]
        body = b"".join(chunks)
        data = MAGIC + hashlib.sha256(body).digest() + body
        temporary = self.directory / f".{key}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
            os.replace(temporary, self.path(key))
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink()
            warnings.warn(f"convc compile cache: cannot write {self.path(key)} ({error}); the compiled graph "
                          f"is not cached", RuntimeWarning)
            return
        self.evict()

    def evict(self) -> None:
        """Delete least recently used entries until the directory is within the size bound, and
        temporary files that killed writers left behind."""
        entries, now = [], time.time()
        for path in self.directory.iterdir():
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                if path.suffix == SUFFIX:
                    entries.append((info.st_mtime, info.st_size, path))
                elif path.suffix == ".tmp" and now - info.st_mtime > STALE_TEMP_SECONDS:
                    path.unlink()
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size


def _ignore(path: Path, reason: str) -> None:
    warnings.warn(f"convc compile cache: ignoring {path}: {reason}; compiling the graph again",
                  RuntimeWarning)


def _encode(key: str, program: Program, code: ObjectCode) -> tuple[dict, list[bytes]]:
    """The header and the binary sections of an entry."""
    arrays = [(name, np.ascontiguousarray(array)) for name, array in program.arrays.items()]
    layout = {"name": program.name,
              "inputs": [[name, *_type_fields(t)] for name, t in program.inputs],
              "outputs": [[name, *_type_fields(t)] for name, t in program.outputs],
              "slots": program.slots, "computed_outputs": program.computed_outputs,
              "arena_bytes": program.arena_bytes, "arena_slot": program.arena_slot, "parallel": program.parallel,
              "arrays": [[name, array.dtype.str, list(array.shape)] for name, array in arrays]}
    sections = [*code.objects, *code.compressed_irs, *(array.tobytes() for _, array in arrays)]
    header = {"format": FORMAT, "key": key, "parts": len(code.objects), "sizes": [len(s) for s in sections],
              "layout": layout}
    return header, sections


def _type_fields(tensor: TensorType) -> list:
    return [list(tensor.shape), tensor.dtype, tensor.block]


def _typed(values: list) -> list[tuple[str, TensorType]]:
    return [(name, TensorType(tuple(shape), dtype, block)) for name, shape, dtype, block in values]


def _decode(header: dict, data: memoryview, offset: int) -> tuple[Program, ObjectCode]:
    """The entry's program and code; its sections start at `offset` of `data`, each padded to ALIGN
    bytes. Arrays are views of `data` (read-only to the kernels), the code is copied."""
    sizes = header["sizes"]
    if offset + sum(map(_padded, sizes)) != len(data):
        raise ValueError(f"sections of {sum(sizes)} bytes after {offset} in {len(data)}")
    sections = []
    for size in sizes:
        sections.append(data[offset:offset + size])
        offset += _padded(size)
    layout, parts = header["layout"], header["parts"]
    arrays = {name: np.frombuffer(section, np.dtype(dtype)).reshape(shape)
              for (name, dtype, shape), section in zip(layout["arrays"], sections[2 * parts:], strict=True)}
    program = Program(name=layout["name"], inputs=_typed(layout["inputs"]), outputs=_typed(layout["outputs"]),
                      slots=dict(layout["slots"]), computed_outputs=list(layout["computed_outputs"]),
                      arena_bytes=int(layout["arena_bytes"]), arena_slot=int(layout["arena_slot"]),
                      parallel=bool(layout["parallel"]), arrays=arrays)
    return program, ObjectCode(tuple(map(bytes, sections[:parts])), tuple(map(bytes, sections[parts:2 * parts])))


def _padded(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def _read_aligned(path: Path) -> memoryview:
    """The file's bytes, read-only, starting on an ALIGN-byte boundary (so that the entry's padded
    sections are aligned arrays in place): the file mapped into memory (its pages are the page
    cache's, shared and never copied), or read into a fresh aligned buffer where it cannot be
    mapped. Entries are only ever replaced by rename, never rewritten in place, so a mapping stays
    whole while it is in use."""
    with open(path, "rb", buffering=0) as file:
        size = os.fstat(file.fileno()).st_size
        if size:
            with contextlib.suppress(OSError, ValueError):
                return memoryview(mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ))
        raw = np.empty(size + ALIGN, np.uint8)
        start = -raw.ctypes.data % ALIGN
        view = memoryview(raw[start:start + size])
        read = file.readinto(view)
        while read < size:
            more = file.readinto(view[read:])
            if not more:
                return view[:read].toreadonly()
            read += more
    return view.toreadonly()
