/* Vectorised exp and row loops of softmaxc (the lowest layer: plain inline C).
 *
 * One build runs on any x86-64.  Each row loop exists twice: an AVX2+FMA version (compiled
 * with __attribute__((target("avx2,fma"))), 4 doubles a vector) and a portable scalar
 * version.  The path is chosen at run time, once per module import
 * (softmax_simd_init): AVX2 when the CPU has AVX2 and FMA, unless the environment variable
 * SOFTMAXC_SIMD=0 forces the portable path.  Each row function tests that choice once per
 * call (a block of up to PAIRWISE_BLOCK terms or a whole row), never per element.
 *
 * exp.  Both paths compute exp(w) for a double w the same way: Cody-Waite reduction
 * w = k ln2 + r, |r| <= ln2/2 (ln2 split in two parts), a polynomial for exp(r), and a
 * scaling by 2^k built from the exponent bits; arguments beyond the range are clamped (NaN
 * passes through the clamps), so overflow gives +inf, underflow 0 or a correctly scaled
 * subnormal (two scaling steps).  Measured by scripts/validate_exp.py:
 *   - float64 kernels: a fitted degree-11 polynomial (approximation error below 0.26
 *     ULP), <= 1.02 ULP (AVX2) / 1.29 ULP (portable) over a dense sample of the range;
 *   - float32 kernels with beta != 1, and the portable path: the same in double from the
 *     exact double difference of the float32 inputs, Taylor degree 7 (0.09 ULP of float32),
 *     rounded once to float32: <= 0.59 ULP over every float32;
 *   - float32 kernels with beta == 1 on the AVX2 path: 8 float lanes, the shifted logit
 *     carried exactly as hi + lo (TwoSum), a degree-6 polynomial in float: <= 0.91 ULP over
 *     every float32 (softmax takes the rounded difference: see SMX_TERMS_PROBABILITY).
 *
 * Sums.  The row sums are accumulated in double in 8 fixed lanes (element i of a block goes
 * to lane (i - start) % 8, the lanes are added in a fixed tree), so a result depends only on
 * the row, never on the thread count.  The portable path uses 4 lanes, as before.  The two
 * paths agree within the accuracy bounds, not bitwise.
 *
 * Never compiled with -ffast-math; setup.py adds -ffp-contract=off, so a product is fused
 * with an addition only where an fma is written.
 */
#ifndef SOFTMAXC_SIMD_H
#define SOFTMAXC_SIMD_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define SOFTMAXC_HAVE_AVX2 1
#include <immintrin.h>
#define SMX_AVX2 __attribute__((target("avx2,fma")))
#define SMX_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline
#else
#define SOFTMAXC_HAVE_AVX2 0
#endif

/* Leaves of the pairwise sums (see _rowops.pxd): the order of additions depends on n only.
 * A leaf is summed in 8 double lanes, each lane sequentially.  Results in double need short
 * leaves (16 terms a lane: the lanes' error stays far below the 2-ULP bounds of float64);
 * float32 terms summed for a float32 result can take long ones (128 terms a lane: a
 * relative error below 2^-46, invisible at 2^-24), which saves the per-leaf calls. */
#define SOFTMAXC_PAIRWISE_BLOCK 128
#define SOFTMAXC_PAIRWISE_BLOCK_FLOAT32 1024

/* What the float32 terms exp(w_i) are for: the accuracy smx_sum_exp_f32 gives them. */
enum {
    /* log_softmax, logsumexp, cross-entropy: exp of the exact beta (x_i - x_ref), to float32
     * accuracy.  A rounded difference would cost the sum a relative error of up to |w_i| / 2
     * ULP, which log1p(sum) passes on in full when the reference entry dominates. */
    SMX_TERMS_LOG = 0,
    /* softmax: exp of the rounded difference x_i - x_ref (beta == 1).  Its relative error,
     * up to |w_i| / 2 ULP, lies within the softmax bound of 1 ULP per unit of |w_i|; the sum
     * it gives is off by at most its weighted mean of |w_i| / 2 ULP, which is below
     * ln(n) / 2 (the entropy of p), inside the bound's log2(n) term.  Saves the TwoSum. */
    SMX_TERMS_PROBABILITY = 1,
};

/* Below this |beta| the shifted logit needs the overflow-safe form (smx_shifted_logit): the
 * vector loops, which use beta * (x - x_ref) directly, are correct only above it. */
#define SMX_MIN_VECTOR_BETA 1e-300

enum { SMX_PATH_PORTABLE = 0, SMX_PATH_AVX2 = 1 };

/* The active path of this module (each extension module includes this header once). */
static int smx_active_path = SMX_PATH_PORTABLE;

