"""Benchmark softmaxc against hand-written NumPy, scipy.special, PyTorch and JAX.

    python benchmarks/run.py                      # the full suite (a few minutes)
    python benchmarks/run.py --quick              # small shapes, short timings
    python benchmarks/run.py --functions cross_entropy_with_grad \\
        --shapes 256x1000,64x32000 --dtypes float32,float64 --threads 1,2

For every case (function x shape x dtype x thread count) each contender is called once
and its result checked against softmaxc's: a contender that disagrees is reported and not
timed.  Then the contenders take turns (round-robin) until each has had about
--min-time seconds; the table gives medians and the ratio softmaxc time / peer time
(below 1: softmaxc is faster).  Progress goes to stderr, the table to stdout, all figures
to a JSON file and a chart.  It times the softmaxc that `import softmaxc` finds (its path
is printed first): run with PYTHONPATH=. to time an in-place build of this checkout.
"""

import argparse
import sys
import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import _environment  # noqa: F401  (first: sets OMP_WAIT_POLICY before OpenMP loads)
import contenders as registry
import report
import timing
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "latest.json"
DEFAULT_CHART = HERE.parent / "docs" / "_static" / "benchmark.png"

# NAME x NAME [x ...] with an optional ":AXIS" (default: the last axis).
DEFAULT_SHAPES = "1x1000,256x1000,64x32000,8192x4096,32x128256,64x1000x16:1"
QUICK_SHAPES = "1x1000,256x1000,64x1000x16:1"


@dataclass(frozen=True)
class Case:
    function: str
    shape: tuple
    axis: int
    dtype: str
    threads: int
    largest_shape: bool   # the largest shape of the run also times the out= variants

    @property
    def label(self):
        return (f"{self.function} {report.shape_label(self.shape, self.axis)} "
                f"{self.dtype} threads={self.threads}")


def parse_shape(text):
    """'64x1000x16:1' -> ((64, 1000, 16), 1); '256x1000' -> ((256, 1000), -1)."""
    dims, _, axis = text.strip().partition(":")
    try:
        shape = tuple(int(n) for n in dims.lower().split("x"))
        axis = int(axis) if axis else -1
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: write e.g. 256x1000 or "
                                         "64x1000x16:1 (':1' = class axis 1)") from None
    if not shape or min(shape) < 1 or not -len(shape) <= axis < len(shape):
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: positive sizes, a valid axis")
    return shape, axis


def comma_list(parse, choices=None):
    def parse_list(text):
        items = [parse(item) for item in text.split(",") if item.strip()]
        for item in items:
            if choices is not None and item not in choices:
                raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(choices)}")
        return items
    return parse_list


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Shapes are written 256x1000; append :AXIS for another class axis "
               f"(64x1000x16:1). Default shapes: {DEFAULT_SHAPES}; with --quick: "
               f"{QUICK_SHAPES}.",
    )
    parser.add_argument("--functions", type=comma_list(str.strip, registry.FUNCTIONS),
                        default=list(registry.FUNCTIONS), help="comma-separated (default: all)")
    parser.add_argument("--shapes", type=comma_list(parse_shape), default=None,
                        help="comma-separated shapes (default: the list below)")
    parser.add_argument("--dtypes", type=comma_list(str.strip, ("float32", "float64")),
                        default=["float32", "float64"], help="comma-separated (default: both)")
    parser.add_argument("--threads", type=comma_list(int), default=[1, 2],
                        help="thread counts for softmaxc and PyTorch (default: 1,2)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="minimum samples per contender and case (default 3; quick 2)")
    parser.add_argument("--min-time", type=float, default=None,
                        help="seconds of timing per contender and case, on average "
                             "(default 0.2; quick 0.02)")
    parser.add_argument("--quick", action="store_true",
                        help="short timings; without --shapes, only the small shapes")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH",
                        help=f"where to write the results (default {DEFAULT_JSON})")
    parser.add_argument("--chart", type=Path, default=DEFAULT_CHART, metavar="PATH",
                        help=f"where to draw the chart (default {DEFAULT_CHART})")
    parser.add_argument("--no-chart", action="store_true", help="do not draw the chart")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory measurement on the largest shape")
    args = parser.parse_args(argv)
    if args.shapes is None:
        args.shapes = [parse_shape(s) for s in (QUICK_SHAPES if args.quick else
                                                 DEFAULT_SHAPES).split(",")]
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    if args.min_time is None:
        args.min_time = 0.02 if args.quick else 0.2
    args.memory = not args.no_memory
    args.min_sample_time = timing.MIN_SAMPLE_SECONDS / (10 if args.quick else 1)
    if min(args.threads) < 1:
        parser.error("--threads: thread counts must be positive")
    return args


def progress(message):
    print(message, file=sys.stderr, flush=True)


