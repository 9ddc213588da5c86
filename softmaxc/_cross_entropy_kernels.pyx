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
weights finite and >= 0, and matching shapes; bounds checks are off.  cross_entropy_fast at
the end takes the common call straight from the public functions (see _fastpath.pxd).
"""

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport log1p, NAN
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp

from softmaxc._fastpath cimport (
    exact_finite_float,
    exact_int,
    is_last_axis,
    is_plain_output,
    is_thread_count,
    kernel_threads,
    plain_float_type,
)

from softmaxc._rowops cimport (
    PAIRWISE_BLOCK,
    ROW_FINITE,
    RowReference,
    gather_tile,
    multiply_row,
    pairwise_split,
    row_reference,
    rows_per_chunk,
    scale_row,
    scatter_tile,
    shifted_logit,
    smx_simd_init,
    sum_exp_shifted,
    sum_exp_shifted_compensated,
    Tile,
    tile_at,
    tile_count,
    tile_width,
    TERMS_LOG,
)

smx_simd_init()   # the row loops' path (see _simd.h)
cnp.import_array()


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


cdef inline double index_row(const floating* x, Py_ssize_t n, double beta, Py_ssize_t label,
                             const double* weight, double keep, double smooth,
                             double grad_factor, floating* grad) noexcept nogil:
    """cross_entropy_row for a class-index target; label -1 (ignored): loss 0, gradient 0."""
    if label < 0:
        if grad != NULL:
            fill_row(grad, n, 0)
        return 0.0
    return cross_entropy_row(x, n, beta, label, <const floating*>NULL, weight, keep, smooth,
                             grad_factor, grad)


# ---------------------------------------------------------------------------------------
# Batch kernels (layer 2)
# ---------------------------------------------------------------------------------------

cdef inline const double* weight_base(const double[::1] weight) noexcept:
    if weight is None:
        return NULL
    return &weight[0]


cdef void index_rows_kernel(const floating* x, const Py_ssize_t* labels, const double* weight,
                            double label_smoothing, double beta, double grad_scale, double* loss,
                            floating* grad, Py_ssize_t rows, Py_ssize_t n,
                            int n_threads) noexcept nogil:
    """Every row of the C-contiguous (rows, n) logits at x, in parallel: the batch loop of
    cross_entropy_index_rows and of the fast path.  `grad` (rows, n) or NULL."""
    cdef double keep = 1.0 - label_smoothing, smooth = label_smoothing / n
    cdef double grad_factor = beta * grad_scale
    cdef Py_ssize_t r
    if n_threads <= 1:
        # Not even an inactive parallel region: libgomp sets one up for about 1 us.
        for r in range(rows):
            loss[r] = index_row(x + r * n, n, beta, labels[r], weight, keep, smooth, grad_factor,
                                grad if grad == NULL else grad + r * n)
        return
    for r in prange(rows, schedule="dynamic", chunksize=rows_per_chunk(n),
                    num_threads=n_threads):
        loss[r] = index_row(x + r * n, n, beta, labels[r], weight, keep, smooth, grad_factor,
                            grad if grad == NULL else grad + r * n)


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
    # index_rows_kernel indexes raw pointers, which no bounds check (not even a
    # SOFTMAXC_DEBUG build's) would catch: the buffers must match x's (rows, C).
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    if (labels.shape[0] != rows or loss.shape[0] != rows
            or (grad is not None and (grad.shape[0] != rows or grad.shape[1] != n))
            or (weight is not None and weight.shape[0] != n)):
        raise ValueError(f"labels, loss, grad or weight does not fit x of shape ({rows}, {n})")
    cdef const double* weight_ptr = weight_base(weight)
    cdef floating* grad_ptr = NULL if grad is None else &grad[0, 0]
    with nogil:
        index_rows_kernel(&x[0, 0], &labels[0], weight_ptr, label_smoothing, beta, grad_scale,
                          &loss[0], grad_ptr, rows, n, n_threads)


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
    for r in prange(x.shape[0], nogil=True, schedule="dynamic", chunksize=rows_per_chunk(n),
                    num_threads=n_threads, use_threads_if=n_threads > 1):
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
    cdef Py_ssize_t t, j, r
    cdef Tile tile
    cdef floating* rows
    cdef int failed = 0
    with parallel(num_threads=n_threads, use_threads_if=n_threads > 1):
        rows = <floating*>malloc(width * n * sizeof(floating))
        for t in prange(tile_count(outer, inner, width), schedule="dynamic"):   # rows_per_chunk
            if rows == NULL:
                failed += 1   # a reduction: any thread without a buffer
            else:
                tile = tile_at(t, inner, width)
                gather_tile(x + tile.outer * n * inner + tile.first, n, inner, tile.width, rows)
                for j in range(tile.width):
                    r = tile.outer * inner + tile.first + j
                    # the gradient overwrites the gathered row in place
                    loss[r] = index_row(rows + j * n, n, beta, labels[r], weight, keep, smooth,
                                        grad_factor, NULL if grad == NULL else rows + j * n)
                if grad != NULL:
                    scatter_tile(rows, n, tile.width, grad + tile.outer * n * inner + tile.first,
                                 inner)
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


# ---------------------------------------------------------------------------------------
# Fast path: the common call validated and allocated in C (see _fastpath.pxd)
# ---------------------------------------------------------------------------------------

ctypedef fused label_int:
    int32_t
    int64_t


cdef Py_ssize_t checked_labels(const label_int* target, Py_ssize_t rows, Py_ssize_t n_classes,
                               long long ignore_index, Py_ssize_t* labels) noexcept nogil:
    """The labels of _cross_entropy._labels_for_kernel into `labels` (-1 where ignored) and
    the number counted, or -1 as soon as one is outside [0, n_classes) and not ignore_index:
    then the general path raises its IndexError.  No label reaches a kernel unchecked."""
    cdef Py_ssize_t r, counted = 0
    for r in range(rows):
        if target[r] == ignore_index:
            labels[r] = -1
        elif 0 <= target[r] < n_classes:
            labels[r] = target[r]
            counted += 1
        else:
            return -1
    return counted


cdef bint is_label_array(object target, cnp.ndarray logits) noexcept:
    """`target` is exactly an ndarray of int32 or int64 in native byte order, C-contiguous
    and aligned, of the shape of `logits` without its last axis."""
    cdef cnp.ndarray arr
    cdef Py_ssize_t ndim = cnp.PyArray_NDIM(logits)
    if type(target) is not cnp.ndarray:
        return False
    arr = <cnp.ndarray>target
    if not (cnp.PyArray_ISSIGNED(arr)   # a signed integer type
            and (cnp.PyArray_ITEMSIZE(arr) == 4 or cnp.PyArray_ITEMSIZE(arr) == 8)
            and cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISALIGNED(arr)
            and cnp.PyArray_ISNOTSWAPPED(arr) and cnp.PyArray_NDIM(arr) == ndim - 1):
        return False
    return memcmp(cnp.PyArray_DIMS(arr), cnp.PyArray_DIMS(logits),
                  (ndim - 1) * sizeof(cnp.npy_intp)) == 0


cdef void run_index_rows(int type_num, const void* x, const Py_ssize_t* labels,
                         double smoothing, double beta, double grad_scale, double* loss,
                         void* grad, Py_ssize_t rows, Py_ssize_t n, int n_threads) noexcept:
    """index_rows_kernel on float32 or float64 logits, without the GIL."""
    with nogil:
        if type_num == cnp.NPY_FLOAT:
            index_rows_kernel(<const float*>x, labels, NULL, smoothing, beta, grad_scale, loss,
                              <float*>grad, rows, n, n_threads)
        else:
            index_rows_kernel(<const double*>x, labels, NULL, smoothing, beta, grad_scale, loss,
                              <double*>grad, rows, n, n_threads)


def cross_entropy_fast(logits, target, axis, ignore_index, reduction, label_smoothing, beta,
                       n_threads, bint want_grad, out=None):
    """(per-row losses as a float64 vector, "mean" normaliser, gradient or None) of a call of
    the cross-entropy family with class-index targets, or None when the fast path does not
    take it.  Beyond the conditions of _fastpath.pxd (weight is None, checked by the
    caller): target an int32/int64 ndarray (is_label_array), ignore_index an int,
    reduction one of the three, label_smoothing a float in [0, 1], every label valid,
    something counted for "mean", and `out` (the gradient's, with want_grad) None or a
    plain array: the logits themselves or not overlapping them (is_plain_output).  Same
    kernel, same threads: bitwise the general path."""
    cdef int type_num = plain_float_type(logits)
    if type_num < 0:
        return None
    cdef cnp.ndarray x = <cnp.ndarray>logits
    cdef Py_ssize_t ndim = cnp.PyArray_NDIM(x)
    cdef double beta_value, smoothing
    cdef long long ignore
    if not (exact_finite_float(beta, &beta_value) and is_thread_count(n_threads)
            and is_last_axis(axis, ndim) and is_label_array(target, x)
            and exact_int(ignore_index, &ignore)
            and exact_finite_float(label_smoothing, &smoothing) and 0.0 <= smoothing <= 1.0
            and type(reduction) is str and reduction in ("mean", "sum", "none")):
        return None
    if out is not None and not (want_grad and is_plain_output(out, type_num, ndim,
                                                              cnp.PyArray_DIMS(x), x, True)):
        return None
    cdef Py_ssize_t n = cnp.PyArray_DIMS(x)[ndim - 1], rows = cnp.PyArray_SIZE(x) // n
    cdef Py_ssize_t counted
    cdef double normaliser
    cdef cnp.npy_intp loss_shape = rows
    cdef cnp.ndarray row_losses
    cdef object grad = None
    cdef Py_ssize_t* labels = <Py_ssize_t*>malloc(rows * sizeof(Py_ssize_t))
    if labels == NULL:
        return None   # the general path allocates with NumPy (and raises MemoryError)
    try:
        if cnp.PyArray_ITEMSIZE(<cnp.ndarray>target) == 4:
            counted = checked_labels(<const int32_t*>cnp.PyArray_DATA(<cnp.ndarray>target),
                                     rows, n, ignore, labels)
        else:
            counted = checked_labels(<const int64_t*>cnp.PyArray_DATA(<cnp.ndarray>target),
                                     rows, n, ignore, labels)
        if counted < 0 or (counted == 0 and reduction == "mean"):
            return None   # the general path's IndexError, or its 0.0 when nothing counts
        normaliser = <double>counted
        row_losses = cnp.PyArray_EMPTY(1, &loss_shape, cnp.NPY_DOUBLE, 0)
        if out is not None:
            grad = out
        elif want_grad:
            grad = cnp.PyArray_EMPTY(ndim, cnp.PyArray_DIMS(x), type_num, 0)
        run_index_rows(type_num, cnp.PyArray_DATA(x), labels, smoothing, beta_value,
                       1.0 / normaliser if reduction == "mean" else 1.0,
                       <double*>cnp.PyArray_DATA(row_losses),
                       NULL if grad is None else cnp.PyArray_DATA(<cnp.ndarray>grad), rows, n,
                       kernel_threads(n_threads, rows, n))
        return row_losses, normaliser, grad
    finally:
        free(labels)
