"""Testing utilities: check an analytic derivative against finite differences.

``softmaxc.testing.check_gradient`` is what a student runs to check a derivation (and what
the documentation's derivation pages use).  Pure NumPy; it works for any function, not only
softmaxc's.
"""

import numpy as np

from softmaxc import _arrays

__all__ = ["check_gradient", "DEFAULT_TOLERANCES"]

#: Default ``(rtol, atol)`` of :func:`check_gradient` per working precision (the coarser
#: of ``x``'s dtype and the dtype of ``f(x)``).  Measured on softmax Jacobians and
#: log-softmax gradients at 200 random points (|beta| <= 3, |x| up to ~12), the largest
#: error was 4e-11 in float64, 7e-4 in float32 and 0.5 in float16 (median 7e-13, 3e-6,
#: 4e-3): float64 leaves a wide margin, float32 a margin of 10x over the worst case, and
#: float16 is only good for finding gross mistakes.  A wrong formula (a missing factor,
#: a missing term) gives errors of order one.
DEFAULT_TOLERANCES = {
    np.dtype(np.float64): (1e-6, 1e-8),
    np.dtype(np.float32): (1e-2, 1e-3),
    np.dtype(np.float16): (2e-1, 5e-2),
}

# The 4th-order central difference: f'(x) ~ sum_k w_k f(x + k h) / h, error O(h^4).
_STENCIL = ((-2, 1.0 / 12.0), (-1, -8.0 / 12.0), (1, 8.0 / 12.0), (2, -1.0 / 12.0))


def _point_dtype(dtype):
    """The dtype f receives: x's own float16/32/64, float64 for anything else."""
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return np.dtype(dtype.newbyteorder("="))
    return np.dtype(np.float64)


def _coarser(a, b):
    return a if np.finfo(a).eps >= np.finfo(b).eps else b


def _as_values(value, what):
    arr = _arrays.as_real_array(value, what)
    return arr.astype(np.float64)


def _position(index):
    return "[" + ", ".join(str(int(i)) for i in index) + "]" if len(index) else ""


