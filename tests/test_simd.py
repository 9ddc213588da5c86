"""The vectorised kernels of softmaxc/_simd.h: the exp's accuracy (scripts/validate_exp.py on
a subsample), exact special values, both paths (AVX2+FMA and portable, SOFTMAXC_SIMD=0 in a
subprocess), and the lane bookkeeping (row tails, the reference entry, masks) against the
NumPy oracle."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import softmaxc
from softmaxc import _softmax_kernels
from tests import oracles

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_validator():
    spec = importlib.util.spec_from_file_location("validate_exp",
                                                  ROOT / "scripts" / "validate_exp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_with_simd_off(code):
    env = dict(os.environ, SOFTMAXC_SIMD="0")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True, cwd=ROOT)
    return result.stdout


@pytest.mark.parametrize("double_lanes", [False, True], ids=["float_lanes", "double_lanes"])
def test_float32_exp_within_2_ulp_on_a_subsample(double_lanes):
    validator = load_validator()
    result = validator.measure_float32(double_lanes, stride=65537)   # 65536 bit patterns
    assert result["count"] == 65536
    assert result["special_failures"] == 0
    assert result["max_ulp"] <= 2.0, result


def test_float64_exp_within_2_ulp_on_a_sample():
    validator = load_validator()
    result = validator.measure_float64(points=100_000, mpmath_points=50)
    assert result["special_failures"] == 0
    assert result["max_ulp"] <= 2.0, result
    assert result["mpmath_check"]["max_ulp"] <= 2.0
    assert result["mpmath_check"]["long_double_reference_gap_ulp"] < 0.01


def test_validator_measure_detects_a_wrong_exp():
    # The measure must be able to fail: exp computed in float32 from a rounded argument
    # (x * (1 + 2**-20)) is off by about |x| * 2**-20 relative, hundreds of ULP at |x| ~ 80.
    validator = load_validator()
    x = np.linspace(-80, 80, 1001).astype(np.float32)
    wrong = np.exp(x * np.float32(1 + 2.0**-20))
    errors = validator.ulp_errors(wrong, np.exp(x.astype(np.float64)), np.float32)
    assert errors.max() > 50


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("double_lanes", [False, True])
def test_exp_special_values(dtype, double_lanes):
    info = np.finfo(dtype)
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 1000.0, -1000.0,
                  float(info.max), -float(info.max), float(info.smallest_subnormal)], dtype)
    out = np.empty_like(x)
    _softmax_kernels._simd_check_exp(x, out, double_lanes)
    assert np.isnan(out[0])
    np.testing.assert_array_equal(out[[1, 2, 3, 4, 7, 8, 9, 10, 11]],
                                  [np.inf, 0.0, 1.0, 1.0, np.inf, 0.0, np.inf, 0.0, 1.0])
    np.testing.assert_array_max_ulp(out[5:7], np.array([np.e, 1 / np.e], dtype), maxulp=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_subnormal_results_are_correctly_scaled(dtype):
    # Results below the smallest normal number: no flush to zero, error below 1 ULP of
    # the subnormal spacing.
    tiny = float(np.finfo(dtype).smallest_normal)
    smallest = float(np.finfo(dtype).smallest_subnormal)
    x = np.log(tiny) - np.linspace(0.0, np.log(tiny / smallest) + 1.0, 4001)
    x = x.astype(dtype)
    out = np.empty_like(x)
    _softmax_kernels._simd_check_exp(x, out)
    exact = np.exp(x.astype(np.longdouble))
    assert np.all(out[1:] < tiny)
    assert np.all(out[x > np.log(smallest)] > 0)
    errors = np.abs(out.astype(np.longdouble) - exact) / float(np.finfo(dtype).smallest_subnormal)
    assert errors.max() <= 1.0


def test_exp_path_is_reported():
    assert _softmax_kernels.SIMD_PATH in ("avx2+fma", "portable (no AVX2+FMA on this CPU)",
                                          "portable (SOFTMAXC_SIMD=0)")
    out = run_with_simd_off("import softmaxc; softmaxc.show_config()")
    assert "kernel path:    portable (SOFTMAXC_SIMD=0)" in out


def test_portable_path_meets_the_exp_bounds():
    out = run_with_simd_off(
        "import json, sys; sys.path.insert(0, 'scripts'); import validate_exp as v; "
        "print(json.dumps(v.measure(65537, 100_000, 20)))")
    results = json.loads(out)
    assert all(r["path"] == "portable (SOFTMAXC_SIMD=0)" for r in results)
    assert {r["kernel"] for r in results} == {"float32", "float64"}
    for r in results:
        assert r["passed"], r


def test_portable_and_vector_paths_agree_within_the_bounds(rng):
    x = rng.standard_normal((4, 1000)) * 10
    code = ("import numpy as np, softmaxc, sys; x = np.frombuffer(sys.stdin.buffer.read())"
            ".reshape(4, 1000); "
            "r = [softmaxc.softmax(x.astype(d)) for d in (np.float32, np.float64)]; "
            "sys.stdout.buffer.write(b''.join(a.tobytes() for a in r))")
    env = dict(os.environ, SOFTMAXC_SIMD="0")
    raw = subprocess.run([sys.executable, "-c", code], env=env, input=x.tobytes(),
                         capture_output=True, check=True, cwd=ROOT).stdout
    portable32 = np.frombuffer(raw[: x.size * 4], np.float32).reshape(x.shape)
    portable64 = np.frombuffer(raw[x.size * 4:], np.float64).reshape(x.shape)
    exact = oracles.softmax_ref(x)
    for portable, dtype in ((portable32, np.float32), (portable64, np.float64)):
        here = softmaxc.softmax(x.astype(dtype))
        # both within a few ULP of the float64 oracle (relative: entries span 1e-40 .. 1)
        eps = np.finfo(dtype).eps
        floor = np.finfo(dtype).smallest_normal
        for result in (here, portable):
            relative = np.abs(result - exact) / np.maximum(exact, floor)
            assert relative.max() < (64 if dtype == np.float32 else 2e5) * eps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [1.0, 0.5, -2.0])
def test_every_row_length_and_reference_position(dtype, beta):
    # Rows of 1..19 entries with the maximum at every position: vector tails, the
    # reference entry in every lane, with and without a mask.
    rng = np.random.default_rng(5)
    for n in range(1, 20):
        for position in range(n):
            x = rng.standard_normal(n).astype(dtype)
            x[position] = (5.0 if beta > 0 else -5.0)
            keep = rng.random(n) < 0.7
            keep[position] = True
            z = beta * x.astype(np.float64)
            expected = np.exp(z - z.max())
            expected /= expected.sum()
            np.testing.assert_allclose(softmaxc.softmax(x, beta=beta), expected,
                                       rtol=64 * np.finfo(dtype).eps, atol=0)
            masked = np.where(keep, np.exp(z - z.max()), 0.0)
            masked /= masked.sum()
            np.testing.assert_allclose(softmaxc.softmax(x, beta=beta, where=keep), masked,
                                       rtol=64 * np.finfo(dtype).eps, atol=0)
            lse = z.max() + np.log(np.exp(z - z.max()).sum())
            np.testing.assert_allclose(softmaxc.logsumexp(x, beta=beta), lse,
                                       rtol=8 * np.finfo(dtype).eps, atol=0)
