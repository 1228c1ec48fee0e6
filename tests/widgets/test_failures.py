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


def _rows(col_values):
    """Minimal finder rows: every NUMERIC column 0..n-1 (clearly varying) except the given ones."""
    from madopd.widgets.failures import NUMERIC

    n = len(next(iter(col_values.values())))
    return [{c: col_values[c][i] if c in col_values else float(i) for c in NUMERIC}
            for i in range(n)]


@pytest.mark.parametrize("values,flat", [
    ([0.6931472, 0.6931472 + 3e-7, 0.6931472 - 2e-7], True),   # float noise around ln 2
    ([0.6931, 0.6932, 0.6934], True),                           # spread 0.04 % of the size
    ([1e-7, 0.0, 5e-7], True),                                  # noise around zero
    ([100.0, 101.0, 100.5], True),                              # 1 % spread
    ([1.0657, 1.0831, 1.0986], True),                           # 3 %: entropies near log 3
    ([1.0, 1.08, 1.04], False),                                 # 8 %: more than half a stop
    ([0.5, 0.6, 0.7], False),                                   # a real spread
    ([0.0, 0.0, 0.01], False),                                  # small values that differ
    ([None, None, None], True),                                 # nothing known
    ([0.3, None, 0.3], True),
])
def test_flat_columns_are_not_shaded(values, flat):
    from madopd.widgets.failures import constant_columns

    rows = _rows({"loss": values})
    got = constant_columns(rows)
    assert ("loss" in got) is flat
    assert "div_mean" not in got  # 0, 1, 2: varies


def test_flat_column_plain_in_html_and_lightest_in_png(recs):
    """A near-constant loss column prints as plain numbers (no background) in the static table
    and in the scale's lightest colour in the PNG; a varying column stays shaded."""
    import re

    from test_png import decode

    from madopd.widgets import png
    from madopd.widgets.failures import NUMERIC, constant_columns, render_failures_png
    from madopd.widgets.style import SEQUENTIAL

    p = failures_payload(recs)
    assert "loss" not in p["constant"] and "div_mean" not in p["constant"]  # example data varies
    for i, row in enumerate(p["rows"]):
        row["loss"] = 0.693147 + 1e-6 * (i % 3)
    p["constant"] = constant_columns(p["rows"])
    assert "loss" in p["constant"] and "div_mean" not in p["constant"]
    html = render_failures_html(p, max_rows=5)
    loss_cells = re.findall(r'<td data-col="loss" style="([^"]*)"', html)
    div_cells = re.findall(r'<td data-col="div_mean" style="([^"]*)"', html)
    assert len(loss_cells) == len(div_cells) == 5
    assert all("background" not in s for s in loss_cells)
    assert all("background" in s for s in div_cells)
    assert "not shaded (spread under 5 % of the values): loss" in html
    _, _, px = decode(render_failures_png(p, max_rows=5))
    col = lambda c: png.MARGIN + NUMERIC.index(c) * (png.CELL_W + png.GAP) + 2
    for i in range(5):
        y = png.MARGIN + png.rows_height(i) + 2
        assert px[y][col("loss")] == png.rgb(SEQUENTIAL[0])
    assert len({px[png.MARGIN + png.rows_height(i) + 2][col("div_mean")] for i in range(5)}) > 1



# ---------------------------------------------------------------- teachers judged (issue 29.2)
def _judged_run():
    """Step 0: s1 = B confidently wrong ("ans 58" at 90 vs "ans 5") and the student copies it;
    s2 = A flips from right to wrong (at 60); s3 = both right. Step 1: s1 again, the student right."""
    from madopd.widgets.examples import example_judged_run

    return example_judged_run()


