"""Real browser (issue 29): the finder's teacher filters on a run with a known confidently wrong
teacher, one click from a row to the linked board / lens, the board's prompt, reference and
confidence-source labels, browsing debates (prev/next, search), and the lens's sampled token
when it lies outside a teacher's top-k."""

from __future__ import annotations

import time

import pytest
from labui import run_all, start_session, write_notebook

pytestmark = pytest.mark.ui

CELLS = [
    "from madopd.widgets.examples import example_judged_run\n"
    "from madopd.widgets import DebateBoard, DivergenceLens, FailureFinder\n"
    "recs, refs = example_judged_run()\n"
    "# the lens's record: at token 0 teacher A's top-k lacks the sampled token\n"
    "import copy\n"
    "lrec = copy.deepcopy(recs[0])\n"
    "sid = lrec.response_ids[0][0]\n"
    "tk = lrec.teacher_topk[0]\n"
    "keep = [j for j, i in enumerate(tk['ids'][0][0]) if i != sid]\n"
    "tk['ids'][0][0] = [tk['ids'][0][0][j] for j in keep]\n"
    "tk['logprobs'][0][0] = [tk['logprobs'][0][0][j] for j in keep]\n"
    "lens = DivergenceLens(lrec, 0, decode=lambda i: bytes([i]).decode('latin-1'))\n"
    "lens",
    "board = DebateBoard.browse(recs, references=refs)\nboard",
    "finder = FailureFinder(recs, board=board, references=refs)\nfinder",
]


@pytest.fixture()
def page(lab, browser, tmp_path):
    write_notebook(lab["root"], "ui_finder.ipynb", CELLS)
    pg = browser.new_page(viewport={"width": 1500, "height": 2600})
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    pg.screenshot(path=str(tmp_path / "last.png"))
    pg.close()


def _until(fn, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return True
        time.sleep(0.2)
    return fn()


def test_finder_board_and_lens(lab, page):
    start_session(lab["url"], "ui_finder.ipynb")
    run_all(page, lab["url"], "ui_finder.ipynb", ".madopd-failures tbody tr", 90)
    finder, board, lens = (page.locator(s) for s in (".madopd-failures", ".madopd-debate", ".madopd-lens"))

    # --- the teacher-wrong filter leaves exactly the confidently wrong teacher's state
    finder.locator('input[data-key="onlyConfWrong"]').check()
    rows = finder.locator("tbody tr")
    assert rows.count() == 2
    assert set(rows.locator('td[data-col="state_id"]').all_inner_texts()) == {"tools/0/621#3"}
    finder.locator('input[data-key="onlyCopied"]').check()
    assert rows.count() == 1 and rows.first.get_attribute("data-step") == "0"
    rows.first.click()
    detail = finder.locator(".madopd-finder-detail")
    assert detail.locator('tr.madopd-teacher-row[data-teacher="1"]').inner_text().count("✗ wrong") == 1
    assert detail.locator(".madopd-reference").inner_text() == "ans 5"
    assert "step 0 ✗ (copied)" in detail.locator(".madopd-history").inner_text()
    # one click reached the kernel and the linked board shows that debate with its reference
    assert _until(lambda: board.locator(".madopd-reference").inner_text() == "ans 5")
    assert "tools/0/621#3" in board.inner_text()
    # unchecking the copy filter and filtering flips: the detail pane leaves the hidden row
    finder.locator('input[data-key="onlyCopied"]').uncheck()
    finder.locator('input[data-key="onlyConfWrong"]').uncheck()
    finder.locator('input[data-key="onlyFlipped"]').check()
    assert set(rows.locator('td[data-col="state_id"]').all_inner_texts()) == {"tools/0/7#2"}
    assert "ans 58" not in detail.inner_text()

    # --- board: prompt, reference, source labels; browse with next / search
    board.locator(".madopd-next").click()
    assert _until(lambda: board.locator(".madopd-browse-pos").inner_text() == "debate 2 of 6")
    assert "tools/0/7#2" in board.inner_text()
    assert board.locator(".madopd-prompt").inner_text().startswith("T:sum a b")
    assert board.locator(".madopd-reference").inner_text() == "add 1 2"
    badges = board.locator('.madopd-cell[data-round="2"] .madopd-badge')
    assert badges.nth(0).inner_text() == "conf 60 (fallback: forced tag)"
    assert "madopd-fallback" in badges.nth(0).get_attribute("class")
    assert badges.nth(1).inner_text() == "conf 95 (written)"
    search = board.locator(".madopd-browse-search")
    search.fill("step 1 · tools/0/9")
    search.press("Enter")
    assert _until(lambda: board.locator(".madopd-browse-pos").inner_text() == "debate 6 of 6")
    assert board.locator(".madopd-next").is_disabled()

    # --- arrow keys move a focused slider (JupyterLab's cell shortcuts must not take them)
    tau = board.locator(".madopd-tau input")
    tau.focus()
    start = float(tau.input_value())
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowRight")
    assert float(tau.input_value()) == pytest.approx(start + 0.1)
    assert _until(lambda: board.locator(".madopd-tau .madopd-val").inner_text() == f"{start + 0.1:.2f}")

    # --- lens: the sampled token outside teacher A's top-k still has its own row
    lens.locator('.madopd-strip[data-kind="jsd"] .madopd-tok[data-t="0"]').click()
    row = lens.locator(".madopd-detail tr.madopd-sampled-rest")
    assert row.count() == 1 and "(sampled, in rest)" in row.inner_text()
    assert "– (not in top-k)" in row.inner_text()
    assert page.errors == []