@contextmanager
def thread_limit(threads):
    """Every thread pool in the process (OpenMP, BLAS; PyTorch's own) limited to `threads`.
    softmaxc also gets n_threads=threads in each call."""
    torch = sys.modules.get("torch")
    saved = torch.get_num_threads() if torch else None
    with threadpool_limits(limits=threads):
        if torch:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch:
                torch.set_num_threads(saved)


def call_once(call, measure_memory):
    """(result, peak bytes allocated during the call or None).  The peak includes the
    result and is what tracemalloc sees: NumPy array data and Python objects, not
    PyTorch's or XLA's allocators."""
    if not measure_memory:
        return call(), None
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


MEMORY_CONTENDERS = ("softmaxc", "softmaxc_out", "numpy", "scipy")


def checked_calls(case, inputs, contenders, measure_memory=False):
    """The calls of the contenders that agree with softmaxc on this case, the reason for
    each that does not or cannot run, and (with `measure_memory`) the peak memory of the
    MEMORY_CONTENDERS.  Each contender is called once here: that is also its warm-up."""
    calls, rejected, peaks, reference = {}, {}, {}, None
    for name, contender in contenders.items():
        if contender.largest_shape_only and not case.largest_shape:
            continue
        call = contender.make_call(case.function, inputs, case.threads)
        if call is None:
            continue
        try:
            result, peak = call_once(call, measure_memory and name in MEMORY_CONTENDERS)
        except Exception as exc:   # a peer that cannot run this case is reported, not fatal
            if name == "softmaxc":
                raise
            rejected[name] = f"raised {type(exc).__name__}: {exc}"
            continue
        if name == "softmaxc":
            reference = result
        elif contender.verified:
            problem = registry.disagreement(result, reference, case.dtype)
            if problem:
                rejected[name] = f"disagrees with softmaxc: {problem}"
                continue
        calls[name] = call
        if peak is not None:
            peaks[name] = peak
    return calls, rejected, peaks


def run_case(case, inputs, contenders, settings):
    """Check every contender against softmaxc, then time the ones that agree.

    Returns the JSON record of the case: per contender its timing (and peak memory on the
    largest shape, first thread count: memory does not depend on threads), the ratios, and
    the contenders rejected with the reason.
    """
    measure_memory = (case.largest_shape and settings.memory
                      and case.threads == settings.threads[0])
    calls, rejected, peaks = checked_calls(case, inputs, contenders, measure_memory)
    for name, reason in rejected.items():
        progress(f"    {name} NOT TIMED: {reason}")

    timings = timing.time_interleaved(calls, settings.min_time, settings.repeats,
                                      min_sample_time=settings.min_sample_time)
    results = {
        name: {
            "median_s": t.median,
            "best_s": t.best,
            "samples": len(t.seconds_per_call),
            "calls_per_sample": t.calls_per_sample,
        }
        for name, t in timings.items()
    }
    for name, peak in peaks.items():
        results[name]["peak_bytes"] = peak
    ratios = {
        name: results[contender.compare_with]["median_s"] / results[name]["median_s"]
        for name, contender in contenders.items()
        if name in results and contender.compare_with in results
    }
    return {
        "function": case.function,
        "shape": list(case.shape),
        "axis": case.axis,
        "dtype": case.dtype,
        "threads": case.threads,
        "largest_shape": case.largest_shape,
        "results": results,
        "ratios": ratios,
        "rejected": rejected,
    }


def run(args, contenders):
    largest = max(args.shapes, key=lambda shape_axis: report.size(shape_axis[0]))
    cases = [
        Case(function, shape, axis, dtype, threads, (shape, axis) == largest)
        for threads in args.threads
        for function in args.functions
        for shape, axis in args.shapes
        for dtype in args.dtypes
    ]
    inputs = {}
    records = []
    started = time.perf_counter()
    for number, case in enumerate(cases, 1):
        key = (case.shape, case.axis, case.dtype)
        if key not in inputs:
            inputs[key] = registry.make_inputs(case.shape, case.axis, case.dtype)
        progress(f"[{number}/{len(cases)}] {case.label}")
        with thread_limit(case.threads):
            record = run_case(case, inputs[key], contenders, args)
        records.append(record)
        progress(f"    {report.case_summary(record, contenders)}   "
                 f"({time.perf_counter() - started:.0f} s elapsed)")
    return records


def main(argv=None):
    args = parse_args(argv)
    contenders, missing = registry.available_contenders()
    progress(f"softmaxc from {registry.softmaxc.__file__}")
    for name, reason in missing.items():
        progress(f"{name}: skipped, {reason}")

    started_at = report.utc_now()
    records = run(args, contenders)
    document = report.document(args, contenders, missing, records, started_at)

    report.print_table(records, contenders)
    report.print_targets(records)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report.write_json(document, args.json)
    progress(f"results written to {args.json}")
    if not args.no_chart:
        if report.draw_chart(document, args.chart):
            progress(f"chart drawn to {args.chart}")
        else:
            progress("chart not drawn: matplotlib is not installed (pip install -e .[bench])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