def test_teachers_are_judged_against_the_reference():
    recs, refs = _judged_run()
    rows = {(r["step"], r["state_id"]): r for r in failures_payload(recs, refs)["rows"]}
    s1 = rows[(0, "tools/0/621#3")]
    assert s1["reference"] == "ans 5" and s1["teacher_right"] == [True, False]
    assert s1["teacher_wrong"] == "B 90" and s1["conf_wrong"] and s1["copied"] and not s1["flipped"]
    s2 = rows[(0, "tools/0/7#2")]
    assert s2["teacher_right"] == [False, True] and s2["flipped"]
    assert not s2["conf_wrong"] and not s2["copied"]  # A wrong at 60 only; the student is right
    s3 = rows[(0, "tools/0/9#0")]
    assert s3["teacher_wrong"] == "" and not (s3["conf_wrong"] or s3["flipped"] or s3["copied"])
    assert not rows[(1, "tools/0/621#3")]["copied"]  # the student is right at step 1
    assert s1["sources"] == ["tag", "tag"] and s2["sources"] == ["forced_tag", "tag"]


def test_without_references_teacher_columns_are_unknown_and_counted():
    recs, refs = _judged_run()
    p = failures_payload(recs, {k: v for k, v in refs.items() if k != "tools/0/7#2"})
    assert p["references_missing"] == 2  # s2 at steps 0 and 1
    row = next(r for r in p["rows"] if r["state_id"] == "tools/0/7#2")
    assert row["reference"] is None and row["conf_wrong"] is None and row["teacher_right"] is None
    assert failures_payload(recs)["references_missing"] == len(p["rows"])
    assert "2 rows without a reference" in render_failures_html(p)


def test_state_history_follows_a_state_across_steps():
    recs, refs = _judged_run()
    hist = failures_payload(recs, refs)["history"]["tools/0/621#3"]
    assert [(e["step"], e["correct"], e["copied"]) for e in hist] == [(0, 0.0, True), (1, 1.0, False)]


def test_js_teacher_filters_match_python():
    recs, refs = _judged_run()
    p = failures_payload(recs, refs)
    got = node_json(
        'const F = await import(STATIC + "/failures.js");'
        "const ids = (o) => F.viewRows(DATA.rows, o).map((r) => [r.step, r.state_id]).sort();"
        "print({conf: ids({onlyConfWrong: true}), flip: ids({onlyFlipped: true}),"
        " copied: ids({onlyCopied: true}), state: ids({state: 'tools/0/621#3'})});", p)
    assert got["conf"] == [[0, "tools/0/621#3"], [1, "tools/0/621#3"]]
    assert got["flip"] == [[0, "tools/0/7#2"], [1, "tools/0/7#2"]]
    assert got["copied"] == [[0, "tools/0/621#3"]]
    assert got["state"] == [[0, "tools/0/621#3"], [1, "tools/0/621#3"]]


def test_one_click_shows_the_row_on_board_lens_and_decomposition():
    from madopd.widgets import DebateBoard, DivergenceLens, FailureFinder, LossDecomposition

    recs, refs = _judged_run()
    board, lens = DebateBoard(record=recs[1], sample=2), DivergenceLens(recs[1], 2)
    deco = LossDecomposition(recs[1], 2)
    finder = FailureFinder(recs, board=board, lens=lens, decomposition=deco, references=refs)
    finder.selected = {"step": 0, "sample": 0}
    assert board.payload["state_id"] == lens.payload["state_id"] == "tools/0/621#3"
    assert board.payload["reference"] == "ans 5"
    assert lens.payload["step"] == 0 and lens.payload["tokens"] == recs[0].response_tokens[0]
    assert deco.payload["tokens"] == recs[0].response_tokens[0]


def test_finder_moves_a_browsing_board_to_the_row():
    from madopd.widgets import DebateBoard, FailureFinder

    recs, refs = _judged_run()
    board = DebateBoard.browse(recs, references=refs)
    finder = FailureFinder(recs, board=board, references=refs)
    finder.selected = {"step": 1, "sample": 1}
    assert board.index == 4 and board.payload["browse"]["index"] == 4
    assert board.payload["state_id"] == "tools/0/7#2" and board.payload["reference"] == "add 1 2"
