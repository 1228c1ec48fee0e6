"""Divergence lens: payload snapshot, β recomputation (JS == Python), static render."""

import json
import re

import pytest
from jsrun import node_json

from madopd.widgets import divmath
from madopd.widgets.examples import EXAMPLE_TEACHERS, example_record
from madopd.widgets.lens import (
    LENS_KINDS,
    lens_payload,
    lens_values,
    render_lens_html,
    token_detail,
)
from madopd.widgets.style import clip_max, seq_color


def _decode(i):
    return bytes([i]).decode("latin-1")


@pytest.fixture(scope="module")
def rec():
    return example_record()


def test_payload_snapshot(rec):
    p = lens_payload(rec, 0, decode=_decode)
    T, K = len(rec.response_tokens[0]), len(EXAMPLE_TEACHERS)
    assert p["kind"] == "lens" and p["tokens"] == rec.response_tokens[0] and len(p["cand"]) == T
    c = p["cand"][0]
    assert c["ids"][:5] == rec.student_topk["ids"][0][0]  # student top-k first
    assert len(c["ids"]) == len(set(c["ids"]))  # distinct candidates
    assert len(c["t"]) == K and all(len(row) == len(c["ids"]) for row in c["t"])
    # teacher 0's top-k ids are all known on the teacher side, rounded to 6 decimals
    for i, lp in zip(rec.teacher_topk[0]["ids"][0][0], rec.teacher_topk[0]["logprobs"][0][0]):
        assert c["t"][0][c["ids"].index(i)] == round(lp, 6)
    assert p["recorded"][0] == [round(v, 6) for v in rec.per_token_divergence[0][0]]
    assert set(p["values"]) == {*LENS_KINDS, "coverage"}
    assert len(json.dumps(p)) < 1200 * T  # top-k only, 6 decimals: compact


def test_values_are_lower_bounds_of_the_recorded_dense_jsd(rec):
    """The example records' student knows its log-probs at every teacher id, so the bucketed
    JSD is the dense JSD coarse-grained: never above the recorded (dense) value."""
    p = lens_payload(rec, 1, decode=_decode)
    for k in range(len(EXAMPLE_TEACHERS)):
        for t, v in enumerate(p["values"]["jsd"][k]):
            assert 0.0 <= v <= p["recorded"][t][k] + 1e-5


def test_token_detail_contributions_sum_to_the_token_value(rec):
    p = lens_payload(rec, 2, beta=0.3, decode=_decode)
    rows = token_detail(p, 4, 1, 0.3)
    for kind in LENS_KINDS:
        assert sum(r[kind] for r in rows) == pytest.approx(p["values"][kind][1][4], abs=1e-6)
    assert rows[-1]["text"] == "(rest)"


def test_js_recomputes_beta_like_python(rec):
    p = lens_payload(rec, 3, decode=_decode)
    got = node_json('const L = await import(STATIC + "/lens.js");'
                    "print([0.5, 0.2, 0.9].map((b) => L.lensValues(DATA, b)));", p)
    for beta, js in zip([0.5, 0.2, 0.9], got):
        py = lens_values(p, beta)
        for kind in (*LENS_KINDS, "coverage"):
            for a, b in zip(js[kind], py[kind]):
                assert a == pytest.approx(b, abs=1e-12)
    assert got[0]["jsd"] != got[1]["jsd"]  # β matters
    assert got[0]["fkl"] == got[1]["fkl"]  # FKL does not depend on β


