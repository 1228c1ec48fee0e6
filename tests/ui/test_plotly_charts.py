"""The plotly charts in a real JupyterLab + Chromium, offline (nothing but 127.0.0.1 answers).

plotly.js comes from the kernel (the python package's own dist file, one hidden model per
kernel), never from a CDN: the test fails on any request that leaves 127.0.0.1. Checked:
a dashboard overlays two runs (this run solid, the overlay dashed, both named in a legend), and
one that follows another live dashboard shows the steps that dashboard receives later;
hovering one chart shows ONE cursor that reads every chart at that step (unified hover across
the stacked panels); the mode bar's PNG and SVG buttons and the CSV button each download a
real file (PNG magic, an <svg root, the CSV header and one row per run and step); the
decomposition's difference view draws bars on their own scale when weights are near equal;
the playground draws its curves on plotly; the lens downloads its strips as CSV.
"""

from __future__ import annotations

import csv
import io

import pytest
from labui import run_all, start_session, write_notebook

pytestmark = pytest.mark.ui

CELLS = [
    "from madopd.widgets.examples import example_record, example_run\n"
    "from madopd.widgets import LiveDashboard, LossDecomposition, Playground\n"
    "rec = example_record()\n"
    "dash = LiveDashboard.compare({'MAD-OPD': example_run(6), 'MT-OPD <b>x</b>': example_run(4)})\n"
    "dash",
    "LossDecomposition(rec, 0)",
    "Playground()",
    "from madopd.widgets import DivergenceLens\nDivergenceLens(rec, 0)",
    "other = LiveDashboard(rec.teacher_names)  # a second run, followed live by `mine`\n"
    "mine = LiveDashboard(rec.teacher_names, records=example_run(2), name='mine')\n"
    "mine.add_run('other', other)\nmine",
    "for r in example_run(3):\n    other.on_step(r)",
    "print('CHARTS-DONE')",
]


@pytest.fixture()
def page(lab, browser, tmp_path):
    write_notebook(lab["root"], "ui_plotly.ipynb", CELLS)
    ctx = browser.new_context(viewport={"width": 1400, "height": 2600}, accept_downloads=True)
    pg = ctx.new_page()
    outside: list[str] = []
    pg.on("request", lambda r: outside.append(r.url) if not r.url.startswith(
        ("http://127.0.0.1", "blob:", "data:", "ws://127.0.0.1")) else None)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.outside, pg.errors = outside, errors
    yield pg
    pg.screenshot(path=str(tmp_path / "last.png"))
    ctx.close()


def _download(pg, click) -> tuple[str, bytes]:
    with pg.expect_download(timeout=30000) as info:
        click()
    d = info.value
    return d.suggested_filename, open(d.path(), "rb").read()


def test_dashboard_overlay_cursor_and_exports(lab, page):
    start_session(lab["url"], "ui_plotly.ipynb")
    run_all(page, lab["url"], "ui_plotly.ipynb", "text=CHARTS-DONE", 240)
    dash = page.locator(".madopd-dashboard").first
    dash.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=60000)
    assert not page.outside, page.outside  # plotly.js came from the kernel, not a CDN
    assert not [e for e in page.errors if "plotly" in e.lower()], page.errors
    # overlay: both runs in the legends; the overlay's lines are dashed
    legend = " ".join(dash.locator(".legendtext").all_text_contents())
    assert "MAD-OPD · loss" in legend and "MT-OPD <b>x</b> · loss" in legend  # markup stays text
    dashed = dash.locator("path.js-line[style*='stroke-dasharray']").count()
    assert dashed >= 4, dashed  # one per panel at least
    assert dash.locator(".madopd-run").count() == 2
    # weights axis spans [0, 1] even though the example weights are close together
    rng = page.evaluate("() => document.querySelector('.madopd-dash-plot')._fullLayout.yaxis3.range")
    assert rng[0] <= 0 and rng[1] >= 1, rng
    # one hover cursor shared by the four stacked panels
    box = dash.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    page.mouse.move(box["x"] + box["width"] * 0.41, box["y"] + box["height"] * 0.5, steps=8)
    page.wait_for_timeout(800)
    hover = " ".join(dash.locator(".hoverlayer").all_text_contents())
    for series in ("loss", "p50", "n_eff"):
        assert series in hover, hover
    # downloads: PNG and SVG from the mode bar, CSV from the button
    dash.locator(".js-plotly-plot").first.hover()
    name, data = _download(page, lambda: dash.locator("button.modebar-btn[data-title*='png' i]").first.click())
    assert name.endswith(".png") and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    name, data = _download(page, lambda: dash.locator("button.modebar-btn[data-title='Download plot as SVG']").first.click())
    assert name.endswith(".svg") and b"<svg" in data[:400]
    name, data = _download(page, lambda: dash.locator(".madopd-csv").first.click())
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert name == "madopd-dashboard.csv" and rows[0][:3] == ["run", "step", "loss"]
    assert len(rows) == 1 + 6 + 4 and {r[0] for r in rows[1:]} == {"MAD-OPD", "MT-OPD <b>x</b>"}
    # a live overlay: steps the other dashboard received after display reach this chart
    page.wait_for_function(
        "() => { const gds = document.querySelectorAll('.madopd-dash-plot');"
        " const t = gds[gds.length - 1].data.find((d) => d.name === 'other · loss');"
        " return t && t.x.length === 3; }", timeout=30000)


def test_decomposition_views_and_playground_curves(lab, page):
    start_session(lab["url"], "ui_plotly.ipynb")
    run_all(page, lab["url"], "ui_plotly.ipynb", "text=CHARTS-DONE", 240)
    dec = page.locator(".madopd-decomposition").first
    dec.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=60000)
    n_bars = dec.locator(".bars path").count()
    assert n_bars > 0
    cap = dec.locator(".madopd-caption").text_content()
    dec.locator("select.madopd-view").select_option("diff")
    page.wait_for_timeout(500)
    assert dec.locator(".madopd-caption").text_content() != cap
    rng = page.evaluate("() => document.querySelector('.madopd-decomp-plot')._fullLayout.yaxis.range")
    assert rng[0] < 0 < rng[1], rng  # the difference has both signs, on its own scale
    assert "difference" in dec.locator(".madopd-sum").text_content() or "diff" in dec.locator(".madopd-sum").text_content()
    name, data = _download(page, lambda: dec.locator(".madopd-csv").click())
    assert name == "madopd-decomposition.csv" and data.startswith(b"t,token,teacher,w,D,w*D,D/K")
    # the lens's table: one row per token, one column per (strip, teacher)
    from madopd.widgets.examples import example_record

    rec = example_record()
    name, data = _download(page, lambda: page.locator(".madopd-lens .madopd-csv").click())
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert name == "madopd-lens.csv" and rows[0][:2] == ["t", "token"]
    assert len(rows) == 1 + len(rec.response_tokens[0])
    K, ncols = len(rec.teacher_names), len(rows[0]) - 2
    assert ncols % K == 0 and ncols // K in (3, 4), rows[0]  # fkl, rkl, jsd (+ recorded loss)
    assert f"jsd {rec.teacher_names[0]}" in rows[0]
    assert all(float(v) >= 0 for r in rows[1:] for v in r[2:] if v)
    pg_plot = page.locator(".madopd-playground .js-plotly-plot").first
    pg_plot.wait_for(timeout=60000)
    page.wait_for_timeout(1500)
    assert page.locator(".madopd-playground .js-plotly-plot .scatterlayer .trace").count() == 6
