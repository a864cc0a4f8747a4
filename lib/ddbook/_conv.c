/* A 3x3 convolution with stride 1 and padding 1 on (N, C, H, W) float32, and its two adjoints,
 * as single-threaded CPU loops for inputs of few channels (a ConvNet's first layer on RGB
 * images), where the native NCHW kernels of a distillation iteration's double backward run at
 * a quarter of the machine's peak (benchmarks/README.md). ddbook.ckernels builds this file with
 * the system C compiler (with _tail.c) and calls it through ctypes; ddbook.fused._Conv3x3 makes
 * the three loops one differentiable op, each derivative being one of them:
 *
 *   forward      y[n,o]  = b[o] + sum_c w[o,c] (*) x[n,c]              (cross-correlation)
 *   grad_input   gx[n,c] = sum_o g[n,o] (*) flip(w[o,c])    (the adjoint in x: a forward
 *                           convolution of g with the flipped, transposed weights)
 *   grad_weight  gw[o,c,i,j] = sum_n sum_{h,w} g[n,o,h,w] x[n,c,h+i-1,w+j-1]
 *
 * Each image is first copied into a zero-bordered buffer (rows padded to whole 8-float vectors),
 * so the inner loops have no bounds tests. The inner loops keep a block of output channels x
 * 8-float vectors of one output row in registers (GCC vector extensions: AVX2 where the CPU has
 * it) and add one broadcast weight times one shifted input vector per tap; grad_weight keeps
 * 4 output channels x 3 taps of a row. grad_weight sums each
 * image's products per lane in float, then adds the lane sums into double totals, in a fixed
 * order: a result depends on nothing but its inputs. */
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

