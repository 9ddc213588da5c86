"""Tests of cross_entropy, cross_entropy_grad and cross_entropy_with_grad.

Three independent references:
- `reference_cross_entropy`: a plain NumPy float64 oracle written from the formulas;
- PyTorch's `F.cross_entropy` and autograd (skipped when torch is not installed);
- 4th-order central finite differences of the loss, for the gradient;
and mpmath for the accuracy of the loss in ULP.
"""

import itertools
import sys

import numpy as np
import pytest

import softmaxc
from softmaxc import _arrays

# ---------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------


def reference_cross_entropy(logits, target, axis=-1, *, weight=None, ignore_index=-100,
                            reduction="mean", label_smoothing=0.0, beta=1.0):
    """(loss, grad) in float64, straight from the formulas:

    q = (1 - eps) y + eps / C,  loss_i = -sum_c w_c q_c log p_c,
    grad_i = beta (p sum_c w_c q_c - w q),  "mean" divides by the weight of the counted
    targets (index targets) or the number of samples (probability targets).
    """
    x = np.moveaxis(np.asarray(logits, dtype=np.float64), axis, -1)
    n_classes = x.shape[-1]
    z = beta * x
    z_max = np.max(z, axis=-1, keepdims=True)
    log_p = z - z_max - np.log(np.sum(np.exp(z - z_max), axis=-1, keepdims=True))
    p = np.exp(log_p)
    w = np.ones(n_classes) if weight is None else np.asarray(weight, dtype=np.float64)
    target = np.asarray(target)
    if target.dtype.kind == "f":
        y = np.moveaxis(target.astype(np.float64), axis, -1)
        counted = np.ones(x.shape[:-1], dtype=bool)
        denominator = float(counted.size)
    else:
        counted = target != ignore_index
        safe = np.where(counted, target, 0).astype(np.intp)
        y = (np.arange(n_classes) == safe[..., None]).astype(np.float64)
        denominator = float(np.sum(w[safe] * counted))
    q = ((1.0 - label_smoothing) * y + label_smoothing / n_classes) * counted[..., None]
    coef = w * q
    with np.errstate(invalid="ignore"):
        per_sample = -np.sum(np.where(coef == 0, 0.0, coef * log_p), axis=-1)
    grad = beta * (p * np.sum(coef, axis=-1, keepdims=True) - coef)
    grad = np.moveaxis(grad, -1, axis)
    if reduction == "none":
        return per_sample, grad
    if reduction == "sum":
        return float(np.sum(per_sample)), grad
    if denominator == 0:
        return 0.0, np.zeros_like(grad)
    return float(np.sum(per_sample)) / denominator, grad / denominator


def torch_cross_entropy(logits, target, axis=-1, *, weight=None, ignore_index=-100,
                        reduction="mean", label_smoothing=0.0, beta=1.0):
    """(loss, grad) from PyTorch (class axis moved to dim 1; gradient of loss.sum())."""
    torch = pytest.importorskip("torch")
    logits = np.asarray(logits)
    target = np.asarray(target)
    is_prob = target.dtype.kind == "f"
    if logits.ndim == 1:
        # one sample as a batch of one: torch 2.13 fails on 1-d input with weight and
        # label_smoothing ("output with shape [] doesn't match the broadcast shape [1]")
        loss, grad = torch_cross_entropy(logits[None], target[None], weight=weight,
                                         ignore_index=ignore_index, reduction=reduction,
                                         label_smoothing=label_smoothing, beta=beta)
        return (loss[0] if reduction == "none" else loss), grad[0]
    logits = np.moveaxis(logits, axis, 1)
    if is_prob:
        target = np.moveaxis(target, axis, 1)
    x = torch.tensor(np.ascontiguousarray(logits), requires_grad=True)
    t = torch.tensor(np.ascontiguousarray(target if is_prob else target.astype(np.int64)))
    w = None if weight is None else torch.tensor(np.asarray(weight, dtype=logits.dtype))
    loss = torch.nn.functional.cross_entropy(
        beta * x, t, weight=w, ignore_index=ignore_index, reduction=reduction,
        label_smoothing=label_smoothing,
    )
    loss.sum().backward()
    return loss.detach().numpy(), np.moveaxis(x.grad.numpy(), 1, axis)


def central_difference_gradient(f, x, h=1e-3):
    """4th-order central finite differences of the scalar function f at x (float64)."""
    x = np.array(x, dtype=np.float64)
    grad = np.empty_like(x)
    for i in np.ndindex(x.shape):
        values = []
        for step in (2, 1, -1, -2):
            shifted = x.copy()
            shifted[i] += step * h
            values.append(f(shifted))
        grad[i] = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * h)
    return grad


def ulp_error(value, exact, dtype=np.float64):
    """|value - exact| in units of the last place of `exact` in `dtype`."""
    exact_rounded = dtype(exact)
    return float(abs(float(value) - exact) / np.spacing(abs(exact_rounded)).astype(float))


# ---------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------

N_SAMPLES, N_CLASSES = 5, 4
WEIGHT = np.array([0.3, 2.0, 1.0, 0.7])


