"""Live dashboard: records folded into series, probe ribbon, pause honoured, static charts."""

import re
import threading
import time

import pytest

from madopd.widgets.dashboard import add_probe, dashboard_payload, render_dashboard_html
from madopd.widgets.examples import example_probe, example_run
from madopd.widgets.style import quantile


def test_series_from_records():
    recs = example_run(5)
    p = dashboard_payload(records=recs)
    assert p["steps"] == [0, 1, 2, 3, 4]
    assert p["loss"] == pytest.approx([r.loss for r in recs], abs=1e-6)
    vals = [v for s in recs[2].per_token_divergence for row in s for v in row]
    assert p["quantiles"]["0.5"][2] == pytest.approx(quantile(vals, 0.5), abs=1e-6)
    assert p["n_eff"][0] == pytest.approx(recs[0].metrics["n_eff"], abs=1e-6)
    assert all(sum(w) == pytest.approx(1.0, abs=1e-5) for w in p["weights"])


def test_static_render_has_charts_and_ribbon():
    p = dashboard_payload(records=example_run(4))
    toks, rows = example_probe(4)
    for s, r in enumerate(rows):
        add_probe(p, s, toks, r)
    html = render_dashboard_html(p)
    assert html.count("<polyline") == 1 + 4 + 3 + 1  # loss, 4 quantiles, 3 teachers, n_eff
    assert html.count("<td title=\"step") == len(rows) * len(toks)


def test_callback_honours_pause_and_stop():
    from madopd.widgets import LiveDashboard

    recs = example_run(3)
    calls = []
    d = LiveDashboard(recs[0].teacher_names, every=1,
                      probe=lambda s: (calls.append(s) or ["a", "b"], [0.1 * s, 0.2]))
    d.paused = True
    done = threading.Event()
    th = threading.Thread(target=lambda: (d(recs[0]), done.set()), daemon=True)
    th.start()
    time.sleep(0.3)
    assert not done.is_set()  # blocked while paused
    assert d.paused_at == recs[0].step  # the browser shows "paused after step N"
    d.paused = False
    assert done.wait(5)
    assert d.paused_at == -1
    assert d.paused_seconds > 0.2
    assert d(recs[1]) is True
    d.stop_requested = True
    assert d(recs[2]) is False and d.should_stop()
    assert d.payload["steps"] == [0, 1, 2] and calls == [0, 1, 2]
    assert len(d.payload["probe"]["rows"]) == 3


def test_pause_button_message_sets_the_trait():
    """The front end's pause/resume arrive as custom messages; anything else is ignored."""
    from madopd.widgets import LiveDashboard

    d = LiveDashboard(example_run(1)[0].teacher_names)
    d._handle_custom_msg({"event": "pause", "paused": True}, [])
    assert d.paused is True
    d._handle_custom_msg({"event": "other", "paused": False}, [])
    d._handle_custom_msg("pause", [])
    assert d.paused is True
    d._handle_custom_msg({"event": "pause", "paused": False}, [])
    assert d.paused is False


class _FakeDistiller:
    """``train`` calls the callbacks once per record, like ``Distiller.train``."""

    def __init__(self, recs, fail=False):
        self.recs, self.fail = recs, fail

    def train(self, steps, callbacks=(), progress=False):
        out = []
        for r in self.recs[:steps]:
            out.append(r)
            if any(cb(r) is False for cb in callbacks):
                break
        if self.fail:
            raise RuntimeError("boom in the training thread")
        return out


def test_awaiting_wait_lets_the_event_loop_flip_pause():
    """While a coroutine awaits ``wait()``, other work on the same event loop runs (as ipykernel
    runs comm handlers while a cell awaits): here it pauses the training thread, which then
    stops at the next callback; ``join()`` in its place would block the loop throughout."""
    import asyncio

    from madopd.widgets import LiveDashboard

    recs = example_run(6)
    d = LiveDashboard(recs[0].teacher_names)

    async def main():
        d.paused = True  # set before start: the thread waits after its first step
        d.start(_FakeDistiller(recs), 6)
        waiter = asyncio.ensure_future(d.wait(poll=0.02))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if d.paused_at >= 0:
                break
        assert d.paused_at == recs[0].step and not waiter.done()  # the loop stayed responsive
        d.paused = False  # the "resume" click, handled on the loop while wait() is pending
        return await asyncio.wait_for(waiter, 10)

    got = asyncio.run(main())
    assert [r.step for r in got] == [r.step for r in recs]
    assert d.paused_seconds > 0


