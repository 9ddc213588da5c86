"""Measure the accuracy of softmax, log_softmax and logsumexp in ULPs against mpmath.

Prints a table (function x dtype x input class -> max ULP error, the bound, and the worst
ratio error/bound) and writes it as JSON.  The oracle, the input classes and the bounds are
those of ``tests/accuracy.py`` (the module docstring there defines them), which the test
suite asserts in ``tests/test_accuracy.py``.

Usage (from the repository root)::

    python scripts/measure_accuracy.py [--json PATH]

Exits with status 1 when a bound is exceeded.
"""

import argparse
import dataclasses
import datetime
import json
import pathlib
import platform
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the in-place build of softmaxc and the tests package

import mpmath  # noqa: E402  (imports after the sys.path line)
import numpy as np  # noqa: E402

import softmaxc  # noqa: E402
from tests import accuracy  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "accuracy.json"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=pathlib.Path, default=DEFAULT_JSON,
                        help=f"where to write the results (default: {DEFAULT_JSON})")
    args = parser.parse_args(argv)

    measurements = accuracy.measure_all()
    print(f"softmaxc {softmaxc.__version__}: max ULP error against mpmath "
          f"({accuracy.DIGITS} digits), seed {accuracy.SEED}")
    print(accuracy.format_table(measurements))
    print()
    for c in accuracy.INPUT_CLASSES:
        print(f"  {c.name:<16} {c.description}")

    near_zero = [accuracy.logsumexp_near_zero(target, dtype)
                 for dtype in accuracy.DTYPES for target in accuracy.NEAR_ZERO_TARGETS]
    print("\nlogsumexp near 0 (ill-conditioned: error is bounded by the condition number "
          "kappa, not by a constant)")
    print(accuracy.format_near_zero(near_zero))

    report = {
        "softmaxc_version": softmaxc.__version__,
        "numpy_version": np.__version__,
        "mpmath_version": mpmath.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mpmath_digits": accuracy.DIGITS,
        "seed": accuracy.SEED,
        "input_classes": {c.name: c.description for c in accuracy.INPUT_CLASSES},
        "results": [dict(dataclasses.asdict(m), passed=m.passed) for m in measurements],
        "logsumexp_near_zero": [dataclasses.asdict(m) for m in near_zero],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0 if all(m.passed for m in measurements) else 1


if __name__ == "__main__":
    sys.exit(main())