def check_gradient(f, df, x, *, eps=None, rtol=None, atol=None):
    r"""Compare an analytic derivative with 4th-order central finite differences.

    Parameters
    ----------
    f : callable
        ``f(x)`` returns a scalar or an array (any shape) of real numbers.
    df : callable
        ``df(x)`` returns the derivative of ``f`` at ``x``: for scalar ``f`` the gradient,
        of ``x``'s shape; otherwise the Jacobian, of shape ``f(x).shape + x.shape``, with
        ``df(x)[a..., i...] = d f(x)[a...] / d x[i...]``.
    x : array_like
        The point (real; never modified).  ``f`` and ``df`` receive copies of it in its own
        dtype when that is float16, float32 or float64, else in float64.
    eps : float, optional
        Relative step: coordinate ``i`` moves by ``h_i = eps * max(1, |x_i|)``, rounded
        down to a power of two (so that ``x_i + k h_i`` is exact in most cases).
        Default: ``finfo(w).eps ** (1/5)`` for the working precision ``w`` (the coarser
        of ``x``'s dtype and ``f(x)``'s dtype): 7.4e-4 for float64, 0.041 for float32,
        0.25 for float16, the step that balances the :math:`O(h^4)` truncation error
        against the :math:`O(\epsilon / h)` rounding error.
    rtol : float, optional
        Largest relative error accepted (default: :data:`DEFAULT_TOLERANCES` for the
        working precision: 1e-6 for float64, 1e-2 for float32, 0.2 for float16).
    atol : float, optional
        Absolute error accepted on entries whose numeric value is smaller than
        ``atol / rtol`` (default 1e-8 for float64, 1e-3 for float32, 0.05 for float16).

    Returns
    -------
    float
        The largest relative error over all entries (0.0 for an empty ``x``).

    Raises
    ------
    AssertionError
        If it exceeds ``rtol``, with a report of the worst entry (its position, the
        analytic and numeric values, the error and the tolerance) and of how many entries
        fail.
    ValueError
        If ``df(x)`` does not have the shape above, or ``f`` changes shape, or ``eps``,
        ``rtol`` or ``atol`` is not a valid number.

    Notes
    -----
    The numeric derivative along coordinate :math:`i` is

    .. math:: n_i = \frac{f(x - 2h e_i) - 8 f(x - h e_i) + 8 f(x + h e_i) - f(x + 2h e_i)}{12 h},

    accurate to :math:`O(h^4)`.  For each entry, with analytic value :math:`a` and numeric
    value :math:`n`, the relative error is

    .. math:: r = \frac{|a - n|}{\max(|n|,\ \mathrm{atol} / \mathrm{rtol})},

    a true relative error for entries above the floor ``atol / rtol`` and the absolute
    error measured in units of the floor below it (entries that should be zero are
    then judged by ``atol``).  The check passes when :math:`\max r \le \mathrm{rtol}`,
    i.e. :math:`|a - n| \le \max(\mathrm{rtol}\,|n|,\ \mathrm{atol})` everywhere.  A
    NaN or infinite value on either side counts as an infinite error.  The defaults
    suit functions whose values and derivatives are of order one; for larger ones
    raise ``atol`` in proportion.  See :doc:`/derivations/jacobian`.

    Examples
    --------
    >>> import numpy as np, softmaxc
    >>> from softmaxc.testing import check_gradient
    >>> x = np.array([0.5, -1.0, 2.0])
    >>> err = check_gradient(softmaxc.softmax, softmaxc.softmax_jacobian, x)
    >>> err < 1e-8
    True
    >>> def diagonal_only(x):   # a classic mistake: forgetting the -p_i p_j terms
    ...     p = softmaxc.softmax(x)
    ...     return np.diag(p * (1 - p))
    >>> check_gradient(softmaxc.softmax, diagonal_only, x)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    AssertionError: check_gradient: the analytic derivative does not match finite differences
    ...
    """
    x_in = _arrays.as_real_array(x, "x")
    point_dtype = _point_dtype(x_in.dtype)
    base = x_in.astype(np.float64)  # a copy: x itself is never handed to f or df

    f0 = _arrays.as_real_array(f(base.astype(point_dtype)), "f(x)")
    working = point_dtype
    if f0.dtype.kind == "f":
        working = _coarser(point_dtype, _point_dtype(f0.dtype))
    default_rtol, default_atol = DEFAULT_TOLERANCES[working]
    rtol = default_rtol if rtol is None else _positive(rtol, "rtol", allow_zero=False)
    atol = default_atol if atol is None else _positive(atol, "atol", allow_zero=True)
    eps = np.finfo(working).eps ** 0.2 if eps is None else _positive(eps, "eps", False)

    expected_shape = f0.shape + x_in.shape
    analytic = _as_values(df(base.astype(point_dtype)), "df(x)")
    if analytic.shape != expected_shape:
        kind = "gradient (x.shape)" if f0.ndim == 0 else "Jacobian (f(x).shape + x.shape)"
        raise ValueError(
            f"df(x) has shape {analytic.shape}, expected the {kind} {expected_shape}"
        )

    steps = eps * np.maximum(1.0, np.abs(base))
    steps = np.exp2(np.floor(np.log2(steps)))
    numeric = np.zeros(f0.shape + (x_in.size,))
    for k in range(x_in.size):
        for offset, weight in _STENCIL:
            point = base.copy()
            point.flat[k] += offset * steps.flat[k]
            value = _as_values(f(point.astype(point_dtype)), "f(x)")
            if value.shape != f0.shape:
                raise ValueError(
                    f"f returned shape {value.shape} at a perturbed point, {f0.shape} at x"
                )
            numeric[..., k] += weight * value
        numeric[..., k] /= steps.flat[k]
    numeric = numeric.reshape(expected_shape)

    if analytic.size == 0:
        return 0.0
    floor = atol / rtol
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.abs(analytic - numeric)
        scale = np.maximum(np.abs(numeric), floor)
        error = np.where(diff == 0, 0.0, diff / scale)
    error[~(np.isfinite(analytic) & np.isfinite(numeric))] = np.inf
    worst = np.unravel_index(np.argmax(error), error.shape)
    worst_error = float(error[worst])
    if worst_error > rtol:
        raise AssertionError(
            _report(analytic, numeric, error, worst, f0.ndim, rtol, atol, eps, working)
        )
    return worst_error


def _positive(value, name, allow_zero):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value


def _report(analytic, numeric, error, worst, f_ndim, rtol, atol, eps, working):
    f_index, x_index = worst[:f_ndim], worst[f_ndim:]
    a, n = analytic[worst], numeric[worst]
    failing = int(np.count_nonzero(error > rtol))
    return "\n".join(
        [
            "check_gradient: the analytic derivative does not match finite differences",
            f"  worst entry:      d f{_position(f_index)} / d x{_position(x_index)}",
            f"  analytic (df):    {float(a)!r}",
            f"  numeric (FD):     {float(n)!r}",
            f"  |difference|:     {abs(a - n):.3e}",
            f"  relative error:   {error[worst]:.3e}  "
            f"= |difference| / max(|numeric|, atol/rtol = {atol / rtol:.1e})",
            f"  tolerance:        rtol = {rtol:.1e}  (atol = {atol:.1e})",
            f"  failing entries:  {failing} of {error.size}",
            f"  finite differences: 4th-order central, h = {eps:.2e} * max(1, |x_i|) "
            f"rounded down to a power of 2; working precision {working}",
        ]
    )
