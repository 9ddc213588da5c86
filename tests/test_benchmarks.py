"""The benchmark suite (benchmarks/run.py) runs, checks its contenders and writes its
results.  Nothing here asserts anything about speed."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import softmaxc

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
pytestmark = pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="not run from a source checkout")

FUNCTIONS = ["softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_with_grad"]


@pytest.fixture
def bench(monkeypatch):
    """The benchmark's modules, imported the way run.py imports them (as siblings)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    # run.py sets OMP_WAIT_POLICY when unset; keep that out of the other tests' environment
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    import contenders
    import run

    return run, contenders


def quick_run(bench, tmp_path, capsys, *options):
    """run.py's main in --quick mode, results into tmp_path: (stdout, stderr)."""
    run, _ = bench
    assert run.main(["--quick", "--min-time", "0", "--repeats", "2",
                     "--json", str(tmp_path / "results.json"), *options]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_script_runs_as_a_script():
    """run.py imports its sibling modules when started as `python benchmarks/run.py`."""
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(softmaxc.__file__).parent.parent))
    completed = subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), "--help"],
                               env=env, capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    assert "--functions" in completed.stdout


def test_quick_run_writes_results_and_chart(bench, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    chart = tmp_path / "chart.png"
    out, err = quick_run(bench, tmp_path, capsys, "--shapes", "3x7,2x5x3:1",
                         "--dtypes", "float32,float64", "--threads", "1", "--chart", str(chart))
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[20/20] cross_entropy_with_grad 2x5x3:1 float64 threads=1" in err
    assert "softmaxc time / peer time" in out

    document = json.loads((tmp_path / "results.json").read_text())
    assert document["schema_version"] == 1
    machine = document["machine"]
    assert machine["cpu_count"] >= 1 and machine["cpu_model"]
    assert machine["versions"]["numpy"] == np.__version__
    assert pathlib.Path(machine["softmaxc_path"]) == pathlib.Path(softmaxc.__file__).parent
    assert any("OpenMP" in line for line in machine["softmaxc_config"])
    assert machine["environment"]["OMP_WAIT_POLICY"]
    assert document["settings"]["shapes"] == [{"shape": [3, 7], "axis": -1},
                                              {"shape": [2, 5, 3], "axis": 1}]

    cases = document["cases"]
    assert len(cases) == 5 * 2 * 2
    assert {(c["function"], tuple(c["shape"]), c["dtype"], c["threads"]) for c in cases} == {
        (f, s, d, 1) for f in FUNCTIONS for s in [(3, 7), (2, 5, 3)]
        for d in ["float32", "float64"]
    }
    contenders = document["contenders"]
    for case in cases:
        assert case["rejected"] == {}, case
        assert {"softmaxc", "numpy"} <= set(case["results"])
        for result in case["results"].values():
            assert result["median_s"] > 0 and result["best_s"] <= result["median_s"]
            assert result["samples"] >= 2 and result["calls_per_sample"] >= 1
        for name, ratio in case["ratios"].items():
            reference = case["results"][contenders[name]["compared_with"]]["median_s"]
            assert ratio == pytest.approx(reference / case["results"][name]["median_s"])
        # the largest shape (by size: 2x5x3) also times the preallocated outputs and a copy
        assert case["largest_shape"] == (case["shape"] == [2, 5, 3])
        preallocated = case["function"] in ("softmax", "log_softmax", "cross_entropy_with_grad")
        assert ("copy" in case["results"]) == (case["largest_shape"] and preallocated)
        if case["largest_shape"]:
            assert case["results"]["softmaxc"]["peak_bytes"] > 0
    for check in document["targets"]:   # the issue-6 targets that apply, met or not
        assert check["met"] == (check["ratio"] <= check["limit"])
    if contenders["torch"]["available"]:
        assert any(check["target"] == "<= 0.75x PyTorch" for check in document["targets"])


def test_issue_3_options_without_chart(bench, tmp_path, capsys):
    table, _ = quick_run(bench, tmp_path, capsys, "--functions", "cross_entropy_with_grad",
                         "--shapes", "4x10", "--dtypes", "float32,float64", "--threads", "1,2",
                         "--chart", str(tmp_path / "chart.png"), "--no-chart")
    assert not (tmp_path / "chart.png").exists()
    document = json.loads((tmp_path / "results.json").read_text())
    assert [(c["dtype"], c["threads"]) for c in document["cases"]] == [
        ("float32", 1), ("float64", 1), ("float32", 2), ("float64", 2)]
    assert "NumPy" in table
    if document["contenders"]["torch"]["available"]:
        assert all("torch" in case["ratios"] for case in document["cases"])
        assert "autograd forward + backward" in table


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape, axis", [((5, 9), -1), ((3, 6, 4), 1)], ids=["last", "axis1"])
def test_every_contender_computes_what_softmaxc_computes(bench, function, dtype, shape, axis):
    """Each peer's implementation, compared with softmaxc here with its own tolerance (not
    the benchmark's check)."""
    _, contenders = bench
    usable, _ = contenders.available_contenders()
    inputs = contenders.make_inputs(shape, axis, dtype)
    expected = contenders.as_numpy(usable["softmaxc"].make_call(function, inputs, 1)())
    rtol = 1e-5 if dtype == "float32" else 1e-12
    for name, contender in usable.items():
        call = contender.make_call(function, inputs, 1)
        if call is None or not contender.verified:
            continue
        result = contenders.as_numpy(call())
        pairs = zip(result, expected) if isinstance(expected, tuple) else [(result, expected)]
        for got, want in pairs:   # (loss, grad) for cross_entropy_with_grad
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max(),
                                       err_msg=name)


