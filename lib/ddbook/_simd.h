/* What the C loops of _conv.c and _wino.c share: 8-float vectors (GCC vector extensions: AVX2
 * where the CPU has it), aligned work buffers, and a channels-last image with a zero border. */
#ifndef DDBOOK_SIMD_H
#define DDBOOK_SIMD_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));

static inline v8 ld8(const float *p) { return *(const v8u *)p; }
static inline void st8(float *p, v8 v) { *(v8u *)p = v; }
static inline v8 bc8(float s) { return (v8){s, s, s, s, s, s, s, s}; }

/* v, pinned in a register: without this GCC folds the load into every FMA that reads it, and
 * the loops become bound by loads instead of multiply-adds (measured: 1.2-1.5x slower) */
#if defined(__x86_64__) || defined(__i386__)
#define PIN(v) __asm__("" : "+x"(v))
#elif defined(__aarch64__)
#define PIN(v) __asm__("" : "+w"(v))
#else
#define PIN(v) ((void)0)
#endif

static inline float *alloc_floats(i64 n)
{
    size_t bytes = (size_t)((n * (i64)sizeof(float) + 63) / 64 * 64);
    return (float *)aligned_alloc(64, bytes ? bytes : 64);
}

/* xp (H + 2, W + 2, C): one channels-last image x (H, W, C) with a zero border */
static inline void pad_image_cl(float *xp, const float *x, i64 C, i64 H, i64 W)
{
    const i64 rw = (W + 2) * C;
    memset(xp, 0, sizeof(float) * (size_t)rw);
    memset(xp + (H + 1) * rw, 0, sizeof(float) * (size_t)rw);
    for (i64 h = 0; h < H; h++) {
        float *row = xp + (h + 1) * rw;
        memset(row, 0, sizeof(float) * (size_t)C);
        memcpy(row + C, x + h * W * C, sizeof(float) * (size_t)(W * C));
        memset(row + (W + 1) * C, 0, sizeof(float) * (size_t)C);
    }
}

/* btot[o] += the sum over P pixels of g (P, O), O a multiple of 8: per-lane float sums, added
 * into the double totals in a fixed order (the bias gradient of a channels-last convolution) */
static inline void add_channel_sums_cl(double *btot, const float *g, i64 P, i64 O)
{
    float lanes[8];
    for (i64 o = 0; o < O; o += 8) {
        v8 acc = bc8(0.0f);
        for (i64 p = 0; p < P; p++) acc += ld8(g + p * O + o);
        st8(lanes, acc);
        for (int l = 0; l < 8; l++) btot[o + l] += (double)lanes[l];
    }
}

#endif
