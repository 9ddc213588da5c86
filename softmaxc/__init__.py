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

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_with_grad",
    "set_num_threads",
    "get_num_threads",
    "show_config",
]