def test_wait_reraises_the_training_error():
    import asyncio

    from madopd.widgets import LiveDashboard

    recs = example_run(2)
    d = LiveDashboard(recs[0].teacher_names)
    d.start(_FakeDistiller(recs, fail=True), 2)
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(d.wait(poll=0.01))


def test_static_charts_have_axes_titles_and_last_values():
    from madopd.widgets.dashboard import nice_ticks

    assert [round(v, 9) for v in nice_ticks(0.0, 1.0, 5)] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert [round(v, 9) for v in nice_ticks(0.0, 1.0, 4)] == [0.0, 0.5, 1.0]  # step >= range / n
    assert [round(v, 9) for v in nice_ticks(0.213, 0.257, 5)] == [0.22, 0.23, 0.24, 0.25]
    recs = example_run(4)
    p = dashboard_payload(records=recs, total_steps=10)
    html = render_dashboard_html(p)
    assert "<b>loss</b>" in html and html.index("<b>loss</b>") < html.index("<svg")  # title outside
    assert f"loss {round(recs[-1].loss, 4):.4f}" in html  # last-value readout
    assert ">step</text>" in html and "4 steps of 10" in html
    lo, hi = min(p["loss"]), max(p["loss"])
    loss_svg = html[html.index("<b>loss</b>"):]
    loss_svg = loss_svg[:loss_svg.index("</svg>")]
    ticks = [float(t) for t in re.findall(r'text-anchor="end" [^>]*>(-?[0-9.]+)</text>', loss_svg)]
    pad = 0.05 * (hi - lo)
    assert len(ticks) >= 2 and all(lo - pad - 1e-9 <= t <= hi + pad + 1e-9 for t in ticks)  # fitted
    assert "p10" in html and "p99" in html  # the quantiles' legend


def test_js_overlay_traces_layout_and_csv():
    """Two runs on the same four panels: every trace on the shared x axis, the overlay dashed,
    names escaped for plotly's label markup, the CSV one row per (run, step)."""
    from jsrun import node_json

    from madopd.widgets import dashboard as dash
    from madopd.widgets.examples import example_run

    p = dash.dashboard_payload(records=example_run(5))
    dash.set_run(p, "MT-OPD <b>", example_run(3))
    got = node_json('const D = await import(STATIC + "/dashboard.js");'
                    "const tr = D.dashboardTraces(DATA);"
                    "const lay = D.dashboardLayout(DATA, tr, null);"
                    "print({tr, lay, table: D.dashboardTable(DATA)});", p)
    tr, lay = got["tr"], got["lay"]
    K = len(p["teacher_names"])
    assert len(tr) == 2 * (1 + 4 + K + 1)  # loss, 4 quantiles, K weights, n_eff per run
    assert {t["xaxis"] for t in tr} == {"x"} and {t["yaxis"] for t in tr} == {"y", "y2", "y3", "y4"}
    mine = [t for t in tr if t["name"].startswith("this run")]
    other = [t for t in tr if t["name"].startswith("MT-OPD &lt;b&gt;")]
    assert len(mine) == len(other) == len(tr) // 2
    assert {t["line"]["dash"] for t in mine} == {"solid"} and {t["line"]["dash"] for t in other} == {"dash"}
    assert [t["y"] for t in tr if t["name"] == "this run · loss"] == [p["loss"]]
    assert lay["hovermode"] == "x unified" and lay["hoversubplots"] == "axis"
    assert lay["yaxis3"]["range"][0] <= 0 and lay["yaxis3"]["range"][1] >= 1  # weights: [0, 1]
    assert lay["yaxis4"]["range"][0] <= 1 and lay["yaxis4"]["range"][1] >= K  # n_eff: [1, K]
    assert lay["yaxis"]["autorange"] is True  # the loss is fitted
    header, rows = got["table"]["header"], got["table"]["rows"]
    assert header[:3] == ["run", "step", "loss"] and header[-1] == "n_eff"
    assert len(rows) == 5 + 3 and rows[0][:3] == ["this run", p["steps"][0], p["loss"][0]]


