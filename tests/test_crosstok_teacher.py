"""The cross-tokenizer teacher (madopd.crosstok.teacher): with two copies of the same
tokenizer it gives the same-tokenizer result; spans of a real other tokenizer are counted."""

from __future__ import annotations

import pytest
import torch
from crosstok_helpers import ToyTok

from madopd.crosstok.teacher import CrossTokenizerTeacher, vocab_map
from madopd.divergence import DivergenceSpec, multi_teacher_divergence, sampled_token_reverse_kl
from madopd.types import AlignedLogprobs, TopKLogprobs

TEXTS = ["hello world, the answer is 42.", "naïve café — ok 🙂", "def f(x):\n    return x"]


@pytest.fixture(scope="module")
def pair(tiny_dirs):
    from transformers import AutoTokenizer

    from madopd.models.hf import HFTeacher

    teacher = HFTeacher(tiny_dirs["teacher_c"])
    student_tok = AutoTokenizer.from_pretrained(tiny_dirs["student"])  # a second copy
    return teacher, student_tok


def _batch(tok, with_eos=(True, False, True)):
    ids = []
    for text, eos in zip(TEXTS, with_eos):
        r = list(tok(text, add_special_tokens=False)["input_ids"])
        assert tok(tok.decode(r), add_special_tokens=False)["input_ids"] == r  # canonical
        ids.append(r + ([tok.eos_token_id] if eos else []))
    chats = [[{"role": "user", "content": f"q{i}?"}] for i in range(len(ids))]
    return chats, ids


def _student_logits(ids, V, seed=0):
    T = max(len(r) for r in ids)
    mask = torch.zeros(len(ids), T, dtype=torch.bool)
    sampled = torch.zeros(len(ids), T, dtype=torch.long)
    for b, r in enumerate(ids):
        mask[b, : len(r)] = True
        sampled[b, : len(r)] = torch.tensor(r)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(ids), T, V, generator=g), sampled, mask


def test_same_tokenizer_sampled_mode_equals_the_same_tokenizer_path(pair):
    teacher, stok = pair
    chats, ids = _batch(stok)
    same = teacher.score(chats, ids)
    cross = CrossTokenizerTeacher(teacher, stok, mode="sampled").score(chats, ids)
    assert isinstance(cross.dists, AlignedLogprobs)
    assert torch.equal(cross.mask, same.mask)
    z, y, mask = _student_logits(ids, same.dists.shape[-1])
    w = torch.ones(len(ids), 1)
    a = sampled_token_reverse_kl(z, [same.dists], w, y, mask=mask, reduction="none")
    b = sampled_token_reverse_kl(z, [cross.dists], w, y, mask=mask, reduction="none")
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["rkl", "fkl", "jsd"])
def test_same_tokenizer_full_mode_equals_the_same_tokenizer_top_k(pair, kind):
    teacher, stok = pair
    chats, ids = _batch(stok)
    k = 16
    same = teacher.score(chats, ids, top_k=k)
    wrap = CrossTokenizerTeacher(teacher, stok, mode="full", top_k=k)
    cross = wrap.score(chats, ids)
    assert isinstance(cross.dists, TopKLogprobs) and torch.equal(cross.mask, same.mask)
    z, _, mask = _student_logits(ids, len(stok))
    w = torch.ones(len(ids), 1)
    spec = DivergenceSpec(kind)
    a = multi_teacher_divergence(z, [same.dists], w, spec, mask=mask, reduction="none")
    b = multi_teacher_divergence(z, [cross.dists], w, spec, mask=mask, reduction="none")
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    c = wrap.crosstok_counters
    assert c["crosstok/full_rows"] == int(mask.sum()) and c["crosstok/masked_tokens"] == 0
    assert c["crosstok/full_coverage_sum"] == pytest.approx(c["crosstok/full_rows"], rel=1e-5)


