#!/usr/bin/env bash
# bench_divergence.py --real (issue 10 item 6): the divergences on real SmolLM2-135M-Instruct
# teacher logits (3 personas) and its shrink_layers student at V = 49,152, compiled path
# forced, compile errors raised, values and gradients checked against the naive baseline.
# Named to sort after extra_real.sh (in the C and en_US collations alike), which pulls the
# model into the same cache; run alone, it prints one line and exits 0 when the model is not
# pulled. K = 3 is left to extra_divergence.sh (random logits): with it this took 319 s with
# the 2-core box at load 20-39; two rows, K = 1, should stay under 2 min unloaded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export MADOPD_MODELS_DIR="${MADOPD_MODELS_DIR:-$PWD/.cache-models}" HF_HUB_OFFLINE=1
export OMP_WAIT_POLICY=PASSIVE TOKENIZERS_PARALLELISM=false
start=$(date +%s)
PYTHONPATH=. python - <<'PY'
import runpy, sys
from madopd import divergence as D
D.set_kernel_policy(mode="compiled", on_compile_error="raise")
sys.argv = ["bench_divergence.py", "--real", "--tokens", "256", "--kinds", "rkl,jsd",
            "--teachers", "1", "--repeats", "1", "--kernel", "compiled"]
runpy.run_path("benchmarks/bench_divergence.py", run_name="__main__")
PY
echo "extra_real_vocab_divergence: done in $(( $(date +%s) - start )) s"
