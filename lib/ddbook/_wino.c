/* Winograd F(2x2, 3x3) convolutions on float32 images: the 3x3, stride-1, padding-1
 * convolutions of a ConvNet's wider layers (32 -> 32 channels at 16x16 and 8x8 at the quick
 * scale), and their input and weight gradients, channels-last (N, H, W, C) for a ConvNet-BN
 * network in training, or NCHW (each image turned channels-last in cache) for a distillation
 * student, whose every derivative is again one of the three.
 *
 * A direct convolution spends 36 multiply-adds per 2x2 output tile and channel pair; Winograd's
 * minimal filtering spends 16, on transformed tiles (Lavin & Gray, "Fast Algorithms for
 * Convolutional Neural Networks", CVPR 2016):
 *
 *   Y = A^T [ U (.) V ] A,   U = G g G^T (4x4 per output, input channel),
 *                            V = B^T d B (4x4 per tile and input channel; d its 4x4 window),
 *
 * where (.) sums over input channels position by position: 16 matrix products
 * M[xi] (tiles x O) = V[xi] (tiles x C) U[xi] (C x O). The adjoints are the same pieces:
 *
 *   grad_input   a forward convolution of the output gradient with the flipped, transposed
 *                weights wf[c, o, i, j] = w[o, c, 2 - i, 2 - j];
 *   grad_weight  dU[xi] (O x C) = sum over tiles of dM[xi]^T V[xi], dM = A dY A^T, and
 *                dg = G^T dU G (the forward's U = G g G^T, adjoint).
 *
 * The vector dimension is the channel (8 floats); a block of TB tiles is transformed, multiplied
 * and transformed back while it sits in cache. The products' register block is MR tiles x 2
 * vectors (12 accumulators + 2 weight vectors + 1 broadcast of the 16 AVX2 registers). Rounding
 * differs from a direct convolution's by a few units in the last place of the transformed
 * values (tests/test_ckernels.py checks 1e-5 relative). The weight gradient sums each image's
 * products in float and adds them into double totals in a fixed order: a result depends on
 * nothing but its inputs. Channels must be multiples of 16 and H, W even: the caller checks
 * (2 is returned otherwise). */
#include "_simd.h"

#define TB 24   /* tiles per block (measured 12-66 at 16x16 and 8x8: 18-24 best) */
#define MR 6    /* tiles (forward) or output channels (weight gradient) per register block */

static int wino_shapes_ok(i64 C, i64 O, i64 H, i64 W)
{
    return C > 0 && O > 0 && C % 16 == 0 && O % 16 == 0 && H % 2 == 0 && W % 2 == 0 && H > 0
           && W > 0;
}

/* U[xi][c][o] = (G g G^T)[xi], g = w[o][c] (3x3), or its flip transposed (w[c][o] flipped: the
 * input gradient's weights, w then being (C, O, 3, 3) in the layer's own (O_layer, C_layer)) */
static void wino_weights(float *U, const float *w, i64 C, i64 O, int flip)
{
    for (i64 o = 0; o < O; o++)
        for (i64 c = 0; c < C; c++) {
            float g[9];
            for (int k = 0; k < 9; k++) g[k] = flip ? w[(c * O + o) * 9 + 8 - k] : w[(o * C + c) * 9 + k];
            float t[4][3];   /* G g */
            for (int j = 0; j < 3; j++) {
                t[0][j] = g[j];
                t[1][j] = 0.5f * ((g[j] + g[3 + j]) + g[6 + j]);
                t[2][j] = 0.5f * ((g[j] - g[3 + j]) + g[6 + j]);
                t[3][j] = g[6 + j];
            }
            for (int i = 0; i < 4; i++) {   /* (G g) G^T */
                const float u[4] = {t[i][0], 0.5f * ((t[i][0] + t[i][1]) + t[i][2]),
                                    0.5f * ((t[i][0] - t[i][1]) + t[i][2]), t[i][2]};
                for (int j = 0; j < 4; j++) U[((i * 4 + j) * C + c) * O + o] = u[j];
            }
        }
}

/* an image's (C, HW) planes as (HW, C) rows and back: the NCHW layout of a distillation
 * student's activations (the loops work channels-last, one image at a time, in cache) */
static void to_rows(float *dst, const float *src, i64 C, i64 HW)
{
    for (i64 c = 0; c < C; c++)
        for (i64 q = 0; q < HW; q++) dst[q * C + c] = src[c * HW + q];
}

static void to_planes(float *dst, const float *src, i64 C, i64 HW)
{
    for (i64 q = 0; q < HW; q++)
        for (i64 c = 0; c < C; c++) dst[c * HW + q] = src[q * C + c];
}

