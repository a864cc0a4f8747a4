/* One ConvNet block's tail, pool2(relu(norm(z))), and its first and second derivatives, as
 * three single-threaded CPU loops over (N, C, H, W) float32 planes (ddbook.ckernels builds this
 * file with the system C compiler and calls it through ctypes; ddbook.fused holds the same
 * maths as torch ops, the reference these loops are tested against).
 *
 * norm: batch norm on the batch's statistics (batch = 1: one group per channel, over N*H*W
 * values) or instance norm (batch = 0: one group per (sample, channel), over H*W values), with a
 * per-channel affine (weight, bias). pool2: the mean of each 2x2 block (H and W even). The mask
 * is the 1-byte (y > 0) of the normalised values, saved by the forward.
 *
 * Sums are taken per plane in double and combined per group in a fixed order, so a result does
 * not depend on anything but its inputs. Each kernel reads its inputs two or three times
 * (statistics, then the output); the torch ops make some fifteen full-size passes. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;

/* gy = unpool(grad) * mask on one plane: each pooled value times 1/4 on its 2x2 block */
static void unpool_mask(float *gy, const float *g, const uint8_t *m, i64 H, i64 W)
{
    const i64 W2 = W / 2;
    for (i64 h2 = 0; h2 < H / 2; h2++) {
        float *r0 = gy + 2 * h2 * W, *r1 = r0 + W;
        const float *gr = g + h2 * W2;
        for (i64 w2 = 0; w2 < W2; w2++) {
            const float v = gr[w2] * 0.25f;
            r0[2 * w2] = v; r0[2 * w2 + 1] = v;
        }
        memcpy(r1, r0, sizeof(float) * (size_t)W);
    }
    const i64 HW = H * W;
#pragma omp simd
    for (i64 i = 0; i < HW; i++) gy[i] *= (float)m[i];
}

/* out (H/2, W/2) = 2x2 means of p (H, W): (a00 + a10) + (a01 + a11), then * 1/4 (as fused._pool2) */
static void pool_plane(float *out, const float *p, float *rows, i64 H, i64 W)
{
    const i64 W2 = W / 2;
    for (i64 h2 = 0; h2 < H / 2; h2++) {
        const float *r0 = p + 2 * h2 * W, *r1 = r0 + W;
#pragma omp simd
        for (i64 w = 0; w < W; w++) rows[w] = r0[w] + r1[w];
        float *o = out + h2 * W2;
        for (i64 w2 = 0; w2 < W2; w2++) o[w2] = (rows[2 * w2] + rows[2 * w2 + 1]) * 0.25f;
    }
}

static i64 group_of(i64 n, i64 c, i64 C, int batch) { return batch ? c : n * C + c; }

/* forward: out (N, C, H/2, W/2), mean and rstd (G), mask (N, C, H, W) */
int ddb_tail_forward(i64 N, i64 C, i64 H, i64 W, int batch, const float *z, const float *weight,
                     const float *bias, double eps, float *out, float *mean, float *rstd,
                     uint8_t *mask)
{
    const i64 HW = H * W, G = batch ? C : N * C;
    const double S = batch ? (double)(N * HW) : (double)HW;
    double *part = malloc(sizeof(double) * (size_t)(N * C));
    double *gm = malloc(sizeof(double) * (size_t)G);
    float *y = malloc(sizeof(float) * (size_t)(HW + W));
    if (!part || !gm || !y) { free(part); free(gm); free(y); return 1; }
    /* mean, then the centred second moment (two passes, as the native kernels) */
    for (i64 p = 0; p < N * C; p++) {
        const float *x = z + p * HW;
        double s = 0;
#pragma omp simd reduction(+:s)
        for (i64 i = 0; i < HW; i++) s += x[i];
        part[p] = s;
    }
    for (i64 g = 0; g < G; g++) gm[g] = 0;
    for (i64 n = 0; n < N; n++) for (i64 c = 0; c < C; c++) gm[group_of(n, c, C, batch)] += part[n * C + c];
    for (i64 g = 0; g < G; g++) gm[g] /= S;
    for (i64 n = 0; n < N; n++) for (i64 c = 0; c < C; c++) {
        const float *x = z + (n * C + c) * HW;
        const double mu = gm[group_of(n, c, C, batch)];
        double s = 0;
#pragma omp simd reduction(+:s)
        for (i64 i = 0; i < HW; i++) { const double d = x[i] - mu; s += d * d; }
        part[n * C + c] = s;
    }
    double *gv = calloc((size_t)G, sizeof(double));
    if (!gv) { free(part); free(gm); free(y); return 1; }
    for (i64 n = 0; n < N; n++) for (i64 c = 0; c < C; c++) gv[group_of(n, c, C, batch)] += part[n * C + c];
    for (i64 g = 0; g < G; g++) {
        mean[g] = (float)gm[g];
        rstd[g] = (float)(1.0 / sqrt(gv[g] / S + eps));
    }
    for (i64 n = 0; n < N; n++) for (i64 c = 0; c < C; c++) {
        const i64 p = n * C + c, g = group_of(n, c, C, batch);
        const float sc = rstd[g] * weight[c], sh = bias[c] - mean[g] * sc;
        const float *x = z + p * HW;
        uint8_t *m = mask + p * HW;
#pragma omp simd
        for (i64 i = 0; i < HW; i++) {
            const float v = x[i] * sc + sh;
            m[i] = v > 0.0f;
            y[i] = v > 0.0f ? v : 0.0f;
        }
        pool_plane(out + p * (HW / 4), y, y + HW, H, W);
    }
    free(part); free(gm); free(gv); free(y);
    return 0;
}

