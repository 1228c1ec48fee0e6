"""Per-token loss decomposition: shares sum to the recorded loss; equal-weights counterfactual."""

import re

import pytest
from jsrun import node_json

from madopd.widgets.decomposition import decomposition_payload, render_decomposition_html
from madopd.widgets.examples import example_record
from madopd.widgets.style import DIVERGING


def test_shares_sum_to_the_recorded_per_token_loss():
    rec = example_record()
    for b in range(len(rec.responses)):
        p = decomposition_payload(rec, b)
        assert p["total"] == pytest.approx(p["recorded_loss"], abs=1e-5)
        K = len(rec.teacher_names)
        assert p["equal"] == pytest.approx([sum(r) / K for r in rec.per_token_divergence[b]], abs=1e-6)
        assert p["diff"] == pytest.approx([a - e for a, e in zip(p["total"], p["equal"])], abs=1e-5)


def test_js_stacks_match_payload():
    p = decomposition_payload(example_record(), 1)
    got = node_json('const M = await import(STATIC + "/decomposition.js");'
                    "print([M.stacks(DATA, false), M.stacks(DATA, true)]);", p)
    assert got[0] == p["contrib"]
    K = len(p["teacher_names"])
    flat = [v for row in got[1] for v in row]
    assert flat == pytest.approx([d / K for row in p["div"] for d in row], abs=1e-12)


def test_static_render_segments_and_signed_colours():
    p = decomposition_payload(example_record(), 0)
    html = render_decomposition_html(p)
    assert len(re.findall(r'<rect class="madopd-seg"', html)) == len(p["tokens"]) * len(p["teacher_names"])
    assert html.count('class="madopd-tok"') == len(p["tokens"])
    assert DIVERGING[0] in html and DIVERGING[-1] in html  # a legend spans the diverging scale


def test_float_noise_is_not_painted_at_full_saturation():
    """±1e-6 differences (equal weights up to rounding) stay near white, not dark red/blue."""
    import dataclasses

    from madopd.widgets.style import div_color

    rec = example_record()
    K = len(rec.teacher_names)
    uniform = [[1.0 / K] * K for _ in rec.weights]
    p = decomposition_payload(dataclasses.replace(rec, weights=uniform, token_weights=None), 0)
    p["diff"] = [1e-6 * (-1) ** t for t in range(len(p["diff"]))]
    from madopd.widgets.decomposition import diff_scale

    vabs = diff_scale(p)
    assert vabs >= 1e-3 * max(p["total"])
    for d in p["diff"]:
        c = div_color(d, vabs)
        assert c not in (DIVERGING[0], DIVERGING[-1])
        assert all(int(c[i:i + 2], 16) > 0xE0 for i in (1, 3, 5)), c  # near white


def test_js_difference_view_sums_to_the_token_difference():
    """Issue 29.8: the third view draws w_k·D_k − D_k/K per teacher; per token these bars sum to
    the payload's actual − equal, so a near-equal weighting still shows who gained loss."""
    from madopd.widgets.examples import example_record

    p = decomposition_payload(example_record(), 0)
    got = node_json('const M = await import(STATIC + "/decomposition.js");'
                    'print({diff: M.stacks(DATA, "diff"), traces: M.decompositionTraces(DATA, "diff").length,'
                    ' table: M.decompositionTable(DATA)});', p)
    K = len(p["teacher_names"])
    for t, row in enumerate(got["diff"]):
        assert sum(row) == pytest.approx(p["diff"][t], abs=1e-5)
        for k in range(K):
            assert row[k] == pytest.approx(p["contrib"][t][k] - p["div"][t][k] / K, abs=1e-9)
    assert got["traces"] == K + 1  # one bar trace per teacher + the net marker
    assert got["table"]["header"] == ["t", "token", "teacher", "w", "D", "w*D", "D/K"]
    assert len(got["table"]["rows"]) == len(p["tokens"]) * K
