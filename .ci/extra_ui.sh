#!/usr/bin/env bash
# Notebooks (headless, SMOKE mode), the widgets' JS unit tests and the real-browser suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup_ui.sh
node --test tests/widgets/js/
MADOPD_SMOKE=1 python -m pytest -m notebook -q
python -m pytest -m ui -q
