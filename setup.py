"""Build logic for softmaxc's compiled kernels (metadata lives in pyproject.toml).

Environment switches:

SOFTMAXC_OPENMP=1|0   force OpenMP on (fail if the compiler cannot) or off.  Unset: probe.
SOFTMAXC_DEBUG=1      compile with Cython's boundscheck and initializedcheck on, for the
                      debug/sanitizer test runs (slow; never for a release build).
SOFTMAXC_CFLAGS       extra compiler flags appended to every extension (e.g. sanitizers).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# One row per compiled module: (module, sources, uses the NumPy C API).  Layering:
# _rowops.pxd holds the per-row inline C; the *_kernels modules hold the batch loops and the
# fast path (_fastpath.pxd, on the NumPy C API); the Python modules call them.
EXTENSIONS = [
    ("softmaxc._runtime", ["softmaxc/_runtime.pyx"], False),
    ("softmaxc._softmax_kernels", ["softmaxc/_softmax_kernels.pyx"], True),
    ("softmaxc._backward_kernels", ["softmaxc/_backward_kernels.pyx"], False),
    ("softmaxc._cross_entropy_kernels", ["softmaxc/_cross_entropy_kernels.pyx"], True),
]

# Modules on the NumPy C API are compiled against NumPy 2 headers (pyproject.toml requires
# numpy>=2.0 to build) and run with any NumPy from 1.25, our runtime floor: NumPy 2 builds
# are backwards compatible with NumPy 1.x ("For downstream package authors", NumPy docs),
# down to the C-API version NPY_TARGET_VERSION names, which we pin to 1.25 rather than rely
# on the default of the NumPy at hand (1.23 for NumPy 2.4; it may rise).  Any use of a C API
# newer than 1.25 then fails to compile instead of failing at import on an older NumPy.
NUMPY_MACROS = [
    ("NPY_TARGET_VERSION", "NPY_1_25_API_VERSION"),
    ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
]

# Never -ffast-math (or -Ofast): when it is used to link a shared object, gcc adds
# crtfastmath.o, which switches flush-to-zero on for the whole Python process.  It would
# also break the NaN/inf handling that the kernels rely on.
# -ffp-contract=off: a product is fused with an addition only where the code writes fma()
# (the vector paths in _simd.h would otherwise round differently from the portable one).
BASE_CFLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d\\n", n);
        return n > 0 ? 0 : 1;
    }
    """
)


def _env_flag(name):
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"{name}={value!r}: expected 1/0, on/off, true/false or auto")


def _openmp_compiles(compiler):
    """Compile, link and run a tiny OpenMP program with the compiler setuptools will use."""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write(OPENMP_PROBE)
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=["-fopenmp"])
            exe = os.path.join(tmp, "probe")
            compiler.link_executable(objects, exe, extra_postargs=["-fopenmp"])
            subprocess.run([exe], check=True, capture_output=True, timeout=60)
        except Exception as exc:  # any failure means: no usable OpenMP
            return False, str(exc)
    return True, ""


class BuildExt(build_ext):
    def build_extensions(self):
        wanted = _env_flag("SOFTMAXC_OPENMP")
        use_openmp = False
        if wanted is not False:
            ok, why = _openmp_compiles(self.compiler)
            if ok:
                use_openmp = True
            elif wanted:
                raise SystemExit(f"SOFTMAXC_OPENMP=1 but OpenMP does not compile here: {why}")
            else:
                print(
                    "\n*** WARNING: the compiler cannot build OpenMP programs; softmaxc is built "
                    "SERIAL (n_threads has no effect).  Install an OpenMP runtime (libgomp) "
                    "and rebuild.\n",
                    file=sys.stderr,
                )
        extra = os.environ.get("SOFTMAXC_CFLAGS", "").split()
        for ext in self.extensions:
            ext.extra_compile_args = BASE_CFLAGS + (["-fopenmp"] if use_openmp else []) + extra
            ext.extra_link_args = (["-fopenmp"] if use_openmp else []) + extra
            ext.define_macros = ext.define_macros + [
                ("SOFTMAXC_OPENMP", "1" if use_openmp else "0"),
                ("SOFTMAXC_CFLAGS", '"' + " ".join(ext.extra_compile_args) + '"'),
            ]
        super().build_extensions()


def extensions():
    debug = bool(_env_flag("SOFTMAXC_DEBUG"))
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": False,
        "initializedcheck": debug,
        "cdivision": True,
        "embedsignature": True,  # real signatures for help() and Sphinx autodoc
        "embedsignature.format": "python",
    }
    exts = [
        Extension(
            name,
            sources,
            include_dirs=["softmaxc"] + ([numpy.get_include()] if uses_numpy else []),
            define_macros=NUMPY_MACROS if uses_numpy else [],
            depends=["softmaxc/_simd.h", "softmaxc/_runtime.h"],
        )
        for name, sources, uses_numpy in EXTENSIONS
    ]
    return cythonize(exts, compiler_directives=directives, compile_time_env={"SOFTMAXC_DEBUG": debug},
                     force=debug)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
