#!/usr/bin/env bash
# The fused divergence kernel compiles on a clean machine (inductor C++ backend needs gcc) and
# matches the naive baseline: a short run of the benchmark at a small size, every kind,
# K = 1 and 3, with the compiled path forced and compile errors raised (not fallen back).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH=. python - <<'PY'
from madopd import divergence as D
D.set_kernel_policy(mode="compiled", on_compile_error="raise")
import runpy, sys
sys.argv = ["bench_divergence.py", "--tokens", "128", "--vocab", "32000", "--repeats", "1",
            "--kernel", "compiled"]
runpy.run_path("benchmarks/bench_divergence.py", run_name="__main__")
PY