static inline int smx_cpu_has_avx2_fma(void) {
#if SOFTMAXC_HAVE_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* Choose the path: AVX2 when available unless SOFTMAXC_SIMD=0.  Returns the path. */
static inline int smx_simd_init(void) {
    const char* env = getenv("SOFTMAXC_SIMD");
    int allowed = !(env != NULL && strcmp(env, "0") == 0);
    smx_active_path = (allowed && smx_cpu_has_avx2_fma()) ? SMX_PATH_AVX2 : SMX_PATH_PORTABLE;
    return smx_active_path;
}

static inline Py_ssize_t smx_pairwise_split_blocks(Py_ssize_t start, Py_ssize_t stop,
                                                   Py_ssize_t block) {
    /* Where a pairwise sum over [start, stop) (longer than one block) splits: the largest
     * block-aligned point at or before the middle, at least one block in. */
    Py_ssize_t half = start + ((stop - start) / (2 * block)) * block;
    return half == start ? start + block : half;
}

static inline Py_ssize_t smx_pairwise_split(Py_ssize_t start, Py_ssize_t stop) {
    return smx_pairwise_split_blocks(start, stop, SOFTMAXC_PAIRWISE_BLOCK);
}

/* w_i = beta * (x_i - x_ref) <= 0: z_i minus the row maximum, rounded relative to itself. */
static inline double smx_shifted_logit(double x_i, double x_ref, double beta) {
    double difference = x_i - x_ref;
    if (difference == INFINITY || difference == -INFINITY) {
        /* Only for |x| near DBL_MAX (e.g. 1e308 - -1e308) or an infinite x_i.  The
         * difference overflowed but beta times it need not: beta = 0 must give w = 0 (not
         * 0 * inf = NaN) and beta = 1e-308 a finite w.  Both products are then finite (or
         * x_i's own infinity, which gives -inf or NaN exactly as before). */
        return beta * x_i - beta * x_ref;
    }
    return beta * difference;
}

/* beta * (x_i - x_ref) - w_i for w_i = smx_shifted_logit(x_i, x_ref, beta), x_i finite: the
 * exact error of the difference (TwoSum: additions only) times beta, plus the exact error
 * of the product (fma; none when beta == 1). */
static inline double smx_shifted_logit_error(double x_i, double x_ref, double beta, double w_i) {
    double a = x_i, b = -x_ref;
    double difference = a + b;
    double b_part = difference - a;
    double difference_error = (a - (difference - b_part)) + (b - b_part);
    double product_error = beta == 1.0 ? 0.0 : fma(beta, difference, -w_i);
    return product_error + beta * difference_error;
}

/* ------------------------------------------------------------------------------------- */
/* exp: constants and the portable (scalar) version                                        */
/* ------------------------------------------------------------------------------------- */

#define SMX_LOG2E 1.4426950408889634
/* ln 2 = LN2_HI + LN2_LO; LN2_HI is a multiple of 2^-32 below 1, so k * LN2_HI is exact for
 * |k| < 2^21 without an fma (the portable path). */
#define SMX_LN2_HI 0.6931471806019545       /* ln 2 rounded to a multiple of 2^-32 */
#define SMX_LN2_LO -4.2009150726810846e-11
/* 1.5 * 2^52: w * log2(e) + SHIFTER rounds to an integer k held in the low mantissa bits. */
#define SMX_SHIFTER 6755399441055744.0

/* Arguments are clamped to [lo, hi] first: beyond them the result is 0 or +inf anyway. */
#define SMX_EXP64_LO -746.0   /* exp(-746) < 2^-1075: rounds to 0 */
#define SMX_EXP64_HI 710.0    /* exp(710) > DBL_MAX: overflows to inf */
#define SMX_EXP64_SAFE 708.0  /* |w| below this: 2^k is a normal double, one scaling step */
#define SMX_EXP32_LIMIT 200.0 /* exp(+-200) is 0 / inf in float32, 2^k normal in double */

/* float64: exp(r) ~ 1 + r P(r), P of degree 10 fitted to the relative error on
 * [-ln2/2, ln2/2] (least squares on Chebyshev nodes, 60 digits): at most 2.9e-17 = 0.26 ULP
 * before rounding, P(0) = 1 so exp(0) = 1 exactly. */
#define SMX_P2 0.5000000000000013
#define SMX_P3 0.16666666666666052
#define SMX_P4 0.04166666666651556
#define SMX_P5 0.008333333333613368
#define SMX_P6 0.0013888888946892214
#define SMX_P7 0.00019841269329926804
#define SMX_P8 2.48014901128357e-05
#define SMX_P9 2.7557707841313607e-06
#define SMX_P10 2.76312127093473e-07
#define SMX_P11 2.4968565405535867e-08

/* float32 accuracy: Taylor coefficients 1/j! (degree 7: truncation below 5.3e-9). */
#define SMX_C2 0.5
#define SMX_C3 0.16666666666666666
#define SMX_C4 0.041666666666666664
#define SMX_C5 0.008333333333333333
#define SMX_C6 0.001388888888888889
#define SMX_C7 0.0001984126984126984

static inline double smx_pow2i(int64_t k) {   /* 2^k for -1022 <= k <= 1023 */
    union { uint64_t u; double d; } bits;
    bits.u = (uint64_t)(k + 1023) << 52;
    return bits.d;
}

/* w = k ln2 + r, |r| <= ln2/2 (slightly more when w log2(e) rounds), portable. */
static inline double smx_reduce_portable(double w, double* k) {
    double kd = w * SMX_LOG2E + SMX_SHIFTER;
    *k = kd - SMX_SHIFTER;
    return (w - *k * SMX_LN2_HI) - *k * SMX_LN2_LO;
}

/* exp(w) in double for the float64 kernels, portable. */
static inline double smx_exp64_portable(double w) {
    double k, r, p;
    int64_t ki, k1;
    if (w < SMX_EXP64_LO) w = SMX_EXP64_LO;   /* comparisons are false for NaN */
    if (w > SMX_EXP64_HI) w = SMX_EXP64_HI;
    if (w != w) return w;
    r = smx_reduce_portable(w, &k);
    p = SMX_P11;
    p = p * r + SMX_P10; p = p * r + SMX_P9; p = p * r + SMX_P8; p = p * r + SMX_P7;
    p = p * r + SMX_P6; p = p * r + SMX_P5; p = p * r + SMX_P4; p = p * r + SMX_P3;
    p = p * r + SMX_P2; p = p * r + 1.0; p = p * r + 1.0;
    ki = (int64_t)k;
    if (ki >= -1022 && ki <= 1023) return p * smx_pow2i(ki);
    k1 = ki / 2;   /* two steps: the last multiplication rounds once into the subnormals */
    return (p * smx_pow2i(k1)) * smx_pow2i(ki - k1);
}

/* exp(w) to float32 accuracy (then rounded to float32 by the caller), portable. */
static inline double smx_exp32_portable(double w) {
    double k, r, p;
    if (w < -SMX_EXP32_LIMIT) w = -SMX_EXP32_LIMIT;
    if (w > SMX_EXP32_LIMIT) w = SMX_EXP32_LIMIT;
    if (w != w) return w;
    r = smx_reduce_portable(w, &k);
    p = SMX_C7;
    p = p * r + SMX_C6; p = p * r + SMX_C5; p = p * r + SMX_C4; p = p * r + SMX_C3;
    p = p * r + SMX_C2; p = p * r + 1.0; p = p * r + 1.0;
    return p * smx_pow2i((int64_t)k);
}

/* ------------------------------------------------------------------------------------- */
/* exp: AVX2 + FMA, 4 doubles                                                              */
/* ------------------------------------------------------------------------------------- */
#if SOFTMAXC_HAVE_AVX2

static SMX_AVX2_INLINE __m256d smx_avx2_pow2(__m256d kd) {
    /* 2^k from kd = k + SHIFTER (k in the low mantissa bits; -1022 <= k <= 1023): the
     * shift drops SHIFTER's bits, whose low 12 are zero. */
    __m256i bits = _mm256_add_epi64(_mm256_castpd_si256(kd), _mm256_set1_epi64x(1023));
    return _mm256_castsi256_pd(_mm256_slli_epi64(bits, 52));
}

static SMX_AVX2_INLINE __m256d smx_avx2_reduce(__m256d w, __m256d* kd) {
    const __m256d shifter = _mm256_set1_pd(SMX_SHIFTER);
    __m256d k, r;
    *kd = _mm256_fmadd_pd(w, _mm256_set1_pd(SMX_LOG2E), shifter);
    k = _mm256_sub_pd(*kd, shifter);
    r = _mm256_fnmadd_pd(k, _mm256_set1_pd(SMX_LN2_HI), w);
    return _mm256_fnmadd_pd(k, _mm256_set1_pd(SMX_LN2_LO), r);
}

#define SMX_FMA(p, r, c) _mm256_fmadd_pd(p, r, _mm256_set1_pd(c))

static SMX_AVX2_INLINE __m256d smx_avx2_exp64(__m256d w) {
    __m256d kd, r, p;
    /* Lanes with |w| > SAFE (or infinite) take the rare branch: clamp (max/min return their
     * second operand when either is NaN: NaN passes through) and scale in two steps below.
     * Elsewhere w needs no clamp, and 2^k is a normal double. */
    int big = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_andnot_pd(_mm256_set1_pd(-0.0), w),
                                               _mm256_set1_pd(SMX_EXP64_SAFE), _CMP_GT_OQ));
    if (__builtin_expect(big != 0, 0))
        w = _mm256_min_pd(_mm256_set1_pd(SMX_EXP64_HI),
                          _mm256_max_pd(_mm256_set1_pd(SMX_EXP64_LO), w));
    r = smx_avx2_reduce(w, &kd);
    p = SMX_FMA(_mm256_set1_pd(SMX_P11), r, SMX_P10);
    p = SMX_FMA(p, r, SMX_P9); p = SMX_FMA(p, r, SMX_P8); p = SMX_FMA(p, r, SMX_P7);
    p = SMX_FMA(p, r, SMX_P6); p = SMX_FMA(p, r, SMX_P5); p = SMX_FMA(p, r, SMX_P4);
    p = SMX_FMA(p, r, SMX_P3); p = SMX_FMA(p, r, SMX_P2); p = SMX_FMA(p, r, 1.0);
    p = SMX_FMA(p, r, 1.0);
    if (__builtin_expect(big != 0, 0)) {
        /* Some 2^k is not a normal double: scale in two steps, 2^k1 * 2^(k - k1), so that
         * the last multiplication rounds once into the subnormals (or overflows). */
        __m256i k = _mm256_sub_epi64(_mm256_castpd_si256(kd),
                                     _mm256_castpd_si256(_mm256_set1_pd(SMX_SHIFTER)));
        __m256i k1 = _mm256_sub_epi64(
            _mm256_srli_epi64(_mm256_add_epi64(k, _mm256_set1_epi64x(2048)), 1),
            _mm256_set1_epi64x(1024));   /* floor(k / 2) for k > -2048 */
        __m256i k2 = _mm256_sub_epi64(k, k1);
        __m256d s1 = _mm256_castsi256_pd(
            _mm256_slli_epi64(_mm256_add_epi64(k1, _mm256_set1_epi64x(1023)), 52));
        __m256d s2 = _mm256_castsi256_pd(
            _mm256_slli_epi64(_mm256_add_epi64(k2, _mm256_set1_epi64x(1023)), 52));
        return _mm256_mul_pd(_mm256_mul_pd(p, s1), s2);
    }
    return _mm256_mul_pd(p, smx_avx2_pow2(kd));
}

