"""Public cross-entropy, its gradient, and both at once (layer 3: validate, allocate, document).

Everything the kernels rely on is established here first, with vectorised NumPy: labels in
range (or ignored), weights finite and non-negative, shapes, dtypes, `out=`, and the
"mean" normaliser, which depends on the targets only, so the kernel can scale gradient
rows in the same pass that computes them.
"""

import math
import operator
import sys

import numpy as np

from softmaxc import _arrays
from softmaxc import _cross_entropy_kernels as kernels

_REDUCTIONS = ("mean", "sum", "none")

# Marks an ignored row for the kernel (valid labels are >= 0).
_IGNORED = -1


def _check_reduction(reduction):
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")
    return reduction


def _check_label_smoothing(label_smoothing):
    label_smoothing = _arrays.real_scalar(label_smoothing, "label_smoothing")
    if not 0.0 <= label_smoothing <= 1.0:  # also rejects NaN
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    return label_smoothing


def _check_ignore_index(ignore_index):
    if isinstance(ignore_index, (bool, np.bool_)):
        raise TypeError("ignore_index must be an integer, got a bool")
    try:
        return operator.index(ignore_index)
    except TypeError:
        raise TypeError(
            f"ignore_index must be an integer, got {type(ignore_index).__name__}"
        ) from None


def _check_weight(weight, n_classes):
    """The class weights as a fresh float64 array of shape (C,), or None."""
    if weight is None:
        return None
    arr = _arrays.as_real_array(weight, "weight")
    if arr.shape != (n_classes,):
        raise ValueError(
            f"weight must have shape ({n_classes},) (one per class), got {arr.shape}"
        )
    arr = np.array(arr, dtype=np.float64)  # a private copy: the kernel reads it unchecked
    if not np.all(np.isfinite(arr)):
        raise ValueError("weight must be finite; it contains NaN or inf")
    if np.any(arr < 0):
        raise ValueError(f"weight must be non-negative; its minimum is {arr.min()}")
    return arr


def _as_target(target):
    """`target` as an ndarray holding integer class indices or floating probabilities."""
    try:
        arr = np.asarray(target)
    except ValueError as exc:  # ragged nested sequences
        raise ValueError(f"target is not a rectangular array: {exc}") from None
    if arr.dtype.kind == "b":
        raise TypeError(
            "target has dtype bool, which is ambiguous: pass integer class indices or "
            "floating class probabilities"
        )
    if arr.dtype.kind not in "iuf":
        raise TypeError(
            f"target must hold integer class indices or floating probabilities, got dtype "
            f"{arr.dtype}"
        )
    return arr


def _labels_for_kernel(target, n_classes, ignore_index):
    """Validated class indices as a fresh C-contiguous intp vector, -1 where ignored.

    Raises IndexError for any label outside [0, C) that is not `ignore_index`.  The
    comparisons are written so no Python int is ever cast into a dtype that cannot hold
    it (uint64 labels, int8 labels with C > 127, ignore_index = -100 with unsigned labels).
    """
    info = np.iinfo(target.dtype)
    if info.min <= ignore_index <= info.max:
        ignored = target == ignore_index
    else:
        ignored = np.zeros(target.shape, dtype=bool)
    out_of_range = np.zeros(target.shape, dtype=bool)
    if info.min < 0:
        out_of_range |= target < 0
    if n_classes <= info.max:
        out_of_range |= target >= n_classes
    bad = out_of_range & ~ignored
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        first = int(np.argmax(bad.reshape(-1)))
        position = ", ".join(str(i) for i in np.unravel_index(first, target.shape)) or "()"
        value = target.reshape(-1)[first]
        raise IndexError(
            f"target has {n_bad} class index(es) outside [0, {n_classes}) that are not "
            f"ignore_index={ignore_index}; the first is target[{position}] = {value}"
        )
    labels = np.array(target, dtype=np.intp, order="C").reshape(-1)  # wraps only ignored ones
    labels[ignored.reshape(-1)] = _IGNORED
    return labels


