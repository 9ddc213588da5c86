"""What the benchmark writes: the progress lines, the table, the JSON document, the chart."""

import contextlib
import datetime
import importlib
import io
import json
import math
import os
import platform

import softmaxc

SCHEMA_VERSION = 1


def size(shape):
    return math.prod(shape)


def shape_label(shape, axis):
    text = "x".join(str(n) for n in shape)
    return text if axis in (-1, len(shape) - 1) else f"{text}:{axis}"


def format_seconds(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def case_summary(record, contenders):
    """One line: every contender's median, and its ratio in parentheses."""
    parts = []
    for name, result in record["results"].items():
        text = f"{contenders[name].label} {format_seconds(result['median_s'])}"
        if name in record["ratios"]:
            text += f" ({record['ratios'][name]:.2f})"
        parts.append(text)
    return " | ".join(parts)


# --- the table -----------------------------------------------------------------------------

def _cell(record, name):
    result = record["results"].get(name)
    if result is None:
        return "rejected" if name in record["rejected"] else "-"
    text = format_seconds(result["median_s"])
    if name in record["ratios"]:
        text += f" ({record['ratios'][name]:.2f})"
    return text


def _print_rows(records, names, contenders):
    columns = ["function", "shape", "dtype", "thr"] + [contenders[n].label for n in names]
    rows = [
        [r["function"], shape_label(r["shape"], r["axis"]), r["dtype"], str(r["threads"])]
        + [_cell(r, name) for name in names]
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows + [columns]) for i in range(len(columns))]
    for row in [columns, ["-" * w for w in widths]] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def print_table(records, contenders):
    """Medians; in parentheses softmaxc time / peer time (below 1: softmaxc is faster)."""
    main = [n for n, c in contenders.items() if not c.largest_shape_only
            and any(n in r["results"] or n in r["rejected"] for r in records)]
    print("\nMedian time per call; (ratio) = softmaxc time / peer time, below 1 = softmaxc "
          "faster.")
    _print_rows(records, main, contenders)
    if any(r["function"] == "cross_entropy_with_grad" and "torch" in r["results"]
           for r in records):
        print("cross_entropy_with_grad, PyTorch: autograd forward + backward "
              "(F.cross_entropy on a leaf with requires_grad, loss.backward()).")

    largest = [r for r in records if r["largest_shape"]]
    extra = [n for n, c in contenders.items() if c.largest_shape_only
             and any(n in r["results"] for r in largest)]
    if extra:
        print("\nPreallocated outputs on the largest shape; (ratio) = softmaxc out= time / "
              "peer time; copy = np.copyto of the same bytes (memory-bandwidth floor).")
        _print_rows([r for r in largest if any(n in r["results"] for n in extra)], extra,
                    contenders)

    with_memory = [r for r in largest if any("peak_bytes" in v for v in r["results"].values())]
    if with_memory:
        print("\nPeak memory allocated during one call on the largest shape, as a multiple "
              "of the input's size (tracemalloc: NumPy arrays, result included).")
        for r in with_memory:
            input_bytes = size(r["shape"]) * (4 if r["dtype"] == "float32" else 8)
            peaks = ", ".join(f"{contenders[name].label} {v['peak_bytes'] / input_bytes:.2f}"
                              for name, v in r["results"].items() if "peak_bytes" in v)
            print(f"  {r['function']} {r['dtype']}: {peaks}")


# --- the targets of issue 6 ----------------------------------------------------------------

def _targets(record):
    """(description, ratio, limit) of every target of issue 6 that applies to `record`."""
    ratios, function = record["ratios"], record["function"]
    found = []
    if "torch" in ratios and function in ("softmax", "log_softmax", "logsumexp"):
        found.append(("<= 0.75x PyTorch", ratios["torch"], 0.75))
    if "torch" in ratios and function == "cross_entropy_with_grad":
        limit = 0.35 if record["dtype"] == "float32" else 0.5
        found.append((f"<= {limit}x PyTorch forward+backward", ratios["torch"], limit))
    if "numpy" in ratios:
        found.append(("3x faster than NumPy", ratios["numpy"], 1 / 3))
    if "torch" in ratios and record["shape"] == [1, 1000] and record["axis"] in (-1, 1):
        found.append(("(1, 1000) overhead <= PyTorch", ratios["torch"], 1.0))
    if (record["largest_shape"] and function == "softmax" and record["dtype"] == "float32"
            and "copy" in ratios):
        # ratios["copy"] = time(softmaxc out=) / time(copy)
        found.append(("out= within 1.5x of a plain copy", ratios["copy"], 1.5))
    return found


def target_results(records):
    """Every target check of the run: the case, the target, the measured ratio, met or not."""
    return [
        {"function": r["function"], "shape": r["shape"], "axis": r["axis"], "dtype": r["dtype"],
         "threads": r["threads"], "target": description, "ratio": ratio, "limit": limit,
         "met": ratio <= limit}
        for r in records for description, ratio, limit in _targets(r)
    ]