/* first derivative: from the pooled gradient, (g_z, g_weight, g_bias) */
int ddb_tail_backward(i64 N, i64 C, i64 H, i64 W, int batch, const float *grad, const float *z,
                      const float *weight, const float *mean, const float *rstd,
                      const uint8_t *mask, float *g_z, float *g_w, float *g_b)
{
    const i64 HW = H * W, G = batch ? C : N * C;
    const double S = batch ? (double)(N * HW) : (double)HW;
    double *acc = calloc((size_t)G * 2, sizeof(double));      /* sum gy, sum gy x */
    float *gy = malloc(sizeof(float) * (size_t)HW);
    if (!acc || !gy) { free(acc); free(gy); return 1; }
    for (i64 n = 0; n < N; n++) for (i64 c = 0; c < C; c++) {
        const i64 p = n * C + c;
        const float *x = z + p * HW;
        unpool_mask(gy, grad + p * (HW / 4), mask + p * HW, H, W);
        double sg = 0, sgx = 0;
#pragma omp simd reduction(+:sg, sgx)
        for (i64 i = 0; i < HW; i++) { sg += gy[i]; sgx += (double)gy[i] * x[i]; }
        double *a = acc + 2 * group_of(n, c, C, batch);
        a[0] += sg; a[1] += sgx;
    }
    for (i64 c = 0; c < C; c++) { g_w[c] = 0; g_b[c] = 0; }
    double *k = malloc(sizeof(double) * (size_t)G * 3);
    if (!k) { free(acc); free(gy); return 1; }
    double *gw = calloc((size_t)C * 2, sizeof(double));
    if (!gw) { free(acc); free(gy); free(k); return 1; }
    for (i64 g = 0; g < G; g++) {
        const i64 c = batch ? g : g % C;
        const double mu = mean[g], r = rstd[g], w = weight[c];
        const double sg = acc[2 * g], gxh = r * (acc[2 * g + 1] - mu * sg);   /* sum gy xh */
        gw[2 * c] += gxh; gw[2 * c + 1] += sg;
        /* gx = w r (gy - sg/S - xh gxh/S) = gy kg + x kx + k0 */
        k[3 * g] = w * r;
        k[3 * g + 1] = -w * r * r * gxh / S;
        k[3 * g + 2] = -w * r * sg / S + w * r * r * mu * gxh / S;
    }
    for (i64 c = 0; c < C; c++) { g_w[c] = (float)gw[2 * c]; g_b[c] = (float)gw[2 * c + 1]; }
    for (i64 n = 0; n < N; n++) for (i64 c = 0; c < C; c++) {
        const i64 p = n * C + c, g = group_of(n, c, C, batch);
        const float kg = (float)k[3 * g], kx = (float)k[3 * g + 1], k0 = (float)k[3 * g + 2];
        const float *x = z + p * HW;
        float *o = g_z + p * HW;
        unpool_mask(gy, grad + p * (HW / 4), mask + p * HW, H, W);
#pragma omp simd
        for (i64 i = 0; i < HW; i++) o[i] = gy[i] * kg + x[i] * kx + k0;
    }
    free(acc); free(gy); free(k); free(gw);
    return 0;
}

