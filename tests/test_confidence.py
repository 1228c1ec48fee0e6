"""Labelled confidence sources (madopd.confidence) and their use in debates."""

from __future__ import annotations

import pytest
import torch

from madopd.confidence import number_distribution
from madopd.debate import Debate, DebateProtocol, transcript_from_dict, transcript_to_dict
from madopd.errors import ConfigError
from madopd.types import Sampling, State


def _brute(p1, p2, p3_zero):
    """float64 enumeration of every digit string of length <= 3 (tree probabilities)."""
    out = torch.zeros(101, dtype=torch.float64)
    for d in range(10):
        end1 = 1 - p2[d].sum()
        out[d] += p1[d] * end1
        for e in range(10):
            pr = p1[d] * p2[d, e]
            if (d, e) == (1, 0):
                out[100] += pr * p3_zero
                out[10] += pr * (1 - p3_zero)
            else:
                out[10 * d + e] += pr
    return out


def test_number_distribution_matches_enumeration():
    g = torch.Generator().manual_seed(0)
    p1 = torch.rand(10, generator=g, dtype=torch.float64)
    p1 = p1 / p1.sum() * 0.9  # 10 % on a non-digit first token
    p2 = torch.rand(10, 10, generator=g, dtype=torch.float64)
    p2 = p2 / p2.sum(-1, keepdim=True) * 0.7
    got = number_distribution(p1, p2, 0.25)
    assert torch.allclose(got, _brute(p1, p2, 0.25), atol=1e-12)
    assert abs(float(got.sum()) - 0.9) < 1e-12  # all numeric mass, nothing lost
    # edges: all mass on "7" then end -> exactly 7; "1","0","0" -> 100
    p1 = torch.zeros(10, dtype=torch.float64)
    p1[7] = 1
    assert float((number_distribution(p1, torch.zeros(10, 10, dtype=torch.float64), 0.0)
                  * torch.arange(101)).sum()) == 7.0
    p1 = torch.zeros(10, dtype=torch.float64)
    p1[1] = 1
    p2 = torch.zeros(10, 10, dtype=torch.float64)
    p2[1, 0] = 1
    assert number_distribution(p1, p2, 1.0)[100] == 1.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from madopd.models.hf import HFTeacher
    from madopd.models.tiny import TinySpec, build_tiny_model

    path = tmp_path_factory.mktemp("tiny") / "m"
    build_tiny_model(path, TinySpec(hidden_size=32, num_layers=1, num_heads=1, num_kv_heads=1,
                                    head_dim=32, intermediate_size=32))
    return HFTeacher(str(path), name="t")


