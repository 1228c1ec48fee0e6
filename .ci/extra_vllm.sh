#!/usr/bin/env bash
# CI extra: the tests marked `vllm` (real vLLM CPU servers; a colocated vLLM engine).
# 1. .ci/setup_vllm.sh creates the separate venv (idempotent; ~5 min on a fresh machine) and
#    installs madopd into it (transformers 5.19 there).
# 2. .ci/setup_real.sh + `madopd models pull`: the real SmolLM2-135M-Instruct, served by vLLM
#    in tests/models/test_vllm_real.py (shares $MADOPD_MODELS_DIR with .ci/extra_real.sh).
# 3. pytest -m vllm tests/models (this env): servers on the tiny checkpoint and on SmolLM2,
#    and student rollouts from a dev-mode server whose weights follow the trained student
#    (test_vllm_rollout_server.py: an HTTP client, so it runs here on transformers 5.x).
#    The command-line -m replaces the default-run -m of pyproject's addopts.
#    MADOPD_VLLM_REQUIRED=1 / MADOPD_VLLM_REAL_REQUIRED=1 turn "no vLLM interpreter" / "model
#    not pulled" from a skip into a failure, so a broken setup cannot pass as green.
# 4. the venv's pytest -m vllm tests/models/test_vllm_rollout.py: vllm.LLM inside the test
#    process (colocated student rollouts, weight sync); MADOPD_VLLM_COLOCATED_REQUIRED=1.
# 5. the venv's pytest on the default-run model/distill/debate/confidence tests (madopd on
#    transformers 5.19).
# 3. Every process started here carries MADOPD_VLLM_RUN_ID=<this run>; on exit (success,
#    failure, interrupt) any of them still alive (a server orphaned by a killed pytest) is
#    stopped. The tests themselves stop their server by process group (serve_vllm).
# Env: MADOPD_VLLM_VENV (venv path), MADOPD_VLLM_TEST_TIMEOUT (s, default 1800).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${MADOPD_VLLM_VENV:-$PWD/.venv-vllm}"
export MADOPD_VLLM_VENV="$VENV" MADOPD_VLLM_PYTHON="$VENV/bin/python" MADOPD_VLLM_REQUIRED=1
export MADOPD_VLLM_REAL_REQUIRED=1 MADOPD_MODELS_DIR="${MADOPD_MODELS_DIR:-$PWD/.cache-models}"
export HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE TOKENIZERS_PARALLELISM=false
export MADOPD_VLLM_RUN_ID="extra_vllm.$$.$(date +%s%N)"

# PIDs of live processes whose environment holds this run's id (one grep over /proc; -z:
# NUL-separated records). This shell itself never matches: the id was exported after its start.
# The list of /proc entries is taken before grep/sed start: they carry the id too.
run_pids() {
  local files=(/proc/[0-9]*/environ)
  grep -lzxF "MADOPD_VLLM_RUN_ID=$MADOPD_VLLM_RUN_ID" "${files[@]}" 2>/dev/null \
    | sed -n 's#^/proc/\([0-9]*\)/environ$#\1#p' | grep -vx -e "$$" -e "$BASHPID" || true
}

cleanup() {
  local rc=$? pids
  pids="$(run_pids)"
  if [ -n "$pids" ]; then
    echo "extra_vllm: stopping leftover processes: $(echo $pids)" >&2
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 30); do  # pytest, if alive, tears its server down on TERM
      sleep 1
      pids="$(run_pids)"
      [ -z "$pids" ] && break
    done
    if [ -n "$pids" ]; then
      echo "extra_vllm: killing: $(echo $pids)" >&2
      kill -KILL $pids 2>/dev/null || true
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start=$(date +%s)
bash .ci/setup_vllm.sh
bash .ci/setup_real.sh
python -m madopd.cli models pull smollm2-135m-instruct
echo "extra_vllm: setup took $(( $(date +%s) - start )) s"

t0=$(date +%s)
# SIGINT on timeout: pytest then runs its fixture teardown, which stops the server.
# In the background + wait: bash runs a TERM/INT trap only between commands, and wait is
# interruptible, so a signal to this script reaches the cleanup at once.
timeout --signal=INT --kill-after=60 "${MADOPD_VLLM_TEST_TIMEOUT:-1800}" \
  python -m pytest -q -rs -m vllm tests/models &
wait $!
t1=$(date +%s)
echo "extra_vllm: server tests took $(( t1 - t0 )) s"
MADOPD_VLLM_COLOCATED_REQUIRED=1 timeout --signal=INT --kill-after=60 \
  "${MADOPD_VLLM_TEST_TIMEOUT:-1800}" \
  "$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider -m vllm tests/models/test_vllm_rollout.py &
wait $!
echo "extra_vllm: colocated tests took $(( $(date +%s) - t1 )) s"
# madopd under the venv's transformers 5.19 (issue 14: the colocated engine's process): the
# default-run model, distillation, debate and confidence tests (~1-2 min)
t2=$(date +%s)
"$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider tests/models tests/test_distill.py \
  tests/test_debate.py tests/test_confidence.py
echo "extra_vllm: madopd on the venv's transformers took $(( $(date +%s) - t2 )) s"
echo "extra_vllm: tests took $(( $(date +%s) - t0 )) s (total $(( $(date +%s) - start )) s)"