static SMX_AVX2_INLINE __m256d smx_avx2_exp32(__m256d w) {
    __m256d kd, r, p;
    w = _mm256_min_pd(_mm256_set1_pd(SMX_EXP32_LIMIT),
                      _mm256_max_pd(_mm256_set1_pd(-SMX_EXP32_LIMIT), w));
    r = smx_avx2_reduce(w, &kd);
    p = SMX_FMA(_mm256_set1_pd(SMX_C7), r, SMX_C6);
    p = SMX_FMA(p, r, SMX_C5); p = SMX_FMA(p, r, SMX_C4); p = SMX_FMA(p, r, SMX_C3);
    p = SMX_FMA(p, r, SMX_C2); p = SMX_FMA(p, r, 1.0); p = SMX_FMA(p, r, 1.0);
    return _mm256_mul_pd(p, smx_avx2_pow2(kd));
}

#undef SMX_FMA

/* Load / store 8 elements as two vectors of 4 doubles. */
static SMX_AVX2_INLINE void smx_avx2_load8(const void* x, int is_f32, __m256d* lo, __m256d* hi) {
    if (is_f32) {
        __m256 v = _mm256_loadu_ps((const float*)x);
        *lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        *hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    } else {
        *lo = _mm256_loadu_pd((const double*)x);
        *hi = _mm256_loadu_pd((const double*)x + 4);
    }
}

static SMX_AVX2_INLINE void smx_avx2_store8(void* out, int is_f32, __m256d lo, __m256d hi) {
    if (is_f32) {
        _mm256_storeu_ps((float*)out, _mm256_set_m128(_mm256_cvtpd_ps(hi), _mm256_cvtpd_ps(lo)));
    } else {
        _mm256_storeu_pd((double*)out, lo);
        _mm256_storeu_pd((double*)out + 4, hi);
    }
}

/* Lanes whose byte is 0 (as a 4 x 64-bit mask): bytes[0..3] for lo, bytes[4..7] for hi. */
static SMX_AVX2_INLINE void smx_avx2_zero_lanes(const unsigned char* bytes, __m256i* lo, __m256i* hi) {
    __m128i b = _mm_loadl_epi64((const __m128i*)bytes);
    __m256i zero = _mm256_setzero_si256();
    *lo = _mm256_cmpeq_epi64(_mm256_cvtepu8_epi64(b), zero);
    *hi = _mm256_cmpeq_epi64(_mm256_cvtepu8_epi64(_mm_srli_si128(b, 4)), zero);
}

static SMX_AVX2_INLINE double smx_avx2_hsum(__m256d a, __m256d b) {
    /* Fixed order: lanes (0 + 4) (1 + 5) ..., then pairs. */
    __m256d s = _mm256_add_pd(a, b);
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    return _mm_cvtsd_f64(h) + _mm_cvtsd_f64(_mm_unpackhi_pd(h, h));
}

/* The sum over [start, stop) of exp(w_i) (0 where keep is 0), i != skip, with exp(w_i)
 * also written to store[i] (when store is not NULL; store may alias x: each group of 8 is
 * read before it is written).  With `residual`, the compensated variant: see
 * sum_exp_shifted_compensated in _rowops.pxd. */
static SMX_AVX2_INLINE double smx_avx2_sum_exp(const void* x, int is_f32, Py_ssize_t start,
                                               Py_ssize_t stop, double x_ref, double beta,
                                               const unsigned char* keep, Py_ssize_t skip,
                                               void* store, double* residual) {
    const size_t size = is_f32 ? sizeof(float) : sizeof(double);
    const __m256d ref = _mm256_set1_pd(x_ref), neg_ref = _mm256_set1_pd(-x_ref);
    const __m256d b = _mm256_set1_pd(beta);
    const int unit_beta = beta == 1.0;
    const __m256d zero = _mm256_setzero_pd();
    __m256d acc_lo = zero, acc_hi = zero, corr_lo = zero, corr_hi = zero;
    Py_ssize_t i;
    for (i = start; i < stop; i += 8) {
        Py_ssize_t count = stop - i < 8 ? stop - i : 8;
        int special = count < 8 || (size_t)(skip - i) < 8 || keep != NULL;
        unsigned char buffer[8 * sizeof(double)];
        unsigned char lane_bytes[8];
        const void* src = (const char*)x + i * size;
        __m256d x_lo, x_hi, d_lo, d_hi, w_lo, w_hi, e_lo, e_hi;
        Py_ssize_t j;
        if (special) {
            /* A short group is padded with x_ref (w = 0, finite) and masked out. */
            for (j = 0; j < 8; j++) {
                if (is_f32) ((float*)buffer)[j] = j < count ? ((const float*)src)[j] : (float)x_ref;
                else ((double*)buffer)[j] = j < count ? ((const double*)src)[j] : x_ref;
                lane_bytes[j] = j < count && (keep == NULL || keep[i + j] != 0);
            }
            src = buffer;
        }
        smx_avx2_load8(src, is_f32, &x_lo, &x_hi);
        d_lo = _mm256_sub_pd(x_lo, ref);
        d_hi = _mm256_sub_pd(x_hi, ref);
        w_lo = unit_beta ? d_lo : _mm256_mul_pd(b, d_lo);   /* 1 * d is d: skip it */
        w_hi = unit_beta ? d_hi : _mm256_mul_pd(b, d_hi);
        if (is_f32) {   /* float32 accuracy is enough (rounded to float32 below) */
            e_lo = smx_avx2_exp32(w_lo);
            e_hi = smx_avx2_exp32(w_hi);
        } else {
            e_lo = smx_avx2_exp64(w_lo);
            e_hi = smx_avx2_exp64(w_hi);
        }
        if (special) {
            __m256i off_lo, off_hi;
            smx_avx2_zero_lanes(lane_bytes, &off_lo, &off_hi);
            e_lo = _mm256_andnot_pd(_mm256_castsi256_pd(off_lo), e_lo);
            e_hi = _mm256_andnot_pd(_mm256_castsi256_pd(off_hi), e_hi);
        }
        if (store != NULL) {
            if (count == 8) {
                smx_avx2_store8((char*)store + i * size, is_f32, e_lo, e_hi);
            } else {
                smx_avx2_store8(buffer, is_f32, e_lo, e_hi);
                memcpy((char*)store + i * size, buffer, (size_t)count * size);
            }
        }
        if ((size_t)(skip - i) < 8) {   /* the reference entry: stored, not summed */
            __m256i off_lo, off_hi;
            lane_bytes[0] = lane_bytes[1] = lane_bytes[2] = lane_bytes[3] = 1;
            lane_bytes[4] = lane_bytes[5] = lane_bytes[6] = lane_bytes[7] = 1;
            lane_bytes[skip - i] = 0;
            smx_avx2_zero_lanes(lane_bytes, &off_lo, &off_hi);
            e_lo = _mm256_andnot_pd(_mm256_castsi256_pd(off_lo), e_lo);
            e_hi = _mm256_andnot_pd(_mm256_castsi256_pd(off_hi), e_hi);
        }
        acc_lo = _mm256_add_pd(acc_lo, e_lo);
        acc_hi = _mm256_add_pd(acc_hi, e_hi);
        if (residual != NULL) {
            /* e_i * (exact beta (x_i - x_ref) - w_i), as smx_shifted_logit_error; lanes
             * with e_i == 0 (masked, or x_i = -inf whose error is NaN) contribute 0. */
            __m256d s_lo = _mm256_sub_pd(d_lo, x_lo), s_hi = _mm256_sub_pd(d_hi, x_hi);
            __m256d err_lo = _mm256_add_pd(_mm256_sub_pd(x_lo, _mm256_sub_pd(d_lo, s_lo)),
                                           _mm256_sub_pd(neg_ref, s_lo));
            __m256d err_hi = _mm256_add_pd(_mm256_sub_pd(x_hi, _mm256_sub_pd(d_hi, s_hi)),
                                           _mm256_sub_pd(neg_ref, s_hi));
            err_lo = _mm256_add_pd(_mm256_fmsub_pd(b, d_lo, w_lo), _mm256_mul_pd(b, err_lo));
            err_hi = _mm256_add_pd(_mm256_fmsub_pd(b, d_hi, w_hi), _mm256_mul_pd(b, err_hi));
            err_lo = _mm256_and_pd(_mm256_cmp_pd(e_lo, zero, _CMP_NEQ_OQ), _mm256_mul_pd(e_lo, err_lo));
            err_hi = _mm256_and_pd(_mm256_cmp_pd(e_hi, zero, _CMP_NEQ_OQ), _mm256_mul_pd(e_hi, err_hi));
            corr_lo = _mm256_add_pd(corr_lo, err_lo);
            corr_hi = _mm256_add_pd(corr_hi, err_hi);
        }
    }
    if (residual != NULL) residual[0] += smx_avx2_hsum(corr_lo, corr_hi);
    return smx_avx2_hsum(acc_lo, acc_hi);
}


