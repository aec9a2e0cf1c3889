/* SPDX-License-Identifier: Apache-2.0
 * zerobit C runtime: integer kernels, bit-exact with zerobit.export.run_reference. */
#include "zerobit_rt.h"

#include <math.h>

/* Arithmetic right shift that floors, without shifting a negative value (implementation-defined
 * before C23): for x < 0, ~x >= 0 and floor(x / 2^n) = ~(~x >> n). */
static int64_t floor_shift(int64_t x, int32_t n)
{
    return x >= 0 ? x >> n : ~((~x) >> n);
}

int64_t zb_requantize(int64_t acc, int32_t multiplier, int32_t shift)
{
    int64_t product = acc * (int64_t)multiplier;
    if (shift == 0) {
        return product;
    }
    return floor_shift(product + ((int64_t)1 << (shift - 1)), shift);
}

/* A stored byte as its code: sign = 0x80 for signed codes (two's complement), 0 for unsigned. */
static int32_t load(zb_act byte, int32_t sign)
{
    return (int32_t)(byte ^ (uint32_t)sign) - sign;
}

/* A code in [-128, 255] as its byte; the unsigned conversion is modulo 2^32, so well defined. */
static zb_act store(int32_t code)
{
    return (zb_act)((uint32_t)code & 0xffu);
}

static int32_t sign_of(int32_t is_signed)
{
    return is_signed ? 0x80 : 0;
}

static int32_t clamp32(int64_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : (int32_t)v);
}

void zb_quantize_input(const float *x, zb_act *y, int32_t n, float scale, int32_t lo, int32_t hi)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        float r = nearbyintf(x[i] / scale);
        if (r < (float)lo) {
            r = (float)lo;
        }
        if (r > (float)hi) {
            r = (float)hi;
        }
        y[i] = store((int32_t)r);
    }
}

void zb_unpack(const uint8_t *data, int32_t bits, int32_t first, int32_t count, int8_t *codes)
{
    int32_t i;
    uint32_t mask = ((uint32_t)1 << bits) - 1u;
    uint32_t sign = (uint32_t)1 << (bits - 1);
    if (bits == 0) {
        for (i = 0; i < count; ++i) {
            codes[i] = 0;
        }
        return;
    }
    for (i = 0; i < count; ++i) {
        uint32_t position = (uint32_t)(first + i) * (uint32_t)bits;
        uint32_t byte = position >> 3, offset = position & 7u;
        uint32_t word = data[byte];
        if (offset + (uint32_t)bits > 8u) {
            word |= (uint32_t)data[byte + 1] << 8;
        }
        word = (word >> offset) & mask;
        /* two's complement sign extension without relying on out-of-range conversions */
        codes[i] = (int8_t)((int32_t)(word ^ sign) - (int32_t)sign);
    }
}

static int32_t channel_sum(const zb_layer *l, const zb_act *x, const int8_t *w, int32_t oy,
                           int32_t ox)
{
    int32_t sign = sign_of(l->in_signed);
    int32_t per_group = l->in_c / l->groups, area = l->in_h * l->in_w;
    int32_t acc = 0, c, ky, kx;
    for (c = 0; c < per_group; ++c) {
        const zb_act *plane = x + c * area;
        for (ky = 0; ky < l->kernel_h; ++ky) {
            int32_t iy = oy * l->stride_h - l->pad_h + ky * l->dilation_h;
            const int8_t *row = w + (c * l->kernel_h + ky) * l->kernel_w;
            if (iy < 0 || iy >= l->in_h) {
                continue;
            }
            for (kx = 0; kx < l->kernel_w; ++kx) {
                int32_t ix = ox * l->stride_w - l->pad_w + kx * l->dilation_w;
                if (ix >= 0 && ix < l->in_w) {
                    acc += load(plane[iy * l->in_w + ix], sign) * (int32_t)row[kx];
                }
            }
        }
    }
    return acc;
}

