"""Threads: concurrent Python callers, thread-count invariance, threadpoolctl, fork safety.

Every check that could hang (fork with a live OpenMP pool) or that needs a pristine
process (counting the OS threads OpenMP starts) runs in a child interpreter with a timeout.
"""

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import softmaxc
from softmaxc._runtime import OPENMP_ENABLED

threadpoolctl = pytest.importorskip("threadpoolctl")

needs_openmp = pytest.mark.skipif(not OPENMP_ENABLED, reason="softmaxc built without OpenMP")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def workload(rng):
    """Inputs big enough that every function really runs on several threads (rows * n
    above _arrays.MIN_PARALLEL_ELEMENTS), with rows longer than one pairwise block."""
    x = rng.standard_normal((96, 700)) * 5
    x[3, 10] = np.nan
    x[5] += 40 * (np.arange(700) == 7)         # confidently correct row (compensated path)
    labels = rng.integers(0, 700, 96)
    labels[5] = 7
    labels[::11] = -100
    probs = softmaxc.softmax(rng.standard_normal((96, 700)))
    grad = rng.standard_normal((96, 700))
    where = rng.random((96, 700)) > 0.2
    small = rng.standard_normal((48, 60))        # Jacobian: 48 * 60 * 60 entries
    return x.astype(np.float32), x, labels, probs, grad, where, small


def all_calls(data, n_threads):
    """Every public function (several option sets), as name -> result arrays."""
    x32, x, labels, probs, grad, where, small = data
    kw = {"n_threads": n_threads}
    ce = {"weight": np.linspace(0.5, 2, 700), "label_smoothing": 0.1, **kw}
    results = {
        "softmax": softmaxc.softmax(x, **kw),
        "softmax_f32_where": softmaxc.softmax(x32, where=where, beta=-0.7, **kw),
        "log_softmax": softmaxc.log_softmax(x, beta=1.3, **kw),
        "log_softmax_f32": softmaxc.log_softmax(x32, **kw),
        "logsumexp": softmaxc.logsumexp(x, where=where, **kw),
        "logsumexp_axis0": softmaxc.logsumexp(x32, axis=0, **kw),
        "softmax_jacobian": softmaxc.softmax_jacobian(small, beta=2.0, **kw),
        "softmax_backward": softmaxc.softmax_backward(grad, probs, **kw),
        "log_softmax_backward": softmaxc.log_softmax_backward(grad, np.log(probs), **kw),
        "cross_entropy_none": softmaxc.cross_entropy(x, labels, reduction="none", **kw),
        "cross_entropy_mean": np.float64(softmaxc.cross_entropy(x, labels, **ce)),
        "cross_entropy_prob": np.float64(softmaxc.cross_entropy(x32, probs, **kw)),
        "cross_entropy_grad": softmaxc.cross_entropy_grad(x, labels, beta=0.5, **ce),
        "cross_entropy_grad_prob": softmaxc.cross_entropy_grad(x32, probs, **kw),
    }
    loss, grad_out = softmaxc.cross_entropy_with_grad(x, labels, reduction="sum", **kw)
    results["cross_entropy_with_grad"] = np.append(grad_out.ravel(), loss)
    return results


def as_bytes(results):
    return {name: np.asarray(value).tobytes() for name, value in results.items()}


@pytest.fixture(scope="module")
def data():
    return workload(np.random.default_rng(2024))


@pytest.fixture(scope="module")
def serial(data):
    return as_bytes(all_calls(data, 1))


@needs_openmp
@pytest.mark.parametrize("n_threads", [2, 3, 8])
def test_thread_count_gives_bitwise_identical_results(data, serial, n_threads):
    assert as_bytes(all_calls(data, n_threads)) == serial


def test_eight_python_threads_get_the_serial_results(data, serial):
    """Eight Python threads call every function at once (the GIL is released in the
    kernels, so the calls really overlap), each with its own thread count."""
    def worker(index):
        return [as_bytes(all_calls(data, [None, 1, 2, 3][index % 4])) for _ in range(3)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(worker, range(8)))
    for repeats in outcomes:
        for results in repeats:
            assert results == serial


