"""Input handling shared by every public function (layer 3 of the design in _rowops.pxd).

Everything a kernel relies on is established here, in Python, before any kernel runs:
dtype, native byte order, alignment, C-contiguous rows, shapes, the mask, `out=`.  Bounds
checks are off in the kernels, so nothing unvalidated may pass through this module.
"""

import math
import operator
import os

import numpy as np

try:  # NumPy >= 2.0
    from numpy.lib.array_utils import normalize_axis_index
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import normalize_axis_index

from softmaxc import _config, _runtime

# Below this many elements a call runs on one thread: waking a team costs more than it saves.
# With the vector kernels (about 1 ns per element in float32) 2**15 elements are some 30 us
# of work, against a few us to wake a second thread.  (The number is defined in _runtime.h,
# where the compiled fast path reads it too.)
MIN_PARALLEL_ELEMENTS = _runtime.MIN_PARALLEL_ELEMENTS

# Most threads a call starts, whatever n_threads asks: libgomp ends the whole process when
# it cannot create a thread, so n_threads=10**6 must not reach it.  Results are bitwise
# identical for every thread count, so the ceiling changes nothing but speed.
MAX_THREADS = max(256, 4 * (os.cpu_count() or 1))

_REJECTED_KINDS = {
    "c": "complex",
    "O": "object",
    "U": "string",
    "S": "bytes",
    "M": "datetime",
    "m": "timedelta",
    "V": "structured",
}


def as_real_array(x, name="x"):
    """`x` as an ndarray of a real dtype (no copy when it already is one)."""
    try:
        arr = np.asarray(x)
    except ValueError as exc:  # ragged nested sequences
        raise ValueError(f"{name} is not a rectangular array: {exc}") from None
    if arr.dtype.kind in _REJECTED_KINDS:
        raise TypeError(
            f"{name} has dtype {arr.dtype} ({_REJECTED_KINDS[arr.dtype.kind]}); softmaxc "
            "computes on real numbers: pass a float, integer or bool array"
        )
    return arr


_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)
_NATIVE_DTYPES = {_FLOAT32: (_FLOAT32, _FLOAT32), _FLOAT64: (_FLOAT64, _FLOAT64)}


def float_dtypes(dtype):
    """(result dtype, compute dtype) for an input dtype, as API.md specifies.

    float32/float64 compute natively; float16 computes in float32 and returns float16;
    bool and integers become float64.  long double is computed and returned in float64
    (the kernels have no extended-precision path).
    """
    native = _NATIVE_DTYPES.get(dtype)
    if native is not None:
        return native
    if dtype.kind == "f":
        if dtype.itemsize == 2:
            return np.dtype(np.float16), np.dtype(np.float32)
        if dtype.itemsize == 4:
            return np.dtype(np.float32), np.dtype(np.float32)
    return np.dtype(np.float64), np.dtype(np.float64)


def check_axis(axis, ndim):
    """Normalise `axis`; raises numpy.exceptions.AxisError (a ValueError) when invalid."""
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}") from None
    return normalize_axis_index(axis, ndim)


def check_beta(beta):
    """`beta` as a Python float; non-finite values raise ValueError."""
    if type(beta) is float and math.isfinite(beta):   # the common case, checked cheaply
        return beta
    return real_scalar(beta, "beta", finite=True)


def real_scalar(value, name, finite=False):
    """`value` as a Python float; TypeError for anything but a real scalar, ValueError
    for a non-finite one when `finite` (a Python int too large for a float counts)."""
    if (np.ndim(value) != 0 or value is None
            or isinstance(value, (str, bytes, complex, np.complexfloating))):
        raise TypeError(f"{name} must be a real scalar, got {value!r}")
    try:
        result = float(value)
    except OverflowError:
        result = math.inf if value > 0 else -math.inf
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real scalar, got {value!r}") from None
    if finite and not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {result}")
    return result


def check_n_threads(n_threads):
    """A positive thread count (the library default for None)."""
    if n_threads is None:
        return _config.get_num_threads()
    if type(n_threads) is int and n_threads > 0:   # the common case, checked cheaply
        return n_threads
    if isinstance(n_threads, (bool, np.bool_)):
        raise TypeError("n_threads must be a positive integer or None, got a bool")
    try:
        n_threads = operator.index(n_threads)
    except TypeError:
        raise TypeError(
            f"n_threads must be a positive integer or None, got {type(n_threads).__name__}"
        ) from None
    if n_threads <= 0:
        raise ValueError(f"n_threads must be a positive integer or None, got {n_threads}")
    return n_threads


def threads_for(n_threads, rows, n):
    """Threads actually used: one for small work, never more than there are rows, and one
    in a child forked after a parallel call (see _config.serial_only)."""
    if rows * n < MIN_PARALLEL_ELEMENTS or _config.serial_only:
        return 1
    threads = max(1, min(n_threads, rows, MAX_THREADS))
    if threads > 1:
        _config.threads_started = True
    return threads


