/*
 * ops_ref.c: the definitions of the ops, as plain loops with double accumulators and libm.
 * Slow on purpose: what the fast ops.c must agree with (tests/test_ops.c).
 */
#include "engine/ops_ref.h"

#include <math.h>
#include <stdlib.h>

void matmul_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                        int N, int C, int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int c = 0; c < C; c++) s += (double)inp[(size_t)n * C + c] * weight[(size_t)o * C + c];
            out[(size_t)n * OC + o] = (float)s;
        }
}

void matmul_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int N, int C, int OC) {
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C && dinp; c++) {
            double s = 0.0;
            for (int o = 0; o < OC; o++) s += (double)dout[(size_t)n * OC + o] * weight[(size_t)o * C + c];
            dinp[(size_t)n * C + c] += (float)s;
        }
    for (int o = 0; o < OC; o++) {
        for (int c = 0; c < C && dweight; c++) {
            double s = 0.0;
            for (int n = 0; n < N; n++) s += (double)dout[(size_t)n * OC + o] * inp[(size_t)n * C + c];
            dweight[(size_t)o * C + c] += (float)s;
        }
        if (dbias) {
            double s = 0.0;
            for (int n = 0; n < N; n++) s += dout[(size_t)n * OC + o];
            dbias[o] += (float)s;
        }
    }
}

void layernorm_forward_ref(float *out, float *mean, float *rstd, const float *inp,
                           const float *weight, const float *bias, int N, int C, float eps) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        double m = 0.0, v = 0.0;
        for (int i = 0; i < C; i++) m += x[i];
        m /= C;
        for (int i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
        double r = 1.0 / sqrt(v / C + eps);
        for (int i = 0; i < C; i++) out[(size_t)n * C + i] = (float)((x[i] - m) * r * weight[i] + bias[i]);
        mean[n] = (float)m;
        rstd[n] = (float)r;
    }
}

void layernorm_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, const float *mean,
                            const float *rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        double sd = 0.0, sdx = 0.0;
        for (int i = 0; i < C; i++) {
            double xhat = (x[i] - mean[n]) * (double)rstd[n];
            sd += (double)d[i] * weight[i];
            sdx += (double)d[i] * weight[i] * xhat;
            if (dweight) dweight[i] += (float)(d[i] * xhat);
            if (dbias) dbias[i] += d[i];
        }
        for (int i = 0; i < C; i++) {
            double xhat = (x[i] - mean[n]) * (double)rstd[n];
            dinp[(size_t)n * C + i] += (float)(rstd[n] * ((double)d[i] * weight[i] - sd / C - xhat * sdx / C));
        }
    }
}

void gelu_forward_ref(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = (float)(0.5 * inp[i] * (1.0 + erf(inp[i] / sqrt(2.0))));
}

void gelu_backward_ref(float *dinp, const float *inp, const float *dout, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double x = inp[i];
        double g = 0.5 * (1.0 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
        dinp[i] += (float)(g * dout[i]);
    }
}

/* q, k, v of head h at token t of image b */
#define QKV(qkv, b, t, part, h, d) \
    (qkv)[(((size_t)(b) * T + (t)) * 3 + (part)) * C + (size_t)(h) * hd + (d)]

void attention_softmax_forward_ref(float *att, const float *qkv, int B, int T, int C, int NH) {
    int hd = C / NH;
    double scale = 1.0 / sqrt(hd);
    double *row = malloc(sizeof(double) * T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                double mx = -INFINITY, s = 0.0;
                for (int j = 0; j < T; j++) {
                    double dot = 0.0;
                    for (int d = 0; d < hd; d++) dot += (double)QKV(qkv, b, t, 0, h, d) * QKV(qkv, b, j, 1, h, d);
                    row[j] = dot * scale;
                    if (row[j] > mx) mx = row[j];
                }
                for (int j = 0; j < T; j++) s += exp(row[j] - mx);
                for (int j = 0; j < T; j++)
                    att[(((size_t)b * NH + h) * T + t) * T + j] = (float)(exp(row[j] - mx) / s);
            }
    free(row);
}

void attention_softmax_backward_ref(float *dqkv, const float *datt, const float *att,
                                    const float *qkv, int B, int T, int C, int NH) {
    int hd = C / NH;
    double scale = 1.0 / sqrt(hd);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float *a = att + (((size_t)b * NH + h) * T + t) * T;
                const float *da = datt + (((size_t)b * NH + h) * T + t) * T;
                double dot = 0.0;
                for (int j = 0; j < T; j++) dot += (double)a[j] * da[j];
                for (int j = 0; j < T; j++) {
                    double ds = a[j] * (da[j] - dot) * scale;
                    for (int d = 0; d < hd; d++) {
                        QKV(dqkv, b, t, 0, h, d) += (float)(ds * QKV(qkv, b, j, 1, h, d));
                        QKV(dqkv, b, j, 1, h, d) += (float)(ds * QKV(qkv, b, t, 0, h, d));
                    }
                }
            }
}

void attention_value_forward_ref(float *out, const float *att, const float *qkv, int B, int T,
                                 int C, int NH) {
    int hd = C / NH;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++)
                for (int d = 0; d < hd; d++) {
                    double s = 0.0;
                    for (int j = 0; j < T; j++)
                        s += (double)att[(((size_t)b * NH + h) * T + t) * T + j] * QKV(qkv, b, j, 2, h, d);
                    out[((size_t)b * T + t) * C + h * hd + d] = (float)s;
                }
}

void attention_value_backward_ref(float *datt, float *dqkv, const float *dout, const float *att,
                                  const float *qkv, int B, int T, int C, int NH) {
    int hd = C / NH;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++)
                for (int j = 0; j < T; j++) {
                    size_t ai = (((size_t)b * NH + h) * T + t) * T + j;
                    double s = 0.0;
                    for (int d = 0; d < hd; d++) {
                        float g = dout[((size_t)b * T + t) * C + h * hd + d];
                        s += (double)g * QKV(qkv, b, j, 2, h, d);
                        QKV(dqkv, b, j, 2, h, d) += att[ai] * g;
                    }
                    datt[ai] += (float)s;
                }
}
