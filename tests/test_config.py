"""set_num_threads / get_num_threads / show_config."""

import os
import subprocess
import sys

import numpy as np
import pytest

import softmaxc
from softmaxc._runtime import OPENMP_ENABLED

threadpoolctl = pytest.importorskip("threadpoolctl")

needs_openmp = pytest.mark.skipif(not OPENMP_ENABLED, reason="softmaxc built without OpenMP")


def test_set_and_get_num_threads(restore_num_threads):
    softmaxc.set_num_threads(3)
    assert softmaxc.get_num_threads() == 3
    softmaxc.set_num_threads(np.int64(1))
    assert softmaxc.get_num_threads() == 1
    softmaxc.set_num_threads(None)
    assert softmaxc.get_num_threads() >= 1


def test_set_num_threads_is_the_default_of_calls(restore_num_threads, rng):
    x = rng.standard_normal((64, 1000))
    expected = softmaxc.softmax(x, n_threads=1)
    softmaxc.set_num_threads(2)
    assert softmaxc.softmax(x).tobytes() == expected.tobytes()


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                        (True, TypeError), ("2", TypeError)])
def test_set_num_threads_rejects(bad, error, restore_num_threads):
    before = softmaxc.get_num_threads()
    with pytest.raises(error):
        softmaxc.set_num_threads(bad)
    assert softmaxc.get_num_threads() == before


@needs_openmp
def test_threadpool_limits_is_honoured(restore_num_threads):
    softmaxc.set_num_threads(None)
    with threadpoolctl.threadpool_limits(1):
        assert softmaxc.get_num_threads() == 1
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert softmaxc.get_num_threads() == 1


def test_set_num_threads_takes_precedence_over_threadpool_limits(restore_num_threads):
    softmaxc.set_num_threads(2)
    with threadpoolctl.threadpool_limits(1):
        assert softmaxc.get_num_threads() == 2


@needs_openmp
@pytest.mark.parametrize("omp_num_threads", ["1", "3"])
def test_omp_num_threads_is_honoured(omp_num_threads):
    env = dict(os.environ, OMP_NUM_THREADS=omp_num_threads)
    code = "import softmaxc; print(softmaxc.get_num_threads())"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True, cwd=os.getcwd())
    assert result.stdout.strip() == omp_num_threads


def test_show_config(capsys, restore_num_threads):
    softmaxc.set_num_threads(3)
    assert softmaxc.show_config() is None
    text = capsys.readouterr().out
    assert softmaxc.__version__ in text.splitlines()[0]
    assert f"OpenMP:         {'enabled' if OPENMP_ENABLED else 'DISABLED'}" in text
    assert "threads:        3 (set_num_threads)" in text
    assert "-ffast-math" not in text and "-Ofast" not in text
    assert np.__version__ in text
