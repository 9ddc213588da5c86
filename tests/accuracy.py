"""Accuracy of the softmax family in ULPs, against an mpmath oracle.

Shared by ``tests/test_accuracy.py`` (which asserts the bounds) and
``scripts/measure_accuracy.py`` (which prints the table and writes JSON), so the oracle,
the input classes and the error measure exist once.

Error measure.  For an output element with exact value ``e`` (computed with mpmath at
``DIGITS`` significant digits from the exact input values, i.e. the float32 or float64
numbers actually passed in) and computed value ``c`` in dtype ``T``::

    ulp_error = |c - e| / spacing_T(round_T(e))

``spacing_T`` is ``np.spacing`` in the output dtype at the exact value rounded to that
dtype.  An exact value that rounds to 0 has the spacing of 0, the smallest subnormal, so
underflowed results are measured in absolute units of the smallest subnormal: a computed
0 for an exact 1e-50 in float32 counts as ~0 ULP, as it should.  The exact value is carried
as a double-double ``hi + lo`` (``hi`` correctly rounded to float64); ``round_T`` rounds
``hi`` to ``T``, which differs from rounding ``e`` directly only at an exact float32 tie,
where it could change the spacing only at a power of two (a factor 2 in the reported error).

Bounds (the contract stated in the docs):

* logsumexp: 2 ULP in float64, 4 ULP in float32;
* log_softmax: 4 ULP, including rows with one dominant entry;
* softmax: per element, ``ulp_error_i <= |z_i - z_max| + log2(n) + 4``.  The first term is
  inherent: the shifted logit ``w_i = z_i - z_max`` is rounded relative to itself and an
  absolute error ``|w_i| * eps`` in ``w_i`` is a relative error ``|w_i| * eps`` in ``exp(w_i)``.

Input classes: rows of ``N = 1000`` entries (a typical vocabulary-sized row, long enough
for the pairwise summation to go several levels deep, short enough for mpmath), 3 rows per
class, except ``long_rows`` (2 rows of 10**4 entries).  All rows come from one fixed seed;
each dtype receives the same float64 rows rounded to it.
"""

import math
from dataclasses import dataclass
from functools import cache

import mpmath
import numpy as np
from mpmath.libmp import to_float

DIGITS = 50
SEED = 20260522
N = 1000
ROWS = 3

FUNCTIONS = ("logsumexp", "log_softmax", "softmax")
DTYPES = (np.dtype(np.float64), np.dtype(np.float32))

# Constant bounds in ULP; softmax's bound is per element (see softmax_bound).
CONSTANT_BOUNDS = {
    ("logsumexp", "float64"): 2.0,
    ("logsumexp", "float32"): 4.0,
    ("log_softmax", "float64"): 4.0,
    ("log_softmax", "float32"): 4.0,
}
SOFTMAX_BOUND_TEXT = "|z_i-z_max|+log2(n)+4"


def _standard_normal(rng):
    return rng.standard_normal((ROWS, N))


def _std_10(rng):
    return 10.0 * rng.standard_normal((ROWS, N))


def _offset_1e4(rng):
    return 1e4 + rng.standard_normal((ROWS, N))


def _dominant_entry(rng):
    # One entry 20, 40 and 80 above a standard normal row: the dominant probability is
    # 1 - t with t ~ n * exp(-gap), from 2e-6 down to 2e-32, so log p_max ~ -t is far below
    # the ULP of 1 (where log(sum) instead of log1p loses all relative accuracy).
    x = rng.standard_normal((ROWS, N))
    for row, gap in zip(x, (20.0, 40.0, 80.0)):
        row[rng.integers(N)] = row.max() + gap
    return x


def _wide_range(rng):
    # Logits -10**u with u uniform in [-8, log10(740)]: gaps to the maximum from ~1e-8 up
    # to 740, so probabilities from ~1/n down into the float64 subnormals (and to 0 in
    # float32).
    return -(10.0 ** rng.uniform(-8.0, math.log10(740.0), size=(ROWS, N)))


def _long_rows(rng):
    return rng.standard_normal((2, 10_000))


def _negative_beta(rng):
    return rng.standard_normal((ROWS, N))


@dataclass(frozen=True)
class InputClass:
    name: str
    description: str
    make: object  # rng -> float64 array (rows, n)
    beta: float = 1.0


