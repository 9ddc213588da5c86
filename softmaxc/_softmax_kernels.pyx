"""Batch kernels of the softmax family (layer 2: see the design note in _rowops.pxd).

Each kernel takes rows of logits as a C-contiguous (rows, n) memoryview, writes one result
per row, and runs rows in parallel with the GIL released.  Rows are independent, so the
result is bitwise identical for every thread count.  Callers guarantee rows > 0, n > 0,
matching shapes, and `keep` (a uint8 mask of the same shape) or None.
"""

from cython cimport floating
from cython.parallel cimport prange

from softmaxc._rowops cimport smx_simd_init, softmax_row, log_softmax_row, logsumexp_row

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