/* V[xi][p][c] = (B^T d B)[xi] for the tiles t0 + p (p < nt) of the padded image xp */
static void wino_input(float *V, const float *xp, i64 t0, int nt, i64 C, i64 W)
{
    const i64 TW = W / 2;
    for (int p = 0; p < nt; p++) {
        const i64 t = t0 + p, th = t / TW, tw = t % TW;
        const float *base = xp + ((2 * th) * (W + 2) + 2 * tw) * C;
        for (i64 c = 0; c < C; c += 8) {
            v8 d[4][4], r[4][4];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) d[i][j] = ld8(base + (i * (W + 2) + j) * C + c);
            for (int j = 0; j < 4; j++) {   /* B^T d */
                r[0][j] = d[0][j] - d[2][j];
                r[1][j] = d[1][j] + d[2][j];
                r[2][j] = d[2][j] - d[1][j];
                r[3][j] = d[1][j] - d[3][j];
            }
            for (int i = 0; i < 4; i++) {   /* (B^T d) B */
                st8(V + ((i * 4 + 0) * TB + p) * C + c, r[i][0] - r[i][2]);
                st8(V + ((i * 4 + 1) * TB + p) * C + c, r[i][1] + r[i][2]);
                st8(V + ((i * 4 + 2) * TB + p) * C + c, r[i][2] - r[i][1]);
                st8(V + ((i * 4 + 3) * TB + p) * C + c, r[i][1] - r[i][3]);
            }
        }
    }
}

/* M[p][o] = sum_c V[p][c] U[c][o] for np tiles from p0 and 16 output channels from o0 (one xi) */
static inline __attribute__((always_inline)) void
wino_mm_block(const int np, float *M, const float *V, const float *U, int p0, i64 o0, i64 C,
              i64 O)
{
    v8 acc[MR][2];
    for (int p = 0; p < np; p++) acc[p][0] = acc[p][1] = bc8(0.0f);
    for (i64 c = 0; c < C; c++) {
        v8 u0 = ld8(U + c * O + o0), u1 = ld8(U + c * O + o0 + 8);
        PIN(u0);
        PIN(u1);
        for (int p = 0; p < np; p++) {
            const v8 v = bc8(V[(p0 + p) * C + c]);
            acc[p][0] += v * u0;
            acc[p][1] += v * u1;
        }
    }
    for (int p = 0; p < np; p++) {
        st8(M + (p0 + p) * O + o0, acc[p][0]);
        st8(M + (p0 + p) * O + o0 + 8, acc[p][1]);
    }
}

static void wino_mm(float *M, const float *V, const float *U, int nt, i64 C, i64 O)
{
    for (int xi = 0; xi < 16; xi++) {
        const float *Vx = V + xi * TB * C, *Ux = U + xi * C * O;
        float *Mx = M + xi * TB * O;
        for (i64 o0 = 0; o0 < O; o0 += 16) {
            int p0 = 0;
            for (; p0 + MR <= nt; p0 += MR) wino_mm_block(MR, Mx, Vx, Ux, p0, o0, C, O);
            for (; p0 < nt; p0++) wino_mm_block(1, Mx, Vx, Ux, p0, o0, C, O);
        }
    }
}

/* y's 2x2 outputs of the tiles t0 + p: A^T M A, plus the bias b (unless NULL) */
static void wino_output(float *y, const float *M, const float *b, i64 t0, int nt, i64 O, i64 W)
{
    const i64 TW = W / 2;
    for (int p = 0; p < nt; p++) {
        const i64 t = t0 + p, th = t / TW, tw = t % TW;
        float *out = y + ((2 * th) * W + 2 * tw) * O;
        for (i64 o = 0; o < O; o += 8) {
            v8 m[4][4], r[2][4];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) m[i][j] = ld8(M + ((i * 4 + j) * TB + p) * O + o);
            for (int j = 0; j < 4; j++) {   /* A^T M */
                r[0][j] = (m[0][j] + m[1][j]) + m[2][j];
                r[1][j] = (m[1][j] - m[2][j]) - m[3][j];
            }
            const v8 bv = b ? ld8(b + o) : bc8(0.0f);
            for (int i = 0; i < 2; i++) {   /* (A^T M) A */
                st8(out + (i * W + 0) * O + o, bv + ((r[i][0] + r[i][1]) + r[i][2]));
                st8(out + (i * W + 1) * O + o, bv + ((r[i][1] - r[i][2]) - r[i][3]));
            }
        }
    }
}

/* the forward loops over images and blocks of tiles, given U; x and y channels-last, or NCHW
 * (nchw: each image is turned into rows and its output back into planes) */