def test_concurrent_out_buffers_are_independent(data):
    """Threads writing their own out= buffers from shared inputs."""
    x = data[1]
    expected = softmaxc.softmax(x, n_threads=1).tobytes()

    def worker(_):
        out = np.empty_like(x)
        for _ in range(5):
            softmaxc.softmax(x, out=out, n_threads=2)
            if out.tobytes() != expected:
                return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(worker, range(8)))


def run_child(code, timeout=120, env=None):
    """Run `code` in a fresh interpreter importing this checkout's softmaxc; fails (rather
    than hangs) after `timeout` seconds."""
    environment = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    try:
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                                env=environment, capture_output=True, text=True,
                                timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"child process hung (killed after {timeout} s): {exc.stdout!r}")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


OS_THREADS = """
import os
import numpy as np
import softmaxc
import threadpoolctl

def os_threads():
    return len(os.listdir("/proc/self/task"))

x = np.random.default_rng(0).standard_normal((256, 1000))
before = os_threads()
with threadpoolctl.threadpool_limits(1):
    assert softmaxc.get_num_threads() == 1
    softmaxc.softmax(x)
    softmaxc.cross_entropy(x, np.zeros(256, np.int64))
print("limited", os_threads() - before)
softmaxc.softmax(x, n_threads=3)
print("three", os_threads() - before)
"""


@needs_openmp
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_threadpool_limits_is_honoured_by_the_kernels():
    """Under threadpool_limits(1) a big call starts no OpenMP thread at all; with
    n_threads=3 the runtime starts exactly two workers (counted by the OS)."""
    output = run_child(OS_THREADS, env={"OMP_NUM_THREADS": "4"})
    assert output.split() == ["limited", "0", "three", "2"]


@needs_openmp
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer reserves more address space than the test's limit")
def test_huge_n_threads_is_capped():
    """n_threads far beyond what the OS can start: libgomp would end the process when
    thread creation fails; softmaxc caps the team (_arrays.MAX_THREADS)."""
    output = run_child("""
        import resource
        import numpy as np
        import softmaxc
        from softmaxc import _arrays
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
        x = np.zeros((20000, 2))
        assert _arrays.threads_for(10**6, 20000, 2) == _arrays.MAX_THREADS
        p = softmaxc.softmax(x, n_threads=10**6)
        print((p == 0.5).all())
    """)
    assert output.strip() == "True"


FORK = """
import multiprocessing
import os
import sys
import numpy as np
import softmaxc
sys.path.insert(0, {root!r})
from tests.test_threads import all_calls, as_bytes, workload


def child_check(data, expected, queue=None):
    threads = softmaxc.get_num_threads()
    ok = (as_bytes(all_calls(data, 2)) == expected
          and as_bytes(all_calls(data, None)) == expected)
    if queue is not None:
        queue.put((ok, threads))
    return ok, threads


if __name__ == "__main__":
    method = sys.argv[1]
    data = workload(np.random.default_rng(2024))
    expected = as_bytes(all_calls(data, 1))
    all_calls(data, 2)   # the parent's OpenMP thread pool is now running
    if method == "os.fork":
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            ok, threads = child_check(data, expected)
            os.write(write, str(threads).encode())
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        threads = int(os.read(read, 100))
    else:
        context = multiprocessing.get_context(method)
        queue = context.Queue()
        process = context.Process(target=child_check, args=(data, expected, queue))
        process.start()
        ok, threads = queue.get(timeout=100)
        assert ok
        process.join(timeout=100)
        assert process.exitcode == 0
    # The parent still runs in parallel after forking.
    assert as_bytes(all_calls(data, 2)) == expected
    print("ok", method, "child_threads", threads)
"""


@pytest.mark.parametrize("method", ["os.fork", "fork", "forkserver", "spawn"])
def test_child_processes_finish_correctly(method, tmp_path):
    """A child forked after the parent ran parallel kernels would wait forever for
    libgomp's thread pool; softmaxc makes such children serial (_config.serial_only), so
    they finish with the exact results.  forkserver and spawn children did not inherit a
    pool and keep their threads."""
    if method != "spawn" and not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    forked = method in ("os.fork", "fork")
    parallel_default = softmaxc.get_num_threads()
    script = tmp_path / "fork_check.py"
    script.write_text(FORK.format(root=ROOT))
    result = subprocess.run([sys.executable, str(script), method], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    child_threads = 1 if forked else parallel_default
    assert result.stdout.split() == ["ok", method, "child_threads", str(child_threads)]
