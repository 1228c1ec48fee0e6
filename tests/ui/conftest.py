"""Fixtures for the real-browser suite: a private JupyterLab and Debian chromium via Playwright.

JupyterLab runs on 127.0.0.1 (free port, empty token/password, --allow-root) with isolated
JUPYTER_CONFIG_DIR / JUPYTER_DATA_DIR / JUPYTER_RUNTIME_DIR under tmp, and is stopped by PID.
Its config dir holds madopd's JupyterLab defaults (saved widget state), as after an install.
Chromium is the system one (``apt-get install chromium``); ``playwright install`` is never run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("MADOPD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A running JupyterLab: yields {"url", "root"}; notebooks are written into ``root``."""
    if shutil.which("jupyter-lab") is None and shutil.which("jupyter") is None:
        pytest.fail("jupyterlab is not installed (pip install 'madopd[notebooks]')")
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    root.mkdir()
    env = dict(os.environ)
    for name in ("CONFIG", "DATA", "RUNTIME"):
        d = base / name.lower()
        d.mkdir()
        env[f"JUPYTER_{name}_DIR"] = str(d)
    # No news/announcement pop-ups over the notebook.
    labcfg = base / "config" / "labconfig"
    labcfg.mkdir(parents=True)
    (labcfg / "page_config.json").write_text(json.dumps({"disabledExtensions": {
        "@jupyterlab/apputils-extension:announcements": True}}))
    # What a regular `pip install madopd` (data file) or `madopd notebooks setup` provides: the
    # default-setting drop-in that makes Lab save widget state (madopd.widgets.labsetup).
    from madopd.widgets.labsetup import install_lab_defaults

    install_lab_defaults(base / "config")
    env["IPYTHONDIR"] = str(base / "ipython")
    # The kernels import the checkout under test (not whatever `pip install -e` points at).
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([repo, *filter(None, [env.get("PYTHONPATH")])])
    env["MADOPD_SMOKE"] = "1"
    port = _free_port()
    log = open(base / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--IdentityProvider.token=", "--ServerApp.password=",
         "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail(f"JupyterLab did not start:\n{(base / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"url": url, "root": root, "log": base / "lab.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def browser():
    try:
        import playwright.sync_api as pw_api
    except ImportError:
        pytest.fail("the ui suite needs Python playwright: run .ci/setup_ui.sh")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} missing: run .ci/setup_ui.sh (apt-get install chromium)")
    pw = pw_api.sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
    try:
        yield b
    finally:
        b.close()
        pw.stop()