STATES = [State(id=f"s{i}", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(3)]


@pytest.mark.parametrize("fallback", ["forced_tag", "forced_ask", "answer_logprob"])
def test_fallback_fills_every_turn_and_is_counted(tiny, fallback):
    d = Debate([tiny, tiny], DebateProtocol(rounds=1, confidence_fallback=fallback,
                                            sampling=Sampling(greedy=True, max_new_tokens=4)),
               names=["A", "B"])
    trs = d.run(STATES)
    c = d.counters
    tagged = c["debate/confidence_from_tag"]
    assert tagged + c[f"debate/confidence_from_{fallback}"] + c["debate/confidence_missing"] == 6
    for tr in trs:
        for m in tr.messages:
            assert (m.confidence is None) == (m.confidence_source is None)
            if m.confidence is not None:
                assert 0.0 <= m.confidence <= 100.0
        back = transcript_from_dict(transcript_to_dict(tr))  # the source survives JSON
        assert [m.confidence_source for m in back.messages] == [m.confidence_source for m in tr.messages]
    from madopd.weighting import weights_from_transcripts

    w = weights_from_transcripts(trs)
    assert sum(v for k, v in w.counters.items() if k.startswith("weights/confidence_from_")) == \
        6 - c["debate/confidence_missing"]


def test_no_fallback_leaves_missing(tiny):
    d = Debate([tiny], DebateProtocol(rounds=1, sampling=Sampling(greedy=True, max_new_tokens=3)))
    trs = d.run(STATES)
    untagged = [m for tr in trs for m in tr.messages if m.confidence is None]
    assert d.counters["debate/confidence_missing"] == len(untagged)
    assert d.counters["debate/confidence_from_forced_tag"] == 0


def test_bad_fallback_and_backend():
    with pytest.raises(ConfigError, match="confidence_fallback"):
        DebateProtocol(confidence_fallback="guess")

    class Remote:
        name = "r"

        def generate(self, chats, sampling):
            return [""] * len(chats)

    with pytest.raises(ConfigError, match="no in-process model"):
        Debate([Remote()], DebateProtocol(confidence_fallback="forced_tag"))


def test_distill_config_field():
    from madopd.distill import DistillConfig

    assert DistillConfig().confidence_fallback == "none"
    with pytest.raises(Exception, match="confidence_fallback"):
        DistillConfig(confidence_fallback="guess")


def test_bad_source_in_json_is_named():
    from madopd.errors import DataError

    d = {"format": "madopd.transcript/1", "state_id": "s", "teacher_names": ["A"], "rounds": 1,
         "messages": [{"teacher": 0, "round": 1, "text": "x", "answer": "x", "confidence": 5.0,
                       "confidence_source": "vibes"}]}
    with pytest.raises(DataError, match="confidence_source"):
        transcript_from_dict(d)



def _reference_read(teacher, ids):
    """No cache, no padding, float64 logits: p1 after ids, p2 after ids + d, p3 after ids + 10."""
    from madopd.confidence import _expected_number, digit_ids

    dig = digit_ids(teacher.tokenizer)
    model = teacher.model

    def probs(seq):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([seq])).logits[0, -1].double()
        return torch.softmax(logits, -1)

    p1 = probs(ids)[dig]
    p2 = torch.stack([probs(ids + [dig[d]])[dig] for d in range(10)])
    p3 = float(probs(ids + [dig[1], dig[0]])[dig[0]])
    return _expected_number(p1, p2, p3, 1.0)


@pytest.mark.parametrize("source", ["forced_tag", "forced_ask"])
def test_batched_forced_reads_equal_unbatched_reference(tiny, source):
    """Left-padded chunks with a repeated cache == one plain forward per row and digit."""
    from madopd.confidence import forced_confidences, forced_ids

    chats = [[{"role": "user", "content": "q" * n}] for n in (1, 9, 30, 4, 17)]
    replies = ["a", "bb <<CONFIDENCE=40>>", "", "ccc dd", "e" * 20]
    rows = [forced_ids(tiny, c, r, source) for c, r in zip(chats, replies)]
    assert len({len(r) for r in rows}) > 2  # real padding in the chunks
    got = forced_confidences(tiny, rows, batch_size=3)
    for row, (value, mass) in zip(rows, got):
        ref_value, ref_mass = _reference_read(tiny, row)
        assert value == pytest.approx(ref_value, abs=1e-4)
        assert mass == pytest.approx(ref_mass, abs=1e-6)
        assert 0.0 <= value <= 100.0 and 0.0 < mass <= 1.0
    # a threshold on the non-numeric mass turns low-mass reads into missing values
    strict = forced_confidences(tiny, rows, max_non_numeric=0.0)
    assert all(v is None for v, _ in strict)


def test_forced_ask_puts_the_reply_in_an_assistant_turn(tiny):
    from madopd.confidence import ASK, forced_ids

    ids = forced_ids(tiny, [{"role": "user", "content": "Q?"}], "my answer <<CONFIDENCE=7>>",
                     "forced_ask")
    text = tiny.tokenizer.decode(ids)
    assert "my answer" in text and "CONFIDENCE" not in text and ASK in text
    assert text.index("my answer") < text.index(ASK)
    with pytest.raises(ConfigError, match="forced_ids"):
        forced_ids(tiny, [{"role": "user", "content": "Q?"}], "x", "vibes")