def test_static_render_span_counts_and_colours(rec):
    p = dict(lens_payload(rec, 0, decode=_decode), shared_scale=False)  # one scale per strip
    html = render_lens_html(p)
    T, K = len(p["tokens"]), len(EXAMPLE_TEACHERS)
    spans = re.findall(r'<span class="madopd-tok" data-kind="(\w+)" data-teacher="(\d)" '
                       r'data-t="(\d+)"[^>]*style="background:(#[0-9a-f]{6})', html)
    assert len(spans) == K * (len(LENS_KINDS) + 2) * T  # + recorded + top-k coverage
    vmax = clip_max([v for row in p["values"]["jsd"] for v in row])
    for kind, k, t, bg in spans:
        if kind == "jsd":
            assert bg == seq_color(p["values"]["jsd"][int(k)][int(t)], vmax)
    # the largest value is painted with the top colour (clipped at p99)
    k_max, t_max = max(((k, t) for k in range(K) for t in range(T)),
                       key=lambda kt: p["values"]["jsd"][kt[0]][kt[1]])
    assert f'data-kind="jsd" data-teacher="{k_max}" data-t="{t_max}"' in html
    assert seq_color(p["values"]["jsd"][k_max][t_max], vmax) == "#081d58"


def test_record_without_topk_shows_only_the_recorded_strip(rec):
    import dataclasses

    bare = dataclasses.replace(rec, student_topk=None, teacher_topk=None)
    p = lens_payload(bare, 0)
    assert p["values"] is None and not p["has_topk"]
    html = render_lens_html(p)
    assert html.count('data-kind="recorded"') == len(p["tokens"]) * len(EXAMPLE_TEACHERS)
    assert 'data-kind="jsd"' not in html and "no top-k cached" in html


def test_long_sequences_are_capped_and_counted(rec):
    import dataclasses

    from madopd.widgets import lens as L

    n = L.STATIC_MAX_TOKENS + 50
    b = 0
    T = len(rec.response_tokens[b])
    reps = n // T + 1
    long = dataclasses.replace(
        rec, response_tokens=[rec.response_tokens[b] * reps], response_ids=[rec.response_ids[b] * reps],
        per_token_divergence=[rec.per_token_divergence[b] * reps], responses=[rec.responses[b] * reps],
        student_topk=None, teacher_topk=None, weights=[rec.weights[b]], prompts=[rec.prompts[b]],
        state_ids=[rec.state_ids[b]])
    html = render_lens_html(lens_payload(long, 0))
    assert f"showing {L.STATIC_MAX_TOKENS} of {T * reps} tokens" in html


def test_buckets_use_the_payload_numbers(rec):
    p = lens_payload(rec, 0)
    c = p["cand"][3]
    _, pp, qq = divmath.buckets(c["s"], c["t"][2])
    assert divmath.divergences(pp, qq, 0.5)["jsd"] == pytest.approx(p["values"]["jsd"][2][3], abs=1e-6)


def test_shared_scale_and_coverage_badge(rec):
    p = lens_payload(rec, 0, decode=_decode)  # shared scale is the default
    html = render_lens_html(p)
    spans = re.findall(r'<span class="madopd-tok" data-kind="(\w+)" data-teacher="(\d)" '
                       r'data-t="(\d+)"[^>]*style="background:(#[0-9a-f]{6})', html)
    series = [v for kind in LENS_KINDS for row in p["values"][kind] for v in row]
    top = max([clip_max([v for row in p["values"][kind] for v in row]) for kind in LENS_KINDS]
              + [clip_max([v for row in p["recorded"] for v in row])])
    for kind, k, t, bg in spans:
        if kind in LENS_KINDS:
            assert bg == seq_color(p["values"][kind][int(k)][int(t)], top)
    assert series and html.count("D per token, every strip") == 1  # one legend for the strips
    cov = [sum(r) / len(r) for r in p["values"]["coverage"]]
    assert html.count(">lower bound</span>") == sum(c < 0.9 for c in cov)
    assert "top-k covers" in html


def test_newline_tokens_break_the_strip(rec):
    import dataclasses

    toks = [list(r) for r in rec.response_tokens]
    toks[0][1] = "x\n"
    p = lens_payload(dataclasses.replace(rec, response_tokens=toks), 0, decode=_decode)
    assert 'flex-basis:100%' in render_lens_html(p)

