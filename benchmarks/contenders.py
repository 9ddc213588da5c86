"""What the benchmark times: softmaxc and the implementations it is compared with.

A contender turns one benchmark case (function, input arrays, thread count) into a
zero-argument callable, or ``None`` when it has no implementation of that function.
Everything a callable needs (input conversion, preallocated outputs, JIT compilation) is
prepared before timing; the callable does the work a user's call would do.

The peers:

- ``numpy``: the textbook stable formulas, hand-written: subtract the row maximum, exp,
  sum.  Elementwise results (softmax, log_softmax, the gradient) stay in the input dtype;
  the reductions that produce a log-sum-exp or a loss accumulate in float64.
- ``scipy``: ``scipy.special.softmax``, ``log_softmax`` and ``logsumexp`` (SciPy has no
  cross-entropy).
- ``torch``: ``torch.softmax``, ``torch.log_softmax``, ``torch.logsumexp`` and
  ``torch.nn.functional.cross_entropy`` on tensors sharing the NumPy memory.  For
  ``cross_entropy_with_grad`` it is autograd forward + backward: a leaf tensor with
  ``requires_grad``, the loss, ``loss.backward()``; the gradient is ``logits.grad``.
- ``jax`` (when installed): ``jax.nn`` / ``jax.scipy.special`` under ``jax.jit``, the
  gradient by ``jax.value_and_grad``.  XLA keeps its own thread pool, so the thread count
  of a case does not apply to it.

For the largest shape of a run, three more: ``softmaxc out=`` and ``torch out=`` write into
a preallocated output, and ``copy`` (``np.copyto`` of the input into an output of the same
size) is the memory-bandwidth floor of any function that reads the input once and writes a
result of the same size.  ``copy`` is not a softmax and is not checked against softmaxc.
"""

import importlib
from dataclasses import dataclass

import numpy as np

import softmaxc

FUNCTIONS = ("softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad")

# Functions whose result has the input's size (what out= and the copy baseline are about).
FULL_SIZE_RESULTS = ("softmax", "log_softmax", "cross_entropy_with_grad")


@dataclass(frozen=True)
class Inputs:
    """The arrays of one case: logits of `dtype`, and int64 class indices for the
    cross-entropy functions (the shape of `logits` without `axis`)."""

    logits: np.ndarray
    target: np.ndarray
    axis: int


def make_inputs(shape, axis, dtype, seed=0):
    rng = np.random.default_rng(seed)
    logits = (3.0 * rng.standard_normal(shape)).astype(dtype)
    target_shape = tuple(n for i, n in enumerate(shape) if i != axis % len(shape))
    target = rng.integers(0, shape[axis], size=target_shape, dtype=np.int64)
    return Inputs(logits, target, axis)


# --- softmaxc ------------------------------------------------------------------------------

def softmaxc_call(function, inputs, threads, out=None):
    x, axis = inputs.logits, inputs.axis
    if function == "logsumexp":
        return lambda: softmaxc.logsumexp(x, axis, n_threads=threads)
    if function in ("softmax", "log_softmax"):
        f = getattr(softmaxc, function)
        return lambda: f(x, axis, out=out, n_threads=threads)
    f = getattr(softmaxc, function)
    if function == "cross_entropy":
        return lambda: f(x, inputs.target, axis, n_threads=threads)
    return lambda: f(x, inputs.target, axis, out=out, n_threads=threads)


def softmaxc_out_call(function, inputs, threads):
    if function not in FULL_SIZE_RESULTS:
        return None
    return softmaxc_call(function, inputs, threads, out=np.empty_like(inputs.logits))


# --- NumPy, by hand ------------------------------------------------------------------------