def make_logits(shape=(N_SAMPLES, N_CLASSES), seed=0, dtype=np.float64):
    return np.random.default_rng(seed).normal(scale=2.0, size=shape).astype(dtype)


def make_labels(shape=(N_SAMPLES,), n_classes=N_CLASSES, ignored=(), seed=1):
    labels = np.random.default_rng(seed).integers(0, n_classes, size=shape)
    labels.reshape(-1)[list(ignored)] = -100
    return labels


def make_probs(shape=(N_SAMPLES, N_CLASSES), axis=-1, seed=2, dtype=np.float64):
    raw = np.random.default_rng(seed).random(shape)
    return (raw / raw.sum(axis=axis, keepdims=True)).astype(dtype)


# Every combination of the options: (target kind, weight, ignored rows, smoothing,
# reduction, beta).  Ignoring applies to index targets only.
OPTION_CASES = [
    pytest.param(kind, weighted, ignored, smoothing, reduction, beta,
                 id=f"{kind}-{'w' if weighted else 'now'}-{'ign' if ignored else 'all'}"
                    f"-ls{smoothing}-{reduction}-b{beta}")
    for kind, weighted, ignored, smoothing, reduction, beta in itertools.product(
        ["index", "prob"], [False, True], [False, True], [0.0, 0.2],
        ["mean", "sum", "none"], [1.0, -0.7])
    if not (kind == "prob" and ignored)
]


def option_problem(kind, weighted, ignored, smoothing, reduction, beta):
    logits = make_logits()
    target = make_labels(ignored=(1, 3) if ignored else ()) if kind == "index" else make_probs()
    options = dict(weight=WEIGHT if weighted else None, reduction=reduction,
                   label_smoothing=smoothing, beta=beta)
    return logits, target, options


# ---------------------------------------------------------------------------------------
# Semantics: oracle, PyTorch, finite differences, for every option combination
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, weighted, ignored, smoothing, reduction, beta", OPTION_CASES)
def test_matches_numpy_oracle(kind, weighted, ignored, smoothing, reduction, beta):
    logits, target, options = option_problem(kind, weighted, ignored, smoothing, reduction,
                                             beta)
    loss, grad = softmaxc.cross_entropy_with_grad(logits, target, **options)
    expected_loss, expected_grad = reference_cross_entropy(logits, target, **options)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-15)
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.dtype == np.float64
    else:
        assert type(loss) is float


@pytest.mark.parametrize("kind, weighted, ignored, smoothing, reduction, beta", OPTION_CASES)
def test_matches_torch(kind, weighted, ignored, smoothing, reduction, beta):
    logits, target, options = option_problem(kind, weighted, ignored, smoothing, reduction,
                                             beta)
    expected_loss, expected_grad = torch_cross_entropy(logits, target, **options)
    loss, grad = softmaxc.cross_entropy_with_grad(logits, target, **options)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind, weighted, ignored, smoothing, reduction, beta", OPTION_CASES)
def test_gradient_matches_finite_differences(kind, weighted, ignored, smoothing, reduction,
                                             beta):
    logits, target, options = option_problem(kind, weighted, ignored, smoothing, reduction,
                                             beta)

    def total_loss(x):
        return float(np.sum(softmaxc.cross_entropy(x, target, **options)))

    numeric = central_difference_gradient(total_loss, logits)
    analytic = softmaxc.cross_entropy_grad(logits, target, **options)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
    "shape, axis",
    [((N_CLASSES,), 0), ((N_SAMPLES, N_CLASSES), -1), ((N_CLASSES, N_SAMPLES), 0),
     ((2, N_CLASSES, 3, 2), 1), ((2, 3, N_CLASSES), -1), ((3, 2, N_CLASSES), 2)],
    ids=["1d", "NC", "CN-axis0", "NCd1d2-axis1", "..C", "..C-axis2"])
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_any_class_axis(shape, axis, kind):
    logits = make_logits(shape)
    batch_shape = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    if kind == "index":
        target = make_labels(batch_shape, ignored=(0,) if batch_shape else ())
    else:
        target = make_probs(shape, axis=axis)
    options = dict(weight=WEIGHT, label_smoothing=0.1, axis=axis)
    for reduction in ("mean", "sum", "none"):
        loss, grad = softmaxc.cross_entropy_with_grad(logits, target, reduction=reduction,
                                                      **options)
        expected_loss, expected_grad = reference_cross_entropy(
            logits, target, reduction=reduction, **options)
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-13)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-16)
        if reduction == "none":
            assert loss.shape == batch_shape
        torch_loss, torch_grad = torch_cross_entropy(logits, target, reduction=reduction,
                                                     **options)
        np.testing.assert_allclose(loss, torch_loss, rtol=1e-13)
        np.testing.assert_allclose(grad, torch_grad, rtol=1e-12, atol=1e-16)


