#!/usr/bin/env bash
# Benchmark extras: install (see setup_bench.sh), then the `bench` tests and both harness
# self-checks (exit non-zero unless the benchmarks' own gold answers score perfectly).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup_bench.sh
python -m pytest -q -m bench tests/bench tests/test_sandbox.py tests/test_evaluate.py tests/commands/test_eval.py
python -m pytest -q tests/bench tests/test_sandbox.py tests/test_evaluate.py tests/commands/test_eval.py
out="$(mktemp -d)"
madopd eval --benchmark humaneval --reference --no-progress --out "$out/he"
madopd eval --benchmark bfcl --reference --no-progress --out "$out/bfcl"
rm -rf "$out"
