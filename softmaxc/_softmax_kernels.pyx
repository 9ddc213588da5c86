"""Batch kernels of the softmax family (layer 2: see the design note in _rowops.pxd).

Each kernel takes rows of logits as a C-contiguous (rows, n) memoryview, writes one result
per row, and runs rows in parallel with the GIL released.  Rows are independent, so the
result is bitwise identical for every thread count.  Callers guarantee rows > 0, n > 0,
matching shapes, and `keep` (a uint8 mask of the same shape) or None.  The `*_fast` entries
at the end take the common call straight from the public functions (see _fastpath.pxd).
"""

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from softmaxc._fastpath cimport (
    exact_finite_float,
    is_last_axis,
    is_plain_output,
    is_thread_count,
    kernel_threads,
    plain_float_type,
)
from softmaxc._rowops cimport (
    gather_tile,
    log_softmax_row,
    logsumexp_row,
    rows_per_chunk,
    scatter_tile,
    smx_simd_init,
    softmax_row,
    Tile,
    tile_at,
    tile_count,
    tile_width,
)

cdef extern from "_simd.h" nogil:
    void smx_exp_array_f32(const float* x, float* out, Py_ssize_t n, bint double_lanes) noexcept
    void smx_exp_array_f64(const double* x, double* out, Py_ssize_t n) noexcept

import os

cnp.import_array()

# The row loops' path, chosen now (see _simd.h): "avx2+fma" or "portable", with the reason.
SIMD_PATH = ("portable", "avx2+fma")[smx_simd_init()]
if SIMD_PATH == "portable":
    SIMD_PATH += (" (SOFTMAXC_SIMD=0)" if os.environ.get("SOFTMAXC_SIMD") == "0"
                  else " (no AVX2+FMA on this CPU)")


def _simd_check_exp(const floating[::1] x,   # IN  (n,)
                    floating[::1] out,       # OUT (n,)
                    bint double_lanes=False):
    """out = exp(x) with the exp of the active path's kernels (for scripts/validate_exp.py
    and tests/test_simd.py; not public): the kernels' own loop applied to w = beta * (x_i -
    x_ref) with beta = 1, x_ref = 0.  float32 on the AVX2 path: the float-lane exp of the
    beta == 1 kernels, or with `double_lanes` the double-lane exp of the others."""
    if x.shape[0] != out.shape[0]:
        raise ValueError("x and out must have the same length")
    if x.shape[0] == 0:
        return
    with nogil:
        if floating is float:
            smx_exp_array_f32(&x[0], &out[0], x.shape[0], double_lanes)
        else:
            smx_exp_array_f64(&x[0], &out[0], x.shape[0])


cdef inline const unsigned char* mask_base(const unsigned char[:, ::1] keep) noexcept:
    if keep is None:
        return NULL
    return &keep[0, 0]


cdef int check_rows(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t out_rows, Py_ssize_t out_n,
                    const unsigned char[:, ::1] keep) except -1:
    """The buffers of a rows kernel match x's (rows, n): rows_kernel indexes raw pointers,
    which no bounds check (not even a SOFTMAXC_DEBUG build's) would catch."""
    if (out_rows != rows or out_n != n
            or (keep is not None and (keep.shape[0] != rows or keep.shape[1] != n))):
        raise ValueError(f"out or keep does not fit x of shape ({rows}, {n})")
    return 0


cdef enum Op:
    OP_SOFTMAX
    OP_LOG_SOFTMAX
    OP_LOGSUMEXP


cdef inline void apply_row(Op op, const floating* x, Py_ssize_t n, double beta,
                           const unsigned char* keep, floating* out) noexcept nogil:
    """One row: n results to out (softmax, log_softmax; `out` may be `x`) or one (logsumexp)."""
    if op == OP_SOFTMAX:
        softmax_row(x, n, beta, keep, out)
    elif op == OP_LOG_SOFTMAX:
        log_softmax_row(x, n, beta, keep, out)
    else:
        out[0] = <floating>logsumexp_row(x, n, beta, keep)


cdef void rows_kernel(Op op, const floating* x, floating* out, Py_ssize_t rows, Py_ssize_t n,
                      double beta, const unsigned char* keep, int n_threads) noexcept nogil:
    """Every row of the C-contiguous (rows, n) array at x, in parallel: the batch loop of the
    general kernels below and of the fast path.  `keep`: a (rows, n) uint8 mask or NULL."""
    cdef Py_ssize_t r, out_stride = 1 if op == OP_LOGSUMEXP else n
    if n_threads <= 1:
        # Not even an inactive parallel region: libgomp sets one up for about 1 us.
        for r in range(rows):
            apply_row(op, x + r * n, n, beta, keep if keep == NULL else keep + r * n,
                      out + r * out_stride)
        return
    for r in prange(rows, schedule="dynamic", chunksize=rows_per_chunk(n),
                    num_threads=n_threads):
        apply_row(op, x + r * n, n, beta, keep if keep == NULL else keep + r * n,
                  out + r * out_stride)


