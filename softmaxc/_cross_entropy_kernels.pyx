"""Batch kernels of the cross-entropy family (layer 2: see the design note in _rowops.pxd).

For every row of logits x (one sample: C classes) a kernel writes the row's loss, in
double, and optionally the row's gradient, from one traversal of the row while it is in
cache: no softmax array is formed and nothing is called twice.  Rows are independent and
each row's loss goes to its own slot of a double array, which the Python layer then sums
in a fixed order, so loss and gradient are bitwise identical for every thread count.

Notation (see :doc:`/derivations/cross-entropy`).  z = beta * x; ref is the entry of
largest z (row_reference); gap_c = z_ref - z_c >= 0 (minus shifted_logit); e_c =
exp(-gap_c); T = sum_{c != ref} e_c, so that logsumexp(z) - z_ref = log1p(T) and
p_c = e_c / (1 + T).  The row's target coefficients are a_c = w_c * q_c: class weight
times smoothed target, q = (1 - eps) * y + eps / C with y one-hot (index targets) or the
given probabilities.  Then

    loss = sum_c a_c * (logsumexp(z) - z_c) = S * log1p(T) + sum_c a_c * gap_c,
    d loss / d x_c = beta * (p_c * S - a_c),            S = sum_c a_c,

a sum of non-negative terms (never log of a rounded probability, nothing cancels).  When
the loss is mostly S * log1p(T) (a confidently correct row: T tiny, every e_c far below 1),
its relative accuracy is that of T, and each e_c carries the rounding of its exponent
(|gap_c| * eps / 2 relative): in float64, T is then summed with that rounding compensated
(sum_exp_shifted_compensated); float32 terms are exp of the exact gap (TERMS_LOG).  At the reference entry, where p_ref may round to 1 and the
target's mass mostly sits,

    d loss / d x_ref = beta * (S_off - S * T / (1 + T)),  S_off = sum_{c != ref} a_c,

using 1 - p_ref = T / (1 + T), which keeps the target-class gradient's relative accuracy
as p_target -> 1.  Callers guarantee rows > 0, C > 0, labels in [0, C) or -1 (ignored),
weights finite and >= 0, and matching shapes; bounds checks are off.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.math cimport log1p, NAN

from softmaxc._rowops cimport (
    PAIRWISE_BLOCK,
    ROW_FINITE,
    RowReference,
    gather_tile,
    multiply_row,
    pairwise_split,
    row_reference,
    scale_row,
    scatter_tile,
    shifted_logit,
    smx_simd_init,
    sum_exp_shifted,
    sum_exp_shifted_compensated,
    tile_width,
    TERMS_LOG,
)

smx_simd_init()   # the row loops' path (see _simd.h)


# ---------------------------------------------------------------------------------------
# Per-row functions used by this module only (layer 1)
# ---------------------------------------------------------------------------------------

cdef struct ClassSums:
    double coef            # sum_c b_c
    double coef_off_ref    # sum_{c != ref} b_c
    double weighted_gap    # sum_c b_c * gap_c (a term with b_c == 0 counts 0, even if gap_c = inf)


cdef inline double class_coefficient(Py_ssize_t c, const floating* y, const double* weight,
                                     double keep, double smooth) noexcept nogil:
    """b_c = w_c (1 without weights) times, for probability targets, keep * y_c + smooth."""
    cdef double b = 1.0 if weight == NULL else weight[c]
    if y != NULL:
        b = b * (keep * y[c] + smooth)
    return b


cdef inline ClassSums class_sums(const floating* x, Py_ssize_t start, Py_ssize_t stop,
                                 double x_ref, double beta, Py_ssize_t ref,
                                 const floating* y, const double* weight,
                                 double keep, double smooth) noexcept nogil:
    """The three sums of ClassSums over c in [start, stop), pairwise (the split of
    sum_exp_shifted), so the error grows like log2(C), not C."""
    cdef ClassSums sums, right
    cdef double b
    cdef Py_ssize_t c, half
    if stop - start > PAIRWISE_BLOCK:
        half = pairwise_split(start, stop)
        sums = class_sums(x, start, half, x_ref, beta, ref, y, weight, keep, smooth)
        right = class_sums(x, half, stop, x_ref, beta, ref, y, weight, keep, smooth)
        sums.coef += right.coef
        sums.coef_off_ref += right.coef_off_ref
        sums.weighted_gap += right.weighted_gap
        return sums
    sums.coef = sums.coef_off_ref = sums.weighted_gap = 0.0
    for c in range(start, stop):
        b = class_coefficient(c, y, weight, keep, smooth)
        sums.coef += b
        if c != ref:
            sums.coef_off_ref += b
        if b != 0:
            sums.weighted_gap += b * -shifted_logit(x[c], x_ref, beta)
    return sums


cdef inline void fill_row(floating* out, Py_ssize_t n, floating value) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(n):
        out[c] = value


cdef inline double cross_entropy_row(const floating* x, Py_ssize_t n, double beta,
                                     Py_ssize_t label, const floating* y,
                                     const double* weight, double keep, double smooth,
                                     double grad_factor, floating* grad) noexcept nogil:
    """The loss of one counted (not ignored) row, in double; its gradient row into `grad`.

    Index target: `label` in [0, n), `y` NULL.  Probability target: `y` the row of
    probabilities (`label` unused).  keep = 1 - eps, smooth = eps / n.  When `grad` is not
    NULL it receives grad_factor * (p_c * S - a_c), grad_factor = beta * reduction scale;
    `grad` may alias `x` (each x_c is read before grad_c is written).
    """
    cdef RowReference ref = row_reference(x, n, beta, <const unsigned char*>NULL)
    cdef ClassSums sums
    cdef double total, total_off_ref, weighted_gap   # S, S_off, sum_c a_c * gap_c
    cdef double label_weight = 0.0, label_coef = 0.0, label_exp = 0.0
    cdef double tail, residual = 0.0, inv_norm, scale_exp, smooth_grad, ref_coef, loss
    cdef Py_ssize_t c
    if ref.kind != ROW_FINITE:
        # NaN, +inf or a row of -inf: log_softmax is NaN, so are loss and gradient.
        if grad != NULL:
            fill_row(grad, n, <floating>NAN)
        return NAN

    if y == NULL:
        # a_c = w_c * smooth + [c == label] * w_label * keep: the one-hot part directly,
        # the smoothing part from the class sums of the weights alone (b_c = w_c).
        label_weight = 1.0 if weight == NULL else weight[label]
        label_coef = keep * label_weight
        total = label_coef
        total_off_ref = 0.0 if label == ref.index else label_coef
        weighted_gap = 0.0
        if label_coef != 0:
            weighted_gap = label_coef * -shifted_logit(x[label], ref.x_ref, beta)
        if smooth != 0:
            sums = class_sums(x, 0, n, ref.x_ref, beta, ref.index, y, weight, keep, smooth)
            total = total + smooth * sums.coef
            total_off_ref = total_off_ref + smooth * sums.coef_off_ref
            weighted_gap = weighted_gap + smooth * sums.weighted_gap
    else:
        sums = class_sums(x, 0, n, ref.x_ref, beta, ref.index, y, weight, keep, smooth)
        total = sums.coef
        total_off_ref = sums.coef_off_ref
        weighted_gap = sums.weighted_gap

    # T = sum_{c != ref} e_c, with e_c -> grad when asked (the last read of x).  float32
    # logits: every e_c is exp of the exact gap to float32 accuracy (TERMS_LOG), so T, and
    # the loss even where it is ~ S * T, are accurate to float32 ULPs (the vector float
    # lanes, twice as fast as double ones).  float64: when the target's mean gap is below
    # one nat (a confidently correct row: loss ~ S * T), the loss needs T to full double
    # relative accuracy, so the rounding of the exponents is compensated.
    if floating is float:
        tail = sum_exp_shifted(x, n, ref.x_ref, beta, <const unsigned char*>NULL, ref.index,
                               grad, TERMS_LOG)
    else:
        if weighted_gap < total:
            tail = sum_exp_shifted_compensated(x, n, ref.x_ref, beta, ref.index, grad,
                                               &residual)
            tail = tail + residual
        else:
            tail = sum_exp_shifted(x, n, ref.x_ref, beta, <const unsigned char*>NULL,
                                   ref.index, grad, TERMS_LOG)
    loss = total * log1p(tail) + weighted_gap
    if grad == NULL:
        return loss

    # grad_c = grad_factor * (p_c S - a_c), p_c = e_c / (1 + T).
    inv_norm = 1.0 / (1.0 + tail)
    scale_exp = grad_factor * total * inv_norm
    if y == NULL:
        label_exp = grad[label]
        smooth_grad = grad_factor * smooth
        if weight == NULL and smooth_grad == 0:
            multiply_row(grad, n, scale_exp)
        elif weight == NULL:
            scale_row(grad, grad, n, scale_exp, smooth_grad)
        else:
            for c in range(n):
                grad[c] = <floating>(scale_exp * grad[c] - smooth_grad * weight[c])
        if label != ref.index:   # here p_label <= 1/2: the plain formula is accurate
            grad[label] = <floating>(grad_factor * (label_exp * inv_norm * total
                                                    - label_weight * (keep + smooth)))
    else:
        for c in range(n):
            grad[c] = <floating>(scale_exp * grad[c]
                                 - grad_factor * class_coefficient(c, y, weight, keep, smooth))
    # At the most probable class p_ref may round to 1.  When the target's mass sits mostly
    # there, p_ref S - a_ref is formed as (S - a_ref) - (1 - p_ref) S with 1 - p_ref =
    # T / (1 + T), which keeps its relative accuracy as p_ref -> 1; otherwise directly,
    # where that form would cancel (S_off close to (1 - p_ref) S) and this one does not.
    if total_off_ref < 0.5 * total:
        grad[ref.index] = <floating>(grad_factor * (total_off_ref - total * (tail * inv_norm)))
    else:
        if y == NULL:
            ref_coef = (1.0 if weight == NULL else weight[ref.index]) * (
                smooth + (keep if label == ref.index else 0.0))
        else:
            ref_coef = class_coefficient(ref.index, y, weight, keep, smooth)
        grad[ref.index] = <floating>(grad_factor * (inv_norm * total - ref_coef))
    return loss


# ---------------------------------------------------------------------------------------
# Batch kernels (layer 2)
# ---------------------------------------------------------------------------------------

cdef inline const double* weight_base(const double[::1] weight) noexcept:
    if weight is None:
        return NULL
    return &weight[0]


def cross_entropy_index_rows(const floating[:, ::1] x,        # IN  (rows, C) logits
                             const Py_ssize_t[::1] labels,   # IN  (rows,) in [0, C), -1: ignored
                             const double[::1] weight,       # IN  (C,) or None
                             double label_smoothing,
                             double beta,
                             double grad_scale,              # 1 / normaliser for "mean", else 1
                             double[::1] loss,               # OUT (rows,) per-row losses
                             floating[:, ::1] grad,          # OUT (rows, C) or None (loss only)
                             int n_threads):
    """Cross-entropy of rows with class-index targets; ignored rows get loss 0, gradient 0."""
    cdef Py_ssize_t r, n = x.shape[1]
    cdef const double* weight_ptr = weight_base(weight)
    cdef floating* grad_ptr = NULL
    cdef double keep = 1.0 - label_smoothing, smooth = label_smoothing / n
    cdef double grad_factor = beta * grad_scale
    if grad is not None:
        grad_ptr = &grad[0, 0]
    for r in prange(x.shape[0], nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        if labels[r] < 0:
            loss[r] = 0.0
            if grad_ptr != NULL:
                fill_row(grad_ptr + r * n, n, 0)
        else:
            loss[r] = cross_entropy_row(&x[r, 0], n, beta, labels[r], <const floating*>NULL,
                                        weight_ptr, keep, smooth, grad_factor,
                                        NULL if grad_ptr == NULL else grad_ptr + r * n)


def cross_entropy_prob_rows(const floating[:, ::1] x,         # IN  (rows, C) logits
                            const floating[:, ::1] probs,     # IN  (rows, C) target probabilities
                            const double[::1] weight,         # IN  (C,) or None
                            double label_smoothing,
                            double beta,
                            double grad_scale,                # 1 / rows for "mean", else 1
                            double[::1] loss,                 # OUT (rows,) per-row losses
                            floating[:, ::1] grad,            # OUT (rows, C) or None (loss only)
                            int n_threads):
    """Cross-entropy of rows with probability targets (`probs` must not overlap `grad`)."""
    cdef Py_ssize_t r, n = x.shape[1]
    cdef const double* weight_ptr = weight_base(weight)
    cdef floating* grad_ptr = NULL
    cdef double keep = 1.0 - label_smoothing, smooth = label_smoothing / n
    cdef double grad_factor = beta * grad_scale
    if grad is not None:
        grad_ptr = &grad[0, 0]
    for r in prange(x.shape[0], nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        loss[r] = cross_entropy_row(&x[r, 0], n, beta, 0, &probs[r, 0], weight_ptr, keep,
                                    smooth, grad_factor,
                                    NULL if grad_ptr == NULL else grad_ptr + r * n)


cdef int index_columns_kernel(const floating* x, const Py_ssize_t* labels, const double* weight,
                              double keep, double smooth, double beta, double grad_factor,
                              double* loss, floating* grad, Py_ssize_t outer, Py_ssize_t n,
                              Py_ssize_t inner, int n_threads) noexcept nogil:
    """cross_entropy_index_rows for rows along the class axis of a C-contiguous (outer, n,
    inner) array, in tiles (see _rowops.pxd): row (o, j) is x[o, :, j], its label and loss
    at o * inner + j.  0 on success, -1 if out of memory."""
    cdef Py_ssize_t width = tile_width(n, inner)
    cdef Py_ssize_t tiles_per_outer = (inner + width - 1) // width
    cdef Py_ssize_t t, o, j, j0, w, r
    cdef floating* rows
    cdef int failed = 0
    with parallel(num_threads=n_threads, use_threads_if=n_threads > 1):
        rows = <floating*>malloc(width * n * sizeof(floating))
        for t in prange(outer * tiles_per_outer, schedule="static"):
            if rows == NULL:
                failed += 1   # a reduction: any thread without a buffer
            else:
                o = t // tiles_per_outer
                j0 = (t % tiles_per_outer) * width
                w = min(width, inner - j0)
                gather_tile(x + o * n * inner + j0, n, inner, w, rows)
                for j in range(w):
                    r = o * inner + j0 + j
                    if labels[r] < 0:
                        loss[r] = 0.0
                        fill_row(rows + j * n, n, 0)
                    else:
                        # the gradient overwrites the gathered row in place
                        loss[r] = cross_entropy_row(rows + j * n, n, beta, labels[r],
                                                    <const floating*>NULL, weight, keep,
                                                    smooth, grad_factor,
                                                    NULL if grad == NULL else rows + j * n)
                if grad != NULL:
                    scatter_tile(rows, n, w, grad + o * n * inner + j0, inner)
        free(rows)
    return -1 if failed else 0


def cross_entropy_index_columns(const floating[:, :, ::1] x,    # IN  (outer, C, inner) logits
                                const Py_ssize_t[::1] labels,   # IN  (outer * inner,), -1: ignored
                                const double[::1] weight,       # IN  (C,) or None
                                double label_smoothing,
                                double beta,
                                double grad_scale,              # 1 / normaliser for "mean", else 1
                                double[::1] loss,               # OUT (outer * inner,)
                                floating[:, :, ::1] grad,       # OUT (outer, C, inner) or None
                                int n_threads):
    """cross_entropy_index_rows with the classes along axis 1 of a C-contiguous array
    (PyTorch's (N, C, d) layout), without a transposed copy; bitwise the same results.
    `grad` may be `x` itself."""
    cdef Py_ssize_t n = x.shape[1]
    cdef floating* grad_ptr = NULL if grad is None else &grad[0, 0, 0]
    cdef const double* weight_ptr = weight_base(weight)
    cdef int status
    with nogil:
        status = index_columns_kernel(&x[0, 0, 0], &labels[0], weight_ptr,
                                      1.0 - label_smoothing, label_smoothing / n, beta,
                                      beta * grad_scale, &loss[0], grad_ptr, x.shape[0], n,
                                      x.shape[2], n_threads)
    if status != 0:
        raise MemoryError("softmaxc: no memory for the per-thread tile buffers")