def test_js_first_step_is_drawn_and_empty_dashboard_says_so():
    """Issue 29.8: one step is a marker (a lone point of a line is invisible); no step shows a
    "waiting" note instead of four blank frames."""
    from jsrun import node_json

    from madopd.widgets import dashboard as dash
    from madopd.widgets.examples import example_run

    one = dash.dashboard_payload(records=example_run(1))
    none = dash.dashboard_payload(["a", "b"])
    got = node_json('const D = await import(STATIC + "/dashboard.js");'
                    "const [one, none] = DATA;"
                    "const t1 = D.dashboardTraces(one), t0 = D.dashboardTraces(none);"
                    "print({modes: t1.map((t) => t.mode), legend: D.dashboardLayout(one, t1, null).showlegend, notes: D.dashboardLayout(none, t0, null)"
                    ".annotations.map((a) => a.text), notes1: D.dashboardLayout(one, t1, null)"
                    ".annotations.map((a) => a.text)});", [one, none])
    assert set(got["modes"]) == {"markers"}
    assert got["legend"] is True  # plotly hides every legend of a one-trace first panel otherwise
    assert "waiting for the first step" in got["notes"]
    assert "waiting for the first step" not in got["notes1"]


def test_overlay_from_records_folder_and_live_dashboard(tmp_path):
    from madopd.errors import ConfigError
    from madopd.widgets import LiveDashboard
    from madopd.widgets.examples import example_run

    recs = example_run(4)
    live = LiveDashboard(recs[0].teacher_names)
    d = LiveDashboard.compare({"MAD-OPD": recs, "MT-OPD": example_run(2), "seed 2": live})
    names = [r["name"] for r in d.payload["runs"]]
    assert d.payload["name"] == "MAD-OPD" and names == ["MT-OPD", "seed 2"] and d.finished
    assert d.payload["runs"][0]["steps"] == [r.step for r in example_run(2)]
    live.on_step(recs[0])  # the live overlay follows the other dashboard
    assert d.payload["runs"][1]["steps"] == [recs[0].step]
    d.add_run("MT-OPD", recs)  # same name: replaced, not duplicated
    assert [r["name"] for r in d.payload["runs"]] == ["MT-OPD", "seed 2"]
    assert len(d.payload["runs"][0]["steps"]) == 4
    with pytest.raises(ConfigError):
        d.add_run("MAD-OPD", recs)


def test_eta_clock_excludes_paused_time(monkeypatch):
    """Issue 29.8: a pause between two steps must not enter the ETA's rate."""
    import time

    from madopd.widgets import LiveDashboard
    from madopd.widgets.examples import example_run

    clock = [5000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    recs = example_run(3)
    dash = LiveDashboard(recs[0].teacher_names, total_steps=3)
    dash.on_step(recs[0])
    clock[0] += 1002.0  # the user paused for 1000 s; the step itself took 2 s
    dash.paused_seconds += 1000.0
    dash.on_step(recs[1])
    t = dash.payload["times"]
    assert t[1] - t[0] == 2.0


def test_finished_after_training_thread_ends():
    from madopd.widgets import LiveDashboard
    from madopd.widgets.examples import example_run

    class FakeDistiller:
        def train(self, steps, callbacks=(), progress=False):
            recs = example_run(steps)
            for r in recs:
                for cb in callbacks:
                    cb(r)
            return recs

    dash = LiveDashboard(total_steps=2)
    dash.start(FakeDistiller(), steps=2)
    assert len(dash.join(timeout=30)) == 2 and dash.finished


def test_weight_and_neff_axes_span_their_natural_range():
    """Issue 29.8: near-equal weights (0.498..0.502) must not fill the whole y axis."""
    from jsrun import node_json

    got = node_json(
        'const D = await import(STATIC + "/dashboard.js");'
        'const C = await import(STATIC + "/plots.js");'
        "const w = [0.498, 0.5, 0.502];"
        "print({w: C.yRange(w, D.naturalRange('weights', 2)), fit: C.yRange(w),"
        " neff: D.naturalRange('n_eff', 3), other: D.naturalRange('loss', 3)});")
    lo, hi = got["w"]
    assert lo <= 0 and hi >= 1
    assert got["fit"][1] - got["fit"][0] < 0.01  # what the old fitted range showed
    assert got["neff"] == [1, 3] and got["other"] == []


def test_static_render_overlays_and_natural_weight_range():
    """The HTML fallback shows an overlay's loss next to this run's, and draws near-equal weights
    on a [0, 1] axis (the 0 and 1 ticks are there), not a fitted 0.498..0.502 one."""
    from madopd.widgets import dashboard as dash

    p = dash.dashboard_payload(records=example_run(4))
    dash.set_run(p, "MT-OPD", example_run(4))
    html = render_dashboard_html(p)
    assert "MT-OPD" in html and "this run" in html
    weights = html.split("teacher weights")[1].split("effective number")[0]
    ticks = re.findall(r'text-anchor="end"[^>]*>([^<]+)</text>', weights)
    assert "0.000" in ticks and "1.000" in ticks, ticks
