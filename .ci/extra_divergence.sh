#!/usr/bin/env bash
# The fused divergence kernels build on a clean machine (both need gcc: the C++ row kernel,
# the CPU default, and inductor's torch.compile kernel) and match the naive baseline: a short
# run of the benchmark at a small size, every kind, K = 1 and 3, with the compiled path
# forced and compile errors raised (not fallen back), once per CPU kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
for cpu_kernel in cpp inductor; do
PYTHONPATH=. CPU_KERNEL=$cpu_kernel python - <<'PY'
import os, runpy, sys
from madopd import divergence as D
D.set_kernel_policy(mode="compiled", on_compile_error="raise")
sys.argv = ["bench_divergence.py", "--tokens", "128", "--vocab", "32000", "--repeats", "1",
            "--kernel", "compiled", "--cpu-kernel", os.environ["CPU_KERNEL"]]
try:
    runpy.run_path("benchmarks/bench_divergence.py", run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
PY
done
