/*
 * bench_gemm.c: the BF16 matrix product (engine/gemm_bf16.h) against OpenBLAS sgemm, on the
 * shapes of the linear layers' products, in one run (issue 16).
 *
 * For each shape, the three products a linear layer does in a training step, as engine/ops.c
 * calls them: the forward (out = inp @ W^T: N x OC x C, B transposed), the input gradient
 * (dinp = dout @ W: N x C x OC) and the weight gradient (dW = dout^T @ inp: OC x C x N, A
 * transposed). Each is timed with sgemm and with gemm_bf16 on the same operands, best of
 * --reps calls after two warmup calls, on --threads threads; the table gives GFLOP/s and the
 * ratio. Best, not median: both sides' ceiling, so that the ratio compares kernels, not noise.
 *
 * Where the CPU has no AVX512-BF16, gemm_bf16 would compute through its double-precision
 * reference (a definition, not a kernel): the program says so and times sgemm alone.
 *
 * Usage: bench_gemm [--json] [--threads N] [--reps N]
 * With --json, one JSON object per product on stdout and the table on stderr.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/blas.h"
#include "engine/gemm_bf16.h"
#include "engine/rng.h"
#include "util/clock.h"

/* A linear layer: rows = batch x tokens, its input and output widths. */
typedef struct {
    const char *model, *layer;
    int rows, in, out;
} shape;

static const shape shapes[] = {
    /* the reference the other benches' "% of sgemm" divide by: 1024^3 */
    {"square", "-", 1024, 1024, 1024},
    /* the demo ViT at stage 1's batch 128: 128 x 65 tokens */
    {"demo", "qkv", 8320, 192, 576},
    {"demo", "fc1", 8320, 192, 768},
    {"demo", "fc2", 8320, 768, 192},
    /* DeiT-S at batch 16: 16 x 197 tokens */
    {"deit-s", "qkv", 3152, 384, 1152},
    {"deit-s", "fc1", 3152, 384, 1536},
    {"deit-s", "fc2", 3152, 1536, 384},
};

typedef void (*gemm_fn)(int ta, int tb, int M, int N, int K, float alpha, const float *A,
                        int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* One product: C (M x N) = op(A) op(B), op(A) M x K. */
typedef struct {
    const char *what;
    int ta, tb, M, N, K;
} product;

/* GFLOP/s of f on p, best of reps timed calls after two warmup calls. */
static double rate(gemm_fn f, const product *p, const float *A, const float *B, float *C,
                   int reps) {
    int lda = p->ta ? p->M : p->K, ldb = p->tb ? p->K : p->N;
    double best = 1e30;
    for (int i = 0; i < reps + 2; i++) {
        double t0 = clock_mono_s();
        f(p->ta, p->tb, p->M, p->N, p->K, 1.0f, A, lda, B, ldb, 0.0f, C, p->N);
        double dt = clock_mono_s() - t0;
        if (i >= 2 && dt < best) best = dt;
    }
    return 2.0 * p->M * p->N * (double)p->K / best * 1e-9;
}

static void usage(void) {
    fprintf(stderr, "usage: bench_gemm [--json] [--threads N] [--reps N]\n");
}

int main(int argc, char **argv) {
    blas_setup(argv);
    int json = 0, threads = 2, reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            usage();
            return 2;
        }
    }
    if (threads < 1 || reps < 1) {
        usage();
        return 2;
    }
    blas_set_threads(threads);
    int bf16 = gemm_bf16_available();
    FILE *out = json ? stderr : stdout;
    fprintf(out, "bench_gemm: OpenBLAS core %s (%s), threads %d, best of %d\n", blas_core(),
            blas_core_source(), threads, reps);
    if (!bf16)
        fprintf(out, "bench_gemm: this CPU has no AVX512-BF16: gemm_bf16 would run its reference, "
                     "so only sgemm is timed\n");
    fprintf(out, "%-7s %-5s %-6s %5s %5s %5s  %12s %12s %8s\n", "model", "layer", "product", "M",
            "N", "K", "sgemm GF/s", "bf16 GF/s", "bf16/s");

    /* operands big enough for every product of every shape */
    size_t most = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        size_t a = (size_t)shapes[s].rows * (shapes[s].in > shapes[s].out ? shapes[s].in
                                                                          : shapes[s].out);
        if (a > most) most = a;
    }
    float *A = malloc(sizeof(float) * most), *B = malloc(sizeof(float) * most);
    float *C = malloc(sizeof(float) * most);
    if (!A || !B || !C) {
        fprintf(stderr, "bench_gemm: out of memory\n");
        return 1;
    }
    rng_t r;
    rng_seed(&r, 7);
    for (size_t i = 0; i < most; i++) A[i] = rng_normal(&r), B[i] = rng_normal(&r);

    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const shape *sh = &shapes[s];
        const product ps[3] = {
            {"fwd", 0, 1, sh->rows, sh->out, sh->in},  /* out = inp @ W^T */
            {"dinp", 0, 0, sh->rows, sh->in, sh->out}, /* dinp = dout @ W */
            {"dW", 1, 0, sh->out, sh->in, sh->rows},   /* dW = dout^T @ inp */
        };
        for (int k = 0; k < 3; k++) {
            double gs = rate(gemm_fp32, &ps[k], A, B, C, reps);
            double gb = bf16 ? rate(gemm_bf16, &ps[k], A, B, C, reps) : 0;
            fprintf(out, "%-7s %-5s %-6s %5d %5d %5d  %12.1f ", sh->model, sh->layer, ps[k].what,
                    ps[k].M, ps[k].N, ps[k].K, gs);
            if (bf16) fprintf(out, "%12.1f %7.2fx\n", gb, gb / gs);
            else fprintf(out, "%12s %8s\n", "-", "-");
            if (json) {
                json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:f, s:o, s:s}",
                                      "model", sh->model, "layer", sh->layer, "product",
                                      ps[k].what, "M", ps[k].M, "N", ps[k].N, "K", ps[k].K,
                                      "threads", threads, "sgemm_gflops", gs, "bf16_gflops",
                                      bf16 ? json_real(gb) : json_null(), "blas_core",
                                      blas_core());
                json_dumpf(o, stdout, JSON_COMPACT);
                putchar('\n');
                json_decref(o);
            }
        }
    }
    free(A);
    free(B);
    free(C);
    return 0;
}