static void output_channel(const zb_layer *l, int32_t ch, const zb_act *x, zb_act *y,
                           float *y_float, const int8_t *w)
{
    int32_t per_group = l->in_c / l->groups;
    int32_t group = ch / (l->out_c / l->groups);
    const zb_act *source = x + group * per_group * l->in_h * l->in_w;
    int32_t positions = l->out_h * l->out_w, oy, ox;
    for (oy = 0; oy < l->out_h; ++oy) {
        for (ox = 0; ox < l->out_w; ++ox) {
            int64_t acc = (int64_t)channel_sum(l, source, w, oy, ox) + l->bias[ch];
            int32_t at = ch * positions + oy * l->out_w + ox;
            if (l->dequant_scale != 0) {
                y_float[at] = (float)acc * l->dequant_scale[ch];
            } else {
                y[at] = store(clamp32(zb_requantize(acc, l->multiplier[ch], l->shift[ch]),
                                      l->lo, l->hi));
            }
        }
    }
}

void zb_layer_run(const zb_layer *layer, const zb_act *x, zb_act *y, float *y_float,
                  int8_t *scratch)
{
    int32_t k = layer->in_c / layer->groups * layer->kernel_h * layer->kernel_w;
    int32_t r, j;
    for (r = 0; r < layer->run_count; ++r) {
        const zb_run *run = &layer->runs[r];
        for (j = 0; j < run->count; ++j) {
            zb_unpack(run->data, run->bits, j * k, k, scratch);
            output_channel(layer, run->channels[j], x, y, y_float, scratch);
        }
    }
}

/* Window reduction shared by both pools: max (padding never wins) or zero-padded sum. */
static void pool(const zb_pool *p, const zb_act *x, zb_act *y, int is_max)
{
    int32_t c, oy, ox, ky, kx, sign = sign_of(p->is_signed);
    for (c = 0; c < p->channels; ++c) {
        const zb_act *plane = x + c * p->in_h * p->in_w;
        for (oy = 0; oy < p->out_h; ++oy) {
            for (ox = 0; ox < p->out_w; ++ox) {
                int64_t total = 0;
                int32_t best = INT32_MIN;
                for (ky = 0; ky < p->kernel_h; ++ky) {
                    int32_t iy = oy * p->stride_h - p->pad_h + ky * p->dilation_h;
                    for (kx = 0; kx < p->kernel_w; ++kx) {
                        int32_t ix = ox * p->stride_w - p->pad_w + kx * p->dilation_w;
                        if (iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w) {
                            int32_t v = load(plane[iy * p->in_w + ix], sign);
                            total += v;
                            best = v > best ? v : best;
                        }
                    }
                }
                /* the average of codes lies in their range: no clamp, as in the reference */
                *y++ = store(is_max ? best
                                    : (int32_t)zb_requantize(total, p->multiplier, p->shift));
            }
        }
    }
}

void zb_max_pool(const zb_pool *p, const zb_act *x, zb_act *y)
{
    pool(p, x, y, 1);
}

void zb_avg_pool(const zb_pool *p, const zb_act *x, zb_act *y)
{
    pool(p, x, y, 0);
}

void zb_add(const zb_act *a, const zb_act *b, zb_act *y, int32_t n, int32_t lo, int32_t hi)
{
    int32_t i, sign = sign_of(lo < 0);
    for (i = 0; i < n; ++i) {
        y[i] = store(clamp32((int64_t)load(a[i], sign) + load(b[i], sign), lo, hi));
    }
}

void zb_relu(const zb_act *x, zb_act *y, int32_t n, int32_t is_signed)
{
    int32_t i, sign = sign_of(is_signed);
    for (i = 0; i < n; ++i) {
        y[i] = load(x[i], sign) > 0 ? x[i] : 0;
    }
}

void zb_copy(const zb_act *x, zb_act *y, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        y[i] = x[i];
    }
}

void zb_dequantize(const zb_act *x, float *y, int32_t n, float scale, int32_t is_signed)
{
    int32_t i, sign = sign_of(is_signed);
    for (i = 0; i < n; ++i) {
        y[i] = (float)load(x[i], sign) * scale;
    }
}
