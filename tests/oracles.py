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


# ---------------------------------------------------------------------------------------
# Oracles with the documented special-value rules per row (NaN, +inf, all -inf), for
# every public function; the class axis is last.  Used by the adversarial and fuzz tests.
# ---------------------------------------------------------------------------------------

def _special_rows(z):
    """Rows (along the last axis) whose softmax is NaN: a NaN, a +inf, or all -inf."""
    return (np.isnan(z).any(-1) | np.isposinf(z).any(-1)
            | (np.isneginf(z).all(-1) & (z.shape[-1] > 0)))


def _clean(z):
    """z with special rows replaced by zeros (so the textbook formulas stay quiet)."""
    return np.where(_special_rows(z)[..., None], 0.0, z)


def softmax_oracle(x, beta=1.0):
    if x.size == 0:
        return np.empty(x.shape)
    z = beta * x
    return np.where(_special_rows(z)[..., None], np.nan, softmax_ref(_clean(z)))


def log_softmax_oracle(x, beta=1.0):
    if x.size == 0:
        return np.empty(x.shape)
    z = beta * x
    return np.where(_special_rows(z)[..., None], np.nan, log_softmax_ref(_clean(z)))


def logsumexp_oracle(x, beta=1.0):
    if x.shape[-1] == 0:
        return np.full(x.shape[:-1], -np.inf)
    if x.size == 0:
        return np.empty(x.shape[:-1])
    z = beta * x
    lse = logsumexp_ref(_clean(z))
    lse = np.where(np.isneginf(z).all(-1), -np.inf, lse)
    lse = np.where(np.isposinf(z).any(-1), np.inf, lse)
    return np.where(np.isnan(z).any(-1), np.nan, lse)


def jacobian_oracle(x, beta=1.0):
    n = x.shape[-1]
    if x.size == 0:
        return np.empty(x.shape[:-1] + (n, n))
    p = softmax_oracle(x, beta)
    eye = np.eye(n)
    return beta * (p[..., :, None] * eye - p[..., :, None] * p[..., None, :])


def softmax_backward_oracle(g, p, beta=1.0):
    """Entries with p = 0 are outside the graph: they add nothing and get exactly 0."""
    with np.errstate(invalid="ignore", over="ignore"):
        s = np.sum(np.where(p != 0, g * p, 0.0), axis=-1, keepdims=True)
        return np.where(p != 0, beta * p * (g - s), 0.0)


def log_softmax_backward_oracle(g, log_p, beta=1.0, exp_dtype=np.float64):
    """Entries with log p = -inf are outside the graph (as softmax_backward_oracle).
    `exp_dtype`: the precision exp(log p) is taken in (the compute dtype)."""
    kept = log_p != -np.inf
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        total = np.sum(np.where(kept, g, 0.0), axis=-1, keepdims=True)
        probs = np.exp(log_p.astype(exp_dtype)).astype(np.float64)
        return np.where(kept, beta * (g - probs * total), 0.0)


def _cross_entropy_parts(x, q, weight, beta):
    """Per-row losses and d(row loss)/dx for target distributions q (rows)."""
    z = beta * x
    special = _special_rows(z)
    a = q if weight is None else q * weight
    lse = logsumexp_oracle(x, beta)[..., None]
    with np.errstate(invalid="ignore"):
        terms = np.where(a != 0, a * (lse - z), 0.0)
    losses = np.where(special, np.nan, terms.sum(-1))
    p = softmax_oracle(x, beta)
    grads = beta * (p * a.sum(-1, keepdims=True) - a)
    grads = np.where(special[..., None], np.nan, grads)
    return losses, grads


def cross_entropy_oracle(x, target, beta=1.0, weight=None, ignore_index=-100,
                         reduction="mean", label_smoothing=0.0):
    """(loss, gradient) as torch.nn.functional.cross_entropy (class axis last)."""
    n = x.shape[-1]
    if np.asarray(target).dtype.kind == "f":
        counted = np.ones(x.shape[:-1], bool)
        q = target
        normaliser = counted.sum()
    else:
        labels = np.asarray(target).astype(np.int64)
        counted = labels != ignore_index
        q = np.zeros(x.shape)
        np.put_along_axis(q, np.where(counted, labels, 0)[..., None], 1.0, axis=-1)
        w_labels = 1.0 if weight is None else np.asarray(weight)[np.where(counted, labels, 0)]
        normaliser = np.sum(np.where(counted, w_labels, 0.0))
    q = (1 - label_smoothing) * q + label_smoothing / n
    losses, grads = _cross_entropy_parts(x, q, weight, beta)
    losses = np.where(counted, losses, 0.0)
    grads = np.where(counted[..., None], grads, 0.0)
    if reduction == "none":
        return losses, grads
    if reduction == "sum":
        return float(losses.sum()), grads
    if normaliser == 0:
        return 0.0, np.zeros(x.shape)
    return float(losses.sum()) / normaliser, grads / normaliser