def numpy_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def numpy_log_softmax(x, axis):
    z = x - x.max(axis=axis, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return z


def numpy_logsumexp(x, axis):
    m = x.max(axis=axis, keepdims=True)
    sums = np.exp(x - m).sum(axis=axis, keepdims=True, dtype=np.float64)
    return np.squeeze(m + np.log(sums), axis=axis)


def numpy_cross_entropy(x, target, axis):
    """Mean over rows of logsumexp(x) - x[target], accumulated in float64."""
    z = x - x.max(axis=axis, keepdims=True)
    log_sums = np.log(np.exp(z).sum(axis=axis, dtype=np.float64))
    picked = np.take_along_axis(z, np.expand_dims(target, axis), axis).squeeze(axis)
    return float(np.mean(log_sums - picked))


def numpy_cross_entropy_with_grad(x, target, axis):
    """The loss as above, and its gradient (softmax - one_hot) / n_rows."""
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    sums = e.sum(axis=axis, keepdims=True, dtype=np.float64)
    index = np.expand_dims(target, axis)
    loss = float(np.mean(np.log(sums) - np.take_along_axis(z, index, axis)))
    grad = e
    grad /= sums.astype(x.dtype)
    np.put_along_axis(grad, index, np.take_along_axis(grad, index, axis) - 1, axis)
    grad /= target.size
    return loss, grad


def numpy_call(function, inputs, threads):
    x, axis = inputs.logits, inputs.axis
    f = globals()[f"numpy_{function}"]
    if function.startswith("cross_entropy"):
        return lambda: f(x, inputs.target, axis)
    return lambda: f(x, axis)


def copy_call(function, inputs, threads):
    if function not in FULL_SIZE_RESULTS:
        return None
    x = inputs.logits
    out = np.empty_like(x)
    return lambda: np.copyto(out, x)


# --- SciPy ---------------------------------------------------------------------------------

def scipy_call(function, inputs, threads):
    if function.startswith("cross_entropy"):
        return None
    from scipy import special

    f = getattr(special, function)
    x, axis = inputs.logits, inputs.axis
    return lambda: f(x, axis=axis)


# --- PyTorch -------------------------------------------------------------------------------

def torch_call(function, inputs, threads):
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(inputs.logits)   # shares memory: no copy at call time
    target = torch.from_numpy(inputs.target)
    axis = inputs.axis
    if function == "softmax":
        return lambda: torch.softmax(x, axis)
    if function == "log_softmax":
        return lambda: torch.log_softmax(x, axis)
    if function == "logsumexp":
        return lambda: torch.logsumexp(x, axis)

    def class_axis_second(t):   # F.cross_entropy takes the classes on dim 1
        return t.movedim(axis, 1) if t.ndim > 1 else t

    if function == "cross_entropy":
        return lambda: F.cross_entropy(class_axis_second(x), target)

    def forward_backward():
        leaf = torch.from_numpy(inputs.logits).requires_grad_()
        loss = F.cross_entropy(class_axis_second(leaf), target)
        loss.backward()
        return loss.detach(), leaf.grad

    return forward_backward


def torch_out_call(function, inputs, threads):
    if function not in ("softmax", "log_softmax"):
        return None
    import torch

    x = torch.from_numpy(inputs.logits)
    out = torch.empty_like(x)
    f = getattr(torch, function)
    return lambda: f(x, inputs.axis, out=out)


# --- JAX -----------------------------------------------------------------------------------

def jax_call(function, inputs, threads):
    import jax
    import jax.numpy as jnp

    axis = inputs.axis
    x = jax.device_put(inputs.logits)
    target = jax.device_put(inputs.target)

    def loss(logits, target):
        log_p = jax.nn.log_softmax(logits, axis=axis)
        index = jnp.expand_dims(target, axis)
        return -jnp.mean(jnp.take_along_axis(log_p, index, axis))

    if function == "softmax":
        f = jax.jit(lambda x: jax.nn.softmax(x, axis=axis))
    elif function == "log_softmax":
        f = jax.jit(lambda x: jax.nn.log_softmax(x, axis=axis))
    elif function == "logsumexp":
        from jax.scipy.special import logsumexp

        f = jax.jit(lambda x: logsumexp(x, axis=axis))
    elif function == "cross_entropy":
        f = jax.jit(lambda x: loss(x, target))
    else:
        f = jax.jit(lambda x: jax.value_and_grad(loss)(x, target))
    return lambda: jax.block_until_ready(f(x))


def _jax_setup(jax):
    jax.config.update("jax_enable_x64", True)   # float64 cases stay float64


# --- the registry --------------------------------------------------------------------------

@dataclass(frozen=True)
class Contender:
    name: str
    label: str                 # column heading in the table and legend in the chart
    make_call: object          # (function, inputs, threads) -> callable or None
    module: str = ""           # optional dependency; the contender is skipped without it
    compare_with: str = "softmaxc"   # ratio = time(compare_with) / time(this); None: no ratio
    largest_shape_only: bool = False
    verified: bool = True      # False only for the copy baseline (not a softmax)
    setup: object = None       # called once with the imported module


CONTENDERS = (
    Contender("softmaxc", "softmaxc", softmaxc_call, compare_with=None),
    Contender("numpy", "NumPy", numpy_call),
    Contender("scipy", "SciPy", scipy_call, module="scipy.special"),
    Contender("torch", "PyTorch", torch_call, module="torch"),
    Contender("jax", "JAX", jax_call, module="jax", setup=_jax_setup),
    Contender("softmaxc_out", "softmaxc out=", softmaxc_out_call, compare_with=None,
              largest_shape_only=True),
    Contender("torch_out", "PyTorch out=", torch_out_call, module="torch",
              compare_with="softmaxc_out", largest_shape_only=True),
    Contender("copy", "copy (np.copyto)", copy_call, compare_with="softmaxc_out",
              largest_shape_only=True, verified=False),
)


def available_contenders():
    """(name -> Contender for those importable here, name -> reason for those that are not)."""
    usable, missing = {}, {}
    for contender in CONTENDERS:
        if contender.module:
            try:
                module = importlib.import_module(contender.module)
            except ImportError as exc:
                missing[contender.name] = f"not installed ({exc})"
                continue
            if contender.setup is not None:
                contender.setup(module)
        usable[contender.name] = contender
    return usable, missing


# --- checking results before timing --------------------------------------------------------

# A contender agrees when |result - softmaxc| <= RTOL * (|softmaxc| + max|softmaxc|): loose
# enough for float32 peers that round differently, tight enough to catch a wrong formula,
# axis, normalisation or dtype.
RTOL = {"float32": 1e-4, "float64": 1e-10}


def as_numpy(result):
    """A contender's result as NumPy arrays / floats (tuples stay tuples)."""
    if isinstance(result, tuple):
        return tuple(as_numpy(part) for part in result)
    if hasattr(result, "detach"):           # torch.Tensor
        result = result.detach().numpy()
    return np.asarray(result, dtype=np.float64)


def disagreement(result, reference, dtype):
    """None when `result` agrees with the softmaxc `reference`, else a description."""
    result, reference = as_numpy(result), as_numpy(reference)
    if isinstance(reference, tuple):
        if not isinstance(result, tuple) or len(result) != len(reference):
            return "result has a different structure from softmaxc's"
        for part, (mine, theirs) in enumerate(zip(result, reference)):
            problem = disagreement(mine, theirs, dtype)
            if problem:
                return f"part {part}: {problem}"
        return None
    if isinstance(result, tuple) or result.shape != reference.shape:
        return f"shape {np.shape(result)} differs from softmaxc's {reference.shape}"
    scale = np.max(np.abs(reference), initial=0.0)
    error = np.abs(result - reference)
    allowed = RTOL[dtype] * (np.abs(reference) + scale)
    if not np.all(error <= allowed):   # NaN fails too
        return f"max |difference| {np.nanmax(error):.3g} exceeds tolerance (rtol {RTOL[dtype]})"
    return None
