"""Imported by run.py before anything loads an OpenMP runtime (softmaxc, PyTorch).

Idle OpenMP threads sleep instead of spinning (unless OMP_WAIT_POLICY is already set).
The contenders take turns, and softmaxc and PyTorch share one libgomp: a worker left
spinning after one contender's parallel region takes a core from the next contender.  On
this shared 2-core machine that made every 2-thread case up to 20x slower, for softmaxc
and PyTorch alike, and slowed the single-threaded NumPy calls in between.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
