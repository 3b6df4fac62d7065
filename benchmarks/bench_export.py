"""Exported libraries of the acceptance models: export time, code size beyond the constants, dlopen
to first result in a fresh C process, and run time from C against the JIT's.

    python benchmarks/bench_export.py [--only resnet18 ...]

Each model is imported with convc.from_torch, compiled (the JIT's time per call is the best of 20
calls) and exported; a small C program (built here with cc) dlopens the library, runs it once and
then 20 more times, printing the dlopen-to-first-result time and the best run. Needs torch,
transformers and a C compiler.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMER = r"""
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int argc, char **argv) {
    const char *name = argv[2];
    char symbol[256];
    double start = now();
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    typedef int (*count_fn)(void);
    typedef int (*shape_fn)(int, int64_t *);
    typedef int (*run_fn)(const void *const *, void *const *);
    typedef void (*stop_fn)(void);
#define GET(type, var, suffix) snprintf(symbol, sizeof symbol, "%s_%s", name, suffix); type var = (type)dlsym(lib, symbol);
    GET(count_fn, num_inputs, "num_inputs")
    GET(count_fn, num_outputs, "num_outputs")
    GET(shape_fn, input_shape, "input_shape")
    GET(shape_fn, output_shape, "output_shape")
    GET(run_fn, run, "run")
    GET(stop_fn, shutdown, "shutdown")
    void *ins[16], *outs[16];
    int64_t dims[16];
    for (int i = 0; i < num_inputs(); i++) {
        size_t n = 1; int rank = input_shape(i, dims); for (int d = 0; d < rank; d++) n *= dims[d];
        ins[i] = calloc(n, 4); for (size_t k = 0; k < n; k++) ((float *)ins[i])[k] = (float)(k % 13) / 13.0f;
    }
    for (int i = 0; i < num_outputs(); i++) {
        size_t n = 1; int rank = output_shape(i, dims); for (int d = 0; d < rank; d++) n *= dims[d];
        outs[i] = malloc(n * 4);
    }
    double setup = now() - start;
    if (run((const void *const *)ins, outs) != 0) return 2;
    double first = now() - start;
    double best = 1e30;
    for (int r = 0; r < 20; r++) { double t = now(); run((const void *const *)ins, outs); t = now() - t; if (t < best) best = t; }
    printf("%.6f %.6f %.6f\n", setup, first, best);
    shutdown();
    return 0;
}
"""


def constant_bytes(library: Path) -> int:
    """Bytes of the embedded constants: the size of the library's `convc_constants` symbol (`nm -S`)."""
    listing = subprocess.run(["nm", "-S", str(library)], capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[3] == "convc_constants":
            return int(fields[1], 16)
    raise SystemExit(f"{library}: no convc_constants symbol")


def code_bytes(library: Path) -> int:
    """Bytes of the library's loaded sections (`size -A`) other than the embedded constants."""
    listing = subprocess.run(["size", "-A", str(library)], capture_output=True, text=True, check=True).stdout
    total = 0
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0].startswith(".") and fields[1].isdigit() and fields[2] != "0":
            total += int(fields[1])
    return total - constant_bytes(library)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=["hifigan", "wav2vec2_features", "mobilenet_v2", "resnet18"])
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import convc
    import hf_models
    from convc.runtime.jit import host_target
    host = host_target()
    print(f"{platform.processor() or platform.machine()}, LLVM cpu {host.cpu}, {host.vector_bits}-bit vectors, "
          f"{os.cpu_count()} cores")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        timer = folder / "timer"
        (folder / "timer.c").write_text(TIMER)
        subprocess.run([os.environ.get("CC", "cc"), "-O2", str(folder / "timer.c"), "-ldl", "-o", str(timer)],
                       check=True)
        for name in args.only:
            model, inputs = hf_models.MODELS[name]()
            arrays = [x.numpy() for x in inputs]
            compiled = convc.compile(convc.from_torch(model, *inputs), cache_dir=False)
            jit = min(_seconds(lambda: compiled(*arrays)) for _ in range(20))
            start = time.perf_counter()
            library = convc.export(compiled, folder / f"{name}.so", name=name)
            exported = time.perf_counter() - start
            constants = constant_bytes(library)
            done = subprocess.run([str(timer), str(library), name], capture_output=True, text=True, check=True)
            setup, first, best = map(float, done.stdout.split())
            rows.append((name, exported, code_bytes(library), constants, setup, first, best, jit))
    print("\n| model | export s | code MB | file MB | dlopen ms | dlopen to first result ms | run ms (C) | "
          "run ms (JIT) |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, exported, code, constants, setup, first, best, jit in rows:
        print(f"| {name} | {exported:.2f} | {code / 2**20:.2f} | {(code + constants) / 2**20:.1f} | {setup * 1e3:.1f} "
              f"| {first * 1e3:.1f} | {best * 1e3:.2f} | {jit * 1e3:.2f} |")


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
