"""Accuracy bounds of the softmax family against mpmath (see tests/accuracy.py for the
oracle, the error measure, the input classes and the bounds; scripts/measure_accuracy.py
prints the same measurements as a table)."""

import numpy as np
import pytest

from tests import accuracy

CASES = [
    pytest.param(function, dtype, c.name, id=f"{function}-{dtype.name}-{c.name}")
    for function in accuracy.FUNCTIONS
    for dtype in accuracy.DTYPES
    for c in accuracy.INPUT_CLASSES
]


@pytest.mark.parametrize("function, dtype, class_name", CASES)
def test_accuracy_within_bound(function, dtype, class_name):
    m = accuracy.measure(function, dtype, class_name)
    assert m.passed, (
        f"{function} {dtype} on {class_name}: max {m.max_ulp:.3f} ULP, "
        f"worst error/bound {m.worst_ratio:.3f} (bound {m.bound})"
    )


@pytest.mark.parametrize("target", accuracy.NEAR_ZERO_TARGETS)
@pytest.mark.parametrize("dtype", accuracy.DTYPES, ids=lambda d: d.name)
def test_logsumexp_near_zero_within_condition_number(dtype, target):
    # Near 0, logsumexp is ill-conditioned (kappa up to ~1e9 here) and no constant bound
    # holds.  z_max + log1p(t) rounds each term to 0.5 ULP: an absolute error of about
    # eps * |z_max| (log1p(t) ~ -z_max there), i.e. up to 2 |z_max| / |lse| ULP of the
    # result; all z_i <= z_max < 0 makes kappa * |lse| = sum |z_i| p_i >= |z_max|, so the
    # error is at most 2 * kappa ULP (plus the usual constant).
    m = accuracy.logsumexp_near_zero(target, dtype)
    constant = accuracy.CONSTANT_BOUNDS["logsumexp", dtype.name]
    assert m.ulp <= 2 * m.condition + constant, m


def test_ulp_measure_detects_lost_accuracy():
    # The measure must be able to fail: log(sum) instead of log1p at the dominant entry
    # (SciPy's log_softmax) loses all relative accuracy there, by millions of ULP.
    special = pytest.importorskip("scipy.special")
    x = accuracy.class_input("dominant_entry", np.float64)
    exact = accuracy.exact_class("dominant_entry", "float64")
    errors = [accuracy.ulp_errors(special.log_softmax(row), e.log_softmax, np.float64).max()
              for row, e in zip(x, exact)]
    assert min(errors) > 1e5


def test_ulp_errors_units():
    exact_one = (np.array([1.0]), np.array([0.0]))
    assert accuracy.ulp_errors([np.nextafter(1.0, 2.0)], exact_one, np.float64)[0] == 1.0
    one_up_f32 = float(np.nextafter(np.float32(1), np.float32(2)))
    assert accuracy.ulp_errors([one_up_f32], exact_one, np.float32)[0] == 1.0
    # An exact value that underflows: a computed 0 is within a fraction of an ULP.
    assert accuracy.ulp_errors([0.0], (np.array([1e-50]), np.array([0.0])), np.float32)[0] < 1e-5
