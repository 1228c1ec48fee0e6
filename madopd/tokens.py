"""Readable display strings for token ids (byte-level BPE: GPT-2, SmolLM2, Qwen, Llama-3).

A byte-level BPE vocabulary stores bytes as printable stand-ins: "Ġ" is a space, "Ċ" a
newline, and a multi-byte UTF-8 character (é, 漢, an emoji) may be split over several tokens,
each holding only part of its bytes. ``display_tokens`` turns ids into one string per token:

* spaces are shown as "·" (middle dot), newlines as "⏎", tabs as "⇥" (visible whitespace);
* a character whose bytes span several tokens is shown whole on the token where it ends, and
  the earlier tokens show "…" plus nothing broken (no U+FFFD replacement characters);
* special tokens (``<|im_end|>``) are shown as they are.

The strings are plain text: widgets must still escape them (model output is hostile).
"""

from __future__ import annotations

from typing import Any

VISIBLE = {" ": "·", "\n": "⏎", "\t": "⇥", "\r": "␍"}


def _visible(text: str) -> str:
    return "".join(VISIBLE.get(ch, ch) for ch in text)


def display_tokens(tokenizer: Any, ids: list[int]) -> list[str]:
    """One display string per id (same length as ``ids``); see the module docstring."""
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    out: list[str] = []
    pending: list[int] = []  # ids whose bytes do not yet end a complete character
    for i in ids:
        i = int(i)
        if i in specials:
            out.extend("…" for _ in pending)
            pending = []
            out.append(tokenizer.convert_ids_to_tokens(i))
            continue
        pending.append(i)
        text = tokenizer.decode(pending, skip_special_tokens=False,
                                clean_up_tokenization_spaces=False)
        if "\ufffd" in text and len(pending) < 4:  # an incomplete UTF-8 sequence: wait
            continue
        # decode of the group minus the text already shown for earlier members: all of it
        out.extend("…" for _ in pending[:-1])
        out.append(_visible(text))
        pending = []
    out.extend("…" for _ in pending)  # a truncated character at the end
    return out
