"""The tutorial notebooks: generated from notebooks/_build.py, outputs stripped (except the
static gallery), and every one executes headless in SMOKE mode (marker ``notebook``).

CI: ``pytest -m notebook`` (SMOKE mode is set here; the first run builds the toy zoo, ~1-2 min).
The execution tests are also marked ``slow`` so the default run skips them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time
from pathlib import Path

import nbformat
import pytest

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("[0-9][0-9]_*.ipynb"))
STATIC_OUTPUTS = {"00_gallery.ipynb"}
DEBATING = {"02", "03", "04", "05"}  # notebooks whose executed run is checked for a real debate  # executed in static mode, outputs kept for repository pages


def _builder():
    spec = importlib.util.spec_from_file_location("nb_build", NB_DIR / "_build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _execute(path: Path, tmp_path: Path, timeout: int = 600):
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    env_before = os.environ.get("MADOPD_SMOKE")
    os.environ["MADOPD_SMOKE"] = "1"  # the kernel inherits the environment
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=False,
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        if env_before is None:
            os.environ.pop("MADOPD_SMOKE", None)
        else:
            os.environ["MADOPD_SMOKE"] = env_before
    return nb


def test_notebooks_are_numbered_and_complete():
    assert NOTEBOOKS == [f"{n}.ipynb" for n in _builder().NOTEBOOKS]
    assert [n[:2] for n in NOTEBOOKS] == [f"{i:02d}" for i in range(len(NOTEBOOKS))]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_matches_its_builder(name):
    cells = _builder().NOTEBOOKS[name[:-6]]
    nb = nbformat.read(str(NB_DIR / name), as_version=4)
    assert [c.source for c in nb.cells] == [c.source for c in cells], \
        "notebook out of date: run python notebooks/_build.py"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_outputs_are_stripped(name):
    nb = nbformat.read(str(NB_DIR / name), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if name in STATIC_OUTPUTS:
        html = [o for c in code for o in c.outputs if "text/html" in o.get("data", {})]
        assert len(html) == 7, "one static render per widget + the real debate: run python notebooks/_build.py"
        assert all('class="madopd-static' in o["data"]["text/html"] for o in html)
        for c in code:  # static renders only: no widget views, no scripts
            for o in c.outputs:
                data = o.get("data", {})
                assert "application/vnd.jupyter.widget-view+json" not in data
                assert "<script" not in data.get("text/html", "")
        assert "widgets" not in nb.metadata
    else:
        assert all(not c.outputs and c.execution_count is None for c in code), \
            f"{name}: strip outputs before committing (python notebooks/_build.py)"


def _printed(nb, tag: str) -> list:
    """The JSON of every ``TAG {...}`` line the executed notebook printed (its own numbers)."""
    return [json.loads(line[len(tag) + 1:]) for c in nb.cells if c.cell_type == "code"
            for o in c.outputs if o.output_type == "stream"
            for line in o.text.splitlines() if line.startswith(tag + " ")]


@pytest.mark.notebook
@pytest.mark.slow  # excluded from the default run; `pytest -m notebook` selects it
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_in_smoke_mode(name, tmp_path):
    t0 = time.perf_counter()
    nb = _execute(NB_DIR / name, tmp_path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    print(f"{name}: {time.perf_counter() - t0:.1f} s")
    health = _printed(nb, "HEALTH")
    if name.startswith("03"):
        # the live run learns (issue 29.1): held-out episode success read from the executed
        # notebook's own HELDOUT line, the untrained student's value as the baseline
        held = _printed(nb, "HELDOUT")
        assert len(held) == 1, "03 printed no HELDOUT line"
        h = held[0]
        print(f"03: held-out success {h['before']:.3f} -> {h['after']:.3f} in {h['seconds']} s")
        assert h["curve"][0] == [0, h["before"]] and h["curve"][-1][1] == h["after"]
        assert h["after"] - h["before"] >= 0.25, h
        # the MT-OPD baseline ran with the same evaluation and sits on the dashboard's charts
        base = _printed(nb, "BASELINE")
        assert len(base) == 1, "03 printed no BASELINE line"
        b = base[0]
        print(f"03: MT-OPD held-out {b['curve'][0][1]:.3f} -> {b['curve'][-1][1]:.3f}")
        assert [s for s, _ in b["curve"]] == [s for s, _ in h["curve"]] and b["curve"][0] == h["curve"][0]
        assert b["overlay_steps"] == {"MT-OPD": h["curve"][-1][0]}
    if name[:2] in DEBATING:
        # a real debate: the teachers speak the templates they were trained on (issue 16)
        assert health, f"{name}: no HEALTH line printed"
        for h in health:
            assert h["teacher_turns"] > 0 and h["confidence_parsed"] > 0.5, h
            if h["mean_token_divergence"] == h["mean_token_divergence"]:  # nan: no student scored
                assert h["mean_token_divergence"] < 0.5 * math.log(2), h


@pytest.mark.notebook
@pytest.mark.slow
def test_exported_html_shows_static_fallbacks_offline(tmp_path):
    """nbconvert without widget state: the static text/html renders, no CDN script."""
    from madopd.widgets.export import export_html

    nb = _execute(NB_DIR / "01_divergence_playground.ipynb", tmp_path)
    assert "widgets" not in nb.metadata  # store_widget_state=False
    html = export_html(nb, tmp_path / "01.html")
    assert 'class="madopd-static madopd-playground"' in html
    assert html.count('class="madopd-static-panel"') == 3
    assert not re.search(r"<script[^>]+src=[\"']?https?:", html)
    assert (tmp_path / "01.html").stat().st_size > 0


def test_gallery_screenshots_travel_inside_the_notebook():
    """Issue 29.6: the screenshot table shows from any Lab root (repo or notebooks/): every image
    is a cell attachment equal to the file in docs/img/widgets, no link leaves the folder."""
    import base64

    nb = nbformat.read(str(NB_DIR / "00_gallery.ipynb"), as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert "../docs" not in text and "<script" not in text.lower()
    cell = next(c for c in nb.cells if "attachment:" in c.source)
    refs = set(re.findall(r"attachment:([\w.-]+\.png)", cell.source))
    assert len(refs) == 12 and refs == set(cell.attachments)
    img = NB_DIR.parent / "docs" / "img" / "widgets"
    for name in refs:
        assert base64.b64decode(cell.attachments[name]["image/png"]) == (img / name).read_bytes(), name
