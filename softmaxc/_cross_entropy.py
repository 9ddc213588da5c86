"""Public cross-entropy, its gradient, and both at once (layer 3: validate, allocate, document).

Everything the kernels rely on is established here first, with vectorised NumPy: labels in
range (or ignored), weights finite and non-negative, shapes, dtypes, `out=`, and the
"mean" normaliser, which depends on the targets only, so the kernel can scale gradient
rows in the same pass that computes them.
"""

import math
import operator

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
    if np.ndim(label_smoothing) != 0 or isinstance(
        label_smoothing, (str, bytes, complex, np.complexfloating)
    ):
        raise TypeError(f"label_smoothing must be a real scalar, got {label_smoothing!r}")
    label_smoothing = float(label_smoothing)
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
    arr = np.asarray(target)
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
        position = tuple(int(i) for i in np.unravel_index(first, target.shape))
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

    rows = _arrays.as_rows(x, axis, compute_dtype)
    grad_scale = 1.0 / normaliser if reduction == "mean" else 1.0
    row_losses = np.empty(rows.shape[0], np.float64)
    threads = _arrays.threads_for(n_threads, *rows.shape)
    buffer = direct = grad_rows = None
    if grad is not None:
        grad_rows = np.moveaxis(grad, axis, -1)
        if probs is not None and np.may_share_memory(probs, grad):
            probs = probs.copy()  # the kernel reads each target row after writing its gradient
        buffer, direct = _arrays.kernel_target(grad_rows, compute_dtype, [rows], rows.shape)

    if labels is not None:
        kernels.cross_entropy_index_rows(rows, labels, weight, label_smoothing, beta,
                                         grad_scale, row_losses, buffer, threads)
    else:
        kernels.cross_entropy_prob_rows(rows, probs, weight, label_smoothing, beta,
                                        grad_scale, row_losses, buffer, threads)
    if grad is not None:
        _arrays.finish(grad_rows, buffer, direct)

    if reduction == "none":
        loss = row_losses.astype(result_dtype).reshape(batch_shape)
    else:
        # np.sum of a contiguous float64 vector is pairwise in a fixed order: the same
        # value for every thread count.
        total = float(np.sum(row_losses))
        loss = total / normaliser if reduction == "mean" else total
    return loss, grad
