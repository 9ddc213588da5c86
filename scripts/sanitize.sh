#!/usr/bin/env bash
# Memory-safety runs of the test suite against instrumented builds of softmaxc.
#
#   scripts/sanitize.sh asan       AddressSanitizer + UndefinedBehaviorSanitizer build, whole suite
#   scripts/sanitize.sh bounds     Cython boundscheck/initializedcheck build (SOFTMAXC_DEBUG=1),
#                                  whole suite
#   scripts/sanitize.sh valgrind   valgrind memcheck on a representative subset (counts only
#                                  errors with a softmaxc frame: CPython and NumPy are noisy)
#   scripts/sanitize.sh all        the three, one after the other
#
# Each mode builds in a fresh copy of the source tree (your in-place build is untouched) and
# runs pytest from there.  Extra arguments after the mode go to pytest.  The last line of
# each mode is a summary; the exit status is non-zero if tests failed or anything was found.
# Logs stay in the printed directory.
set -uo pipefail

mode=${1:-all}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
# The interpreter itself, not a wrapper script (pyenv shims): valgrind must run Python.
python=$("${PYTHON:-python3}" -c "import sys; print(sys.executable)")
status=0

# A copy of the tracked and new (not ignored) files: no build products.
fresh_copy() {
    local dest
    dest=$(mktemp -d "${TMPDIR:-/tmp}/softmaxc-$1.XXXXXX")
    (cd "$root" && git ls-files -z --cached --others --exclude-standard \
        | xargs -0 cp --parents -t "$dest")
    echo "$dest"
}

build() {   # build DIR [env assignments...]
    local dir=$1
    shift
    (cd "$dir" && env "$@" "$python" setup.py build_ext --inplace -j 2 >build.log 2>&1) || {
        echo "build failed; see $dir/build.log" >&2
        tail -20 "$dir/build.log" >&2
        return 1
    }
}

# A deliberate out-of-bounds write: a kernel called directly (bypassing the Python layer's
# validation) with a per-row output 63 rows short.  The instrumented build must catch it.
# (The row kernels of softmax and of index targets check their buffers' shapes themselves,
# so the canary is a kernel that leaves that to the bounds checks.)
CANARY='
import numpy as np
from softmaxc import _cross_entropy_kernels
_cross_entropy_kernels.cross_entropy_prob_rows(np.zeros((64, 50)), np.zeros((64, 50)), None,
                                               0.0, 1.0, 1.0, np.zeros(1), None, 1)
'

# pytest's "N passed, M failed ..." line from a log.
outcome() { grep -E "^[=]* ?[0-9]+ (passed|failed)|[0-9]+ passed" "$1" | tail -1; }

