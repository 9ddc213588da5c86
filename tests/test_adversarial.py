"""Adversarial inputs, table-driven: every public function x float32/float64 x input class.

Each cell either expects an exact exception type with a message pattern, or compares the
result with a NumPy float64 oracle (NaN and inf positions exact).  Every cell also checks
that no input was modified (except an `out=` that deliberately aliases it).

A function is described by an `Api` (how to call it, what its second input is, its
oracle); an input class by a `Case` (which functions it applies to, how it builds the
call, what it expects).  The table is the cross product, filtered by applicability.
"""

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

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

SHAPE = (4, 5)
N_CLASSES = SHAPE[1]


# ---------------------------------------------------------------------------------------
# The public functions
# ---------------------------------------------------------------------------------------

@dataclass
class Api:
    name: str
    function: Callable
    family: str                      # "softmax", "jacobian", "backward", "ce"
    second: str = None               # name of the second input: "probs", "log_probs", "target"
    target_kind: str = None          # "index" or "prob" for cross-entropy
    has_out: bool = False
    input_name: str = "x"

    def second_input(self, shape, dtype):
        """A clean second input for an input of `shape` (classes last), or None."""
        rng = np.random.default_rng(99)
        logits = rng.standard_normal(shape)
        if self.second == "probs":
            return softmax_oracle(logits).astype(dtype) if logits.ndim else np.ones((), dtype)
        if self.second == "log_probs":
            return (log_softmax_oracle(logits).astype(dtype) if logits.ndim
                    else np.zeros((), dtype))
        if self.target_kind == "index":
            return np.arange(math.prod(shape[:-1]), dtype=np.int64).reshape(shape[:-1]) % max(
                shape[-1] if shape else 1, 1)
        if self.target_kind == "prob":
            return softmax_oracle(logits).astype(dtype) if logits.ndim else np.ones((), dtype)
        return None

    def call(self, x, second, kw):
        return self.function(x, **kw) if self.second is None else self.function(x, second, **kw)

    def expected(self, x, second, kw):
        """The oracle's result, on float64 copies of the inputs, classes moved last."""
        axis = kw.get("axis", -1)
        beta = kw.get("beta", 1.0)
        x64 = np.moveaxis(np.asarray(x, np.float64), axis, -1)
        if self.family == "softmax":
            oracle = {"softmax": softmax_oracle, "log_softmax": log_softmax_oracle,
                      "logsumexp": logsumexp_oracle}[self.name]
            where = kw.get("where")
            if where is None:
                result = oracle(x64, beta)
            else:  # finite logits only: the plain references know where=
                where = np.moveaxis(np.broadcast_to(where, np.shape(x)), axis, -1)
                reference = {"softmax": softmax_ref, "log_softmax": log_softmax_ref,
                             "logsumexp": logsumexp_ref}[self.name]
                result = reference(x64, beta=beta, where=where)
            if self.name == "logsumexp":
                return np.expand_dims(result, axis) if kw.get("keepdims") else result
            return np.moveaxis(result, -1, axis)
        if self.family == "jacobian":
            return jacobian_oracle(x64, beta)
        second64 = np.moveaxis(np.asarray(second, np.float64), axis, -1)
        if self.family == "backward":
            oracle = (softmax_backward_oracle if self.second == "probs"
                      else log_softmax_backward_oracle)
            return np.moveaxis(oracle(x64, second64, beta), -1, axis)
        target = second64 if self.target_kind == "prob" else np.asarray(second)
        options = {k: kw[k] for k in ("weight", "ignore_index", "reduction", "label_smoothing")
                   if k in kw}
        loss, grad = cross_entropy_oracle(x64, target, beta, **options)
        grad = np.moveaxis(grad, -1, axis)
        return {"cross_entropy": loss, "cross_entropy_grad": grad,
                "cross_entropy_with_grad": (loss, grad)}[self.name]


