"""softmaxc: exact and fast softmax, log-softmax, logsumexp and cross-entropy for NumPy.

Compiled Cython kernels (OpenMP over rows, GIL released) behind a NumPy-style API.
"""

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("softmaxc")
except PackageNotFoundError:  # pragma: no cover - running from an unbuilt source tree
    __version__ = "0+unknown"

from softmaxc._config import get_num_threads, set_num_threads, show_config
from softmaxc._cross_entropy import cross_entropy, cross_entropy_grad, cross_entropy_with_grad
from softmaxc._softmax import log_softmax, logsumexp, softmax
from softmaxc._derivatives import log_softmax_backward, softmax_backward, softmax_jacobian
from softmaxc._derivatives import DEFAULT_JACOBIAN_MAX_BYTES as _DEFAULT_JACOBIAN_MAX_BYTES
from softmaxc import testing

#: Largest result, in bytes, that :func:`softmax_jacobian` allocates (default 1 GiB; a
#: larger one raises ValueError).  Assign to change it, e.g. ``math.inf`` for no limit.
JACOBIAN_MAX_BYTES = _DEFAULT_JACOBIAN_MAX_BYTES

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "softmax_jacobian",
    "softmax_backward",
    "log_softmax_backward",
    "JACOBIAN_MAX_BYTES",
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_with_grad",
    "set_num_threads",
    "get_num_threads",
    "show_config",
]
