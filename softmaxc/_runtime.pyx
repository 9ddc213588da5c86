"""Build facts, the OpenMP thread default and CPU features (the only module that talks to
the OpenMP runtime)."""

cdef extern from "_runtime.h":
    int omp_get_max_threads() noexcept nogil
    int SOFTMAXC_OPENMP
    const char* SOFTMAXC_CFLAGS
    int softmaxc_cpu_has(int which) noexcept nogil
    enum: SOFTMAXC_MIN_PARALLEL_ELEMENTS

OPENMP_ENABLED = bool(SOFTMAXC_OPENMP)
COMPILE_FLAGS = SOFTMAXC_CFLAGS.decode()
MIN_PARALLEL_ELEMENTS = SOFTMAXC_MIN_PARALLEL_ELEMENTS   # see _arrays.MIN_PARALLEL_ELEMENTS


def openmp_max_threads():
    """``omp_get_max_threads()`` of the calling thread (1 without OpenMP).

    Read at every call, so ``OMP_NUM_THREADS`` and ``threadpoolctl.threadpool_limits``
    (which sets the OpenMP runtime's value) are honoured.
    """
    return omp_get_max_threads()


def cpu_features():
    """The SIMD instruction sets this CPU offers, detected at run time."""
    names = ("sse4.2", "avx", "avx2", "fma", "avx512f")
    return {name: bool(softmaxc_cpu_has(i)) for i, name in enumerate(names)}