/* ---- float32 lanes: the float32 kernels' exp when beta == 1 (8 floats a vector) ---- */

/* ln 2 = C1 + C2 with C1 exact in few bits (Cephes' split: k * C1 is exact). */
#define SMX_F32_LN2_C1 0.693359375f
#define SMX_F32_LN2_C2 -2.12194440e-4f
#define SMX_F32_SHIFTER 12582912.0f   /* 1.5 * 2^23 */
#define SMX_F32_LO -104.0f            /* exp(-104) < 2^-150: rounds to 0 */
#define SMX_F32_HI 89.0f              /* exp(89) > FLT_MAX: overflows to inf */
#define SMX_F32_SAFE 87.0f            /* |hi| below this: 2^k is a normal float */

/* exp(hi + lo) for |lo| <= ulp(hi) / 2 (lo: the rounding error of hi), in float32; exp(hi)
 * when has_lo is 0 (a constant at every call: the addition of lo is compiled out). */
static SMX_AVX2_INLINE __m256 smx_avx2_exp8f(__m256 hi, __m256 lo, int has_lo) {
    const __m256 shifter = _mm256_set1_ps(SMX_F32_SHIFTER);
    __m256 kf, k, r, p;
    /* Lanes with |hi| > SAFE (or infinite) take the rare branch: clamp (NaN passes through
     * the clamps) and scale in two steps below.  Elsewhere hi needs no clamp.  A clamped
     * lane's exp is 0 or inf whatever lo is, and its lo must go: it is the TwoSum error of a
     * difference near FLT_MAX (up to ~1e31, which would swamp the clamped hi) or NaN (an
     * infinite hi: inf - inf). */
    int big = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), hi),
                                               _mm256_set1_ps(SMX_F32_SAFE), _CMP_GT_OQ));
    if (__builtin_expect(big != 0, 0)) {
        __m256 clamped = _mm256_min_ps(_mm256_set1_ps(SMX_F32_HI),
                                       _mm256_max_ps(_mm256_set1_ps(SMX_F32_LO), hi));
        lo = _mm256_and_ps(lo, _mm256_cmp_ps(clamped, hi, _CMP_EQ_OQ));
        hi = clamped;
    }
    kf = _mm256_fmadd_ps(hi, _mm256_set1_ps(1.44269504088896341f), shifter);
    k = _mm256_sub_ps(kf, shifter);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(SMX_F32_LN2_C1), hi);   /* exact */
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(SMX_F32_LN2_C2), r);
    if (has_lo) r = _mm256_add_ps(r, lo);
    /* exp(r) ~ 1 + r + c2 r^2 + ... + c6 r^6 by Horner: six fmas, each rounding once.  The
     * coefficients minimise the relative error on |r| <= 1.002 ln2/2 (Lawson's iteration,
     * 40-digit references): 4.2e-9 = 0.07 half-ULPs before rounding. */
    p = _mm256_fmadd_ps(_mm256_set1_ps(1.3814320555e-3f), r, _mm256_set1_ps(8.3688506857e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1668400168e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666519642e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.9999994040e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    if (__builtin_expect(big != 0, 0)) {
        /* 2^k1 * 2^(k - k1): the last multiplication rounds once into the subnormals. */
        __m256i ki = _mm256_sub_epi32(_mm256_castps_si256(kf), _mm256_castps_si256(shifter));
        __m256i k1 = _mm256_srai_epi32(ki, 1);
        __m256i k2 = _mm256_sub_epi32(ki, k1);
        __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, _mm256_set1_epi32(127)), 23));
        __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, _mm256_set1_epi32(127)), 23));
        return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    }
    /* kf's bits are SHIFTER's plus k, SHIFTER's low 9 bits zero: (k + 127) << 23 is 2^k. */
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_add_epi32(_mm256_castps_si256(kf), _mm256_set1_epi32(127)), 23)));
}

/* One group of 8 of smx_avx2_sum_exp_f32_beta1: exp(x_i - x_ref) for x_i = src[0..7],
 * zeroed where lane_bytes is 0 (when not NULL), stored to store (when not NULL), added to
 * the accumulators except lane `skip_lane` (-1: none).  With exact_difference, the exp of
 * the exact difference (hi + lo by TwoSum), else of the rounded one (SMX_TERMS_*). */
