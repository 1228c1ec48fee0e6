"""Every widget on trained-teacher data, in JupyterLab's light and dark themes (real chromium).

The kernel trains the toy world's "tutorial" zoo (cached; ~40 s the first time) and runs a short
MAD-OPD job with the toy debate templates, then shows each widget. For each theme the test checks
axes (ticks on every dashboard panel, drawn by plotly), legends, a readable text contrast (WCAG ratio >= 4.5
between each widget's text colour and the background behind it, and for the chart tick labels),
and saves a screenshot per widget and theme: into ``$MADOPD_SCREENSHOT_DIR`` when set (the
committed ``docs/img/widgets/*.png`` come from there), else pytest's tmp dir.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from labui import api, run_all, start_session, wait, write_notebook

pytestmark = pytest.mark.ui

WIDGETS = ("debate", "lens", "decomposition", "failures", "dashboard", "playground")
THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}
CELLS = [
    "import os, torch\n"
    "torch.set_num_threads(2)\n"
    "from transformers.utils import logging as hf_logging\n"
    "hf_logging.disable_progress_bar()\n"
    "from madopd.toyworld.zoo import load_zoo, profile_spec\n"
    "from madopd.distill import Distiller\n"
    "from madopd.widgets import (DebateBoard, DivergenceLens, LossDecomposition, FailureFinder,\n"
    "                            LiveDashboard, Playground, make_probe)\n"
    "zoo = load_zoo(profile_spec('tutorial'), progress=False, log=lambda *a: None)\n"
    "tools, _ = zoo.tasks()\n"
    "cfg = zoo.config('mad_opd', rounds=2, batch_size=8, max_steps=24, lr=3e-3, record_every=1,\n"
    "                 record_topk=5)\n"
    "d = Distiller.from_config(cfg, tools, debate_protocol=zoo.debate_protocol(2))\n"
    "probe = make_probe(d, tools.eval_states()[0], max_new_tokens=12)\n"
    "dash = LiveDashboard(d.teacher_names, every=4, probe=probe, total_steps=cfg.max_steps)\n"
    "records = d.train(cfg.max_steps, callbacks=[dash], progress=False)\n"
    "last = records[-1]\n"
    "b = next((i for i, t in enumerate(last.transcripts) if len({m.answer for m in t.messages}) > 1), 0)\n"
    "refs = {s.id: s.reference for s in tools.train_states()}\n"
    "print('READY', b)",
    "board = DebateBoard.browse(records[-6:], references=refs)\nboard.show_sample(last, b)\nboard",
    "DivergenceLens(last, b, decode=d.student.tokenizer)",
    "LossDecomposition(last, b)",
    "FailureFinder(records[-6:], references=refs)",
    "dash",
    "Playground()",
]

CONTRAST_JS = """
(sel) => {
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const v = m[1].split(',').map(Number); return {r: v[0], g: v[1], b: v[2], a: v.length > 3 ? v[3] : 1}; };
  const lum = ({r, g, b}) => { const f = (x) => { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bgOf = (el) => { for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
    if (c && c.a > 0.5) return c; } return {r: 255, g: 255, b: 255}; };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const root = document.querySelector(sel);
  const bg = bgOf(root);
  const out = {text: ratio(parse(getComputedStyle(root).color), bg)};
  const tick = root.querySelector('.ytick text, svg text');
  if (tick) out.svg = ratio(parse(getComputedStyle(tick).fill), bgOf(tick.parentElement));
  return out;
}
"""


def _set_theme(url: str, theme: str) -> None:
    api(url, "/lab/api/settings/@jupyterlab/apputils-extension:themes",
        {"raw": json.dumps({"theme": theme})}, method="PUT")


@pytest.fixture()
def shots(tmp_path) -> Path:
    d = Path(os.environ.get("MADOPD_SCREENSHOT_DIR") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_every_widget_light_and_dark(lab, browser, shots):
    write_notebook(lab["root"], "ui_shots.ipynb", CELLS)
    errors: list[str] = []
    results = {}
    for theme, theme_name in THEMES.items():
        _set_theme(lab["url"], theme_name)
        start_session(lab["url"], "ui_shots.ipynb")
        pg = browser.new_page(viewport={"width": 1280, "height": 2000})
        pg.on("pageerror", lambda e: errors.append(str(e)))
        try:
            # the first cell trains (about a minute on an idle 2-core box; much longer loaded)
            run_all(pg, lab["url"], "ui_shots.ipynb", ".madopd-playground .madopd-pg-panel", 1200)
            wait(pg, ".madopd-dashboard .js-plotly-plot .ytick", 60)
            time.sleep(1.5)  # the playground's first frames
            assert pg.evaluate("() => document.body.dataset.jpThemeLight") == \
                ("true" if theme == "light" else "false")
            dash = pg.locator(".madopd-dashboard")
            # one plotly figure: four panels (each with y ticks and a legend) on one step axis
            axes = pg.evaluate("() => { const gd = document.querySelector('.madopd-dash-plot');"
                               " return ['yaxis', 'yaxis2', 'yaxis3', 'yaxis4'].map((a) =>"
                               " gd._fullLayout[a]._vals.length); }")
            assert all(n >= 2 for n in axes), axes
            assert dash.locator(".xtick").count() >= 2
            assert dash.locator(".infolayer text[class^='legend']").count() >= 4  # legendtext, legend2text, …
            assert "step 24 / 24" in dash.locator(".madopd-status").inner_text()
            lens = pg.locator(".madopd-lens")
            assert lens.locator(".madopd-legend").count() >= 1
            assert "top-k covers" in lens.inner_text()
            board = pg.locator(".madopd-debate")
            assert board.locator(".madopd-badge").count() >= 2  # confidences parsed
            assert "confidence missing" not in board.inner_text()
            for name in WIDGETS:
                sel = f".madopd-{name}"
                c = pg.evaluate(CONTRAST_JS, sel)
                results[(theme, name)] = c
                assert c["text"] >= 4.5, (theme, name, c)
                if "svg" in c:
                    assert c["svg"] >= 3.0, (theme, name, c)  # large-ish chart text (WCAG AA 3:1)
                el = pg.locator(sel).first
                el.scroll_into_view_if_needed()
                el.screenshot(path=str(shots / f"{name}-{theme}.png"))
            if theme == "light":
                _interactions(pg)
        finally:
            pg.close()
    _set_theme(lab["url"], THEMES["light"])
    assert not errors, errors
    print({f"{t}/{n}": {k: round(v, 1) for k, v in c.items()} for (t, n), c in results.items()})


def _interactions(pg) -> None:
    """The new controls respond: log-y and smoothing, the lens's shared scale, the finder's keys."""
    dash = pg.locator(".madopd-dashboard")
    gd = "document.querySelector('.madopd-dash-plot')"
    n_traces = pg.evaluate(f"() => {gd}.data.length")
    dash.locator(".madopd-log").check()
    pg.wait_for_function(f"() => {gd}._fullLayout.yaxis.type === 'log'", timeout=5000)
    dash.locator(".madopd-smooth").evaluate(
        "el => { el.value = '0.6'; el.dispatchEvent(new Event('input', {bubbles: true})); }")
    pg.wait_for_function(f"() => {gd}.data.length > {n_traces}", timeout=5000)  # raw curves stay faint
    lens = pg.locator(".madopd-lens")
    shared = lens.locator(".madopd-legend").count()
    lens.locator(".madopd-shared").uncheck()
    assert lens.locator(".madopd-legend").count() > shared  # one legend per strip now
    finder = pg.locator(".madopd-failures")
    finder.locator("tbody tr").first.click()
    first_sel = finder.locator("tr.madopd-sel").get_attribute("data-step"), \
        finder.locator("tr.madopd-sel").get_attribute("data-sample")
    finder.locator(".madopd-finder-scroll").press("ArrowDown")
    second = finder.locator("tr.madopd-sel").get_attribute("data-step"), \
        finder.locator("tr.madopd-sel").get_attribute("data-sample")
    assert second != first_sel
    detail = finder.locator(".madopd-finder-detail").inner_text()
    assert "student" in detail and "reference" in detail and "A" in detail


def test_untrusted_gallery_keeps_its_charts(lab, browser):
    """A fresh clone's notebooks are untrusted: Lab sanitises their HTML and drops inline SVG.
    The gallery's charts are SVG images, which survive (and load)."""
    import shutil

    src = Path(__file__).resolve().parents[2] / "notebooks" / "00_gallery.ipynb"
    shutil.copy(src, lab["root"] / "gallery_copy.ipynb")  # never signed here: untrusted
    pg = browser.new_page(viewport={"width": 1300, "height": 1600})
    try:
        pg.goto(f"{lab['url']}/lab/tree/gallery_copy.ipynb?reset")
        wait(pg, ".jp-OutputArea-output .madopd-static", 90)
        imgs = pg.locator('.jp-OutputArea-output img[src^="data:image/svg+xml"]')
        deadline = time.time() + 30
        while imgs.count() < 8 and time.time() < deadline:
            pg.mouse.wheel(0, 1500)
            time.sleep(0.5)
        assert imgs.count() >= 8
        assert imgs.first.evaluate("el => el.complete && el.naturalWidth > 0")
    finally:
        pg.close()


