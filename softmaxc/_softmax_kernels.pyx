"""Batch kernels of the softmax family (layer 2: see the design note in _rowops.pxd).

Each kernel takes rows of logits as a C-contiguous (rows, n) memoryview, writes one result
per row, and runs rows in parallel with the GIL released.  Rows are independent, so the
result is bitwise identical for every thread count.  Callers guarantee rows > 0, n > 0,
matching shapes, and `keep` (a uint8 mask of the same shape) or None.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc

from softmaxc._rowops cimport (
    gather_tile,
    log_softmax_row,
    logsumexp_row,
    scatter_tile,
    smx_simd_init,
    softmax_row,
    tile_width,
)

cdef extern from "_simd.h" nogil:
    void smx_exp_array_f32(const float* x, float* out, Py_ssize_t n, bint double_lanes) noexcept
    void smx_exp_array_f64(const double* x, double* out, Py_ssize_t n) noexcept

import os

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


def softmax_rows(const floating[:, ::1] x,           # IN  (rows, n)
                 floating[:, ::1] out,               # OUT (rows, n)
                 double beta,
                 const unsigned char[:, ::1] keep,   # IN  (rows, n) or None
                 int n_threads):
    cdef Py_ssize_t r, n = x.shape[1]
    cdef const unsigned char* keep_ptr = mask_base(keep)
    for r in prange(x.shape[0], nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        softmax_row(&x[r, 0], n, beta, NULL if keep_ptr == NULL else keep_ptr + r * n,
                    &out[r, 0])


def log_softmax_rows(const floating[:, ::1] x,           # IN  (rows, n)
                     floating[:, ::1] out,               # OUT (rows, n)
                     double beta,
                     const unsigned char[:, ::1] keep,   # IN  (rows, n) or None
                     int n_threads):
    cdef Py_ssize_t r, n = x.shape[1]
    cdef const unsigned char* keep_ptr = mask_base(keep)
    for r in prange(x.shape[0], nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        log_softmax_row(&x[r, 0], n, beta, NULL if keep_ptr == NULL else keep_ptr + r * n,
                        &out[r, 0])


def logsumexp_rows(const floating[:, ::1] x,           # IN  (rows, n)
                   floating[::1] out,                  # OUT (rows,)
                   double beta,
                   const unsigned char[:, ::1] keep,   # IN  (rows, n) or None
                   int n_threads):
    cdef Py_ssize_t r, n = x.shape[1]
    cdef const unsigned char* keep_ptr = mask_base(keep)
    for r in prange(x.shape[0], nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        out[r] = <floating>logsumexp_row(&x[r, 0], n, beta,
                                         NULL if keep_ptr == NULL else keep_ptr + r * n)


# ---------------------------------------------------------------------------------------
# Rows along a non-last axis of a C-contiguous (outer, n, inner) array: tiles (_rowops.pxd)
# ---------------------------------------------------------------------------------------

cdef enum ColumnOp:
    COLUMN_SOFTMAX
    COLUMN_LOG_SOFTMAX
    COLUMN_LOGSUMEXP


cdef inline void column_tile(ColumnOp op, const floating* x, Py_ssize_t n, Py_ssize_t stride,
                             Py_ssize_t width, double beta, floating* rows,
                             floating* out) noexcept nogil:
    """The rows of one tile: results scattered back to out[c * stride + j] (softmax,
    log_softmax; `out` may be `x`: the tile is read before it is written) or written to
    out[j] (logsumexp)."""
    cdef Py_ssize_t j
    gather_tile(x, n, stride, width, rows)
    for j in range(width):
        if op == COLUMN_SOFTMAX:
            softmax_row(rows + j * n, n, beta, NULL, rows + j * n)
        elif op == COLUMN_LOG_SOFTMAX:
            log_softmax_row(rows + j * n, n, beta, NULL, rows + j * n)
        else:
            out[j] = <floating>logsumexp_row(rows + j * n, n, beta, NULL)
    if op != COLUMN_LOGSUMEXP:
        scatter_tile(rows, n, width, out, stride)


cdef int column_kernel(ColumnOp op, const floating* x, floating* out, Py_ssize_t outer,
                       Py_ssize_t n, Py_ssize_t inner, double beta,
                       int n_threads) noexcept nogil:
    """Every tile of every outer index, in parallel; 0 on success, -1 if out of memory."""
    cdef Py_ssize_t width = tile_width(n, inner)
    cdef Py_ssize_t tiles_per_outer = (inner + width - 1) // width
    cdef Py_ssize_t t, o, j0, w
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
                if op == COLUMN_LOGSUMEXP:
                    column_tile(op, x + o * n * inner + j0, n, inner, w, beta, rows,
                                out + o * inner + j0)
                else:
                    column_tile(op, x + o * n * inner + j0, n, inner, w, beta, rows,
                                out + o * n * inner + j0)
        free(rows)
    return -1 if failed else 0


cdef run_columns(ColumnOp op, const floating* x, floating* out, Py_ssize_t outer,
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
    run_columns(COLUMN_SOFTMAX, &x[0, 0, 0], &out[0, 0, 0], x.shape[0], x.shape[1],
                x.shape[2], beta, n_threads)


def log_softmax_columns(const floating[:, :, ::1] x,    # IN  (outer, n, inner)
                        floating[:, :, ::1] out,        # OUT (outer, n, inner), may be x
                        double beta,
                        int n_threads):
    run_columns(COLUMN_LOG_SOFTMAX, &x[0, 0, 0], &out[0, 0, 0], x.shape[0], x.shape[1],
                x.shape[2], beta, n_threads)


def logsumexp_columns(const floating[:, :, ::1] x,    # IN  (outer, n, inner)
                      floating[:, ::1] out,           # OUT (outer, inner)
                      double beta,
                      int n_threads):
    run_columns(COLUMN_LOGSUMEXP, &x[0, 0, 0], &out[0, 0], x.shape[0], x.shape[1],
                x.shape[2], beta, n_threads)
