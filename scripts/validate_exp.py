"""Measure the ULP error of the kernels' own exp (softmaxc/_simd.h) against a correct reference.

float32: every float32 bit pattern (2**32 inputs, NaNs and infinities included; ``--stride
S`` takes every S-th pattern instead), against ``exp`` in float64 rounded to float32
(correctly rounded for float32 except in astronomically rare double-rounding cases; the
error is measured against the float64 value itself, so a rounding at a tie costs nothing).
On the AVX2 path both float32 kernels are measured: the float lanes of the beta == 1 rows
and the double lanes of the others.

float64: a dense sample (``--float64-points``, default 4 million) spread evenly over the
whole range [-746, 710] plus the neighbourhoods of 0, of the subnormal threshold and of
overflow, against ``np.longdouble`` exp (64-bit significand: 11 bits beyond float64); a
subsample is also checked against mpmath, which validates the long double reference.

ULP error = |computed - exact| / spacing(exact rounded to the dtype), as tests/accuracy.py;
an exact value that underflows is measured in units of the smallest subnormal.  Special
inputs must give exact results: NaN -> NaN, +inf / overflow -> +inf, -inf -> 0.

Measures the path active in this process (``softmaxc.show_config()`` names it), then, unless
``--no-portable``, runs itself with ``SOFTMAXC_SIMD=0`` for the portable path.  Prints a table
and writes JSON.  Exits with status 1 when an error exceeds the bound (2 ULP), or a special
value is wrong.

Usage (from the repository root)::

    python scripts/validate_exp.py [--stride S] [--float64-points N] [--json PATH]
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the in-place build of softmaxc

import numpy as np  # noqa: E402  (imports after the sys.path line)

import softmaxc  # noqa: E402
from softmaxc import _softmax_kernels  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "exp_ulp.json"
BOUND_ULP = 2.0
CHUNK = 1 << 22


def ulp_errors(computed, exact, dtype):
    """|computed - exact| / spacing(round(exact)) for finite exact values."""
    rounded = exact.astype(dtype)
    spacing = np.spacing(np.abs(rounded)).astype(exact.dtype)
    return np.abs(computed.astype(exact.dtype) - exact) / spacing


def special_failures(x, computed, exact_in_dtype):
    """Count of inputs whose result must be exact (NaN, inf, 0 from -inf) and is not."""
    bad = np.isnan(x) & ~np.isnan(computed)
    overflow = np.isinf(exact_in_dtype) & (exact_in_dtype > 0)
    bad |= overflow & ~(np.isinf(computed) & (computed > 0))
    bad |= (x == -np.inf) & (computed != 0)
    return int(np.count_nonzero(bad))


def new_result(kernel, inputs):
    return {"kernel": kernel, "inputs": inputs, "count": 0, "max_ulp": 0.0, "worst_x": None,
            "special_failures": 0}


def record(result, x, computed, errors, finite, specials):
    result["count"] += int(x.size)
    result["special_failures"] += specials
    if np.any(finite):
        i = int(np.argmax(np.where(finite, errors, -1.0)))
        if errors[i] > result["max_ulp"]:
            result["max_ulp"] = float(errors[i])
            result["worst_x"] = float(x[i])


def measure_float32(double_lanes, stride):
    name = "float32, double lanes" if double_lanes else "float32"
    result = new_result(name, "every float32" if stride == 1 else f"every {stride}th float32")
    out = np.empty(CHUNK // stride + 1, np.float32)
    for start in range(0, 1 << 32, CHUNK):
        x = np.arange(start, start + CHUNK, stride, dtype=np.uint64).astype(np.uint32)
        x = x.view(np.float32)
        computed = out[: x.size]
        _softmax_kernels._simd_check_exp(x, computed, double_lanes)
        with np.errstate(over="ignore", invalid="ignore"):
            exact = np.exp(x.astype(np.float64))
            exact32 = exact.astype(np.float32)
            finite = np.isfinite(exact32)
            errors = np.where(finite, ulp_errors(computed, exact, np.float32), 0.0)
        record(result, x, computed, errors, finite, special_failures(x, computed, exact32))
    return result


def float64_inputs(points):
    rng = np.random.default_rng(2026)
    parts = [
        np.linspace(-746.0, 710.0, points),                                # the whole range
        rng.uniform(-746.0, 710.0, points // 4),
        rng.uniform(-1e-3, 1e-3, points // 16),                           # near 0
        np.concatenate([-np.logspace(-300, 0, 2000), np.logspace(-300, 0, 2000)]),
        rng.uniform(-745.2, -707.0, points // 16),                        # subnormal results
        rng.uniform(708.0, 709.79, points // 64),                         # near overflow
        np.array([0.0, -0.0, 709.782712893384, 709.7827128933841, -745.1332191019411,
                  -745.1332191019412, -708.3964185322641, np.inf, -np.inf, np.nan]),
    ]
    return np.concatenate(parts)


def measure_float64(points, mpmath_points):
    x = float64_inputs(points)
    result = new_result("float64", f"{x.size} points over [-746, 710] and edges")
    computed = np.empty_like(x)
    for start in range(0, x.size, CHUNK):
        _softmax_kernels._simd_check_exp(x[start:start + CHUNK], computed[start:start + CHUNK])
    with np.errstate(over="ignore", invalid="ignore"):
        exact = np.exp(x.astype(np.longdouble))
        exact64 = exact.astype(np.float64)
        finite = np.isfinite(exact64)
        errors = np.where(finite, ulp_errors(computed, exact, np.float64), 0.0).astype(np.float64)
    record(result, x, computed, errors, finite, special_failures(x, computed, exact64))
    result["mpmath_check"] = check_against_mpmath(x, computed, mpmath_points)
    return result


def check_against_mpmath(x, computed, points):
    """Max ULP error on a subsample against mpmath, and the largest gap between the
    long double reference and mpmath (in float64 ULP): it must be far below 1."""
    import mpmath

    rng = np.random.default_rng(7)
    sample = rng.choice(np.flatnonzero(np.isfinite(x) & (x > -745) & (x < 709.7)), points)
    worst = reference_gap = 0.0
    with mpmath.workdps(40):
        for i in sample:
            exact = mpmath.exp(mpmath.mpf(float(x[i])))
            spacing = float(np.spacing(np.float64(float(exact))))
            worst = max(worst, float(abs(mpmath.mpf(float(computed[i])) - exact)) / spacing)
            long_double = np.exp(np.longdouble(x[i]))
            gap = abs(mpmath.mpf(str(np.format_float_scientific(long_double, unique=True)))
                      - exact)
            reference_gap = max(reference_gap, float(gap) / spacing)
    return {"points": int(points), "max_ulp": worst, "long_double_reference_gap_ulp": reference_gap}


def measure(stride, float64_points, mpmath_points):
    path = _softmax_kernels.SIMD_PATH
    results = [measure_float32(False, stride)]
    if path == "avx2+fma":
        results.append(measure_float32(True, stride))
    results.append(measure_float64(float64_points, mpmath_points))
    for r in results:
        r["path"] = path
        r["passed"] = r["max_ulp"] <= BOUND_ULP and r["special_failures"] == 0
    return results


def format_table(results):
    lines = [f"{'path':<32} {'kernel':<22} {'inputs':<42} {'max ULP':>8}  {'at x':>14}  "
             f"specials  ok",
             "-" * 136]
    for r in results:
        worst = "" if r["worst_x"] is None else f"{r['worst_x']:.7g}"
        lines.append(f"{r['path']:<32} {r['kernel']:<22} {r['inputs']:<42} {r['max_ulp']:8.3f}  "
                     f"{worst:>14}  {'ok' if r['special_failures'] == 0 else 'WRONG':>8}  "
                     f"{'yes' if r['passed'] else 'NO'}")
        if "mpmath_check" in r:
            m = r["mpmath_check"]
            lines.append(f"{'':<32} {'':<22} mpmath on {m['points']} of them: max "
                         f"{m['max_ulp']:.3f} ULP (long double reference within "
                         f"{m['long_double_reference_gap_ulp']:.4f} ULP)")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=1,
                        help="measure every S-th float32 bit pattern (default 1: all 2**32)")
    parser.add_argument("--float64-points", type=int, default=4_000_000)
    parser.add_argument("--mpmath-points", type=int, default=2000)
    parser.add_argument("--no-portable", action="store_true",
                        help="only the path active in this process")
    parser.add_argument("--json", type=pathlib.Path, default=DEFAULT_JSON,
                        help=f"where to write the results (default: {DEFAULT_JSON})")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    results = measure(args.stride, args.float64_points, args.mpmath_points)
    if not args.no_portable and not _softmax_kernels.SIMD_PATH.startswith("portable"):
        with tempfile.TemporaryDirectory() as tmp:
            other = pathlib.Path(tmp) / "portable.json"
            subprocess.run([sys.executable, __file__, "--stride", str(args.stride),
                            "--float64-points", str(args.float64_points),
                            "--mpmath-points", str(args.mpmath_points), "--no-portable",
                            "--json", str(other)],
                           env=dict(os.environ, SOFTMAXC_SIMD="0"), check=False,
                           stdout=subprocess.DEVNULL)
            results += json.loads(other.read_text())["results"]
    print(f"softmaxc {softmaxc.__version__}: ULP error of the kernels' exp "
          f"(bound {BOUND_ULP:g} ULP), {time.perf_counter() - start:.0f} s")
    print(format_table(results))

    report = {
        "softmaxc_version": softmaxc.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "bound_ulp": BOUND_ULP,
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
