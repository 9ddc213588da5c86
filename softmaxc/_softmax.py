"""Public softmax, log_softmax and logsumexp (layer 3: validate, allocate, document)."""

import numpy as np

from softmaxc import _arrays
from softmaxc import _softmax_kernels as kernels


def _rowwise(kernel, column_kernel, x, axis, beta, where, out, n_threads):
    """Run a kernel whose result has the shape of `x` (softmax, log_softmax); rows along
    a non-last axis of a C-contiguous array go to the column kernel (no transposed copy)."""
    arr = _arrays.as_real_array(x)
    result_dtype, compute_dtype = _arrays.float_dtypes(arr.dtype)
    axis = _arrays.check_axis(axis, arr.ndim)
    beta = _arrays.check_beta(beta)
    n_threads = _arrays.check_n_threads(n_threads)
    out = _arrays.check_out(out, arr.shape, result_dtype)
    mask = _arrays.check_mask(where, arr.shape)
    if out is None:
        out = np.empty(arr.shape, result_dtype)
    if arr.size == 0:
        return out
    repeated = _arrays.repeated_rows(arr, axis, mask)
    if repeated is not None:  # broadcast rows: compute each distinct row once
        out[...] = _rowwise(kernel, column_kernel, arr[repeated], axis, beta,
                            None if mask is None else mask[repeated], None, n_threads)
        return out
    columns = None if mask is not None else _arrays.as_columns(arr, axis, compute_dtype)
    if columns is not None:
        buffer, direct = _arrays.kernel_target(out, compute_dtype, [columns], columns.shape)
        _arrays.specialised(column_kernel, compute_dtype)(
            columns, buffer, beta, _arrays.threads_for(n_threads, arr.size // arr.shape[axis],
                                                       arr.shape[axis]))
        _arrays.finish(out, buffer, direct)
        return out
    keep = _arrays.mask_rows(mask, axis)
    rows = _arrays.as_rows(arr, axis, compute_dtype)
    target = _arrays.axis_last(out, axis)
    buffer, direct = _arrays.kernel_target(target, compute_dtype, [rows, keep], rows.shape)
    _arrays.specialised(kernel, compute_dtype)(
        rows, buffer, beta, keep, _arrays.threads_for(n_threads, *rows.shape))
    _arrays.finish(target, buffer, direct)
    return out


def softmax(x, axis=-1, *, beta=1.0, where=None, out=None, n_threads=None):
    r"""Softmax of ``beta * x`` along an axis.

    .. math:: p_i = \frac{e^{\beta x_i}}{\sum_k e^{\beta x_k}}

    Parameters
    ----------
    x : array_like
        Real input (any layout; never modified).  float32 and float64 are computed
        natively, float16 in float32; bool and integers are converted to float64.
    axis : int, optional
        The class axis along which the probabilities sum to one.  Default -1.
    beta : float, optional
        Inverse temperature (finite; ``beta = 0`` gives the uniform distribution).
    where : array_like of bool, optional
        Broadcastable to ``x``; ``False`` entries are excluded and get probability
        exactly 0.  A row with no entry left is all zeros.
    out : ndarray, optional
        Writable array of the result's shape and dtype to fill, possibly ``x`` itself.
    n_threads : int, optional
        OpenMP threads for this call (default: :func:`get_num_threads`).

    Returns
    -------
    ndarray
        The probabilities, of the shape of ``x``; ``out`` when given.

    Notes
    -----
    The maximum of :math:`\beta x` is subtracted before exponentiating (softmax is
    invariant to shifts), the differences are formed as :math:`\beta (x_i - x_{\max})`
    so rows offset by large constants keep their accuracy, and the normaliser is summed
    pairwise in double precision.  A NaN gives a NaN row; a ``+inf`` gives a NaN row; a
    row of ``-inf`` gives NaN.  See :doc:`/derivations/softmax` and :doc:`/numerics`.

    Examples
    --------
    >>> import softmaxc
    >>> softmaxc.softmax([1.0, 2.0, 3.0]).round(4)
    array([0.09  , 0.2447, 0.6652])
    >>> softmaxc.softmax([1.0, 2.0, 3.0], beta=0.0)
    array([0.33333333, 0.33333333, 0.33333333])
    """
    if where is None:   # the common call: checked in C (_fastpath.pxd)
        result = kernels.softmax_fast(x, axis, beta, n_threads, out)
        if result is not None:
            return result
    return _rowwise(kernels.softmax_rows, kernels.softmax_columns, x, axis, beta, where, out,
                    n_threads)


