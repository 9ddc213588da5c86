"""Derivatives of softmax: the Jacobian and the backward products (layer 3).

Validation, dtype rules and `out=` handling are those of the forward functions
(`_arrays.py`); the kernels are in `_backward_kernels.pyx`.  The Jacobian reuses the forward
softmax kernel for p.
"""

import math

import numpy as np

from softmaxc import _arrays
from softmaxc import _backward_kernels as backward_kernels
from softmaxc import _softmax_kernels as softmax_kernels

# The default of the package setting ``softmaxc.JACOBIAN_MAX_BYTES`` (1 GiB).  The setting
# itself lives on the package, where users change it; `softmax_jacobian` reads it per call.
DEFAULT_JACOBIAN_MAX_BYTES = 1 << 30


def _jacobian_max_bytes():
    import softmaxc  # the package setting, read at call time so that assignments take effect

    limit = getattr(softmaxc, "JACOBIAN_MAX_BYTES", DEFAULT_JACOBIAN_MAX_BYTES)
    if isinstance(limit, (bool, np.bool_)) or not isinstance(limit, (int, float, np.number)):
        raise TypeError(
            f"softmaxc.JACOBIAN_MAX_BYTES must be a number of bytes, got {limit!r}"
        )
    if not limit >= 0:
        raise ValueError(f"softmaxc.JACOBIAN_MAX_BYTES must be >= 0, got {limit!r}")
    return limit


def _format_bytes(nbytes):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{nbytes} bytes"


def softmax_jacobian(x, axis=-1, *, beta=1.0, n_threads=None):
    r"""Jacobian of the softmax of ``beta * x`` with respect to ``x``, per row.

    .. math:: J_{ij} = \frac{\partial p_i}{\partial x_j} = \beta\, p_i (\delta_{ij} - p_j),
              \qquad J = \beta \left(\operatorname{diag}(p) - p p^\top\right)

    Parameters
    ----------
    x : array_like
        Real logits (any layout; never modified).  float32 and float64 are computed
        natively, float16 in float32; bool and integers are converted to float64.
    axis : int, optional
        The class axis of length ``n``.  Default -1.
    beta : float, optional
        Inverse temperature (finite).  The derivative is with respect to ``x``, so it
        carries the factor ``beta``.
    n_threads : int, optional
        OpenMP threads for this call (default: :func:`get_num_threads`).

    Returns
    -------
    ndarray
        Shape ``batch + (n, n)``, where ``batch`` is ``x.shape`` without ``axis``;
        ``J[..., i, j]`` is :math:`\partial p_i / \partial x_j` for the row ``...``.
        Same dtype rules as :func:`softmax`.

    Raises
    ------
    ValueError
        If the result would take more than ``softmaxc.JACOBIAN_MAX_BYTES`` bytes
        (default 1 GiB; assign another number, e.g. ``math.inf``, to change it), or if
        ``beta`` is not finite.  To multiply a vector by :math:`J`, use
        :func:`softmax_backward`, which never forms :math:`J`.

    See Also
    --------
    softmax_backward : ``grad @ J`` in O(n) memory per row.

    Notes
    -----
    ``p`` is computed by the forward :func:`softmax` kernel.  Each row of the result costs
    :math:`n^2` numbers: for large ``n`` prefer :func:`softmax_backward`.  The diagonal
    entry of the largest probability uses :math:`1 - p_{\max} = \sum_{k \ne \max} p_k`,
    which does not cancel when :math:`p_{\max}` is close to 1, so every row of :math:`J`
    still sums to (nearly) zero.  An entry with :math:`p_k = 0` (a ``-inf`` logit) has
    its row and column exactly ``+0.0``.  A NaN or ``+inf`` logit, or a row that is all
    ``-inf``, gives a NaN block.  See :doc:`/derivations/jacobian`.

    Examples
    --------
    >>> import softmaxc
    >>> softmaxc.softmax_jacobian([0.0, 0.0])
    array([[ 0.25, -0.25],
           [-0.25,  0.25]])
    >>> softmaxc.softmax_jacobian([[0.0, 0.0], [0.0, -float("inf")]], beta=2.0)
    array([[[ 0.5, -0.5],
            [-0.5,  0.5]],
    <BLANKLINE>
           [[ 0. ,  0. ],
            [ 0. ,  0. ]]])
    """
    arr = _arrays.as_real_array(x)
    result_dtype, compute_dtype = _arrays.float_dtypes(arr.dtype)
    axis = _arrays.check_axis(axis, arr.ndim)
    beta = _arrays.check_beta(beta)
    n_threads = _arrays.check_n_threads(n_threads)
    n = arr.shape[axis]
    result_shape = arr.shape[:axis] + arr.shape[axis + 1 :] + (n, n)
    nbytes = math.prod(result_shape) * result_dtype.itemsize
    limit = _jacobian_max_bytes()
    if nbytes > limit:
        raise ValueError(
            f"softmax_jacobian: the Jacobian of shape {result_shape} ({result_dtype}) would "
            f"take {_format_bytes(nbytes)}, above softmaxc.JACOBIAN_MAX_BYTES = "
            f"{_format_bytes(limit) if math.isfinite(limit) else limit}.  To multiply by "
            "the Jacobian, use softmaxc.softmax_backward(grad, probs), which computes "
            "grad @ J without forming J; or raise softmaxc.JACOBIAN_MAX_BYTES."
        )
    out = np.empty(result_shape, result_dtype)
    if out.size == 0:
        return out
    rows = _arrays.as_rows(arr, axis, compute_dtype)
    probs = np.empty(rows.shape, compute_dtype)
    softmax_kernels.softmax_rows(
        rows, probs, beta, None, _arrays.threads_for(n_threads, *rows.shape)
    )
    block_shape = (rows.shape[0], n, n)
    buffer, direct = _arrays.kernel_target(out, compute_dtype, [], block_shape)
    backward_kernels.softmax_jacobian_rows(
        probs, buffer, beta, _arrays.threads_for(n_threads, rows.shape[0], n * n)
    )
    _arrays.finish(out, buffer, direct)
    return out