INPUT_CLASSES = (
    InputClass("standard_normal", "N(0, 1), n=1000", _standard_normal),
    InputClass("std_10", "N(0, 10^2), n=1000", _std_10),
    InputClass("offset_1e4", "1e4 + N(0, 1), n=1000", _offset_1e4),
    InputClass("dominant_entry", "N(0, 1) with one entry max+20/40/80, n=1000", _dominant_entry),
    InputClass("wide_range", "-10**U(-8, 2.87): gaps up to 740, n=1000", _wide_range),
    InputClass("long_rows", "N(0, 1), n=10^4 (2 rows)", _long_rows),
    InputClass("negative_beta", "N(0, 1), beta=-2.5, n=1000", _negative_beta, beta=-2.5),
)
CLASSES_BY_NAME = {c.name: c for c in INPUT_CLASSES}


def class_input(name, dtype):
    """The rows of an input class, rounded to `dtype` (same rows for every dtype)."""
    index = [c.name for c in INPUT_CLASSES].index(name)
    rng = np.random.default_rng([SEED, index])
    return CLASSES_BY_NAME[name].make(rng).astype(dtype)


# --------------------------------------------------------------------------- mpmath oracle


def _double_double(value):
    """(hi, lo) floats with hi = value correctly rounded to float64, lo the rounded rest."""
    hi = to_float(value._mpf_, rnd="n")
    if math.isinf(hi):
        return hi, 0.0
    return hi, to_float((value - mpmath.mpf(hi))._mpf_, rnd="n")


@dataclass
class ExactRow:
    """Exact results for one row, each as double-double arrays (hi, lo)."""

    logsumexp: tuple
    log_softmax: tuple
    softmax: tuple
    gap: np.ndarray  # |z_i - z_max| (float64), for the softmax bound


def exact_row(x_row, beta=1.0):
    """logsumexp, log_softmax and softmax of beta * x_row with DIGITS significant digits.

    The input values are taken exactly (beta * x is exact at this precision).  The sum
    is split as in the kernel, 1 + t with t over the entries other than the maximum, and
    log(1 + t) is evaluated with log1p so that a tiny t keeps its relative accuracy here too.
    """
    with mpmath.workdps(DIGITS):
        z = [mpmath.mpf(beta) * mpmath.mpf(float(v)) for v in x_row]
        i_max = max(range(len(z)), key=z.__getitem__)
        z_max = z[i_max]
        w = [zi - z_max for zi in z]
        e = [mpmath.exp(wi) for wi in w]
        t = mpmath.fsum(e[:i_max] + e[i_max + 1 :])
        log_total = mpmath.log1p(t)
        total = 1 + t
        lse = z_max + log_total
        log_p = [wi - log_total for wi in w]
        p = [ei / total for ei in e]
        pairs = {
            "logsumexp": [_double_double(lse)],
            "log_softmax": [_double_double(v) for v in log_p],
            "softmax": [_double_double(v) for v in p],
        }
        gap = np.array([float(-wi) for wi in w])
    arrays = {
        key: (np.array([hi for hi, _ in values]), np.array([lo for _, lo in values]))
        for key, values in pairs.items()
    }
    return ExactRow(arrays["logsumexp"], arrays["log_softmax"], arrays["softmax"], gap)


@cache
def exact_class(name, dtype_name):
    """Exact results for every row of an input class (cached: mpmath is the slow part)."""
    x = class_input(name, np.dtype(dtype_name))
    beta = CLASSES_BY_NAME[name].beta
    return [exact_row(row, beta) for row in x]


