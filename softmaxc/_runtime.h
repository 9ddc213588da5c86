/* OpenMP is optional at build time: without it these no-op fallbacks keep the kernels
 * compiling (prange then runs serially), and softmaxc reports OpenMP as disabled. */
#ifndef SOFTMAXC_RUNTIME_H
#define SOFTMAXC_RUNTIME_H
#if SOFTMAXC_OPENMP
#include <omp.h>
#else
static inline int omp_get_max_threads(void) { return 1; }
#endif

/* Below this many elements a call runs on one thread (see MIN_PARALLEL_ELEMENTS in
 * _arrays.py, which takes it from here): defined in C so that the compiled fast path
 * (_fastpath.pxd) and the Python layer use one number. */
#define SOFTMAXC_MIN_PARALLEL_ELEMENTS (1 << 15)

/* CPU features at run time (x86 only; elsewhere all report 0). */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
static inline int softmaxc_cpu_has(int which) {
    __builtin_cpu_init();
    switch (which) {
        case 0: return __builtin_cpu_supports("sse4.2");
        case 1: return __builtin_cpu_supports("avx");
        case 2: return __builtin_cpu_supports("avx2");
        case 3: return __builtin_cpu_supports("fma");
        case 4: return __builtin_cpu_supports("avx512f");
    }
    return 0;
}
#else
static inline int softmaxc_cpu_has(int which) { (void)which; return 0; }
#endif
#endif