def _backward(kernel, grad, probs, probs_name, axis, beta, out, n_threads):
    """Validate and run a backward-product kernel; the result has the shape of `grad`."""
    g = _arrays.as_real_array(grad, "grad")
    p = _arrays.as_real_array(probs, probs_name)
    if g.shape != p.shape:
        raise ValueError(
            f"grad has shape {g.shape} but {probs_name} has shape {p.shape}; "
            "they must have the same shape (no broadcasting)"
        )
    result_dtype, compute_dtype = _arrays.float_dtypes(np.result_type(g.dtype, p.dtype))
    axis = _arrays.check_axis(axis, g.ndim)
    beta = _arrays.check_beta(beta)
    n_threads = _arrays.check_n_threads(n_threads)
    out = _arrays.check_out(out, g.shape, result_dtype)
    if out is None:
        out = np.empty(g.shape, result_dtype)
    if out.size == 0:
        return out
    g_rows = _arrays.as_rows(g, axis, compute_dtype)
    p_rows = _arrays.as_rows(p, axis, compute_dtype)
    target = np.moveaxis(out, axis, -1)
    buffer, direct = _arrays.kernel_target(target, compute_dtype, [g_rows, p_rows], g_rows.shape)
    kernel(g_rows, p_rows, buffer, beta, _arrays.threads_for(n_threads, *g_rows.shape))
    _arrays.finish(target, buffer, direct)
    return out