def test_a_wrong_or_failing_contender_is_reported_and_not_timed(bench):
    run, contenders = bench
    usable, _ = contenders.available_contenders()

    def unnormalised(function, inputs, threads):   # softmax without the division
        return lambda: np.exp(inputs.logits - inputs.logits.max(axis=-1, keepdims=True))

    def wrong_axis(function, inputs, threads):
        return lambda: softmaxc.softmax(inputs.logits, axis=0)

    def transposed(function, inputs, threads):
        return lambda: softmaxc.softmax(inputs.logits).T

    def crashing(function, inputs, threads):
        return lambda: 1 / 0

    candidates = {
        "softmaxc": usable["softmaxc"],
        "numpy": usable["numpy"],
        **{f.__name__: contenders.Contender(f.__name__, f.__name__, f)
           for f in (unnormalised, wrong_axis, transposed, crashing)},
    }
    case = run.Case("softmax", (4, 6), -1, "float32", 1, largest_shape=False)
    settings = run.parse_args(["--quick", "--min-time", "0", "--repeats", "1"])
    record = run.run_case(case, contenders.make_inputs((4, 6), -1, "float32"), candidates,
                          settings)
    assert set(record["results"]) == {"softmaxc", "numpy"}
    assert set(record["ratios"]) == {"numpy"}
    assert "disagrees with softmaxc" in record["rejected"]["unnormalised"]
    assert "exceeds tolerance" in record["rejected"]["wrong_axis"]
    assert "shape (6, 4) differs" in record["rejected"]["transposed"]
    assert "ZeroDivisionError" in record["rejected"]["crashing"]


def test_agreement_check(bench):
    _, contenders = bench
    p = softmaxc.softmax(np.array([[1.0, 2.0, 3.0]], dtype=np.float32))
    assert contenders.disagreement(p * (1 + 1e-6), p, "float32") is None
    assert contenders.disagreement(p * (1 + 1e-3), p, "float32") is not None
    assert contenders.disagreement(np.where(p > 0.5, np.nan, p), p, "float32") is not None
    assert contenders.disagreement((1.0, p), (1.0, p), "float32") is None
    assert contenders.disagreement((1.1, p), (1.0, p), "float64") is not None


def test_shape_option(bench):
    run, _ = bench
    assert run.parse_shape("64x1000x16:1") == ((64, 1000, 16), 1)
    assert run.parse_shape("256x1000") == ((256, 1000), -1)
    for bad in ("256x", "0x4", "4x4:2", "axb"):
        with pytest.raises(Exception, match="bad shape"):
            run.parse_shape(bad)
