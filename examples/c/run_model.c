/* Run a model exported by convc.export from C, with no Python.

   Build (MODEL is the name given to convc.export, model.so and model.h in DIR):
       cc -O2 -DMODEL=model -include DIR/model.h examples/c/run_model.c DIR/model.so \
          -Wl,-rpath,DIR -lpthread -o run_model
   Run:
       ./run_model [--repeat N] [--threads N] [--concurrent T] [--out PREFIX] [input0.bin ...]
   Each input file holds the raw C-contiguous bytes of that input (its shape and dtype are in
   model.h); inputs without a file are filled with a fixed pattern. Outputs go to PREFIX0.bin,
   PREFIX1.bin, ... when --out is given. --concurrent T also runs the model from T threads at once,
   each with its own workspace, and checks that every thread's outputs equal the first run's. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define API(f) CAT(MODEL, f)

static size_t tensor_bytes(int input, int i) {
    int64_t dims[16];
    int rank = input ? API(input_shape)(i, dims) : API(output_shape)(i, dims);
    int dtype = input ? API(input_dtype)(i) : API(output_dtype)(i);
    size_t bytes = dtype == 1 ? 8 : 4;
    for (int d = 0; d < rank; d++) bytes *= (size_t)dims[d];
    return bytes;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void **inputs, **outputs;
static int failures;

static void *concurrent_run(void *unused) {
    (void)unused;
    int n = API(num_outputs)();
    void **mine = calloc(n, sizeof *mine);
    void *workspace = malloc(API(workspace_size)());
    for (int i = 0; i < n; i++) mine[i] = malloc(tensor_bytes(0, i));
    for (int round = 0; round < 5; round++) {
        if (API(run_with)((const void *const *)inputs, mine, workspace) != 0) __atomic_add_fetch(&failures, 1, 0);
        for (int i = 0; i < n; i++)
            if (memcmp(mine[i], outputs[i], tensor_bytes(0, i)) != 0) __atomic_add_fetch(&failures, 1, 0);
    }
    for (int i = 0; i < n; i++) free(mine[i]);
    free(mine);
    free(workspace);
    return NULL;
}

int main(int argc, char **argv) {
    int repeat = 1, concurrent = 0;
    const char *out = NULL;
    const char *files[64];
    int nfiles = 0;
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--repeat") && a + 1 < argc) repeat = atoi(argv[++a]);
        else if (!strcmp(argv[a], "--threads") && a + 1 < argc) API(set_num_threads)(atoi(argv[++a]));
        else if (!strcmp(argv[a], "--concurrent") && a + 1 < argc) concurrent = atoi(argv[++a]);
        else if (!strcmp(argv[a], "--out") && a + 1 < argc) out = argv[++a];
        else if (nfiles < 64) files[nfiles++] = argv[a];
    }
    int n_in = API(num_inputs)(), n_out = API(num_outputs)();
    inputs = calloc(n_in ? n_in : 1, sizeof *inputs);
    outputs = calloc(n_out ? n_out : 1, sizeof *outputs);
    for (int i = 0; i < n_in; i++) {
        size_t bytes = tensor_bytes(1, i);
        inputs[i] = malloc(bytes);
        if (i < nfiles) {
            FILE *f = fopen(files[i], "rb");
            if (!f || fread(inputs[i], 1, bytes, f) != bytes) {
                fprintf(stderr, "%s: cannot read %zu bytes for input %d\n", files[i], bytes, i);
                return 2;
            }
            fclose(f);
        } else if (API(input_dtype)(i) == 1) {
            for (size_t k = 0; k < bytes / 8; k++) ((double *)inputs[i])[k] = (double)(k % 17) / 17.0 - 0.5;
        } else {
            for (size_t k = 0; k < bytes / 4; k++) ((float *)inputs[i])[k] = (float)(k % 17) / 17.0f - 0.5f;
        }
    }
    for (int i = 0; i < n_out; i++) outputs[i] = malloc(tensor_bytes(0, i));
    double best = 1e30;
    for (int r = 0; r < repeat; r++) {
        double start = now();
        int status = API(run)((const void *const *)inputs, outputs);
        double seconds = now() - start;
        if (status != 0) {
            fprintf(stderr, "run returned %d\n", status);
            return 1;
        }
        if (seconds < best) best = seconds;
    }
    printf("%s: %d inputs, %d outputs, best of %d runs %.3f ms\n", API(version)(), n_in, n_out, repeat, best * 1e3);
    if (concurrent > 0) {
        pthread_t threads[64];
        int count = concurrent < 64 ? concurrent : 64;
        for (int t = 0; t < count; t++) pthread_create(&threads[t], NULL, concurrent_run, NULL);
        for (int t = 0; t < count; t++) pthread_join(threads[t], NULL);
        printf("concurrent: %d threads, %d mismatches\n", count, failures);
    }
    for (int i = 0; out && i < n_out; i++) {
        char name[4096];
        snprintf(name, sizeof name, "%s%d.bin", out, i);
        FILE *f = fopen(name, "wb");
        if (!f || fwrite(outputs[i], 1, tensor_bytes(0, i), f) != tensor_bytes(0, i)) {
            fprintf(stderr, "cannot write %s\n", name);
            return 2;
        }
        fclose(f);
    }
    API(shutdown)();
    return failures ? 3 : 0;
}