/* the sum of a vector's lanes, in a fixed order */
static inline float hsum8(v8 v)
{
    float l[8];
    st8(l, v);
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* A register block: OB output channels x VB 8-float vectors of one output row, i.e. 8
 * accumulators + 2 inputs + 1 weight of the 16 AVX2 registers (3 x 4 and 2 x 4 blocks measured
 * 1.0-1.5x slower) */
#define OB 4
#define VB 2

static float *alloc_floats(i64 n)
{
    size_t bytes = (size_t)((n * (i64)sizeof(float) + 63) / 64 * 64);
    return (float *)aligned_alloc(64, bytes ? bytes : 64);
}

/* xp (C, H + 2, Wp): x (C, H, W) with a zero border of one pixel, each row padded with zeros
 * (only the border is cleared; measured no faster: three shifted aligned copies, and copying
 * each row just before the first output row that reads it) */
static void pad_image(float *xp, const float *x, i64 C, i64 H, i64 W, i64 Wp)
{
    for (i64 c = 0; c < C; c++) {
        float *p = xp + c * (H + 2) * Wp;
        memset(p, 0, sizeof(float) * (size_t)Wp);
        memset(p + (H + 1) * Wp, 0, sizeof(float) * (size_t)Wp);
        for (i64 h = 0; h < H; h++) {
            float *row = p + (h + 1) * Wp;
            row[0] = 0.0f;
            memcpy(row + 1, x + (c * H + h) * W, sizeof(float) * (size_t)W);
            memset(row + 1 + W, 0, sizeof(float) * (size_t)(Wp - 1 - W));
        }
    }
}

/* One register block: ob output channels x vb vectors of output row h, from vector v0.
 * w: (O, C * 9) rows; y: the image's (O, H, W) output. Inlined with constant ob, vb. */
static inline __attribute__((always_inline)) void
fwd_block(const int ob, const int vb, float *y, const float *xp, const float *w,
          const float *b, i64 o0, i64 C, i64 H, i64 W, i64 Wp, i64 h, i64 v0)
{
    v8 acc[OB][VB];
    for (int i = 0; i < ob; i++) {
        const float b0 = b ? b[o0 + i] : 0.0f;
        for (int j = 0; j < vb; j++) acc[i][j] = bc8(b0);
    }
    for (i64 c = 0; c < C; c++) {
        for (int kh = 0; kh < 3; kh++) {
            const float *row = xp + (c * (H + 2) + h + kh) * Wp + 8 * v0;
            const float *wr = w + o0 * C * 9 + c * 9 + kh * 3;
            for (int kw = 0; kw < 3; kw++) {
                v8 in[VB];
                for (int j = 0; j < vb; j++) {
                    in[j] = ld8(row + kw + 8 * j);
                    PIN(in[j]);
                }
                for (int i = 0; i < ob; i++) {
                    const v8 wv = bc8(wr[i * C * 9 + kw]);
                    for (int j = 0; j < vb; j++) acc[i][j] += wv * in[j];
                }
            }
        }
    }
    for (int i = 0; i < ob; i++) {
        float *yr = y + ((o0 + i) * H + h) * W;
        for (int j = 0; j < vb; j++) {
            const i64 w0 = 8 * (v0 + j);
            if (w0 + 8 <= W) {
                st8(yr + w0, acc[i][j]);
            } else {
                float tmp[8];
                st8(tmp, acc[i][j]);
                memcpy(yr + w0, tmp, sizeof(float) * (size_t)(W - w0));
            }
        }
    }
}

#define FWD_CASE(o, v) \
    case (o) * 8 + (v): fwd_block(o, v, y, xp, w, b, o0, C, H, W, Wp, h, v0); break;

static void fwd_image(float *y, const float *xp, const float *w, const float *b, i64 C, i64 O,
                      i64 H, i64 W, i64 Wp)
{
    const i64 nv = (W + 7) / 8;
    for (i64 o0 = 0; o0 < O; o0 += OB) {
        const int ob = (int)(O - o0 < OB ? O - o0 : OB);
        for (i64 h = 0; h < H; h++) {
            for (i64 v0 = 0; v0 < nv; v0 += VB) {
                const int vb = (int)(nv - v0 < VB ? nv - v0 : VB);
                switch (ob * 8 + vb) {
                    FWD_CASE(1, 1) FWD_CASE(1, 2) FWD_CASE(2, 1) FWD_CASE(2, 2)
                    FWD_CASE(3, 1) FWD_CASE(3, 2) FWD_CASE(4, 1) FWD_CASE(4, 2)
                    default: break;
                }
            }
        }
    }
}

static i64 padded_width(i64 W) { return 8 * ((W + 7) / 8) + 8; }

/* y (N, O, H, W) = conv(x (N, C, H, W), w (O, C, 3, 3)) + b (O) or no bias (b NULL) */
int ddb_conv3_forward(i64 N, i64 C, i64 O, i64 H, i64 W, const float *x, const float *w,
                      const float *b, float *y)
{
    const i64 Wp = padded_width(W);
    float *xp = alloc_floats(C * (H + 2) * Wp);
    if (!xp) return 1;
    for (i64 n = 0; n < N; n++) {
        pad_image(xp, x + n * C * H * W, C, H, W, Wp);
        fwd_image(y + n * O * H * W, xp, w, b, C, O, H, W, Wp);
    }
    free(xp);
    return 0;
}

/* gx (N, C, H, W) from g (N, O, H, W) and w (O, C, 3, 3): the forward loops on g with the
 * weights wf[c, o, i, j] = w[o, c, 2 - i, 2 - j] */
int ddb_conv3_grad_input(i64 N, i64 C, i64 O, i64 H, i64 W, const float *g, const float *w,
                         float *gx)
{
    const i64 Wp = padded_width(W);
    float *gp = alloc_floats(O * (H + 2) * Wp), *wf = alloc_floats(C * O * 9);
    if (!gp || !wf) {
        free(gp);
        free(wf);
        return 1;
    }
    for (i64 o = 0; o < O; o++)
        for (i64 c = 0; c < C; c++)
            for (int k = 0; k < 9; k++) wf[(c * O + o) * 9 + k] = w[(o * C + c) * 9 + 8 - k];
    for (i64 n = 0; n < N; n++) {
        pad_image(gp, g + n * O * H * W, O, H, W, Wp);
        fwd_image(gx + n * C * H * W, gp, wf, NULL, O, C, H, W, Wp);
    }
    free(gp);
    free(wf);
    return 0;
}

#define GB 4   /* output channels per grad_weight register block (x 3 taps of a row) */

/* acc[i][kw] += the g vector of output channel i (at gr + 8 * v, planes H * Wg apart) x the
 * input vector shifted by kw, for the first n channels of the block (a macro, not a function:
 * passing acc to one kept it in memory, 1.7x slower) */
#define GW_TAPS(n)                                        \
    for (int i = 0; i < (n); i++) {                       \
        v8 gv = ld8(gr + i * H * Wg + 8 * v);             \
        PIN(gv);                                          \
        acc[i][0] += gv * x0;                             \
        acc[i][1] += gv * x1;                             \
        acc[i][2] += gv * x2;                             \
    }

/* gw (O, C, 3, 3) = sum over n of g[n] correlated with x[n]; gb (O) = the sums of g's planes
 * (the bias gradient), unless gb is NULL */
int ddb_conv3_grad_weight(i64 N, i64 C, i64 O, i64 H, i64 W, const float *x, const float *g,
                          float *gw, float *gb)
{
    const i64 Wp = padded_width(W), nv = (W + 7) / 8, Wg = 8 * nv;
    const int copy_g = Wg != W;   /* rows of g padded to whole vectors when W % 8 != 0 */
    float *xp = alloc_floats(C * (H + 2) * Wp);
    float *gq = copy_g ? alloc_floats(O * H * Wg) : NULL;
    double *tot = (double *)calloc((size_t)(O * C * 9 + O), sizeof(double));
    if (!xp || !tot || (copy_g && !gq)) {
        free(xp);
        free(gq);
        free(tot);
        return 1;
    }
    double *btot = tot + O * C * 9;
    for (i64 n = 0; n < N; n++) {
        pad_image(xp, x + n * C * H * W, C, H, W, Wp);
        const float *gn = g + n * O * H * W;
        if (copy_g) {
            memset(gq, 0, sizeof(float) * (size_t)(O * H * Wg));
            for (i64 r = 0; r < O * H; r++)
                memcpy(gq + r * Wg, gn + r * W, sizeof(float) * (size_t)W);
            gn = gq;
        }
        if (gb)
            for (i64 o = 0; o < O; o++) {
                v8 acc = bc8(0.0f);
                const float *gp = gn + o * H * Wg;
                for (i64 k = 0; k < H * nv; k++) acc += ld8(gp + 8 * k);
                btot[o] += (double)hsum8(acc);
            }
        for (i64 o0 = 0; o0 < O; o0 += GB) {
            const int ob = (int)(O - o0 < GB ? O - o0 : GB);
            for (i64 c = 0; c < C; c++) {
                for (int kh = 0; kh < 3; kh++) {
                    v8 acc[GB][3];
                    for (int i = 0; i < GB; i++)
                        for (int kw = 0; kw < 3; kw++) acc[i][kw] = bc8(0.0f);
                    for (i64 h = 0; h < H; h++) {
                        const float *xr = xp + (c * (H + 2) + h + kh) * Wp;
                        const float *gr = gn + (o0 * H + h) * Wg;
                        for (i64 v = 0; v < nv; v++) {
                            v8 x0 = ld8(xr + 8 * v), x1 = ld8(xr + 8 * v + 1),
                               x2 = ld8(xr + 8 * v + 2);
                            PIN(x0);
                            PIN(x1);
                            PIN(x2);
                            if (ob == GB) {   /* a constant trip count: fully unrolled */
                                GW_TAPS(GB)
                            } else {
                                GW_TAPS(ob)
                            }
                        }
                    }
                    for (int i = 0; i < ob; i++)
                        for (int kw = 0; kw < 3; kw++)
                            tot[((o0 + i) * C + c) * 9 + kh * 3 + kw] += (double)hsum8(acc[i][kw]);
                }
            }
        }
    }
    for (i64 k = 0; k < O * C * 9; k++) gw[k] = (float)tot[k];
    if (gb)
        for (i64 o = 0; o < O; o++) gb[o] = (float)btot[o];
    free(xp);
    free(gq);
    free(tot);
    return 0;
}
