"""Benchmark: start-up overhead of one sandboxed run, bubblewrap sandbox vs the old launcher.

    python benchmarks/bench_sandbox.py            # 30 runs of each, alternating
    python benchmarks/bench_sandbox.py --runs 60

Three ways to run the same trivial program (``print(1)``), alternated in one process, medians:

* bare:     ``python -E -s -S -B -c ...`` in a subprocess (no isolation at all);
* old:      the launcher madopd used before issue 11 (``madopd/sandbox.py`` at commit
            ``a9ee526``, read with ``git show``; skipped with a note when git or the commit is
            unavailable): a Python launcher, unshare(2), throw-away uid, rlimits;
* bwrap:    ``madopd.sandbox.run_code`` (prlimit + bubblewrap + per-run cgroups + seccomp);
* verifier: ``madopd.sandbox.verify.verify_cases`` on one HumanEval-style case (harness +
            worker: two interpreters in one sandbox).

Prints medians and the RATIOS bwrap / old, bwrap / bare, verifier / old. Timings taken on a
shared, loaded machine must be labelled "loaded".
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "a9ee526"


def _old_launcher():
    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:madopd/sandbox.py"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    mod = types.ModuleType("madopd_old_sandbox")
    mod.__file__ = "old_sandbox.py"
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(src, "old_sandbox.py", "exec"), mod.__dict__)
    return mod


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from madopd.sandbox import run_code
    from madopd.sandbox.verify import TestCase, verify_cases

    old = _old_launcher()
    case = TestCase("def add(a, b):\n    return a + b\n",
                    "def check(candidate):\n    assert candidate(1, 2) == 3\n", "add")

    def bare():
        subprocess.run([sys.executable, "-E", "-s", "-S", "-B", "-c", "print(1)"],
                       capture_output=True, check=True)

    def new():
        assert run_code("print(1)").status == "pass"

    def legacy():
        assert old.run_code("print(1)").status == "pass"

    def verifier():
        assert verify_cases([case], workers=1)[0].passed

    ways = {"bare": bare, "bwrap": new, "verifier": verifier}
    if old is not None:
        ways["old"] = legacy
    for fn in ways.values():  # warm-up (probe, cgroup detection, page cache)
        fn()
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.runs):
        for name, fn in ways.items():
            times[name].append(_time(fn))
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:9s} median {v:7.1f} ms per run  (n={args.runs})")
    print(f"RATIO bwrap/bare     {med['bwrap'] / med['bare']:.2f}")
    if old is not None:
        print(f"RATIO bwrap/old      {med['bwrap'] / med['old']:.2f}")
        print(f"RATIO verifier/old   {med['verifier'] / med['old']:.2f}")
    else:
        print(f"(old launcher unavailable: git show {OLD_COMMIT}:madopd/sandbox.py failed)")


if __name__ == "__main__":
    main()