# ---------------------------------------------------------------------------------------
# Pitfalls that have produced bugs elsewhere
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_weight_smoothing_and_ignore_together(reduction):
    logits = make_logits((7, 5), seed=4)
    target = np.array([4, -100, 0, 2, -100, 1, 2])
    options = dict(weight=[0.5, 1.5, 0.0, 2.0, 1.0], ignore_index=-100,
                   label_smoothing=0.3, reduction=reduction)
    loss, grad = softmaxc.cross_entropy_with_grad(logits, target, **options)
    expected_loss, expected_grad = reference_cross_entropy(logits, target, **options)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-13)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-16)
    torch_loss, torch_grad = torch_cross_entropy(logits, target, **options)
    np.testing.assert_allclose(loss, torch_loss, rtol=1e-13)
    np.testing.assert_allclose(grad, torch_grad, rtol=1e-12, atol=1e-16)
    assert np.all(grad[[1, 4]] == 0)


@pytest.mark.parametrize("weight", [None, [0.3, 2.0, 1.0, 0.7]], ids=["no-weight", "weight"])
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_batch_of_two_with_one_ignored_equals_kept_sample_alone(weight, smoothing,
                                                                ignore_index):
    logits = make_logits((2, N_CLASSES), seed=5)
    options = dict(weight=weight, label_smoothing=smoothing, ignore_index=ignore_index)
    pair_loss, pair_grad = softmaxc.cross_entropy_with_grad(logits, [1, ignore_index],
                                                            **options)
    alone_loss, alone_grad = softmaxc.cross_entropy_with_grad(logits[:1], [1], **options)
    assert pair_loss == alone_loss
    np.testing.assert_array_equal(pair_grad[0], alone_grad[0])
    np.testing.assert_array_equal(pair_grad[1], 0.0)


def test_ignore_index_inside_class_range():
    logits = make_logits((4, N_CLASSES), seed=6)
    target = np.array([0, 2, 0, 1])
    loss = softmaxc.cross_entropy(logits, target, ignore_index=0)
    expected = softmaxc.cross_entropy(logits[[1, 3]], target[[1, 3]])
    assert loss == pytest.approx(expected, rel=1e-15)


# ---------------------------------------------------------------------------------------
# Nothing counts: the documented exception (0.0 and a zero gradient, not NaN)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["all-ignored", "empty-batch", "zero-weights"])
def test_mean_when_nothing_counts(case):
    if case == "all-ignored":
        logits, target, weight = make_logits((3, N_CLASSES)), [-100, -100, -100], None
    elif case == "empty-batch":
        logits, target, weight = np.zeros((0, N_CLASSES)), np.zeros(0, dtype=int), None
    else:
        logits, target, weight = make_logits((2, N_CLASSES)), [0, 0], [0.0, 1.0, 1.0, 1.0]
    loss, grad = softmaxc.cross_entropy_with_grad(logits, target, weight=weight,
                                                  label_smoothing=0.1)
    assert loss == 0.0 and type(loss) is float
    assert grad.shape == np.shape(logits)
    np.testing.assert_array_equal(grad, 0.0)


def test_sum_and_none_when_nothing_counts():
    logits = make_logits((3, N_CLASSES))
    target = [-100, -100, -100]
    assert softmaxc.cross_entropy(logits, target, reduction="sum") == 0.0
    np.testing.assert_array_equal(softmaxc.cross_entropy(logits, target, reduction="none"),
                                  np.zeros(3))
    np.testing.assert_array_equal(softmaxc.cross_entropy_grad(logits, target, reduction="sum"),
                                  0.0)
    empty_none = softmaxc.cross_entropy(np.zeros((0, 3), np.float32), np.zeros(0, int),
                                        reduction="none")
    assert empty_none.shape == (0,) and empty_none.dtype == np.float32
    empty_probs = softmaxc.cross_entropy(np.zeros((0, 3)), np.zeros((0, 3)))
    assert empty_probs == 0.0


# ---------------------------------------------------------------------------------------
# Accuracy (mpmath) and confident rows
# ---------------------------------------------------------------------------------------

ACCURACY_ROWS = [
    ([0.0, 40.0], 1, 1.0),                    # confidently correct: loss ~ 4e-18
    ([0.0, 700.0, 3.0], 1, 1.0),              # loss below the smallest normal
    ([-30.0, 10.0, 15.0, 50.0], 3, 1.0),
    ([1.0, 2.0, 3.0], 2, 1.0),
    ([1.0, 2.0, 3.0], 0, 1.0),                # confidently wrong
    ([2.5, 2.5, 2.5, 2.5], 1, 1.0),           # ties: log(4)
    ([1e4 + 0.1, 1e4 + 0.3, 1e4 - 2.0], 0, 1.0),   # offset rows
    ([1e308, -1e308, 1e308], 0, 1.0),         # huge, no overflow
    ([0.3, -1.7, 2.2, 0.9, -0.4], 2, 3.7),
    ([0.3, -1.7, 2.2, 0.9, -0.4], 1, -2.5),   # negative beta
    ([5.0, 4.999999, -3.0], 0, 1.0),          # near tie
]


