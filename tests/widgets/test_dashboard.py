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


def test_js_ticks_equal_python():
    from jsrun import node_json

    from madopd.widgets.dashboard import nice_ticks

    cases = [[0.0, 1.0, 4], [0.213, 0.257, 4], [-3.0, 7.5, 5], [1.0, 24.0, 5], [0.5, 0.5, 4]]
    js = node_json('const C = await import(STATIC + "/chart.js");'
                   "print(DATA.map(([a, b, n]) => C.niceTicks(a, b, n)));", cases)
    for (a, b, n), got in zip(cases, js):
        assert got == pytest.approx(nice_ticks(a, b, n), abs=1e-12)


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
        'const C = await import(STATIC + "/chart.js");'
        "const w = [0.498, 0.5, 0.502];"
        "print({w: C.yRange(w.concat(D.naturalRange('weights', 2))), fit: C.yRange(w),"
        " neff: D.naturalRange('n_eff', 3), other: D.naturalRange('loss', 3)});")
    lo, hi = got["w"]
    assert lo <= 0 and hi >= 1
    assert got["fit"][1] - got["fit"][0] < 0.01  # what the old fitted range showed
    assert got["neff"] == [1, 3] and got["other"] == []
