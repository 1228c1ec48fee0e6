"""Debate board: payload (changes, agreement, weights), JS weights/diff, static render."""

import re

import pytest
from jsrun import node_json

from madopd.types import DebateMessage, Transcript
from madopd.widgets import divmath
from madopd.widgets.board import debate_payload, render_debate_html
from madopd.widgets.examples import example_record


def _transcript():
    msgs = [DebateMessage(0, 1, "A says 42 <<CONFIDENCE=90>>", "42", 90.0),
            DebateMessage(1, 1, "B says 41", "41", None),
            DebateMessage(0, 2, "A keeps 42 <<CONFIDENCE=95>>", "42", 95.0),
            DebateMessage(1, 2, "B now says 42 <<CONFIDENCE=60>>", " 42 ", 60.0)]
    return Transcript("s0", ["A", "B"], 2, msgs)


def test_payload_flags_changes_agreement_and_weights():
    p = debate_payload(_transcript(), tau=0.5)
    assert [[c["changed"] for c in row] for row in p["cells"]] == [[False, False], [False, True]]
    assert p["agree"] == [False, True]
    assert p["weights"] == pytest.approx(divmath.confidence_weights([95.0, 60.0], 0.5))
    assert p["cells"][1][0]["confidence"] is None


def test_payload_with_record_has_student_view():
    rec = example_record()
    p = debate_payload(rec.transcripts[1], record=rec, sample=1)
    assert p["student"]["tokens"] == rec.response_tokens[1]
    assert len(p["student"]["div"]) == len(rec.response_tokens[1])
    assert p["student"]["recorded_weights"] == rec.weights[1]


def test_js_weights_filter_and_diff():
    p = debate_payload(_transcript(), tau=1.0)
    got = node_json(
        'const B = await import(STATIC + "/debate.js");'
        "print({all: B.boardView(DATA, {tau: 0.5, onlyDisagreements: false}),"
        " only: B.boardView(DATA, {tau: 2.0, onlyDisagreements: true}),"
        " diff: B.wordDiff('call weather Paris now', 'call weather paris now')});", p)
    assert got["all"]["rounds"] == [0, 1] and got["only"]["rounds"] == [0]
    assert got["all"]["weights"] == pytest.approx(divmath.confidence_weights([95, 60], 0.5))
    assert got["only"]["weights"] == pytest.approx(divmath.confidence_weights([95, 60], 2.0))
    assert got["diff"] == [["=", "call"], ["=", "weather"], ["-", "Paris"], ["+", "paris"], ["=", "now"]]


def test_static_render_grid_badges_and_strips():
    rec = example_record()
    p = debate_payload(rec.transcripts[2], record=rec, sample=2)
    html = render_debate_html(p)
    K, R = len(rec.teacher_names), rec.transcripts[2].rounds
    assert len(re.findall(r'<td class="madopd-cell"', html)) == K * R
    assert html.count("confidence missing") == 1  # example transcript s2 misses one tag
    assert len(re.findall(r'<span class="madopd-tok" data-teacher=', html)) == K * len(rec.response_tokens[2])
    assert "w = 0.333" in html  # uniform policy with a missing tag


# ---------------------------------------------------------------- issue 29.3
def test_board_shows_prompt_reference_and_confidence_sources():
    import dataclasses

    from madopd.types import DebateMessage, Transcript
    from madopd.widgets.board import debate_payload, render_debate_html
    from madopd.widgets.examples import example_record

    rec = example_record(0, batch=2, teacher_names=("A", "B"))
    tr = Transcript("tools/0/5#2", ["A", "B"], 1, [
        DebateMessage(0, 1, "add 40 38", "add 40 38", 90.0, confidence_source="tag"),
        DebateMessage(1, 1, "sub 40 38", "sub 40 38", 55.0, confidence_source="forced_tag")])
    rec = dataclasses.replace(rec, transcripts=[tr, tr])
    p = debate_payload(tr, record=rec, sample=0, reference="add 40 38")
    assert p["prompt"] == rec.prompts[0] and p["reference"] == "add 40 38"
    assert [c[0]["source_label"] for c in p["cells"]] == ["written", "fallback: forced tag"]
    html = render_debate_html(p)
    assert "(written)" in html and "(fallback: forced tag)" in html and "add 40 38</b>" in html
    assert 'class="madopd-prompt"' in html


def test_browse_walks_every_debate_and_search_finds_ids():
    from jsrun import node_json

    from madopd.widgets import DebateBoard
    from madopd.widgets.examples import example_run

    recs = example_run(3)
    board = DebateBoard.browse(recs, references={recs[1].state_ids[2]: "REF"})
    n = sum(len(r.transcripts) for r in recs)
    assert board.payload["browse"]["count"] == n and board.payload["browse"]["index"] == 0
    board.index = len(recs[0].transcripts) + 2  # step 1, sample 2
    assert board.payload["state_id"] == recs[1].state_ids[2] and board.payload["reference"] == "REF"
    assert board.payload["student"]["response"] == recs[1].responses[2]
    ids = board.payload["browse"]["ids"]
    got = node_json('const D = await import(STATIC + "/debate.js");'
                    "print([D.searchIndex(DATA, 'STEP 2', 0), D.searchIndex(DATA, 'step 0', 5),"
                    " D.searchIndex(DATA, 'nope', 0)]);", ids)
    first2 = next(i for i, x in enumerate(ids) if x.startswith("step 2"))
    assert got == [first2, 0, -1]


def test_js_debate_table_rows_and_formula_guard():
    """The board's CSV: one row per (teacher, round) with the confidence's source; model text
    that a spreadsheet would run as a formula is quoted (csvText)."""
    from jsrun import node_json

    from madopd.widgets.board import debate_payload
    from madopd.widgets.examples import example_record

    rec = example_record()
    p = debate_payload(rec.transcripts[0], record=rec, sample=0)
    p["cells"][0][0]["text"] = '=HYPERLINK("http://x")'
    got = node_json('const D = await import(STATIC + "/debate.js");'
                    'const C = await import(STATIC + "/plots.js");'
                    "const t = D.debateTable(DATA); print({t, csv: C.csvText(t.header, t.rows)});", p)
    K, R = len(p["teacher_names"]), p["rounds"]
    assert len(got["t"]["rows"]) == K * R
    assert got["t"]["rows"][0][:3] == [p["state_id"], p["teacher_names"][0], 1]
    assert got["t"]["rows"][0][5] == p["cells"][0][0]["source_label"]
    assert "'=HYPERLINK" in got["csv"] and ',=HYPERLINK' not in got["csv"]
