"""Run the widgets' ES modules under node and return JSON (the browser math, without a browser)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from madopd.widgets.assets import STATIC


def node_json(body: str, data=None) -> object:
    """Execute ``body`` in an ES module where ``STATIC`` is the static folder URL and ``DATA`` the
    JSON input; the body must ``print(value)`` once. Fails (not skips) without node."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required for the widget JS tests (apt-get install nodejs)")
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in.json"
        inp.write_text(json.dumps(data))
        script = Path(tmp) / "t.mjs"
        script.write_text(
            f'import {{ readFileSync }} from "node:fs";\n'
            f'const STATIC = {json.dumps(STATIC.as_uri())};\n'
            f'const DATA = JSON.parse(readFileSync({json.dumps(str(inp))}, "utf8"));\n'
            f'const print = (v) => process.stdout.write(JSON.stringify(v));\n'
            f"{body}\n")
        r = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"node failed:\n{r.stderr}")
    return json.loads(r.stdout)
