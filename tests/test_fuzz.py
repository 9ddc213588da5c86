"""Hypothesis fuzzing of every public function against the NumPy oracle (tests/oracles.py)
or a documented exception.

Inputs vary in dtype and byte order, values (special values, subnormals, +-0), shape (empty
dimensions included) and layout (transposed, reversed, strided, unaligned, Fortran), with
random axis, beta, where, out=, n_threads and the cross-entropy options.  Each example also
checks that its inputs were not modified.  The normal profile is quick; scripts/fuzz.py
runs the same properties for minutes (`FUZZ_PROFILE=long`).
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmaxc
from tests.oracles import (
    TOLERANCES,
    cross_entropy_oracle,
    jacobian_oracle,
    log_softmax_backward_oracle,
    log_softmax_oracle,
    log_softmax_ref,
    logsumexp_oracle,
    logsumexp_ref,
    softmax_backward_oracle,
    softmax_oracle,
    softmax_ref,
)

PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]
settings.register_profile("fuzz-normal", max_examples=60, deadline=None, phases=PHASES,
                          suppress_health_check=[HealthCheck.too_slow])
# scripts/fuzz.py: batches of FUZZ_EXAMPLES examples, each run with a fresh seed.
settings.register_profile("fuzz-long", max_examples=int(os.environ.get("FUZZ_EXAMPLES", 300)),
                          deadline=None, phases=PHASES, database=None,
                          suppress_health_check=list(HealthCheck))
fuzz_settings = settings.get_profile(
    "fuzz-long" if os.environ.get("FUZZ_PROFILE") == "long" else "fuzz-normal")

# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------

DTYPES = hnp.floating_dtypes(sizes=(32, 64), endianness="?")

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, -1e-310, 1e-40, 1e-45]


def values(dtype):
    """Moderate values (an oracle computing beta * x in float64 stays exact enough), plus
    the special ones; subnormals of the dtype included."""
    width = dtype.itemsize * 8
    moderate = st.floats(-300, 300, width=width, allow_subnormal=True)
    special = st.sampled_from(SPECIAL).map(lambda v: float(dtype.type(v)))
    return st.one_of(moderate, moderate, moderate, special)


LAYOUTS = ["c", "fortran", "reversed", "strided", "unaligned", "transposed"]


def in_layout(arr, layout):
    """An array equal to `arr` (same shape and values) in another memory layout."""
    if layout == "fortran":
        return np.asfortranarray(arr)
    if layout == "reversed":
        index = tuple(slice(None, None, -1) for _ in arr.shape)
        return np.ascontiguousarray(arr[index])[index]
    if layout == "strided":
        bigger = np.repeat(arr, 2, axis=-1) if arr.ndim else arr
        return bigger[..., ::2] if arr.ndim else bigger
    if layout == "unaligned":
        raw = np.zeros(arr.nbytes + 1, np.uint8)
        view = raw[1:].view(arr.dtype).reshape(arr.shape)
        view[...] = arr
        return view
    if layout == "transposed":
        return np.ascontiguousarray(arr.T).T
    return np.ascontiguousarray(arr)


@st.composite
def arrays(draw, min_dims=1, max_dims=3, min_side=0, dtype=None, shape=None):
    dtype = dtype if dtype is not None else draw(DTYPES)
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                                      max_side=6))
    arr = draw(hnp.arrays(dtype, shape, elements=values(dtype)))
    return in_layout(arr, draw(st.sampled_from(LAYOUTS)))


BETAS = st.one_of(st.sampled_from([1.0, 0.0, -1.0, 0.5, 2.0]), st.floats(-4, 4))
N_THREADS = st.sampled_from([None, 1, 2, 3])


def snapshot(values):
    return [(v.shape, v.dtype, v.strides, v.tobytes()) if isinstance(v, np.ndarray)
            else repr(v) for v in values]


def result_dtype(*arrays):
    return np.result_type(*arrays).newbyteorder("=")


# ---------------------------------------------------------------------------------------
# Comparison: NaN and inf positions exact, finite entries within a bound
# ---------------------------------------------------------------------------------------

def assert_within(actual, expected, dtype, extra_error=0.0, accuracy=None):
    """|actual - expected| <= rtol |expected| + atol + rtol * extra_error, elementwise, with
    expected rounded to `dtype` first (overflow included); NaN/inf positions exact.  The
    tolerances are those of `accuracy` (default: `dtype`)."""
    dtype = np.dtype(dtype)
    actual = np.asarray(actual)
    if actual.ndim:
        assert actual.dtype == dtype, (actual.dtype, dtype)
    tolerance = TOLERANCES[np.dtype(accuracy or dtype)]
    with np.errstate(over="ignore", invalid="ignore"):
        expected = np.asarray(expected).astype(dtype).astype(np.float64)
    actual = actual.astype(np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg="NaN positions")
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~finite & ~np.isnan(expected)],
                                  expected[~finite & ~np.isnan(expected)], err_msg="inf")
    bound = (tolerance["rtol"] * (np.abs(expected) + 4 * np.broadcast_to(extra_error,
                                                                         expected.shape))
             + tolerance["atol"])
    with np.errstate(invalid="ignore"):
        error = np.abs(actual - expected)
    bad = finite & ~(error <= bound)
    assert not bad.any(), (
        f"{np.count_nonzero(bad)} entries off; worst actual={actual[bad][:3]} "
        f"expected={expected[bad][:3]} bound={bound[bad][:3]}")


def classes_last(arr, axis):
    return np.moveaxis(np.asarray(arr, np.float64), axis, -1)


# ---------------------------------------------------------------------------------------
# Softmax family
# ---------------------------------------------------------------------------------------

@fuzz_settings
@given(data=st.data(), name=st.sampled_from(["softmax", "log_softmax", "logsumexp"]))
def test_softmax_family(data, name):
    x = data.draw(arrays())
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    beta = data.draw(BETAS)
    n_threads = data.draw(N_THREADS)
    kw = {"axis": axis, "beta": beta, "n_threads": n_threads}
    where = None
    if data.draw(st.booleans()):
        where_shape = data.draw(hnp.broadcastable_shapes(x.shape, min_side=0))
        assume(np.broadcast_shapes(where_shape, x.shape) == x.shape)
        where = data.draw(hnp.arrays(bool, where_shape))
        kw["where"] = where
    if name == "logsumexp":
        kw["keepdims"] = data.draw(st.booleans())
    dtype = result_dtype(x)
    shape = x.shape
    if name == "logsumexp":
        normalised = axis % x.ndim
        shape = (x.shape[:normalised] + ((1,) if kw["keepdims"] else ())
                 + x.shape[normalised + 1:])
    out_kind = data.draw(st.sampled_from(["none", "c", "fortran", "in_place"]))
    if out_kind == "in_place" and name != "logsumexp" and x.dtype.isnative:
        x = np.array(x)          # writable, our own
        kw["out"] = x
    elif out_kind in ("c", "fortran"):
        kw["out"] = np.zeros(shape, dtype, order="F" if out_kind == "fortran" else "C")
    original = np.array(x)
    before = snapshot([where])

    result = getattr(softmaxc, name)(x, **kw)

    assert snapshot([where]) == before
    if "out" not in kw or kw["out"] is not x:
        assert np.array_equal(x, original, equal_nan=True) and x.dtype == original.dtype
    if "out" in kw:
        assert result is kw["out"]
    z = classes_last(original, axis)
    oracle = {"softmax": softmax_oracle, "log_softmax": log_softmax_oracle,
              "logsumexp": logsumexp_oracle}[name]
    with np.errstate(all="ignore"):
        if where is None or x.size == 0:
            expected = oracle(z, beta)
        else:
            # Excluded entries become -inf after beta is applied (0 * -inf would be NaN);
            # a row keeping nothing is 0 / -inf / -inf, excluded entries 0 / -inf.
            keep = classes_last(np.broadcast_to(where, x.shape), axis).astype(bool)
            expected = oracle(np.where(keep, beta * z, -np.inf), 1.0)
            none_kept = ~keep.any(-1)
            if name == "logsumexp":
                expected = np.where(none_kept, -np.inf, expected)
            else:
                excluded = 0.0 if name == "softmax" else -np.inf
                expected = np.where(keep & ~none_kept[..., None], expected, excluded)
    if name == "logsumexp":
        expected = np.expand_dims(expected, axis) if kw["keepdims"] else expected
    else:
        expected = np.moveaxis(expected, -1, axis)
    extra = 0.0
    if name == "logsumexp" or name == "log_softmax":
        # The result is beta * x_max + ...: its error is relative to |beta x_max|.
        finite = np.where(np.isfinite(z), np.abs(z), 0.0)
        scale = abs(beta) * finite.max(-1, keepdims=True, initial=0.0)
        extra = np.moveaxis(np.broadcast_to(scale, z.shape), -1, axis) if name == "log_softmax" \
            else (np.expand_dims(scale[..., 0], axis) if kw["keepdims"] else scale[..., 0])
    if name == "softmax" and dtype == np.float32 and expected.size:
        # The float32 kernel exponentiates the rounded difference w_i = beta (x_i - x_max):
        # up to |w_i| / 2 ULP more, within the documented bound of |w_i| + log2 n + 4 ULP.
        # |w_i| = log(p_max / p_i); the allowance below is 1 ULP per unit of |w_i|.
        with np.errstate(divide="ignore", invalid="ignore"):
            gap = np.log(np.max(expected, axis=axis, keepdims=True)) - np.log(expected)
        gap = np.where((expected > 0) & np.isfinite(gap), gap, 0.0)
        rtol = TOLERANCES[np.dtype(np.float32)]["rtol"]
        extra = np.abs(expected) * gap * float(np.finfo(np.float32).eps) / (4 * rtol)
    assert_within(result, expected, dtype, extra)


# ---------------------------------------------------------------------------------------
# Derivatives
# ---------------------------------------------------------------------------------------

@fuzz_settings
@given(data=st.data())
def test_softmax_jacobian(data):
    x = data.draw(arrays(max_dims=2))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    beta = data.draw(BETAS)
    original = np.array(x)
    result = softmaxc.softmax_jacobian(x, axis, beta=beta, n_threads=data.draw(N_THREADS))
    assert np.array_equal(x, original, equal_nan=True)
    with np.errstate(all="ignore"):
        z = classes_last(original, axis)
        expected = jacobian_oracle(z, beta)
        p = softmax_oracle(z, beta)
    extra = abs(beta) * p[..., :, None] * (p[..., None, :] + np.eye(z.shape[-1]))
    assert_within(result, expected, result_dtype(x), extra if z.size else 0.0)


@fuzz_settings
@given(data=st.data(), name=st.sampled_from(["softmax_backward", "log_softmax_backward"]))
def test_backward(data, name):
    dtype = data.draw(DTYPES)
    grad = data.draw(arrays(dtype=dtype))
    axis = data.draw(st.integers(-grad.ndim, grad.ndim - 1))
    beta = data.draw(BETAS)
    # The second input: a genuine forward output (some rows masked) or arbitrary values.
    if data.draw(st.booleans()):
        logits = data.draw(arrays(dtype=data.draw(DTYPES), shape=grad.shape))
        with np.errstate(all="ignore"):
            forward = softmax_oracle if name == "softmax_backward" else log_softmax_oracle
            second = np.moveaxis(forward(classes_last(logits, axis)), -1, axis).astype(
                logits.dtype)
    else:
        second = data.draw(arrays(dtype=data.draw(DTYPES), shape=grad.shape))
    kw = {"axis": axis, "beta": beta, "n_threads": data.draw(N_THREADS)}
    dtype = softmaxc._arrays.float_dtypes(np.result_type(grad.dtype, second.dtype))[0]
    out_kind = data.draw(st.sampled_from(["none", "fresh", "grad", "second"]))
    if out_kind == "fresh":
        kw["out"] = np.zeros(grad.shape, dtype)
    elif out_kind in ("grad", "second"):
        target = grad if out_kind == "grad" else second
        if target.dtype == dtype:
            target = np.array(target)     # a writable, native copy we may overwrite
            if out_kind == "grad":
                grad = target
            else:
                second = target
            kw["out"] = target
    saved = np.array(grad), np.array(second)
    result = getattr(softmaxc, name)(grad, second, **kw)
    for arr, copy in zip((grad, second), saved):
        if kw.get("out") is not arr:
            assert np.array_equal(arr, copy, equal_nan=True)
    g, s = classes_last(saved[0], axis), classes_last(saved[1], axis)
    with np.errstate(all="ignore"):
        if name == "softmax_backward":
            expected = softmax_backward_oracle(g, s, beta)
            terms = np.where(s != 0, np.abs(g * s), 0.0)
            extra = abs(beta) * np.abs(s) * (np.abs(g) + terms.sum(-1, keepdims=True))
        else:
            # A float32 computation takes exp(log p) in float32 (expf), which underflows to
            # 0 below log p = -103.9 where float64 still has 1e-45: it matters only against
            # an infinite sum of g (0 * inf = NaN instead of -inf).
            expected = log_softmax_backward_oracle(g, s, beta, exp_dtype=dtype)
            total = np.where(s != -np.inf, np.abs(g), 0.0).sum(-1, keepdims=True)
            extra = abs(beta) * (np.abs(g) + np.exp(s) * total * (1 + np.abs(s)))
    extra = np.where(np.isfinite(extra), extra, 0.0)
    assert_within(result, np.moveaxis(expected, -1, axis), dtype, np.moveaxis(extra, -1, axis))


# ---------------------------------------------------------------------------------------
# Cross-entropy
# ---------------------------------------------------------------------------------------

@fuzz_settings
@given(data=st.data(),
       name=st.sampled_from(["cross_entropy", "cross_entropy_grad", "cross_entropy_with_grad"]),
       target_kind=st.sampled_from(["index", "prob"]))
def test_cross_entropy(data, name, target_kind):
    x = data.draw(arrays(max_dims=3))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    n_classes = x.shape[axis]
    batch_shape = x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:]
    kw = {
        "axis": axis,
        "beta": data.draw(BETAS),
        "reduction": data.draw(st.sampled_from(["mean", "sum", "none"])),
        "label_smoothing": data.draw(st.sampled_from([0.0, 0.1, 1.0]) | st.floats(0, 1)),
        "n_threads": data.draw(N_THREADS),
    }
    if data.draw(st.booleans()):
        # Weights are 0 or at least 1e-300: with subnormal weights next to ordinary ones,
        # weight / (total counted weight) can exceed the float64 range (no finite answer).
        # Subnormal weights of one magnitude are tested in test_cross_entropy.py.
        kw["weight"] = data.draw(hnp.arrays(np.float64, (n_classes,),
                                            elements=st.floats(1e-300, 10) | st.just(0.0)))
    if target_kind == "index":
        label_dtype = data.draw(st.sampled_from([np.int64, np.int32, np.int8, np.uint8,
                                                 np.uint64]))
        info = np.iinfo(label_dtype)
        low, high = max(info.min, -3), min(info.max, n_classes + 2)
        target = data.draw(hnp.arrays(label_dtype, batch_shape,
                                      elements=st.integers(low, high)))
        kw["ignore_index"] = data.draw(st.sampled_from([-100, -1, 0, n_classes]))
    else:
        target = data.draw(hnp.arrays(data.draw(DTYPES), x.shape,
                                      elements=st.floats(0, 1, width=32)))
    out = None
    if name != "cross_entropy" and data.draw(st.booleans()):
        dtype = result_dtype(x)
        if data.draw(st.booleans()) and x.dtype == dtype:
            x = np.array(x)
            out = x                                    # in place
        else:
            out = np.zeros(x.shape, dtype)
        kw["out"] = out
    original_x, original_target = np.array(x), np.array(target)
    weight = kw.get("weight")
    original_weight = None if weight is None else weight.copy()

    expected_error = None
    if n_classes == 0:
        expected_error = (ValueError, "at least one class")
    elif target_kind == "index":
        bad = ((target.astype(object) < 0) | (target.astype(object) >= n_classes)) & (
            target.astype(object) != kw["ignore_index"])
        if bad.any():
            expected_error = (IndexError, rf"target has {int(bad.sum())} class index\(es\)")

    function = getattr(softmaxc, name)
    if expected_error:
        with pytest.raises(expected_error[0], match=expected_error[1]):
            function(x, target, **kw)
        return
    result = function(x, target, **kw)
    if out is None or out is not x:
        assert np.array_equal(x, original_x, equal_nan=True)
    assert np.array_equal(target, original_target, equal_nan=True)
    if weight is not None:
        assert np.array_equal(weight, original_weight)

    z = classes_last(original_x, axis)
    oracle_target = (classes_last(original_target, axis) if target_kind == "prob"
                     else original_target)
    options = {k: kw[k] for k in ("weight", "reduction", "label_smoothing", "ignore_index")
               if k in kw}
    with np.errstate(all="ignore"):
        loss, grad = cross_entropy_oracle(z, oracle_target, kw["beta"], **options)
        # Error bounds: the loss sums a_c (lse - z_c), each term off by about
        # eps (|z_c| + |lse|); the gradient p S - a cancels down from about p S + a.
        expected_loss_bound, expected_grad_bound = _error_scales(z, oracle_target, kw, options)
    dtype = result_dtype(x)
    if name in ("cross_entropy", "cross_entropy_with_grad"):
        actual_loss = result[0] if name == "cross_entropy_with_grad" else result
        if kw["reduction"] == "none":
            assert_within(actual_loss, loss, dtype, expected_loss_bound)
        else:
            # a Python float, to the accuracy of the logits' dtype (it may exceed float32's
            # range: a mean over targets of tiny weight)
            assert isinstance(actual_loss, float)
            assert_within(np.float64(actual_loss), np.float64(loss), np.float64,
                          np.sum(expected_loss_bound) / max(_normaliser(options, oracle_target,
                                                                         kw, z), 1e-300),
                          accuracy=dtype)
    if name != "cross_entropy":
        actual_grad = result[1] if name == "cross_entropy_with_grad" else result
        if out is not None:
            assert actual_grad is out
        assert_within(actual_grad, np.moveaxis(grad, -1, axis), dtype,
                      np.moveaxis(expected_grad_bound, -1, axis))


def _normaliser(options, target, kw, z):
    if kw["reduction"] != "mean":
        return 1.0
    if np.asarray(target).dtype.kind == "f":
        return float(np.prod(z.shape[:-1]))
    labels = np.asarray(target).astype(np.int64)
    counted = labels != kw["ignore_index"]
    weight = options.get("weight")
    if weight is None:
        return float(counted.sum())
    return float(np.sum(np.where(counted, weight[np.where(counted, labels, 0)], 0.0)))


def _error_scales(z, target, kw, options):
    """Per-row loss and per-entry gradient error scales (absolute, before rtol)."""
    beta = kw["beta"]
    zb = np.where(np.isfinite(z), np.abs(beta * z), 0.0)
    row_scale = zb.max(-1, keepdims=True) if z.size else np.zeros(z.shape[:-1] + (1,))
    weight = options.get("weight")
    largest_weight = 1.0 if weight is None or weight.size == 0 else max(weight.max(), 1e-300)
    # S = sum_c a_c <= largest weight (the smoothed target sums to one, or less).
    target_mass = 1.0
    if np.asarray(target).dtype.kind == "f":
        target_mass = max(float(np.sum(target, -1).max(initial=0.0)), 1.0)
    scale = largest_weight * target_mass
    loss_bound = scale * (np.log(max(z.shape[-1], 1)) + 1 + 2 * row_scale[..., 0])
    normaliser = _normaliser(options, target, kw, z)
    grad_bound = abs(beta) * 2 * scale / max(normaliser, 1e-300) * np.ones(z.shape)
    return loss_bound, grad_bound