static int wino_run(i64 N, i64 C, i64 O, i64 H, i64 W, const float *x, const float *U,
                    const float *b, float *y, int nchw)
{
    const i64 T = (H / 2) * (W / 2), HW = H * W;
    float *xp = alloc_floats((H + 2) * (W + 2) * C), *V = alloc_floats(16 * TB * C),
          *M = alloc_floats(16 * TB * O);
    float *xr = nchw ? alloc_floats(HW * C) : NULL, *yr = nchw ? alloc_floats(HW * O) : NULL;
    int code = 0;
    if (!xp || !V || !M || (nchw && (!xr || !yr))) {
        code = 1;
        goto done;
    }
    for (i64 n = 0; n < N; n++) {
        const float *xn = x + n * HW * C;
        float *yn = nchw ? yr : y + n * HW * O;
        if (nchw) {
            to_rows(xr, xn, C, HW);
            xn = xr;
        }
        pad_image_cl(xp, xn, C, H, W);
        for (i64 t0 = 0; t0 < T; t0 += TB) {
            const int nt = (int)(T - t0 < TB ? T - t0 : TB);
            wino_input(V, xp, t0, nt, C, W);
            wino_mm(M, V, U, nt, C, O);
            wino_output(yn, M, b, t0, nt, O, W);
        }
        if (nchw) to_planes(y + n * HW * O, yr, O, HW);
    }
done:
    free(xp);
    free(V);
    free(M);
    free(xr);
    free(yr);
    return code;
}

/* y (N, H, W, O) = conv(x (N, H, W, C), w (O, C, 3, 3)) + b (O) or no bias (b NULL); with
 * nchw, x (N, C, H, W) and y (N, O, H, W) */
int ddb_wino_forward(i64 N, i64 C, i64 O, i64 H, i64 W, const float *x, const float *w,
                     const float *b, float *y, int nchw)
{
    if (!wino_shapes_ok(C, O, H, W)) return 2;
    float *U = alloc_floats(16 * C * O);
    if (!U) return 1;
    wino_weights(U, w, C, O, 0);
    const int code = wino_run(N, C, O, H, W, x, U, b, y, nchw);
    free(U);
    return code;
}

/* gx (N, H, W, C) from g (N, H, W, O) and w (O, C, 3, 3) (NCHW with nchw): the forward on g
 * with the weights flipped and transposed */
int ddb_wino_grad_input(i64 N, i64 C, i64 O, i64 H, i64 W, const float *g, const float *w,
                        float *gx, int nchw)
{
    if (!wino_shapes_ok(C, O, H, W)) return 2;
    float *U = alloc_floats(16 * O * C);
    if (!U) return 1;
    wino_weights(U, w, O, C, 1);   /* a convolution from O channels to C */
    const int code = wino_run(N, O, C, H, W, g, U, NULL, gx, nchw);
    free(U);
    return code;
}

/* dM[xi][p][o] = (A dY A^T)[xi] for the tiles t0 + p: dY the 2x2 output gradient of a tile */
static void wino_grad_output(float *dM, const float *g, i64 t0, int nt, i64 O, i64 W)
{
    const i64 TW = W / 2;
    for (int p = 0; p < nt; p++) {
        const i64 t = t0 + p, th = t / TW, tw = t % TW;
        const float *gy = g + ((2 * th) * W + 2 * tw) * O;
        for (i64 o = 0; o < O; o += 8) {
            const v8 y00 = ld8(gy + o), y01 = ld8(gy + O + o), y10 = ld8(gy + W * O + o),
                     y11 = ld8(gy + (W + 1) * O + o);
            /* A dY: rows (y0, y0 + y1, y0 - y1, -y1) of the 2-row dY; then the columns alike */
            const v8 r[4][2] = {{y00, y01}, {y00 + y10, y01 + y11}, {y00 - y10, y01 - y11},
                                {-y10, -y11}};
            for (int i = 0; i < 4; i++) {
                st8(dM + ((i * 4 + 0) * TB + p) * O + o, r[i][0]);
                st8(dM + ((i * 4 + 1) * TB + p) * O + o, r[i][0] + r[i][1]);
                st8(dM + ((i * 4 + 2) * TB + p) * O + o, r[i][0] - r[i][1]);
                st8(dM + ((i * 4 + 3) * TB + p) * O + o, -r[i][1]);
            }
        }
    }
}

/* dU[o][c] += sum_p dM[p][o] V[p][c] for MR (or nr) output channels from o0 and 16 input
 * channels from c0, over nt tiles (one xi) */
