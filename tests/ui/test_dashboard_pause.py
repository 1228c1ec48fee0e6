"""The live dashboard's pause, measured in a real browser against a training thread.

The kernel trains the tutorial zoo's MAD-OPD job in ``LiveDashboard.start`` (a background
thread) while the last cell awaits ``dash.wait()`` (notebook 03 under "Run All"), and logs, per step boundary and per change of the synced ``paused`` trait, the wall
time and the number of finished steps into a JSON file. The browser clicks "pause" while
training runs, reading the step the dashboard shows at that instant. Then: the click reaches
the kernel within a second, the training thread stops at the next step boundary (at most one
more step than the dashboard showed), stays paused, and resumes on the second click (which a
trait sync would never deliver while the cell awaits: see widgets/dashboard.js).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from labui import run_all, start_session, stop_sessions, wait, write_notebook

pytestmark = pytest.mark.ui

REPO = Path(__file__).resolve().parents[2]
STEPS = 30
# Each step is padded to >= 0.4 s (Clock.on_step): on an idle machine this tiny job's step takes
# 0.14 s, so 14 unpadded steps ended (in a CI dry run) before the click could land, and the test
# waited for a pause that training had outrun. The padding runs on the training thread, as a
# slower model's step would; the pause is still taken at the step boundary after it.
CELLS = [
    "import json, time, torch\n"
    "torch.set_num_threads(2)\n"
    "from transformers.utils import logging as hf_logging\n"
    "hf_logging.disable_progress_bar()\n"
    "from madopd.toyworld.zoo import load_zoo, profile_spec\n"
    "from madopd.distill import Distiller\n"
    "from madopd.widgets import LiveDashboard\n"
    "zoo = load_zoo(profile_spec('tutorial'), progress=False, log=lambda *a: None)\n"
    "tools, _ = zoo.tasks()\n"
    f"cfg = zoo.config('mad_opd', rounds=2, batch_size=8, max_steps={STEPS}, lr=3e-3)\n"
    "d = Distiller.from_config(cfg, tools, debate_protocol=zoo.debate_protocol(2))\n"
    "dash = LiveDashboard(d.teacher_names, every=10, total_steps=cfg.max_steps)\n"
    "import madopd; print('MADOPD', madopd.__file__)\n"
    "LOG = {'steps': [], 'paused': []}\n"
    "def dump():\n"
    "    with open('pause_log.json', 'w') as f: json.dump(LOG, f)\n"
    "dash.observe(lambda ch: (LOG['paused'].append([time.time(), ch['new'],"
    " len(LOG['steps'])]), dump()), names='paused')\n"
    "class Clock:\n"
    "    def on_step(self, rec):\n"
    "        LOG['steps'].append([time.time(), rec.step]); dump(); time.sleep(0.4)\n"
    "d_train = d.train\n"
    "d.train = lambda steps, callbacks=(), progress=False: d_train(steps, [Clock(), *callbacks], progress)\n"
    "print('READY')",
    "dash",
    f"dash.start(d, {STEPS})",
    # As notebook 03 does: under "Run All" this cell runs at once and waits for the end of
    # training; awaiting (not join()) keeps the kernel handling the pause button meanwhile.
    "records = await dash.wait()\nprint('DONE', len(records))",
]

STATUS_STEP = re.compile(r"step (\d+) / ")
CLICK_JS = """() => {
  const s = document.querySelector('.madopd-dashboard .madopd-status').textContent;
  document.querySelector('.madopd-dashboard .madopd-pause').click();
  return {status: s, t: Date.now() / 1000};
}"""


def _shown_step(page) -> int:
    m = STATUS_STEP.search(page.locator(".madopd-dashboard .madopd-status").inner_text())
    return int(m.group(1)) if m else -1


def _log(root) -> dict:
    try:
        return json.loads((root / "pause_log.json").read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return {"steps": [], "paused": []}


def test_pause_takes_effect_at_the_next_step_boundary(lab, browser):
    write_notebook(lab["root"], "ui_pause.ipynb", CELLS)
    start_session(lab["url"], "ui_pause.ipynb")
    pg = browser.new_page(viewport={"width": 1280, "height": 1600})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        run_all(pg, lab["url"], "ui_pause.ipynb", ".madopd-dashboard .madopd-pause", 240)
        deadline = time.time() + 240
        while _shown_step(pg) < 3:  # let a few steps go by: the thread is mid-step now
            assert time.time() < deadline, "training never reached step 3"
            time.sleep(0.2)
        # the last cell is still running (awaiting dash.wait()): the kernel is busy, as under Run All
        assert pg.locator(".jp-Notebook-ExecutionIndicator[data-status='busy']").count() == 1
        assert "Traceback" not in pg.locator(".jp-Notebook").inner_text()
        click = pg.evaluate(CLICK_JS)
        shown = int(STATUS_STEP.search(click["status"]).group(1))
        wait(pg, ".madopd-dashboard .madopd-status:has-text('paused after step')", 60)
        status = pg.locator(".madopd-dashboard .madopd-status").inner_text()
        paused_at = int(re.search(r"paused after step (\d+)", status).group(1))
        time.sleep(3)  # paused means paused: no step finishes meanwhile
        log = _log(lab["root"])
        n_paused = len(log["steps"])
        assert log["steps"][-1][1] == paused_at, (log["steps"][-3:], paused_at)
        t_trait, value, done_then = log["paused"][0]
        assert value is True
        latency = t_trait - click["t"]
        t_boundary = log["steps"][-1][0]
        print(f"PAUSE shown step {shown}, paused after {paused_at} "
              f"({paused_at - shown} step(s) later), click->kernel {latency:.3f} s, "
              f"click->boundary {t_boundary - click['t']:.2f} s, step time "
              f"{(log['steps'][-1][0] - log['steps'][0][0]) / max(1, n_paused - 1):.2f} s")
        assert latency < 1.0, f"the click took {latency:.2f} s to reach the kernel"
        assert paused_at - done_then <= 1  # the step in progress when the flag arrived, no more
        assert paused_at - shown <= 1, f"shown {shown}, paused after {paused_at}"
        pg.locator(".madopd-dashboard .madopd-pause").click()  # resume
        deadline = time.time() + 120
        while len(_log(lab["root"])["steps"]) <= n_paused:
            assert time.time() < deadline, "training did not resume"
            time.sleep(0.2)
        text = pg.locator(".jp-Notebook").inner_text()
        assert "Traceback" not in text and "Error" not in text, text[-3000:]
        assert f"MADOPD {REPO / 'madopd' / '__init__.py'}" in text  # the checkout under test
        assert errors == []
    finally:
        pg.close()
        stop_sessions(lab["url"], "ui_pause.ipynb")  # the kernel: no training left running