# Check that the copy, not an installed softmaxc, is what the tests import.
check_import() {
    local dir=$1
    shift
    local where
    where=$(cd "$dir" && env "$@" "$python" -c "import softmaxc; print(softmaxc.__file__)")
    if [[ $where != "$dir"/* ]]; then
        echo "the tests would import $where, not the build in $dir" >&2
        return 1
    fi
}

run_asan() {
    local dir
    dir=$(fresh_copy asan)
    echo "== asan: building with AddressSanitizer + UBSan in $dir"
    build "$dir" SOFTMAXC_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -g" \
        || { status=1; return; }
    local libasan libstdcxx
    libasan=$(gcc -print-file-name=libasan.so)
    # libstdc++ is preloaded too, right after libasan: ASan intercepts __cxa_throw only when
    # the real one is already loaded at start-up; otherwise the first C++ exception (e.g.
    # inside matplotlib's ft2font, imported by the benchmark and docs tests) aborts ASan.
    libstdcxx=$(gcc -print-file-name=libstdc++.so)
    local env=(
        LD_PRELOAD="$libasan $libstdcxx"
        ASAN_OPTIONS="detect_leaks=0:log_path=$dir/asan-report:halt_on_error=1"
        UBSAN_OPTIONS="print_stacktrace=1:log_path=$dir/ubsan-report"
        PYTHONPATH="$dir"
    )
    check_import "$dir" "${env[@]}" || { status=1; return; }
    (cd "$dir" && env "${env[@]}" "$python" -m pytest -q -p no:cacheprovider "$@" \
        >pytest.log 2>&1)
    local rc=$?
    local asan_reports ubsan_reports
    asan_reports=$(cat "$dir"/asan-report.* 2>/dev/null \
        | grep -c "ERROR: AddressSanitizer\|AddressSanitizer: CHECK failed")
    ubsan_reports=$(cat "$dir"/ubsan-report.* 2>/dev/null | grep -c "runtime error:")
    local canary
    (cd "$dir" && env LD_PRELOAD="$libasan" PYTHONPATH="$dir" \
        ASAN_OPTIONS="detect_leaks=0:log_path=$dir/canary-report" "$python" -c "$CANARY" \
        >/dev/null 2>&1)
    canary=$(cat "$dir"/canary-report.* 2>/dev/null | grep -c "ERROR: AddressSanitizer")
    echo "asan: self-check: the deliberate overflow was reported: $([[ $canary -gt 0 ]] && echo yes || echo NO)"
    [[ $canary -gt 0 ]] || status=1
    echo "asan: pytest exit $rc: $(outcome "$dir/pytest.log")"
    echo "asan: AddressSanitizer reports: $asan_reports, UBSan reports: $ubsan_reports" \
         "(logs: $dir/asan-report.*, $dir/ubsan-report.*)"
    [[ $rc -eq 0 && $asan_reports -eq 0 && $ubsan_reports -eq 0 ]] || status=1
}

run_bounds() {
    local dir
    dir=$(fresh_copy bounds)
    echo "== bounds: building with boundscheck and initializedcheck on in $dir"
    build "$dir" SOFTMAXC_DEBUG=1 || { status=1; return; }
    check_import "$dir" PYTHONPATH="$dir" || { status=1; return; }
    (cd "$dir" && PYTHONPATH="$dir" "$python" -m pytest -q -p no:cacheprovider "$@" \
        >pytest.log 2>&1)
    local rc=$?
    local index_errors
    # A bounds-check failure in a kernel surfaces as an IndexError raised from a .pyx line.
    index_errors=$(grep -c -E "Out of bounds on buffer access|\.pyx\", line .*IndexError" \
                   "$dir/pytest.log")
    local canary
    canary=$(cd "$dir" && PYTHONPATH="$dir" "$python" -c "$CANARY" 2>&1 | grep -c "IndexError")
    echo "bounds: self-check: the deliberate overflow raised IndexError: $([[ $canary -gt 0 ]] && echo yes || echo NO)"
    [[ $canary -gt 0 ]] || status=1
    echo "bounds: pytest exit $rc: $(outcome "$dir/pytest.log"); out-of-bounds reports: $index_errors"
    [[ $rc -eq 0 && $index_errors -eq 0 ]] || status=1
}

# The subset valgrind runs (it is ~50x slower): every public function on every adversarial
# input class (special values, shapes, layouts, out= aliasing, bad labels).  Pass test
# paths to run others (e.g. tests/test_fuzz.py: about 20 minutes more).
VALGRIND_TESTS=(
    tests/test_adversarial.py
)

run_valgrind() {
    if ! command -v valgrind >/dev/null; then
        echo "valgrind: not installed (apt-get install valgrind)" >&2
        status=1
        return
    fi
    local dir
    dir=$(fresh_copy valgrind)
    echo "== valgrind: building with -g in $dir"
    build "$dir" SOFTMAXC_CFLAGS="-g" || { status=1; return; }
    check_import "$dir" PYTHONPATH="$dir" || { status=1; return; }
    local tests=("$@")
    [[ ${#tests[@]} -gt 0 ]] || tests=("${VALGRIND_TESTS[@]}")
    (cd "$dir" && PYTHONMALLOC=malloc PYTHONPATH="$dir" valgrind --tool=memcheck \
        --error-limit=no --num-callers=40 --log-file="$dir/valgrind.%p.log" \
        "$python" -m pytest -q -p no:cacheprovider -p no:randomly "${tests[@]}" \
        >pytest.log 2>&1)
    local rc=$?
    local counts
    counts=$("$python" - "$dir" <<'EOF'
import glob, re, sys
# An error is a block of "==pid== " lines that starts with a message and lists frames;
# it counts when one of its frames is in softmaxc's compiled code.
ours = re.compile(r"softmaxc/_\w+\.(c|pyx|pxd|so)|_kernels|_rowops|softmaxc/_runtime")
total = mine = 0
examples = []
for path in glob.glob(f"{sys.argv[1]}/valgrind.*.log"):
    text = open(path, errors="replace").read()
    blocks = re.split(r"\n==\d+== \n", text)
    for block in blocks:
        lines = [re.sub(r"^==\d+== ", "", line) for line in block.splitlines()]
        if not any(re.match(r"\s+(at|by) 0x", line) for line in lines):
            continue
        if any(line.startswith(("HEAP SUMMARY", "LEAK SUMMARY", "ERROR SUMMARY"))
               or "bytes in" in line and "blocks are" in line for line in lines):
            continue  # leak records (CPython never frees everything) are not errors here
        total += 1
        if any(ours.search(line) for line in lines):
            mine += 1
            examples.append("\n".join(lines[:12]))
print(total, mine)
for example in examples[:5]:
    print(example, file=sys.stderr)
EOF
)
    read -r all_errors softmaxc_errors <<<"$counts"
    local canary
    canary=$(cd "$dir" && PYTHONPATH="$dir" valgrind --tool=memcheck "$python" -c "$CANARY" 2>&1 \
             | grep -A8 "Invalid write" | grep -c -E "_kernels|_rowops")
    echo "valgrind: self-check: the deliberate overflow was reported: $([[ $canary -gt 0 ]] && echo yes || echo NO)"
    [[ $canary -gt 0 ]] || status=1
    echo "valgrind: pytest exit $rc: $(outcome "$dir/pytest.log")"
    echo "valgrind: memcheck errors with a softmaxc frame: $softmaxc_errors" \
         "(all errors, CPython/NumPy included: $all_errors; logs: $dir/valgrind.*.log)"
    [[ $rc -eq 0 && $softmaxc_errors -eq 0 ]] || status=1
}

case $mode in
    asan) run_asan "$@" ;;
    bounds) run_bounds "$@" ;;
    valgrind) run_valgrind "$@" ;;
    all)
        run_asan "$@"
        run_bounds "$@"
        run_valgrind "$@"
        ;;
    *)
        echo "usage: $0 asan|bounds|valgrind|all [pytest arguments]" >&2
        exit 2
        ;;
esac
exit $status