static inline __attribute__((always_inline)) void
wino_mmt_block(const int nr, float *dU, const float *dM, const float *V, int nt, i64 o0, i64 c0,
               i64 C, i64 O)
{
    v8 acc[MR][2];
    for (int r = 0; r < nr; r++) {
        acc[r][0] = ld8(dU + (o0 + r) * C + c0);
        acc[r][1] = ld8(dU + (o0 + r) * C + c0 + 8);
    }
    for (int p = 0; p < nt; p++) {
        v8 v0 = ld8(V + p * C + c0), v1 = ld8(V + p * C + c0 + 8);
        PIN(v0);
        PIN(v1);
        for (int r = 0; r < nr; r++) {
            const v8 m = bc8(dM[p * O + o0 + r]);
            acc[r][0] += m * v0;
            acc[r][1] += m * v1;
        }
    }
    for (int r = 0; r < nr; r++) {
        st8(dU + (o0 + r) * C + c0, acc[r][0]);
        st8(dU + (o0 + r) * C + c0 + 8, acc[r][1]);
    }
}

/* gw (O, C, 3, 3) and gb (O) (unless NULL) from x (N, H, W, C) and g (N, H, W, O) (NCHW with
 * nchw) */
int ddb_wino_grad_weight(i64 N, i64 C, i64 O, i64 H, i64 W, const float *x, const float *g,
                         float *gw, float *gb, int nchw)
{
    if (!wino_shapes_ok(C, O, H, W)) return 2;
    const i64 T = (H / 2) * (W / 2), HW = H * W;
    float *xp = alloc_floats((H + 2) * (W + 2) * C), *V = alloc_floats(16 * TB * C),
          *dM = alloc_floats(16 * TB * O), *dU = alloc_floats(16 * O * C);
    float *xr = nchw ? alloc_floats(HW * C) : NULL, *gr = nchw ? alloc_floats(HW * O) : NULL;
    double *tot = (double *)calloc((size_t)(16 * O * C + O), sizeof(double));
    int code = 0;
    if (!xp || !V || !dM || !dU || !tot || (nchw && (!xr || !gr))) {
        code = 1;
        goto done;
    }
    double *btot = tot + 16 * O * C;
    for (i64 n = 0; n < N; n++) {
        const float *gn = g + n * HW * O, *xn = x + n * HW * C;
        if (nchw) {
            to_rows(xr, xn, C, HW);
            to_rows(gr, gn, O, HW);
            xn = xr;
            gn = gr;
        }
        pad_image_cl(xp, xn, C, H, W);
        memset(dU, 0, sizeof(float) * (size_t)(16 * O * C));
        for (i64 t0 = 0; t0 < T; t0 += TB) {
            const int nt = (int)(T - t0 < TB ? T - t0 : TB);
            wino_input(V, xp, t0, nt, C, W);
            wino_grad_output(dM, gn, t0, nt, O, W);
            for (int xi = 0; xi < 16; xi++) {
                const float *Vx = V + xi * TB * C, *dMx = dM + xi * TB * O;
                float *dUx = dU + xi * O * C;
                for (i64 c0 = 0; c0 < C; c0 += 16) {
                    i64 o0 = 0;
                    for (; o0 + MR <= O; o0 += MR) wino_mmt_block(MR, dUx, dMx, Vx, nt, o0, c0, C, O);
                    for (; o0 < O; o0++) wino_mmt_block(1, dUx, dMx, Vx, nt, o0, c0, C, O);
                }
            }
        }
        for (i64 k = 0; k < 16 * O * C; k++) tot[k] += (double)dU[k];
        if (gb) add_channel_sums_cl(btot, gn, HW, O);
    }
    for (i64 o = 0; o < O; o++)   /* dg = G^T dU G, per (o, c) */
        for (i64 c = 0; c < C; c++) {
            double u[4][4], t[3][4];
            for (int xi = 0; xi < 16; xi++) u[xi / 4][xi % 4] = tot[(xi * O + o) * C + c];
            for (int j = 0; j < 4; j++) {   /* G^T dU: rows (u0 + (u1 + u2)/2, (u1 - u2)/2, ...) */
                t[0][j] = u[0][j] + 0.5 * (u[1][j] + u[2][j]);
                t[1][j] = 0.5 * (u[1][j] - u[2][j]);
                t[2][j] = 0.5 * (u[1][j] + u[2][j]) + u[3][j];
            }
            float *out = gw + (o * C + c) * 9;
            for (int i = 0; i < 3; i++) {   /* (G^T dU) G */
                out[i * 3 + 0] = (float)(t[i][0] + 0.5 * (t[i][1] + t[i][2]));
                out[i * 3 + 1] = (float)(0.5 * (t[i][1] - t[i][2]));
                out[i * 3 + 2] = (float)(0.5 * (t[i][1] + t[i][2]) + t[i][3]);
            }
        }
    if (gb)
        for (i64 o = 0; o < O; o++) gb[o] = (float)btot[o];
done:
    free(xp);
    free(V);
    free(dM);
    free(dU);
    free(xr);
    free(gr);
    free(tot);
    return code;
}
