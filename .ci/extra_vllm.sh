#!/usr/bin/env bash
# CI extra: the tests marked `vllm` (a real vLLM CPU server on a tiny local checkpoint).
# 1. .ci/setup_vllm.sh creates the separate venv (idempotent; ~5 min on a fresh machine).
# 2. pytest -m vllm: the command-line -m replaces the default-run -m of pyproject's addopts.
#    MADOPD_VLLM_REQUIRED=1 turns "no vLLM interpreter" from a skip into a failure, so a broken
#    setup cannot pass as green.
# 3. Every process started here carries MADOPD_VLLM_RUN_ID=<this run>; on exit (success,
#    failure, interrupt) any of them still alive (a server orphaned by a killed pytest) is
#    stopped. The tests themselves stop their server by process group (serve_vllm).
# Env: MADOPD_VLLM_VENV (venv path), MADOPD_VLLM_TEST_TIMEOUT (s, default 1800).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${MADOPD_VLLM_VENV:-$PWD/.venv-vllm}"
export MADOPD_VLLM_VENV="$VENV" MADOPD_VLLM_PYTHON="$VENV/bin/python" MADOPD_VLLM_REQUIRED=1
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
echo "extra_vllm: setup took $(( $(date +%s) - start )) s"

t0=$(date +%s)
# SIGINT on timeout: pytest then runs its fixture teardown, which stops the server.
# In the background + wait: bash runs a TERM/INT trap only between commands, and wait is
# interruptible, so a signal to this script reaches the cleanup at once.
timeout --signal=INT --kill-after=60 "${MADOPD_VLLM_TEST_TIMEOUT:-1800}" \
  python -m pytest -q -rs -m vllm tests/models &
wait $!
echo "extra_vllm: tests took $(( $(date +%s) - t0 )) s (total $(( $(date +%s) - start )) s)"