APIS = [
    Api("softmax", softmaxc.softmax, "softmax", has_out=True),
    Api("log_softmax", softmaxc.log_softmax, "softmax", has_out=True),
    Api("logsumexp", softmaxc.logsumexp, "softmax", has_out=True),
    Api("softmax_jacobian", softmaxc.softmax_jacobian, "jacobian"),
    Api("softmax_backward", softmaxc.softmax_backward, "backward", "probs", has_out=True,
        input_name="grad"),
    Api("log_softmax_backward", softmaxc.log_softmax_backward, "backward", "log_probs",
        has_out=True, input_name="grad"),
]
for _kind in ("index", "prob"):
    APIS += [
        Api("cross_entropy", softmaxc.cross_entropy, "ce", "target", _kind,
            input_name="logits"),
        Api("cross_entropy_grad", softmaxc.cross_entropy_grad, "ce", "target", _kind,
            has_out=True, input_name="logits"),
        Api("cross_entropy_with_grad", softmaxc.cross_entropy_with_grad, "ce", "target", _kind,
            has_out=True, input_name="logits"),
    ]


def api_id(api):
    return api.name + (f"[{api.target_kind}]" if api.target_kind else "")


def result_shape(api, shape, kw):
    """The shape of the array result (the gradient for cross-entropy)."""
    if api.name == "logsumexp":
        axis = kw.get("axis", -1) % len(shape)
        return shape[:axis] + shape[axis + 1:]
    if api.family == "jacobian":
        return shape[:-1] + (shape[-1], shape[-1])
    return shape


# ---------------------------------------------------------------------------------------
# Input classes
# ---------------------------------------------------------------------------------------

@dataclass
class Cell:
    """One call: the principal input, the second input, keywords, what to expect."""
    x: object
    second: object = None
    kw: dict = field(default_factory=dict)
    raises: tuple = None            # (exception type, message regex)
    aliased: tuple = ()             # inputs that `out=` overwrites on purpose
    expected_from: object = None    # (x, second) to give the oracle, when they get overwritten


@dataclass
class Case:
    name: str
    build: Callable                 # build(api, dtype, tmp_path) -> Cell
    applies: Callable = lambda api: True


def logits(dtype, shape=SHAPE, seed=7):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def with_value(position, value):
    def build(api, dtype, tmp_path):
        x = logits(dtype)
        x[position] = value
        return Cell(x)
    return build


def huge(api, dtype, tmp_path):
    big = 1e308 if dtype == np.float64 else 3e38
    x = np.array([[1.0, 1.0, 1.0, 1.0, 1.0],
                  [1.0, -1.0, 0.0, 1.0, 0.5],
                  [-1.0, -1.0, -1.0, -1.0, -0.999],
                  [0.3, -0.7, 0.9, -0.2, 0.1]]) * big
    return Cell(x.astype(dtype))


def layout(make):
    """A case whose input is `make(clean logits)`, of the same values in another layout."""
    def build(api, dtype, tmp_path):
        return Cell(make(logits(dtype), tmp_path))
    return build


def read_only(x, tmp_path):
    x.flags.writeable = False
    return x


def memory_mapped(x, tmp_path):
    path = tmp_path / "x.bin"
    written = np.memmap(path, dtype=x.dtype, mode="w+", shape=x.shape)
    written[...] = x
    written.flush()
    del written
    return np.memmap(path, dtype=x.dtype, mode="r", shape=x.shape)


def unaligned(x, tmp_path):
    raw = np.zeros(x.nbytes + 1, np.uint8)
    view = raw[1:].view(x.dtype).reshape(x.shape)
    view[...] = x
    assert not view.flags.aligned
    return view


def big_endian(x, tmp_path):
    return x.astype(x.dtype.newbyteorder(">"))


def negative_strides(x, tmp_path):
    return np.ascontiguousarray(x[::-1, ::-1])[::-1, ::-1]


def zero_strides(x, tmp_path):
    return np.broadcast_to(x[1], x.shape)


def fortran(x, tmp_path):
    return np.asfortranarray(x)


def raising(exc, pattern, make_x=None, **kw):
    def build(api, dtype, tmp_path):
        x = make_x(api, dtype) if make_x else logits(dtype)
        return Cell(x, kw=dict(kw), raises=(exc, pattern))
    return build


def named(exc, template, make_x):
    """A raising case whose message names the principal input (x, grad or logits)."""
    def build(api, dtype, tmp_path):
        return Cell(make_x(dtype), raises=(exc, template.format(name=api.input_name)))
    return build


def with_target(target, exc=None, pattern=None, **kw):
    def build(api, dtype, tmp_path):
        return Cell(logits(dtype), second=target() if callable(target) else target,
                    kw=dict(kw), raises=(exc, pattern) if exc else None)
    return build