def random_accuracy_rows(count=80, seed=23):
    """Rows of 2..128 classes at scales 0.1..100, some offset by 1e3 or -5e4; half of them
    target the most probable class (confidently correct at large scales), half a random
    class."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        row = (rng.normal(scale=10.0 ** rng.uniform(-1, 2), size=rng.integers(2, 129))
               + rng.choice([0.0, 1e3, -5e4]))
        label = int(rng.integers(row.size))
        beta = float(rng.choice([1.0, 0.37, -1.3]))
        if i % 2:
            label = int(np.argmax(beta * row))
        rows.append((row.tolist(), label, beta))
    return rows


def mpmath_cross_entropy(row, label, beta):
    """(loss, gradient, gaps z_max - z_c) of one row, with 400 significant digits: enough
    to resolve 1 + exp(-700) and the products beta * x exactly."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(400):
        z = [mpmath.mpf(beta) * mpmath.mpf(float(v)) for v in row]
        z_max = max(z)
        lse = z_max + mpmath.log(mpmath.fsum(mpmath.exp(v - z_max) for v in z))
        loss = lse - z[label]
        probs = [mpmath.exp(v - lse) for v in z]
        grad = [mpmath.mpf(beta) * (p - (1 if c == label else 0)) for c, p in enumerate(probs)]
        gaps = [float(z_max - v) for v in z]
    return loss, grad, gaps


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_loss_within_4_ulp_of_mpmath(dtype):
    worst = 0.0
    for row, label, beta in ACCURACY_ROWS + random_accuracy_rows():
        with np.errstate(over="ignore"):
            x = np.array([row], dtype=dtype)
        if not np.all(np.isfinite(x)):
            continue  # 1e308 does not exist in float32
        exact, _, _ = mpmath_cross_entropy(x[0], label, beta)
        exact = float(exact)
        # "sum" of one row: a Python float, accurate to ULPs of the logits' dtype (float32
        # logits: every exp term to float32 accuracy, the sums in double)
        worst = max(worst, ulp_error(softmaxc.cross_entropy(x, [label], reduction="sum",
                                                            beta=beta), exact, dtype))
        # "none" returns the dtype of the logits
        per_sample = softmaxc.cross_entropy(x, [label], reduction="none", beta=beta)
        assert per_sample.dtype == dtype
        worst = max(worst, ulp_error(per_sample[0], exact, dtype))
    assert worst <= 4.0, worst


def test_loss_with_weight_and_smoothing_accurate():
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(7)
    n_classes = 300
    weight = rng.random(n_classes) + 0.1
    worst = 0.0
    for scale in (0.1, 3.0, 30.0):
        x = rng.normal(scale=scale, size=(1, n_classes))
        label = int(np.argmax(x))
        got = softmaxc.cross_entropy(x, [label], weight=weight, label_smoothing=0.1,
                                     reduction="sum")
        with mpmath.workdps(60):
            z = [mpmath.mpf(float(v)) for v in x[0]]
            lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in z))
            q = [mpmath.mpf(0.1) / n_classes + (mpmath.mpf(0.9) if c == label else 0)
                 for c in range(n_classes)]
            exact = float(mpmath.fsum(mpmath.mpf(float(weight[c])) * q[c] * (lse - z[c])
                                      for c in range(n_classes)))
        worst = max(worst, ulp_error(got, exact))
    assert worst <= 16.0, worst


def test_gradient_relative_accuracy_on_confident_rows():
    # The gradient at the most probable class, p_max - 1 = -T / (1 + T) when it is the
    # target, is held to 4 ULP as p_target -> 1.  Any other entry is beta * exp(z_c - lse):
    # exp inherits the rounding of its argument, an error of |z_max - z_c| * eps / 2
    # relative that no double-precision evaluation avoids, so the bound there is 4 ULP on
    # top of that conditioning.
    worst_at_max = 0.0
    for row, label, beta in ACCURACY_ROWS[:4] + ACCURACY_ROWS[8:] + random_accuracy_rows():
        x = np.array([row])
        _, exact, gaps = mpmath_cross_entropy(row, label, beta)
        grad = softmaxc.cross_entropy_grad(x, [label], beta=beta)[0]
        for c, (got, want, gap) in enumerate(zip(grad, exact, gaps)):
            error = ulp_error(got, float(want))
            if gap == 0 and c == label:
                worst_at_max = max(worst_at_max, error)
            else:
                assert error <= 4.0 + gap, (row, label, beta, c, got, float(want))
    assert worst_at_max <= 4.0, worst_at_max


def test_target_gradient_does_not_round_to_zero():
    # p_target = 1 - 4e-18 rounds to 1; the gradient p_target - 1 must not be 0.
    grad = softmaxc.cross_entropy_grad(np.array([[0.0, 40.0]]), [1])
    assert grad[0, 1] == pytest.approx(-np.exp(-40.0) / (1 + np.exp(-40.0)), rel=1e-15)
    assert grad[0, 0] == -grad[0, 1]


