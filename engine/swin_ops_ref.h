/*
 * swin_ops_ref.h: reference versions of the ops in swin_ops.h: plain loops that follow timm's
 * code step by step (torch.roll, then the view/permute of window_partition; the slices of
 * attn_mask; the coordinate arithmetic of get_relative_position_index), double accumulators, no
 * BLAS. They define what swin_ops.c must compute; only tests call them. Same signatures.
 */
#ifndef GPLQ_SWIN_OPS_REF_H
#define GPLQ_SWIN_OPS_REF_H

void swin_window_partition_forward_ref(float *out, const float *inp, int B, int R, int C, int w,
                                       int shift);
void swin_window_partition_backward_ref(float *dinp, const float *dout, int B, int R, int C,
                                        int w, int shift);
void swin_relpos_index_ref(int *index, int w);
void swin_relpos_bias_forward_ref(float *out, const float *table, const int *index, int N, int NH);
void swin_relpos_bias_backward_ref(float *dtable, const float *dout, const int *index, int N,
                                   int NH);
void swin_shift_mask_ref(float *mask, int R, int w, int shift);
void swin_attention_softmax_forward_ref(float *att, const float *qkv, const float *bias,
                                        const float *mask, int Bw, int nW, int N, int C, int NH);
void swin_attention_bias_backward_ref(float *dbias, const float *dscores, int Bw, int N, int NH);
void swin_merge_gather_forward_ref(float *out, const float *inp, int B, int R, int C);
void swin_merge_gather_backward_ref(float *dinp, const float *dout, int B, int R, int C);
void swin_mean_pool_forward_ref(float *out, const float *inp, int B, int T, int C);
void swin_mean_pool_backward_ref(float *dinp, const float *dout, int B, int T, int C);

#endif
