"""Library-wide settings: the default thread count, and a report of how softmaxc was built."""

import operator
import os
import platform
import sys

from softmaxc._runtime import openmp_max_threads

_default_threads = None

# GNU OpenMP (libgomp) is not fork-safe: once a process has run a parallel region, its
# thread pool is not copied into a child created by fork(), and the child's first parallel
# region waits forever for it.  So softmaxc notes when it starts OpenMP threads
# (`threads_started`, set by _arrays.threads_for), and a child forked after that computes
# on one thread (`serial_only`; results are bitwise identical).  Children started by
# multiprocessing's "spawn" or "forkserver" methods do not inherit a pool and keep their
# threads.  (If another library started libgomp's pool before the fork, call
# set_num_threads(1) in the child.)
threads_started = False
serial_only = False


def _after_fork_in_child():
    global serial_only
    serial_only = serial_only or threads_started


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n):
    """Set the number of OpenMP threads used when a call passes ``n_threads=None``.

    Parameters
    ----------
    n : int or None
        A positive thread count, or None to return to the OpenMP default (which honours
        ``OMP_NUM_THREADS`` and ``threadpoolctl.threadpool_limits``).

    Notes
    -----
    A count set here takes precedence over ``threadpool_limits``; a per-call ``n_threads``
    takes precedence over both.  Results are bitwise identical for every thread count.
    In a process created by ``os.fork()`` (multiprocessing's "fork" start method) after its
    parent ran softmaxc on several threads, every call runs on one thread whatever is set:
    the OpenMP runtime cannot start threads there.
    """
    global _default_threads
    if n is None:
        _default_threads = None
        return
    if isinstance(n, bool):
        raise TypeError("n must be a positive integer or None, got a bool")
    n = operator.index(n)
    if n <= 0:
        raise ValueError(f"n must be a positive integer or None, got {n}")
    _default_threads = n


def get_num_threads():
    """The thread count a call with ``n_threads=None`` uses now.

    The value given to :func:`set_num_threads`, or else the OpenMP runtime's
    ``omp_get_max_threads()`` read at this moment, so that ``OMP_NUM_THREADS`` and
    ``threadpoolctl.threadpool_limits`` are honoured (1 when built without OpenMP, and in
    a process forked after a parallel call, see :func:`set_num_threads`).
    """
    if serial_only:
        return 1
    if _default_threads is not None:
        return _default_threads
    return openmp_max_threads()


def show_config():
    """Print the version, OpenMP status and thread count, compiler flags, the CPU's SIMD
    features and the kernel path in use ("avx2+fma", or "portable": no AVX2+FMA, or
    ``SOFTMAXC_SIMD=0`` at import) that softmaxc was built and is running with."""
    from softmaxc import __version__
    from softmaxc._runtime import COMPILE_FLAGS, OPENMP_ENABLED, cpu_features
    from softmaxc._softmax_kernels import SIMD_PATH

    import numpy

    features = cpu_features()
    lines = [
        f"softmaxc {__version__}",
        f"  python:         {sys.version.split()[0]} ({platform.machine()})",
        f"  numpy:          {numpy.__version__}",
        f"  OpenMP:         {'enabled' if OPENMP_ENABLED else 'DISABLED (serial build)'}",
        f"  threads:        {get_num_threads()}"
        + (" (set_num_threads)" if _default_threads is not None else " (OpenMP default)"),
        f"  compile flags:  {COMPILE_FLAGS}",
        "  CPU SIMD:       "
        + (", ".join(name for name, present in features.items() if present) or "none detected"),
        f"  kernel path:    {SIMD_PATH}",
    ]
    print("\n".join(lines))
