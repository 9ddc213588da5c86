"""Tests of softmaxc.testing.check_gradient: it accepts correct derivatives, rejects wrong
ones with a readable report, and never modifies its input."""

import numpy as np
import pytest

import softmaxc
from softmaxc.testing import DEFAULT_TOLERANCES, check_gradient

X = np.array([0.5, -1.0, 2.0, 0.25])


def softmax_jacobian_numpy(x, beta=1.0):
    p = softmaxc.softmax(x, beta=beta)
    return beta * (np.diag(p) - np.outer(p, p))


def test_softmaxc_testing_is_reachable_after_import_softmaxc():
    assert softmaxc.testing.check_gradient is check_gradient


# ---------------------------------------------------------------------------------------
# Correct derivatives pass
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [1.0, 2.5, -0.7])
def test_accepts_scalar_function_gradient(beta):
    # d/dx logsumexp(beta x) = beta * softmax(beta x)
    err = check_gradient(
        lambda v: softmaxc.logsumexp(v, beta=beta),
        lambda v: beta * softmaxc.softmax(v, beta=beta),
        X,
    )
    assert 0 <= err < 1e-9


@pytest.mark.parametrize("beta", [1.0, 2.5, -0.7])
def test_accepts_vector_function_jacobian(beta):
    err = check_gradient(
        lambda v: softmaxc.softmax(v, beta=beta), lambda v: softmax_jacobian_numpy(v, beta), X
    )
    assert 0 <= err < 1e-9


def test_accepts_array_valued_function_of_a_matrix():
    # f(M) = M @ A: d f[a, b] / d M[i, j] = delta_ai A[j, b]; Jacobian shape (2, 4, 2, 3).
    A = np.random.default_rng(0).normal(size=(3, 4))
    M = np.random.default_rng(1).normal(size=(2, 3))
    jacobian = np.einsum("ai,jb->abij", np.eye(2), A)
    assert check_gradient(lambda m: m @ A, lambda m: jacobian, M) < 1e-9
    with pytest.raises(ValueError, match=r"expected the Jacobian .*\(2, 4, 2, 3\)"):
        check_gradient(lambda m: m @ A, lambda m: jacobian.transpose(0, 1, 3, 2), M)


def test_float32_uses_float32_points_and_tolerances():
    seen = []

    def f(v):
        seen.append(v.dtype)
        return softmaxc.softmax(v, beta=2.0)

    x32 = X.astype(np.float32)
    err = check_gradient(f, lambda v: softmaxc.softmax_jacobian(v, beta=2.0), x32)
    assert set(seen) == {np.dtype(np.float32)}
    assert err < DEFAULT_TOLERANCES[np.dtype(np.float32)][0]
    # the same float32 function is far from float64 accuracy: float64 tolerances fail it
    rtol64, atol64 = DEFAULT_TOLERANCES[np.dtype(np.float64)]
    with pytest.raises(AssertionError):
        check_gradient(
            f, lambda v: softmaxc.softmax_jacobian(v, beta=2.0), x32, rtol=rtol64, atol=atol64
        )


def test_float64_x_with_float32_function_uses_float32_precision():
    # working precision = the coarser of x's dtype and f(x)'s dtype
    f = lambda v: softmaxc.softmax(v.astype(np.float32))  # noqa: E731
    df = lambda v: softmaxc.softmax_jacobian(v.astype(np.float32))  # noqa: E731
    assert check_gradient(f, df, X) < DEFAULT_TOLERANCES[np.dtype(np.float32)][0]


def test_integer_and_list_inputs():
    assert check_gradient(lambda v: np.sum(v**3), lambda v: 3 * v**2, [1, 2, 3]) < 1e-9
    assert check_gradient(lambda v: np.sum(v**3), lambda v: 3 * v**2, np.arange(3)) < 1e-9


def test_empty_x():
    assert check_gradient(lambda v: np.sum(v), lambda v: np.ones_like(v), np.zeros(0)) == 0.0


# ---------------------------------------------------------------------------------------
# Wrong derivatives are rejected with a readable report
# ---------------------------------------------------------------------------------------


