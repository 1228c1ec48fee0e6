"""The "most confidences are missing" banner and the numbers the notebooks print for CI."""

import dataclasses
import math

from madopd.widgets.board import debate_payload, render_debate_html
from madopd.widgets.dashboard import dashboard_payload, render_dashboard_html
from madopd.widgets.examples import example_record
from madopd.widgets.health import confidence_counts, missing_banner, run_health


def _without_confidences(rec):
    for tr in rec.transcripts:
        for m in tr.messages:
            m.confidence = None
    return rec


def test_counts_and_threshold():
    rec = example_record()
    c = confidence_counts(rec.transcripts)
    assert c["turns"] == sum(len(t.messages) for t in rec.transcripts)
    assert missing_banner({"turns": 4, "missing": 2}) is None  # half: not "most"
    text = missing_banner({"turns": 4, "missing": 3})
    assert "3 of 4" in text and "uniform" in text and "templates" in text
    assert "dropped" in missing_banner({"turns": 4, "missing": 4}, "drop_teacher")
    assert missing_banner({"turns": 0, "missing": 0}) is None


def test_board_and_dashboard_show_the_banner_only_when_most_are_missing():
    rec = example_record()
    assert debate_payload(rec.transcripts[0])["banner"] is None or \
        confidence_counts([rec.transcripts[0]])["missing"] * 2 > confidence_counts([rec.transcripts[0]])["turns"]
    bad = _without_confidences(example_record())
    p = debate_payload(bad.transcripts[0], record=bad, sample=0)
    assert p["banner"] and "madopd-banner" in render_debate_html(p)
    d = dashboard_payload(records=[bad])
    assert d["banner"] and "madopd-banner" in render_dashboard_html(d)
    ok = dashboard_payload(records=[dataclasses.replace(example_record())])
    assert (ok["banner"] is None) == (ok["confidence"]["missing"] * 2 <= ok["confidence"]["turns"])


def test_run_health_numbers():
    rec = example_record()
    h = run_health([rec])
    vals = [v for s in rec.per_token_divergence for row in s for v in row]
    assert math.isclose(h["mean_token_divergence"], sum(vals) / len(vals), abs_tol=1e-4)
    c = confidence_counts(rec.transcripts)
    assert math.isclose(h["confidence_parsed"], 1 - c["missing"] / c["turns"], abs_tol=1e-4)
    assert run_health([_without_confidences(example_record())])["confidence_parsed"] == 0.0
    assert math.isnan(run_health(transcripts=rec.transcripts)["mean_token_divergence"])