def out_array(make_out, exc=None, pattern=None):
    def build(api, dtype, tmp_path):
        x = logits(dtype)
        out = make_out(result_shape(api, SHAPE, {}), dtype, x)
        return Cell(x, kw={"out": out}, raises=(exc, pattern) if exc else None)
    return build


def zero_stride_out(shape, dtype, x):
    """A writable view whose elements are all one memory location."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape=shape,
                                           strides=(0,) * len(shape))


def in_place(api, dtype, tmp_path):
    x = logits(dtype)
    return Cell(x, kw={"out": x}, aliased=(0,), expected_from=(x.copy(), None))


def partial_overlap(api, dtype, tmp_path):
    """`out` is the input's memory shifted by one row (or a column, for logsumexp)."""
    base = np.zeros((SHAPE[0] + 1, SHAPE[1]), dtype)
    base[:-1] = logits(dtype)
    x = base[:-1]
    out = x[:, 0] if api.name == "logsumexp" else base[1:]
    return Cell(x, kw={"out": out}, aliased=(0,), expected_from=(x.copy(), None))


def out_is_second(api, dtype, tmp_path):
    """In place on the second input (probs / log_probs / probability target)."""
    x = logits(dtype)
    second = api.second_input(SHAPE, dtype)
    return Cell(x, second=second, kw={"out": second}, aliased=(1,),
                expected_from=(x.copy(), second.copy()))


def out_overlaps_second(api, dtype, tmp_path):
    """`out` partially overlaps the second input (shifted by one row)."""
    x = logits(dtype)
    second = api.second_input(SHAPE, dtype)
    base = np.zeros((SHAPE[0] + 1, SHAPE[1]), dtype)
    base[:-1] = second
    second = base[:-1]
    return Cell(x, second=second, kw={"out": base[1:]}, aliased=(1,),
                expected_from=(x.copy(), second.copy()))


def out_overlaps_where(api, dtype, tmp_path):
    """The where= mask lives in the bytes of `out` (a regression: the kernel read the mask
    while overwriting it)."""
    x = logits(dtype, (2, 8))
    out = np.zeros(result_shape(api, (2, 8), {}), dtype)
    mask = out.view(np.bool_).reshape(-1)[:16].reshape(2, 8)
    mask[...] = True
    mask[1, 3] = False
    return Cell(x, kw={"out": out, "where": mask}, aliased=(2,))


def empty(shape):
    def build(api, dtype, tmp_path):
        x = np.zeros(shape, dtype)
        return Cell(x, second=api.second_input(shape, dtype))
    return build


def ce_only(kind=None):
    return lambda api: api.family == "ce" and (kind is None or api.target_kind == kind)


def has_out(api):
    return api.has_out


INDEX_OUT_OF_RANGE = r"target has 1 class index\(es\) outside \[0, 5\) that are not " \
                     r"ignore_index=-100; the first is target\[2\] = {}$"


def bad_label(value, dtype=np.int64):
    def target():
        labels = np.array([0, 1, 0, 3], dtype=object)
        labels[2] = value
        return labels.astype(dtype)
    return with_target(target, IndexError, INDEX_OUT_OF_RANGE.format(re.escape(str(value))))


def valid_labels(dtype):
    return with_target(lambda: np.array([0, 4, 2, 1], dtype))


