"""Byte-offset alignment (madopd.crosstok.align) against a byte-level brute force."""

from __future__ import annotations

from crosstok_helpers import EOS, ToyTok, reference_spans
from hypothesis import given, settings
from hypothesis import strategies as st

from madopd.crosstok import align

STUDENT = ToyTok(["a", "b", "ab", " ", "  ", "é", "\n", " a", "ca"])
TEACHER = ToyTok(["a", "b", "ba", " a", "aa", " ", "\n", "日", "c", "é "])
STUDENT_B = ToyTok(STUDENT.pieces, expose_bytes=True)
TEACHER_B = ToyTok(TEACHER.pieces, expose_bytes=True)
NO_FALLBACK = ToyTok(["a", "b", "ba", " ", "c", "\n"], byte_fallback=False)
SQUASH = ToyTok(["a", "b", " ", "ab", "c", "é", "\n"], squash_spaces=True)
ALPHABET = ["a", "b", "c", " ", "  ", "é", "日", "🙂", "\n", "ab", "ba"]
texts = st.lists(st.sampled_from(ALPHABET), min_size=0, max_size=12).map("".join)


def _check(s_tok, t_tok, text, sample_split: bool):
    ids = s_tok.encode(text)
    if sample_split:  # a non-canonical sample: split each "ab" piece into "a" + "b"
        ab = s_tok.encode("ab")
        if len(ab) == 1:
            out = []
            for i in ids:
                out += s_tok.encode("a") + s_tok.encode("b") if i == ab[0] else [i]
            ids = out
    got = align(s_tok, t_tok, ids)
    ref_s, ref_t, n = reference_spans(s_tok, t_tok, ids)
    assert got.student_span == ref_s, (text, ids)
    assert got.teacher_span == ref_t, (text, got.teacher_ids)
    assert got.n_spans == n
    # every span holds tokens on both sides; masked student tokens are counted
    assert {s for s in got.student_span if s >= 0} == {s for s in got.teacher_span if s >= 0}
    assert got.counts["masked_tokens"] == sum(1 for s in got.student_span if s < 0)
    return got


@settings(max_examples=300, deadline=None)
@given(texts, st.booleans(), st.sampled_from([(STUDENT, TEACHER), (STUDENT_B, TEACHER),
                                              (STUDENT, TEACHER_B), (STUDENT_B, TEACHER_B)]))
def test_alignment_equals_byte_level_brute_force(text, split, toks):
    """Random texts (multi-byte characters, byte fallback, runs of spaces), canonical and
    non-canonical samples, tokenizers with and without exact token bytes."""
    _check(*toks, text, split)


def test_exact_bytes_give_one_span_per_byte_piece_with_the_same_tokenizer():
    ids = STUDENT_B.encode("a日🙂 b")  # byte-fallback pieces inside multi-byte characters
    got = align(STUDENT_B, STUDENT_B, ids)
    assert got.student_span == list(range(len(ids))) and got.counts["multi_token_spans"] == 0


@settings(max_examples=200, deadline=None)
@given(texts, st.sampled_from([NO_FALLBACK, SQUASH]))
def test_text_that_does_not_round_trip_is_masked_not_misaligned(text, teacher):
    got = _check(STUDENT, teacher, text, False)
    if teacher.decode(teacher.encode(text)) != text:
        assert got.counts["roundtrip_failures"] == 1
        assert got.counts["masked_tokens"] >= 1 or not text


def test_same_tokenizer_gives_one_span_per_token_and_eos_maps_to_eos():
    ids = STUDENT.encode("ab é  a\nb") + [EOS]
    got = align(STUDENT, STUDENT, ids, student_eos={EOS}, teacher_eos=EOS)
    assert got.student_span == list(range(len(ids))) == got.teacher_span
    assert got.teacher_ids == ids and got.counts["multi_token_spans"] == 0


def test_multibyte_byte_fallback_forms_one_span():
    # student: "日" has no piece -> 3 byte tokens with no starts inside; teacher has "日"
    ids = STUDENT.encode("a日b")
    got = align(STUDENT, TEACHER, ids)
    assert got.student_span == [0, 1, 1, 1, 2] and got.teacher_span == [0, 1, 2]
    assert got.counts["multi_token_spans"] == 1 and got.counts["tokens_in_multi_token_spans"] == 3


def test_whitespace_normalisation_masks_the_tail_and_counts_it():
    ids = STUDENT.encode("ab  ab")  # the squashing teacher reads "ab ab"
    got = align(STUDENT, SQUASH, ids)
    assert got.counts["roundtrip_failures"] == 1
    assert got.student_span[0] == 0 and got.student_span[-1] == -1