def softmax_rows(const floating[:, ::1] x,           # IN  (rows, n)
                 floating[:, ::1] out,               # OUT (rows, n)
                 double beta,
                 const unsigned char[:, ::1] keep,   # IN  (rows, n) or None
                 int n_threads):
    check_rows(x.shape[0], x.shape[1], out.shape[0], out.shape[1], keep)
    cdef const unsigned char* keep_ptr = mask_base(keep)
    with nogil:
        rows_kernel(OP_SOFTMAX, &x[0, 0], &out[0, 0], x.shape[0], x.shape[1], beta, keep_ptr,
                    n_threads)


def log_softmax_rows(const floating[:, ::1] x,           # IN  (rows, n)
                     floating[:, ::1] out,               # OUT (rows, n)
                     double beta,
                     const unsigned char[:, ::1] keep,   # IN  (rows, n) or None
                     int n_threads):
    check_rows(x.shape[0], x.shape[1], out.shape[0], out.shape[1], keep)
    cdef const unsigned char* keep_ptr = mask_base(keep)
    with nogil:
        rows_kernel(OP_LOG_SOFTMAX, &x[0, 0], &out[0, 0], x.shape[0], x.shape[1], beta,
                    keep_ptr, n_threads)


def logsumexp_rows(const floating[:, ::1] x,           # IN  (rows, n)
                   floating[::1] out,                  # OUT (rows,)
                   double beta,
                   const unsigned char[:, ::1] keep,   # IN  (rows, n) or None
                   int n_threads):
    check_rows(x.shape[0], x.shape[1], out.shape[0], x.shape[1], keep)
    cdef const unsigned char* keep_ptr = mask_base(keep)
    with nogil:
        rows_kernel(OP_LOGSUMEXP, &x[0, 0], &out[0], x.shape[0], x.shape[1], beta, keep_ptr,
                    n_threads)


# ---------------------------------------------------------------------------------------
# Rows along a non-last axis of a C-contiguous (outer, n, inner) array: tiles (_rowops.pxd)
# ---------------------------------------------------------------------------------------

cdef inline void column_tile(Op op, const floating* x, Py_ssize_t n, Py_ssize_t stride,
                             Py_ssize_t width, double beta, floating* rows,
                             floating* out) noexcept nogil:
    """The rows of one tile: results scattered back to out[c * stride + j] (softmax,
    log_softmax; `out` may be `x`: the tile is read before it is written) or written to
    out[j] (logsumexp)."""
    cdef Py_ssize_t j
    gather_tile(x, n, stride, width, rows)
    for j in range(width):
        if op == OP_LOGSUMEXP:
            apply_row(op, rows + j * n, n, beta, NULL, out + j)
        else:
            apply_row(op, rows + j * n, n, beta, NULL, rows + j * n)
    if op != OP_LOGSUMEXP:
        scatter_tile(rows, n, width, out, stride)


cdef int column_kernel(Op op, const floating* x, floating* out, Py_ssize_t outer,
                       Py_ssize_t n, Py_ssize_t inner, double beta,
                       int n_threads) noexcept nogil:
    """Every tile of every outer index, in parallel; 0 on success, -1 if out of memory."""
    cdef Py_ssize_t width = tile_width(n, inner)
    cdef Py_ssize_t t
    cdef Py_ssize_t out_n = 1 if op == OP_LOGSUMEXP else n   # classes per outer index in out
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
                column_tile(op, x + tile.outer * n * inner + tile.first, n, inner, tile.width,
                            beta, rows, out + tile.outer * out_n * inner + tile.first)
        free(rows)
    return -1 if failed else 0


cdef run_columns(Op op, const floating* x, floating* out, Py_ssize_t outer,
                 Py_ssize_t n, Py_ssize_t inner, double beta, int n_threads):
    cdef int status
    with nogil:
        status = column_kernel(op, x, out, outer, n, inner, beta, n_threads)
    if status != 0:
        raise MemoryError("softmaxc: no memory for the per-thread tile buffers")


