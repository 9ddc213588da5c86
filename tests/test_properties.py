"""Mathematical properties of the softmax family, checked on generated inputs (Hypothesis).

Tolerances follow from the error analysis: rounding the input of a softmax perturbs
z_i by at most eps * |z_i|, which moves log p_i by at most 2 * eps * max|z| (and p_i by
that relative amount).
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmaxc
from tests.oracles import REFERENCES

EPS = np.finfo(np.float64).eps
SETTINGS = settings(max_examples=60, deadline=None)

finite_logits = hnp.arrays(
    dtype=np.float64,
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12),
    elements=st.floats(-300.0, 300.0, allow_nan=False, allow_infinity=False),
)
axes = st.integers(-3, 2)
betas = st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False)
shifts = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


def valid_axis(x, axis):
    return axis % x.ndim


def perturbation_rtol(scale):
    """Relative tolerance on p for inputs rounded at magnitude `scale` (see module doc)."""
    return 4 * EPS * (scale + 1.0) + 1e-14


@SETTINGS
@given(finite_logits, axes, betas)
def test_softmax_rows_sum_to_one(x, axis, beta):
    axis = valid_axis(x, axis)
    p = softmaxc.softmax(x, axis=axis, beta=beta)
    assert np.all(p >= 0) and np.all(p <= 1)
    n = x.shape[axis]
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=0, atol=(n + 2) * EPS)


@SETTINGS
@given(finite_logits, axes, shifts)
def test_softmax_shift_invariance(x, axis, shift):
    axis = valid_axis(x, axis)
    shifted = x + shift  # rounded: perturbs each logit by up to eps * (|x| + |shift|)
    scale = np.max(np.abs(x)) + abs(shift)
    np.testing.assert_allclose(
        softmaxc.softmax(shifted, axis=axis), softmaxc.softmax(x, axis=axis),
        rtol=perturbation_rtol(scale), atol=1e-300,
    )
    np.testing.assert_allclose(
        softmaxc.logsumexp(shifted, axis=axis), softmaxc.logsumexp(x, axis=axis) + shift,
        rtol=2 * EPS, atol=4 * EPS * (scale + 1.0),
    )


@SETTINGS
@given(finite_logits, axes, betas)
def test_beta_scales_the_logits(x, axis, beta):
    axis = valid_axis(x, axis)
    scale = abs(beta) * np.max(np.abs(x))
    for function in (softmaxc.softmax, softmaxc.log_softmax, softmaxc.logsumexp):
        np.testing.assert_allclose(
            function(x, axis=axis, beta=beta), function(beta * x, axis=axis),
            rtol=perturbation_rtol(scale), atol=4 * EPS * (scale + 1.0),
            err_msg=function.__name__,
        )


@SETTINGS
@given(finite_logits, axes, betas)
def test_log_softmax_is_log_of_softmax(x, axis, beta):
    axis = valid_axis(x, axis)
    p = softmaxc.softmax(x, axis=axis, beta=beta)
    log_p = softmaxc.log_softmax(x, axis=axis, beta=beta)
    not_tiny = p > 1e-300  # below, p is subnormal or 0 and log(p) is meaningless
    scale = abs(beta) * np.max(np.abs(x))
    np.testing.assert_allclose(
        log_p[not_tiny], np.log(p[not_tiny]), rtol=2 * EPS, atol=4 * EPS * (scale + 1.0)
    )
    assert np.all(log_p <= 0)


@SETTINGS
@given(finite_logits, axes, betas)
def test_logsumexp_between_max_and_max_plus_log_n(x, axis, beta):
    axis = valid_axis(x, axis)
    lse = softmaxc.logsumexp(x, axis=axis, beta=beta)
    # The maximum of beta * x, formed as the kernel does: beta times the extreme x.
    extreme = np.max(x, axis=axis) if beta >= 0 else np.min(x, axis=axis)
    z_max = beta * extreme
    assert np.all(lse >= z_max)  # exact: lse = z_max + log1p(t) with log1p(t) >= 0
    n = x.shape[axis]
    assert np.all(lse <= z_max + np.log(n) * (1 + 4 * EPS) + 4 * EPS * np.abs(z_max))


@SETTINGS
@given(finite_logits, axes)
def test_float32_agrees_with_float64(x, axis):
    axis = valid_axis(x, axis)
    x32 = x.astype(np.float32)
    p32 = softmaxc.softmax(x32, axis=axis)
    p64 = softmaxc.softmax(x32.astype(np.float64), axis=axis)
    info = np.finfo(np.float32)
    # The documented softmax bound, in float32 ULPs: |z_i - z_max| + log2(n) + 4 (the fast
    # float32 kernel exponentiates the rounded difference z_i - z_max).
    gaps = np.max(x32, axis=axis, keepdims=True).astype(np.float64) - x32
    ulps = gaps + np.log2(x32.shape[axis]) + 4
    error = np.abs(p32.astype(np.float64) - p64)
    allowed = ulps * float(info.eps) * p64 + 2 * float(info.smallest_subnormal)
    assert np.all(error <= allowed), float(np.max(error / allowed))


@SETTINGS
@given(st.data(), finite_logits, axes, betas)
def test_where_matches_reference(data, x, axis, beta):
    axis = valid_axis(x, axis)
    where = data.draw(hnp.arrays(np.bool_, x.shape), label="where")
    scale = abs(beta) * np.max(np.abs(x))
    tolerance = {"rtol": perturbation_rtol(scale), "atol": 4 * EPS * (scale + 1.0)}
    for name, reference in REFERENCES.items():
        result = getattr(softmaxc, name)(x, axis=axis, beta=beta, where=where)
        np.testing.assert_allclose(result, reference(x, axis=axis, beta=beta, where=where),
                                   err_msg=name, **tolerance)