def ulp_errors(computed, exact, dtype):
    """|computed - exact| / spacing(exact rounded to dtype), elementwise (see module doc)."""
    hi, lo = exact
    computed = np.asarray(computed, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        # computed and hi are within a factor 2 of each other whenever the error is below
        # a few ULP, so computed - hi is exact (Sterbenz) and only "- lo" rounds.
        diff = np.abs((computed - hi) - lo)
    diff = np.where(computed == hi, np.abs(lo), diff)  # also covers equal infinities
    spacing = np.spacing(np.abs(hi).astype(dtype)).astype(np.float64)
    return diff / spacing


def softmax_bound(gap, n):
    """Per-element softmax bound in ULP: |z_i - z_max| + log2(n) + 4."""
    return gap + math.log2(n) + 4.0


# --------------------------------------------------------------------------- measurement


@dataclass
class Measurement:
    function: str
    dtype: str
    input_class: str
    n: int
    rows: int
    max_ulp: float
    bound: str
    worst_ratio: float  # max over elements of ulp_error / bound (<= 1 means within bound)

    @property
    def passed(self):
        return self.worst_ratio <= 1.0


def computed_values(function, x, beta):
    """softmaxc's result for the rows of x (1 thread; results are thread-count independent)."""
    import softmaxc

    return getattr(softmaxc, function)(x, axis=-1, beta=beta, n_threads=1)


def measure(function, dtype, class_name):
    """Max ULP error of one function on one input class in one dtype."""
    dtype = np.dtype(dtype)
    x = class_input(class_name, dtype)
    beta = CLASSES_BY_NAME[class_name].beta
    computed = computed_values(function, x, beta)
    assert computed.dtype == dtype, (function, computed.dtype, dtype)
    exact_rows = exact_class(class_name, dtype.name)
    n = x.shape[1]
    max_ulp = 0.0
    worst_ratio = 0.0
    for r, exact in enumerate(exact_rows):
        errors = ulp_errors(np.atleast_1d(computed[r]), getattr(exact, function), dtype)
        if function == "softmax":
            bound = softmax_bound(exact.gap, n)
            bound_text = SOFTMAX_BOUND_TEXT
        else:
            bound = CONSTANT_BOUNDS[function, dtype.name]
            bound_text = f"{bound:g}"
        max_ulp = max(max_ulp, float(np.max(errors)))
        worst_ratio = max(worst_ratio, float(np.max(errors / bound)))
    return Measurement(function, dtype.name, class_name, n, x.shape[0], max_ulp, bound_text,
                       worst_ratio)


def measure_all():
    return [
        measure(function, dtype, c.name)
        for function in FUNCTIONS
        for dtype in DTYPES
        for c in INPUT_CLASSES
    ]


# --------------------------------------------------------------------- logsumexp near 0
#
# log(sum exp z) = z_max + log1p(t) cancels when the result is near 0, and the problem
# itself is ill-conditioned there: relative perturbations of size eps in the z_i move the
# result by up to kappa * eps relatively, with kappa = sum_i |z_i| p_i / |lse|.  No few-ULP
# bound holds without extra precision; the kernel's error is measured here against kappa.

NEAR_ZERO_TARGETS = (1.0, 1e-3, 1e-8)


@dataclass
class NearZeroMeasurement:
    dtype: str
    target: float
    exact: float
    ulp: float
    condition: float  # kappa


def logsumexp_near_zero(target, dtype):
    """logsumexp of a standard normal row (n=1000) shifted so the result is ~target."""
    import softmaxc

    dtype = np.dtype(dtype)
    x = np.random.default_rng([SEED, 99]).standard_normal(N)
    x = (x - float(softmaxc.logsumexp(x)) + target).astype(dtype)
    exact = exact_row(x)
    lse_hi = exact.logsumexp[0][0]
    computed = softmaxc.logsumexp(x)
    ulp = float(ulp_errors(np.atleast_1d(computed), exact.logsumexp, dtype)[0])
    z = x.astype(np.float64)
    p = exact.softmax[0]
    condition = float(np.sum(np.abs(z) * p) / abs(lse_hi))
    return NearZeroMeasurement(dtype.name, target, lse_hi, ulp, condition)


def format_near_zero(measurements):
    lines = [f"{'dtype':<8} {'~target':>8} {'exact lse':>24} {'cond kappa':>12} {'ULP error':>12}"]
    for m in measurements:
        lines.append(f"{m.dtype:<8} {m.target:>8.0e} {m.exact:>24.17g} {m.condition:>12.4g} "
                     f"{m.ulp:>12.4g}")
    return "\n".join(lines)


def format_table(measurements):
    header = f"{'function':<12} {'dtype':<8} {'input class':<16} {'n':>6} {'rows':>4} " \
             f"{'max ULP':>9} {'bound':>22} {'err/bound':>9}  ok"
    lines = [header, "-" * len(header)]
    for m in measurements:
        lines.append(
            f"{m.function:<12} {m.dtype:<8} {m.input_class:<16} {m.n:>6} {m.rows:>4} "
            f"{m.max_ulp:>9.3f} {m.bound:>22} {m.worst_ratio:>9.3f}  "
            + ("yes" if m.passed else "NO")
        )
    return "\n".join(lines)
