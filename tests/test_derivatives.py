"""Tests of softmax_jacobian, softmax_backward and log_softmax_backward.

References: a NumPy float64 oracle of the formulas, 4th-order central finite differences
(softmaxc.testing.check_gradient), mpmath for the accuracy in ULPs, and the identities
grad @ J == softmax_backward(grad, p) and <u, J v> == <J^T u, v>.
"""

import math

import numpy as np
import pytest

import softmaxc
from softmaxc.testing import check_gradient

BETAS = [1.0, 2.5, -0.7, 0.0]
FLOATS = [np.float32, np.float64]


# ---------------------------------------------------------------------------------------
# Oracles (NumPy float64, along the last axis)
# ---------------------------------------------------------------------------------------


def softmax_ref(x, beta=1.0):
    z = beta * np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def jacobian_ref(x, beta=1.0):
    """beta * (diag(p) - p p^T) per row."""
    p = softmax_ref(x, beta)
    n = p.shape[-1]
    return beta * (p[..., :, None] * np.eye(n) - p[..., :, None] * p[..., None, :])


def log_softmax_jacobian_ref(x, beta=1.0):
    """d log p_i / d x_j = beta * (delta_ij - p_j)."""
    p = softmax_ref(x, beta)
    n = p.shape[-1]
    return beta * (np.eye(n) - p[..., None, :])


def rand(shape, seed=0, scale=2.0):
    return np.random.default_rng(seed).normal(scale=scale, size=shape)


# ---------------------------------------------------------------------------------------
# softmax_jacobian
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", BETAS)
def test_jacobian_matches_formula(beta):
    x = rand((4, 7), seed=1)
    J = softmaxc.softmax_jacobian(x, beta=beta)
    assert J.shape == (4, 7, 7) and J.dtype == np.float64
    np.testing.assert_allclose(J, jacobian_ref(x, beta), rtol=1e-14, atol=1e-15)  # oracle: 1 - p cancels


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
def test_jacobian_shape_is_batch_then_n_n(axis):
    x = rand((2, 3, 5), seed=2)
    J = softmaxc.softmax_jacobian(x, axis=axis, beta=1.5)
    n = x.shape[axis]
    batch = tuple(d for i, d in enumerate(x.shape) if i != axis % 3)
    assert J.shape == batch + (n, n)
    expected = jacobian_ref(np.moveaxis(x, axis, -1), 1.5)
    np.testing.assert_allclose(J, expected, rtol=1e-14, atol=1e-15)  # oracle: 1 - p cancels


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("beta", [2.5, -0.7])
def test_jacobian_against_finite_differences(dtype, beta):
    x = rand(6, seed=3, scale=1.0).astype(dtype)
    err = check_gradient(
        lambda v: softmaxc.softmax(v, beta=beta),
        lambda v: softmaxc.softmax_jacobian(v, beta=beta),
        x,
    )
    assert err <= (1e-9 if dtype == np.float64 else 1e-3)


def test_jacobian_rows_sum_to_zero_when_one_entry_dominates():
    # float32: p_1 rounds to 1, so 1 - p_1 = 0; the diagonal must come from the others.
    x = np.array([0.0, 20.0], dtype=np.float32)
    J = softmaxc.softmax_jacobian(x).astype(np.float64)
    p0 = math.exp(-20.0) / (1 + math.exp(-20.0))
    np.testing.assert_allclose(J, [[p0, -p0], [-p0, p0]], rtol=1e-6)


JACOBIAN_ACCURACY_ROWS = [np.random.default_rng(4).normal(scale=s, size=6) for s in (0.5, 2.0, 6.0)] + [
    np.array([0.0, 35.0, -3.0]),
    np.array([1e4, 1e4 + 1, 1e4 - 0.5]),
    np.array([0.0, 15.0, 16.0, -2.0, 14.5]),
    np.zeros(4),
]


def exact_jacobian(p, beta, mpmath):
    """beta * p_i * (delta_ij - p_j) in 200-bit arithmetic, 1 - p_i as the sum of the others."""
    n = len(p)
    J = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            if i == j:
                J[i, j] = float(beta * p[i] * mpmath.fsum(p[k] for k in range(n) if k != i))
            else:
                J[i, j] = float(-beta * p[i] * p[j])
    return J


