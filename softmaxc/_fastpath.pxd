# The fast path: layer 3 (validate, allocate) written in C for the common call.
#
# A call like softmax(x) on a (1, 1000) array spends about 1 us computing and, through the
# general Python layer, some 8 us validating, converting and acquiring memoryviews.  So each
# public function first offers its arguments to one compiled entry (`*_fast` in the kernel
# modules), which accepts only the case it can check in a few C comparisons with the NumPy
# C API, and otherwise returns None, upon which the general path runs exactly as before (and
# raises its usual errors).  The case it accepts:
#
#   - the input is exactly an ndarray (no subclass) of float32 or float64, C-contiguous,
#     aligned, in native byte order, with ndim >= 1 and size > 0: the layout that the general
#     path would hand to the kernels as a view, unconverted;
#   - the class axis is the last one, given as an int (-1 or ndim - 1);
#   - beta is a finite Python float, n_threads None or a positive Python int;
#   - no where= (the Python function checks it before calling); out= None or an array the
#     kernels can write as it is (is_plain_output).
#
# It then calls the same batch loop, over the same row functions, as the general path, with
# the same thread count, so the results are bitwise those of the general path.  Nothing else
# is declined for speed: NumPy scalars as beta, an int axis of another kind, ... simply
# take the general path, whose cost is that of before.
#
# These helpers only look at their arguments; they never raise, and never call Python code
# except kernel_threads for inputs large enough to run in parallel.

cimport numpy as cnp
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.math cimport isfinite
from libc.string cimport memcmp

cdef extern from "_runtime.h":
    enum: MIN_PARALLEL_ELEMENTS "SOFTMAXC_MIN_PARALLEL_ELEMENTS"


cdef inline int plain_float_type(object x) noexcept:
    """cnp.NPY_FLOAT or cnp.NPY_DOUBLE when `x` is an ndarray the fast path takes as it is
    (see above), else -1."""
    cdef cnp.ndarray arr
    cdef int type_num
    if type(x) is not cnp.ndarray:
        return -1
    arr = <cnp.ndarray>x
    type_num = cnp.PyArray_TYPE(arr)
    if type_num != cnp.NPY_FLOAT and type_num != cnp.NPY_DOUBLE:
        return -1
    if not (cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISALIGNED(arr)
            and cnp.PyArray_ISNOTSWAPPED(arr)):
        return -1
    if cnp.PyArray_NDIM(arr) == 0 or cnp.PyArray_SIZE(arr) == 0:
        return -1
    return type_num


cdef inline bint is_plain_output(object out, int type_num, int ndim,
                                 const cnp.npy_intp* dims, cnp.ndarray x,
                                 bint may_be_x) noexcept:
    """Whether the kernels may write `out` as it is: exactly an ndarray of type_num and
    shape dims, C-contiguous, aligned, native, writeable, and either x itself (when
    may_be_x: same shape and layout, the in-place case the row kernels support) or not
    overlapping x at all.  Anything else (e.g. a view partly over x) takes the general
    path, which writes through a buffer."""
    cdef cnp.ndarray arr
    cdef char* start
    cdef char* x_start
    if type(out) is not cnp.ndarray:
        return False
    arr = <cnp.ndarray>out
    if not (cnp.PyArray_TYPE(arr) == type_num and cnp.PyArray_NDIM(arr) == ndim
            and memcmp(cnp.PyArray_DIMS(arr), dims, ndim * sizeof(cnp.npy_intp)) == 0
            and cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISALIGNED(arr)
            and cnp.PyArray_ISNOTSWAPPED(arr) and cnp.PyArray_ISWRITEABLE(arr)):
        return False
    start = <char*>cnp.PyArray_DATA(arr)
    x_start = <char*>cnp.PyArray_DATA(x)
    if may_be_x and start == x_start:
        return True
    return (start + cnp.PyArray_NBYTES(arr) <= x_start
            or x_start + cnp.PyArray_NBYTES(x) <= start)


cdef inline bint exact_int(object value, long long* result) noexcept:
    """Whether `value` is a Python int (not a bool, not a NumPy integer) within the range of
    long long; its value in result[0]."""
    cdef int overflow = 0
    if type(value) is not int:
        return False
    result[0] = PyLong_AsLongLongAndOverflow(value, &overflow)   # no error for an int
    return overflow == 0


cdef inline bint exact_finite_float(object value, double* result) noexcept:
    """Whether `value` is a finite Python float (not a NumPy float); its value in result[0]."""
    if type(value) is not float:
        return False
    result[0] = <double>value
    return isfinite(result[0])


cdef inline bint is_last_axis(object axis, Py_ssize_t ndim) noexcept:
    cdef long long value
    return exact_int(axis, &value) and (value == -1 or value == ndim - 1)


cdef inline bint is_thread_count(object n_threads) noexcept:
    """None or a positive int; the general path validates everything else."""
    cdef long long value
    return n_threads is None or (exact_int(n_threads, &value) and value > 0)


cdef inline int kernel_threads(object n_threads, Py_ssize_t rows, Py_ssize_t n) except -1:
    """Threads for a fast-path kernel call: one below MIN_PARALLEL_ELEMENTS, without even
    reading the thread setting; above it the general path's own choice (which also keeps a
    forked child serial, see _config.serial_only), so results stay bitwise the same."""
    if rows * n < MIN_PARALLEL_ELEMENTS:
        return 1
    # Imported here: only large inputs get here, where the import's 0.1 us does not count.
    from softmaxc import _arrays
    return _arrays.threads_for(_arrays.check_n_threads(n_threads), rows, n)