class _ToyTeacher:
    """A teacher over a ToyTok: log-probs from a fixed random table, for span-sum checks."""

    name = "toy"

    def __init__(self, tok):
        self.tokenizer = tok
        self.table = torch.log_softmax(torch.randn(64, len(tok), generator=torch.Generator()
                                                    .manual_seed(1)), -1)

    def score(self, contexts, conts, top_k=None):
        from madopd.types import Scores

        T = max(len(c) for c in conts)
        out = torch.zeros(len(conts), T, len(self.tokenizer))
        for b, c in enumerate(conts):
            for t in range(len(c)):
                out[b, t] = self.table[(t + 7 * (c[t - 1] if t else 0)) % 64]
        return Scores(out, torch.ones(len(conts), T, dtype=torch.bool), [False] * len(conts))


def test_span_log_probs_sum_to_the_teachers_sequence_log_prob():
    s_tok = ToyTok(["a", "b", "ab", " ", "é"])
    t_tok = ToyTok(["a", "ba", " a", "b", " ", "日"])
    t_tok.get_vocab = lambda: {}
    teacher = _ToyTeacher(t_tok)
    ids = [s_tok.encode("ab a日 bé ab"), s_tok.encode("b a")]
    wrap = CrossTokenizerTeacher(teacher, s_tok, mode="sampled")
    sc = wrap.score([[{"role": "user", "content": "x"}]] * 2, ids)
    for b, r in enumerate(ids):
        t_ids = t_tok.encode(s_tok.decode(r))
        own = teacher.score(None, [t_ids]).dists[0]
        seq = float(own.gather(-1, torch.tensor(t_ids)[:, None]).sum())
        n = int(sc.dists.span_id[b].max()) + 1
        assert float(sc.dists.span_logp[b, :n].sum()) == pytest.approx(seq, abs=1e-9)
    assert wrap.crosstok_counters["crosstok/multi_token_spans"] >= 1


def test_vocab_map_pairs_equal_strings_and_eos(pair):
    _, stok = pair
    t, s = vocab_map(stok, stok)
    assert torch.equal(t, s) and t.numel() == len(stok.get_vocab())


@pytest.fixture(scope="module")
def other_family(tmp_path_factory):
    """A tiny teacher whose tokenizer differs (other merged tokens, so other ids)."""
    from madopd.models.tiny import TinySpec, build_tiny_model

    path = tmp_path_factory.mktemp("other") / "teacher_x"
    build_tiny_model(path, TinySpec(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                                    intermediate_size=128, seed=5,
                                    merged_tokens=("a0", "q0", "?", "<<CONFIDENCE=", ">>")))
    return str(path)


@pytest.mark.parametrize("mode,divergence", [("sampled", "srkl"), ("full", "rkl")])
def test_mixed_family_debate_distils_with_each_teacher_scoring_in_its_own_tokenizer(
        tiny_dirs, other_family, mode, divergence):
    """MAD-OPD with one same-tokenizer and one other-tokenizer teacher: they debate in one
    transcript (text), the other one is wrapped and scores through spans; counted."""
    from dataclasses import replace

    from distill_helpers import make_cfg, make_task

    from madopd.distill import Distiller
    from madopd.errors import TokenizerMismatchError

    teachers = [tiny_dirs["teacher_a"], other_family]
    off = replace(make_cfg(tiny_dirs, "mad_opd", divergence=divergence), teachers=teachers)
    with pytest.raises(TokenizerMismatchError):  # the refusal stays where not configured
        Distiller.from_config(off, make_task())
    cfg = replace(make_cfg(tiny_dirs, "mad_opd", divergence=divergence, cross_tokenizer=mode,
                           verify_train=False, record_topk=2), teachers=teachers)
    d = Distiller.from_config(cfg, make_task())
    assert isinstance(d.teachers[1], CrossTokenizerTeacher) and d.teachers[0] is not None
    assert not isinstance(d.teachers[0], CrossTokenizerTeacher)
    rec = d.step()
    assert rec.transcripts[0] is not None and rec.transcripts[0].rounds >= 1
    assert torch.isfinite(torch.tensor(rec.loss)) and rec.loss != 0.0
    c = rec.metrics
    assert c["count/crosstok/tokens"] > 0
    if mode == "full":
        assert c["count/crosstok/full_rows"] > 0