static SMX_AVX2_INLINE void smx_avx2_exp8_group(const float* src, __m256 neg_ref,
                                                int exact_difference,
                                                const unsigned char* lane_bytes,
                                                float* store, int skip_lane,
                                                __m256d* acc_lo, __m256d* acc_hi) {
    __m256 v = _mm256_loadu_ps(src);
    __m256 d = _mm256_add_ps(v, neg_ref);
    __m256 lo = d;
    __m256 e;
    if (exact_difference) {
        __m256 b_part = _mm256_sub_ps(d, v);
        lo = _mm256_add_ps(_mm256_sub_ps(v, _mm256_sub_ps(d, b_part)),
                           _mm256_sub_ps(neg_ref, b_part));
        e = smx_avx2_exp8f(d, lo, 1);
    } else {
        e = smx_avx2_exp8f(d, lo, 0);
    }
    if (lane_bytes != NULL) {
        __m256i off = _mm256_cmpeq_epi32(
            _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)lane_bytes)),
            _mm256_setzero_si256());
        e = _mm256_andnot_ps(_mm256_castsi256_ps(off), e);
    }
    if (store != NULL) _mm256_storeu_ps(store, e);
    if (skip_lane >= 0) {   /* the reference entry: stored, not summed */
        __m256i off = _mm256_cmpeq_epi32(_mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0),
                                         _mm256_set1_epi32(skip_lane));
        e = _mm256_andnot_ps(_mm256_castsi256_ps(off), e);
    }
    *acc_lo = _mm256_add_pd(*acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    *acc_hi = _mm256_add_pd(*acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
}

/* The full groups of 8 of [i, stop) without a mask: the common case, without lane
 * bookkeeping.  Returns where it stopped.  exact_difference: as smx_avx2_exp8_group (a
 * constant at each call, so that each variant is compiled without the other's work). */
static SMX_AVX2_INLINE Py_ssize_t smx_avx2_exp8_full_groups(const float* x, Py_ssize_t i,
                                                           Py_ssize_t stop, __m256 neg_ref,
                                                           int exact_difference,
                                                           Py_ssize_t skip, float* store,
                                                           __m256d* acc_lo, __m256d* acc_hi) {
    for (; i + 8 <= stop; i += 8) {
        int skip_lane = (size_t)(skip - i) < 8 ? (int)(skip - i) : -1;
        if (skip_lane >= 0)
            smx_avx2_exp8_group(x + i, neg_ref, exact_difference, NULL,
                                store == NULL ? NULL : store + i, skip_lane, acc_lo, acc_hi);
        else if (store != NULL)
            smx_avx2_exp8_group(x + i, neg_ref, exact_difference, NULL, store + i, -1,
                                acc_lo, acc_hi);
        else
            smx_avx2_exp8_group(x + i, neg_ref, exact_difference, NULL, NULL, -1,
                                acc_lo, acc_hi);
    }
    return i;
}

/* smx_avx2_sum_exp for float32 rows with beta == 1 and no residual, in float lanes.  For
 * SMX_TERMS_LOG, w_i = x_i - x_ref is carried exactly as hi + lo (TwoSum), so exp(w_i)
 * does not inherit the rounding of the difference (the float32-accuracy contract of the
 * double lanes); SMX_TERMS_PROBABILITY takes the rounded difference. */
static SMX_AVX2 double smx_avx2_sum_exp_f32_beta1(const float* x, Py_ssize_t start,
                                                  Py_ssize_t stop, float x_ref,
                                                  const unsigned char* keep, Py_ssize_t skip,
                                                  float* store, int terms) {
    const __m256 neg_ref = _mm256_set1_ps(-x_ref);
    const int exact_difference = terms != SMX_TERMS_PROBABILITY;
    __m256d acc_lo = _mm256_setzero_pd(), acc_hi = acc_lo;
    Py_ssize_t i = start;
    if (keep == NULL) {
        if (exact_difference)
            i = smx_avx2_exp8_full_groups(x, i, stop, neg_ref, 1, skip, store, &acc_lo, &acc_hi);
        else
            i = smx_avx2_exp8_full_groups(x, i, stop, neg_ref, 0, skip, store, &acc_lo, &acc_hi);
    }
    for (; i < stop; i += 8) {   /* a short group (padded with x_ref: w = 0), or a mask */
        Py_ssize_t count = stop - i < 8 ? stop - i : 8, j;
        float buffer[8], result[8];
        unsigned char lane_bytes[8];
        for (j = 0; j < 8; j++) {
            buffer[j] = j < count ? x[i + j] : x_ref;
            lane_bytes[j] = j < count && (keep == NULL || keep[i + j] != 0);
        }
        smx_avx2_exp8_group(buffer, neg_ref, exact_difference, lane_bytes, result,
                            (size_t)(skip - i) < 8 ? (int)(skip - i) : -1, &acc_lo, &acc_hi);
        if (store != NULL) memcpy(store + i, result, (size_t)count * sizeof(float));
    }
    return smx_avx2_hsum(acc_lo, acc_hi);
}

static SMX_AVX2 double smx_avx2_sum_exp_f32_double_lanes(
        const float* x, Py_ssize_t start, Py_ssize_t stop, double x_ref, double beta,
        const unsigned char* keep, Py_ssize_t skip, float* store) {
    return smx_avx2_sum_exp(x, 1, start, stop, x_ref, beta, keep, skip, store, NULL);
}

static SMX_AVX2 double smx_avx2_sum_exp_f32(const float* x, Py_ssize_t start, Py_ssize_t stop,
                                            double x_ref, double beta, const unsigned char* keep,
                                            Py_ssize_t skip, float* store, int terms) {
    if (beta == 1.0)
        return smx_avx2_sum_exp_f32_beta1(x, start, stop, (float)x_ref, keep, skip, store,
                                          terms);
    /* The double lanes take the exact difference for either kind of terms. */
    return smx_avx2_sum_exp_f32_double_lanes(x, start, stop, x_ref, beta, keep, skip, store);
}

static SMX_AVX2 double smx_avx2_sum_exp_f64(const double* x, Py_ssize_t start, Py_ssize_t stop,
                                            double x_ref, double beta, const unsigned char* keep,
                                            Py_ssize_t skip, double* store, double* residual) {
    return smx_avx2_sum_exp(x, 0, start, stop, x_ref, beta, keep, skip, store, residual);
}


/* The first index maximising sign * x_i (sign = -1 when negate) among non-NaN x_i, -1 when
 * there is none; *has_nan tells whether some x_i is NaN (then the index is meaningless). */
static SMX_AVX2_INLINE Py_ssize_t smx_avx2_argmax(const void* x, int is_f32, Py_ssize_t n,
                                                  int negate, int* has_nan) {
    const size_t size = is_f32 ? sizeof(float) : sizeof(double);
    const __m256d flip = negate ? _mm256_set1_pd(-0.0) : _mm256_setzero_pd();
    __m256d best_lo = _mm256_set1_pd(-INFINITY), best_hi = best_lo;
    __m256d nan_lo = _mm256_setzero_pd(), nan_hi = nan_lo;
    double best = -INFINITY, value;
    Py_ssize_t i, vector_end = n - n % 8, index = -1;
    int nan_found = 0;
    for (i = 0; i < vector_end; i += 8) {
        __m256d lo, hi;
        smx_avx2_load8((const char*)x + i * size, is_f32, &lo, &hi);
        lo = _mm256_xor_pd(lo, flip);
        hi = _mm256_xor_pd(hi, flip);
        nan_lo = _mm256_or_pd(nan_lo, _mm256_cmp_pd(lo, lo, _CMP_UNORD_Q));
        nan_hi = _mm256_or_pd(nan_hi, _mm256_cmp_pd(hi, hi, _CMP_UNORD_Q));
        best_lo = _mm256_max_pd(best_lo, lo);
        best_hi = _mm256_max_pd(best_hi, hi);
    }
    nan_found = _mm256_movemask_pd(_mm256_or_pd(nan_lo, nan_hi)) != 0;
    if (!nan_found && vector_end > 0) {
        double lanes[4];
        Py_ssize_t j;
        _mm256_storeu_pd(lanes, _mm256_max_pd(best_lo, best_hi));
        for (j = 0; j < 4; j++) if (lanes[j] > best) best = lanes[j];
    }
    for (i = vector_end; i < n && !nan_found; i++) {
        value = is_f32 ? ((const float*)x)[i] : ((const double*)x)[i];
        value = negate ? -value : value;
        if (value != value) nan_found = 1;
        else if (value > best) best = value;
    }
    *has_nan = nan_found;
    if (nan_found || n == 0) return -1;
    /* The first entry equal to the maximum (-0.0 == 0.0, as the scalar scan's `>`). */
    {
        const __m256d target = _mm256_set1_pd(best);
        for (i = 0; i < vector_end && index < 0; i += 8) {
            __m256d lo, hi;
            int hits;
            smx_avx2_load8((const char*)x + i * size, is_f32, &lo, &hi);
            hits = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_xor_pd(lo, flip), target, _CMP_EQ_OQ))
                   | (_mm256_movemask_pd(_mm256_cmp_pd(_mm256_xor_pd(hi, flip), target, _CMP_EQ_OQ)) << 4);
            if (hits) index = i + __builtin_ctz((unsigned)hits);
        }
        for (i = vector_end; i < n && index < 0; i++) {
            value = is_f32 ? ((const float*)x)[i] : ((const double*)x)[i];
            if ((negate ? -value : value) == best) index = i;
        }
    }
    return index;
}