def _cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing,
                   beta, n_threads, want_grad, out):
    """(loss, gradient or None): validation, one kernel call, reduction."""
    if weight is None:   # the common call: checked in C (_fastpath.pxd)
        fast = kernels.cross_entropy_fast(logits, target, axis, ignore_index, reduction,
                                          label_smoothing, beta, n_threads, want_grad, out)
        if fast is not None:
            row_losses, normaliser, grad = fast
            return _reduce(row_losses, reduction, normaliser, logits.dtype,
                           logits.shape[:-1]), grad
    x = _arrays.as_real_array(logits, "logits")
    result_dtype, compute_dtype = _arrays.float_dtypes(x.dtype)
    axis = _arrays.check_axis(axis, x.ndim)
    n_classes = x.shape[axis]
    batch_shape = x.shape[:axis] + x.shape[axis + 1 :]
    if n_classes == 0:
        raise ValueError(f"cross-entropy needs at least one class; logits has length 0 "
                         f"along axis {axis}")
    reduction = _check_reduction(reduction)
    label_smoothing = _check_label_smoothing(label_smoothing)
    ignore_index = _check_ignore_index(ignore_index)
    beta = _arrays.check_beta(beta)
    n_threads = _arrays.check_n_threads(n_threads)
    weight = _check_weight(weight, n_classes)
    target = _as_target(target)
    out = _arrays.check_out(out, x.shape, result_dtype) if want_grad else None

    if target.dtype.kind == "f":
        if target.shape != x.shape:
            raise ValueError(
                f"probability targets (floating dtype) must have the shape of logits "
                f"{x.shape}, got {target.shape}"
            )
        labels = None
        probs = _arrays.as_rows(target, axis, compute_dtype)
        normaliser = float(probs.shape[0])  # "mean" over samples, as torch
    else:
        if target.shape != batch_shape:
            raise ValueError(
                f"class-index targets (integer dtype) must have the shape of logits without "
                f"axis {axis}, {batch_shape}, got {target.shape}"
            )
        labels = _labels_for_kernel(target, n_classes, ignore_index)
        probs = None
        counted = labels[labels != _IGNORED]
        # "mean" divides by the total weight of the counted targets, as torch.
        normaliser = float(counted.size if weight is None else np.sum(weight[counted]))
        if reduction == "mean" and weight is not None and 0 < normaliser < sys.float_info.min:
            # Subnormal weights: 1 / normaliser would overflow to inf (and the gradient turn
            # to NaN).  "mean" is invariant under a common scaling of the weights, and a
            # power of two scales them up exactly: as far as brings the normaliser to
            # [1/2, 1), but not so far that the largest weight overflows.  (Only when
            # max(weight) / normaliser itself exceeds the float64 range does this fall short.)
            shift = min(-math.frexp(normaliser)[1], 1023 - math.frexp(np.max(weight))[1])
            weight = np.ldexp(weight, shift)
            normaliser = float(np.sum(weight[counted]))

    rows_count = math.prod(batch_shape)
    grad = None
    if want_grad:
        grad = out if out is not None else np.empty(x.shape, result_dtype)
    if rows_count == 0 or (reduction == "mean" and normaliser == 0):
        # Nothing counts: the documented exception to torch, 0.0 (not NaN) and zero gradient.
        if grad is not None:
            grad[...] = 0
        loss = np.zeros(batch_shape, result_dtype) if reduction == "none" else 0.0
        return loss, grad

    grad_scale = 1.0 / normaliser if reduction == "mean" else 1.0
    row_losses = np.empty(rows_count, np.float64)
    columns = None if labels is None else _arrays.as_columns(x, axis, compute_dtype)
    if columns is not None:
        # classes along a non-last axis of a C-contiguous array: tiles, no transposed copy
        buffer = direct = None
        if grad is not None:
            buffer, direct = _arrays.kernel_target(grad, compute_dtype, [columns], columns.shape)
        _arrays.specialised(kernels.cross_entropy_index_columns, compute_dtype)(
            columns, labels, weight, label_smoothing, beta, grad_scale, row_losses, buffer,
            _arrays.threads_for(n_threads, rows_count, n_classes))
        if grad is not None:
            _arrays.finish(grad, buffer, direct)
        return _reduce(row_losses, reduction, normaliser, result_dtype, batch_shape), grad

    rows = _arrays.as_rows(x, axis, compute_dtype)
    threads = _arrays.threads_for(n_threads, *rows.shape)
    buffer = direct = grad_rows = None
    if grad is not None:
        grad_rows = _arrays.axis_last(grad, axis)
        if probs is not None and np.may_share_memory(probs, grad):
            probs = probs.copy()  # the kernel reads each target row after writing its gradient
        buffer, direct = _arrays.kernel_target(grad_rows, compute_dtype, [rows], rows.shape)

    if labels is not None:
        _arrays.specialised(kernels.cross_entropy_index_rows, compute_dtype)(
            rows, labels, weight, label_smoothing, beta, grad_scale, row_losses, buffer, threads)
    else:
        _arrays.specialised(kernels.cross_entropy_prob_rows, compute_dtype)(
            rows, probs, weight, label_smoothing, beta, grad_scale, row_losses, buffer, threads)
    if grad is not None:
        _arrays.finish(grad_rows, buffer, direct)

    return _reduce(row_losses, reduction, normaliser, result_dtype, batch_shape), grad


