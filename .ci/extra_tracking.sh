#!/usr/bin/env bash
# Experiment trackers (report_to): install the `tracking` extra, then read back a 3-step toy run
# from TensorBoard's event files, trackio's local store and a W&B offline run (no network).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install torch==2.13.0 -e ".[dev,tracking]"
WANDB_MODE=offline python -m pytest -q -m tracking tests/tracking