def softmax_backward(grad, probs, axis=-1, *, beta=1.0, out=None, n_threads=None):
    r"""Vector-Jacobian product of softmax, ``grad @ J``, without forming ``J``.

    .. math:: (g^\top J)_j = \beta\, p_j \Bigl(g_j - \sum_k g_k p_k\Bigr)

    Given ``probs = softmax(x, axis, beta=beta)`` and the gradient ``grad`` of a scalar
    loss with respect to ``probs``, returns the gradient of the loss with respect to
    ``x``.  ``J`` is symmetric, so this is also the Jacobian-vector product ``J @ grad``.

    Parameters
    ----------
    grad : array_like
        Upstream gradient :math:`\partial L / \partial p` (never modified).
    probs : array_like
        The forward output ``softmax(x, axis, beta=beta)``, of the shape of ``grad``.
    axis : int, optional
        The class axis.  Default -1.
    beta : float, optional
        The inverse temperature used in the forward pass (finite).
    out : ndarray, optional
        Writable array of the result's shape and dtype, possibly ``grad`` or ``probs``
        itself (in place).
    n_threads : int, optional
        OpenMP threads for this call (default: :func:`get_num_threads`).

    Returns
    -------
    ndarray
        :math:`\partial L / \partial x`, of the shape of ``grad``; ``out`` when given.
        Its dtype follows :func:`softmax`'s rules applied to
        ``numpy.result_type(grad, probs)``: float32 with float32 gives float32, float32
        with float64 gives float64, float16 is computed in float32 and returned as
        float16, integers and bools give float64.

    Raises
    ------
    ValueError
        If ``grad`` and ``probs`` differ in shape, ``axis`` is invalid
        (``numpy.exceptions.AxisError``), ``beta`` is not finite, or ``out`` is wrong.

    See Also
    --------
    softmax_jacobian : the full Jacobian (``n * n`` numbers per row).
    log_softmax_backward : the same for :func:`log_softmax`.

    Notes
    -----
    :math:`s = \sum_k g_k p_k` is accumulated pairwise in double precision, once per row,
    so the cost is :math:`O(n)` per row instead of the :math:`O(n^2)` of ``grad @ J``.
    An entry with :math:`p_j = 0` (masked by ``where=`` or a ``-inf`` logit) is outside
    the graph: it adds nothing to :math:`s` and its result is exactly ``+0.0``, whatever
    ``grad`` holds there.  A NaN elsewhere in a row makes the rest of that row NaN.
    See :doc:`/derivations/jacobian`.

    Examples
    --------
    >>> import numpy as np, softmaxc
    >>> x = np.array([1.0, 2.0, 3.0])
    >>> p = softmaxc.softmax(x)
    >>> g = np.array([1.0, 0.0, 0.0])
    >>> softmaxc.softmax_backward(g, p).round(4)
    array([ 0.0819, -0.022 , -0.0599])
    >>> np.allclose(softmaxc.softmax_backward(g, p), g @ softmaxc.softmax_jacobian(x))
    True
    """
    return _backward(
        backward_kernels.softmax_backward_rows, grad, probs, "probs", axis, beta, out, n_threads
    )


def log_softmax_backward(grad, log_probs, axis=-1, *, beta=1.0, out=None, n_threads=None):
    r"""Vector-Jacobian product of log-softmax, without forming the Jacobian.

    .. math:: \frac{\partial L}{\partial x_j}
              = \beta \Bigl(g_j - e^{\log p_j} \sum_k g_k\Bigr),
              \qquad g = \frac{\partial L}{\partial \log p}

    Parameters
    ----------
    grad : array_like
        Upstream gradient :math:`\partial L / \partial \log p` (never modified).
    log_probs : array_like
        The forward output ``log_softmax(x, axis, beta=beta)``, of the shape of ``grad``.
    axis : int, optional
        The class axis.  Default -1.
    beta : float, optional
        The inverse temperature used in the forward pass (finite).
    out : ndarray, optional
        Writable array of the result's shape and dtype, possibly ``grad`` or
        ``log_probs`` itself (in place).
    n_threads : int, optional
        OpenMP threads for this call.

    Returns
    -------
    ndarray
        :math:`\partial L / \partial x`, of the shape of ``grad``; ``out`` when given.
        dtype as in :func:`softmax_backward`.

    Raises
    ------
    ValueError
        If ``grad`` and ``log_probs`` differ in shape, ``axis`` is invalid, ``beta`` is not
        finite, or ``out`` is wrong.

    Notes
    -----
    The Jacobian of log-softmax is :math:`\beta (I - \mathbf{1} p^\top)`; the product
    needs only :math:`\sum_k g_k`, accumulated pairwise in double.  Entries with
    :math:`\log p_j = -\infty` (masked by ``where=`` or a ``-inf`` logit) are outside the
    graph: they add nothing to the sum and get exactly ``+0.0``.  With
    :math:`g = -y` for a distribution :math:`y` this is the cross-entropy gradient
    :math:`\beta (p - y)`.  See :doc:`/derivations/jacobian`.

    Examples
    --------
    >>> import numpy as np, softmaxc
    >>> log_p = softmaxc.log_softmax([1.0, 2.0, 3.0])
    >>> y = np.array([0.0, 0.0, 1.0])
    >>> softmaxc.log_softmax_backward(-y, log_p).round(4)   # p - y
    array([ 0.09  ,  0.2447, -0.3348])
    """
    return _backward(
        backward_kernels.log_softmax_backward_rows,
        grad, log_probs, "log_probs", axis, beta, out, n_threads,
    )
