"""Real browser (Debian chromium + Playwright) against a private JupyterLab.

Opens a notebook with the lens, the debate board, the playground and the failure finder on
example records (which carry hostile model text), runs it, then checks: widgets rendered (DOM
counts and a computed colour equal to the Python scale), hostile text stays inert, clicking a
token fills the detail panel and reaches the kernel (a cell prints the selection), and moving
the β / τ sliders changes the values as the Python math predicts.
"""

from __future__ import annotations

import time

import pytest
from labui import run_all, start_session, write_notebook

from madopd.widgets import divmath
from madopd.widgets.board import debate_payload
from madopd.widgets.examples import HOSTILE, example_record, example_run
from madopd.widgets.lens import lens_payload, lens_values
from madopd.widgets.style import clip_max, fmt, seq_color

pytestmark = pytest.mark.ui

SAMPLE = 3  # the example sample whose prompt/response/debate carry the hostile strings
CELLS = [
    "from madopd.widgets.examples import example_record, example_run\n"
    "from madopd.widgets import DivergenceLens, DebateBoard, Playground, FailureFinder\n"
    "rec = example_record()\n"
    "lens = DivergenceLens(rec, 3, decode=lambda i: bytes([i]).decode('latin-1'))\n"
    "lens",
    "board = DebateBoard(record=rec, sample=3)\nboard",
    "Playground()",
    "finder = FailureFinder(example_run(2), board=board)\nfinder",
    "from madopd.widgets import LiveDashboard, LossDecomposition\n"
    "dash = LiveDashboard(rec.teacher_names, records=example_run(3))\ndash",
    "LossDecomposition(rec, 3)",
    "print('SELECTED', lens.selected_token, 'BETA', round(lens.beta, 2), 'ROW', finder.selected,"
    " 'PAUSED', dash.paused)",
]


def _rgb(hex_color: str) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