CASES = [
    # --- special values ----------------------------------------------------------------
    Case("finite", layout(lambda x, tmp: x)),
    Case("nan", with_value((1, 2), np.nan)),
    Case("posinf", with_value((1, 2), np.inf)),
    Case("neginf_entry", with_value((1, 3), -np.inf)),
    Case("all_neginf_row", with_value(1, -np.inf)),
    Case("huge_1e308_or_3e38", huge),
    Case("offset_1e4", lambda api, dtype, tmp: Cell((1e4 + logits(dtype)).astype(dtype))),
    # --- shapes ------------------------------------------------------------------------
    Case("zero_rows", empty((0, 5))),
    Case("zero_classes", empty((4, 0)), lambda api: api.family != "ce"),
    Case("zero_classes", raising(ValueError, r"cross-entropy needs at least one class",
                                 lambda api, dtype: np.zeros((4, 0), dtype)), ce_only()),
    Case("0d", raising(np.exceptions.AxisError, r"axis -1 is out of bounds for array of "
                       r"dimension 0", lambda api, dtype: np.array(1.5, dtype))),
    Case("axis_2_of_2d", raising(np.exceptions.AxisError,
                                 r"axis 2 is out of bounds for array of dimension 2", axis=2)),
    Case("axis_float", raising(TypeError, r"axis must be an integer, got float", axis=1.0)),
    # --- dtypes and array-likes ----------------------------------------------------------
    Case("object", named(TypeError, r"^{name} has dtype object",
                         lambda dtype: logits(dtype).astype(object))),
    Case("complex", named(TypeError, r"^{name} has dtype complex128 \(complex\)",
                          lambda dtype: logits(dtype).astype(complex))),
    Case("string", named(TypeError, r"^{name} has dtype <U\d+ \(string\)",
                         lambda dtype: logits(dtype).astype(str))),
    Case("ragged_list", named(ValueError, r"^{name} is not a rectangular array",
                              lambda dtype: [[1.0, 2.0], [3.0]])),
    # --- layouts -------------------------------------------------------------------------
    Case("read_only", layout(read_only)),
    Case("memmap", layout(memory_mapped)),
    Case("unaligned", layout(unaligned)),
    Case("big_endian", layout(big_endian)),
    Case("fortran_order", layout(fortran)),
    Case("negative_strides", layout(negative_strides)),
    Case("zero_strides_broadcast", layout(zero_strides)),
    Case("axis0_transposed", lambda api, dtype, tmp: Cell(
        logits(dtype).T, second=None if api.second is None else np.moveaxis(
            api.second_input(SHAPE, dtype), -1, 0) if api.target_kind != "index"
        else api.second_input(SHAPE, dtype), kw={"axis": 0})),
    # --- scalar settings -----------------------------------------------------------------
    Case("beta_nan", raising(ValueError, r"^beta must be finite, got nan$", beta=np.nan)),
    Case("beta_inf", raising(ValueError, r"^beta must be finite, got -inf$", beta=-np.inf)),
    Case("beta_int_too_big", raising(ValueError, r"^beta must be finite, got inf$",
                                     beta=10**400)),
    Case("beta_none", raising(TypeError, r"^beta must be a real scalar, got None$",
                              beta=None)),
    Case("n_threads_0", raising(ValueError, r"n_threads must be a positive integer or None, "
                                r"got 0", n_threads=0)),
    # --- cross-entropy targets -----------------------------------------------------------
    Case("label_negative", bad_label(-1), ce_only("index")),
    Case("label_eq_C", bad_label(5), ce_only("index")),
    Case("label_huge", bad_label(2**62), ce_only("index")),
    Case("label_int8_negative", bad_label(-7, np.int8), ce_only("index")),
    Case("label_uint64_huge", bad_label(2**64 - 1, np.uint64), ce_only("index")),
    Case("label_int8_valid", valid_labels(np.int8), ce_only("index")),
    Case("label_uint64_valid", valid_labels(np.uint64), ce_only("index")),
    Case("label_uint8_ignore_minus_100", with_target(np.array([0, 4, 2, 1], np.uint8)),
         ce_only("index")),
    Case("label_ignored", with_target(np.array([0, -100, 2, -100])), ce_only("index")),
    Case("label_bool", with_target(np.array([True, False, True, False]), TypeError,
                                   r"^target has dtype bool, which is ambiguous"), ce_only()),
    Case("label_wrong_shape", with_target(np.array([0, 1, 2]), ValueError,
                                          r"^class-index targets \(integer dtype\) must have "
                                          r"the shape of logits without axis 1, \(4,\), got "
                                          r"\(3,\)$"), ce_only()),
    Case("float_labels_wrong_shape", with_target(np.array([0.0, 1.0, 2.0, 3.0]), ValueError,
                                                 r"^probability targets \(floating dtype\) "
                                                 r"must have the shape of logits \(4, 5\), got "
                                                 r"\(4,\)$"), ce_only()),
    Case("target_complex", with_target(np.ones(SHAPE, complex), TypeError,
                                       r"^target must hold integer class indices or floating "
                                       r"probabilities, got dtype complex128$"), ce_only()),
    Case("target_ragged", with_target([[0], [1, 2]], ValueError,
                                      r"^target is not a rectangular array"), ce_only()),
    Case("weight_wrong_length", with_target(None, ValueError, r"^weight must have shape "
                                            r"\(5,\) \(one per class\), got \(4,\)$",
                                            weight=np.ones(4)), ce_only()),
    Case("weight_negative", with_target(None, ValueError, r"^weight must be non-negative; "
                                        r"its minimum is -1\.0$",
                                        weight=[1.0, -1.0, 1.0, 1.0, 1.0]), ce_only()),
    Case("weight_nan", with_target(None, ValueError, r"^weight must be finite",
                                   weight=[1.0, np.nan, 1.0, 1.0, 1.0]), ce_only()),
    Case("weight_valid", with_target(None, weight=[1.0, 0.5, 2.0, 0.0, 3.0]), ce_only()),
    Case("label_smoothing_1.5", with_target(None, ValueError, r"^label_smoothing must be in "
                                            r"\[0, 1\], got 1\.5$", label_smoothing=1.5),
         ce_only()),
    Case("label_smoothing_negative", with_target(None, ValueError, r"^label_smoothing must "
                                                 r"be in \[0, 1\], got -0\.1$",
                                                 label_smoothing=-0.1), ce_only()),
    Case("label_smoothing_nan", with_target(None, ValueError, r"must be in \[0, 1\], got nan",
                                            label_smoothing=np.nan), ce_only()),
    Case("reduction_misspelt", with_target(None, ValueError, r"^reduction must be one of "
                                           r"'mean', 'sum', 'none', got 'meen'$",
                                           reduction="meen"), ce_only()),
    Case("reduction_sum", with_target(None, reduction="sum"), ce_only()),
    Case("reduction_none", with_target(None, reduction="none"), ce_only()),
    # --- out= ----------------------------------------------------------------------------
    Case("out_wrong_shape", out_array(lambda shape, dtype, x: np.zeros(shape + (1,), dtype),
                                      ValueError, r"^out has shape"), has_out),
    Case("out_wrong_dtype", out_array(lambda shape, dtype, x: np.zeros(shape, np.float16),
                                      ValueError, r"^out has dtype float16, expected float"),
         has_out),
    Case("out_big_endian", out_array(lambda shape, dtype, x: np.zeros(
        shape, np.dtype(dtype).newbyteorder(">")), ValueError, r"^out has dtype >f"), has_out),
    Case("out_read_only", out_array(lambda shape, dtype, x: np.broadcast_to(
        np.zeros(shape, dtype), shape), ValueError, r"^out is read-only$"), has_out),
    Case("out_zero_stride", out_array(zero_stride_out, ValueError,
                                      r"^out has a zero stride"), has_out),
    Case("out_list", out_array(lambda shape, dtype, x: np.zeros(shape, dtype).tolist(),
                               TypeError, r"^out must be a numpy.ndarray, got list$"), has_out),
    Case("out_fortran", out_array(lambda shape, dtype, x: np.asfortranarray(
        np.full(shape, 7, dtype))), has_out),
    Case("out_in_place", in_place, lambda api: api.has_out and api.name != "logsumexp"),
    Case("out_partial_overlap", partial_overlap, has_out),
    Case("out_is_second_input", out_is_second,
         lambda api: api.has_out and api.second in ("probs", "log_probs")
         or api.has_out and api.target_kind == "prob"),
    Case("out_overlaps_second_input", out_overlaps_second,
         lambda api: api.has_out and (api.family == "backward" or api.target_kind == "prob")),
    Case("second_input_complex", lambda api, dtype, tmp: Cell(
        logits(dtype), second=api.second_input(SHAPE, dtype).astype(complex),
        raises=(TypeError, rf"^{api.second if api.family == 'backward' else 'target'}"
                         r"(s)? (has|must hold)")),
         lambda api: api.family == "backward" or api.target_kind == "prob"),
    Case("out_overlaps_where", out_overlaps_where,
         lambda api: api.name in ("softmax", "log_softmax")),
    # --- where= --------------------------------------------------------------------------
    Case("where_broadcast_row", lambda api, dtype, tmp: Cell(
        logits(dtype), kw={"where": np.array([True, False, True, True, False])}),
         lambda api: api.family == "softmax"),
    Case("where_all_false_row", lambda api, dtype, tmp: Cell(
        logits(dtype), kw={"where": np.arange(20).reshape(SHAPE) >= 5}),
         lambda api: api.family == "softmax"),
    Case("where_not_bool", raising(TypeError, r"^where must be a boolean array, got dtype "
                                   r"int64$", where=np.ones(SHAPE, np.int64)),
         lambda api: api.family == "softmax"),
    Case("where_bad_shape", raising(ValueError, r"^where of shape \(3,\) does not broadcast "
                                    r"to the input shape \(4, 5\)$", where=np.ones(3, bool)),
         lambda api: api.family == "softmax"),
]

