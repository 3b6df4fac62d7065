"""Ahead-of-time export: a graph's kernels as a shared library with a C API (`model.so` + `model.h`).

`export` optimizes and lowers the graph as `compile` does, but LLVM generates position-independent
objects for the chosen CPU; beside them go the thread pool's object (the same generated pool the
JIT uses), the packed constants as one read-only blob (assembled with `.incbin`), and a generated C
file that binds the buffer table and implements the C API. The system's C compiler links them; a
version script exports only the `<name>_` functions, so several models load into one program. The
C file is compiled for the baseline of the architecture: it checks with cpuid that the CPU has
every feature the kernels were generated for before it calls them.

The C API (`<name>` the model's name): `<name>_run(inputs, outputs)` with a library-owned workspace
(calls take turns), `<name>_run_with(inputs, outputs, workspace)` with the caller's (of
`<name>_workspace_size()` bytes; calls with their own workspaces run concurrently unless the model
uses the thread pool, whose one job slot they take in turn), shape and dtype queries,
`<name>_set_num_threads`, `<name>_shutdown` (joins the pool's workers; a later run starts them
again) and `<name>_version`. Return codes: `RETURN_CODES`.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

from . import collector
from .compile_times import CompileTimes
from .errors import ConvcError
from .ir import Graph
from .library import DTYPE_CODES, RETURN_CODES
from .options import Options, current, using
from .tracing import trace

ALIGN = 64
MAX_WORKERS = 255  # pool threads a library starts besides the caller's
# x86 feature -> (cpuid leaf, subleaf, register, bit, XCR0 state bits the OS must enable)
CPUID_BITS = {
    "avx": (1, 0, "ecx", 28, 0x6), "fma": (1, 0, "ecx", 12, 0x6), "avx2": (7, 0, "ebx", 5, 0x6),
    "avx512f": (7, 0, "ebx", 16, 0xE6), "avx512dq": (7, 0, "ebx", 17, 0xE6), "avx512bw": (7, 0, "ebx", 30, 0xE6),
    "avx512vl": (7, 0, "ebx", 31, 0xE6), "avx512vp2intersect": (7, 0, "edx", 8, 0xE6),
    "avx512fp16": (7, 0, "edx", 23, 0xE6), "amx-tile": (7, 0, "edx", 24, 0x60000),
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def export(fn_or_graph_or_compiled: Callable | Graph | Any, path: str | os.PathLike, *example_inputs: Any,
           name: str = "model", cpu: str | None = None, options: Options | None = None, **fields: Any) -> Path:
    """Write the shared library `path` and its header (`path` with `.h`) for a function (traced on
    `example_inputs`), a Graph or a convc.Compiled, built for `cpu` (an LLVM CPU name; None: the
    host's) with the compile options `options` and `fields`. Returns the library's path."""
    from .compiler import Compiled, check_example_inputs, optimize
    from .runtime.cpu_features import target_cpu
    from .runtime.executor import lower_and_compile
    from .runtime.jit import host_target, warm_workers
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConvcError(f"export: name={name!r} must be a C identifier (letters, digits and _)")
    path = Path(os.fspath(path)).expanduser()
    compiler = _c_compiler()
    if isinstance(fn_or_graph_or_compiled, Compiled):
        base = Options.of(options if options is not None else fn_or_graph_or_compiled.options, **fields)
    else:
        base = Options.of(options if options is not None else current(), **fields)
    chosen = target_cpu(cpu if cpu is not None else base.target)
    bits = min(chosen.vector_bits, host_target().native_vector_bits, base.vector_bits or 512)
    settings = Options.of(base, target=None, vector_bits=bits, cache_dir=False)
    with collector.paused(), using(settings) as resolved:
        warm_workers(chosen.target)
        if isinstance(fn_or_graph_or_compiled, Compiled):
            optimized = fn_or_graph_or_compiled.graph
        else:
            graph = fn_or_graph_or_compiled
            if isinstance(graph, Graph):
                if example_inputs:
                    check_example_inputs(graph, example_inputs)
            else:
                graph = trace(graph, *example_inputs)
            optimized = optimize(graph, resolved)
        if optimized.dims:
            raise ConvcError(f"export: graph @{optimized.name} has symbolic sizes ({', '.join(optimized.dims)}); "
                             f"the C API takes fixed shapes: export a graph compiled for fixed sizes")
        lowered, code = lower_and_compile(optimized, CompileTimes(), target=chosen.target)
        pool = _pool_object(chosen) if lowered.program.parallel else None
    _link(compiler, path, name, lowered.program, code.objects, pool, chosen.features)
    return path


def _c_compiler() -> str:
    command = os.environ.get("CC", "cc")
    found = shutil.which(command)
    if found is None:
        raise ConvcError(f"export: linking a shared library needs a C compiler, and {command!r} is not on the PATH "
                         f"(install gcc or clang, or set CC)")
    return found


def _pool_object(chosen: Any) -> bytes:
    from .runtime import llvm_compile
    from .runtime.jit import prepared
    from .runtime.threads import pool_module
    target = chosen.target
    obj, _ = llvm_compile.compile_texts([prepared(pool_module())], target.cpu, target.features, target.triple,
                                        pic=True)
    return obj


def _link(compiler: str, path: Path, name: str, program: Any, objects: tuple[bytes, ...], pool: bytes | None,
          features: tuple[str, ...]) -> None:
    """Write the objects, the constants blob and the C glue into a scratch directory and link them
    into `path`; write the header beside it."""
    from .runtime.threads import futex_syscall, pool_size
    blob, offsets = _constants_blob(program)
    digest = hashlib.sha256()
    for part in (*objects, pool or b"", blob, repr(sorted(program.slots.items())).encode()):
        digest.update(part)
    version = f"convc {_package_version()} {digest.hexdigest()[:16]}"
    workers = pool is not None and futex_syscall() is not None
    with tempfile.TemporaryDirectory(prefix="convc-export-") as scratch:
        folder = Path(scratch)
        files = []
        for index, obj in enumerate((*objects, *([pool] if pool else []))):
            files.append(folder / f"part{index}.o")
            files[-1].write_bytes(obj)
        (folder / "constants.bin").write_bytes(blob)
        (folder / "constants.S").write_text(_constants_assembly(folder / "constants.bin"))
        (folder / "glue.c").write_text(_glue(name, program, offsets, features, version, pool is not None, workers,
                                             pool_size()))
        (folder / "exports.map").write_text(f"{{ global: {name}_*; local: *; }};\n")
        path.parent.mkdir(parents=True, exist_ok=True)
        command = [compiler, "-shared", "-fPIC", "-O2", "-o", str(path), str(folder / "glue.c"),
                   str(folder / "constants.S"), *map(str, files), f"-Wl,--version-script={folder / 'exports.map'}",
                   "-Wl,-z,noexecstack", "-lm", "-lpthread"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ConvcError(f"export: linking {path} failed ({' '.join(command[:2])} ... exited with "
                             f"{done.returncode}):\n{done.stderr[-3000:]}")
    path.with_suffix(".h").write_text(_header(name, program, version))


def _package_version() -> str:
    from . import __version__
    return __version__


def _constants_blob(program: Any) -> tuple[bytes, dict[str, int]]:
    """The arrays bound in the buffer table, each at an ALIGN-byte offset of one blob."""
    chunks, offsets, size = [], {}, 0
    for array_name, array in program.arrays.items():
        data = array.tobytes()
        offsets[array_name] = size
        padded = -(-len(data) // ALIGN) * ALIGN
        chunks.append(data + bytes(padded - len(data)))
        size += padded
    return b"".join(chunks), offsets


def _constants_assembly(blob: Path) -> str:
    quoted = str(blob).replace("\\", "\\\\").replace('"', '\\"')
    return (f'    .section .rodata.convc_constants,"a"\n    .balign {ALIGN}\n    .globl convc_constants\n'
            f'    .hidden convc_constants\n    .type convc_constants, @object\nconvc_constants:\n'
            f'    .incbin "{quoted}"\n    .byte 0\n    .size convc_constants, . - convc_constants\n'
            f'    .section .note.GNU-stack,"",@progbits\n')


def _c_array(values: list[int]) -> str:
    return f"{{{', '.join(map(str, values)) or '0'}}}"


def _shape_tables(kind: str, tensors: list) -> str:
    dims, starts, ranks = [], [], []
    for _, tensor in tensors:
        if tensor.block:
            raise ConvcError(f"export: the graph's {kind} has the blocked layout {tensor}; expected a plain one")
        starts.append(len(dims))
        ranks.append(len(tensor.shape))
        dims.extend(tensor.shape)
    codes = [DTYPE_CODES[t.dtype] for _, t in tensors]
    sizes = [t.size * t.numpy_dtype.itemsize for _, t in tensors]
    return (f"static const int64_t {kind}_dims[] = {_c_array(dims)};\n"
            f"static const int {kind}_dim_start[] = {_c_array(starts)};\n"
            f"static const int {kind}_rank[] = {_c_array(ranks)};\n"
            f"static const int {kind}_dtype[] = {_c_array(codes)};\n"
            f"static const size_t {kind}_bytes[] = {_c_array(sizes)};\n")


def _cpu_check(features: tuple[str, ...]) -> str:
    """C: `cpu_ok()`, 1 where cpuid shows every feature in `features` and the OS saves the vector
    state they need (XCR0)."""
    tests = ["    if (!cpuid_bit(1, 0, 2, 27)) return 0;  /* osxsave: XCR0 is readable */",
             '    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));',
             "    xcr0 = ((unsigned long long)hi << 32) | lo;"] if features else []
    for feature in features:
        leaf, subleaf, register, bit, state = CPUID_BITS[feature]
        tests.append(f"    if (!cpuid_bit({leaf}, {subleaf}, {'abcd'.index(register[1])}, {bit}) || "
                     f"(xcr0 & 0x{state:x}ULL) != 0x{state:x}ULL) return 0;  /* {feature} */")
    return """#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
static int cpuid_bit(unsigned leaf, unsigned subleaf, int reg, int bit) {
    unsigned r[4] = {0, 0, 0, 0};
    if (__get_cpuid_max(leaf & 0x80000000u, 0) < leaf) return 0;
    __cpuid_count(leaf, subleaf, r[0], r[1], r[2], r[3]);
    return (r[reg] >> bit) & 1;
}
static int cpu_check(void) {
    unsigned lo = 0, hi = 0;
    unsigned long long xcr0 = 0;
    (void)lo; (void)hi; (void)xcr0; (void)cpuid_bit;
""" + "\n".join(tests) + """
    return 1;
}
#else
static int cpu_check(void) { return 1; }
#endif
static int cpu_ok(void) {
    static volatile int known = -1;
    if (known < 0) known = cpu_check();
    return known;
}
"""


def _glue(name: str, program: Any, offsets: dict[str, int], features: tuple[str, ...], version: str,
          pooled: bool, workers: bool, split_threads: int) -> str:
    """The C file that implements the API around the entry `convc_main(buffers)`."""
    input_names = [n for n, _ in program.inputs]
    slots = program.slots
    bind_inputs = "\n".join(f"    buffers[{slots[n]}] = (void *)inputs[{i}];" for i, n in enumerate(input_names)
                            if n in slots)
    bind, copies, first = [], [], {}
    for index, (output, tensor) in enumerate(program.outputs):
        size = tensor.size * tensor.numpy_dtype.itemsize
        if output in program.computed_outputs and output not in first:
            bind.append(f"    buffers[{slots[output]}] = outputs[{index}];")
            first[output] = index
        elif output in first:
            copies.append(f"    memcpy(outputs[{index}], outputs[{first[output]}], {size});")
        elif output in input_names:
            copies.append(f"    memcpy(outputs[{index}], inputs[{input_names.index(output)}], {size});")
        else:
            copies.append(f"    memcpy(outputs[{index}], convc_constants + {offsets[output]}, {size});")
            first.setdefault(output, index)
    bind_consts = "\n".join(f"    buffers[{slots[n]}] = (void *)(convc_constants + {offsets[n]});" for n in offsets)
    arena = program.arena_bytes
    pool_code = f"""extern void *convc_pool_worker(void *);
extern void convc_pool_reset(void);
extern void convc_pool_stop(void);
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t pool_threads[{MAX_WORKERS}];
static int pool_started, pool_workers, wanted_threads;

static int default_threads(void) {{
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}}

static void pool_stop_locked(void) {{
    if (!pool_started) return;
    convc_pool_stop();
    for (int i = 0; i < pool_workers; i++) pthread_join(pool_threads[i], NULL);
    pool_started = pool_workers = 0;
}}

static void pool_start_locked(void) {{
    if (pool_started) return;
    convc_pool_reset();
    int threads = wanted_threads > 0 ? wanted_threads : default_threads();
    pool_workers = 0;
    for (int i = 1; {int(workers)} && i < threads && i <= {MAX_WORKERS}; i++) {{
        if (pthread_create(&pool_threads[pool_workers], NULL, convc_pool_worker, NULL) != 0) break;
        pool_workers++;  /* the pool claims chunks: fewer workers only means more for the caller */
    }}
    pool_started = 1;
}}
""" if pooled else ""
    call = ("    pthread_mutex_lock(&pool_lock);\n    pool_start_locked();\n    convc_main(buffers);\n"
            "    pthread_mutex_unlock(&pool_lock);") if pooled else "    convc_main(buffers);"
    threads_body = ("    pthread_mutex_lock(&pool_lock);\n    if (threads != wanted_threads) { pool_stop_locked(); "
                    "wanted_threads = threads > 0 ? threads : 0; }\n    pthread_mutex_unlock(&pool_lock);"
                    if pooled else "    (void)threads;")
    shutdown_body = ("    pthread_mutex_lock(&pool_lock);\n    pool_stop_locked();\n    pthread_mutex_unlock(&pool_lock);\n"
                     if pooled else "")
    return f"""/* {name}: generated by convc.export ({version}); the kernels were split for {split_threads} threads. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void convc_main(void **buffers);
extern const unsigned char convc_constants[];

#define NUM_INPUTS {len(program.inputs)}
#define NUM_OUTPUTS {len(program.outputs)}
#define NUM_SLOTS {program.arena_slot + 1}
#define ARENA_SLOT {program.arena_slot}
#define ARENA_BYTES ((size_t){arena})
{_shape_tables("input", program.inputs)}{_shape_tables("output", program.outputs)}
{_cpu_check(features)}
{pool_code}
static pthread_mutex_t own_lock = PTHREAD_MUTEX_INITIALIZER;
static void *own_workspace;

const char *{name}_version(void) {{ return "{version}"; }}
size_t {name}_workspace_size(void) {{ return ARENA_BYTES + {ALIGN}; }}
int {name}_num_inputs(void) {{ return NUM_INPUTS; }}
int {name}_num_outputs(void) {{ return NUM_OUTPUTS; }}

static int shape_of(const int64_t *dims, const int *start, const int *rank, int count, int i, int64_t *out) {{
    if (i < 0 || i >= count) return -1;
    if (out) for (int d = 0; d < rank[i]; d++) out[d] = dims[start[i] + d];
    return rank[i];
}}
int {name}_input_shape(int i, int64_t *dims) {{
    return shape_of(input_dims, input_dim_start, input_rank, NUM_INPUTS, i, dims);
}}
int {name}_output_shape(int i, int64_t *dims) {{
    return shape_of(output_dims, output_dim_start, output_rank, NUM_OUTPUTS, i, dims);
}}
int {name}_input_dtype(int i) {{ return i >= 0 && i < NUM_INPUTS ? input_dtype[i] : -1; }}
int {name}_output_dtype(int i) {{ return i >= 0 && i < NUM_OUTPUTS ? output_dtype[i] : -1; }}

int {name}_run_with(const void *const *inputs, void *const *outputs, void *workspace) {{
    if (!inputs || !outputs || !workspace) return 1;
    for (int i = 0; i < NUM_INPUTS; i++) if (!inputs[i]) return 1;
    for (int i = 0; i < NUM_OUTPUTS; i++) if (!outputs[i]) return 1;
    if (!cpu_ok()) return 2;
    void *buffers[NUM_SLOTS];
    memset(buffers, 0, sizeof buffers);
{bind_inputs}
{chr(10).join(bind)}
{bind_consts}
    buffers[ARENA_SLOT] = (void *)(((uintptr_t)workspace + {ALIGN - 1}) & ~(uintptr_t){ALIGN - 1});
{call}
{chr(10).join(copies)}
    return 0;
}}

int {name}_run(const void *const *inputs, void *const *outputs) {{
    pthread_mutex_lock(&own_lock);
    if (!own_workspace) own_workspace = malloc({name}_workspace_size());
    int status = own_workspace ? {name}_run_with(inputs, outputs, own_workspace) : 3;
    pthread_mutex_unlock(&own_lock);
    return status;
}}

void {name}_set_num_threads(int threads) {{
{threads_body}
}}

void {name}_shutdown(void) {{
{shutdown_body}    pthread_mutex_lock(&own_lock);
    free(own_workspace);
    own_workspace = NULL;
    pthread_mutex_unlock(&own_lock);
}}
"""



def _header(name: str, program: Any, version: str) -> str:
    guard = f"{name.upper()}_H"
    lines = [f"/* {name}.h: the C API of {name}.so, generated by convc.export. Buffers are C-contiguous,",
             " * in the shapes and dtypes listed (dtype 0 float32, 1 float64). Return codes: " +
             "; ".join(f"{code} {text}" for code, text in RETURN_CODES.items()) + ".", " *"]
    for kind, tensors in (("input", program.inputs), ("output", program.outputs)):
        for index, (_, tensor) in enumerate(tensors):
            lines.append(f" * {kind} {index}: {tensor}")
    lines.append(" */")
    return "\n".join(lines) + f"""
#ifndef {guard}
#define {guard}
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {{
#endif

#define {name.upper()}_VERSION "{version}"
#define {name.upper()}_NUM_INPUTS {len(program.inputs)}
#define {name.upper()}_NUM_OUTPUTS {len(program.outputs)}

int {name}_run(const void *const *inputs, void *const *outputs);
int {name}_run_with(const void *const *inputs, void *const *outputs, void *workspace);
size_t {name}_workspace_size(void);
int {name}_num_inputs(void);
int {name}_num_outputs(void);
int {name}_input_shape(int i, int64_t *dims);
int {name}_output_shape(int i, int64_t *dims);
int {name}_input_dtype(int i);
int {name}_output_dtype(int i);
void {name}_set_num_threads(int threads);
void {name}_shutdown(void);
const char *{name}_version(void);

#ifdef __cplusplus
}}
#endif
#endif
"""
