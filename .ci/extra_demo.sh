#!/usr/bin/env bash
# The main job's smoke profile on a clean machine (builds its own tiny zoo), then the slow tests
# that are not covered by another extra suite (zoo, demo, resume after SIGKILL, wheel contents).
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
start=$(date +%s)
madopd demo --profile smoke --out "$out"
echo "smoke demo wall time: $(( $(date +%s) - start )) s"
for f in results.json report.html table.txt; do
  test -s "$out/$f" || { echo "madopd demo --profile smoke did not write $f" >&2; exit 1; }
done
rm -rf "$out"
python -m pytest -q -m "slow and not notebook and not ui and not vllm and not bench and not gpu"