/* out[i] = a * in[i] - b, rounded to the element type (in may be out). */
static SMX_AVX2_INLINE void smx_avx2_scale(const void* in, void* out, int is_f32, Py_ssize_t n,
                                           double a, double b) {
    const size_t size = is_f32 ? sizeof(float) : sizeof(double);
    const __m256d va = _mm256_set1_pd(a), vb = _mm256_set1_pd(b);
    Py_ssize_t i, vector_end = n - n % 8;
    for (i = 0; i < vector_end; i += 8) {
        __m256d lo, hi;
        smx_avx2_load8((const char*)in + i * size, is_f32, &lo, &hi);
        smx_avx2_store8((char*)out + i * size, is_f32,
                        _mm256_sub_pd(_mm256_mul_pd(va, lo), vb),
                        _mm256_sub_pd(_mm256_mul_pd(va, hi), vb));
    }
    for (i = vector_end; i < n; i++) {
        if (is_f32) ((float*)out)[i] = (float)(a * ((const float*)in)[i] - b);
        else ((double*)out)[i] = a * ((const double*)in)[i] - b;
    }
}

static SMX_AVX2 Py_ssize_t smx_avx2_argmax_f32(const float* x, Py_ssize_t n, int negate, int* has_nan) {
    /* As smx_avx2_argmax, in float lanes (the comparisons are exact in either width). */
    const __m256 flip = negate ? _mm256_set1_ps(-0.0f) : _mm256_setzero_ps();
    __m256 best_v = _mm256_set1_ps(-INFINITY), nan_v = _mm256_setzero_ps();
    __m256 best_2 = best_v, nan_2 = nan_v;
    float best = -INFINITY, value, lanes[8];
    Py_ssize_t i = 0, vector_end = n - n % 8;
    Py_ssize_t j;
    /* Two independent chains: a max waits for the previous one (3 cycles), a load does not. */
    for (; i + 16 <= vector_end; i += 16) {
        __m256 v = _mm256_xor_ps(_mm256_loadu_ps(x + i), flip);
        __m256 w = _mm256_xor_ps(_mm256_loadu_ps(x + i + 8), flip);
        nan_v = _mm256_or_ps(nan_v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        nan_2 = _mm256_or_ps(nan_2, _mm256_cmp_ps(w, w, _CMP_UNORD_Q));
        best_v = _mm256_max_ps(best_v, v);
        best_2 = _mm256_max_ps(best_2, w);
    }
    for (; i < vector_end; i += 8) {
        __m256 v = _mm256_xor_ps(_mm256_loadu_ps(x + i), flip);
        nan_v = _mm256_or_ps(nan_v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        best_v = _mm256_max_ps(best_v, v);
    }
    nan_v = _mm256_or_ps(nan_v, nan_2);
    best_v = _mm256_max_ps(best_v, best_2);
    *has_nan = _mm256_movemask_ps(nan_v) != 0;
    if (*has_nan) return -1;
    _mm256_storeu_ps(lanes, best_v);
    for (j = 0; j < 8; j++) if (lanes[j] > best) best = lanes[j];
    for (i = vector_end; i < n; i++) {
        value = negate ? -x[i] : x[i];
        if (value != value) { *has_nan = 1; return -1; }
        if (value > best) best = value;
    }
    if (n == 0) return -1;
    for (i = 0; i < vector_end; i += 8) {
        int hits = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_xor_ps(_mm256_loadu_ps(x + i), flip),
                                                    _mm256_set1_ps(best), _CMP_EQ_OQ));
        if (hits) return i + __builtin_ctz((unsigned)hits);
    }
    for (i = vector_end; i < n; i++) if ((negate ? -x[i] : x[i]) == best) return i;
    return -1;   /* not reached */
}
static SMX_AVX2 Py_ssize_t smx_avx2_argmax_f64(const double* x, Py_ssize_t n, int negate, int* has_nan) {
    return smx_avx2_argmax(x, 0, n, negate, has_nan);
}
/* out[i] = beta * (x_i - x_ref) - c (the log-softmax row; |beta| >= SMX_MIN_VECTOR_BETA). */
static SMX_AVX2_INLINE void smx_avx2_shifted_minus(const void* x, void* out, int is_f32,
                                                   Py_ssize_t n, double x_ref, double beta,
                                                   double c) {
    const size_t size = is_f32 ? sizeof(float) : sizeof(double);
    const __m256d ref = _mm256_set1_pd(x_ref), b = _mm256_set1_pd(beta), vc = _mm256_set1_pd(c);
    Py_ssize_t i, vector_end = n - n % 8;
    for (i = 0; i < vector_end; i += 8) {
        __m256d lo, hi;
        smx_avx2_load8((const char*)x + i * size, is_f32, &lo, &hi);
        lo = _mm256_sub_pd(_mm256_mul_pd(b, _mm256_sub_pd(lo, ref)), vc);
        hi = _mm256_sub_pd(_mm256_mul_pd(b, _mm256_sub_pd(hi, ref)), vc);
        smx_avx2_store8((char*)out + i * size, is_f32, lo, hi);
    }
    for (i = vector_end; i < n; i++) {
        if (is_f32) ((float*)out)[i] = (float)(beta * (((const float*)x)[i] - x_ref) - c);
        else ((double*)out)[i] = beta * (((const double*)x)[i] - x_ref) - c;
    }
}

static SMX_AVX2 void smx_avx2_scale_f32(const float* in, float* out, Py_ssize_t n, double a, double b) {
    smx_avx2_scale(in, out, 1, n, a, b);
}
static SMX_AVX2 void smx_avx2_scale_f64(const double* in, double* out, Py_ssize_t n, double a, double b) {
    smx_avx2_scale(in, out, 0, n, a, b);
}
static SMX_AVX2 void smx_avx2_shifted_minus_f32(const float* x, float* out, Py_ssize_t n,
                                                double x_ref, double beta, double c) {
    if (beta == 1.0) {
        /* (x_i - x_ref) - c in float: both terms <= 0, so nothing cancels and the result is
         * within 1.5 ULP of the double computation's (each rounding <= 0.5 ULP of it). */
        const __m256 ref = _mm256_set1_ps((float)x_ref), vc = _mm256_set1_ps((float)c);
        const float ref_f = (float)x_ref, c_f = (float)c;
        Py_ssize_t i, vector_end = n - n % 8;
        for (i = 0; i < vector_end; i += 8)
            _mm256_storeu_ps(out + i, _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), ref), vc));
        for (i = vector_end; i < n; i++) out[i] = (x[i] - ref_f) - c_f;
        return;
    }
    smx_avx2_shifted_minus(x, out, 1, n, x_ref, beta, c);
}