def log_softmax(x, axis=-1, *, beta=1.0, where=None, out=None, n_threads=None):
    r"""Logarithm of the softmax of ``beta * x`` along an axis.

    .. math:: \log p_i = \beta x_i - \log \sum_k e^{\beta x_k}

    Parameters
    ----------
    x : array_like
        Real input (any layout; never modified); dtypes as in :func:`softmax`.
    axis : int, optional
        The class axis.  Default -1.
    beta : float, optional
        Inverse temperature (finite).
    where : array_like of bool, optional
        Broadcastable to ``x``; ``False`` entries get ``-inf``.
    out : ndarray, optional
        Writable array of the result's shape and dtype, possibly ``x`` itself.
    n_threads : int, optional
        OpenMP threads for this call.

    Returns
    -------
    ndarray
        The log-probabilities, of the shape of ``x``; ``out`` when given.

    Notes
    -----
    Computed as :math:`\beta (x_i - x_{\max}) - \operatorname{log1p}(t)` with
    :math:`t = \sum_{k \ne \max} e^{\beta (x_k - x_{\max})}`: both terms are non-positive
    and non-negative respectively, so nothing cancels, and ``log1p`` keeps the
    dominant entry's value accurate where ``log(sum)`` would round it to 0.  Accurate
    to a few ULP; see :doc:`/numerics`.

    Examples
    --------
    >>> import softmaxc
    >>> softmaxc.log_softmax([0.0, 50.0])
    array([-5.00000000e+01, -1.92874985e-22])
    """
    if where is None:   # the common call: checked in C (_fastpath.pxd)
        result = kernels.log_softmax_fast(x, axis, beta, n_threads, out)
        if result is not None:
            return result
    return _rowwise(kernels.log_softmax_rows, kernels.log_softmax_columns, x, axis, beta, where,
                    out, n_threads)


def logsumexp(x, axis=-1, *, beta=1.0, keepdims=False, where=None, out=None, n_threads=None):
    r"""``log(sum(exp(beta * x)))`` along an axis, without overflow.

    .. math:: \operatorname{lse}(x) = \log \sum_k e^{\beta x_k}
              = \beta x_{\max} + \log\Bigl(1 + \sum_{k \ne \max} e^{\beta (x_k - x_{\max})}\Bigr)

    Parameters
    ----------
    x : array_like
        Real input (never modified); dtypes as in :func:`softmax`.
    axis : int, optional
        The axis to reduce.  Default -1.
    beta : float, optional
        Inverse temperature (finite).
    keepdims : bool, optional
        Keep the reduced axis with length 1.
    where : array_like of bool, optional
        Broadcastable to ``x``; only ``True`` entries are summed (an empty sum gives
        ``-inf``).
    out : ndarray, optional
        Writable array of the result's shape and dtype.
    n_threads : int, optional
        OpenMP threads for this call.

    Returns
    -------
    ndarray
        Shape of ``x`` without ``axis`` (or with it as length 1 if ``keepdims``); a 0-d
        array for 1-d input.  A reduced axis of length 0 gives ``-inf``.

    Examples
    --------
    >>> import softmaxc
    >>> float(softmaxc.logsumexp([1000.0, 1000.0]))
    1000.6931471805599
    """
    if where is None:   # the common call: checked in C (_fastpath.pxd)
        result = kernels.logsumexp_fast(x, axis, beta, keepdims, n_threads, out)
        if result is not None:
            return result
    arr = _arrays.as_real_array(x)
    result_dtype, compute_dtype = _arrays.float_dtypes(arr.dtype)
    axis = _arrays.check_axis(axis, arr.ndim)
    beta = _arrays.check_beta(beta)
    n_threads = _arrays.check_n_threads(n_threads)
    reduced_shape = arr.shape[:axis] + arr.shape[axis + 1 :]
    result_shape = arr.shape[:axis] + (1,) + arr.shape[axis + 1 :] if keepdims else reduced_shape
    out = _arrays.check_out(out, result_shape, result_dtype)
    mask = _arrays.check_mask(where, arr.shape)
    if out is None:
        out = np.empty(result_shape, result_dtype)
    if out.size == 0:
        return out
    if arr.shape[axis] == 0:
        out[...] = -np.inf
        return out
    repeated = _arrays.repeated_rows(arr, axis, mask)
    if repeated is not None:  # broadcast rows: compute each distinct row once
        distinct = logsumexp(arr[repeated], axis, beta=beta, keepdims=True, n_threads=n_threads,
                             where=None if mask is None else mask[repeated])
        out[...] = distinct if keepdims else np.squeeze(distinct, axis)
        return out
    columns = None if mask is not None else _arrays.as_columns(arr, axis, compute_dtype)
    if columns is not None:
        outer, n, inner = columns.shape
        buffer, direct = _arrays.kernel_target(out, compute_dtype, [columns], (outer, inner))
        _arrays.specialised(kernels.logsumexp_columns, compute_dtype)(
            columns, buffer, beta, _arrays.threads_for(n_threads, outer * inner, n))
        _arrays.finish(out, buffer, direct)
        return out
    keep = _arrays.mask_rows(mask, axis)
    rows = _arrays.as_rows(arr, axis, compute_dtype)
    buffer, direct = _arrays.kernel_target(out, compute_dtype, [rows, keep], (rows.shape[0],))
    _arrays.specialised(kernels.logsumexp_rows, compute_dtype)(
        rows, buffer, beta, keep, _arrays.threads_for(n_threads, *rows.shape))
    _arrays.finish(out, buffer, direct)
    return out
