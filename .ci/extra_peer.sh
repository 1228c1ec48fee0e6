#!/usr/bin/env bash
# CI extra: benchmarks/bench_peer.py (madopd vs TRL's DistillationTrainer) runs end to end on
# the toy models. TRL goes into its own venv that sees the system packages
# (--system-site-packages), so the main environment never changes; trl 1.16 accepts the
# installed transformers 5.x (checked with `pip install --dry-run`: it adds only trl itself).
# A smoke run of 2 timed rounds, with no memory children: about 1 min. The figures in
# docs/performance.md come from longer runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${MADOPD_PEER_VENV:-$PWD/.venv-peer}"
[ -x "$VENV/bin/python" ] || python -m venv --system-site-packages "$VENV"
"$VENV/bin/python" -m pip install -q torch==2.13.0 trl==1.16.0
TRL_EXPERIMENTAL_SILENCE=1 OMP_NUM_THREADS=1 "$VENV/bin/python" benchmarks/bench_peer.py \
  --rounds 2 --warmup 1 --no-memory | tail -1
