"""Weighting: tag grammar, softmax weights vs a float64 reference, policies, other sources."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from madopd.errors import ConfigError, ShapeError, ValueRangeError
from madopd.types import DebateMessage, Scores, State, TopKLogprobs, Transcript
from madopd.weighting import (
    agreement_confidence,
    confidence_weights,
    effective_teachers,
    fixed_weights,
    logprob_confidence,
    parse_confidence,
    parse_confidence_detail,
    strip_confidence,
    token_weights,
    uniform_weights,
    weights_from_confidences,
    weights_from_transcripts,
)

# --------------------------------------------------------------------------- parsing

PARSE_TABLE = [
    ("answer\n<<CONFIDENCE=80>>", 80.0, "ok"),
    ("<<CONFIDENCE=20>> first, then <<CONFIDENCE=90>>", 90.0, "ok"),  # last tag wins
    ("<<CONFIDENCE=150>>", 100.0, "clamped"),
    ("<<CONFIDENCE=-5>>", 0.0, "clamped"),
    ("<<CONFIDENCE=abc>>", None, "malformed"),
    ("<<CONFIDENCE=70>> then <<CONFIDENCE=abc>>", None, "malformed"),  # last tag unreadable
    ("<<CONFIDENCE=abc>> then <<CONFIDENCE=70>>", 70.0, "ok"),
    ("<<CONFIDENCE=72.5>>", 72.5, "ok"),
    ("<<CONFIDENCE=.5>>", 0.5, "ok"),
    ("<<CONFIDENCE=5.>>", 5.0, "ok"),
    ("<<CONFIDENCE=+40>>", 40.0, "ok"),
    ("<<CONFIDENCE=-0>>", 0.0, "ok"),
    ("<<CONFIDENCE=085>>", 85.0, "ok"),
    ("<<CONFIDENCE=100>>", 100.0, "ok"),
    ("<<CONFIDENCE=0>>", 0.0, "ok"),
    ("<<CONFIDENCE=" + "9" * 400 + ">>", 100.0, "clamped"),  # overflow saturates
    ("<< CONFIDENCE = 60 >>", 60.0, "ok"),  # spaces/tabs allowed around the parts
    ("<<\tconfidence=\t61\t>>", 61.0, "ok"),  # any case, tabs
    ("<<Confidence=62%>>", 62.0, "ok"),  # optional trailing percent sign
    ("<<CONFIDENCE=63 %>>", 63.0, "ok"),
    ("<<CONFIDENCE=1e3>>", None, "malformed"),  # no exponents
    ("<<CONFIDENCE=nan>>", None, "malformed"),
    ("<<CONFIDENCE=inf>>", None, "malformed"),
    ("<<CONFIDENCE=80/100>>", None, "malformed"),
    ("<<CONFIDENCE=>>", None, "malformed"),
    ("<<CONFIDENCE=6 0>>", None, "malformed"),
    ("<<CONFIDENCE=0x50>>", None, "malformed"),
    ("<<CONFIDENCE=٨٠>>", None, "malformed"),  # non-ASCII digits are not accepted
    ("<<CONFIDENCE=70", None, "absent"),  # unclosed
    ("<<CONFIDENCE=70>", None, "absent"),
    ("<CONFIDENCE=70>", None, "absent"),
    ("CONFIDENCE=70", None, "absent"),
    ("Confidence: 70", None, "absent"),
    ("<<CONFIDENCE\n=70>>", None, "absent"),  # no newlines inside a tag
    ("<<CONFIDENCE=7\n0>>", None, "absent"),
    ("<<CONFIDENCE=<<CONFIDENCE=70>>>>", 70.0, "ok"),  # nested: only the inner one is a tag
    ("<<CONFIDENCE=70>>>>", 70.0, "ok"),
    ("<<<<CONFIDENCE=70>>", 70.0, "ok"),
    ("<<CONF=70>>", None, "absent"),
    ("", None, "absent"),
    (None, None, "absent"),
]


@pytest.mark.parametrize("text,value,status", PARSE_TABLE)
def test_parse_confidence_table(text, value, status):
    got = parse_confidence_detail(text)
    assert got.value == value and got.status == status
    assert parse_confidence(text) == value
    if value is not None:
        assert math.copysign(1.0, value) == 1.0  # never -0.0


def test_strip_confidence_removes_every_tag():
    assert strip_confidence("  x = 1\n<<CONFIDENCE=80>>\n") == "x = 1"
    assert strip_confidence("a <<CONFIDENCE=abc>> b <<confidence=5>>") == "a  b"
    assert strip_confidence("<<CONFIDENCE=70") == "<<CONFIDENCE=70"  # not a tag: kept
    assert strip_confidence(None) == "" and strip_confidence("") == ""


@given(st.text(max_size=60))
def test_parse_never_crashes_and_stays_in_range(text):
    v = parse_confidence(text + "<<CONFIDENCE=" + text + ">>")
    assert v is None or 0.0 <= v <= 100.0


@given(st.integers(-10**6, 10**6))
def test_parse_integers_clamped(n):
    assert parse_confidence(f"<<CONFIDENCE={n}>>") == float(min(max(n, 0), 100))


# --------------------------------------------------------------------------- softmax weights

def _reference(conf: list[list[float]], tau: float) -> list[list[float]]:
    """float64 brute force of Eqs. 6-7, written as plainly as possible."""
    out = []
    for row in conf:
        e = [math.exp(c / 100.0 / tau) for c in row]
        out.append([x / sum(e) for x in e])
    return out


conf_rows = st.lists(st.lists(st.floats(0, 100), min_size=1, max_size=5), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(conf_rows.filter(lambda rows: len({len(r) for r in rows}) == 1),
       st.floats(0.05, 20.0))
def test_confidence_weights_match_float64_reference(rows, tau):
    c = torch.tensor(rows, dtype=torch.float64)
    w = confidence_weights(c, tau)
    assert w.dtype == torch.float64
    torch.testing.assert_close(w, torch.tensor(_reference(rows, tau), dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w.sum(-1), torch.ones(len(rows), dtype=torch.float64))
    w32 = confidence_weights(c.float(), tau)  # fp32 input: fp32 output, close to the reference
    torch.testing.assert_close(w32.double(), w, rtol=1e-5, atol=1e-6)
    n = effective_teachers(w)
    K = c.shape[1]
    assert ((n >= 1 - 1e-9) & (n <= K + 1e-9)).all()


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 100), st.floats(0, 100))
def test_k2_tau1_range(a, b):
    w = confidence_weights(torch.tensor([[a, b]]), 1.0)
    lo, hi = 1 / (1 + math.e), math.e / (1 + math.e)  # 0.2689..., 0.7310...
    assert lo - 1e-6 <= float(w.min()) and float(w.max()) <= hi + 1e-6
    extreme = confidence_weights(torch.tensor([[100.0, 0.0]]), 1.0)
    assert abs(float(extreme[0, 0]) - hi) < 1e-6 and abs(float(extreme[0, 0]) - 0.731) < 1e-3


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 100), min_size=2, max_size=5, unique=True))
def test_small_tau_approaches_argmax(conf):
    w = confidence_weights(torch.tensor([conf], dtype=torch.float64), 1e-4)
    onehot = torch.zeros(1, len(conf), dtype=torch.float64)
    onehot[0, conf.index(max(conf))] = 1
    torch.testing.assert_close(w, onehot, atol=1e-30 + 1e-40, rtol=0)  # gaps >= 1 -> exp(-100)


def test_ties_split_evenly_and_bad_inputs():
    w = confidence_weights(torch.tensor([[90.0, 90.0, 10.0]]), 1e-3)
    torch.testing.assert_close(w, torch.tensor([[0.5, 0.5, 0.0]]))
    for tau in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueRangeError, match="tau"):
            confidence_weights(torch.tensor([[1.0, 2.0]]), tau)
    with pytest.raises(ShapeError):
        confidence_weights(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueRangeError, match="missing"):
        confidence_weights(torch.tensor([[1.0, float("nan")]]))


def test_effective_teachers_values():
    w = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    torch.testing.assert_close(effective_teachers(w), torch.tensor([1.0, 3.0, 2.0]))
    assert effective_teachers(torch.full((2, 4, 3), 1 / 3)).shape == (2, 4)


def test_uniform_and_fixed_weights():
    torch.testing.assert_close(uniform_weights(2, 4), torch.full((2, 4), 0.25))
    torch.testing.assert_close(fixed_weights([3, 1], 2), torch.tensor([[0.75, 0.25]] * 2))
    for bad in ([0, 0], [-1, 2], [float("nan"), 1], []):
        with pytest.raises(ValueRangeError):
            fixed_weights(bad, 1)


# --------------------------------------------------------------------------- missing-tag policy

NAN = float("nan")
CONF = torch.tensor([[80.0, 20.0], [NAN, 50.0], [NAN, NAN]], dtype=torch.float64)


def test_policy_uniform():
    r = weights_from_confidences(CONF, on_missing="uniform")
    ref = _reference([[80, 20]], 1.0)[0]
    torch.testing.assert_close(r.weights, torch.tensor([ref, [0.5, 0.5], [0.5, 0.5]], dtype=torch.float64))
    assert r.keep.tolist() == [True, True, True]
    assert r.counters == {"missing_confidence": 3, "samples_with_missing": 2, "uniform_fallback": 2}


def test_policy_drop_teacher():
    r = weights_from_confidences(CONF, on_missing="drop_teacher")
    ref = _reference([[80, 20]], 1.0)[0]
    torch.testing.assert_close(r.weights, torch.tensor([ref, [0.0, 1.0], [0.5, 0.5]], dtype=torch.float64))
    assert r.counters["dropped_teachers"] == 1 and r.counters["all_missing_uniform"] == 1
    three = weights_from_confidences(torch.tensor([[NAN, 30.0, 60.0]]), on_missing="drop_teacher", tau=0.5)
    torch.testing.assert_close(three.weights[0, 1:], confidence_weights(torch.tensor([[30.0, 60.0]]), 0.5)[0])


def test_policy_skip_sample():
    r = weights_from_confidences(CONF, on_missing="skip_sample")
    assert r.keep.tolist() == [True, False, False]
    assert r.weights[1:].abs().sum() == 0 and r.counters["skipped_samples"] == 2
    with pytest.raises(ConfigError, match="on_missing"):
        weights_from_confidences(CONF, on_missing="guess")


def _tr(state_id, finals, rounds=1, failed=()):
    """A transcript whose last round has the given raw texts (first rounds: 'x')."""
    from madopd.debate import FailedTurn

    msgs = []
    for r in range(1, rounds + 1):
        for k, text in enumerate(finals):
            text = text if r == rounds else "x <<CONFIDENCE=50>>"
            if r == rounds and k in failed:
                msgs.append(FailedTurn(k, r, "", "", None, error="boom"))
            else:
                msgs.append(DebateMessage(k, r, text, strip_confidence(text), parse_confidence(text)))
    return Transcript(state_id, [f"T{k + 1}" for k in range(len(finals))], rounds, msgs)


def test_weights_from_transcripts_counts_every_kind_of_missing():
    trs = [_tr("a", ["A <<CONFIDENCE=90>>", "B <<CONFIDENCE=60>>"], rounds=2),
           _tr("b", ["A", "B <<CONFIDENCE=abc>>"]),
           _tr("c", ["A <<CONFIDENCE=150>>", "B"], failed=(1,))]
    r = weights_from_transcripts(trs, tau=1.0, on_missing="drop_teacher")
    assert r.counters["weights/absent_tag"] == 1 and r.counters["weights/malformed_tag"] == 1
    assert r.counters["weights/clamped_tag"] == 1 and r.counters["weights/failed_turns"] == 1
    assert r.counters["weights/missing_confidence"] == 3
    assert r.counters["weights/all_missing_uniform"] == 1
    torch.testing.assert_close(r.weights[0], torch.tensor(_reference([[90, 60]], 1.0)[0]))
    torch.testing.assert_close(r.weights[1:], torch.tensor([[0.5, 0.5], [1.0, 0.0]]))  # never a silent 0.5/0.5
    assert r.weights.dtype == torch.float32
    with pytest.raises(ConfigError, match="rounds=0"):
        weights_from_transcripts([Transcript("z", ["T1", "T2"], 0)])
    with pytest.raises(ShapeError):
        weights_from_transcripts([trs[0], _tr("d", ["A", "B", "C"])])


def test_agreement_confidence():
    trs = [_tr("a", ["X", " x ", "y"]), _tr("b", ["p", "", "p"]), _tr("c", ["q", "q", "q"], failed=(0,))]
    got = agreement_confidence(trs)
    exp = torch.tensor([[200 / 3, 200 / 3, 100 / 3], [200 / 3, NAN, 200 / 3], [NAN, 200 / 3, 200 / 3]],
                       dtype=torch.float64)
    torch.testing.assert_close(got, exp, equal_nan=True)
    exact = agreement_confidence(trs[:1], normalize=lambda s: s)
    torch.testing.assert_close(exact[0], torch.full((3,), 100 / 3, dtype=torch.float64))


# --------------------------------------------------------------------------- per-token weights

def _dense_case(seed=0, B=2, T=5, K=3, V=7):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, K, V, generator=g, dtype=torch.float64) * 2
    lp = torch.log_softmax(logits, -1)
    ids = torch.randint(0, V, (B, T), generator=g)
    return lp, ids


def _token_weights_reference(lp, ids, mode, tau):
    B, T, K, V = lp.shape
    out = torch.zeros(B, T, K, dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            s = []
            for k in range(K):
                p = [math.exp(float(x)) for x in lp[b, t, k]]
                if mode == "entropy":
                    s.append(sum(-pi * math.log(pi) for pi in p if pi > 0) * -1 / tau)
                else:
                    s.append(p[int(ids[b, t])] / tau)
            e = [math.exp(x - max(s)) for x in s]
            out[b, t] = torch.tensor([x / sum(e) for x in e], dtype=torch.float64)
    return out


@pytest.mark.parametrize("mode", ["entropy", "token_prob"])
@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_token_weights_match_reference(mode, tau):
    lp, ids = _dense_case()
    w = token_weights(lp, ids, mode=mode, tau=tau)
    ref = _token_weights_reference(lp, ids, mode, tau)
    torch.testing.assert_close(w, ref, rtol=1e-10, atol=1e-12)
    # Equivalent inputs: a list of dense Scores, and top-k with k = V (tail 0).
    scores = [Scores(lp[:, :, k], torch.ones(2, 5, dtype=torch.bool)) for k in range(3)]
    torch.testing.assert_close(token_weights(scores, ids.tolist(), mode=mode, tau=tau), ref)
    topk = []
    for k in range(3):
        vals, idx = lp[:, :, k].topk(7, -1)
        topk.append(Scores(TopKLogprobs(idx, vals), torch.ones(2, 5, dtype=torch.bool)))
    torch.testing.assert_close(token_weights(topk, ids, mode=mode, tau=tau), ref)
    n = effective_teachers(w)
    assert n.shape == (2, 5) and ((n >= 1 - 1e-9) & (n <= 3 + 1e-9)).all()


def test_token_weights_direction_and_mask():
    V = 4
    sure = torch.log(torch.tensor([0.97, 0.01, 0.01, 0.01], dtype=torch.float64))
    unsure = torch.log(torch.full((V,), 0.25, dtype=torch.float64))
    lp = torch.stack([sure, unsure]).view(1, 1, 2, V)  # [B=1, T=1, K=2, V]
    w = token_weights(lp, torch.tensor([[0]]), mode="entropy")
    assert w[0, 0, 0] > w[0, 0, 1]  # low entropy -> more weight
    w = token_weights(lp, torch.tensor([[1]]), mode="token_prob")
    assert w[0, 0, 1] > w[0, 0, 0]  # the teacher that would have written token 1 counts more
    masked = token_weights(lp.expand(1, 2, 2, V), torch.tensor([[0, 0]]),
                           mask=torch.tensor([[True, False]]))
    torch.testing.assert_close(masked[0, 1], torch.tensor([0.5, 0.5], dtype=torch.float64))
    with pytest.raises(ConfigError):
        token_weights(lp, torch.tensor([[0]]), mode="vote")
    with pytest.raises(ShapeError):
        token_weights(lp[0], torch.tensor([[0]]))


# --------------------------------------------------------------------------- real tiny teachers

def test_logprob_confidence_matches_brute_force(tiny_dirs):
    from madopd.debate import Debate, DebateProtocol
    from madopd.models.hf import HFTeacher

    teachers = [HFTeacher(tiny_dirs["teacher_a"]), HFTeacher(tiny_dirs["teacher_c"])]
    debate = Debate(teachers, DebateProtocol(rounds=1))
    states = [State("s0", [{"role": "user", "content": "2+2?"}]),
              State("s1", [{"role": "user", "content": "Name a colour."}])]
    trs = [_tr("s0", ["four <<CONFIDENCE=90>>", "4 <<CONFIDENCE=70>>"]),
           _tr("s1", ["blue", ""], failed=())]
    got = logprob_confidence(teachers, states, trs, debate)
    assert math.isnan(float(got[1, 1]))  # empty answer: missing, not guessed
    for b, k in [(0, 0), (0, 1), (1, 0)]:
        t = teachers[k]
        tok = t.tokenizer
        ctx = tok.apply_chat_template(debate.score_context(states[b], trs[b], k), tokenize=False,
                                      add_generation_prompt=True)
        p = tok(ctx, add_special_tokens=False)["input_ids"]
        a = tok(trs[b].turn(k, 1).answer, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = t.model(input_ids=torch.tensor([p + a])).logits[0].double()
        lp = torch.log_softmax(logits, -1)
        mean = sum(float(lp[len(p) + i - 1, a[i]]) for i in range(len(a))) / len(a)
        assert abs(float(got[b, k]) - 100 * math.exp(mean)) < 1e-3
        assert 0 <= float(got[b, k]) <= 100
