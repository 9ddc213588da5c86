"""softmax, log_softmax and logsumexp against the NumPy float64 oracle (tests/oracles.py)
and against the contract of API.md: dtypes, layouts, out=, where=, axis, keepdims,
n_threads, beta, special values and empty inputs."""

import numpy as np
import pytest

import softmaxc
from softmaxc import _arrays
from tests.oracles import REFERENCES, assert_matches_reference

FUNCTIONS = ["softmax", "log_softmax", "logsumexp"]
ROWWISE = ["softmax", "log_softmax"]  # result of the input's shape (in-place capable)


def call(function, x, **kwargs):
    return getattr(softmaxc, function)(x, **kwargs)


def result_dtype(input_dtype):
    input_dtype = np.dtype(input_dtype)
    if input_dtype in (np.float16, np.float32):
        return input_dtype
    return np.dtype(np.float64)


def make_input(dtype, shape, rng):
    """Random logits of `dtype` (floats ~ N(0, 9), small integers, or random bools)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (3.0 * rng.standard_normal(shape)).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    low = 0 if dtype.kind == "u" else -5
    return rng.integers(low, 6, size=shape).astype(dtype)


def result_shape(function, shape, axis, keepdims=False):
    if function != "logsumexp":
        return shape
    axis = axis % len(shape)
    if keepdims:
        return shape[:axis] + (1,) + shape[axis + 1 :]
    return shape[:axis] + shape[axis + 1 :]


# --------------------------------------------------------------------- dtypes x layouts

DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8, np.bool_]


def _memmap(a, tmp_path):
    path = tmp_path / "logits.dat"
    writer = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
    writer[...] = a
    writer.flush()
    del writer
    return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)  # read-only map


def _unaligned(a, tmp_path):
    raw = np.empty(a.nbytes + 1, dtype=np.uint8)[1:]
    view = raw.view(a.dtype).reshape(a.shape)
    view[...] = a
    assert a.dtype.itemsize == 1 or not view.flags.aligned
    return view


def _read_only(a, tmp_path):
    view = a.copy()
    view.flags.writeable = False
    return view


def _negative_strides(a, tmp_path):
    view = np.ascontiguousarray(a[::-1, ::-1, ::-1])[::-1, ::-1, ::-1]
    assert all(s < 0 for s in view.strides)
    return view


def _every_other(a, tmp_path):
    return np.repeat(a, 2, axis=-1)[..., ::2]


# Each builds, from a C-ordered 3-D array, an array with the same values in another layout.
LAYOUTS = {
    "C": lambda a, tmp_path: np.ascontiguousarray(a),
    "fortran": lambda a, tmp_path: np.asfortranarray(a),
    "transposed": lambda a, tmp_path: np.ascontiguousarray(a.transpose(2, 0, 1)).transpose(1, 2, 0),
    "negative_strides": _negative_strides,
    "every_other": _every_other,
    "read_only": _read_only,
    "memmap": _memmap,
    "unaligned": _unaligned,
    "big_endian": lambda a, tmp_path: a.astype(a.dtype.newbyteorder(">")),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_dtype_layout_matrix(function, dtype, layout, rng, tmp_path):
    values = make_input(dtype, (3, 7, 40), rng)
    x = LAYOUTS[layout](values, tmp_path)
    assert np.array_equal(x, values)
    before = np.array(x, copy=True)

    result = call(function, x)

    assert result.dtype == result_dtype(dtype)
    assert result.shape == result_shape(function, x.shape, -1)
    assert_matches_reference(result, REFERENCES[function](values))
    assert np.array_equal(x, before), "the input was modified"


def test_big_endian_float64_is_accepted(rng):
    x = rng.standard_normal((4, 9)).astype(">f8")
    assert_matches_reference(softmaxc.softmax(x), REFERENCES["softmax"](x))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_zero_strides_broadcast_input(function):
    # A read-only view with zero strides (every row the same memory), big enough for threads.
    row = np.linspace(-3.0, 2.0, 5)
    x = np.broadcast_to(row, (40000, 5))
    result = call(function, x, n_threads=2)
    expected = REFERENCES[function](row)
    assert_matches_reference(result, np.broadcast_to(expected, result.shape))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_python_lists(function):
    x = [[1, 2, 3], [0.5, -1.0, 4.0]]
    result = call(function, x)
    assert result.dtype == np.float64
    assert_matches_reference(result, REFERENCES[function](np.array(x, dtype=float)))


REJECTED = {
    "complex": np.array([1 + 1j, 2.0]),
    "object": np.array([1.0, 2.0], dtype=object),
    "str": np.array(["1.0", "2.0"]),
    "bytes": np.array([b"1", b"2"]),
    "datetime": np.array(["2020-01-01", "2021-01-01"], dtype="datetime64[D]"),
    "timedelta": np.array([1, 2], dtype="timedelta64[s]"),
}


@pytest.mark.parametrize("kind", list(REJECTED))
@pytest.mark.parametrize("function", FUNCTIONS)
def test_non_real_dtypes_raise_type_error(function, kind):
    with pytest.raises(TypeError, match="dtype"):
        call(function, REJECTED[kind])


# --------------------------------------------------------------------- shapes and axes

SHAPES_AXES = [
    pytest.param((1, 1), -1, id="1x1"),
    pytest.param((1, 1000), -1, id="1x1000"),
    pytest.param((256, 1000), -1, id="256x1000"),
    pytest.param((1000,), 0, id="1000"),
    pytest.param((4, 5, 6), 0, id="4x5x6-axis0"),
    pytest.param((4, 5, 6), 1, id="4x5x6-axis1"),
    pytest.param((4, 5, 6), 2, id="4x5x6-axis2"),
    pytest.param((4, 5, 6), -2, id="4x5x6-axis-2"),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("shape, axis", SHAPES_AXES)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_shapes_and_axes(function, shape, axis, dtype, rng):
    x = make_input(dtype, shape, rng)
    result = call(function, x, axis=axis)
    assert result.shape == result_shape(function, shape, axis)
    assert_matches_reference(result, REFERENCES[function](x, axis=axis))


@pytest.mark.parametrize("shape, axis", SHAPES_AXES)
def test_logsumexp_keepdims(shape, axis, rng):
    x = make_input(np.float64, shape, rng)
    result = softmaxc.logsumexp(x, axis=axis, keepdims=True)
    assert result.shape == result_shape("logsumexp", shape, axis, keepdims=True)
    assert_matches_reference(result, REFERENCES["logsumexp"](x, axis=axis, keepdims=True))


def test_logsumexp_of_1d_is_0d():
    result = softmaxc.logsumexp([0.0, 0.0])
    assert isinstance(result, np.ndarray) and result.shape == ()
    assert result == np.log(2.0)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_zero_dimensional_input_raises_axis_error(function):
    with pytest.raises(np.exceptions.AxisError):
        call(function, np.float64(1.0))
    with pytest.raises(np.exceptions.AxisError):
        call(function, 1.0, axis=0)


@pytest.mark.parametrize("axis", [2, -3, 10])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_bad_axis_raises_axis_error(function, axis):
    with pytest.raises(np.exceptions.AxisError):
        call(function, np.zeros((2, 3)), axis=axis)
    assert issubclass(np.exceptions.AxisError, ValueError)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_non_integer_axis_raises_type_error(function):
    with pytest.raises(TypeError, match="axis"):
        call(function, np.zeros((2, 3)), axis=1.0)


# --------------------------------------------------------------------- out=

OUT_LAYOUTS = ["C", "fortran", "strided"]


def make_out(shape, dtype, layout):
    """An uninitialised out array and the array owning its memory."""
    if layout == "C":
        out = np.full(shape, np.nan, dtype)
        return out, out
    if layout == "fortran":
        out = np.full(shape, np.nan, dtype, order="F")
        return out, out
    owner = np.full(shape[:-1] + (2 * shape[-1],), np.nan, dtype)
    return owner[..., ::2], owner


@pytest.mark.parametrize("layout", OUT_LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16],
                         ids=["float64", "float32", "float16"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_out_is_filled_and_returned(function, dtype, layout, rng):
    x = make_input(dtype, (6, 5, 30), rng)
    out, owner = make_out(result_shape(function, x.shape, -1), dtype, layout)
    result = call(function, x, out=out)
    assert result is out
    assert np.shares_memory(result, owner)
    assert_matches_reference(owner[..., ::2] if layout == "strided" else owner,
                             REFERENCES[function](x))


@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_out_with_axis(keepdims, rng):
    x = rng.standard_normal((3, 20, 4))
    out = np.empty((3, 1, 4) if keepdims else (3, 4))
    result = softmaxc.logsumexp(x, axis=1, keepdims=keepdims, out=out)
    assert result is out
    assert_matches_reference(out, REFERENCES["logsumexp"](x, axis=1, keepdims=keepdims))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16],
                         ids=["float64", "float32", "float16"])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("function", ROWWISE)
def test_in_place(function, axis, order, dtype, rng):
    x = np.array(make_input(dtype, (50, 40), rng), order=order)
    expected = REFERENCES[function](x, axis=axis)
    result = call(function, x, axis=axis, out=x)
    assert result is x
    assert_matches_reference(x, expected)


@pytest.mark.parametrize("function", ROWWISE)
def test_out_overlapping_input_differently(function, rng):
    # out is x with its rows reversed: partial overlap that is not an exact alias.
    x = rng.standard_normal((40, 30))
    expected = REFERENCES[function](x)
    result = call(function, x, out=x[::-1])
    assert np.shares_memory(result, x)
    assert_matches_reference(x[::-1], expected)


def test_logsumexp_out_0d_and_aliasing_input():
    out = np.empty(())
    assert softmaxc.logsumexp([1.0, 2.0], out=out) is out
    assert out == np.logaddexp(1.0, 2.0)
    # out is a column of the input itself: every row is read before its result is stored.
    x = np.arange(12.0).reshape(4, 3)
    expected = REFERENCES["logsumexp"](x)
    softmaxc.logsumexp(x, out=x[:, 0])
    assert_matches_reference(x[:, 0], expected)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_bad_out_raises_value_error(function):
    x = np.zeros((3, 4))
    shape = result_shape(function, x.shape, -1)
    wrong_shape = np.empty(shape + (1,))
    wrong_dtype = np.empty(shape, np.float32)
    read_only = np.empty(shape)
    read_only.flags.writeable = False
    for out, message in [(wrong_shape, "shape"), (wrong_dtype, "dtype"), (read_only, "read-only")]:
        with pytest.raises(ValueError, match=message):
            call(function, x, out=out)


def test_logsumexp_out_must_match_keepdims():
    with pytest.raises(ValueError, match="shape"):
        softmaxc.logsumexp(np.zeros((3, 4)), keepdims=True, out=np.empty(3))
    with pytest.raises(ValueError, match="shape"):
        softmaxc.logsumexp(np.zeros((3, 4)), out=np.empty((3, 1)))


# --------------------------------------------------------------------- where=

EXCLUDED_VALUE = {"softmax": 0.0, "log_softmax": -np.inf}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_where_broadcast_over_rows(function, rng):
    x = rng.standard_normal((5, 12))
    where = rng.random(12) < 0.6
    where[0] = True
    result = call(function, x, where=where)
    assert_matches_reference(result, REFERENCES[function](x, where=np.broadcast_to(where, x.shape)))
    if function in EXCLUDED_VALUE:
        assert np.all(result[:, ~where] == EXCLUDED_VALUE[function])
    else:
        # Excluded entries do not contribute: same as dropping them.
        assert_matches_reference(result, REFERENCES["logsumexp"](x[:, where]))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_where_along_axis_0_of_3d(function, rng):
    x = rng.standard_normal((6, 3, 4))
    where = rng.random((6, 1, 4)) < 0.7
    where[0] = True
    result = call(function, x, axis=0, where=where)
    assert_matches_reference(
        result, REFERENCES[function](x, axis=0, where=np.broadcast_to(where, x.shape))
    )


FULLY_MASKED = {"softmax": 0.0, "log_softmax": -np.inf, "logsumexp": -np.inf}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_where_fully_masked_row(function, rng):
    x = rng.standard_normal((4, 7))
    keep_row = np.array([[True], [False], [True], [False]])  # broadcasts along the axis
    result = call(function, x, where=keep_row)
    assert np.all(result[[1, 3]] == FULLY_MASKED[function])
    assert_matches_reference(result[[0, 2]], REFERENCES[function](x[[0, 2]]))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_where_all_true_equals_no_where(function, rng):
    x = rng.standard_normal((4, 7))
    assert np.array_equal(call(function, x, where=True), call(function, x))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_bad_where(function):
    x = np.zeros((3, 4))
    with pytest.raises(TypeError, match="boolean"):
        call(function, x, where=np.ones((3, 4)))
    with pytest.raises(ValueError, match="broadcast"):
        call(function, x, where=np.ones(3, dtype=bool))


# --------------------------------------------------------------------- threads

PARALLEL_SHAPE = (64, 1000)  # 64000 elements: above MIN_PARALLEL_ELEMENTS, so 2 threads run


@pytest.mark.parametrize("masked", [False, True], ids=["no_where", "where"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_thread_count_does_not_change_results(function, dtype, masked, rng):
    assert _arrays.threads_for(2, *PARALLEL_SHAPE) == 2
    x = make_input(dtype, PARALLEL_SHAPE, rng)
    where = rng.random(PARALLEL_SHAPE) < 0.8 if masked else None
    one = call(function, x, where=where, n_threads=1)
    two = call(function, x, where=where, n_threads=2)
    default = call(function, x, where=where)
    assert one.tobytes() == two.tobytes() == default.tobytes()
    assert_matches_reference(one, REFERENCES[function](x, where=where))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_invalid_n_threads(function):
    x = np.zeros((2, 3))
    for bad in (0, -1):
        with pytest.raises(ValueError, match="n_threads"):
            call(function, x, n_threads=bad)
    for bad in (1.5, "2", True):
        with pytest.raises(TypeError, match="n_threads"):
            call(function, x, n_threads=bad)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_more_threads_than_rows(function, rng):
    x = rng.standard_normal((1, 20000))
    assert np.array_equal(call(function, x, n_threads=8), call(function, x, n_threads=1))


# --------------------------------------------------------------------- beta

@pytest.mark.parametrize("beta", [2.5, -1.0, -0.3, np.float32(0.5), 1e-3, 7])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_beta_matches_reference(function, beta, rng):
    x = rng.standard_normal((5, 30))
    expected = REFERENCES[function](x, beta=float(beta))
    assert_matches_reference(call(function, x, beta=beta), expected)


def test_beta_zero_is_uniform(rng):
    n = 7
    x = 100.0 * rng.standard_normal((3, n))
    np.testing.assert_allclose(softmaxc.softmax(x, beta=0.0), 1.0 / n, rtol=1e-15)
    np.testing.assert_allclose(softmaxc.log_softmax(x, beta=0.0), -np.log(n), rtol=1e-15)
    np.testing.assert_allclose(softmaxc.logsumexp(x, beta=0.0), np.log(n), rtol=1e-15)


@pytest.mark.parametrize("beta", [0.0, 1e-308, -1e-308, 2.5e-308])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_beta_with_logits_near_float_max(function, beta):
    # x_i - x_max overflows (1e308 - -1e308 = -inf) although beta * (x_i - x_max) does not:
    # beta = 0 must still give the uniform distribution (not 0 * inf = NaN), and a tiny beta
    # the softmax of the moderate logits beta * x.
    x = np.array([[1e308, -1e308, 0.0], [-1.7e308, 1.7e308, 1e307]])
    expected = REFERENCES[function](beta * x)
    np.testing.assert_allclose(call(function, x, beta=beta), expected, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("beta", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_non_finite_beta_raises_value_error(function, beta):
    with pytest.raises(ValueError, match="beta"):
        call(function, np.zeros(3), beta=beta)


@pytest.mark.parametrize("beta", [np.array([1.0, 2.0]), "1.0", 1j])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_non_scalar_beta_raises_type_error(function, beta):
    with pytest.raises(TypeError, match="beta"):
        call(function, np.zeros(2), beta=beta)


# --------------------------------------------------------------------- special values

LOG2 = np.log(2.0)
NAN3 = [np.nan] * 3

# (id, row, softmax, log_softmax, logsumexp): the documented results of API.md.
SPECIAL_ROWS = [
    ("nan", [1.0, np.nan, 2.0], NAN3, NAN3, np.nan),
    ("pos_inf", [1.0, np.inf, 2.0], NAN3, NAN3, np.inf),
    ("pos_inf_and_nan", [np.nan, np.inf, 2.0], NAN3, NAN3, np.nan),
    ("all_neg_inf", [-np.inf] * 3, NAN3, NAN3, -np.inf),
    ("some_neg_inf", [0.0, -np.inf, 0.0], [0.5, 0.0, 0.5], [-LOG2, -np.inf, -LOG2], LOG2),
    ("huge_1e308", [1e308, 1e308, -1e308], [0.5, 0.5, 0.0], [-LOG2, -LOG2, -np.inf], 1e308),
    ("max_float", [np.finfo(float).max, 0.0, -np.finfo(float).max], [1.0, 0.0, 0.0],
     [0.0, -np.finfo(float).max, -np.inf], np.finfo(float).max),
    ("huge_negative", [-1e308, -1e308, -1e308], [1 / 3] * 3, [-np.log(3)] * 3, -1e308),
]
OFFSETS = [1e4, -1e4, 1e8, -1e8]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", SPECIAL_ROWS, ids=[c[0] for c in SPECIAL_ROWS])
def test_special_values(case, dtype):
    _, row, expected_softmax, expected_log_softmax, expected_logsumexp = case
    if dtype == np.float32 and any(np.isfinite(v) and abs(v) > 1e38 for v in row):
        pytest.skip("not representable in float32")
    ordinary = [0.5, -1.0, 3.0]
    x = np.array([ordinary, row, ordinary], dtype=dtype)
    expected = {
        "softmax": expected_softmax,
        "log_softmax": expected_log_softmax,
        "logsumexp": expected_logsumexp,
    }
    for function in FUNCTIONS:
        with np.errstate(all="raise"):  # no floating-point warning escapes either
            result = call(function, x)
        np.testing.assert_allclose(result[1], np.asarray(expected[function], dtype=dtype),
                                   rtol=1e-15 if dtype == np.float64 else 1e-7,
                                   err_msg=f"{function}, row {row}")
        # Only the special row is affected.
        assert_matches_reference(result[[0, 2]], REFERENCES[function](x[[0, 2]]))


def test_float32_near_its_max():
    big = np.finfo(np.float32).max
    x = np.array([big, big, -big], dtype=np.float32)
    np.testing.assert_array_equal(softmaxc.softmax(x), np.float32([0.5, 0.5, 0.0]))
    log_p = softmaxc.log_softmax(x)
    np.testing.assert_allclose(log_p[:2], -np.log(2.0), rtol=1e-7)
    assert log_p[2] == -np.inf  # exactly -2 * FLT_MAX - log 2, which rounds to -inf
    assert softmaxc.logsumexp(x) == big  # FLT_MAX + log 2 rounds to FLT_MAX


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_large_offsets_keep_accuracy(function, offset, rng):
    base = np.round(rng.standard_normal((4, 50)), 3)  # multiples of 1/1000: offset + base
    x = offset + base                                # is then exact to ~1e-8 relative
    expected = REFERENCES[function](x - offset)
    if function == "logsumexp":
        expected = expected + offset
    np.testing.assert_allclose(call(function, x), expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------- empty inputs

EMPTY_CASES = [
    pytest.param((0, 5), -1, id="empty_batch"),
    pytest.param((3, 0), 0, id="empty_batch_axis0"),
    pytest.param((0, 0), -1, id="0x0"),
    pytest.param((3, 0), -1, id="empty_axis"),
    pytest.param((0,), 0, id="empty_1d"),
    pytest.param((2, 0, 3), 1, id="empty_middle_axis"),
]


@pytest.mark.parametrize("shape, axis", EMPTY_CASES)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_empty_inputs(function, shape, axis):
    x = np.zeros(shape, dtype=np.float32)
    result = call(function, x, axis=axis)
    assert result.shape == result_shape(function, shape, axis)
    assert result.dtype == np.float32
    if function == "logsumexp":
        assert np.all(result == -np.inf)  # the sum over an empty axis is 0


def test_logsumexp_empty_axis_keepdims_and_out():
    out = np.zeros((3, 1))
    result = softmaxc.logsumexp(np.zeros((3, 0)), keepdims=True, out=out)
    assert result is out and np.all(out == -np.inf)


# --------------------------------------------------------------------- other references

@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_matches_scipy(function, axis, rng):
    special = pytest.importorskip("scipy.special")
    x = 4.0 * rng.standard_normal((6, 50, 7))
    expected = getattr(special, function)(x, axis=axis)
    # SciPy's log_softmax is log(sum) based: near 0 (a dominant entry) it is accurate only
    # to ~eps absolutely (e.g. -6.498799262297952e-05 where the exact value, and ours, is
    # -6.49879926230188e-05), hence the absolute tolerance there.
    atol = 1e-15 if function == "log_softmax" else 1e-300
    np.testing.assert_allclose(call(function, x, axis=axis), expected, rtol=1e-13, atol=atol)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_matches_torch(function, rng):
    torch = pytest.importorskip("torch")
    x = (4.0 * rng.standard_normal((8, 300))).astype(np.float32)
    t = torch.from_numpy(x)
    expected = {
        "softmax": torch.softmax(t, dim=-1),
        "log_softmax": torch.log_softmax(t, dim=-1),
        "logsumexp": torch.logsumexp(t, dim=-1),
    }[function].numpy()
    np.testing.assert_allclose(call(function, x), expected, rtol=1e-5, atol=1e-30)


COLUMN_LAYOUTS = [((3, 5, 7), 1), ((4, 1000, 9), 1), ((2, 3, 17, 5), 0), ((2, 3, 17, 5), 2),
                  ((3, 20000, 2), 1), ((1000, 3), 0), ((6, 4), 0)]


@pytest.mark.parametrize("shape, axis", COLUMN_LAYOUTS, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("function", ["softmax", "log_softmax", "logsumexp"])
def test_non_last_axis_of_a_c_contiguous_array_equals_the_contiguous_rows(shape, axis, dtype,
                                                                           function):
    # A C-contiguous array reduced along a non-last axis goes through the column kernels
    # (tiles gathered per thread, no transposed copy): the same row function on the same
    # values, so bitwise the result of the transposed contiguous array, for every thread
    # count, and in place.
    rng = np.random.default_rng(31)
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    call = getattr(softmaxc, function)
    transposed = np.ascontiguousarray(np.moveaxis(x, axis, -1))
    expected = call(transposed, beta=0.7)
    if function != "logsumexp":
        expected = np.moveaxis(expected, -1, axis)
    for n_threads in (1, 2, 3):
        assert call(x, axis=axis, beta=0.7, n_threads=n_threads).tobytes() == expected.tobytes()
    if function != "logsumexp":
        in_place = x.copy()
        assert call(in_place, axis=axis, beta=0.7, out=in_place) is in_place
        np.testing.assert_array_equal(in_place, expected)
    np.testing.assert_array_equal(x, np.moveaxis(transposed, -1, axis))   # input untouched