def _kernel_ready(arr, dtype):
    """Whether the kernels can read `arr` in place: `dtype`, C-contiguous, aligned, native."""
    return (arr.dtype == dtype and arr.flags.c_contiguous and arr.flags.aligned
            and arr.dtype.isnative)


def as_rows(arr, axis, dtype):
    """A C-contiguous, aligned, native (rows, n) array of `dtype` whose rows run along
    `axis` of `arr`.  A view when `arr` already is laid out so, else one copy."""
    if axis == arr.ndim - 1 and _kernel_ready(arr, dtype):
        return arr.reshape(-1, arr.shape[-1]) if arr.ndim != 2 else arr
    moved = axis_last(arr, axis)
    n = moved.shape[-1]
    rows = math.prod(moved.shape[:-1])
    data = np.require(moved, dtype=dtype, requirements=["C_CONTIGUOUS", "ALIGNED"])
    return data.reshape(rows, n)


def as_columns(arr, axis, dtype):
    """`arr` as an (outer, n, inner) view whose rows run down its columns (n along `axis`),
    for the column kernels, or None when `arr` is not laid out for them (then `as_rows`)."""
    if axis == arr.ndim - 1 or not _kernel_ready(arr, dtype):
        return None
    shape = arr.shape
    return arr.reshape(math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :]))


def check_mask(where, shape):
    """The `where=` mask as a boolean view broadcast to `shape`, or None."""
    if where is None:
        return None
    mask = np.asarray(where)
    if mask.dtype != np.bool_:
        raise TypeError(f"where must be a boolean array, got dtype {mask.dtype}")
    try:
        return np.broadcast_to(mask, shape)
    except ValueError:
        raise ValueError(
            f"where of shape {mask.shape} does not broadcast to the input shape {shape}"
        ) from None


def mask_rows(mask, axis):
    """A mask from `check_mask` as C-contiguous uint8 rows matching `as_rows`, or None."""
    if mask is None:
        return None
    return as_rows(mask, axis, np.bool_).view(np.uint8)


def repeated_rows(arr, axis, mask=None):
    """An index selecting one row along every batch axis (not `axis`) on which `arr`, and
    `mask` if given, are broadcast (stride 0, length > 1); None if there is no such axis.

    Such rows are all the same row: a caller computes it once and broadcasts the result,
    instead of materialising, e.g., np.broadcast_to(row, (10**6, n)) in `as_rows`.
    """
    mask_strides = (0,) * arr.ndim if mask is None else mask.strides
    index = tuple(
        slice(0, 1) if d != axis and arr.shape[d] > 1 and arr.strides[d] == mask_strides[d] == 0
        else slice(None)
        for d in range(arr.ndim)
    )
    return index if any(s != slice(None) for s in index) else None


def check_out(out, shape, dtype, name="out"):
    """Validate a caller's `out=` (None passes through)."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype != dtype:
        raise ValueError(f"{name} has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if out.size and any(stride == 0 and length > 1
                        for stride, length in zip(out.strides, out.shape)):
        raise ValueError(
            f"{name} has a zero stride (a broadcast view): its elements overlap each other"
        )
    return out


def specialised(kernel, dtype):
    """The float32 or float64 version of a fused-type kernel, looked up once: calling it
    directly skips Cython's per-call dispatch on the arguments' types."""
    key = (kernel, dtype)
    found = _SPECIALISED.get(key)
    if found is None:
        found = _SPECIALISED[key] = kernel["float" if dtype == _FLOAT32 else "double"]
    return found


_SPECIALISED = {}


def axis_last(arr, axis):
    """`arr` with `axis` moved last (`arr` itself when it already is last)."""
    return arr if axis == arr.ndim - 1 else np.moveaxis(arr, axis, -1)


def kernel_target(target, dtype, inputs, rows_shape):
    """A (rows, n) array the kernel may write directly: a view of `target` when its layout
    allows and it does not overlap any input except as an exact in-place alias; otherwise
    a fresh buffer, to be copied into `target` afterwards (see `finish`).

    `inputs` are everything the kernel reads (None entries are skipped).

    Returns (buffer, direct)."""
    direct = (
        target.dtype == dtype
        and target.dtype.isnative
        and target.flags.c_contiguous
        and target.flags.aligned
    )
    if direct:
        view = target.reshape(rows_shape)
        for arr in inputs:
            if arr is not None and np.may_share_memory(view, arr) and not _same_layout(view, arr):
                direct = False
                break
    if direct:
        return view, True
    return np.empty(rows_shape, dtype), False


def finish(target, buffer, direct):
    """Copy the kernel's buffer into `target` (casting, e.g. to float16) unless the kernel
    wrote `target` itself."""
    if not direct:
        target[...] = buffer.reshape(target.shape)


def _same_layout(a, b):
    return (
        a.shape == b.shape
        and a.strides == b.strides
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    )
