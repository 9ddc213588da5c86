# Per-row numerics of softmaxc: inline C functions over one row of logits.
#
# Design (the three layers of softmaxc, one direction only):
#   1. this file: per-row `cdef inline ... noexcept nogil` functions on raw pointers;
#      no Python objects, no allocation, no bounds checks.  Every pointer and length
#      they receive was validated by layer 3.
#   2. `*_kernels.pyx`: batch loops over rows with `prange`, typed memoryviews in, GIL
#      released; one call per public operation.
#   3. the Python modules (`_softmax.py`, ...): validate, convert, allocate, document.
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
from libc.math cimport exp, fma, log1p, INFINITY, NAN

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

# Leaves of the pairwise summation: blocks of this many terms are summed with four
# interleaved accumulators (vectorisable); longer ranges are split in halves, aligned to
# the block, so the order of additions depends only on n, never on threads.
cdef enum:
    PAIRWISE_BLOCK = 128


cdef inline Py_ssize_t pairwise_split(Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    """Where a pairwise sum over [start, stop) (longer than one block) splits: the largest
    block-aligned point at or before the middle, at least one block in.  Any pairwise sum
    in softmaxc splits here, so its order of additions depends only on the length."""
    cdef Py_ssize_t half = start + ((stop - start) // (2 * PAIRWISE_BLOCK)) * PAIRWISE_BLOCK
    return start + PAIRWISE_BLOCK if half == start else half


cdef inline bint is_kept(const unsigned char* keep, Py_ssize_t i) noexcept nogil:
    return keep == NULL or keep[i] != 0


cdef inline RowReference row_reference(const floating* x, Py_ssize_t n, double beta,
                                       const unsigned char* keep) noexcept nogil:
    """Locate the entry maximising beta * x among the kept entries and classify the row."""
    cdef RowReference ref
    cdef double sign = -1.0 if beta < 0 else 1.0   # max of sign*x is the argmax of beta*x
    cdef double best = -INFINITY, value
    cdef bint has_nan = False
    cdef Py_ssize_t i
    ref.index = -1
    ref.x_ref = NAN
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


cdef inline double shifted_logit(floating x_i, double x_ref, double beta) noexcept nogil:
    """w_i = beta * (x_i - x_ref) <= 0: z_i minus the row maximum, rounded relative to itself."""
    cdef double difference = <double>x_i - x_ref
    if difference == INFINITY or difference == -INFINITY:
        # Only for |x| near DBL_MAX (e.g. 1e308 - -1e308) or an infinite x_i.  The
        # difference overflowed but beta times it need not: beta = 0 must give w = 0 (not
        # 0 * inf = NaN) and beta = 1e-308 a finite w.  Both products are then finite
        # (or x_i's own infinity, which gives -inf or NaN exactly as before).
        return beta * <double>x_i - beta * x_ref
    return beta * difference


cdef inline double sum_exp_block(const floating* x, Py_ssize_t start, Py_ssize_t stop,
                                 double x_ref, double beta, const unsigned char* keep,
                                 Py_ssize_t skip, floating* store) noexcept nogil:
    cdef double acc[4]
    cdef double e
    cdef Py_ssize_t i
    acc[0] = acc[1] = acc[2] = acc[3] = 0.0
    for i in range(start, stop):
        if is_kept(keep, i):
            e = exp(shifted_logit(x[i], x_ref, beta))
        else:
            e = 0.0
        if store != NULL:
            store[i] = <floating>e
        if i != skip:
            acc[i & 3] += e
    return (acc[0] + acc[1]) + (acc[2] + acc[3])


cdef inline double sum_exp_shifted(const floating* x, Py_ssize_t start, Py_ssize_t stop,
                                   double x_ref, double beta, const unsigned char* keep,
                                   Py_ssize_t skip, floating* store) noexcept nogil:
    """Pairwise sum of exp(w_i) over kept i in [start, stop), i != skip, in double.

    When `store` is not NULL, exp(w_i) (0 for excluded entries) is also written to store[i].
    The error is O(log2(n) * eps) instead of the O(n * eps) of one running sum.
    """
    cdef Py_ssize_t half
    if stop - start <= PAIRWISE_BLOCK:
        return sum_exp_block(x, start, stop, x_ref, beta, keep, skip, store)
    half = start + ((stop - start) // (2 * PAIRWISE_BLOCK)) * PAIRWISE_BLOCK
    if half == start:
        half = start + PAIRWISE_BLOCK
    return (sum_exp_shifted(x, start, half, x_ref, beta, keep, skip, store)
            + sum_exp_shifted(x, half, stop, x_ref, beta, keep, skip, store))


cdef inline double shifted_logit_error(floating x_i, double x_ref, double beta,
                                       double w_i) noexcept nogil:
    """beta * (x_i - x_ref) - w_i for w_i = shifted_logit(x_i, x_ref, beta), x_i finite.

    The exact error of the difference (TwoSum: additions only, so no FP contraction can
    alter it) times beta, plus the exact error of the product (fma; none when beta == 1).
    """
    cdef double a = <double>x_i, b = -x_ref
    cdef double difference = a + b
    cdef double b_part = difference - a
    cdef double difference_error = (a - (difference - b_part)) + (b - b_part)
    cdef double product_error = 0.0 if beta == 1.0 else fma(beta, difference, -w_i)
    return product_error + beta * difference_error


cdef inline double sum_exp_compensated_block(const floating* x, Py_ssize_t start,
                                             Py_ssize_t stop, double x_ref, double beta,
                                             Py_ssize_t skip, floating* store,
                                             double* residual) noexcept nogil:
    cdef double acc[4]
    cdef double correction = 0.0, w, e
    cdef Py_ssize_t i
    acc[0] = acc[1] = acc[2] = acc[3] = 0.0
    for i in range(start, stop):
        w = shifted_logit(x[i], x_ref, beta)
        e = exp(w)
        if store != NULL:
            store[i] = <floating>e
        if i != skip and e != 0:   # e == 0 also covers x_i = -inf, whose error is NaN
            acc[i & 3] += e
            correction += e * shifted_logit_error(x[i], x_ref, beta, w)
    residual[0] += correction
    return (acc[0] + acc[1]) + (acc[2] + acc[3])


cdef inline double sum_exp_shifted_compensated(const floating* x, Py_ssize_t start,
                                               Py_ssize_t stop, double x_ref, double beta,
                                               Py_ssize_t skip, floating* store,
                                               double* residual) noexcept nogil:
    """sum_exp_shifted (no mask) that also adds to residual[0] the first-order effect of
    the rounding of the exponents, sum_{i != skip} exp(w_i) * (exact w_i - w_i).

    exp(w_i) inherits the rounding of its argument: a relative error up to |w_i| eps / 2,
    which becomes the error of the whole sum when every term has a large |w_i| (a row
    whose maximum dominates: log1p(sum) is then small and needs that relative accuracy).
    sum + residual is accurate to a few ULP whatever the w_i.  Same pairwise order as
    sum_exp_shifted; the residual needs no such care (it is a correction).
    """
    cdef Py_ssize_t half
    if stop - start <= PAIRWISE_BLOCK:
        return sum_exp_compensated_block(x, start, stop, x_ref, beta, skip, store, residual)
    half = pairwise_split(start, stop)
    return (sum_exp_shifted_compensated(x, start, half, x_ref, beta, skip, store, residual)
            + sum_exp_shifted_compensated(x, half, stop, x_ref, beta, skip, store, residual))


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
    cdef Py_ssize_t i
    if ref.kind == ROW_NONE_KEPT:
        fill_special_row(out, n, keep, 0.0, 0.0)
        return
    if ref.kind != ROW_FINITE:
        fill_special_row(out, n, keep, NAN, 0.0)
        return
    # exp(w_i) goes to `out` (safe when out aliases x: x_i is read before out_i is written,
    # and nothing reads x afterwards); the reference entry's exp(0) = 1 is added back here.
    inv_total = 1.0 / (1.0 + sum_exp_shifted(x, 0, n, ref.x_ref, beta, keep, ref.index, out))
    for i in range(n):
        out[i] = <floating>(out[i] * inv_total)


cdef inline double log_sum_exp_shifted(const floating* x, Py_ssize_t n, double beta,
                                       const unsigned char* keep, RowReference ref) noexcept nogil:
    """log(sum_i exp(w_i)) = log1p(t) for a ROW_FINITE row: accurate even when t << 1."""
    return log1p(sum_exp_shifted(x, 0, n, ref.x_ref, beta, keep, ref.index, <floating*>NULL))


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
    for i in range(n):
        if is_kept(keep, i):
            out[i] = <floating>(shifted_logit(x[i], ref.x_ref, beta) - log_total)
        else:
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
