"""Scale: more than 2**31 elements, and no 32-bit index anywhere in the compiled code.

The cheap tests use zero-stride views (np.broadcast_to of one row to a huge shape): the
softmax family computes such repeated rows once, and every function validates its
arguments before it converts (materialises) anything.  The real large test allocates
8.6 GB and is marked slow.
"""

import os
import pathlib
import re
import tracemalloc

import numpy as np
import pytest

import softmaxc
from tests.oracles import logsumexp_oracle

ROWS, N = 2**15 + 1, 2**16          # 2**31 + 2**16 elements
SOURCES = pathlib.Path(softmaxc.__file__).parent


@pytest.fixture(scope="module")
def huge():
    row = np.random.default_rng(5).standard_normal(N).astype(np.float32)
    x = np.broadcast_to(row, (ROWS, N))
    assert x.size > 2**31
    return row, x


def peak_allocation(function):
    """Peak bytes NumPy and Python allocate while `function` runs (NumPy reports its data
    buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_logsumexp_of_broadcast_rows_is_computed_once(huge):
    row, x = huge
    result = np.empty(ROWS, np.float32)

    def run():
        softmaxc.logsumexp(x, out=result, n_threads=2)

    assert peak_allocation(run) < 64 << 20
    expected = np.float32(logsumexp_oracle(row.astype(np.float64)))
    np.testing.assert_allclose(result, expected, rtol=2e-6)
    assert (result == result[0]).all()
    kept = softmaxc.logsumexp(x, keepdims=True)
    assert kept.shape == (ROWS, 1) and (kept[:, 0] == result).all()


BAD_CALLS = {
    "softmax axis": (lambda x: softmaxc.softmax(x, axis=2), np.exceptions.AxisError),
    "softmax beta": (lambda x: softmaxc.softmax(x, beta=np.inf), ValueError),
    "log_softmax out shape": (lambda x: softmaxc.log_softmax(x, out=np.empty((2, 2),
                                                                              np.float32)),
                              ValueError),
    "logsumexp where": (lambda x: softmaxc.logsumexp(x, where=np.ones(3, bool)), ValueError),
    "jacobian too big": (lambda x: softmaxc.softmax_jacobian(x), ValueError),
    "backward shapes": (lambda x: softmaxc.softmax_backward(x, x[:1]), ValueError),
    "log_softmax_backward n_threads": (lambda x: softmaxc.log_softmax_backward(
        x, x, n_threads=0), ValueError),
    "cross_entropy label": (lambda x: softmaxc.cross_entropy(
        x, np.full(ROWS, N, np.int64)), IndexError),
    "cross_entropy weight": (lambda x: softmaxc.cross_entropy(
        x, np.zeros(ROWS, np.int64), weight=np.ones(3)), ValueError),
    "cross_entropy_grad reduction": (lambda x: softmaxc.cross_entropy_grad(
        x, np.zeros(ROWS, np.int64), reduction="avg"), ValueError),
    "cross_entropy_with_grad smoothing": (lambda x: softmaxc.cross_entropy_with_grad(
        x, np.zeros(ROWS, np.int64), label_smoothing=2.0), ValueError),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_huge_inputs_are_validated_before_anything_is_materialised(huge, name):
    call, error = BAD_CALLS[name]
    raised = []

    def run():
        with pytest.raises(error) as info:
            call(huge[1])
        raised.append(info.value)

    assert peak_allocation(run) < 64 << 20   # the input alone would be 8.6 GB
    assert raised


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("with_mask", [False, True])
def test_broadcast_rows_match_the_materialised_input(name, with_mask, rng):
    """Computing each distinct row once gives bitwise the result of the full input."""
    rows = rng.standard_normal((1, 3, 1, 40))
    x = np.broadcast_to(rows, (50, 3, 7, 40))
    where = None
    if with_mask:
        # Varies along axis 2: only axis 0 is collapsed.
        where = np.broadcast_to(rng.random((1, 1, 7, 40)) > 0.3, x.shape)
    function = getattr(softmaxc, name)
    for axis in (-1, 1):
        collapsed = function(x, axis, where=where)
        materialised = function(np.array(x), axis, where=None if where is None
                                else np.array(where))
        assert collapsed.tobytes() == materialised.tobytes()


def memory_available():
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0


@pytest.mark.slow
@pytest.mark.skipif(memory_available() < 14 << 30, reason="needs 14 GB of free memory")
def test_more_than_2_31_elements():
    """A real (rows, n) float32 array of 2**31 + 2**16 elements: the last rows lie beyond
    element 2**31, where a 32-bit row offset would wrap."""
    x = np.empty((ROWS, N), np.float32)
    x[...] = np.linspace(-3, 3, N, dtype=np.float32)
    x[-1] = np.linspace(5, -9, N, dtype=np.float32)
    lse = softmaxc.logsumexp(x)
    first = logsumexp_oracle(x[0].astype(np.float64))
    last = logsumexp_oracle(x[-1].astype(np.float64))
    np.testing.assert_allclose(lse[:-1], np.float32(first), rtol=2e-6)
    np.testing.assert_allclose(lse[-1], np.float32(last), rtol=2e-6)
    labels = np.zeros(ROWS, np.int64)
    losses = softmaxc.cross_entropy(x, labels, reduction="none")
    np.testing.assert_allclose(losses[:-1], np.float32(first - x[0, 0]), rtol=1e-5)
    np.testing.assert_allclose(losses[-1], np.float32(last - x[-1, 0]), rtol=1e-5)
    del x
    # In place: the result overwrites the 8.6 GB input (no second array).
    y = np.empty((ROWS, N), np.float32)
    y[...] = np.linspace(-3, 3, N, dtype=np.float32)
    y[-1] = 0
    softmaxc.log_softmax(y, out=y)
    np.testing.assert_allclose(y[-1, -5:], np.float32(-np.log(N)), rtol=2e-6)
    np.testing.assert_allclose(y[0], y[ROWS // 2], rtol=0)


# A C `int` is 32 bits on every platform softmaxc targets, so a variable that indexes memory
# or runs a loop must be Py_ssize_t.  Flags, status codes and lane masks may be int: the check
# finds every variable declared with a narrow integer type and fails when one is used as an
# index (a loop variable, inside a subscript, or added to a pointer).
NARROW_TYPE = r"(?:\bunsigned\s+)?\b(?:int|long|short)\b|\bu?int(?:8|16|32)_t\b|\bnpy_u?int32\b"
NARROW_DECLARATION = re.compile(rf"(?:{NARROW_TYPE})\s*\**\s*(\w+(?:\s*=[^,;)]*)?"
                                rf"(?:\s*,\s*\**\s*\w+(?:\s*=[^,;)]*)?)*)")


def narrow_indices(source):
    """The lines of `source` (C or Cython) that use a narrow-integer variable as an index."""
    lines = source.splitlines()
    code = [re.sub(r'#.*|//.*|/\*.*?\*/|"[^"]*"', "", line) for line in lines]
    names = set()
    for line in code:
        for match in NARROW_DECLARATION.finditer(line):
            if line[match.end():].lstrip().startswith("("):
                continue  # a function returning int, not a variable
            for declarator in match.group(1).split(","):
                names.add(declarator.split("=")[0].strip(" *"))
    names.discard("")
    if not names:
        return []
    name = r"\b(?:" + "|".join(map(re.escape, sorted(names))) + r")\b"
    as_index = re.compile(
        rf"\bfor\s+{name}\s+in\b"                              # Cython loop variable
        rf"|\bfor\s*\(\s*(?:{NARROW_TYPE})?\s*{name}\s*="      # C loop variable
        rf"|\[[^\]]*{name}[^\]]*\]"                            # subscript
        rf"|\w\s*\+\s*{name}\s*[,)]"                           # pointer + offset argument
    )
    return [f"{number}: {lines[number - 1].strip()}"
            for number, line in enumerate(code, 1) if as_index.search(line)]


def test_no_32_bit_index_in_compiled_sources():
    sources = sorted(SOURCES.glob("*.pyx")) + sorted(SOURCES.glob("*.pxd")) + sorted(
        SOURCES.glob("*.h"))
    assert len(sources) >= 5, sources
    offenders = [f"{path.name}:{line}" for path in sources
                 for line in narrow_indices(path.read_text())]
    assert not offenders, "32-bit integers used as indices:\n" + "\n".join(offenders)


def test_the_static_check_catches_an_int_index():
    assert narrow_indices("cdef int i\nfor i in prange(n):\n    total += x[i]")
    assert narrow_indices("for (int k = 0; k < n; k++) s += x[k];")
    assert narrow_indices("cdef unsigned int r = 3\ny = x[r]")
    assert narrow_indices("int32_t offset = 5;\nf(x + offset, n);")
    assert narrow_indices("int j = 0;\nout[i * n + j] = 0;")
    assert not narrow_indices("cdef int status = 0\nif status: return")
    assert not narrow_indices("int big = mask(v);\nif (big) y = clamp(y);")
    assert not narrow_indices("cdef Py_ssize_t i\nfor i in range(n):\n    x[i] = 0")
    assert not narrow_indices("static inline int smx_simd_init(void) {")
