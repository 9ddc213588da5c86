"""Long fuzzing run: the Hypothesis properties of tests/test_fuzz.py for a given time.

    python scripts/fuzz.py --minutes 10

Runs the properties round-robin in batches, each batch in a child process with a fresh
random seed (a crash, i.e. a child killed by a signal, is counted and its seed printed;
a falsified property prints Hypothesis's minimal example).  Prints the number of examples
run per property, failures and crashes; exits non-zero if there was any.

Reproduce one batch: python scripts/fuzz.py --worker test_cross_entropy --seed S --examples N
"""

import argparse
import os
import random
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROPERTIES = ["test_softmax_family", "test_softmax_jacobian", "test_backward",
              "test_cross_entropy"]


def worker(name, seed, examples):
    """Run one property for `examples` examples with `seed`; print the count run."""
    os.environ["FUZZ_PROFILE"] = "long"
    os.environ["FUZZ_EXAMPLES"] = str(examples)
    sys.path.insert(0, ROOT)
    import hypothesis

    from tests import test_fuzz

    test = getattr(test_fuzz, name)
    count = 0
    inner = test.hypothesis.inner_test

    def counting(*args, **kwargs):
        nonlocal count
        count += 1
        return inner(*args, **kwargs)

    test.hypothesis.inner_test = counting
    test = hypothesis.seed(seed)(test)
    import softmaxc

    print(f"TESTED {softmaxc.__file__}", flush=True)
    try:
        test()
    finally:
        print(f"EXAMPLES {count}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--examples", type=int, default=300, help="examples per batch")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.seed if args.seed is not None else 0, args.examples)
        return 0

    deadline = time.monotonic() + 60 * args.minutes
    examples = dict.fromkeys(PROPERTIES, 0)
    batches = failures = crashes = 0
    tested = "?"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    while time.monotonic() < deadline:
        name = PROPERTIES[batches % len(PROPERTIES)]
        seed = random.SystemRandom().randrange(2**32)
        command = [sys.executable, os.path.abspath(__file__), "--worker", name,
                   "--seed", str(seed), "--examples", str(args.examples)]
        try:
            result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True,
                                    text=True, timeout=max(60.0, deadline - time.monotonic()
                                                           + 120))
        except subprocess.TimeoutExpired:
            crashes += 1
            print(f"HANG  {name} seed={seed}: batch did not finish", flush=True)
            continue
        batches += 1
        counted = [int(line.split()[1]) for line in result.stdout.splitlines()
                   if line.startswith("EXAMPLES ")]
        examples[name] += counted[-1] if counted else 0
        tested = [line.split()[1] for line in result.stdout.splitlines()
                  if line.startswith("TESTED ")] or [tested]
        if result.returncode < 0:
            crashes += 1
            print(f"CRASH {name} seed={seed}: killed by signal {-result.returncode}\n"
                  f"{result.stderr[-3000:]}", flush=True)
        elif result.returncode != 0:
            failures += 1
            print(f"FAIL  {name} seed={seed}:\n{result.stderr[-5000:]}", flush=True)
    print(f"fuzzed {tested[0] if isinstance(tested, list) else tested}")
    for name, count in examples.items():
        print(f"{name:24s} {count:8d} examples")
    print(f"total {sum(examples.values())} examples in {batches} batches, "
          f"{failures} failures, {crashes} crashes")
    return 1 if failures or crashes else 0


if __name__ == "__main__":
    sys.exit(main())
