"""Readable byte-level BPE tokens (madopd.tokens)."""

from __future__ import annotations

from madopd.models.tiny import build_tokenizer
from madopd.tokens import display_tokens


def test_visible_whitespace_and_whole_characters():
    tok = build_tokenizer()  # byte-level: every byte is one token
    text = "a b\n\té漢🙂"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    shown = display_tokens(tok, ids)
    assert len(shown) == len(ids)
    assert shown[:6] == ["a", "·", "b", "⏎", "⇥", "…"]
    assert "é" in shown and "漢" in shown and "🙂" in shown
    assert "\ufffd" not in "".join(shown)
    assert "".join(s for s in shown if s != "…").replace("·", " ").replace("⏎", "\n") \
        .replace("⇥", "\t") == text


def test_specials_and_truncated_character():
    tok = build_tokenizer()
    eos = tok.eos_token_id
    ids = tok("hi", add_special_tokens=False)["input_ids"] + [eos]
    assert display_tokens(tok, ids) == ["h", "i", "<|end|>"]
    cut = tok("é", add_special_tokens=False)["input_ids"][:1]  # half a character
    assert display_tokens(tok, cut) == ["…"]
