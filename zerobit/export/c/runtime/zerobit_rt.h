/* SPDX-License-Identifier: Apache-2.0
 * zerobit C runtime: integer kernels of the zerobit IR (C99, no allocation, caller-owned buffers). */
#ifndef ZEROBIT_RT_H
#define ZEROBIT_RT_H

#include <stdint.h>

/* Activations: codes of at most 8 bits, one byte each: an unsigned code c in [0, 2^bits) as is, a
 * signed code as its two's complement byte (uint8_t)c; NCHW contiguous per sample. Kernels take
 * the signedness of what they read (`is_signed`, or a code range lo < 0). A 1-d tensor (C, L) is
 * (C, 1, L); a linear layer is a 1x1 conv on (features, 1, 1). */
typedef uint8_t zb_act;

/* One (layer, bit-width) run of packed weights: `count` output channels `channels[i]`, each with
 * K codes (in_channels_per_group * kernel_h * kernel_w, row-major), as `bits`-bit two's complement
 * packed LSB-first (code j of the run occupies bits j*bits .. j*bits+bits-1). bits = 0: all 0. */
typedef struct {
    int32_t bits;
    int32_t count;
    const uint16_t *channels;
    const uint8_t *data;
} zb_run;

typedef struct {
    int32_t in_c, in_h, in_w;
    int32_t out_c, out_h, out_w;
    int32_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
    int32_t groups;
    int32_t in_signed;            /* 1: the input holds signed codes */
    int32_t run_count;
    const zb_run *runs;
    const int32_t *bias;          /* (out_c,) on the scale input_scale * weight_scale */
    const int32_t *multiplier;    /* (out_c,) in [0, 2^31); NULL for a float output */
    const uint8_t *shift;         /* (out_c,) in [0, 62]; NULL for a float output */
    const float *dequant_scale;   /* (out_c,) for a float output, else NULL */
    int32_t lo, hi;               /* output code range */
} zb_layer;

typedef struct {
    int32_t channels, in_h, in_w, out_h, out_w;
    int32_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
    int32_t multiplier, shift;    /* average pool: quantize_multiplier(1 / (kernel_h * kernel_w)) */
    int32_t is_signed;            /* 1: signed codes (input and output share one grid) */
} zb_pool;

/* floor((acc * M + 2^(n-1)) / 2^n), acc * M for n = 0 (zerobit.quant.requantize). */
int64_t zb_requantize(int64_t acc, int32_t multiplier, int32_t shift);

/* codes = clamp(round_half_even(x / scale), lo, hi), the division in float32. */
void zb_quantize_input(const float *x, zb_act *y, int32_t n, float scale, int32_t lo, int32_t hi);

/* Unpack `count` codes starting at code index `first` of a packed run. */
void zb_unpack(const uint8_t *data, int32_t bits, int32_t first, int32_t count, int8_t *codes);

/* Conv / linear. Writes codes to y, or float32 logits to y_float for a float output.
 * scratch: int8 of in_channels_per_group * kernel_h * kernel_w (one channel's weights). */
void zb_layer_run(const zb_layer *layer, const zb_act *x, zb_act *y, float *y_float,
                  int8_t *scratch);

void zb_max_pool(const zb_pool *pool, const zb_act *x, zb_act *y);
void zb_avg_pool(const zb_pool *pool, const zb_act *x, zb_act *y);
void zb_add(const zb_act *a, const zb_act *b, zb_act *y, int32_t n, int32_t lo, int32_t hi);
void zb_relu(const zb_act *x, zb_act *y, int32_t n, int32_t is_signed);
void zb_copy(const zb_act *x, zb_act *y, int32_t n);
/* float32(code) * scale */
void zb_dequantize(const zb_act *x, float *y, int32_t n, float scale, int32_t is_signed);

#endif /* ZEROBIT_RT_H */
