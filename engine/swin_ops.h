/*
 * swin_ops.h: the operations a Swin Transformer adds to ops.h, each a forward/backward pair in
 * ops.h's conventions (outputs first, dimensions last, backward functions accumulate).
 *
 * Token maps are (B, R, R, C) row-major (raster order); windows are (B * nW, N, C) with
 * nW = (R / w)^2 windows per image in raster order over the window grid and N = w * w tokens per
 * window, raster order inside it: timm's window_partition. swin_ops_ref.h has the slow,
 * obviously correct versions; tests/test_swin_ops.c holds one against the other.
 */
#ifndef GPLQ_SWIN_OPS_H
#define GPLQ_SWIN_OPS_H

/* out (B * nW, N, C) = window_partition(torch.roll(inp, (-shift, -shift), (1, 2))) of inp
 * (B, R, R, C): the cyclic shift folded into the gather. R % w == 0, 0 <= shift < R. */
void swin_window_partition_forward(float *out, const float *inp, int B, int R, int C, int w,
                                   int shift);
/* dinp (B, R, R, C) += the windows dout (B * nW, N, C) put back where they came from. It is
 * also the forward of window_reverse followed by the roll back (+shift): the partition is a
 * permutation, so its adjoint is its inverse. */
void swin_window_partition_backward(float *dinp, const float *dout, int B, int R, int C, int w,
                                    int shift);

/* The relative position index of a w x w window, (N, N) with N = w * w: entry (i, j) is the row
 * of the bias table ((2w-1)^2, NH) that holds the bias of query i against key j. */
void swin_relpos_index(int *index, int w);
/* out (NH, N, N) = table[index].permute(2, 0, 1): the bias each head adds to its scores. */
void swin_relpos_bias_forward(float *out, const float *table, const int *index, int N, int NH);
/* dtable ((2w-1)^2, NH) += dout (NH, N, N) summed into the rows index sends it to. */
void swin_relpos_bias_backward(float *dtable, const float *dout, const int *index, int N, int NH);

/* mask (nW, N, N) of a map R x R shifted by shift with windows w (timm's attn_mask): 0 where
 * query and key come from the same one of the 9 regions the roll brings together, -100 where
 * not. With shift 0 every entry is 0. */
void swin_shift_mask(float *mask, int R, int w, int shift);

/*
 * Window attention's scores and softmax, for Bw = B * nW windows of N tokens:
 *   att = softmax(scale q k^T + bias[h] + mask[window % nW])
 * qkv (Bw, N, 3C) holds q | k | v as attention_softmax_forward (ops.h) has them; bias
 * (NH, N, N); mask (nW, N, N) or NULL; att (Bw, NH, N, N). The backward is ops.h's
 * attention_softmax_backward (an additive term does not change it), which leaves the gradient
 * of the scores in datt; swin_attention_bias_backward sums that over the windows.
 */
void swin_attention_softmax_forward(float *att, const float *qkv, const float *bias,
                                    const float *mask, int Bw, int nW, int N, int C, int NH);
/* dbias (NH, N, N) += sum over the Bw windows of dscores (Bw, NH, N, N). */
void swin_attention_bias_backward(float *dbias, const float *dscores, int Bw, int N, int NH);

/* PatchMerging's gather: out (B, R/2, R/2, 4C) from inp (B, R, R, C), the 2x2 neighbourhood of
 * each output token concatenated as timm orders it: x(0,0), x(1,0), x(0,1), x(1,1) (row, col
 * offsets). R even. */
void swin_merge_gather_forward(float *out, const float *inp, int B, int R, int C);
/* dinp (B, R, R, C) += dout (B, R/2, R/2, 4C) scattered back. */
void swin_merge_gather_backward(float *dinp, const float *dout, int B, int R, int C);

/* mean over T tokens: out (B, C) = mean_t inp (B, T, C); the backward spreads dout / T. */
void swin_mean_pool_forward(float *out, const float *inp, int B, int T, int C);
void swin_mean_pool_backward(float *dinp, const float *dout, int B, int T, int C);

#endif