def print_targets(records):
    """Per function and target: how many cases meet it, and the ratio of each that does not."""
    checks = target_results(records)
    if not checks:
        return
    print(f"\nTargets of issue 6 met: {sum(c['met'] for c in checks)} of {len(checks)} "
          "(ratio = softmaxc / peer; missed cases as shape/dtype/threads: ratio).")
    groups = {}
    for check in checks:
        groups.setdefault((check["function"], check["target"]), []).append(check)
    for (function, target), group in groups.items():
        missed = [f"{shape_label(c['shape'], c['axis'])}/{c['dtype'][-2:]}/{c['threads']}: "
                  f"{c['ratio']:.2f}" for c in group if not c["met"]]
        line = f"  {function}, {target}: {len(group) - len(missed)} of {len(group)}"
        print(line + (f"; missed {', '.join(missed)}" if missed else ""))


# --- the JSON document ---------------------------------------------------------------------

def _cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module_name):
    try:
        return importlib.import_module(module_name).__version__
    except ImportError:
        return None


def machine_info():
    config = io.StringIO()
    with contextlib.redirect_stdout(config):
        softmaxc.show_config()
    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable_cpus = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "environment": {name: os.environ.get(name) for name in
                        ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")},
        "versions": {name: _version(name) for name in
                     ("softmaxc", "numpy", "scipy", "torch", "jax", "threadpoolctl")},
        "softmaxc_path": os.path.dirname(softmaxc.__file__),
        "softmaxc_config": config.getvalue().rstrip("\n").splitlines(),
    }


def document(args, contenders, missing, records, started_at):
    return {
        "schema_version": SCHEMA_VERSION,
        "started": started_at,
        "finished": utc_now(),
        "machine": machine_info(),
        "settings": {
            "functions": args.functions,
            "shapes": [{"shape": list(shape), "axis": axis} for shape, axis in args.shapes],
            "dtypes": args.dtypes,
            "threads": args.threads,
            "min_time_s": args.min_time,
            "min_samples": args.repeats,
            "quick": args.quick,
            "memory": args.memory,
        },
        "contenders": {
            **{name: {"label": c.label, "available": True, "compared_with": c.compare_with,
                      "note": c.note}
               for name, c in contenders.items()},
            **{name: {"available": False, "reason": reason} for name, reason in missing.items()},
        },
        "ratio_definition": "time(compared_with) / time(contender): below 1, softmaxc is faster",
        "cases": records,
        "targets": target_results(records),
    }


def write_json(document, path):
    path.write_text(json.dumps(document, indent=1) + "\n")


# --- the chart -----------------------------------------------------------------------------

def draw_chart(document, path):
    """One panel per function and thread count: bars of softmaxc time / peer time per
    case, on a log scale.  Returns False when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    records = document["cases"]
    functions = list(dict.fromkeys(r["function"] for r in records))
    threads = list(dict.fromkeys(r["threads"] for r in records))
    labels = {n: c["label"] for n, c in document["contenders"].items() if c["available"]}
    peers = [n for n in labels if any(n in r["ratios"] for r in records)]
    colours = dict(zip(peers, plt.get_cmap("tab10").colors))

    figure, axes = plt.subplots(len(functions), len(threads), squeeze=False, sharey=True,
                                figsize=(max(11.0, 6.5 * len(threads)),
                                         2.9 * len(functions) + 1.3),
                                layout="constrained")
    for row, function in enumerate(functions):
        for column, n_threads in enumerate(threads):
            ax = axes[row][column]
            panel = [r for r in records if r["function"] == function
                     and r["threads"] == n_threads]
            bar_width = 0.8 / max([1] + [len(r["ratios"]) for r in panel])
            for i, record in enumerate(panel):   # a group of bars per case, centred on i
                names = [n for n in peers if n in record["ratios"]]
                for k, name in enumerate(names):
                    ax.bar(i + (k - (len(names) - 1) / 2) * bar_width, record["ratios"][name],
                           bar_width, color=colours[name])
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_yscale("log")
            ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())   # decades only
            ax.set_xticks(range(len(panel)))
            ax.set_xticklabels([f"{shape_label(r['shape'], r['axis'])}\n{r['dtype']}"
                                for r in panel], fontsize=7, rotation=45, ha="right")
            ax.set_title(f"{function}, {n_threads} thread{'s' if n_threads > 1 else ''}",
                         fontsize=10)
            if column == 0:
                ax.set_ylabel("softmaxc / peer time")
            ax.grid(axis="y", alpha=0.3)

    machine = document["machine"]
    figure.suptitle(
        "softmaxc time / peer time, medians (below 1: softmaxc is faster)\n"
        "PyTorch out= and copy bars: softmaxc out= time / their time\n"
        f"{machine['cpu_model']}, {machine['usable_cpus']} CPUs, "
        f"softmaxc {machine['versions']['softmaxc']}, {document['started'][:10]}",
        fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[n]) for n in peers]
    figure.legend(handles, [labels[n] for n in peers], loc="outside lower center",
                  frameon=False, ncol=min(len(peers), 6), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
