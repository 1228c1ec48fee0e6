#!/usr/bin/env bash
# Benchmark extras: install (see setup_bench.sh), then the `bench` tests and both harness
# self-checks (exit non-zero unless the benchmarks' own gold answers score perfectly).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup_sandbox.sh
bash .ci/setup_bench.sh
# bench-marked: all 164 canonical pass, 0 of 164 x 5 forged markers / early exits pass
python -m pytest -q -m bench tests/bench tests/sandbox tests/test_evaluate.py tests/commands/test_eval.py
python -m pytest -q tests/bench tests/sandbox tests/test_evaluate.py tests/commands/test_eval.py
# the hostile-code suite's slow cases (parent SIGKILL, concurrent callers, output flood)
python -m pytest -q -m slow tests/sandbox
out="$(mktemp -d)"
python -m madopd.cli eval --benchmark humaneval --reference --no-progress --out "$out/he"
python -m madopd.cli eval --benchmark bfcl --reference --no-progress --out "$out/bfcl"
rm -rf "$out"