TABLE = [(api, case) for api in APIS for case in CASES if case.applies(api)]
DTYPES = [np.float32, np.float64]


# ---------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------

def snapshot(value):
    if isinstance(value, np.ndarray):
        return (value.shape, value.dtype, value.strides, value.flags.writeable, value.tobytes())
    return repr(value)


def assert_close(actual, expected, dtype, what, scale=0.0):
    """allclose with the dtype's tolerance (NaN/inf positions exact); `scale` adds an
    absolute tolerance of rtol * scale where the result is a difference of terms that
    large (the backward products: g - sum g p cancels)."""
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), what
        for a, e in zip(actual, expected):
            assert_close(a, e, dtype, what, scale)
        return
    if isinstance(expected, float):
        assert isinstance(actual, float), f"{what}: expected a Python float, got {actual!r}"
        actual_arr, expected_arr = np.float64(actual), np.float64(expected)
    else:
        assert isinstance(actual, np.ndarray), what
        result_dtype = np.dtype(dtype)
        assert actual.dtype == result_dtype, f"{what}: dtype {actual.dtype}"
        assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
        with np.errstate(over="ignore"):
            expected_arr = expected.astype(result_dtype).astype(np.float64)
        actual_arr = actual.astype(np.float64)
    tolerance = dict(TOLERANCES[np.dtype(dtype)])
    tolerance["atol"] = max(tolerance["atol"], tolerance["rtol"] * scale)
    np.testing.assert_allclose(actual_arr, expected_arr, equal_nan=True, err_msg=what,
                               **tolerance)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("api, case", TABLE,
                         ids=[f"{api_id(api)}-{case.name}" for api, case in TABLE])