@pytest.fixture()
def page(lab, browser, tmp_path):
    write_notebook(lab["root"], "ui_widgets.ipynb", CELLS)
    pg = browser.new_page(viewport={"width": 1500, "height": 2400})
    events = {"dialogs": [], "errors": []}
    pg.on("dialog", lambda d: (events["dialogs"].append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: events["errors"].append(str(e)))
    pg.events = events
    yield pg
    pg.screenshot(path=str(tmp_path / "last.png"))  # kept in pytest's tmp dir for debugging
    pg.close()


def _open_and_run(page, url):
    start_session(url, "ui_widgets.ipynb")
    run_all(page, url, "ui_widgets.ipynb", ".madopd-decomposition .js-plotly-plot .bars path", 60)


def _run_cell(page, index: int, expect: str) -> str:
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.scroll_into_view_if_needed()  # the widgets are taller now: the last cell is off screen
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    out = cell.locator(".jp-OutputArea-output")
    deadline = time.time() + 30
    while time.time() < deadline:
        if out.count() and expect in out.first.inner_text():
            return out.first.inner_text()
        time.sleep(0.2)
    raise AssertionError(f"cell {index} never printed {expect!r}: "
                         f"{out.first.inner_text() if out.count() else '(no output)'}")


def test_widgets_in_jupyterlab(lab, page):
    rec = example_record()
    lp = lens_payload(rec, SAMPLE, decode=lambda i: bytes([i]).decode("latin-1"))
    T, K = len(lp["tokens"]), len(lp["teacher_names"])
    _open_and_run(page, lab["url"])

    # --- rendered: DOM counts and a computed colour equal to the Python scale
    lens = page.locator(".madopd-lens")
    for kind in ("fkl", "rkl", "jsd", "recorded"):
        assert lens.locator(f'.madopd-strip[data-kind="{kind}"] .madopd-tok').count() == T
    vmax = clip_max([v for row in lp["values"]["fkl"] for v in row])
    want = _rgb(seq_color(lp["values"]["fkl"][0][0], vmax))
    span = lens.locator('.madopd-strip[data-kind="fkl"] .madopd-tok[data-t="0"]')
    assert span.evaluate("el => getComputedStyle(el).backgroundColor") == want
    board = page.locator(".madopd-debate")
    R = rec.transcripts[SAMPLE].rounds
    assert board.locator(".madopd-cell").count() == K * R
    assert page.locator(".madopd-playground .madopd-pg-panel").count() == 3

    # --- hostile model text is inert: shown as text, no element, no script ran
    assert HOSTILE[0] in lens.locator(".madopd-prompt").inner_text()
    assert HOSTILE[1] in board.inner_text()
    assert page.locator(".madopd img, .madopd script, .madopd i, .madopd-lens b").count() == 0
    assert page.evaluate("() => window.__pwned === undefined")
    assert page.events["dialogs"] == []

    # --- click a token: detail panel + kernel-side selection
    t = 3
    lens.locator(f'.madopd-strip[data-kind="jsd"] .madopd-tok[data-t="{t}"]').click()
    detail = lens.locator(".madopd-detail")
    detail.locator("table").wait_for(timeout=10_000)
    idx, _, _ = divmath.buckets(lp["cand"][t]["s"], lp["cand"][t]["t"][0])
    assert detail.locator("tr.madopd-cand").count() == len(idx)
    assert detail.locator(".madopd-total-jsd").inner_text() == fmt(lp["values"]["jsd"][0][t], 4)

    # --- move β: JSD values change exactly as Python predicts, FKL does not
    jsd_span = lens.locator(f'.madopd-strip[data-kind="jsd"] .madopd-tok[data-t="{t}"]')
    fkl_span = lens.locator(f'.madopd-strip[data-kind="fkl"] .madopd-tok[data-t="{t}"]')
    before = float(jsd_span.get_attribute("data-value"))
    fkl_before = fkl_span.get_attribute("data-value")
    lens.locator(".madopd-beta input").evaluate(
        "el => { el.value = '0.2'; el.dispatchEvent(new Event('input', {bubbles: true})); }")
    after = float(jsd_span.get_attribute("data-value"))
    assert after != before
    assert after == pytest.approx(lens_values(lp, 0.2)["jsd"][0][t], abs=1e-9)
    assert fkl_span.get_attribute("data-value") == fkl_before
    assert "JSD(β=0.20)" in lens.inner_text()

    # --- τ slider on the board recomputes the weights
    weights_before = board.locator(".madopd-weights").inner_text()
    board.locator(".madopd-tau input").evaluate(
        "el => { el.value = '0.3'; el.dispatchEvent(new Event('input', {bubbles: true})); }")
    bp = debate_payload(rec.transcripts[SAMPLE], tau=0.3)
    weights_after = board.locator(".madopd-weights").inner_text()
    assert weights_after != weights_before or bp["weights"] == [1 / K] * K
    for w in bp["weights"]:
        assert fmt(w) in weights_after

    # --- decomposition and dashboard rendered
    assert page.locator(".madopd-decomposition .js-plotly-plot .bars path").count() == T * K
    assert page.evaluate("() => document.querySelector('.madopd-dash-plot').data.length") == 1 + 4 + K + 1
    page.locator(".madopd-dashboard .madopd-pause").click()
    assert page.locator(".madopd-dashboard .madopd-pause").inner_text() == "resume"

    # --- failure finder: a near-constant column (weight entropies 1.066..1.099) is not shaded,
    # a varying one is
    from madopd.widgets.failures import failures_payload

    assert failures_payload(example_run(2))["constant"] == ["w_entropy"]
    finder = page.locator(".madopd-failures")
    bg = "els => els.map(e => e.style.background)"
    assert set(finder.locator('tbody td[data-col="w_entropy"]').evaluate_all(bg)) == {""}
    assert "" not in finder.locator('tbody td[data-col="loss"]').evaluate_all(bg)
    assert "not shaded" in finder.locator('tbody td[data-col="w_entropy"]').first.get_attribute("title")

    # --- failure finder: clicking a row reaches the kernel and drives the board
    row = page.locator(".madopd-failures tbody tr").first
    step, sample = int(row.get_attribute("data-step")), int(row.get_attribute("data-sample"))
    row.click()
    text = _run_cell(page, len(CELLS) - 1, "SELECTED")
    assert f"SELECTED {t} BETA 0.2" in text
    assert "PAUSED True" in text
    assert f"'step': {step}" in text and f"'sample': {sample}" in text
    runs = example_run(2)
    want_state = runs[step].state_ids[sample]
    page.wait_for_function(
        "s => document.querySelector('.madopd-debate').innerText.includes('state ' + s)",
        arg=want_state, timeout=10_000)

    # --- playground animates (values appear) and no page errors happened
    page.wait_for_function(
        "() => [...document.querySelectorAll('.madopd-pg-value')].every(e => e.textContent.length > 0)",
        timeout=10_000)
    assert page.events["errors"] == []
