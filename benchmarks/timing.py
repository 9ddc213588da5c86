"""Interleaved timing: the contenders of one case take turns, so that a burst of machine
noise (other processes, frequency changes) lands on all of them rather than on one."""

import gc
import math
import statistics
import time
from dataclasses import dataclass

# A sample repeats a fast call until it lasts this long (by default), so timer resolution
# and loop overhead stay negligible for the microsecond-scale (1, 1000) calls.
MIN_SAMPLE_SECONDS = 2e-3


@dataclass
class Timing:
    calls_per_sample: int
    seconds_per_call: list   # one entry per sample

    @property
    def median(self):
        return statistics.median(self.seconds_per_call)

    @property
    def best(self):
        return min(self.seconds_per_call)


def _run_sample(call, number):
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


def calibrate(call, min_sample_time):
    """A Timing whose calls per sample make a sample last at least `min_sample_time`
    seconds, holding its first sample (the last calibration run).  `call` is warm."""
    number = 1
    while True:
        per_call = _run_sample(call, number)
        if per_call * number >= min_sample_time:
            return Timing(number, [per_call])
        number = max(number * 2, math.ceil(min_sample_time / max(per_call, 1e-9)))


def time_interleaved(calls, min_time, min_samples, max_samples=1000,
                     min_sample_time=MIN_SAMPLE_SECONDS):
    """Timings of warm zero-argument `calls` (name -> callable), one sample each per round.

    Each round runs every contender once, starting one contender later than the previous
    round; the first round is the calibration of the calls per sample.  Rounds go on until
    there are `min_samples` of them and they took `min_time` seconds per contender in total
    (or there are `max_samples`): every contender gets the same number of samples, taken
    under the same conditions.
    """
    names = list(calls)
    budget = min_time * len(names)

    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        start_time = time.perf_counter()
        timings = {name: calibrate(calls[name], min_sample_time) for name in names}
        rounds = 1   # calibration ran each contender once, in turn
        while rounds < max_samples and (
            rounds < min_samples or time.perf_counter() - start_time < budget
        ):
            first = rounds % len(names)
            for name in names[first:] + names[:first]:
                timing = timings[name]
                timing.seconds_per_call.append(_run_sample(calls[name], timing.calls_per_sample))
            rounds += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return timings
