#!/usr/bin/env bash
# Install what the notebook and real-browser suites need (tests marked `notebook` and `ui`):
# Debian chromium (apt) and Python playwright (pip). Never `playwright install`: browser
# downloads are blocked; the tests drive /usr/bin/chromium through `executable_path`.
# node (for `node --test tests/widgets/js/`) comes with the base image; installed here if missing.
# Idempotent: skips what is already there.
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
if [ ${#need_apt[@]} -gt 0 ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi
# torch pinned in the same command: otherwise pip may pull a multi-GB CUDA build.
python -c "import playwright.sync_api" 2>/dev/null || python -m pip install -q torch==2.13.0 playwright
python -c "import nbclient, nbformat, nbconvert, anywidget, jupyterlab" 2>/dev/null \
  || python -m pip install -q torch==2.13.0 -e ".[notebooks]" nbconvert
/usr/bin/chromium --version
python -c "import playwright.sync_api; print('playwright ok')"