@pytest.mark.parametrize("folder", ["", "notebooks"])
def test_gallery_screenshots_show_from_either_lab_root(lab, browser, folder):
    """The gallery's screenshot table is cell attachments, not links: its 12 images load whether
    Lab was opened at the repository root (the notebook in ``notebooks/``) or in ``notebooks/``
    itself (where ``../docs`` would be outside the root)."""
    import shutil

    src = Path(__file__).resolve().parents[2] / "notebooks" / "00_gallery.ipynb"
    dest = lab["root"] / folder
    dest.mkdir(exist_ok=True)
    shutil.copy(src, dest / "gallery_roots.ipynb")
    path = f"{folder}/gallery_roots.ipynb" if folder else "gallery_roots.ipynb"
    pg = browser.new_page(viewport={"width": 1300, "height": 1600})
    try:
        pg.goto(f"{lab['url']}/lab/tree/{path}?reset")
        wait(pg, ".jp-MarkdownOutput img", 90)
        imgs = pg.locator(".jp-MarkdownOutput img")
        deadline = time.time() + 30
        while imgs.count() < 12 and time.time() < deadline:
            time.sleep(0.5)
        assert imgs.count() >= 12
        loaded = imgs.evaluate_all("els => els.map((e) => e.complete && e.naturalWidth > 0)")
        assert all(loaded), loaded
    finally:
        pg.close()
