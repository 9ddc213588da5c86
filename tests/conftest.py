"""Fixtures shared by the whole test suite.  Reference implementations live in
tests/oracles.py (NumPy float64) and tests/accuracy.py (mpmath)."""

import numpy as np
import pytest

import softmaxc


@pytest.fixture
def rng():
    """A fixed-seed generator, fresh for each test (tests stay independent of order)."""
    return np.random.default_rng(12345)


@pytest.fixture
def restore_num_threads():
    """Undo any softmaxc.set_num_threads made by the test."""
    from softmaxc import _config

    saved = _config._default_threads
    yield
    softmaxc.set_num_threads(saved)