def softmax_columns(const floating[:, :, ::1] x,    # IN  (outer, n, inner)
                    floating[:, :, ::1] out,        # OUT (outer, n, inner), may be x
                    double beta,
                    int n_threads):
    run_columns(OP_SOFTMAX, &x[0, 0, 0], &out[0, 0, 0], x.shape[0], x.shape[1],
                x.shape[2], beta, n_threads)


def log_softmax_columns(const floating[:, :, ::1] x,    # IN  (outer, n, inner)
                        floating[:, :, ::1] out,        # OUT (outer, n, inner), may be x
                        double beta,
                        int n_threads):
    run_columns(OP_LOG_SOFTMAX, &x[0, 0, 0], &out[0, 0, 0], x.shape[0], x.shape[1],
                x.shape[2], beta, n_threads)


def logsumexp_columns(const floating[:, :, ::1] x,    # IN  (outer, n, inner)
                      floating[:, ::1] out,           # OUT (outer, inner)
                      double beta,
                      int n_threads):
    run_columns(OP_LOGSUMEXP, &x[0, 0, 0], &out[0, 0], x.shape[0], x.shape[1],
                x.shape[2], beta, n_threads)


# ---------------------------------------------------------------------------------------
# Fast path: the common call validated and allocated in C (see _fastpath.pxd)
# ---------------------------------------------------------------------------------------

cdef object rows_fast(Op op, object x, object axis, object beta, object n_threads,
                      bint keepdims, object out):
    """The result of `op` on x along its last axis through rows_kernel (written to `out`
    when it is not None), or None when the fast path does not take the call.  Same kernel,
    same threads: bitwise the general path."""
    cdef int type_num = plain_float_type(x)
    if type_num < 0:
        return None
    cdef cnp.ndarray arr = <cnp.ndarray>x
    cdef Py_ssize_t ndim = cnp.PyArray_NDIM(arr)
    cdef double beta_value
    if not (exact_finite_float(beta, &beta_value) and is_thread_count(n_threads)
            and is_last_axis(axis, ndim)):
        return None
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(arr)
    cdef Py_ssize_t n = dims[ndim - 1], rows = cnp.PyArray_SIZE(arr) // n
    cdef cnp.npy_intp reduced_dims[cnp.NPY_MAXDIMS]   # logsumexp with keepdims: last is 1
    cdef int result_ndim = ndim
    cdef cnp.npy_intp* result_dims = dims
    cdef cnp.ndarray result
    if op == OP_LOGSUMEXP:
        if keepdims:
            memcpy(reduced_dims, dims, (ndim - 1) * sizeof(cnp.npy_intp))
            reduced_dims[ndim - 1] = 1
            result_dims = reduced_dims
        else:
            result_ndim = ndim - 1   # 0-d for 1-d x
    if out is None:
        result = cnp.PyArray_EMPTY(result_ndim, result_dims, type_num, 0)
    elif is_plain_output(out, type_num, result_ndim, result_dims, arr, op != OP_LOGSUMEXP):
        result = <cnp.ndarray>out
    else:
        return None
    cdef int threads = kernel_threads(n_threads, rows, n)
    cdef void* data = cnp.PyArray_DATA(arr)
    cdef void* result_data = cnp.PyArray_DATA(result)
    with nogil:
        if type_num == cnp.NPY_FLOAT:
            rows_kernel(op, <const float*>data, <float*>result_data, rows, n, beta_value, NULL,
                        threads)
        else:
            rows_kernel(op, <const double*>data, <double*>result_data, rows, n, beta_value,
                        NULL, threads)
    return result


def softmax_fast(x, axis, beta, n_threads, out=None):
    """softmax(x, axis, beta=beta, out=out, n_threads=n_threads) if the fast path takes it,
    else None."""
    return rows_fast(OP_SOFTMAX, x, axis, beta, n_threads, False, out)


def log_softmax_fast(x, axis, beta, n_threads, out=None):
    """log_softmax(x, axis, beta=beta, out=out, n_threads=n_threads) if the fast path takes
    it, else None."""
    return rows_fast(OP_LOG_SOFTMAX, x, axis, beta, n_threads, False, out)


def logsumexp_fast(x, axis, beta, keepdims, n_threads, out=None):
    """logsumexp(x, axis, beta=beta, keepdims=keepdims, out=out, n_threads=n_threads) if the
    fast path takes it (keepdims a bool), else None."""
    if keepdims is not False and keepdims is not True:
        return None
    return rows_fast(OP_LOGSUMEXP, x, axis, beta, n_threads, keepdims, out)