def test_rejects_diagonal_only_softmax_jacobian():
    def diagonal_only(v):  # forgets the -p_i p_j terms
        p = softmaxc.softmax(v)
        return np.diag(p * (1 - p))

    with pytest.raises(AssertionError) as info:
        check_gradient(softmaxc.softmax, diagonal_only, X)
    report = str(info.value)
    lines = report.splitlines()
    assert len(lines) >= 8
    assert "does not match finite differences" in lines[0]
    # the worst entry is off the diagonal, where the analytic value is 0
    worst = next(line for line in lines if "worst entry" in line)
    i, j = worst.split("d f[")[1].split("]")[0], worst.split("d x[")[1].split("]")[0]
    assert i != j
    assert "analytic (df):    0.0" in report
    assert "numeric (FD)" in report and "relative error:   1.000e+00" in report
    assert "tolerance:        rtol = 1.0e-06" in report
    assert "failing entries:  12 of 16" in report


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rejects_gradient_missing_beta(dtype):
    beta = 2.5
    y = np.array([0.1, 0.2, 0.6, 0.1])

    def loss(v):  # cross-entropy of softmax(beta v) against y
        return -np.sum(y * softmaxc.log_softmax(v, beta=beta), dtype=np.float64)

    def right(v):
        return beta * (softmaxc.softmax(v, beta=beta) - y)

    def missing_beta(v):
        return softmaxc.softmax(v, beta=beta) - y

    x = X.astype(dtype)
    assert check_gradient(loss, right, x) < DEFAULT_TOLERANCES[np.dtype(dtype)][0]
    with pytest.raises(AssertionError, match="worst entry:      d f / d x"):
        check_gradient(loss, missing_beta, x)


def test_rejects_small_relative_error_above_rtol():
    # f = sum(x^2)/2 has gradient x; report the 1e-3 relative error exactly
    f, df = (lambda v: 0.5 * np.sum(v**2)), (lambda v: v * (1 + 1e-3))
    err = check_gradient(f, df, X, rtol=1e-2)
    assert err == pytest.approx(1e-3, rel=1e-6)
    with pytest.raises(AssertionError, match="relative error:   1.000e-03"):
        check_gradient(f, df, X)


def test_relative_error_has_a_floor_for_zero_entries():
    # numeric gradient at x_0 = 0 is 0: the error is |a - n| / (atol / rtol)
    x = np.array([0.0, 1.0])
    f = lambda v: 0.5 * np.sum(v**2)  # noqa: E731
    df = lambda v: v + np.array([1e-9, 0.0])  # noqa: E731
    err = check_gradient(f, df, x, rtol=1e-6, atol=1e-8)
    assert err == pytest.approx(1e-9 / 1e-2, rel=1e-3)
    with pytest.raises(AssertionError):
        check_gradient(f, df, x, rtol=1e-6, atol=1e-10)


def test_nan_counts_as_failure():
    with pytest.raises(AssertionError, match="analytic \\(df\\):    nan"):
        check_gradient(lambda v: np.sum(v**2), lambda v: np.full_like(v, np.nan), X)
    with np.errstate(all="ignore"), pytest.raises(AssertionError, match="numeric \\(FD\\):     nan"):
        check_gradient(lambda v: np.sqrt(v).sum(), lambda v: 0.5 / np.sqrt(v), np.zeros(2))


# ---------------------------------------------------------------------------------------
# Inputs are never modified; bad arguments are reported
# ---------------------------------------------------------------------------------------


def test_x_is_not_modified_even_by_a_mutating_f():
    x = X.copy()

    def f(v):
        result = np.sum(v**2)
        v += 100.0  # a careless f that mutates its argument
        return result

    def df(v):
        result = 2 * v.copy()
        v[...] = 0
        return result

    assert check_gradient(f, df, x) < 1e-9
    np.testing.assert_array_equal(x, X)
    readonly = X.copy()
    readonly.flags.writeable = False
    assert check_gradient(lambda v: np.sum(v**2), lambda v: 2 * v, readonly) < 1e-9


def test_bad_arguments():
    f, df = (lambda v: np.sum(v**2)), (lambda v: 2 * v)
    with pytest.raises(ValueError, match=r"expected the gradient \(x.shape\) \(4,\)"):
        check_gradient(f, lambda v: 2 * v[:3], X)
    with pytest.raises(ValueError, match="f returned shape"):
        check_gradient(lambda v: v[v > 0.4995], lambda v: np.eye(4)[X > 0.4995], X)
    for name in ("eps", "rtol"):
        for bad in (0.0, -1.0, np.nan, "x"):
            with pytest.raises(ValueError, match=name):
                check_gradient(f, df, X, **{name: bad})
    with pytest.raises(ValueError, match="atol"):
        check_gradient(f, df, X, atol=-1.0)
    with pytest.raises(TypeError, match="x has dtype complex"):
        check_gradient(f, df, X.astype(complex))
