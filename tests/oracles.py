"""Plain NumPy float64 references for the softmax family (the textbook formulas: subtract
the maximum, exponentiate, normalise; log1p for the log-domain ones).  Correct for finite
inputs and `where=` masks; special values (NaN, inf) are tested against their documented
results instead.

Every oracle computes on z = beta * x in float64, whatever the input dtype.
"""

import numpy as np


def _shifted(x, axis, beta, where):
    z = beta * np.asarray(x, dtype=np.float64)
    if where is not None:
        z = np.where(where, z, -np.inf)
    z_max = np.max(z, axis=axis, keepdims=True)
    z_max = np.where(np.isfinite(z_max), z_max, 0.0)  # fully masked rows: avoid -inf - -inf
    return z - z_max, z_max


def softmax_ref(x, axis=-1, beta=1.0, where=None):
    w, _ = _shifted(x, axis, beta, where)
    e = np.exp(w)
    with np.errstate(invalid="ignore"):
        p = e / e.sum(axis=axis, keepdims=True)
    if where is not None:
        p = np.where(where, p, 0.0)  # also makes a fully masked row all zeros
    return p


def _log_sum_exp_shifted(w, axis):
    """log(sum(exp(w))) for w <= 0 with max 0, as log1p(sum over all but one maximum):
    log(sum) would round log(1 + t) to 0 when a dominant entry makes t < eps, and lose
    all relative accuracy of the log-probability at that entry."""
    e = np.exp(w)
    np.put_along_axis(e, np.argmax(w, axis=axis, keepdims=True), 0.0, axis=axis)
    t = e.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):
        # Fully masked rows (all w = -inf) have sum 0: log(0) = -inf.
        return np.where(np.isneginf(np.max(w, axis=axis, keepdims=True)), -np.inf, np.log1p(t))


def log_softmax_ref(x, axis=-1, beta=1.0, where=None):
    w, _ = _shifted(x, axis, beta, where)
    with np.errstate(invalid="ignore"):
        log_p = w - _log_sum_exp_shifted(w, axis)
    if where is not None:
        log_p = np.where(where, log_p, -np.inf)
    return log_p


def logsumexp_ref(x, axis=-1, beta=1.0, where=None, keepdims=False):
    w, z_max = _shifted(x, axis, beta, where)
    lse = z_max + _log_sum_exp_shifted(w, axis)
    return lse if keepdims else np.squeeze(lse, axis=axis)


REFERENCES = {"softmax": softmax_ref, "log_softmax": log_softmax_ref, "logsumexp": logsumexp_ref}

# Comparison tolerances per result dtype (float16 results are computed in float32 and
# rounded once, so their tolerance is float16's precision).
TOLERANCES = {
    np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-300},
    np.dtype(np.float32): {"rtol": 2e-6, "atol": 1e-40},
    np.dtype(np.float16): {"rtol": 2e-3, "atol": 1e-7},
}


def assert_matches_reference(actual, expected, dtype=None):
    """assert_allclose with the tolerance of `dtype` (default: actual's dtype)."""
    dtype = np.dtype(dtype if dtype is not None else actual.dtype)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, **TOLERANCES[dtype])
