"""Failure-case finder: rows computed from records; JS filter/sort; static table."""

import dataclasses

import pytest
from jsrun import node_json

from madopd.widgets.examples import example_run
from madopd.widgets.failures import COLUMNS, failures_payload, render_failures_html


@pytest.fixture(scope="module")
def recs():
    return example_run(4)


def test_rows_one_per_non_skipped_sample(recs):
    recs = list(recs)
    recs[0] = dataclasses.replace(recs[0], skipped=[True] + recs[0].skipped[1:])
    p = failures_payload(recs)
    assert len(p["rows"]) == sum(len(r.responses) for r in recs) - 1
    assert p["skipped_samples"] == 1
    row = p["rows"][0]
    assert set(COLUMNS) <= set(row)
    r = recs[0]
    b = row["sample"]
    assert row["loss"] == pytest.approx(sum(r.per_token_loss[b]) / len(r.per_token_loss[b]), abs=1e-6)
    assert row["missing"] == sum(c is None for c in r.transcripts[b].final_confidences())


def test_js_filter_and_sort(recs):
    p = failures_payload(recs)
    got = node_json(
        'const F = await import(STATIC + "/failures.js");'
        "print({byLoss: F.viewRows(DATA.rows, {sortBy: 'loss'}).map((r) => r.loss),"
        " asc: F.viewRows(DATA.rows, {sortBy: 'div_mean', desc: false}).map((r) => r.div_mean),"
        " missing: F.viewRows(DATA.rows, {onlyMissing: true}).length,"
        " text: F.viewRows(DATA.rows, {text: 'WEATHER'}).length});", p)
    assert got["byLoss"] == sorted(got["byLoss"], reverse=True)
    assert got["asc"] == sorted(got["asc"])
    assert got["missing"] == sum(r["missing"] > 0 for r in p["rows"]) > 0
    assert got["text"] == sum("weather" in r["response"].lower() for r in p["rows"]) > 0


def test_static_table(recs):
    p = failures_payload(recs)
    html = render_failures_html(p, max_rows=5)
    assert html.count('<tr class="madopd-row"') == 5
    assert f"{len(p['rows']) - 5} more not shown" in html
    assert "<script" not in html and "&lt;script&gt;" in html


def test_selection_drives_the_board(recs):
    from madopd.widgets import DebateBoard, FailureFinder

    board = DebateBoard(record=recs[0], sample=0)
    finder = FailureFinder(recs, board=board)
    finder.selected = {"step": 2, "sample": 1}
    assert finder.selected_record() == (recs[2], 1)
    assert board.payload["state_id"] == recs[2].state_ids[1]
