# Per-row numerics of softmaxc: inline C functions over one row of logits.
#
# Design (the three layers of softmaxc, one direction only):
#   1. this file: per-row `cdef inline ... noexcept nogil` functions on raw pointers;
#      no Python objects, no allocation, no bounds checks.  Every pointer and length
#      they receive was validated by layer 3.
#   2. `*_kernels.pyx`: batch loops over rows with `prange`, typed memoryviews in, GIL
#      released; one call per public operation.
#   3. the Python modules (`_softmax.py`, ...): validate, convert, allocate, document.
#      Their common call (a float32/float64 C-contiguous ndarray, classes along the last
#      axis, no where=, no out= or a plain one) is validated and allocated in C instead,
#      by the `*_fast` entries of the kernel modules (see _fastpath.pxd), which run the
#      same batch loops and decline every other call to the general path.
#
# Numerics common to every function here.  The documents define softmax on z = beta * x.
# We never form beta * x_i and then subtract the maximum: that rounds z_i relative to
# |z_i|, which destroys rows offset by 1e4.  Instead the row's reference element x_ref
# (the x that maximises beta * x: the maximum for beta >= 0, the minimum for beta < 0)
# is found first, and every shifted logit is w_i = beta * (x_i - x_ref) <= 0, rounded
# relative to itself.  Sums of exp(w_i) are accumulated in double, pairwise, and the
# reference element's own term exp(0) = 1 is kept out of the sum t = sum_{i != ref} exp(w_i),
# so that log(sum exp) = log1p(t) keeps full relative accuracy when one entry dominates.

from cython cimport floating
from libc.math cimport log1p, INFINITY, NAN

# What a row needs: a normal computation, or a special value fill.
cdef enum RowKind:
    ROW_FINITE        # finite reference: compute
    ROW_NAN           # a kept NaN (or 0 * inf when beta == 0): NaN row
    ROW_POS_INF       # some z_i = +inf: NaN softmax / log_softmax, +inf logsumexp
    ROW_ALL_NEG_INF   # every kept z_i = -inf: NaN softmax / log_softmax, -inf logsumexp
    ROW_NONE_KEPT     # `where` excludes every entry: 0 / -inf / -inf

cdef struct RowReference:
    RowKind kind
    double x_ref          # x at the reference entry (valid when kind == ROW_FINITE)
    Py_ssize_t index      # position of the reference entry (first one on ties)

cdef extern from "_simd.h" nogil:
    # The vectorised exp and row loops (AVX2+FMA or portable, chosen at run time, once per
    # module import; SOFTMAXC_SIMD=0 forces the portable path).  See _simd.h.
    int smx_simd_init() noexcept
    # Leaves of the pairwise summation: blocks of this many terms are summed in fixed lanes
    # (vectorised); longer ranges are split in halves, aligned to the block
    # (pairwise_split), so the order of additions depends only on n, never on threads.
    enum: PAIRWISE_BLOCK "SOFTMAXC_PAIRWISE_BLOCK"
    # Leaves of the float32 sums with float32 results (SMX_TERMS_LOG / _PROBABILITY).
    enum: PAIRWISE_BLOCK_FLOAT32 "SOFTMAXC_PAIRWISE_BLOCK_FLOAT32"
    Py_ssize_t pairwise_split "smx_pairwise_split"(Py_ssize_t start, Py_ssize_t stop) noexcept
    Py_ssize_t pairwise_split_blocks "smx_pairwise_split_blocks"(
        Py_ssize_t start, Py_ssize_t stop, Py_ssize_t block) noexcept
    # What float32 terms exp(w_i) are for (see _simd.h): log1p of their sum (exact
    # differences) or probabilities (rounded differences).
    enum:
        TERMS_LOG "SMX_TERMS_LOG"
        TERMS_PROBABILITY "SMX_TERMS_PROBABILITY"
    double shifted_logit "smx_shifted_logit"(double x_i, double x_ref, double beta) noexcept
    double smx_sum_exp_f32(const float* x, Py_ssize_t start, Py_ssize_t stop, double x_ref,
                           double beta, const unsigned char* keep, Py_ssize_t skip,
                           float* store, int terms) noexcept
    double smx_sum_exp_f64(const double* x, Py_ssize_t start, Py_ssize_t stop, double x_ref,
                           double beta, const unsigned char* keep, Py_ssize_t skip,
                           double* store, double* residual) noexcept
    Py_ssize_t smx_argmax_f32(const float* x, Py_ssize_t n, bint negate, int* has_nan) noexcept
    Py_ssize_t smx_argmax_f64(const double* x, Py_ssize_t n, bint negate, int* has_nan) noexcept
    void smx_scale_f32(const float* src, float* out, Py_ssize_t n, double a, double b) noexcept
    void smx_scale_f64(const double* src, double* out, Py_ssize_t n, double a, double b) noexcept
    void smx_multiply_f32(float* out, Py_ssize_t n, double factor) noexcept
    void smx_shifted_minus_f32(const float* x, float* out, Py_ssize_t n, double x_ref,
                               double beta, double c) noexcept
    void smx_shifted_minus_f64(const double* x, double* out, Py_ssize_t n, double x_ref,
                               double beta, double c) noexcept
    # dst[j * dst_stride + c] = src[c * src_stride + j] for c < n, j < width (tiles).
    void smx_transpose_f32(const float* src, Py_ssize_t src_stride, float* dst,
                           Py_ssize_t dst_stride, Py_ssize_t n, Py_ssize_t width) noexcept
    void smx_transpose_f64(const double* src, Py_ssize_t src_stride, double* dst,
                           Py_ssize_t dst_stride, Py_ssize_t n, Py_ssize_t width) noexcept


