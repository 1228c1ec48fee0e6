"""A notebook executed in JupyterLab, saved, and reopened later renders its widgets.

Lab prefers the widget-view output of a trusted notebook and its widget renderer never falls
back to the ``text/html`` / ``image/png`` beside it: without saved widget state a reopened
notebook shows "Error displaying widget: model not found". madopd's JupyterLab default (the
drop-in of ``madopd notebooks setup`` / a pip install, which the ``lab`` fixture has) turns
the widget manager's ``saveState`` on, with no user setting. The test executes a notebook,
saves it, shuts its kernel down, opens it in a fresh browser context (a fresh Lab session; the
kernel Lab starts holds none of the old widget models) and asserts every widget renders and no
error text shows; then, as the control, with the user setting ``saveState: false`` the same
steps do show "model not found" (the default is what makes the difference).
"""

from __future__ import annotations

import json
import time

import nbformat
import pytest
from labui import api, run_all, stop_sessions, wait, write_notebook

from madopd.widgets.labsetup import WIDGET_MANAGER_PLUGIN

pytestmark = pytest.mark.ui

CELLS = [
    "from madopd.widgets.examples import example_record, example_run\n"
    "from madopd.widgets import DebateBoard, DivergenceLens, LiveDashboard, FailureFinder\n"
    "rec = example_record()\n"
    "DebateBoard(record=rec, sample=1)",
    "DivergenceLens(rec, 1)",
    "LiveDashboard(rec.teacher_names, records=example_run(3))",
    "FailureFinder(example_run(2))",
]
RENDERED = {".madopd-debate .madopd-cell": 1, ".madopd-lens .madopd-tok": 1,
            ".madopd-dashboard .js-plotly-plot .main-svg": 1, ".madopd-failures tbody tr": 1}
ERRORS = ("model not found", "Error displaying widget")


def _execute_save_close(lab, browser, name: str, until: str) -> None:
    """Run every cell in Lab, save (Lab writes widget state if saveState is on), shut down."""
    path = lab["root"] / name
    api(lab["url"], "/api/sessions", {"path": name, "type": "notebook", "name": name,
                                      "kernel": {"name": "python3"}})
    ctx = browser.new_context(viewport={"width": 1200, "height": 1800})
    pg = ctx.new_page()
    try:
        run_all(pg, lab["url"], name, until, 120)
        mtime = path.stat().st_mtime
        pg.locator(".jp-Notebook").first.click()
        pg.keyboard.press("Control+s")
        deadline = time.time() + 30
        while path.stat().st_mtime == mtime:
            assert time.time() < deadline, "JupyterLab did not save the notebook"
            time.sleep(0.3)
        time.sleep(1)
    finally:
        ctx.close()
    stop_sessions(lab["url"], name)
    assert not [s for s in api(lab["url"], "/api/sessions", method="GET")
                if s["path"].endswith(name)]  # the kernel that made the widgets is gone


def _reopen(lab, browser, name: str):
    """A fresh browser context on the saved notebook; returns (context, page) once it settled."""
    ctx = browser.new_context(viewport={"width": 1200, "height": 1800})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{lab['url']}/lab/tree/{name}?reset")
    wait(pg, ".jp-Notebook .jp-OutputArea-output", 90)
    pg.wait_for_timeout(4000)  # the widget manager restores (or gives up) after the kernel starts
    return ctx, pg, errors


def _set_user_save_state(url: str, value: bool | None) -> None:
    raw = "{}" if value is None else json.dumps({"saveState": value})
    api(url, f"/lab/api/settings/{WIDGET_MANAGER_PLUGIN}", {"raw": raw}, method="PUT")


def test_reopened_notebook_renders_its_widgets_by_default(lab, browser):
    _set_user_save_state(lab["url"], None)
    setting = api(lab["url"], f"/lab/api/settings/{WIDGET_MANAGER_PLUGIN}", method="GET")
    assert json.loads(setting["raw"] or "{}") == {}  # no user setting ...
    assert "saveState" not in setting["settings"]
    assert setting["schema"]["properties"]["saveState"]["default"] is True  # madopd's default
    write_notebook(lab["root"], "ui_reopen.ipynb", CELLS)
    _execute_save_close(lab, browser, "ui_reopen.ipynb", ".madopd-failures tbody tr")
    saved = nbformat.read(str(lab["root"] / "ui_reopen.ipynb"), as_version=4)
    state = saved.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    views = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
             for c in saved.cells for o in c.outputs if "data" in o
             and "application/vnd.jupyter.widget-view+json" in o["data"]]
    assert len(views) == len(CELLS) and all(v in state for v in views)
    assert all("text/html" in o["data"] and "image/png" in o["data"]
               for c in saved.cells for o in c.outputs if "data" in o)  # for other viewers
    ctx, pg, errors = _reopen(lab, browser, "ui_reopen.ipynb")
    try:
        for sel, n in RENDERED.items():
            wait(pg, sel, 30)
            assert pg.locator(sel).count() >= n, sel
            assert pg.locator(sel).first.is_visible(), sel
        # plotly.js itself came back from the saved state (no kernel had sent it): ticks drawn
        assert pg.locator(".madopd-dashboard .js-plotly-plot .ytick").count() >= 8
        body = pg.locator("body").inner_text()
        assert not [e for e in ERRORS if e in body], body[:2000]
        assert errors == []
    finally:
        ctx.close()
        stop_sessions(lab["url"], "ui_reopen.ipynb")


def test_control_without_saved_state_the_error_shows(lab, browser):
    """The same steps with the user's ``saveState: false``: the widgets are lost (so the test
    above passes because of the default, not by accident)."""
    _set_user_save_state(lab["url"], False)
    try:
        write_notebook(lab["root"], "ui_reopen_off.ipynb", CELLS[:1])
        _execute_save_close(lab, browser, "ui_reopen_off.ipynb", ".madopd-debate .madopd-cell")
        saved = nbformat.read(str(lab["root"] / "ui_reopen_off.ipynb"), as_version=4)
        assert "widgets" not in saved.metadata
        ctx, pg, _ = _reopen(lab, browser, "ui_reopen_off.ipynb")
        try:
            deadline = time.time() + 30
            while "model not found" not in pg.locator("body").inner_text():
                assert time.time() < deadline, "expected Lab's 'model not found' without state"
                time.sleep(0.5)
            assert pg.locator(".madopd-debate .madopd-cell").count() == 0
        finally:
            ctx.close()
            stop_sessions(lab["url"], "ui_reopen_off.ipynb")
    finally:
        _set_user_save_state(lab["url"], None)