def test_adversarial(api, case, dtype, tmp_path):
    cell = case.build(api, dtype, tmp_path)
    second = cell.second
    if second is None and api.second is not None:
        try:
            shape = np.shape(cell.x)
        except ValueError:  # ragged
            shape = SHAPE
        second = api.second_input(shape, dtype)
    inputs = [cell.x, second] + [v for k, v in cell.kw.items() if k != "out"]
    before = [snapshot(v) for v in inputs]
    source = cell.expected_from or (cell.x, second)
    if cell.expected_from and cell.expected_from[1] is None:
        source = (cell.expected_from[0], second)
    where = cell.kw.get("where")
    expected_kw = dict(cell.kw, where=None if where is None else np.array(where))
    what = f"{api_id(api)} on {case.name} ({np.dtype(dtype).name})"

    if cell.raises:
        exc, pattern = cell.raises
        with pytest.raises(exc, match=pattern) as info:
            api.call(cell.x, second, cell.kw)
        assert type(info.value) is exc, f"{what}: {type(info.value).__name__} is not {exc}"
    else:
        with np.errstate(all="ignore"):
            expected = api.expected(source[0], source[1],
                                    {k: v for k, v in expected_kw.items() if v is not None})
            magnitudes = np.abs(np.asarray(source[0], np.float64))
        scale = 0.0
        if api.family == "backward" and magnitudes.size:
            scale = np.max(np.where(np.isfinite(magnitudes), magnitudes, 0.0))
        result = api.call(cell.x, second, cell.kw)
        if "out" in cell.kw:
            grad = result[1] if api.name == "cross_entropy_with_grad" else result
            assert grad is cell.kw["out"], f"{what}: out= not returned"
        assert_close(result, expected, dtype, what, scale)

    for index, (value, saved) in enumerate(zip(inputs, before)):
        if index not in cell.aliased:
            assert snapshot(value) == saved, f"{what}: input {index} was modified"


@pytest.mark.parametrize("beta", [-1.0, 0.5, 2.0])
def test_in_place_cross_entropy_grad_with_beta(beta):
    """Regression (found by fuzzing): in place with beta != 1, the compensated sum once
    re-read x_i after writing exp(beta * x_i - shift) over it."""
    x = np.array([[0.0, 0.0], [3.0, -2.0]])
    expected = softmaxc.cross_entropy_grad(x, [0, 0], beta=beta)
    softmaxc.cross_entropy_grad(x, [0, 0], beta=beta, out=x)
    np.testing.assert_allclose(x, expected, rtol=1e-12)
