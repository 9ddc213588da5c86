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
from libc.math cimport exp, INFINITY

from softmaxc._rowops cimport PAIRWISE_BLOCK


# ---------------------------------------------------------------------------------------
# Per-row helpers (layer 1), used by this module only
# ---------------------------------------------------------------------------------------

# The three row sums the derivatives need.
cdef enum RowSum:
    SUM_G_TIMES_P    # sum_k g_k p_k over p_k != 0            (softmax_backward)
    SUM_G_KEPT       # sum_k g_k over log p_k != -inf         (log_softmax_backward)
    SUM_P_EXCEPT     # sum_{k != skip} p_k                    (Jacobian diagonal)


cdef inline double row_term(RowSum kind, const floating* g, const floating* p,
                            Py_ssize_t k, Py_ssize_t skip) noexcept nogil:
    if kind == SUM_G_TIMES_P:
        return <double>g[k] * p[k] if p[k] != 0 else 0.0
    if kind == SUM_G_KEPT:
        return <double>g[k] if p[k] != -INFINITY else 0.0
    return <double>p[k] if k != skip else 0.0


cdef inline double row_sum_block(RowSum kind, const floating* g, const floating* p,
                                 Py_ssize_t start, Py_ssize_t stop,
                                 Py_ssize_t skip) noexcept nogil:
    cdef double acc[4]
    cdef Py_ssize_t k
    acc[0] = acc[1] = acc[2] = acc[3] = 0.0
    for k in range(start, stop):
        acc[k & 3] += row_term(kind, g, p, k, skip)
    return (acc[0] + acc[1]) + (acc[2] + acc[3])


cdef inline double row_sum(RowSum kind, const floating* g, const floating* p,
                           Py_ssize_t start, Py_ssize_t stop, Py_ssize_t skip) noexcept nogil:
    """Pairwise sum in double of the terms `kind` over k in [start, stop).

    Same split as `sum_exp_shifted` in _rowops.pxd: blocks of PAIRWISE_BLOCK terms, halves
    aligned to the block, so the order of additions depends only on n.
    """
    cdef Py_ssize_t half
    if stop - start <= PAIRWISE_BLOCK:
        return row_sum_block(kind, g, p, start, stop, skip)
    half = start + ((stop - start) // (2 * PAIRWISE_BLOCK)) * PAIRWISE_BLOCK
    if half == start:
        half = start + PAIRWISE_BLOCK
    return (row_sum(kind, g, p, start, half, skip)
            + row_sum(kind, g, p, half, stop, skip))


cdef inline void softmax_backward_row(const floating* g, const floating* p, Py_ssize_t n,
                                      double beta, floating* out) noexcept nogil:
    """out_i = beta * p_i * (g_i - sum_k g_k p_k): the row of grad @ J, J never formed."""
    cdef double s = row_sum(SUM_G_TIMES_P, g, p, 0, n, -1)
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] != 0:
            out[i] = <floating>(beta * p[i] * (<double>g[i] - s))
        else:
            out[i] = 0


cdef inline void log_softmax_backward_row(const floating* g, const floating* log_p,
                                          Py_ssize_t n, double beta,
                                          floating* out) noexcept nogil:
    """out_i = beta * (g_i - exp(log p_i) * sum_k g_k), the sum over unmasked k."""
    cdef double total = row_sum(SUM_G_KEPT, g, log_p, 0, n, -1)
    cdef Py_ssize_t i
    for i in range(n):
        if log_p[i] != -INFINITY:
            out[i] = <floating>(beta * (<double>g[i] - exp(log_p[i]) * total))
        else:
            out[i] = 0


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
    top_complement = row_sum(SUM_P_EXCEPT, p, p, 0, n, top)
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
    for r in prange(grad.shape[0], nogil=True, schedule="static", num_threads=n_threads):
        softmax_backward_row(&grad[r, 0], &probs[r, 0], n, beta, &out[r, 0])


def log_softmax_backward_rows(const floating[:, ::1] grad,        # IN  (rows, n)
                              const floating[:, ::1] log_probs,   # IN  (rows, n)
                              floating[:, ::1] out,               # OUT (rows, n), may alias
                              double beta,
                              int n_threads):
    cdef Py_ssize_t r, n = grad.shape[1]
    for r in prange(grad.shape[0], nogil=True, schedule="static", num_threads=n_threads):
        log_softmax_backward_row(&grad[r, 0], &log_probs[r, 0], n, beta, &out[r, 0])


def softmax_jacobian_rows(const floating[:, ::1] probs,   # IN  (rows, n)
                          floating[:, :, ::1] out,        # OUT (rows, n, n)
                          double beta,
                          int n_threads):
    cdef Py_ssize_t r, n = probs.shape[1]
    for r in prange(probs.shape[0], nogil=True, schedule="static", num_threads=n_threads):
        softmax_jacobian_row(&probs[r, 0], n, beta, &out[r, 0, 0])
