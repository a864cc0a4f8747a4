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
#include "_simd.h"

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

/* ---- Channels-last (N, H, W, C): the first convolution of a ConvNet-BN network in training.
 *
 * The network trains channels-last (its block tails are the channels-last C loops of _tail.c),
 * where oneDNN's kernels for a 3-channel input ran the forward at ~56 and the weight gradient at
 * ~29 GFLOP/s (batch 128; benchmarks/README.md). Here the vector dimension is the output
 * channel. The forward's register block is NPX pixels x NVC vectors of 8 output channels, one
 * broadcast input value times NVC weight vectors per tap, the weights transposed to (C * 9, O)
 * rows; the weight gradient's is GT taps x 2 vectors (4 vectors x 3 taps spilled one register:
 * 33 GFLOP/s). O must be a multiple of 8 (forward) or 16 (weight gradient) and C at most 4: the
 * caller checks (2 is returned otherwise). */

#define NPX 2   /* pixels x 8-float vectors of output channels per forward register block: 8 */
#define NVC 4   /* accumulators + 4 weights + 1 broadcast input (measured, batch 128, 3 -> 32
                   channels: 6 x 2 57, 5 x 2 60, 4 x 2 68, 3 x 4 49 (spills), 2 x 4 77 GFLOP/s) */

/* np pixels (w0 ...) of output row h x nvec vectors of output channels from o0 */
static inline __attribute__((always_inline)) void
fwd_block_cl(const int np, const int nvec, float *y, const float *xp, const float *wt,
             const float *b, i64 o0, i64 C, i64 O, i64 W, i64 h, i64 w0)
{
    v8 acc[NPX][NVC];
    for (int j = 0; j < nvec; j++) {
        const v8 bv = b ? ld8(b + o0 + 8 * j) : bc8(0.0f);
        for (int p = 0; p < np; p++) acc[p][j] = bv;
    }
    for (int kh = 0; kh < 3; kh++) {
        const float *row = xp + ((h + kh) * (W + 2) + w0) * C;
        for (int kw = 0; kw < 3; kw++)
            for (i64 c = 0; c < C; c++) {
                const float *wr = wt + ((c * 3 + kh) * 3 + kw) * O + o0;
                v8 wv[NVC];
                for (int j = 0; j < nvec; j++) {
                    wv[j] = ld8(wr + 8 * j);
                    PIN(wv[j]);
                }
                for (int p = 0; p < np; p++) {
                    const v8 xv = bc8(row[(p + kw) * C + c]);
                    for (int j = 0; j < nvec; j++) acc[p][j] += xv * wv[j];
                }
            }
    }
    for (int p = 0; p < np; p++) {
        float *yr = y + (h * W + w0 + p) * O + o0;
        for (int j = 0; j < nvec; j++) st8(yr + 8 * j, acc[p][j]);
    }
}

/* one output row's blocks of nvec vectors from o0 (inlined with a constant nvec) */
static inline __attribute__((always_inline)) void
fwd_row_cl(const int nvec, float *y, const float *xp, const float *wt, const float *b, i64 o0,
           i64 C, i64 O, i64 W, i64 h)
{
    i64 w0 = 0;
    for (; w0 + NPX <= W; w0 += NPX) fwd_block_cl(NPX, nvec, y, xp, wt, b, o0, C, O, W, h, w0);
    for (; w0 < W; w0++) fwd_block_cl(1, nvec, y, xp, wt, b, o0, C, O, W, h, w0);
}

/* y (N, H, W, O) = conv(x (N, H, W, C), w (O, C, 3, 3)) + b (O) or no bias (b NULL) */
int ddb_conv3_cl_forward(i64 N, i64 C, i64 O, i64 H, i64 W, const float *x, const float *w,
                         const float *b, float *y)
{
    if (O % 8) return 2;
    float *xp = alloc_floats((H + 2) * (W + 2) * C), *wt = alloc_floats(C * 9 * O);
    if (!xp || !wt) {
        free(xp);
        free(wt);
        return 1;
    }
    for (i64 o = 0; o < O; o++)
        for (i64 k = 0; k < C * 9; k++) wt[k * O + o] = w[o * C * 9 + k];
    for (i64 n = 0; n < N; n++) {
        pad_image_cl(xp, x + n * H * W * C, C, H, W);
        float *yn = y + n * H * W * O;
        for (i64 o0 = 0; o0 < O; o0 += 8 * NVC) {
            const int nvec = (int)(O - o0 < 8 * NVC ? (O - o0) / 8 : NVC);
            for (i64 h = 0; h < H; h++) {
                if (nvec == NVC)
                    fwd_row_cl(NVC, yn, xp, wt, b, o0, C, O, W, h);
                else
                    for (i64 o1 = o0; o1 < O; o1 += 8)
                        fwd_row_cl(1, yn, xp, wt, b, o1, C, O, W, h);
            }
        }
    }
    free(xp);
    free(wt);
    return 0;
}

