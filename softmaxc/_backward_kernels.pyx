"""Batch kernels for the derivatives of softmax (layer 2: see the design note in _rowops.pxd).

Each kernel reads rows of probabilities (or log-probabilities) and, for the backward
products, rows of upstream gradients, as C-contiguous (rows, n) memoryviews, and runs rows
in parallel with the GIL released.  Rows are independent and every row sum is pairwise in a
fixed order, so results are bitwise identical for every thread count.  Callers guarantee
rows > 0, n > 0 and matching shapes.  `out` may alias `grad` or `probs` exactly (in place):
each row reads all its inputs for its sum first, then reads entry i before writing out[i].

Masked entries: an entry with p_k = 0 (log p_k = -inf), i.e. excluded by `where=` or by a
-inf logit in the forward pass, is outside the graph.  It contributes nothing to the row
sums and its derivative is exactly +0.0, whatever `grad` holds there (so a finite or even a
NaN upstream gradient at a masked entry never turns into NaN through 0 * g).
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expf, INFINITY

from softmaxc._rowops cimport PAIRWISE_BLOCK, pairwise_split, rows_per_chunk


# ---------------------------------------------------------------------------------------
# Per-row helpers (layer 1), used by this module only
# ---------------------------------------------------------------------------------------

# The row sums the derivatives need.  The first three have branch-free terms that the
# compiler turns into SIMD code; they equal the masked sums whenever `grad` is finite at the
# masked entries (then g_k * 0 = 0).  When a fast sum comes out NaN or infinite, the row is
# summed again with the *_MASKED terms, which skip masked entries explicitly, so that a NaN
# or inf upstream gradient at a masked entry cannot spoil the row (slower; rare).
cdef enum RowSum:
    SUM_G_TIMES_P           # sum_k g_k p_k                            (softmax_backward)
    SUM_G_KEPT              # sum_k g_k [log p_k != -inf]              (log_softmax_backward)
    SUM_P                   # sum_k p_k                                (Jacobian diagonal)
    SUM_G_TIMES_P_MASKED    # sum_k g_k p_k over p_k != 0 only
    SUM_G_KEPT_MASKED       # sum_k g_k over log p_k != -inf only


cdef inline double row_term(RowSum kind, const floating* g, const floating* p,
                            Py_ssize_t k) noexcept nogil:
    if kind == SUM_G_TIMES_P:
        return <double>g[k] * p[k]
    if kind == SUM_G_KEPT:
        return <double>g[k] * <double>(p[k] != -INFINITY)
    if kind == SUM_P:
        return p[k]
    if kind == SUM_G_TIMES_P_MASKED:
        return <double>g[k] * p[k] if p[k] != 0 else 0.0
    return <double>g[k] if p[k] != -INFINITY else 0.0


cdef inline double lane_sum(RowSum kind, const floating* g, const floating* p,
                            Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    """Sum of the terms over [start, stop) in four interleaved double accumulators."""
    cdef double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0
    cdef Py_ssize_t k = start
    while k + 4 <= stop:
        a0 += row_term(kind, g, p, k)
        a1 += row_term(kind, g, p, k + 1)
        a2 += row_term(kind, g, p, k + 2)
        a3 += row_term(kind, g, p, k + 3)
        k += 4
    while k < stop:
        a0 += row_term(kind, g, p, k)
        k += 1
    return (a0 + a1) + (a2 + a3)


cdef inline double block_sum(RowSum kind, const floating* g, const floating* p,
                             Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    # Each call below passes a literal kind, so each inlined copy of lane_sum has a
    # constant kind and a branch-free body: vectorised, where one shared loop testing
    # `kind` inside would not be.
    if kind == SUM_G_TIMES_P:
        return lane_sum(SUM_G_TIMES_P, g, p, start, stop)
    if kind == SUM_G_KEPT:
        return lane_sum(SUM_G_KEPT, g, p, start, stop)
    if kind == SUM_P:
        return lane_sum(SUM_P, g, p, start, stop)
    if kind == SUM_G_TIMES_P_MASKED:
        return lane_sum(SUM_G_TIMES_P_MASKED, g, p, start, stop)
    return lane_sum(SUM_G_KEPT_MASKED, g, p, start, stop)


cdef double row_sum(RowSum kind, const floating* g, const floating* p,
                    Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    """Pairwise sum in double of the terms `kind` over k in [start, stop).

    Same split as `sum_exp_shifted` in _rowops.pxd: blocks of at most PAIRWISE_BLOCK
    terms, halves at multiples of the block, so the order of additions depends only on
    (start, stop), never on threads.  Error O(log2(n) eps) instead of O(n eps).
    """
    cdef Py_ssize_t half
    if stop - start <= PAIRWISE_BLOCK:
        return block_sum(kind, g, p, start, stop)
    half = pairwise_split(start, stop)
    return row_sum(kind, g, p, start, half) + row_sum(kind, g, p, half, stop)


cdef inline double checked_row_sum(RowSum fast, RowSum masked, const floating* g,
                                   const floating* p, Py_ssize_t n) noexcept nogil:
    """The fast sum, or the masked one when the fast one is NaN or infinite."""
    cdef double total = row_sum(fast, g, p, 0, n)
    if total - total != 0:   # NaN or +-inf
        total = row_sum(masked, g, p, 0, n)
    return total


cdef inline double exp_of(floating x) noexcept nogil:
    # float32 log-probabilities carry float32 rounding already: expf loses nothing more
    # and is about twice as fast as exp.
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline void softmax_backward_row(const floating* g, const floating* p, Py_ssize_t n,
                                      double beta, floating* out) noexcept nogil:
    """out_i = beta * p_i * (g_i - sum_k g_k p_k): the row of grad @ J, J never formed."""
    cdef double s = checked_row_sum(SUM_G_TIMES_P, SUM_G_TIMES_P_MASKED, g, p, n)
    cdef double p_i, value
    cdef Py_ssize_t i
    for i in range(n):
        # Load both inputs unconditionally, then select: vectorisable, and safe in place.
        p_i = p[i]
        value = beta * p_i * (<double>g[i] - s)
        out[i] = <floating>value if p_i != 0 else 0


cdef inline void log_softmax_backward_row(const floating* g, const floating* log_p,
                                          Py_ssize_t n, double beta,
                                          floating* out) noexcept nogil:
    """out_i = beta * (g_i - exp(log p_i) * sum_k g_k), the sum over unmasked k."""
    cdef double total = checked_row_sum(SUM_G_KEPT, SUM_G_KEPT_MASKED, g, log_p, n)
    cdef double value
    cdef floating log_p_i
    cdef Py_ssize_t i
    for i in range(n):
        log_p_i = log_p[i]
        value = beta * (<double>g[i] - exp_of(log_p_i) * total)
        out[i] = <floating>value if log_p_i != -INFINITY else 0


cdef inline void softmax_jacobian_row(const floating* p, Py_ssize_t n, double beta,
                                      floating* out) noexcept nogil:
    """out[i * n + j] = beta * p_i * (delta_ij - p_j), an (n, n) block, row-major."""
    cdef Py_ssize_t i, j, top = 0
    cdef double bp, top_complement
    for i in range(1, n):
        if p[i] > p[top]:
            top = i
    # 1 - p_top cancels when p_top is close to 1 (float32: p_top rounds to 1 as soon as the
    # others sum below 6e-8, and J_top,top would be 0).  The sum of the other probabilities
    # is the same quantity without cancellation, accurate to a few ULP.  For every other i,
    # p_i <= 1/2 and 1 - p_i is exact to one rounding.
    top_complement = row_sum(SUM_P, p, p, 0, top) + row_sum(SUM_P, p, p, top + 1, n)
    # `0.0 - x` and `x + 0.0` turn a -0.0 into +0.0 (and change nothing else), so that an
    # entry with p_i = 0 or p_j = 0 (a -inf logit) is exactly +0.0 for either sign of beta.
    for i in range(n):
        bp = beta * p[i]
        for j in range(n):
            out[i * n + j] = <floating>(0.0 - bp * p[j])
        out[i * n + i] = <floating>(bp * (top_complement if i == top else 1.0 - p[i]) + 0.0)


# ---------------------------------------------------------------------------------------
# Batch kernels (layer 2)
# ---------------------------------------------------------------------------------------

def softmax_backward_rows(const floating[:, ::1] grad,    # IN  (rows, n)
                          const floating[:, ::1] probs,   # IN  (rows, n)
                          floating[:, ::1] out,           # OUT (rows, n), may alias an input
                          double beta,
                          int n_threads):
    cdef Py_ssize_t r, n = grad.shape[1]
    for r in prange(grad.shape[0], nogil=True, schedule="dynamic", chunksize=rows_per_chunk(n),
                    num_threads=n_threads, use_threads_if=n_threads > 1):
        softmax_backward_row(&grad[r, 0], &probs[r, 0], n, beta, &out[r, 0])


def log_softmax_backward_rows(const floating[:, ::1] grad,        # IN  (rows, n)
                              const floating[:, ::1] log_probs,   # IN  (rows, n)
                              floating[:, ::1] out,               # OUT (rows, n), may alias
                              double beta,
                              int n_threads):
    cdef Py_ssize_t r, n = grad.shape[1]
    for r in prange(grad.shape[0], nogil=True, schedule="dynamic", chunksize=rows_per_chunk(n),
                    num_threads=n_threads, use_threads_if=n_threads > 1):
        log_softmax_backward_row(&grad[r, 0], &log_probs[r, 0], n, beta, &out[r, 0])


def softmax_jacobian_rows(const floating[:, ::1] probs,   # IN  (rows, n)
                          floating[:, :, ::1] out,        # OUT (rows, n, n)
                          double beta,
                          int n_threads):
    cdef Py_ssize_t r, n = probs.shape[1]
    for r in prange(probs.shape[0], nogil=True, schedule="dynamic",
                    chunksize=rows_per_chunk(n * n), num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        softmax_jacobian_row(&probs[r, 0], n, beta, &out[r, 0, 0])