/* out[i] *= factor in float (factor rounded to float: 0.5 ULP; for the softmax rows). */
static SMX_AVX2 void smx_avx2_multiply_f32(float* out, Py_ssize_t n, double factor) {
    const float f = (float)factor;
    const __m256 vf = _mm256_set1_ps(f);
    Py_ssize_t i, vector_end = n - n % 8;
    for (i = 0; i < vector_end; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(out + i), vf));
    for (i = vector_end; i < n; i++) out[i] = out[i] * f;
}
static SMX_AVX2 void smx_avx2_shifted_minus_f64(const double* x, double* out, Py_ssize_t n,
                                                double x_ref, double beta, double c) {
    smx_avx2_shifted_minus(x, out, 0, n, x_ref, beta, c);
}

#endif  /* SOFTMAXC_HAVE_AVX2 */

/* ------------------------------------------------------------------------------------- */
/* Row loops: portable versions, and the dispatching entry points                          */
/* ------------------------------------------------------------------------------------- */

/* The portable sum_exp (4 interleaved lanes), one body for both dtypes. */
#define SMX_PORTABLE_SUM_EXP(T, EXP)                                                        \
    double acc[4] = {0.0, 0.0, 0.0, 0.0};                                                   \
    double correction = 0.0;                                                                \
    Py_ssize_t i;                                                                           \
    for (i = start; i < stop; i++) {                                                        \
        double x_i = x[i];   /* read once: store may alias x */                             \
        double w = smx_shifted_logit(x_i, x_ref, beta);                                     \
        double e = (keep == NULL || keep[i] != 0) ? EXP(w) : 0.0;                           \
        if (store != NULL) store[i] = (T)e;                                                 \
        if (i != skip && e != 0) {   /* e == 0 also covers x_i = -inf (error NaN) */        \
            acc[(i - start) & 3] += e;                                                      \
            if (residual != NULL)                                                           \
                correction += e * smx_shifted_logit_error(x_i, x_ref, beta, w);            \
        }                                                                                   \
    }                                                                                       \
    if (residual != NULL) residual[0] += correction;                                        \
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);

static double smx_portable_sum_exp_f32(const float* x, Py_ssize_t start, Py_ssize_t stop,
                                       double x_ref, double beta, const unsigned char* keep,
                                       Py_ssize_t skip, float* store) {
    double* residual = NULL;   /* float32 terms are never compensated (SMX_TERMS_*) */
    SMX_PORTABLE_SUM_EXP(float, smx_exp32_portable)
}

static double smx_portable_sum_exp_f64(const double* x, Py_ssize_t start, Py_ssize_t stop,
                                       double x_ref, double beta, const unsigned char* keep,
                                       Py_ssize_t skip, double* store, double* residual) {
    SMX_PORTABLE_SUM_EXP(double, smx_exp64_portable)
}

#undef SMX_PORTABLE_SUM_EXP

/* The entry points: sum over [start, stop) of exp(w_i) for kept i != skip, in double, with
 * exp(w_i) (0 where not kept) also written to store[i] when store is not NULL.  float32
 * rows: `terms` (SMX_TERMS_*) says what the terms need (the portable path computes the
 * difference in double, exact, for both).  float64 rows: with the first-order effect of
 * the rounding of w_i added to residual[0] when residual is not NULL. */
static inline double smx_sum_exp_f32(const float* x, Py_ssize_t start, Py_ssize_t stop,
                                     double x_ref, double beta, const unsigned char* keep,
                                     Py_ssize_t skip, float* store, int terms) {
#if SOFTMAXC_HAVE_AVX2
    if (smx_active_path == SMX_PATH_AVX2 && fabs(beta) >= SMX_MIN_VECTOR_BETA)
        return smx_avx2_sum_exp_f32(x, start, stop, x_ref, beta, keep, skip, store, terms);
#endif
    (void)terms;
    return smx_portable_sum_exp_f32(x, start, stop, x_ref, beta, keep, skip, store);
}

static inline double smx_sum_exp_f64(const double* x, Py_ssize_t start, Py_ssize_t stop,
                                     double x_ref, double beta, const unsigned char* keep,
                                     Py_ssize_t skip, double* store, double* residual) {
#if SOFTMAXC_HAVE_AVX2
    if (smx_active_path == SMX_PATH_AVX2 && fabs(beta) >= SMX_MIN_VECTOR_BETA)
        return smx_avx2_sum_exp_f64(x, start, stop, x_ref, beta, keep, skip, store, residual);
#endif
    return smx_portable_sum_exp_f64(x, start, stop, x_ref, beta, keep, skip, store, residual);
}


/* The other row passes, one entry point per dtype (T, suffix): the AVX2 loop or the
 * portable one.  argmax: see smx_avx2_argmax.  scale: out[i] = a * in[i] - b.
 * shifted_minus: out[i] = shifted_logit(x_i) - c. */
#if SOFTMAXC_HAVE_AVX2
#define SMX_IF_AVX2(condition, call) if (smx_active_path == SMX_PATH_AVX2 && (condition)) { call; }
#else
#define SMX_IF_AVX2(condition, call)
#endif

