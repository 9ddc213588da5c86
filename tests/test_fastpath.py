"""The fast path (softmaxc/_fastpath.pxd): the common call is taken by the compiled entries
and gives bitwise the general path's results; every other call is declined and runs the
general path, with its usual results and errors."""

import numpy as np
import pytest

import softmaxc
from softmaxc import _arrays, _config, _cross_entropy
from softmaxc import _cross_entropy_kernels as ce_kernels
from softmaxc import _softmax_kernels as softmax_kernels

SOFTMAX_ENTRIES = {
    "softmax": "softmax_fast",
    "log_softmax": "log_softmax_fast",
    "logsumexp": "logsumexp_fast",
}
CE_FUNCTIONS = ["cross_entropy", "cross_entropy_grad", "cross_entropy_with_grad"]


@pytest.fixture
def general_calls(monkeypatch):
    """How often the general path ran: every general path starts with as_real_array."""
    calls = []
    real = _arrays.as_real_array

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(_arrays, "as_real_array", counting)
    return calls


@pytest.fixture
def no_general_path(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the general path ran")

    monkeypatch.setattr(_arrays, "as_real_array", fail)


def general_result(monkeypatch, function, *args, **kwargs):
    """What `function` returns with the fast path switched off."""
    with monkeypatch.context() as patch:
        for name in SOFTMAX_ENTRIES.values():
            patch.setattr(softmax_kernels, name, lambda *a: None)
        patch.setattr(ce_kernels, "cross_entropy_fast", lambda *a: None)
        return getattr(softmaxc, function)(*args, **kwargs)


def assert_bitwise_equal(actual, expected):
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_bitwise_equal(a, e)
        return
    if isinstance(expected, float):
        assert type(actual) is float
        assert np.float64(actual).view(np.uint64) == np.float64(expected).view(np.uint64)
        return
    assert type(actual) is np.ndarray
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    unsigned = np.dtype(f"u{actual.dtype.itemsize}")
    np.testing.assert_array_equal(actual.view(unsigned), expected.view(unsigned))


def special_rows(dtype, n):
    """Rows with NaN, +inf, -inf, all -inf, a 1e4 offset, a huge value, ties, and plain."""
    rng = np.random.default_rng(7)
    rows = 3.0 * rng.standard_normal((9, n))
    rows[0, n // 2] = np.nan
    rows[1, 0] = np.inf
    rows[2, -1] = -np.inf
    rows[3] = -np.inf
    rows[4] += 1e4
    rows[5, 1 % n] = 1e30 if dtype == np.float32 else 1e300
    rows[6] = 2.0
    rows[7] = 0.0
    return rows.astype(dtype)


SHAPES = [(1000,), (1, 1000), (1, 1), (5, 1), (7, 33), (3, 4, 129), (2, 3, 2, 5)]
BETAS = [1.0, 0.5, -2.0, 0.0]


# ------------------------------------------------------------ softmax family: taken

@pytest.mark.parametrize("function", list(SOFTMAX_ENTRIES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("beta", BETAS)
def test_softmax_family_takes_the_fast_path_bitwise(function, dtype, shape, beta, rng,
                                                    monkeypatch):
    x = (3.0 * rng.standard_normal(shape)).astype(dtype)
    x_before = x.copy()
    expected = general_result(monkeypatch, function, x, beta=beta)
    with monkeypatch.context() as patch:
        patch.setattr(_arrays, "as_real_array", lambda *a, **k: pytest.fail("general path"))
        actual = getattr(softmaxc, function)(x, beta=beta)
    assert_bitwise_equal(actual, expected)
    assert_bitwise_equal(x, x_before)  # the input is untouched


@pytest.mark.parametrize("function", list(SOFTMAX_ENTRIES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 1000])
@pytest.mark.parametrize("beta", BETAS)
def test_softmax_family_special_values_bitwise(function, dtype, n, beta, monkeypatch):
    x = special_rows(dtype, n)
    expected = general_result(monkeypatch, function, x, beta=beta)
    with monkeypatch.context() as patch:
        patch.setattr(_arrays, "as_real_array", lambda *a, **k: pytest.fail("general path"))
        actual = getattr(softmaxc, function)(x, beta=beta)
    assert_bitwise_equal(actual, expected)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape", [(1000,), (4, 10), (2, 3, 5)], ids=str)
def test_logsumexp_keepdims_and_axis_spelling(keepdims, shape, rng, monkeypatch):
    x = rng.standard_normal(shape)
    expected = general_result(monkeypatch, "logsumexp", x, keepdims=keepdims)
    monkeypatch.setattr(_arrays, "as_real_array", lambda *a, **k: pytest.fail("general path"))
    for axis in (-1, len(shape) - 1):
        assert_bitwise_equal(softmaxc.logsumexp(x, axis, keepdims=keepdims), expected)


def result_shape(function, shape, keepdims=False):
    if function != "logsumexp":
        return shape
    return shape[:-1] + (1,) if keepdims else shape[:-1]


@pytest.mark.parametrize("function", list(SOFTMAX_ENTRIES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1000,), (7, 33), (3, 4, 129)], ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_out_is_written_by_the_fast_path_bitwise(function, dtype, shape, keepdims, rng,
                                                 monkeypatch):
    if keepdims and function != "logsumexp":
        pytest.skip("keepdims is logsumexp's")
    extra = dict(keepdims=keepdims) if function == "logsumexp" else {}
    x = (3.0 * rng.standard_normal(shape)).astype(dtype)
    x_before = x.copy()
    expected = general_result(monkeypatch, function, x, beta=0.5, **extra)
    out = np.full(result_shape(function, shape, keepdims), np.nan, dtype)
    with monkeypatch.context() as patch:
        patch.setattr(_arrays, "as_real_array", lambda *a, **k: pytest.fail("general path"))
        assert getattr(softmaxc, function)(x, beta=0.5, out=out, **extra) is out
    assert_bitwise_equal(out, expected)
    assert_bitwise_equal(x, x_before)


@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_is_x_in_place_on_the_fast_path(function, dtype, rng, monkeypatch):
    x = (3.0 * rng.standard_normal((9, 100))).astype(dtype)
    expected = general_result(monkeypatch, function, x)
    with monkeypatch.context() as patch:
        patch.setattr(_arrays, "as_real_array", lambda *a, **k: pytest.fail("general path"))
        assert getattr(softmaxc, function)(x, out=x) is x
    assert_bitwise_equal(x, expected)


@pytest.mark.parametrize("function", list(SOFTMAX_ENTRIES))
@pytest.mark.parametrize("shift", [1, 10, 59, -1, -5])
def test_out_overlapping_the_input_takes_the_general_path(function, shift, monkeypatch,
                                                          general_calls):
    # out is a view of the same buffer, moved by `shift` elements (partly over x, or for
    # logsumexp inside it): the kernels may not write it directly; the general path writes
    # through a buffer and gives the same values as with a separate out.
    n_out = 60 if function != "logsumexp" else 6
    memory = np.linspace(-3.0, 3.0, 200)
    x = memory[70:130].reshape(6, 10)
    out = memory[70 + shift: 70 + shift + n_out].reshape(result_shape(function, (6, 10)))
    expected = general_result(monkeypatch, function, x.copy())
    general_calls.clear()
    assert getattr(softmaxc, function)(x, out=out) is out
    assert general_calls, "the general path did not run"
    assert_bitwise_equal(out, expected)


def test_logsumexp_out_is_never_the_input(monkeypatch, general_calls):
    # Same address as x but a reduced shape: x's first row would be overwritten while it
    # is being read; the fast path declines it.
    memory = np.linspace(-3.0, 3.0, 60)
    x = memory.reshape(6, 10)
    out = memory[:6]
    expected = general_result(monkeypatch, "logsumexp", x.copy())
    general_calls.clear()
    softmaxc.logsumexp(x, out=out)
    assert general_calls, "the general path did not run"
    assert_bitwise_equal(out, expected)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("function", list(SOFTMAX_ENTRIES))
def test_large_inputs_use_the_general_thread_choice(function, n_threads, rng, monkeypatch):
    x = rng.standard_normal((64, 1000)).astype(np.float32)   # above MIN_PARALLEL_ELEMENTS
    assert x.size >= _arrays.MIN_PARALLEL_ELEMENTS
    expected = general_result(monkeypatch, function, x, n_threads=1)
    asked = []
    real = _arrays.threads_for
    monkeypatch.setattr(_arrays, "threads_for",
                        lambda *args: asked.append(args) or real(*args))
    monkeypatch.setattr(_arrays, "as_real_array", lambda *a, **k: pytest.fail("general path"))
    actual = getattr(softmaxc, function)(x, n_threads=n_threads)
    assert asked == [(n_threads, 64, 1000)]
    assert_bitwise_equal(actual, expected)


def test_small_inputs_do_not_read_the_thread_setting(rng, monkeypatch, no_general_path):
    monkeypatch.setattr(_arrays, "threads_for", lambda *a: pytest.fail("threads_for"))
    monkeypatch.setattr(_arrays, "check_n_threads", lambda *a: pytest.fail("check_n_threads"))
    monkeypatch.setattr(_config, "get_num_threads", lambda *a: pytest.fail("get_num_threads"))
    x = rng.standard_normal((4, 1000))
    softmaxc.softmax(x)
    softmaxc.log_softmax(x, n_threads=7)
    softmaxc.logsumexp(x)
    softmaxc.cross_entropy_with_grad(x, np.arange(4))


def test_forked_child_rule_is_respected(rng, monkeypatch):
    """serial_only (a child forked after a parallel call): threads_for gives one thread."""
    monkeypatch.setattr(_config, "serial_only", True)
    returned = []
    real = _arrays.threads_for
    monkeypatch.setattr(_arrays, "threads_for",
                        lambda *args: returned.append(real(*args)) or returned[-1])
    x = rng.standard_normal((64, 1000))
    softmaxc.softmax(x, n_threads=2)
    softmaxc.cross_entropy(x, np.arange(64), n_threads=2)
    assert returned == [1, 1]


# ------------------------------------------------------------ softmax family: declined

def _unaligned(dtype, shape):
    dtype = np.dtype(dtype)
    raw = np.zeros(int(np.prod(shape)) * dtype.itemsize + 1, np.uint8)
    arr = raw[1:].view(dtype).reshape(shape)
    arr[...] = np.linspace(-3, 3, arr.size).reshape(shape)
    assert not arr.flags.aligned
    return arr


BASE = np.linspace(-3.0, 3.0, 60).reshape(6, 10)

DECLINED_INPUTS = {
    "fortran": np.asfortranarray(BASE),
    "non-contiguous": BASE[:, ::2],
    "negative-stride": BASE[:, ::-1],
    "byte-swapped": BASE.astype(">f8" if np.little_endian else "<f8"),
    "float16": BASE.astype(np.float16),
    "longdouble": BASE.astype(np.longdouble),
    "int64": np.arange(60).reshape(6, 10),
    "bool": BASE > 0,
    "list": BASE.tolist(),
    "matrix-subclass": BASE.view(np.matrix),
    "memmap-like-subclass": BASE.view(type("Sub", (np.ndarray,), {})),
    "0-d": np.array(1.5),
    "empty-batch": np.zeros((0, 10)),
    "empty-axis": np.zeros((6, 0)),
    "unaligned": _unaligned(np.float64, (6, 10)),
    "broadcast": np.broadcast_to(BASE[0], (6, 10)),
}


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")   # np.matrix
@pytest.mark.parametrize("function", list(SOFTMAX_ENTRIES))
@pytest.mark.parametrize("case", list(DECLINED_INPUTS))
def test_declined_inputs_take_the_general_path(function, case, general_calls):
    x = DECLINED_INPUTS[case]
    extra = (False,) if function == "logsumexp" else ()
    assert getattr(softmax_kernels, SOFTMAX_ENTRIES[function])(x, -1, 1.0, None, *extra) is None
    try:
        getattr(softmaxc, function)(x)
    except np.exceptions.AxisError:   # the general path's error for 0-d input
        assert case == "0-d"
    assert general_calls, "the general path did not run"


DECLINED_OPTIONS = {
    "axis=0": dict(axis=0),
    "axis=-2": dict(axis=-2),
    "axis=np.int64(-1)": dict(axis=np.int64(-1)),
    "axis=huge": dict(axis=2**70, error=OverflowError),
    "axis=True": dict(axis=True),
    "axis=float": dict(axis=-1.0, error=TypeError),
    "beta=np.float64": dict(beta=np.float64(1.0)),
    "beta=int": dict(beta=1),
    "beta=nan": dict(beta=float("nan"), error=ValueError),
    "beta=inf": dict(beta=float("inf"), error=ValueError),
    "n_threads=0": dict(n_threads=0, error=ValueError),
    "n_threads=-1": dict(n_threads=-1, error=ValueError),
    "n_threads=np.int64": dict(n_threads=np.int64(2)),
    "n_threads=True": dict(n_threads=True, error=TypeError),
    "n_threads=huge": dict(n_threads=2**80),
    "where": dict(where=np.ones(10, bool)),
    "out=float32": dict(out=np.empty((6, 10), np.float32), error=ValueError),
    "out=fortran": dict(out=np.empty((6, 10), order="F")),
    "out=read-only": dict(out=np.zeros((6, 10)), read_only=True, error=ValueError),
    "out=list": dict(out=[[0.0] * 10] * 6, error=TypeError),
    "out=subclass": dict(out=np.empty((6, 10)).view(np.ma.MaskedArray)),
}


@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
@pytest.mark.parametrize("case", list(DECLINED_OPTIONS))
def test_declined_options_take_the_general_path(function, case, general_calls):
    options = dict(DECLINED_OPTIONS[case])
    error = options.pop("error", None)
    if options.pop("read_only", False):
        options["out"] = options["out"].copy()
        options["out"].flags.writeable = False
    if error is None:
        getattr(softmaxc, function)(BASE, **options)
    else:
        with pytest.raises(error):
            getattr(softmaxc, function)(BASE, **options)
    assert general_calls, "the general path did not run"


@pytest.mark.parametrize("keepdims", [0, 1, np.bool_(True), None])
def test_logsumexp_declines_keepdims_that_is_not_a_bool(keepdims, general_calls):
    softmaxc.logsumexp(BASE, keepdims=keepdims)
    assert general_calls


# ------------------------------------------------------------ cross-entropy: taken

def logits_and_labels(dtype, shape, label_dtype, rng, ignore=None, special=False):
    x = special_rows(dtype, shape[-1])[: shape[0]] if special else (
        3.0 * rng.standard_normal(shape)).astype(dtype)
    labels = rng.integers(0, shape[-1], size=shape[:-1]).astype(label_dtype)
    if ignore is not None and labels.size > 1:
        labels.reshape(-1)[:: 3] = ignore
    return x, labels


CE_CASES = [
    # (shape, options)
    ((1, 1000), {}),
    ((1000,), {}),
    ((5, 10), dict(reduction="sum")),
    ((5, 10), dict(reduction="none")),
    ((300, 7), {}),                                  # more than 8 rows: pairwise sum
    ((300, 7), dict(reduction="none", beta=-0.5)),
    ((3, 4, 17), dict(label_smoothing=0.1)),
    ((3, 4, 17), dict(reduction="none", label_smoothing=1.0, beta=2.0)),
    ((9, 12), dict(ignore_index=-100, ignore=-100)),
    ((9, 12), dict(ignore_index=0, ignore=0, reduction="sum")),      # an in-range ignore_index
    ((9, 12), dict(ignore_index=5, ignore=5, reduction="none")),
    ((1, 1), {}),
]


@pytest.mark.parametrize("function", CE_FUNCTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label_dtype", [np.int64, np.int32, np.intp, np.longlong])
@pytest.mark.parametrize("shape, options", CE_CASES, ids=[f"{s}-{o}" for s, o in CE_CASES])
def test_cross_entropy_takes_the_fast_path_bitwise(function, dtype, label_dtype, shape,
                                                   options, rng, monkeypatch):
    options = dict(options)
    x, labels = logits_and_labels(dtype, shape, label_dtype, rng, options.pop("ignore", None))
    x_before, labels_before = x.copy(), labels.copy()
    expected = general_result(monkeypatch, function, x, labels, **options)
    with monkeypatch.context() as patch:
        patch.setattr(_arrays, "as_real_array", lambda *a, **k: pytest.fail("general path"))
        actual = getattr(softmaxc, function)(x, labels, **options)
    assert_bitwise_equal(actual, expected)
    assert_bitwise_equal(x, x_before)
    assert_bitwise_equal(labels, labels_before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("rows", [1, 3, 9])
def test_cross_entropy_special_values_bitwise(dtype, reduction, rows, monkeypatch):
    rng = np.random.default_rng(3)
    for start in range(9 - rows + 1):
        x = special_rows(dtype, 50)[start : start + rows]
        labels = rng.integers(0, 50, size=rows)
        expected = general_result(monkeypatch, "cross_entropy_with_grad", x, labels,
                                  reduction=reduction)
        assert ce_kernels.cross_entropy_fast(x, labels, -1, -100, reduction, 0.0, 1.0, None,
                                             True) is not None
        actual = softmaxc.cross_entropy_with_grad(x, labels, reduction=reduction)
        assert_bitwise_equal(actual, expected)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_cross_entropy_large_inputs_bitwise_for_every_thread_count(n_threads, rng, monkeypatch):
    x, labels = logits_and_labels(np.float32, (401, 97), np.int64, rng, ignore=-100)
    expected = general_result(monkeypatch, "cross_entropy_with_grad", x, labels, n_threads=1)
    monkeypatch.setattr(_arrays, "as_real_array", lambda *a, **k: pytest.fail("general path"))
    actual = softmaxc.cross_entropy_with_grad(x, labels, n_threads=n_threads)
    assert_bitwise_equal(actual, expected)


@pytest.mark.parametrize("rows", [1, 2, 7, 8, 9, 127, 128, 129, 1000, 5000])
def test_reduce_sums_as_np_sum(rows, rng):
    losses = rng.exponential(size=rows) * 10.0 ** rng.integers(-20, 5, size=rows)
    if rows == 2:
        losses[1] = np.nan
    for reduction in ("sum", "mean"):
        total = _cross_entropy._reduce(losses.copy(), reduction, 3.0, np.float64, (rows,))
        expected = float(np.sum(losses)) / (3.0 if reduction == "mean" else 1.0)
        assert np.float64(total).view(np.uint64) == np.float64(expected).view(np.uint64)
    nan = np.array([np.nan])
    assert np.isnan(_cross_entropy._reduce(nan, "sum", 1.0, np.float64, (1,)))


# ------------------------------------------------------------ cross-entropy: declined

LOGITS = np.linspace(-3.0, 3.0, 60).reshape(6, 10)
LABELS = np.array([0, 9, 3, 3, -100, 5])

CE_DECLINED = {
    # name: (logits, target, options, expected error or None)
    "weight": (LOGITS, LABELS, dict(weight=np.ones(10)), None),
    "out=fortran": (LOGITS, LABELS, dict(out=np.empty((6, 10), order="F")), None),
    "out=float32": (LOGITS, LABELS, dict(out=np.empty((6, 10), np.float32)), ValueError),
    "out=list": (LOGITS, LABELS, dict(out=[[0.0] * 10] * 6), TypeError),
    "smoothing-int": (LOGITS, LABELS, dict(label_smoothing=0), None),
    "smoothing-out-of-range": (LOGITS, LABELS, dict(label_smoothing=1.5), ValueError),
    "smoothing-nan": (LOGITS, LABELS, dict(label_smoothing=float("nan")), ValueError),
    "ignore_index-numpy": (LOGITS, LABELS, dict(ignore_index=np.int64(-100)), None),
    "ignore_index-huge": (LOGITS, np.array([0, 9, 3, 3, 1, 5]), dict(ignore_index=2**70), None),
    "ignore_index-bool": (LOGITS, LABELS, dict(ignore_index=False), TypeError),
    "reduction-unknown": (LOGITS, LABELS, dict(reduction="MEAN"), ValueError),
    "reduction-not-str": (LOGITS, LABELS, dict(reduction=None), ValueError),
    "beta-numpy": (LOGITS, LABELS, dict(beta=np.float32(1.0)), None),
    "axis-0": (LOGITS.T.copy(), LABELS, dict(axis=0), None),
    "n_threads-0": (LOGITS, LABELS, dict(n_threads=0), ValueError),
    "target-list": (LOGITS, LABELS.tolist(), {}, None),
    "target-int16": (LOGITS, LABELS.astype(np.int16), {}, None),
    "target-uint8": (LOGITS, np.array([0, 9, 3, 3, 1, 5], np.uint8), {}, None),
    "target-uint64": (LOGITS, np.array([0, 9, 3, 3, 1, 5], np.uint64), {}, None),
    "target-byte-swapped": (LOGITS, LABELS.astype(">i8" if np.little_endian else "<i8"), {},
                            None),
    "target-non-contiguous": (LOGITS, np.repeat(LABELS, 2)[::2], {}, None),
    "target-probabilities": (LOGITS, np.full((6, 10), 0.1), {}, None),
    "target-bool": (LOGITS, np.ones(6, bool), {}, TypeError),
    "target-shape": (LOGITS, LABELS[:5], {}, ValueError),
    "target-2d-for-2d": (LOGITS, np.zeros((6, 10), np.int64), {}, ValueError),
    "target-fortran": (np.zeros((3, 4, 5)), np.asfortranarray(np.zeros((3, 4), np.int64)), {},
                       None),
    "logits-fortran": (np.asfortranarray(LOGITS), LABELS, {}, None),
    "logits-float16": (LOGITS.astype(np.float16), LABELS, {}, None),
    "logits-int": (np.arange(60).reshape(6, 10), LABELS, {}, None),
    "logits-1d-int-target": (LOGITS[0], 3, {}, None),
    "logits-empty-batch": (np.zeros((0, 10)), np.zeros(0, np.int64), {}, None),
    "logits-no-classes": (np.zeros((6, 0)), LABELS, {}, ValueError),
    "all-ignored-mean": (LOGITS, np.full(6, -100), {}, None),
    "bad-label-high": (LOGITS, np.array([0, 10, 3, 3, 1, 5]), {}, IndexError),
    "bad-label-negative": (LOGITS, np.array([0, 1, -1, 3, 1, 5]), {}, IndexError),
    "bad-label-int32": (LOGITS, np.array([0, 1, 2, 3, 1, 2**31 - 1], np.int32), {}, IndexError),
}


@pytest.mark.parametrize("function", CE_FUNCTIONS)
@pytest.mark.parametrize("case", list(CE_DECLINED))
def test_cross_entropy_declined_cases_take_the_general_path(function, case, general_calls):
    logits, target, options, error = CE_DECLINED[case]
    if "out" in options and function == "cross_entropy":
        pytest.skip("cross_entropy has no out=")
    logits_before = np.array(logits, copy=True)
    if error is None:
        getattr(softmaxc, function)(logits, target, **options)
    else:
        with pytest.raises(error):
            getattr(softmaxc, function)(logits, target, **options)
    assert general_calls, "the general path did not run"
    np.testing.assert_array_equal(logits, logits_before)


@pytest.mark.parametrize("function", ["cross_entropy_grad", "cross_entropy_with_grad"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("in_place", [False, True])
def test_cross_entropy_out_is_written_by_the_fast_path_bitwise(function, dtype, in_place, rng,
                                                               monkeypatch):
    x, labels = logits_and_labels(dtype, (7, 33), np.int64, rng, ignore=-100)
    expected = general_result(monkeypatch, function, x.copy(), labels, label_smoothing=0.1)
    out = x if in_place else np.full_like(x, np.nan)
    x_before = x.copy()
    with monkeypatch.context() as patch:
        patch.setattr(_arrays, "as_real_array", lambda *a, **k: pytest.fail("general path"))
        actual = getattr(softmaxc, function)(x, labels, label_smoothing=0.1, out=out)
    grad = actual[1] if function == "cross_entropy_with_grad" else actual
    assert grad is out
    assert_bitwise_equal(actual, expected)
    if not in_place:
        assert_bitwise_equal(x, x_before)


@pytest.mark.parametrize("shift", [1, 10, 59, -1, -5])
def test_cross_entropy_out_overlapping_the_logits_takes_the_general_path(shift, monkeypatch,
                                                                         general_calls):
    memory = np.linspace(-3.0, 3.0, 200)
    x = memory[70:130].reshape(6, 10)
    out = memory[70 + shift: 130 + shift].reshape(6, 10)
    expected = general_result(monkeypatch, "cross_entropy_grad", x.copy(), LABELS)
    general_calls.clear()
    assert softmaxc.cross_entropy_grad(x, LABELS, out=out) is out
    assert general_calls, "the general path did not run"
    assert_bitwise_equal(out, expected)


@pytest.mark.parametrize("label_dtype", [np.int64, np.int32])
def test_bad_labels_raise_the_usual_index_error(label_dtype):
    labels = np.array([[0, 10], [-3, 2]], label_dtype)
    logits = np.zeros((2, 2, 10))
    assert ce_kernels.cross_entropy_fast(logits, labels, -1, -100, "mean", 0.0, 1.0, None,
                                         False) is None
    message = (r"target has 2 class index\(es\) outside \[0, 10\) that are not "
               r"ignore_index=-100; the first is target\[0, 1\] = 10")
    for function in CE_FUNCTIONS:
        with pytest.raises(IndexError, match=message):
            getattr(softmaxc, function)(logits, labels)


def test_all_ignored_mean_is_zero_with_a_zero_gradient():
    loss, grad = softmaxc.cross_entropy_with_grad(LOGITS, np.full(6, -100))
    assert loss == 0.0 and type(loss) is float
    assert not grad.any()
    # "sum" and "none" with everything ignored stay on the fast path
    assert ce_kernels.cross_entropy_fast(LOGITS, np.full(6, -100), -1, -100, "sum", 0.0, 1.0,
                                         None, False) is not None


# ------------------------------------------------------------ the shared batch loops

def test_row_kernels_check_their_buffers():
    """The batch loops behind the general kernels index raw pointers (no bounds check, even
    in a SOFTMAXC_DEBUG build), so the kernels refuse buffers that do not fit x."""
    x = np.zeros((64, 50))
    short = np.zeros((1, 50))
    mask = np.ones((64, 49), np.uint8)
    for kernel in (softmax_kernels.softmax_rows, softmax_kernels.log_softmax_rows):
        with pytest.raises(ValueError, match="does not fit"):
            kernel(x, short, 1.0, None, 1)
        with pytest.raises(ValueError, match="does not fit"):
            kernel(x, np.zeros_like(x), 1.0, mask, 1)
    with pytest.raises(ValueError, match="does not fit"):
        softmax_kernels.logsumexp_rows(x, np.zeros(63), 1.0, None, 1)
    labels = np.zeros(64, np.intp)
    for bad in (dict(labels=labels[:63]), dict(loss=np.zeros(63)), dict(grad=short),
                dict(weight=np.ones(49))):
        arguments = dict(labels=labels, weight=None, loss=np.zeros(64), grad=None) | bad
        with pytest.raises(ValueError, match="does not fit"):
            ce_kernels.cross_entropy_index_rows(x, arguments["labels"], arguments["weight"],
                                                0.0, 1.0, 1.0, arguments["loss"],
                                                arguments["grad"], 1)