#define GT 6   /* taps per weight-gradient block: 6 taps x 2 vectors = 12 accumulators, + 2
                  gradient vectors + 1 broadcast input (4 vectors x 3 taps spilled one) */

/* nt taps (t0 ...; tap t = (c, kh, kw) at offset off[t] from a pixel's padded row) x 2 vectors
 * of output channels from o0, summed over one image's pixels per lane, into tot (inlined with a
 * constant nt: the accumulators stay in registers) */
static inline __attribute__((always_inline)) void
gw_cl_taps(const int nt, double *tot, const float *xp, const float *gn, const i64 *off, int t0,
           i64 o0, i64 C, i64 O, i64 H, i64 W)
{
    v8 acc[GT][2];
    float lanes[8];
    for (int t = 0; t < nt; t++) acc[t][0] = acc[t][1] = bc8(0.0f);
    for (i64 h = 0; h < H; h++) {
        const float *xr = xp + h * (W + 2) * C;
        const float *gr = gn + h * W * O + o0;
        for (i64 w = 0; w < W; w++) {
            v8 g0 = ld8(gr + w * O), g1 = ld8(gr + w * O + 8);
            PIN(g0);
            PIN(g1);
            for (int t = 0; t < nt; t++) {
                const v8 xv = bc8(xr[off[t0 + t] + w * C]);
                acc[t][0] += g0 * xv;
                acc[t][1] += g1 * xv;
            }
        }
    }
    for (int t = 0; t < nt; t++)
        for (int j = 0; j < 2; j++) {
            st8(lanes, acc[t][j]);
            for (int l = 0; l < 8; l++) tot[(o0 + 8 * j + l) * C * 9 + t0 + t] += (double)lanes[l];
        }
}

/* gw (O, C, 3, 3) and gb (O) (unless NULL) from channels-last x (N, H, W, C) and g (N, H, W, O),
 * C <= 4 and O a multiple of 16: per image, per-lane float sums over its pixels, added into
 * double totals in a fixed order */
int ddb_conv3_cl_grad_weight(i64 N, i64 C, i64 O, i64 H, i64 W, const float *x, const float *g,
                             float *gw, float *gb)
{
    if (C > 4 || O % 16) return 2;
    float *xp = alloc_floats((H + 2) * (W + 2) * C);
    double *tot = (double *)calloc((size_t)(O * C * 9 + O), sizeof(double));
    if (!xp || !tot) {
        free(xp);
        free(tot);
        return 1;
    }
    double *btot = tot + O * C * 9;
    i64 off[4 * 9];   /* tap (c, kh, kw) = c * 9 + kh * 3 + kw: its offset in the padded image */
    for (i64 c = 0; c < C; c++)
        for (int k = 0; k < 9; k++) off[c * 9 + k] = ((k / 3) * (W + 2) + k % 3) * C + c;
    for (i64 n = 0; n < N; n++) {
        pad_image_cl(xp, x + n * H * W * C, C, H, W);
        const float *gn = g + n * H * W * O;
        if (gb) add_channel_sums_cl(btot, gn, H * W, O);
        for (i64 o0 = 0; o0 < O; o0 += 16)
            for (int t0 = 0; t0 < C * 9; t0 += GT) switch (C * 9 - t0 < GT ? C * 9 - t0 : GT) {
                case 1: gw_cl_taps(1, tot, xp, gn, off, t0, o0, C, O, H, W); break;
                case 2: gw_cl_taps(2, tot, xp, gn, off, t0, o0, C, O, H, W); break;
                case 3: gw_cl_taps(3, tot, xp, gn, off, t0, o0, C, O, H, W); break;
                case 4: gw_cl_taps(4, tot, xp, gn, off, t0, o0, C, O, H, W); break;
                case 5: gw_cl_taps(5, tot, xp, gn, off, t0, o0, C, O, H, W); break;
                default: gw_cl_taps(GT, tot, xp, gn, off, t0, o0, C, O, H, W); break;
            }
    }
    for (i64 k = 0; k < O * C * 9; k++) gw[k] = (float)tot[k];
    if (gb)
        for (i64 o = 0; o < O; o++) gb[o] = (float)btot[o];
    free(xp);
    free(tot);
    return 0;
}