# ---------------------------------------------------------------------------------------
# Threads, one pass, dtypes, layouts, out=
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_identical_for_every_thread_count(kind, reduction, dtype):
    assert 401 * 97 >= _arrays.MIN_PARALLEL_ELEMENTS
    shape = (401, 97)   # large enough to run in parallel (above MIN_PARALLEL_ELEMENTS)
    logits = make_logits(shape, seed=8, dtype=dtype)
    target = (make_labels((401,), 97, ignored=range(0, 401, 7)) if kind == "index"
              else make_probs(shape, dtype=dtype))
    options = dict(weight=np.linspace(0.1, 2.0, 97), label_smoothing=0.05,
                   reduction=reduction)
    results = [softmaxc.cross_entropy_with_grad(logits, target, n_threads=n, **options)
               for n in (1, 2, 3)]
    for loss, grad in results[1:]:
        np.testing.assert_array_equal(loss, results[0][0])
        np.testing.assert_array_equal(grad, results[0][1])


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_with_grad_equals_separate_calls_bitwise(kind, dtype):
    logits = make_logits((6, 9), seed=9, dtype=dtype)
    target = make_labels((6,), 9, ignored=(2,)) if kind == "index" else make_probs((6, 9))
    for options in (dict(), dict(weight=np.arange(1.0, 10.0), label_smoothing=0.3, beta=0.5)):
        loss, grad = softmaxc.cross_entropy_with_grad(logits, target, **options)
        assert loss == softmaxc.cross_entropy(logits, target, **options)
        np.testing.assert_array_equal(grad,
                                      softmaxc.cross_entropy_grad(logits, target, **options))


@pytest.mark.parametrize("dtype, rtol", [(np.float16, 2e-3), (np.float32, 2e-6),
                                         (np.float64, 1e-13), (np.int32, 1e-13),
                                         (np.bool_, 1e-13)])
def test_dtypes(dtype, rtol):
    logits = (make_logits((4, 6), seed=10) * 3).astype(dtype)
    target = make_labels((4,), 6)
    result_dtype = {np.float16: np.float16, np.float32: np.float32}.get(dtype, np.float64)
    loss, grad = softmaxc.cross_entropy_with_grad(logits, target)
    per_sample = softmaxc.cross_entropy(logits, target, reduction="none")
    assert grad.dtype == result_dtype and grad.shape == logits.shape
    assert per_sample.dtype == result_dtype
    assert type(loss) is float
    expected_loss, expected_grad = reference_cross_entropy(logits.astype(np.float64), target)
    assert loss == pytest.approx(expected_loss, rel=rtol)
    np.testing.assert_allclose(grad.astype(np.float64), expected_grad, rtol=rtol,
                               atol=rtol * 1e-2)


def test_float32_matches_torch_float32():
    logits = make_logits((64, 50), seed=11, dtype=np.float32)
    target = make_labels((64,), 50, ignored=(3, 9))
    options = dict(weight=np.linspace(0.5, 1.5, 50, dtype=np.float32), label_smoothing=0.1)
    loss, grad = softmaxc.cross_entropy_with_grad(logits, target, **options)
    torch_loss, torch_grad = torch_cross_entropy(logits, target, **options)
    assert loss == pytest.approx(float(torch_loss), rel=1e-6)
    np.testing.assert_allclose(grad, torch_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("integer_dtype", [np.int8, np.int16, np.int32, np.int64,
                                           np.uint8, np.uint16, np.uint32, np.uint64])
def test_any_integer_target_dtype(integer_dtype):
    logits = make_logits((6, N_CLASSES), seed=12)
    target = np.array([0, 3, 1, 2, 2, 1])
    expected = softmaxc.cross_entropy_with_grad(logits, target.astype(np.int64))
    got = softmaxc.cross_entropy_with_grad(logits, target.astype(integer_dtype))
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])


def test_int8_targets_with_many_classes_and_ignore():
    n_classes = 200   # more classes than int8 can name: no label can be too large
    logits = make_logits((3, n_classes), seed=13)
    target = np.array([5, -100, 127], dtype=np.int8)
    loss = softmaxc.cross_entropy(logits, target)
    assert loss == pytest.approx(reference_cross_entropy(logits, target)[0], rel=1e-13)


def test_unsigned_targets_and_ignore_index():
    logits = make_logits((3, N_CLASSES), seed=14)
    target = np.array([1, 255, 0], dtype=np.uint8)
    with pytest.raises(IndexError):   # -100 cannot be a uint8: 255 is a bad label
        softmaxc.cross_entropy(logits, target)
    loss = softmaxc.cross_entropy(logits, target, ignore_index=255)
    assert loss == pytest.approx(softmaxc.cross_entropy(logits[[0, 2]], [1, 0]), rel=1e-15)