cdef inline void scale_row(const floating* src, floating* out, Py_ssize_t n, double a,
                           double b) noexcept nogil:
    """out[i] = a * src[i] - b in double, rounded once (src may be out)."""
    if floating is float:
        smx_scale_f32(src, out, n, a, b)
    else:
        smx_scale_f64(src, out, n, a, b)


cdef enum:
    # Rows are handed to threads in chunks of about this many elements (a few us of work).
    CHUNK_ELEMENTS = 1 << 13


cdef inline Py_ssize_t rows_per_chunk(Py_ssize_t n) noexcept nogil:
    """The chunk size, in rows of n elements, of the batch loops' dynamic schedule.

    A thread that slept between parallel regions (OMP_WAIT_POLICY=PASSIVE, or a busy
    machine) can join tens of microseconds late.  With a static split the others wait for
    its share; with chunks taken on demand they do it meanwhile.  One atomic operation per
    chunk of CHUNK_ELEMENTS costs well under 1%, and rows are independent, so results do not
    depend on who computes which row."""
    return max(1, CHUNK_ELEMENTS // max(n, 1))


cdef inline void multiply_row(floating* out, Py_ssize_t n, double factor) noexcept nogil:
    """out[i] *= factor: float32 rows in float lanes (factor rounded to float: within 1 ULP,
    which the softmax bounds allow), float64 rows in double (0.5 ULP)."""
    if floating is float:
        smx_multiply_f32(out, n, factor)
    else:
        scale_row(out, out, n, factor, 0.0)


cdef inline bint is_kept(const unsigned char* keep, Py_ssize_t i) noexcept nogil:
    return keep == NULL or keep[i] != 0


cdef inline RowReference row_reference(const floating* x, Py_ssize_t n, double beta,
                                       const unsigned char* keep) noexcept nogil:
    """Locate the entry maximising beta * x among the kept entries and classify the row."""
    cdef RowReference ref
    cdef double sign = -1.0 if beta < 0 else 1.0   # max of sign*x is the argmax of beta*x
    cdef double best = -INFINITY, value
    cdef int has_nan = False
    cdef Py_ssize_t i
    ref.index = -1
    ref.x_ref = NAN
    if keep == NULL:
        if floating is float:
            ref.index = smx_argmax_f32(x, n, beta < 0, &has_nan)
        else:
            ref.index = smx_argmax_f64(x, n, beta < 0, &has_nan)
        if ref.index >= 0:
            best = sign * x[ref.index]
    else:
        for i in range(n):
            if not is_kept(keep, i):
                continue
            value = sign * x[i]
            if value != value:
                has_nan = True
            elif value > best or ref.index < 0:
                best = value
                ref.index = i
    if has_nan:
        ref.kind = ROW_NAN
    elif ref.index < 0:
        ref.kind = ROW_NONE_KEPT
    elif best == INFINITY or best == -INFINITY:
        # beta == 0 turns an infinite logit into 0 * inf = NaN.
        ref.kind = ROW_NAN if beta == 0 else (ROW_POS_INF if best > 0 else ROW_ALL_NEG_INF)
    else:
        ref.kind = ROW_FINITE
        ref.x_ref = x[ref.index]
    return ref


cdef inline double sum_exp_range(const floating* x, Py_ssize_t start, Py_ssize_t stop,
                                 double x_ref, double beta, const unsigned char* keep,
                                 Py_ssize_t skip, floating* store, double* residual,
                                 int terms) noexcept nogil:
    """One leaf of the pairwise sums: the C row loop of the active path (_simd.h).  Only
    float64 rows are compensated (`residual`); float32 ones take `terms` instead."""
    if floating is float:
        return smx_sum_exp_f32(x, start, stop, x_ref, beta, keep, skip, store, terms)
    else:
        return smx_sum_exp_f64(x, start, stop, x_ref, beta, keep, skip, store, residual)


cdef inline double sum_exp_pairwise(const floating* x, Py_ssize_t start, Py_ssize_t stop,
                                    double x_ref, double beta, const unsigned char* keep,
                                    Py_ssize_t skip, floating* store, double* residual,
                                    int terms, Py_ssize_t block) noexcept nogil:
    cdef Py_ssize_t half
    if stop - start <= block:
        return sum_exp_range(x, start, stop, x_ref, beta, keep, skip, store, residual, terms)
    half = pairwise_split_blocks(start, stop, block)
    return (sum_exp_pairwise(x, start, half, x_ref, beta, keep, skip, store, residual, terms,
                             block)
            + sum_exp_pairwise(x, half, stop, x_ref, beta, keep, skip, store, residual, terms,
                               block))


cdef inline double sum_exp_shifted(const floating* x, Py_ssize_t n, double x_ref, double beta,
                                   const unsigned char* keep, Py_ssize_t skip,
                                   floating* store, int terms) noexcept nogil:
    """Pairwise sum of exp(w_i) over kept i in [0, n), i != skip, in double.

    When `store` is not NULL, exp(w_i) (0 for excluded entries) is also written to store[i];
    `store` may alias `x` (each x_i is read before store[i] is written).  The error is
    O(log2(n) * eps) instead of the O(n * eps) of one running sum.  For float32 rows,
    `terms` (TERMS_LOG or TERMS_PROBABILITY) says how accurate the terms must be, and the
    leaves are longer (PAIRWISE_BLOCK_FLOAT32 in _simd.h); float64 rows ignore it and are
    always computed to double accuracy.
    """
    cdef Py_ssize_t block = PAIRWISE_BLOCK
    if floating is float:
        block = PAIRWISE_BLOCK_FLOAT32
    return sum_exp_pairwise(x, 0, n, x_ref, beta, keep, skip, store, <double*>NULL, terms,
                            block)


cdef inline double sum_exp_shifted_compensated(const double* x, Py_ssize_t n, double x_ref,
                                               double beta, Py_ssize_t skip, double* store,
                                               double* residual) noexcept nogil:
    """sum_exp_shifted of a float64 row (no mask) that also adds to residual[0] the first-order
    effect of the rounding of the exponents, sum_{i != skip} exp(w_i) * (exact w_i - w_i).

    exp(w_i) inherits the rounding of its argument: a relative error up to |w_i| eps / 2,
    which becomes the error of the whole sum when every term has a large |w_i| (a row
    whose maximum dominates: log1p(sum) is then small and needs that relative accuracy).
    sum + residual is accurate to a few ULP whatever the w_i.  Same pairwise order as
    sum_exp_shifted; the residual needs no such care (it is a correction).  Each x_i is
    read once, before store[i] is written, so `store` may alias `x` (in place).
    """
    return sum_exp_pairwise(x, 0, n, x_ref, beta, <const unsigned char*>NULL, skip, store,
                            residual, TERMS_LOG, PAIRWISE_BLOCK)


cdef inline void fill_special_row(floating* out, Py_ssize_t n, const unsigned char* keep,
                                  floating kept_value, floating excluded_value) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = kept_value if is_kept(keep, i) else excluded_value


cdef inline void softmax_row(const floating* x, Py_ssize_t n, double beta,
                             const unsigned char* keep, floating* out) noexcept nogil:
    """out = exp(z - max z) / sum exp(z - max z); excluded entries get exactly 0."""
    cdef RowReference ref = row_reference(x, n, beta, keep)
    cdef double inv_total
    if ref.kind == ROW_NONE_KEPT:
        fill_special_row(out, n, keep, 0.0, 0.0)
        return
    if ref.kind != ROW_FINITE:
        fill_special_row(out, n, keep, NAN, 0.0)
        return
    # exp(w_i) goes to `out` (safe when out aliases x: x_i is read before out_i is written,
    # and nothing reads x afterwards); the reference entry's exp(0) = 1 is added back here.
    inv_total = 1.0 / (1.0 + sum_exp_shifted(x, n, ref.x_ref, beta, keep, ref.index, out,
                                             TERMS_PROBABILITY))
    multiply_row(out, n, inv_total)


cdef inline double log_sum_exp_shifted(const floating* x, Py_ssize_t n, double beta,
                                       const unsigned char* keep, RowReference ref) noexcept nogil:
    """log(sum_i exp(w_i)) = log1p(t) for a ROW_FINITE row: accurate even when t << 1."""
    return log1p(sum_exp_shifted(x, n, ref.x_ref, beta, keep, ref.index, <floating*>NULL,
                                 TERMS_LOG))


cdef inline void log_softmax_row(const floating* x, Py_ssize_t n, double beta,
                                 const unsigned char* keep, floating* out) noexcept nogil:
    """out = w - log1p(t): a difference of a non-positive and a non-negative term, so it
    never cancels; excluded entries get -inf."""
    cdef RowReference ref = row_reference(x, n, beta, keep)
    cdef double log_total
    cdef Py_ssize_t i
    if ref.kind == ROW_NONE_KEPT:
        fill_special_row(out, n, keep, -INFINITY, -INFINITY)
        return
    if ref.kind != ROW_FINITE:
        fill_special_row(out, n, keep, NAN, -INFINITY)
        return
    log_total = log_sum_exp_shifted(x, n, beta, keep, ref)
    if floating is float:
        smx_shifted_minus_f32(x, out, n, ref.x_ref, beta, log_total)
    else:
        smx_shifted_minus_f64(x, out, n, ref.x_ref, beta, log_total)
    if keep != NULL:
        for i in range(n):
            if keep[i] == 0:
                out[i] = -INFINITY


cdef inline double logsumexp_row(const floating* x, Py_ssize_t n, double beta,
                                 const unsigned char* keep) noexcept nogil:
    """log(sum_i exp(beta * x_i)) = beta * x_ref + log1p(t), in double."""
    cdef RowReference ref = row_reference(x, n, beta, keep)
    if ref.kind == ROW_FINITE:
        return beta * ref.x_ref + log_sum_exp_shifted(x, n, beta, keep, ref)
    if ref.kind == ROW_NAN:
        return NAN
    if ref.kind == ROW_POS_INF:
        return INFINITY
    return -INFINITY   # ROW_ALL_NEG_INF or ROW_NONE_KEPT


# ---------------------------------------------------------------------------------------
# Tiles: rows along a non-last axis, gathered into contiguous rows and scattered back
# ---------------------------------------------------------------------------------------
#
# In a C-contiguous (outer, n, inner) array a row runs down a column, x[o, :, j], with
# stride `inner`.  The kernels for such layouts gather a tile of `width` neighbouring
# columns (contiguous in memory: width elements per class) into a small per-thread buffer
# as rows, apply the row functions of the contiguous case, and scatter the results back:
# the same values through the same functions, so bitwise the results of the contiguous
# layout, without a transposed copy of the whole array.

cdef enum:
    TILE_ELEMENTS = 1 << 15   # a tile holds at most this many elements: it stays in L2
    MAX_TILE_WIDTH = 16


cdef inline Py_ssize_t tile_width(Py_ssize_t n, Py_ssize_t inner) noexcept nogil:
    return max(1, min(TILE_ELEMENTS // n, MAX_TILE_WIDTH, inner))


cdef struct Tile:
    Py_ssize_t outer    # o: the outer index
    Py_ssize_t first    # j0: the tile's first column
    Py_ssize_t width    # w: its columns (the last tile of a row of columns may be narrower)


cdef inline Tile tile_at(Py_ssize_t t, Py_ssize_t inner, Py_ssize_t width) noexcept nogil:
    """Tile t of an (outer, n, inner) array cut into tiles of `width` columns, counted outer
    index by outer index: its rows are x[o, :, j0 + j] for j < w, at offset
    o * n * inner + j0 of the array."""
    cdef Tile tile
    cdef Py_ssize_t tiles_per_outer = (inner + width - 1) // width
    tile.outer = t // tiles_per_outer
    tile.first = (t % tiles_per_outer) * width
    tile.width = min(width, inner - tile.first)
    return tile


cdef inline Py_ssize_t tile_count(Py_ssize_t outer, Py_ssize_t inner,
                                  Py_ssize_t width) noexcept nogil:
    """How many tiles of `width` columns an (outer, n, inner) array has (see tile_at)."""
    return outer * ((inner + width - 1) // width)


cdef inline void gather_tile(const floating* x, Py_ssize_t n, Py_ssize_t stride,
                             Py_ssize_t width, floating* rows) noexcept nogil:
    """rows[j * n + c] = x[c * stride + j] for c < n, j < width."""
    if floating is float:
        smx_transpose_f32(x, stride, rows, n, n, width)
    else:
        smx_transpose_f64(x, stride, rows, n, n, width)


cdef inline void scatter_tile(const floating* rows, Py_ssize_t n, Py_ssize_t width,
                              floating* out, Py_ssize_t stride) noexcept nogil:
    """out[c * stride + j] = rows[j * n + c] for c < n, j < width."""
    if floating is float:
        smx_transpose_f32(rows, n, out, stride, width, n)
    else:
        smx_transpose_f64(rows, n, out, stride, width, n)