def _reduce(row_losses, reduction, normaliser, result_dtype, batch_shape):
    """The loss from the per-row losses (a fresh float64 vector that this call owns)."""
    if reduction == "none":
        return row_losses.astype(result_dtype, copy=False).reshape(batch_shape)
    # np.sum of a contiguous float64 vector is pairwise in a fixed order: the same value for
    # every thread count.  np.add.reduce(v, None) is what np.sum(v) calls, without its
    # Python wrapper (1.5 us); and one row needs no sum at all: the sum of one term is the
    # term (a row's loss is never -0.0, the one value that adding to 0.0 would change).
    if row_losses.shape[0] == 1:
        total = float(row_losses[0])
    else:
        total = float(np.add.reduce(row_losses, None))
    return total / normaliser if reduction == "mean" else total


# The parameters shared by the three public functions, documented once.
_PARAMETERS = r"""logits : array_like
        Real scores of shape ``(..., C, ...)``, classes along ``axis`` (any layout; never
        modified).  float32 and float64 are computed natively, float16 in float32; bool
        and integers are converted to float64.
    target : array_like
        Either **class indices**: an integer array (any integer dtype) with the shape of
        ``logits`` without ``axis``, each in ``[0, C)`` or equal to ``ignore_index``; or
        **class probabilities**: a floating array with the shape of ``logits`` (converted
        to the compute dtype of ``logits``, used as given: not checked to sum to one).
        The dtype decides which.  bool targets are ambiguous and raise ``TypeError``.
    axis : int, optional
        The class axis of ``logits`` (``axis=1`` for PyTorch's ``(N, C, d1, ...)``
        layout).  Default -1.
    weight : array_like, optional
        Per-class weights :math:`w_c`, shape ``(C,)``, finite and non-negative.  Default:
        all ones.
    ignore_index : int, optional
        Class-index targets equal to it contribute neither loss nor gradient and are not
        counted by ``"mean"``.  Unused with probability targets.  Default -100.
    reduction : {"mean", "sum", "none"}, optional
        ``"none"``: per-sample losses; ``"sum"``: their sum; ``"mean"``: their sum
        divided by the total weight of the counted targets (index targets; their number
        without ``weight``) or by the number of samples (probability targets), as in
        :func:`torch.nn.functional.cross_entropy`.  Default ``"mean"``.
    label_smoothing : float, optional
        :math:`\varepsilon \in [0, 1]`: the target becomes
        :math:`(1 - \varepsilon)\,y + \varepsilon / C`.  Default 0.
    beta : float, optional
        Inverse temperature (finite): the loss is computed on ``beta * logits`` and the
        gradient, taken with respect to ``logits``, carries the factor ``beta``.
    n_threads : int, optional
        OpenMP threads for this call (default: :func:`get_num_threads`).  The results
        are bitwise identical for every value."""