def ulps(got, exact):
    return np.abs(got - exact) / np.spacing(np.abs(exact))


def test_jacobian_is_exact_given_the_forward_probabilities():
    """The Jacobian kernel adds at most a few roundings to the probabilities it is given."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workprec(200):
        for row in JACOBIAN_ACCURACY_ROWS:
            for beta in (1.0, -1.3, 2.5):
                p = [mpmath.mpf(float(v)) for v in softmaxc.softmax(row, beta=beta)]
                J = softmaxc.softmax_jacobian(row, beta=beta)
                assert ulps(J, exact_jacobian(p, beta, mpmath)).max() <= 4


def test_jacobian_accuracy_in_ulps():
    """End to end against mpmath: within 4 + 2 (|w_i| + |w_j|) ULP, w = beta (x - x_max).

    The forward pass rounds w = beta * (x - x_ref) (twice), and exp turns an absolute error
    in w into a relative one |w| times larger: exp's own condition number, which no
    implementation working from rounded w avoids.  The diagonal entry of the largest p uses
    the sum of the others, whose error is their p-weighted mean of 2 |w_k|.
    """
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workprec(200):
        for row in JACOBIAN_ACCURACY_ROWS:
            for beta in (1.0, -1.3, 2.5):
                z = [mpmath.mpf(beta) * mpmath.mpf(float(v)) for v in row]
                total = mpmath.fsum(mpmath.exp(zi) for zi in z)
                p = [mpmath.exp(zi) / total for zi in z]
                J = softmaxc.softmax_jacobian(row, beta=beta)
                top = int(np.argmax(beta * row))
                w = np.abs(beta * (row - row[top]))
                bound = 4 + 2 * (w[:, None] + w[None, :])
                others = np.array([float(v) for v in p])
                others[top] = 0.0
                if others.sum() > 0:
                    bound[top, top] = 4 + 2 * np.sum(others * w) / others.sum()
                excess = ulps(J, exact_jacobian(p, beta, mpmath)) - bound
                assert excess.max() <= 0, (row, beta, excess)


def test_jacobian_dtypes():
    x = rand(5, seed=5)
    assert softmaxc.softmax_jacobian(x.astype(np.float32)).dtype == np.float32
    assert softmaxc.softmax_jacobian(x.astype(np.float16)).dtype == np.float16
    assert softmaxc.softmax_jacobian([1, 2, 3]).dtype == np.float64
    with pytest.raises(TypeError):
        softmaxc.softmax_jacobian(x.astype(np.complex128))


def test_jacobian_size_limit(monkeypatch):
    # Default 1 GiB: 20000 classes in float64 would be 3.2 GB, refused before allocating.
    with pytest.raises(ValueError, match="softmax_backward") as info:
        softmaxc.softmax_jacobian(np.zeros((1, 20_000)))
    assert "JACOBIAN_MAX_BYTES" in str(info.value)
    assert softmaxc.JACOBIAN_MAX_BYTES == 1 << 30
    monkeypatch.setattr(softmaxc, "JACOBIAN_MAX_BYTES", 8 * 3 * 3)
    assert softmaxc.softmax_jacobian(np.zeros(3)).shape == (3, 3)  # exactly at the limit
    with pytest.raises(ValueError, match="softmax_backward"):
        softmaxc.softmax_jacobian(np.zeros(4))
    monkeypatch.setattr(softmaxc, "JACOBIAN_MAX_BYTES", math.inf)
    assert softmaxc.softmax_jacobian(np.zeros(4)).shape == (4, 4)
    monkeypatch.setattr(softmaxc, "JACOBIAN_MAX_BYTES", "1 GiB")
    with pytest.raises(TypeError, match="JACOBIAN_MAX_BYTES"):
        softmaxc.softmax_jacobian(np.zeros(4))


def test_jacobian_empty():
    assert softmaxc.softmax_jacobian(np.zeros((0, 3))).shape == (0, 3, 3)
    assert softmaxc.softmax_jacobian(np.zeros((2, 0))).shape == (2, 0, 0)


def test_jacobian_special_values_stay_in_their_row():
    x = np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0], [np.inf, 0.0, 1.0]])
    J = softmaxc.softmax_jacobian(x)
    assert np.isnan(J[0]).all() and np.isnan(J[2]).all()
    np.testing.assert_allclose(J[1], jacobian_ref(x[1]), rtol=1e-14, atol=1e-15)  # oracle: 1 - p cancels


# ---------------------------------------------------------------------------------------
# softmax_backward and log_softmax_backward against J and finite differences
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_backward_equals_grad_times_jacobian(beta, axis):
    x = rand((5, 6, 7), seed=6)
    g = rand(x.shape, seed=7)
    p = softmaxc.softmax(x, axis=axis, beta=beta)
    J = softmaxc.softmax_jacobian(x, axis=axis, beta=beta)
    vjp = np.einsum("...i,...ij->...j", np.moveaxis(g, axis, -1), J)
    got = softmaxc.softmax_backward(g, p, axis=axis, beta=beta)
    np.testing.assert_allclose(np.moveaxis(got, axis, -1), vjp, rtol=0, atol=1e-12)

    log_p = softmaxc.log_softmax(x, axis=axis, beta=beta)
    J_log = log_softmax_jacobian_ref(np.moveaxis(x, axis, -1), beta)
    vjp_log = np.einsum("...i,...ij->...j", np.moveaxis(g, axis, -1), J_log)
    got_log = softmaxc.log_softmax_backward(g, log_p, axis=axis, beta=beta)
    np.testing.assert_allclose(np.moveaxis(got_log, axis, -1), vjp_log, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("beta", [2.5, -0.7])
def test_backward_against_finite_differences(dtype, beta):
    x = rand((2, 5), seed=8, scale=1.0).astype(dtype)
    g = rand((2, 5), seed=9, scale=1.0).astype(dtype)
    tol = 1e-9 if dtype == np.float64 else 1e-3

    def loss(v):  # L = <g, softmax(v)>, so dL/dx = softmax_backward(g, p)
        return np.sum(g * softmaxc.softmax(v, beta=beta), dtype=np.float64)

    def grad_loss(v):
        return softmaxc.softmax_backward(g, softmaxc.softmax(v, beta=beta), beta=beta)

    assert check_gradient(loss, grad_loss, x) <= tol

    def log_loss(v):
        return np.sum(g * softmaxc.log_softmax(v, beta=beta), dtype=np.float64)

    def grad_log_loss(v):
        return softmaxc.log_softmax_backward(g, softmaxc.log_softmax(v, beta=beta), beta=beta)

    assert check_gradient(log_loss, grad_log_loss, x) <= tol


def directional_derivative(f, x, v, h):
    """d/dt f(x + t v) at t = 0 by 4th-order central differences (float64)."""
    return (f(x - 2 * h * v) - 8 * f(x - h * v) + 8 * f(x + h * v) - f(x + 2 * h * v)) / (12 * h)


@pytest.mark.parametrize("beta", [1.0, 2.5, -0.7])
def test_adjoint_identity(beta):
    """<u, J v> = <J^T u, v>: J v from finite differences, J^T u from the backward kernels."""
    x = rand((3, 8), seed=10, scale=1.0)
    u = rand(x.shape, seed=11)
    v = rand(x.shape, seed=12)
    for forward, backward in [
        (softmaxc.softmax, softmaxc.softmax_backward),
        (softmaxc.log_softmax, softmaxc.log_softmax_backward),
    ]:
        h = 2.0**-11 / max(1.0, abs(beta))
        jv = directional_derivative(lambda t: forward(t, beta=beta), x, v, h)
        jtu = backward(u, forward(x, beta=beta), beta=beta)
        lhs, rhs = np.sum(u * jv, axis=-1), np.sum(jtu * v, axis=-1)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-11)
    # J is symmetric, so softmax_backward is also the JVP: the identity holds exactly
    # up to rounding between two calls of the kernel.
    p = softmaxc.softmax(x, beta=beta)
    lhs = np.sum(u * softmaxc.softmax_backward(v, p, beta=beta), axis=-1)
    rhs = np.sum(softmaxc.softmax_backward(u, p, beta=beta) * v, axis=-1)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("beta", [1.0, 2.5, -0.7])
def test_against_torch_autograd(dtype, beta):
    torch = pytest.importorskip("torch")
    x = rand((3, 4, 6), seed=30).astype(dtype)
    g = rand(x.shape, seed=31).astype(dtype)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    for forward, backward, torch_forward in [
        (softmaxc.softmax, softmaxc.softmax_backward, torch.softmax),
        (softmaxc.log_softmax, softmaxc.log_softmax_backward, torch.log_softmax),
    ]:
        for axis in (-1, 1):
            xt = torch.tensor(x, requires_grad=True)
            torch_forward(beta * xt, dim=axis).backward(torch.tensor(g))
            got = backward(g, forward(x, axis=axis, beta=beta), axis=axis, beta=beta)
            assert got.dtype == dtype
            np.testing.assert_allclose(got, xt.grad.numpy(), **tol)
    row = torch.tensor(x[0, 0].astype(np.float64))
    J = torch.autograd.functional.jacobian(lambda t: torch.softmax(beta * t, dim=0), row)
    np.testing.assert_allclose(softmaxc.softmax_jacobian(x[0, 0], beta=beta), J.numpy(), **tol)


# ---------------------------------------------------------------------------------------
# Masking: exactly zero derivative, never NaN
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [1.0, -2.0])
def test_masked_by_neg_inf_gets_exact_zero(beta):
    neg = -np.inf if beta > 0 else np.inf  # the value that beta * x sends to -inf
    x = np.array([[0.3, neg, -1.2, 0.7], [neg, 2.0, neg, 1.0]])
    kept = np.isfinite(x)
    J = softmaxc.softmax_jacobian(x, beta=beta)
    assert not np.isnan(J).any()
    for r in range(2):
        assert np.all(J[r][~kept[r], :] == 0) and np.all(J[r][:, ~kept[r]] == 0)
        assert not np.signbit(J[r][~kept[r], :]).any()
        # the kept block is the Jacobian of the softmax of the kept entries alone
        np.testing.assert_allclose(
            J[r][np.ix_(kept[r], kept[r])], jacobian_ref(x[r][kept[r]], beta), atol=1e-15
        )

    g = rand(x.shape, seed=13)
    p = softmaxc.softmax(x, beta=beta)
    log_p = softmaxc.log_softmax(x, beta=beta)
    for backward, forward_out in [
        (softmaxc.softmax_backward, p),
        (softmaxc.log_softmax_backward, log_p),
    ]:
        got = backward(g, forward_out, beta=beta)
        assert not np.isnan(got).any()
        assert np.all(got[~kept] == 0)
        for r in range(2):  # equal to the derivative on the kept entries alone
            sub = backward(g[r][kept[r]], forward_out[r][kept[r]], beta=beta)
            np.testing.assert_allclose(got[r][kept[r]], sub, rtol=1e-14, atol=1e-16)


def test_masked_by_where_gets_exact_zero_even_with_nan_grad():
    x = rand((3, 5), seed=14)
    where = np.array([True, False, True, True, False])
    g = rand(x.shape, seed=15)
    g[:, ~where] = np.nan  # an upstream gradient that is meaningless where masked
    p = softmaxc.softmax(x, beta=1.5, where=where)
    log_p = softmaxc.log_softmax(x, beta=1.5, where=where)
    for backward, forward_out in [
        (softmaxc.softmax_backward, p),
        (softmaxc.log_softmax_backward, log_p),
    ]:
        got = backward(g, forward_out, beta=1.5)
        assert np.all(got[:, ~where] == 0)
        assert not np.isnan(got).any()
        assert not np.signbit(got[:, ~where]).any()
    # kept entries: the finite-difference derivative of the masked forward function
    for forward, backward in [
        (softmaxc.softmax, softmaxc.softmax_backward),
        (softmaxc.log_softmax, softmaxc.log_softmax_backward),
    ]:
        g_kept = np.where(where, g, 0.0)

        def loss(v, forward=forward):
            out = forward(v, beta=1.5, where=where)
            return np.sum(g_kept[0] * np.where(where, out, 0.0))

        def grad_loss(v, forward=forward, backward=backward):
            return backward(g[0], forward(v, beta=1.5, where=where), beta=1.5)

        assert check_gradient(loss, grad_loss, x[0]) < 1e-9


def test_nan_in_a_row_stays_in_that_row():
    x = rand((3, 4), seed=16)
    g = rand(x.shape, seed=17)
    p = softmaxc.softmax(x)
    g[1, 2] = np.nan
    got = softmaxc.softmax_backward(g, p)
    assert np.isnan(got[1]).all()
    np.testing.assert_array_equal(got[[0, 2]], softmaxc.softmax_backward(g[[0, 2]], p[[0, 2]]))


# ---------------------------------------------------------------------------------------
# A two-layer ReLU network (seed document 004): gradients assembled from softmaxc calls
# ---------------------------------------------------------------------------------------


class TwoLayerNet:
    """z = W x + b1, h = relu(z), a = V h + b2, L = -sum y log softmax(beta a), batched.

    The loss is log_softmax (checked against cross_entropy); delta1 comes from
    log_softmax_backward (checked against softmax(a) - y and cross_entropy_grad).

    Gradients as in the seed document (with the factor beta of the temperature):
    delta1 = beta (p - y), dL/dV = delta1 h^T, dL/db2 = delta1,
    delta2 = (V^T delta1) * 1(z > 0), dL/dW = delta2 x^T, dL/db1 = delta2.
    """

    def __init__(self, seed=0, samples=4, d_in=5, d_hidden=6, classes=4, beta=1.7):
        rng = np.random.default_rng(seed)
        self.X = rng.normal(size=(samples, d_in))
        self.Y = rng.dirichlet(np.ones(classes), size=samples)  # soft targets, rows sum to 1
        self.params = {
            "W": rng.normal(size=(d_hidden, d_in)),
            "b1": rng.normal(size=d_hidden),
            "V": rng.normal(size=(classes, d_hidden)),
            "b2": rng.normal(size=classes),
        }
        self.beta = beta

    def forward(self, W, b1, V, b2):
        Z = self.X @ W.T + b1
        H = np.maximum(Z, 0.0)
        A = H @ V.T + b2
        return Z, H, A

    def loss(self, **params):
        *_, A = self.forward(**params)
        loss = -np.sum(self.Y * softmaxc.log_softmax(A, beta=self.beta))
        same = softmaxc.cross_entropy(A, self.Y, reduction="sum", beta=self.beta)
        np.testing.assert_allclose(same, loss, rtol=1e-14)
        return loss

    def gradients(self, W, b1, V, b2, forget_relu_mask=False):
        Z, H, A = self.forward(W, b1, V, b2)
        log_p = softmaxc.log_softmax(A, beta=self.beta)
        # dL/dA from the backward kernel, with dL/dlog p = -y: beta (p - y) when sum y = 1.
        delta1 = softmaxc.log_softmax_backward(-self.Y, log_p, beta=self.beta)
        np.testing.assert_allclose(
            delta1, self.beta * (softmaxc.softmax(A, beta=self.beta) - self.Y), atol=1e-14
        )
        np.testing.assert_allclose(  # the cross-entropy family's own gradient agrees
            delta1,
            softmaxc.cross_entropy_grad(A, self.Y, reduction="sum", beta=self.beta),
            atol=1e-14,
        )
        delta2 = delta1 @ V
        if not forget_relu_mask:
            delta2 = delta2 * (Z > 0)
        return {"W": delta2.T @ self.X, "b1": delta2.sum(0), "V": delta1.T @ H, "b2": delta1.sum(0)}

    def relu_margin(self):
        """How far every hidden pre-activation z is from the ReLU kink at 0."""
        Z, _, _ = self.forward(**self.params)
        return np.abs(Z).min()

    def largest_z_change(self, eps=np.finfo(np.float64).eps ** 0.2):
        """Bound on |change of z| at check_gradient's stencil points: a step h <= eps *
        max(1, |w|) on W moves z by up to 2 h max|x|, on b1 by 2 h; V and b2 leave z alone."""
        W, b1 = self.params["W"], self.params["b1"]
        return 2 * eps * max(1, np.abs(W).max(), np.abs(b1).max()) * max(1, np.abs(self.X).max())


@pytest.mark.parametrize("name", ["W", "b1", "V", "b2"])
def test_two_layer_relu_network_gradients(name):
    net = TwoLayerNet()
    # Finite differences must not cross a ReLU kink (where the loss is not differentiable).
    assert net.relu_margin() > 4 * net.largest_z_change()

    def loss_of(value):
        return net.loss(**{**net.params, name: value})

    def grad_of(value, **kw):
        return net.gradients(**{**net.params, name: value}, **kw)[name]

    assert check_gradient(loss_of, grad_of, net.params[name]) < 1e-8
    if name in ("W", "b1"):  # the first layer's gradient needs the ReLU mask
        with pytest.raises(AssertionError, match="worst entry"):
            check_gradient(loss_of, lambda v: grad_of(v, forget_relu_mask=True), net.params[name])


# ---------------------------------------------------------------------------------------
# Conventions: dtypes, out=, layouts, threads, errors
# ---------------------------------------------------------------------------------------

BACKWARD = [
    pytest.param(softmaxc.softmax_backward, softmaxc.softmax, id="softmax_backward"),
    pytest.param(softmaxc.log_softmax_backward, softmaxc.log_softmax, id="log_softmax_backward"),
]


@pytest.mark.parametrize("backward, forward", BACKWARD)
@pytest.mark.parametrize(
    "g_dtype, p_dtype, result",
    [
        (np.float64, np.float64, np.float64),
        (np.float32, np.float32, np.float32),
        (np.float32, np.float64, np.float64),
        (np.float16, np.float16, np.float16),
        (np.float16, np.float32, np.float32),
        (np.int64, np.float32, np.float64),
        (np.bool_, np.float64, np.float64),
    ],
)
def test_backward_result_dtype(backward, forward, g_dtype, p_dtype, result):
    x = rand((3, 4), seed=19)
    g = rand((3, 4), seed=20, scale=3.0).astype(g_dtype)
    p = forward(x).astype(p_dtype)
    got = backward(g, p, beta=1.5)
    assert got.dtype == result
    expected = backward(g.astype(np.float64), p.astype(np.float64), beta=1.5)
    tol = {np.float16: 2e-3, np.float32: 1e-6, np.float64: 1e-15}[result]
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("backward, forward", BACKWARD)
def test_backward_rejects_bad_dtypes(backward, forward):
    p = forward(rand(4))
    with pytest.raises(TypeError, match="grad"):
        backward(np.ones(4, dtype=complex), p)
    with pytest.raises(TypeError):
        backward(np.ones(4), np.array(["a"] * 4))


@pytest.mark.parametrize("backward, forward", BACKWARD)
@pytest.mark.parametrize("axis", [-1, 0])
def test_backward_out_and_in_place(backward, forward, axis):
    x = rand((6, 5), seed=21)
    g = rand(x.shape, seed=22)
    p = forward(x, axis=axis, beta=0.8)
    expected = backward(g, p, axis=axis, beta=0.8)

    out = np.empty_like(g)
    assert backward(g, p, axis=axis, beta=0.8, out=out) is out
    np.testing.assert_array_equal(out, expected)

    g_copy, p_copy = g.copy(), p.copy()
    assert backward(g_copy, p, axis=axis, beta=0.8, out=g_copy) is g_copy
    np.testing.assert_array_equal(g_copy, expected)
    assert backward(g, p_copy, axis=axis, beta=0.8, out=p_copy) is p_copy
    np.testing.assert_array_equal(p_copy, expected)

    out_f = np.empty(g.shape, order="F")
    backward(g, p, axis=axis, beta=0.8, out=out_f)
    np.testing.assert_array_equal(out_f, expected)


@pytest.mark.parametrize("backward, forward", BACKWARD)
def test_backward_bad_out(backward, forward):
    g = rand((3, 4))
    p = forward(g)
    with pytest.raises(ValueError, match="shape"):
        backward(g, p, out=np.empty((4, 3)))
    with pytest.raises(ValueError, match="dtype"):
        backward(g, p, out=np.empty((3, 4), np.float32))
    readonly = np.empty((3, 4))
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        backward(g, p, out=readonly)


@pytest.mark.parametrize("backward, forward", BACKWARD)
def test_backward_any_layout_and_inputs_untouched(backward, forward):
    x = rand((5, 6), seed=23)
    g = rand((5, 6), seed=24)
    p = forward(x, beta=1.2)
    expected = backward(g, p, beta=1.2)
    layouts = {
        "fortran": (np.asfortranarray(g), np.asfortranarray(p)),
        "reversed": (g[::-1, ::-1].copy()[::-1, ::-1], p[::-1, ::-1].copy()[::-1, ::-1]),
        "big-endian": (g.astype(">f8"), p.astype(">f8")),
        "lists": (g.tolist(), p.tolist()),
    }
    for name, (gl, pl) in layouts.items():
        got = backward(gl, pl, beta=1.2)
        np.testing.assert_array_equal(got, expected, err_msg=name)
    g_ro, p_ro = g.copy(), p.copy()
    g_ro.flags.writeable = p_ro.flags.writeable = False
    np.testing.assert_array_equal(backward(g_ro, p_ro, beta=1.2), expected)
    np.testing.assert_array_equal(g_ro, g)
    np.testing.assert_array_equal(p_ro, p)


def test_jacobian_any_layout():
    x = rand((4, 5), seed=25)
    expected = softmaxc.softmax_jacobian(x, beta=0.6)
    for name, view in {
        "fortran": np.asfortranarray(x),
        "reversed": x[::-1].copy()[::-1],
        "big-endian": x.astype(">f8"),
    }.items():
        np.testing.assert_array_equal(softmaxc.softmax_jacobian(view, beta=0.6), expected, name)


def test_bitwise_identical_for_every_thread_count():
    x = rand((300, 257), seed=26)  # above the parallel threshold, not a multiple of anything
    g = rand(x.shape, seed=27)
    p = softmaxc.softmax(x, beta=1.3)
    log_p = softmaxc.log_softmax(x, beta=1.3)
    small = x[:60, :40]
    reference = [
        softmaxc.softmax_backward(g, p, beta=1.3, n_threads=1),
        softmaxc.log_softmax_backward(g, log_p, beta=1.3, n_threads=1),
        softmaxc.softmax_jacobian(small, beta=1.3, n_threads=1),
    ]
    for n_threads in (2, 3, 7):
        got = [
            softmaxc.softmax_backward(g, p, beta=1.3, n_threads=n_threads),
            softmaxc.log_softmax_backward(g, log_p, beta=1.3, n_threads=n_threads),
            softmaxc.softmax_jacobian(small, beta=1.3, n_threads=n_threads),
        ]
        for a, b in zip(reference, got):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("backward, forward", BACKWARD)
def test_backward_empty(backward, forward):
    assert backward(np.zeros((0, 3)), np.zeros((0, 3))).shape == (0, 3)
    assert backward(np.zeros((2, 0)), np.zeros((2, 0))).shape == (2, 0)


@pytest.mark.parametrize("backward, forward", BACKWARD)
def test_backward_errors(backward, forward):
    g = rand((3, 4))
    p = forward(g)
    with pytest.raises(ValueError, match=r"grad has shape \(3, 4\)"):
        backward(g, p[:, :3])
    with pytest.raises(ValueError, match="same shape"):
        backward(g[0], p)  # no broadcasting
    with pytest.raises(np.exceptions.AxisError):
        backward(g, p, axis=2)
    with pytest.raises(TypeError, match="axis"):
        backward(g, p, axis=1.0)
    with pytest.raises(ValueError, match="beta"):
        backward(g, p, beta=np.nan)
    with pytest.raises(ValueError, match="n_threads"):
        backward(g, p, n_threads=0)


def test_jacobian_errors():
    x = rand((3, 4))
    with pytest.raises(np.exceptions.AxisError):
        softmaxc.softmax_jacobian(x, axis=-3)
    with pytest.raises(np.exceptions.AxisError):
        softmaxc.softmax_jacobian(1.0)
    with pytest.raises(ValueError, match="beta"):
        softmaxc.softmax_jacobian(x, beta=np.inf)
    with pytest.raises(ValueError, match="n_threads"):
        softmaxc.softmax_jacobian(x, n_threads=-1)
    with pytest.raises(ValueError, match="rectangular"):
        softmaxc.softmax_jacobian([[1.0, 2.0], [3.0]])