def layouts(arr):
    """The same values in other memory layouts."""
    yield "C", arr
    yield "F", np.asfortranarray(arr)
    yield "reversed", arr[::-1, ::-1].copy()[::-1, ::-1]
    yield "strided", np.repeat(arr, 2, axis=0)[::2]
    yield "byteswapped", arr.astype(arr.dtype.newbyteorder(">" if sys.byteorder == "little"
                                                            else "<"))
    read_only = arr.copy()
    read_only.flags.writeable = False
    yield "read-only", read_only
    unaligned = np.frombuffer(b"\0" + arr.tobytes(), dtype=arr.dtype, offset=1)
    yield "unaligned", unaligned.reshape(arr.shape)


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_any_input_layout(kind):
    logits = make_logits((N_SAMPLES, N_CLASSES), seed=15)
    target = make_labels(ignored=(2,)) if kind == "index" else make_probs()
    options = dict(weight=WEIGHT, label_smoothing=0.1)
    expected_loss, expected_grad = softmaxc.cross_entropy_with_grad(logits, target, **options)
    for name, x in layouts(logits):
        loss, grad = softmaxc.cross_entropy_with_grad(x, target, **options)
        assert loss == expected_loss, name
        np.testing.assert_array_equal(grad, expected_grad, err_msg=name)
    target_layouts = (layouts(target) if kind == "prob"
                      else [("reversed", target[::-1].copy()[::-1])])
    for name, t in target_layouts:
        loss, grad = softmaxc.cross_entropy_with_grad(logits, t, **options)
        assert loss == expected_loss, name
        np.testing.assert_array_equal(grad, expected_grad, err_msg=name)


def test_inputs_never_modified():
    logits = make_logits(seed=16)
    labels = make_labels(ignored=(1,))
    probs = make_probs()
    weight = WEIGHT.copy()
    saved = [a.copy() for a in (logits, labels, probs, weight)]
    for target in (labels, probs):
        softmaxc.cross_entropy_with_grad(logits, target, weight=weight, label_smoothing=0.2)
        softmaxc.cross_entropy_with_grad(logits.astype(np.intp).astype(np.float64), target)
    for before, after in zip(saved, (logits, labels, probs, weight)):
        np.testing.assert_array_equal(before, after)
    # the kernel marks ignored labels with -1 in its own copy, never in the caller's array
    intp_labels = labels.astype(np.intp)
    softmaxc.cross_entropy(logits, intp_labels)
    np.testing.assert_array_equal(intp_labels, labels)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("function", ["grad", "with_grad"])
def test_out_and_in_place(dtype, kind, function):
    logits = make_logits((N_SAMPLES, N_CLASSES), seed=17, dtype=dtype)
    target = make_labels(ignored=(0,)) if kind == "index" else make_probs(dtype=dtype)
    options = dict(weight=WEIGHT, label_smoothing=0.1, reduction="mean")
    call = getattr(softmaxc, f"cross_entropy_{function}")
    expected = softmaxc.cross_entropy_with_grad(logits, target, **options)

    def grad_of(result):
        return result[1] if function == "with_grad" else result

    out = np.full(logits.shape, np.nan, dtype=dtype)
    result = call(logits, target, out=out, **options)
    assert grad_of(result) is out
    np.testing.assert_array_equal(out, expected[1])

    in_place = logits.copy()
    result = call(in_place, target, out=in_place, **options)
    assert grad_of(result) is in_place
    np.testing.assert_array_equal(in_place, expected[1])
    if function == "with_grad":
        assert result[0] == expected[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [0.37, -1.3, 2.5])
def test_in_place_on_the_compensated_path(dtype, beta):
    # Rows whose label is their most probable class take the compensated sum, which needs
    # each logit twice (its exponential and the rounding of its shifted logit); in place,
    # the gradient overwrites the logits as it goes.  With beta != 1 the rounding depends
    # on the logit itself, so a logit re-read after being overwritten would change loss
    # and gradient.  Rows longer than one pairwise block, with the label in both halves.
    rng = np.random.default_rng(23)
    logits = (rng.standard_normal((6, 300)) * 4).astype(dtype)
    labels = np.argmax(beta * logits.astype(np.float64), axis=1)
    expected_loss, expected_grad = softmaxc.cross_entropy_with_grad(logits, labels, beta=beta)
    in_place = logits.copy()
    loss, grad = softmaxc.cross_entropy_with_grad(in_place, labels, beta=beta, out=in_place)
    assert grad is in_place
    np.testing.assert_array_equal(in_place, expected_grad)
    assert loss == expected_loss


def test_out_along_another_axis_and_aliasing_targets():
    logits = make_logits((N_CLASSES, N_SAMPLES), seed=18)   # classes along axis 0
    target = make_labels()
    expected = softmaxc.cross_entropy_grad(logits, target, axis=0)
    in_place = logits.copy()
    softmaxc.cross_entropy_grad(in_place, target, axis=0, out=in_place)
    np.testing.assert_array_equal(in_place, expected)
    # probability targets that are the output buffer itself are read before being overwritten
    probs = make_probs()
    expected = softmaxc.cross_entropy_grad(probs.copy(), probs.copy())
    aliased = probs.copy()
    softmaxc.cross_entropy_grad(aliased, aliased, out=aliased)
    np.testing.assert_array_equal(aliased, expected)
    # an out that overlaps the logits with another layout
    square = make_logits((4, 4), seed=19)
    expected = softmaxc.cross_entropy_grad(square.T.copy(), [0, 1, 2, 3])
    overlapping = square.copy()
    softmaxc.cross_entropy_grad(overlapping.T, [0, 1, 2, 3], out=overlapping)
    np.testing.assert_array_equal(overlapping, expected)