/* second derivative: the gradients wrt (grad, z, weight) of
 * <a_z, g_z> + <a_w, g_weight> + <a_b, g_bias>; a_z, a_w, a_b may be NULL (zero).
 * The formulas are fused._norm_double_backward's, with g_grad = pool2(g_gy * mask). */
int ddb_tail_double_backward(i64 N, i64 C, i64 H, i64 W, int batch, const float *grad,
                             const float *z, const float *weight, const float *mean,
                             const float *rstd, const uint8_t *mask, const float *a_z,
                             const float *a_w, const float *a_b, float *g_grad, float *g_z,
                             float *g_w)
{
    const i64 HW = H * W, G = batch ? C : N * C;
    const double S = batch ? (double)(N * HW) : (double)HW;
    double *acc = calloc((size_t)G * 5, sizeof(double));   /* sg, sgx, sa, sax, sag */
    double *k = malloc(sizeof(double) * (size_t)G * 7);
    double *gw = calloc((size_t)C, sizeof(double));
    float *gy = malloc(sizeof(float) * (size_t)(2 * HW + W));
    if (!acc || !k || !gw || !gy) { free(acc); free(k); free(gw); free(gy); return 1; }
    float *t = gy + HW, *rows = gy + 2 * HW;
    for (i64 n = 0; n < N; n++) for (i64 c = 0; c < C; c++) {
        const i64 p = n * C + c;
        const float *x = z + p * HW;
        unpool_mask(gy, grad + p * (HW / 4), mask + p * HW, H, W);
        double sg = 0, sgx = 0, sa = 0, sax = 0, sag = 0;
#pragma omp simd reduction(+:sg, sgx)
        for (i64 i = 0; i < HW; i++) { sg += gy[i]; sgx += (double)gy[i] * x[i]; }
        if (a_z) {
            const float *a = a_z + p * HW;
#pragma omp simd reduction(+:sa, sax, sag)
            for (i64 i = 0; i < HW; i++) {
                sa += a[i]; sax += (double)a[i] * x[i]; sag += (double)a[i] * gy[i];
            }
        }
        double *q = acc + 5 * group_of(n, c, C, batch);
        q[0] += sg; q[1] += sgx; q[2] += sa; q[3] += sax; q[4] += sag;
    }
    for (i64 g = 0; g < G; g++) {
        const i64 c = batch ? g : g % C;
        const double *q = acc + 5 * g;
        const double mu = mean[g], r = rstd[g], gam = weight[c];
        const double aw = a_w ? a_w[c] : 0.0, ab = a_b ? a_b[c] : 0.0;
        const double sg = q[0], gy_bar = sg / S, gy_xh = r * (q[1] - mu * sg) / S;
        const double sa = q[2], a_xh = r * (q[3] - mu * sa), a_gy = q[4];
        const double inner = a_gy - sa * gy_bar - a_xh * gy_xh;           /* <A, P(gy)> */
        const double cx = (aw - gam * r * a_xh / S) * r;
        const double c1 = -r * gam * gy_xh, c2 = aw - r * gam * a_xh / S;
        const double k3 = -(r * (c1 * a_xh / S + c2 * gy_xh) + r * r * gam * inner / S);
        const double k4 = -r * (c1 * sa / S + c2 * gy_bar);
        double *K = k + 7 * g;
        K[0] = k3 * r; K[1] = k4 - k3 * r * mu; K[2] = r * c2; K[3] = r * c1;  /* g_z */
        K[4] = cx; K[5] = ab - gam * r * sa / S - cx * mu; K[6] = gam * r;      /* g_gy */
        gw[c] += r * inner;
    }
    for (i64 c = 0; c < C; c++) g_w[c] = (float)gw[c];
    for (i64 n = 0; n < N; n++) for (i64 c = 0; c < C; c++) {
        const i64 p = n * C + c;
        const double *K = k + 7 * group_of(n, c, C, batch);
        const float kx = (float)K[0], k0 = (float)K[1], kg = (float)K[2], ka = (float)K[3];
        const float cx = (float)K[4], e0 = (float)K[5], ea = (float)K[6];
        const float *x = z + p * HW;
        const uint8_t *m = mask + p * HW;
        float *o = g_z + p * HW;
        unpool_mask(gy, grad + p * (HW / 4), m, H, W);
        if (a_z) {
            const float *a = a_z + p * HW;
#pragma omp simd
            for (i64 i = 0; i < HW; i++) {
                o[i] = x[i] * kx + k0 + gy[i] * kg + a[i] * ka;
                t[i] = (x[i] * cx + e0 + a[i] * ea) * (float)m[i];
            }
        } else {
#pragma omp simd
            for (i64 i = 0; i < HW; i++) {
                o[i] = x[i] * kx + k0 + gy[i] * kg;
                t[i] = (x[i] * cx + e0) * (float)m[i];
            }
        }
        pool_plane(g_grad + p * (HW / 4), t, rows, H, W);
    }
    free(acc); free(k); free(gw); free(gy);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Channels-last (N, H, W, C) batch norm on the batch's statistics -> ReLU -> 2x2 mean pool, and
 * its first derivative: the block tail of a ConvNet-BN network trained on the CPU (experts,
 * evaluation, the sweeps), where ddbook.networks keeps activations channels-last. Per-channel
 * sums run over the pixels in order, in float within one image row, then in double; the inner loops run over the C channels of one
 * pixel (contiguous), four pixels (one 2x2 block) at a time. */

/* out (N, H/2, W/2, C); mean, var (biased) and rstd (C); mask (N, H, W, C) */
int ddb_bn_cl_forward(i64 N, i64 C, i64 H, i64 W, const float *x, const float *weight,
                      const float *bias, double eps, float *out, float *mean, float *var,
                      float *rstd, uint8_t *mask)
{
    const i64 P = N * H * W, W2 = W / 2;
    double *s = calloc((size_t)C * 2, sizeof(double));
    float *k = malloc(sizeof(float) * (size_t)C * 2);
    if (!s || !k) { free(s); free(k); return 1; }
    double *s2 = s + C;
    float *sc = k, *sh = k + C;
    /* one pass: sums of x - x_0 and of its square, shifted by the first pixel's values (in
     * double, the shift keeps the variance free of cancellation) */
    for (i64 c = 0; c < C; c++) sh[c] = x[c];
    float *f = malloc(sizeof(float) * (size_t)C * 2);   /* one image row's sums, in float */
    if (!f) { free(s); free(k); return 1; }
    for (i64 row = 0; row < N * H; row++) {
        for (i64 c = 0; c < 2 * C; c++) f[c] = 0.0f;
        for (i64 w = 0; w < W; w++) {
            const float *r = x + (row * W + w) * C;
#pragma omp simd
            for (i64 c = 0; c < C; c++) { const float d = r[c] - sh[c]; f[c] += d; f[C + c] += d * d; }
        }
#pragma omp simd
        for (i64 c = 0; c < C; c++) { s[c] += f[c]; s2[c] += f[C + c]; }
    }
    free(f);
    for (i64 c = 0; c < C; c++) {
        const double m = s[c] / (double)P;
        s2[c] = s2[c] - m * s[c];          /* centred sum of squares */
        s[c] = m + sh[c];                  /* the mean */
    }
    for (i64 c = 0; c < C; c++) {
        const double v = s2[c] / (double)P;
        mean[c] = (float)s[c]; var[c] = (float)v; rstd[c] = (float)(1.0 / sqrt(v + eps));
        sc[c] = rstd[c] * weight[c]; sh[c] = bias[c] - mean[c] * sc[c];
    }
    for (i64 n = 0; n < N; n++) for (i64 h2 = 0; h2 < H / 2; h2++) for (i64 w2 = 0; w2 < W2; w2++) {
        const i64 p00 = (n * H + 2 * h2) * W + 2 * w2, p01 = p00 + 1, p10 = p00 + W, p11 = p10 + 1;
        const float *a = x + p00 * C, *b = x + p01 * C, *d = x + p10 * C, *e = x + p11 * C;
        uint8_t *ma = mask + p00 * C, *mb = mask + p01 * C, *md = mask + p10 * C, *me = mask + p11 * C;
        float *o = out + ((n * (H / 2) + h2) * W2 + w2) * C;
#pragma omp simd
        for (i64 c = 0; c < C; c++) {
            const float va = a[c] * sc[c] + sh[c], vb = b[c] * sc[c] + sh[c];
            const float vd = d[c] * sc[c] + sh[c], ve = e[c] * sc[c] + sh[c];
            ma[c] = va > 0.0f; mb[c] = vb > 0.0f; md[c] = vd > 0.0f; me[c] = ve > 0.0f;
            const float ra = va > 0.0f ? va : 0.0f, rb = vb > 0.0f ? vb : 0.0f;
            const float rd = vd > 0.0f ? vd : 0.0f, re = ve > 0.0f ? ve : 0.0f;
            o[c] = ((ra + rb) + (rd + re)) * 0.25f;
        }
    }
    free(s); free(k);
    return 0;
}

/* (g_x, g_weight, g_bias) from the pooled gradient (N, H/2, W/2, C) */
int ddb_bn_cl_backward(i64 N, i64 C, i64 H, i64 W, const float *grad, const float *x,
                       const float *weight, const float *mean, const float *rstd,
                       const uint8_t *mask, float *g_x, float *g_w, float *g_b)
{
    const i64 P = N * H * W, W2 = W / 2;
    double *s = calloc((size_t)C * 2, sizeof(double));
    float *k = malloc(sizeof(float) * (size_t)C * 3);
    if (!s || !k) { free(s); free(k); return 1; }
    double *sx = s + C;
    float *f = calloc((size_t)C * 2, sizeof(float));   /* one row of blocks' sums, in float */
    if (!f) { free(s); free(k); return 1; }
    for (i64 n = 0; n < N; n++) for (i64 h2 = 0; h2 < H / 2; h2++) for (i64 w2 = 0; w2 < W2; w2++) {
        const i64 p00 = (n * H + 2 * h2) * W + 2 * w2, p10 = p00 + W;
        const float *g = grad + ((n * (H / 2) + h2) * W2 + w2) * C;
        const float *a = x + p00 * C, *b = a + C, *d = x + p10 * C, *e = d + C;
        const uint8_t *ma = mask + p00 * C, *mb = ma + C, *md = mask + p10 * C, *me = md + C;
#pragma omp simd
        for (i64 c = 0; c < C; c++) {
            const float q = g[c] * 0.25f;
            const float ga = q * (float)ma[c], gb = q * (float)mb[c];
            const float gd = q * (float)md[c], ge = q * (float)me[c];
            f[c] += (ga + gb) + (gd + ge);
            f[C + c] += (ga * a[c] + gb * b[c]) + (gd * d[c] + ge * e[c]);
        }
        if (w2 == W2 - 1) {   /* a row of blocks done: into the double sums */
#pragma omp simd
            for (i64 c = 0; c < C; c++) { s[c] += f[c]; sx[c] += f[C + c]; f[c] = 0.0f; f[C + c] = 0.0f; }
        }
    }
    free(f);
    for (i64 c = 0; c < C; c++) {
        const double mu = mean[c], r = rstd[c], w = weight[c], S = (double)P;
        const double gxh = r * (sx[c] - mu * s[c]);                  /* sum gy xh */
        g_w[c] = (float)gxh; g_b[c] = (float)s[c];
        k[c] = (float)(w * r);
        k[C + c] = (float)(-w * r * r * gxh / S);
        k[2 * C + c] = (float)(-w * r * s[c] / S + w * r * r * mu * gxh / S);
    }
    const float *kg = k, *kx = k + C, *k0 = k + 2 * C;
    for (i64 n = 0; n < N; n++) for (i64 h2 = 0; h2 < H / 2; h2++) for (i64 w2 = 0; w2 < W2; w2++) {
        const i64 p00 = (n * H + 2 * h2) * W + 2 * w2, p10 = p00 + W;
        const float *g = grad + ((n * (H / 2) + h2) * W2 + w2) * C;
        const float *a = x + p00 * C, *b = a + C, *d = x + p10 * C, *e = d + C;
        const uint8_t *ma = mask + p00 * C, *mb = ma + C, *md = mask + p10 * C, *me = md + C;
        float *oa = g_x + p00 * C, *ob = oa + C, *od = g_x + p10 * C, *oe = od + C;
#pragma omp simd
        for (i64 c = 0; c < C; c++) {
            const float q = g[c] * 0.25f;
            oa[c] = (q * (float)ma[c]) * kg[c] + a[c] * kx[c] + k0[c];
            ob[c] = (q * (float)mb[c]) * kg[c] + b[c] * kx[c] + k0[c];
            od[c] = (q * (float)md[c]) * kg[c] + d[c] * kx[c] + k0[c];
            oe[c] = (q * (float)me[c]) * kg[c] + e[c] * kx[c] + k0[c];
        }
    }
    free(s); free(k);
    return 0;
}
