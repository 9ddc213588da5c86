"""`python -m softmaxc`: a short tour that computes, checks and times."""

import time

import numpy as np

import softmaxc


def numpy_softmax(x, beta=1.0):
    """The textbook NumPy implementation we compare against (float64 reference)."""
    z = beta * x
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numpy_logsumexp(x, beta=1.0):
    z = beta * x
    m = z.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]


def _median_seconds(fn, repeats=15):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    softmaxc.show_config()
    print()

    logits = np.array([2.0, 1.0, 0.1, -1.0])
    beta = 2.0
    print(f"logits x = {logits},  beta = {beta}")
    p = softmaxc.softmax(logits, beta=beta)
    log_p = softmaxc.log_softmax(logits, beta=beta)
    lse = softmaxc.logsumexp(logits, beta=beta)
    print(f"  softmax      {np.array2string(p, precision=6)}   (sums to {p.sum():.17g})")
    print(f"  log_softmax  {np.array2string(log_p, precision=6)}")
    print(f"  logsumexp    {float(lse):.17g}")

    rng = np.random.default_rng(0)
    batch = rng.standard_normal((256, 1000)) * 3 + 1e3   # offset rows: exp(beta * x) overflows
    checks = {
        "softmax": np.abs(softmaxc.softmax(batch, beta=beta) - numpy_softmax(batch, beta)).max(),
        "log_softmax": np.abs(
            softmaxc.log_softmax(batch, beta=beta)
            - (beta * batch - numpy_logsumexp(batch, beta)[:, None])
        ).max(),
        "logsumexp": np.abs(
            softmaxc.logsumexp(batch, beta=beta) - numpy_logsumexp(batch, beta)
        ).max()
        / np.abs(numpy_logsumexp(batch, beta)).max(),
    }
    print("\nchecked against a NumPy float64 reference on 256 x 1000 rows offset by 1e3:")
    failed = False
    for name, err in checks.items():
        ok = err < 1e-10   # the float64 reference itself rounds beta * x near 2e3
        failed |= not ok
        print(f"  {name:12s} max difference {err:.2e}  {'ok' if ok else 'FAILED'}")

    x32 = rng.standard_normal((256, 1000)).astype(np.float32)
    out = np.empty_like(x32)
    ours = _median_seconds(lambda: softmaxc.softmax(x32, out=out))
    theirs = _median_seconds(lambda: numpy_softmax(x32))
    print(
        f"\ntiming, softmax float32 (256, 1000), median of 15: softmaxc {ours * 1e6:.0f} us, "
        f"NumPy {theirs * 1e6:.0f} us (NumPy time / softmaxc time = {theirs / ours:.2f})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