# ---------------------------------------------------------------------------------------
# Special values
# ---------------------------------------------------------------------------------------


def test_nan_and_inf_stay_in_their_row():
    logits = make_logits((4, N_CLASSES), seed=20)
    logits[1, 2] = np.nan
    logits[2, 0] = np.inf
    target = np.array([0, 1, 2, 3])
    per_sample, grad = softmaxc.cross_entropy_with_grad(logits, target, reduction="none")
    assert np.isnan(per_sample[1]) and np.isnan(per_sample[2])
    assert np.all(np.isnan(grad[1])) and np.all(np.isnan(grad[2]))
    clean = [0, 3]
    expected_loss, expected_grad = reference_cross_entropy(logits[clean], target[clean],
                                                           reduction="none")
    np.testing.assert_allclose(per_sample[clean], expected_loss, rtol=1e-14)
    np.testing.assert_allclose(grad[clean], expected_grad, rtol=1e-13)
    assert np.isnan(softmaxc.cross_entropy(logits, target))
    # an ignored row contributes exactly 0, whatever its logits
    loss, grad = softmaxc.cross_entropy_with_grad(logits, [0, -100, -100, 3])
    assert np.isfinite(loss) and np.all(grad[1:3] == 0)


def test_masked_classes_with_minus_infinity():
    logits = make_logits((3, N_CLASSES), seed=21)
    logits[:, 3] = -np.inf
    loss, grad = softmaxc.cross_entropy_with_grad(logits, [0, 1, 2])
    expected_loss, expected_grad = torch_cross_entropy(logits, np.array([0, 1, 2]))
    assert loss == pytest.approx(float(expected_loss), rel=1e-14)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-13, atol=1e-17)
    # a zero-probability target on a masked class contributes 0 (documented; torch: NaN)
    probs = make_probs((3, N_CLASSES))
    probs[:, 3] = 0.0
    probs /= probs.sum(axis=1, keepdims=True)
    loss = softmaxc.cross_entropy(logits, probs)
    assert loss == pytest.approx(reference_cross_entropy(logits, probs)[0], rel=1e-14)
    # the target itself masked: infinite loss; smoothing puts mass on it: infinite too
    assert softmaxc.cross_entropy(logits, [3, 0, 1]) == np.inf
    assert softmaxc.cross_entropy(logits, [0, 1, 2], label_smoothing=0.1) == np.inf
    # a confidently correct row with masked classes (the compensated path skips them)
    loss, grad = softmaxc.cross_entropy_with_grad([[50.0, -np.inf, 0.0, -np.inf]], [0],
                                                  reduction="sum")
    assert loss == pytest.approx(np.exp(-50.0), rel=1e-15)
    np.testing.assert_allclose(grad, [[-np.exp(-50.0), 0.0, np.exp(-50.0), 0.0]], rtol=1e-15)


def test_beta_zero_and_full_smoothing():
    logits = make_logits((3, 7), seed=22)
    target = [0, 6, 3]
    assert softmaxc.cross_entropy(logits, target, beta=0.0) == pytest.approx(np.log(7),
                                                                            rel=1e-15)
    np.testing.assert_array_equal(softmaxc.cross_entropy_grad(logits, target, beta=0.0), 0.0)
    full = softmaxc.cross_entropy(logits, target, label_smoothing=1.0, reduction="none")
    uniform = np.full((3, 7), 1 / 7)
    np.testing.assert_allclose(full, softmaxc.cross_entropy(logits, uniform, reduction="none"),
                               rtol=1e-14)


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


def test_out_of_range_labels_raise_index_error_with_count_position_value():
    logits = np.zeros((2, 3, N_CLASSES))
    target = np.array([[0, 5, 1], [7, -3, -100]])
    out = np.full(logits.shape, 42.0)
    with pytest.raises(IndexError, match=r"3 class index\(es\) outside \[0, 4\).*"
                                         r"target\[0, 1\] = 5"):
        softmaxc.cross_entropy_grad(logits, target, out=out)
    np.testing.assert_array_equal(out, 42.0)   # raised before any kernel ran
    with pytest.raises(IndexError, match=r"1 class index\(es\).*target\[1\] = -1"):
        softmaxc.cross_entropy(np.zeros((2, 4)), [0, -1])
    with pytest.raises(IndexError, match=r"target\[\(\)\] = 4"):
        softmaxc.cross_entropy(np.zeros(4), 4)
    with pytest.raises(IndexError, match=r"target\[1\] = 18446744073709551615"):
        softmaxc.cross_entropy(np.zeros((2, 4)), np.array([0, 2**64 - 1], dtype=np.uint64))
    with pytest.raises(IndexError, match="ignore_index=7"):
        softmaxc.cross_entropy(np.zeros((2, 4)), [-100, 1], ignore_index=7)


