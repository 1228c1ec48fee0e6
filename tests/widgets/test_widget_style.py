"""Colour scales and token display: known values, and Python == JS value by value."""

import pytest
from jsrun import node_json

from madopd.widgets import style as S


def test_sequential_scale_known_values():
    assert S.seq_color(0.0, 1.0) == S.SEQUENTIAL[0]
    assert S.seq_color(1.0, 1.0) == S.SEQUENTIAL[-1]
    assert S.seq_color(0.5, 1.0) == S.SEQUENTIAL[4]  # 9 stops: 0.5 lands exactly on stop 4
    assert S.seq_color(7.0, 1.0) == S.SEQUENTIAL[-1]  # clipped at vmax (p99)
    assert S.seq_color(0.0625, 1.0) == "#f6fcc5"  # halfway between stops 0 and 1 (251.5 rounds up)
    assert S.seq_color(float("nan"), 1.0) == S.MISSING_COLOR
    assert S.seq_color(None, 1.0) == S.MISSING_COLOR


def test_diverging_scale_is_centred_at_zero():
    assert S.div_color(0.0, 2.0) == "#f7f7f7"
    assert S.div_color(-2.0, 2.0) == S.DIVERGING[0]
    assert S.div_color(5.0, 2.0) == S.DIVERGING[-1]
    assert S.div_color(1.0, 2.0) != S.div_color(-1.0, 2.0)


def test_p99_clip_matches_numpy():
    np = pytest.importorskip("numpy")
    xs = [0.1 * i for i in range(37)] + [1000.0]
    assert S.clip_max(xs) == pytest.approx(float(np.quantile(xs, 0.99)), rel=1e-12)
    assert S.clip_max(xs) < 1000.0


def test_token_segments_show_whitespace_distinctly():
    assert S.token_segments(" a\n") == [("·", True), ("a", False), ("↵", True)]
    assert S.token_segments("\t\x07") == [("⇥\\x07", True)]
    assert S.token_segments("") == [("∅", True)]
    html = S.token_html(" <b>")
    assert "&lt;b&gt;" in html and "<b>" not in html and "·" in html


def test_python_and_js_paint_the_same_colours():
    vals = [None, -3.0, -0.5, 0.0, 0.013, 0.2, 0.49999, 0.5, 0.77, 1.0, 2.5]
    toks = [" ", "a b", "\n\n", "\t", "\x00x", "", "<script>", "é☃"]
    got = node_json(
        'const C = await import(STATIC + "/common.js");'
        'const D = await import(STATIC + "/divmath.js");'
        "print({seq: DATA.v.map((v) => C.seqColor(v, 0.8)), div: DATA.v.map((v) => C.divColor(v, 1.3)),"
        " text: C.SEQUENTIAL.map(C.textColor), segs: DATA.t.map(C.tokenSegments),"
        " q: D.quantile(DATA.v, 0.99)});",
        {"v": vals, "t": toks})
    assert got["seq"] == [S.seq_color(v, 0.8) for v in vals]
    assert got["div"] == [S.div_color(v, 1.3) for v in vals]
    assert got["text"] == [S.text_color(c) for c in S.SEQUENTIAL]
    assert got["segs"] == [[list(s) for s in S.token_segments(t)] for t in toks]
    assert got["q"] == pytest.approx(S.quantile(vals, 0.99), abs=1e-15)