#define SMX_ROW_PASSES(T, SUFFIX)                                                             \
static inline Py_ssize_t smx_argmax_##SUFFIX(const T* x, Py_ssize_t n, int negate,           \
                                             int* has_nan) {                                  \
    double best = -INFINITY, value;                                                           \
    Py_ssize_t i, index = -1;                                                                 \
    SMX_IF_AVX2(1, return smx_avx2_argmax_##SUFFIX(x, n, negate, has_nan))                    \
    *has_nan = 0;                                                                             \
    for (i = 0; i < n; i++) {                                                                 \
        value = negate ? -(double)x[i] : (double)x[i];                                        \
        if (value != value) { *has_nan = 1; return -1; }                                      \
        if (value > best || index < 0) { best = value; index = i; }                           \
    }                                                                                         \
    return index;                                                                             \
}                                                                                             \
static inline void smx_scale_##SUFFIX(const T* in, T* out, Py_ssize_t n, double a, double b) { \
    Py_ssize_t i;                                                                             \
    SMX_IF_AVX2(1, smx_avx2_scale_##SUFFIX(in, out, n, a, b); return)                         \
    for (i = 0; i < n; i++) out[i] = (T)(a * in[i] - b);                                      \
}                                                                                             \
static inline void smx_shifted_minus_##SUFFIX(const T* x, T* out, Py_ssize_t n, double x_ref,  \
                                              double beta, double c) {                        \
    Py_ssize_t i;                                                                             \
    SMX_IF_AVX2(fabs(beta) >= SMX_MIN_VECTOR_BETA,                                            \
                smx_avx2_shifted_minus_##SUFFIX(x, out, n, x_ref, beta, c); return)           \
    for (i = 0; i < n; i++) out[i] = (T)(smx_shifted_logit(x[i], x_ref, beta) - c);           \
}

SMX_ROW_PASSES(float, f32)

/* The softmax normalisation of a float32 row: out[i] *= factor (in float on the AVX2 path,
 * in double on the portable one). */
static inline void smx_multiply_f32(float* out, Py_ssize_t n, double factor) {
    Py_ssize_t i;
#if SOFTMAXC_HAVE_AVX2
    if (smx_active_path == SMX_PATH_AVX2) { smx_avx2_multiply_f32(out, n, factor); return; }
#endif
    for (i = 0; i < n; i++) out[i] = (float)(out[i] * factor);
}
SMX_ROW_PASSES(double, f64)

#undef SMX_ROW_PASSES
#undef SMX_IF_AVX2

/* ------------------------------------------------------------------------------------- */
/* Tiles: rows along a non-last axis (see _rowops.pxd), moved by blocks of vectors         */
/* ------------------------------------------------------------------------------------- */
/* gather: rows[j * n + c] = x[c * stride + j]; scatter: out[c * stride + j] = rows[j * n + c]
 * (c < n, j < width).  Both are transposes of an n x width block; the AVX2 path moves 8 x 8
 * (float) or 4 x 4 (double) sub-blocks through registers (whole vectors in and out instead
 * of one element at a time, to rows n elements apart), the rest element by element.  Pure
 * copies: the values are bitwise the same on every path. */

#if SOFTMAXC_HAVE_AVX2
static SMX_AVX2_INLINE void smx_avx2_transpose8_ps(__m256 v[8]) {
    __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
    __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
    __m256 t4 = _mm256_unpacklo_ps(v[4], v[5]), t5 = _mm256_unpackhi_ps(v[4], v[5]);
    __m256 t6 = _mm256_unpacklo_ps(v[6], v[7]), t7 = _mm256_unpackhi_ps(v[6], v[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    v[0] = _mm256_permute2f128_ps(u0, u4, 0x20); v[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    v[1] = _mm256_permute2f128_ps(u1, u5, 0x20); v[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    v[2] = _mm256_permute2f128_ps(u2, u6, 0x20); v[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    v[3] = _mm256_permute2f128_ps(u3, u7, 0x20); v[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

static SMX_AVX2_INLINE void smx_avx2_transpose4_pd(__m256d v[4]) {
    __m256d t0 = _mm256_unpacklo_pd(v[0], v[1]), t1 = _mm256_unpackhi_pd(v[0], v[1]);
    __m256d t2 = _mm256_unpacklo_pd(v[2], v[3]), t3 = _mm256_unpackhi_pd(v[2], v[3]);
    v[0] = _mm256_permute2f128_pd(t0, t2, 0x20); v[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    v[1] = _mm256_permute2f128_pd(t1, t3, 0x20); v[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

/* The transposed copy dst[j * dst_stride + c] = src[c * src_stride + j] of the whole
 * BLOCK x BLOCK register blocks of c < n, j < width (the caller copies the rest).  The
 * loops finish the rows of the side with the smaller stride (the array in main memory, not
 * the tile) one after the other, so each of its cache lines is used whole while it is in
 * L1. */
#define SMX_AVX2_TRANSPOSE(T, SUFFIX, VEC, BLOCK, LOAD, STORE, TRANSPOSE_REGISTERS)          \
static SMX_AVX2_INLINE void smx_avx2_transpose_block_##SUFFIX(                                \
        const T* src, Py_ssize_t src_stride, T* dst, Py_ssize_t dst_stride) {                \
    VEC v[BLOCK];                                                                           \
    Py_ssize_t k;                                                                           \
    for (k = 0; k < BLOCK; k++) v[k] = LOAD(src + k * src_stride);                          \
    TRANSPOSE_REGISTERS(v);                                                                 \
    for (k = 0; k < BLOCK; k++) STORE(dst + k * dst_stride, v[k]);                          \
}                                                                                           \
static SMX_AVX2 void smx_avx2_transpose_##SUFFIX(const T* src, Py_ssize_t src_stride, T* dst, \
                                                 Py_ssize_t dst_stride, Py_ssize_t n,        \
                                                 Py_ssize_t width) {                         \
    Py_ssize_t c, j;                                                                        \
    if (src_stride <= dst_stride) {                                                         \
        for (c = 0; c + BLOCK <= n; c += BLOCK)                                             \
            for (j = 0; j + BLOCK <= width; j += BLOCK)                                     \
                smx_avx2_transpose_block_##SUFFIX(src + c * src_stride + j, src_stride,     \
                                                  dst + j * dst_stride + c, dst_stride);    \
    } else {                                                                                \
        for (j = 0; j + BLOCK <= width; j += BLOCK)                                         \
            for (c = 0; c + BLOCK <= n; c += BLOCK)                                         \
                smx_avx2_transpose_block_##SUFFIX(src + c * src_stride + j, src_stride,     \
                                                  dst + j * dst_stride + c, dst_stride);    \
    }                                                                                       \
}
SMX_AVX2_TRANSPOSE(float, f32, __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps,
                   smx_avx2_transpose8_ps)
SMX_AVX2_TRANSPOSE(double, f64, __m256d, 4, _mm256_loadu_pd, _mm256_storeu_pd,
                   smx_avx2_transpose4_pd)
#undef SMX_AVX2_TRANSPOSE
#endif

/* dst[j * dst_stride + c] = src[c * src_stride + j] for c < n, j < width. */
#define SMX_TRANSPOSE(T, SUFFIX, BLOCK)                                                        \
static inline void smx_transpose_##SUFFIX(const T* src, Py_ssize_t src_stride, T* dst,        \
                                          Py_ssize_t dst_stride, Py_ssize_t n,                 \
                                          Py_ssize_t width) {                                  \
    Py_ssize_t c, j, n_done = 0, width_done = 0;                                               \
    SMX_IF_AVX2_PATH(                                                                          \
        smx_avx2_transpose_##SUFFIX(src, src_stride, dst, dst_stride, n, width);               \
        n_done = n - n % BLOCK;                                                                \
        width_done = width - width % BLOCK;                                                    \
    )                                                                                          \
    /* what the blocks left: the last rows c of the covered columns, then the last columns */ \
    for (j = 0; j < width_done; j++)                                                           \
        for (c = n_done; c < n; c++) dst[j * dst_stride + c] = src[c * src_stride + j];        \
    for (c = 0; c < n; c++)                                                                    \
        for (j = width_done; j < width; j++) dst[j * dst_stride + c] = src[c * src_stride + j]; \
}
#if SOFTMAXC_HAVE_AVX2
#define SMX_IF_AVX2_PATH(code) if (smx_active_path == SMX_PATH_AVX2) { code }
#else
#define SMX_IF_AVX2_PATH(code)
#endif
SMX_TRANSPOSE(float, f32, 8)
SMX_TRANSPOSE(double, f64, 4)
#undef SMX_IF_AVX2_PATH
#undef SMX_TRANSPOSE

/* exp over an array with the active path's float32 / float64 kernel exp (the validator's
 * entry point, scripts/validate_exp.py): out[i] = exp(x[i]), computed by the kernels' own
 * loop as exp(beta (x_i - 0)).  float32: double_lanes = 0 is the float-lane exp (beta ==
 * 1), 1 the double-lane one (the float32 kernels with beta != 1). */
static inline void smx_exp_array_f32(const float* x, float* out, Py_ssize_t n, int double_lanes) {
    Py_ssize_t i = 0;
#if SOFTMAXC_HAVE_AVX2
    if (smx_active_path == SMX_PATH_AVX2) {
        if (double_lanes) smx_avx2_sum_exp_f32_double_lanes(x, 0, n, 0.0, 1.0, NULL, -1, out);
        else smx_avx2_sum_exp_f32(x, 0, n, 0.0, 1.0, NULL, -1, out, SMX_TERMS_LOG);
        return;
    }
#endif
    (void)double_lanes;
    for (; i < n; i++) out[i] = (float)smx_exp32_portable(x[i]);
}

static inline void smx_exp_array_f64(const double* x, double* out, Py_ssize_t n) {
    Py_ssize_t i = 0;
#if SOFTMAXC_HAVE_AVX2
    if (smx_active_path == SMX_PATH_AVX2) {
        smx_avx2_sum_exp_f64(x, 0, n, 0.0, 1.0, NULL, -1, out, NULL);
        return;
    }
#endif
    for (; i < n; i++) out[i] = smx_exp64_portable(x[i]);
}

#endif  /* SOFTMAXC_SIMD_H */