@pytest.mark.parametrize("target, error, match", [
    (np.array([True, False]), TypeError, "bool"),
    (np.array([1 + 0j, 0j]), TypeError, "complex"),
    (np.array(["a", "b"]), TypeError, "integer class indices"),
    (np.array([0, 1, 2]), ValueError, "shape"),
    (np.array([[0], [1]]), ValueError, "shape"),
    (np.full((2, 3), 0.25), ValueError, "shape"),
    (np.full((2,), 0.25), ValueError, "shape"),
])
def test_bad_targets(target, error, match):
    with pytest.raises(error, match=match):
        softmaxc.cross_entropy(np.zeros((2, 4)), target)


@pytest.mark.parametrize("options, error, match", [
    (dict(weight=[1.0, 2.0]), ValueError, "shape"),
    (dict(weight=[1.0, np.nan, 1.0, 1.0]), ValueError, "finite"),
    (dict(weight=[1.0, np.inf, 1.0, 1.0]), ValueError, "finite"),
    (dict(weight=[1.0, -0.5, 1.0, 1.0]), ValueError, "non-negative"),
    (dict(weight=[1j, 1, 1, 1]), TypeError, "complex"),
    (dict(label_smoothing=-0.1), ValueError, "label_smoothing"),
    (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
    (dict(label_smoothing=np.nan), ValueError, "label_smoothing"),
    (dict(label_smoothing="0.1"), TypeError, "label_smoothing"),
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(reduction=None), ValueError, "reduction"),
    (dict(ignore_index=1.5), TypeError, "ignore_index"),
    (dict(ignore_index=True), TypeError, "ignore_index"),
    (dict(beta=np.inf), ValueError, "beta"),
    (dict(n_threads=0), ValueError, "n_threads"),
    (dict(axis=2), np.exceptions.AxisError, "axis"),
])
def test_bad_options(options, error, match):
    for function in (softmaxc.cross_entropy, softmaxc.cross_entropy_grad,
                     softmaxc.cross_entropy_with_grad):
        with pytest.raises(error, match=match):
            function(np.zeros((2, 4)), [0, 1], **options)


def test_zero_classes_and_bad_out():
    with pytest.raises(ValueError, match="at least one class"):
        softmaxc.cross_entropy(np.zeros((3, 0)), [0, 0, 0])
    logits = np.zeros((2, 4))
    read_only = np.zeros((2, 4))
    read_only.flags.writeable = False
    for out, match in [(np.zeros((4, 2)), "shape"), (np.zeros((2, 4), np.float32), "dtype"),
                       (read_only, "read-only")]:
        with pytest.raises(ValueError, match=match):
            softmaxc.cross_entropy_grad(logits, [0, 1], out=out)
        with pytest.raises(ValueError, match=match):
            softmaxc.cross_entropy_with_grad(logits, [0, 1], out=out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 5, 7), (4, 1000, 9), (2, 20000, 3)], ids=str)
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1, "weight": "random"},
                                     {"beta": -1.3, "reduction": "none"}], ids=str)
def test_classes_along_axis_1_equal_the_contiguous_rows(dtype, shape, options):
    # PyTorch's (N, C, d) layout, C-contiguous, goes through the tiled column kernel (no
    # transposed copy): bitwise the results of the transposed contiguous rows, for every
    # thread count, in place too; ignored targets included.
    rng = np.random.default_rng(41)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    labels = rng.integers(0, shape[1], (shape[0], shape[2]))
    labels[0, 0] = -100
    options = dict(options)
    if options.get("weight") == "random":
        options["weight"] = rng.random(shape[1])
    transposed = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    loss, grad = softmaxc.cross_entropy_with_grad(transposed, labels, **options)
    grad = np.moveaxis(grad, -1, 1)
    for n_threads in (1, 2, 3):
        got_loss, got_grad = softmaxc.cross_entropy_with_grad(x, labels, axis=1,
                                                              n_threads=n_threads, **options)
        assert np.asarray(got_loss).tobytes() == np.asarray(loss).tobytes()
        np.testing.assert_array_equal(got_grad, grad)
    only_loss = softmaxc.cross_entropy(x, labels, axis=1, **options)
    assert np.asarray(only_loss).tobytes() == np.asarray(loss).tobytes()
    in_place = x.copy()
    _, got_grad = softmaxc.cross_entropy_with_grad(in_place, labels, axis=1, out=in_place,
                                                   **options)
    assert got_grad is in_place
    np.testing.assert_array_equal(in_place, grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mean_with_subnormal_weights_equals_unweighted(dtype, rng):
    """Regression (found by scripts/fuzz.py): with subnormal weights the "mean" normaliser
    is subnormal and 1 / normaliser overflows.  The mean is invariant under scaling all
    weights, so equal tiny weights give exactly the unweighted result, never NaN."""
    x = rng.normal(size=(5, 3)).astype(dtype)
    labels = np.array([0, 2, 1, 1, 0])
    weight = np.full(3, 5e-311)
    loss, grad = softmaxc.cross_entropy_with_grad(x, labels, weight=weight)
    expected_loss, expected_grad = softmaxc.cross_entropy_with_grad(x, labels)
    assert loss == pytest.approx(expected_loss, rel=1e-15)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6 if dtype == np.float32 else 1e-15)
    assert weight[0] == 5e-311   # the caller's weights are not rescaled in place
