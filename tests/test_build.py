"""How softmaxc was built: with OpenMP, and without anything that changes NumPy's
floating-point environment (as sklearn/tests/test_build.py does for OpenMP)."""

import os
import subprocess
import sys
import tarfile
import textwrap

import pytest

import softmaxc
from softmaxc._runtime import COMPILE_FLAGS, OPENMP_ENABLED


def test_openmp_parallelism_enabled():
    """A build without OpenMP is a failure, unless explicitly allowed: otherwise a missing
    libgomp or compiler flag silently makes every n_threads setting serial."""
    if os.environ.get("SOFTMAXC_ALLOW_SERIAL_BUILD") == "1":
        pytest.skip("SOFTMAXC_ALLOW_SERIAL_BUILD=1: a serial build is accepted")
    assert OPENMP_ENABLED, textwrap.dedent(
        """
        softmaxc was built without OpenMP: n_threads has no effect.  Install an OpenMP
        runtime for your compiler (e.g. libgomp for gcc) and rebuild, or set
        SOFTMAXC_OPENMP=1 to make the build fail loudly when OpenMP does not compile.
        If a serial build is intended, set SOFTMAXC_ALLOW_SERIAL_BUILD=1 to skip this test.
        """
    )
    assert "-fopenmp" in COMPILE_FLAGS


def test_no_unsafe_math_flags():
    # -ffast-math/-Ofast would break NaN/inf handling, and linking with them switches
    # flush-to-zero on for the whole process (see the next test).
    for flag in ("-ffast-math", "-Ofast", "-funsafe-math-optimizations"):
        assert flag not in COMPILE_FLAGS


SUBNORMAL_CHECK = textwrap.dedent(
    """
    import ctypes
    import platform
    import sys
    import threading

    import numpy as np


    def fpu_control():
        \"\"\"(MXCSR control bits, C rounding mode) of the calling thread: MXCSR read with
        glibc's fegetenv (x86-64 fenv_t keeps it at byte 28); bits 6 (DAZ), 7-12 (exception
        masks), 13-14 (rounding) and 15 (FTZ), without the sticky exception flags.\"\"\"
        libc = ctypes.CDLL(None)
        if platform.machine() not in ("x86_64", "AMD64") or not hasattr(libc, "fegetenv"):
            return None, libc.fegetround() if hasattr(libc, "fegetround") else None
        env = ctypes.create_string_buffer(32)
        assert libc.fegetenv(env) == 0
        return int.from_bytes(env.raw[28:32], sys.byteorder) & 0xFFC0, libc.fegetround()


    before = fpu_control()
    import softmaxc

    # Call every function, on enough data that the OpenMP worker threads run too.
    x = np.random.default_rng(0).standard_normal((64, 1000))
    labels = np.arange(64) % 1000
    softmaxc.softmax(x, n_threads=2)
    softmaxc.log_softmax(x.astype(np.float32), n_threads=2)
    softmaxc.logsumexp(x, n_threads=2)
    p = softmaxc.softmax(x, n_threads=2)
    softmaxc.softmax_jacobian(x[:, :100], n_threads=2)
    softmaxc.softmax_backward(x, p, n_threads=2)
    softmaxc.log_softmax_backward(x, np.log(p), n_threads=2)
    softmaxc.cross_entropy(x, labels, n_threads=2)
    softmaxc.cross_entropy_grad(x, p, n_threads=2)
    softmaxc.cross_entropy_with_grad(x.astype(np.float32), labels, n_threads=2)
    softmaxc.testing.check_gradient(softmaxc.logsumexp, softmaxc.softmax, x[0, :5])

    # The floating-point control state (flush-to-zero, denormals-are-zero, rounding mode,
    # exception masks) of this thread is unchanged, and a new thread starts with the default.
    after = fpu_control()
    assert after == before, f"FPU control state changed: {before} -> {after}"
    in_thread = []
    thread = threading.Thread(target=lambda: in_thread.append(fpu_control()))
    thread.start()
    thread.join()
    assert in_thread == [before], f"a new thread has {in_thread}, expected {before}"
    if before[0] is not None:
        assert before[0] & 0x8040 == 0, f"FTZ/DAZ set: MXCSR {before[0]:#x}"
        assert before[0] & 0x6000 == 0, f"rounding is not to nearest: MXCSR {before[0]:#x}"

    # NumPy's subnormal arithmetic in the main thread is unchanged ...
    assert np.float64(5e-324) * 1 != 0, "float64 subnormal flushed to zero"
    assert np.float64(1e-300) * np.float64(1e-10) != 0, "float64 product flushed to zero"
    tiny32 = np.float32(1e-38) * np.float32(1e-3)
    assert tiny32 != 0 and tiny32 < np.finfo(np.float32).tiny, "float32 product flushed"

    # ... and the kernels themselves produce subnormals, on worker threads as well.
    rows = np.tile([0.0, -740.0], (20000, 1))
    p = softmaxc.softmax(rows, n_threads=2)
    assert p[0, 1] != 0 and p[0, 1] < np.finfo(np.float64).tiny, p[0, 1]
    assert (p[:, 1] == p[0, 1]).all()
    p32 = softmaxc.softmax(np.tile(np.float32([0.0, -95.0]), (20000, 1)), n_threads=2)
    assert p32[-1, 1] != 0 and p32[-1, 1] < np.finfo(np.float32).tiny, p32[-1, 1]
    print(softmaxc.__file__)
    """
)


def test_import_keeps_subnormals():
    """Importing and calling every softmaxc function leaves subnormal arithmetic on (no
    flush-to-zero / denormals-are-zero) and the MXCSR control bits and rounding mode
    untouched, checked in a fresh interpreter whose state nothing else touched."""
    result = subprocess.run([sys.executable, "-c", SUBNORMAL_CHECK], capture_output=True,
                            text=True, cwd=os.getcwd(), check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == softmaxc.__file__  # it tested this build of softmaxc


def test_sdist_carries_the_sources(tmp_path):
    """`pip install` from the source distribution must be able to cythonize: the .pyx and
    .pxd sources and the C header ship; the generated C does not."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, "setup.py")):
        pytest.skip("not run from a source checkout")
    build = ("import sys; from setuptools import build_meta; "
             "print(build_meta.build_sdist(sys.argv[1]))")
    result = subprocess.run([sys.executable, "-c", build, str(tmp_path)], cwd=root,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    archive = tmp_path / result.stdout.strip().splitlines()[-1]
    with tarfile.open(archive) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for source in ("setup.py", "pyproject.toml", "softmaxc/_rowops.pxd",
                   "softmaxc/_runtime.h", "softmaxc/_simd.h", "softmaxc/_softmax_kernels.pyx",
                   "softmaxc/_cross_entropy_kernels.pyx", "softmaxc/_backward_kernels.pyx",
                   "tests/conftest.py"):
        assert source in names, source
    assert not any(name.endswith((".c", ".so")) for name in names), sorted(names)