_LOSS_RETURNS = r"""loss : float or ndarray
        A Python float for ``"mean"`` and ``"sum"``; for ``"none"`` an array of the shape
        of ``logits`` without ``axis`` in the result dtype of ``logits`` (float16,
        float32 or float64, as :func:`softmax`; ignored samples hold 0).  Always
        accumulated in float64."""

_GRAD_RETURNS = r"""grad : ndarray
        :math:`\partial\, \mathrm{loss} / \partial\, \mathrm{logits}`, of the shape and
        result dtype of ``logits``; ``out`` when given.  With ``"none"`` each sample's
        row is the gradient of its own loss (the gradient of ``loss.sum()``).  Ignored
        samples get zero rows."""

_OUT = r"""out : ndarray, optional
        Writable array of the gradient's shape and dtype to fill; it may be ``logits``
        itself (in place)."""

_NOTES = r"""For one sample with logits :math:`x \in \mathbb{R}^C`, :math:`z = \beta x`,
    :math:`p = \operatorname{softmax}(z)`, target :math:`y` (one-hot for a class index
    :math:`t`) and :math:`q = (1 - \varepsilon)\, y + \varepsilon / C`:

    .. math::

        \ell = \sum_c w_c\, q_c \bigl(\operatorname{logsumexp}(z) - z_c\bigr)
             = -\sum_c w_c\, q_c \log p_c,
        \qquad
        \frac{\partial \ell}{\partial x_c}
             = \beta \Bigl(p_c \sum_k w_k q_k - w_c\, q_c\Bigr),

    which is :math:`\beta\,(p - q)` without weights.  ``"mean"`` divides the sum over
    samples (and the gradient) by :math:`D = \sum_{i \text{ counted}} w_{t_i}` for index
    targets, :math:`D = N` for probability targets.

    Semantics are those of :func:`torch.nn.functional.cross_entropy` for every
    combination of options, with these documented differences:

    - when nothing counts (every target ignored, an empty batch, or :math:`D = 0`
      because the counted targets all have weight 0), ``"mean"`` gives ``0.0`` and a
      zero gradient instead of NaN;
    - a term with :math:`w_c q_c = 0` contributes 0 even where :math:`z_c = -\infty`
      (masked classes), where PyTorch gives NaN;
    - an ignored sample contributes exactly 0, even when its logits are NaN.

    A counted sample whose logits contain NaN or ``+inf``, or are all ``-inf``, gets a
    NaN loss and a NaN gradient row.

    Accuracy: the loss is :math:`\operatorname{log1p}(T) + (z_{\max} - z_t)` with
    :math:`T = \sum_{c \ne \max} e^{z_c - z_{\max}}` (a sum of non-negative terms,
    never the logarithm of a rounded probability), accurate to a few ULP even for
    confidently correct samples whose loss is far below machine epsilon (there the
    rounding of the exponents :math:`z_c - z_{\max}` is compensated); the gradient
    at the most probable class is formed from :math:`1 - p_{\max} = T / (1 + T)`, so
    it keeps its relative accuracy as :math:`p_t \to 1`.  Reductions are summed in
    float64 in a fixed order.  See :doc:`/derivations/cross-entropy` and
    :doc:`/numerics`."""


def _documented(function):
    """Fill the shared sections into a public docstring (skipped under ``python -OO``)."""
    if function.__doc__:
        function.__doc__ = function.__doc__.format(
            parameters=_PARAMETERS, loss_returns=_LOSS_RETURNS, grad_returns=_GRAD_RETURNS,
            out=_OUT, notes=_NOTES,
        )
    return function


@_documented
def cross_entropy(logits, target, axis=-1, *, weight=None, ignore_index=-100,
                  reduction="mean", label_smoothing=0.0, beta=1.0, n_threads=None):
    r"""Cross-entropy between ``softmax(beta * logits)`` along ``axis`` and a target.

    Parameters
    ----------
    {parameters}

    Returns
    -------
    {loss_returns}

    Raises
    ------
    IndexError
        A class index outside ``[0, C)`` that is not ``ignore_index``; the message gives
        how many there are and the first one's position and value.
    ValueError
        Wrong target or weight shape, negative or non-finite weights, ``C = 0``,
        ``label_smoothing`` outside ``[0, 1]``, an unknown ``reduction``.
    TypeError
        A target that is neither integer nor floating (bool, complex, ...).

    See Also
    --------
    cross_entropy_grad, cross_entropy_with_grad, log_softmax

    Notes
    -----
    {notes}

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxc
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> round(softmaxc.cross_entropy(logits, [0, 1]), 6)
    0.31854
    >>> softmaxc.cross_entropy(logits, [0, 1], reduction="none").round(6)
    array([0.41703, 0.22005])

    An ignored sample is not counted by the mean:

    >>> round(softmaxc.cross_entropy(logits, [0, -100]), 6)
    0.41703

    A confidently correct sample keeps its tiny loss (``log(p)`` would round to 0):

    >>> softmaxc.cross_entropy([[0.0, 40.0]], [1])
    4.248354255291589e-18
    """
    return _cross_entropy(logits, target, axis, weight, ignore_index, reduction,
                          label_smoothing, beta, n_threads, want_grad=False, out=None)[0]


@_documented
def cross_entropy_grad(logits, target, axis=-1, *, weight=None, ignore_index=-100,
                       reduction="mean", label_smoothing=0.0, beta=1.0, n_threads=None,
                       out=None):
    r"""Gradient of :func:`cross_entropy` with respect to ``logits``.

    Parameters
    ----------
    {parameters}
    {out}

    Returns
    -------
    {grad_returns}

    Raises
    ------
    IndexError, ValueError, TypeError
        As :func:`cross_entropy`; also ``ValueError`` for an ``out`` of the wrong shape
        or dtype, or read-only.

    See Also
    --------
    cross_entropy, cross_entropy_with_grad

    Notes
    -----
    {notes}

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxc
    >>> logits = np.array([[2.0, 1.0, 0.1]])
    >>> softmaxc.cross_entropy_grad(logits, [0])        # p - one_hot(0)
    array([[-0.34099886,  0.24243297,  0.09856589]])
    >>> softmaxc.softmax(logits) - [1.0, 0.0, 0.0]
    array([[-0.34099886,  0.24243297,  0.09856589]])
    >>> softmaxc.cross_entropy_grad([[0.0, 40.0]], [1])  # p_1 - 1, not rounded to 0
    array([[ 4.24835426e-18, -4.24835426e-18]])
    """
    return _cross_entropy(logits, target, axis, weight, ignore_index, reduction,
                          label_smoothing, beta, n_threads, want_grad=True, out=out)[1]


@_documented
def cross_entropy_with_grad(logits, target, axis=-1, *, weight=None, ignore_index=-100,
                            reduction="mean", label_smoothing=0.0, beta=1.0, n_threads=None,
                            out=None):
    r"""Both :func:`cross_entropy` and its gradient, from one pass over ``logits``.

    Cheaper than the two separate calls: each row of logits is read once by one kernel
    call, which writes the row's loss and its gradient row (already scaled by the
    ``"mean"`` normaliser, which depends on the targets only); no probability array is
    formed.  The results are bitwise those of the separate calls.

    Parameters
    ----------
    {parameters}
    {out}

    Returns
    -------
    {loss_returns}
    {grad_returns}

    Raises
    ------
    IndexError, ValueError, TypeError
        As :func:`cross_entropy_grad`.

    See Also
    --------
    cross_entropy, cross_entropy_grad

    Notes
    -----
    {notes}

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxc
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> loss, grad = softmaxc.cross_entropy_with_grad(logits, [0, 1])
    >>> round(loss, 6)
    0.31854
    >>> grad
    array([[-0.17049943,  0.12121649,  0.04928295],
           [ 0.05430187, -0.09876047,  0.04445861]])

    When the logits are not needed afterwards, the gradient can overwrite them:

    >>> loss, grad = softmaxc.cross_entropy_with_grad(logits, [0, 1], out=logits)
    >>> grad is logits
    True
    """
    return _cross_entropy(logits, target, axis, weight, ignore_index, reduction,
                          label_smoothing, beta, n_threads, want_grad=True, out=out)
