"""Byte-offset alignment of two tokenizations of one text (pure: tokenizers in, indices out).

The student's response ids decode to a text S. The teacher re-tokenizes S with its own
tokenizer. Each tokenization cuts S at its tokens' start offsets; a cut both share is a
*common boundary*, and the pieces between consecutive common boundaries are *spans*: the
smallest units on which both agree. A span holds ≥ 1 student and ≥ 1 teacher token, and its
teacher log-prob is the sum over its teacher tokens (chain rule: the probability of the
span's text under the teacher's tokenization of it).

Offsets are bytes of S's UTF-8. Where a tokenizer's pieces can be read as exact bytes
(byte-level BPE, SentencePiece with byte fallback: ``token_bytes``) every token has its
start, even inside a multi-byte character. Otherwise they come from prefix decoding: token i
starts at the byte length of decode(ids[:i]) when that decoded prefix is a prefix of S; else
it has no start of its own (a piece of a multi-byte character, or a decoder that rewrites
spaces) and is glued to the token before it. Missing starts only make spans longer, never
misaligned.

Text that does not round-trip (decode(encode(S)) != S: normalisation, unknown characters)
is aligned up to the first difference; the student tokens after the last common boundary
before it are masked and counted. Zero-width student tokens (special tokens skipped by
decode) have no text to compare: their spans are masked and counted, except a final
end-of-sequence token, which is aligned with the teacher's own end-of-sequence token.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Alignment:
    """One sequence's alignment. ``student_span[i]`` / ``teacher_span[j]``: the span of
    student token i / teacher token j, -1 = masked. ``teacher_ids``: the teacher's tokens of
    the text (plus its EOS when the student's response ended with one)."""

    text: str
    teacher_ids: list[int]
    student_span: list[int]
    teacher_span: list[int]
    n_spans: int
    span_first_teacher: list[int]  # per span: index of its first teacher token
    span_first_student: list[int]  # per span: index of its first student token
    counts: dict[str, int] = field(default_factory=dict)


def _gpt2_byte_decoder() -> dict[str, int]:
    """The byte-level BPE alphabet: bytes that print stand for themselves, the others for
    the characters 256, 257, ... in byte order (GPT-2's reversible byte-to-text mapping)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[chr(b)] = b
        else:
            table[chr(256 + n)] = b
            n += 1
    return table


_BYTE_DECODER = _gpt2_byte_decoder()


def token_bytes(tokenizer: Any, ids: list[int]) -> list[bytes] | None:
    """Each token's exact bytes, or None when the tokenizer's pieces cannot be read as bytes.

    Known forms: a ``token_bytes(ids)`` method; a byte-level BPE decoder (GPT-2 alphabet);
    a SentencePiece decoder that only replaces "▁" by a space with byte fallback ("<0xNN>").
    Special tokens are empty (decode skips them).
    """
    if hasattr(tokenizer, "token_bytes"):
        return tokenizer.token_bytes(ids)
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    kind = repr(decoder)
    if decoder is None or not (kind.startswith("ByteLevel(") or kind.startswith("Sequence(")):
        return None
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    pieces = tokenizer.convert_ids_to_tokens(list(ids))
    out: list[bytes] = []
    try:
        if kind.startswith("ByteLevel("):
            added = set((tokenizer.get_added_vocab() or {}).values()) \
                if hasattr(tokenizer, "get_added_vocab") else set()
            for i, p in zip(ids, pieces):
                if i in special:
                    out.append(b"")
                elif i in added:  # an added plain-text token is its own text
                    out.append(p.encode())
                else:
                    out.append(bytes(_BYTE_DECODER[c] for c in p))
            return out
        if kind.startswith("Sequence(decoders=[Replace(pattern=String(\"▁\"), content=\" \"), "
                           "ByteFallback(), Fuse()])"):
            for i, p in zip(ids, pieces):
                if i in special:
                    out.append(b"")
                elif len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
                    out.append(bytes([int(p[3:5], 16)]))
                else:
                    out.append(p.replace("▁", " ").encode())
            return out
    except (KeyError, ValueError, TypeError):
        return None
    return None


def token_starts(tokenizer: Any, ids: list[int], text: str) -> list[int | None]:
    """Start offset (bytes of ``text``'s UTF-8) of each token, None where it has none.

    ``text`` is decode(ids) with special tokens skipped. Exact bytes (``token_bytes``) give
    every start when they concatenate to the text; otherwise starts come from prefix
    decoding (a token whose decoded prefix is not a prefix of the text has none). Starts are
    non-decreasing; a zero-width token starts where the next one does. Prefix decoding is
    O(n²) in n = len(ids).
    """
    tb = text.encode()
    pieces = token_bytes(tokenizer, ids)
    if pieces is not None and b"".join(pieces) == tb:
        starts, off = [], 0
        for p in pieces:
            starts.append(off)
            off += len(p)
        return starts
    starts = []
    last = 0
    for i in range(len(ids)):
        prefix = tokenizer.decode(ids[:i], skip_special_tokens=True) if i else ""
        n = len(prefix.encode())
        if text.startswith(prefix) and n >= last:
            starts.append(n)
            last = n
        else:
            starts.append(None)
    return starts


def _ends(starts: list[int | None], n_text: int) -> list[int]:
    """End offset of each token: the next start that exists (the text's end for the last)."""
    ends, nxt = [0] * len(starts), n_text
    for i in range(len(starts) - 1, -1, -1):
        ends[i] = nxt
        if starts[i] is not None:
            nxt = starts[i]
    return ends


def common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def align(student_tok: Any, teacher_tok: Any, student_ids: list[int], *,
          student_eos: set[int] | None = None, teacher_eos: int | None = None) -> Alignment:
    """Align the student's response ids with the teacher's tokenization of its text."""
    student_eos = student_eos or set()
    ids = list(student_ids)
    has_eos = bool(ids) and ids[-1] in student_eos and teacher_eos is not None
    body = ids[:-1] if has_eos else ids
    text = student_tok.decode(body, skip_special_tokens=True)
    t_ids = list(teacher_tok(text, add_special_tokens=False)["input_ids"]) if text else []
    t_text = teacher_tok.decode(t_ids, skip_special_tokens=True)
    good = common_prefix(text.encode(), t_text.encode())  # bytes beyond are not trusted
    roundtrip = t_text == text
    s_starts = token_starts(student_tok, body, text)
    t_starts = token_starts(teacher_tok, t_ids, t_text)
    s_ends = _ends(s_starts, len(text.encode()))
    t_ends = _ends(t_starts, len(t_text.encode()))
    s_cuts = {s for s in s_starts if s is not None}
    t_cuts = {s for s in t_starts if s is not None}
    end = len(text.encode()) if roundtrip else None
    common = sorted(c for c in (s_cuts & t_cuts) if c <= good) + ([end] if end else [])
    common = sorted(set(common) | ({0} if text else set()))

    def spans_of(starts, ends, n):
        """Span index per token: the common-boundary interval holding its last character
        (a zero-width token: its start); -1 past the last closing boundary."""
        out = [-1] * n
        for i in range(n):
            zero = starts[i] is not None and ends[i] == starts[i]
            pos = starts[i] if zero else ends[i] - 1
            j = bisect.bisect_right(common, pos) - 1
            out[i] = j if 0 <= j and j + 1 < len(common) and ends[i] <= common[j + 1] else -1
        return out

    s_span = spans_of(s_starts, s_ends, len(body))
    t_span = spans_of(t_starts, t_ends, len(t_ids))
    counts = {"tokens": len(ids), "roundtrip_failures": int(not roundtrip),
              "zero_width_tokens": 0, "masked_tokens": 0, "multi_token_spans": 0,
              "tokens_in_multi_token_spans": 0}
    # zero-width student tokens (skipped specials) mask their whole span
    zero = [i for i in range(len(body)) if _zero_width(student_tok, body[i])]
    bad_spans = {s_span[i] for i in zero}
    counts["zero_width_tokens"] = len(zero)
    n_spans = max(len(common) - 1, 0)
    # spans must hold at least one token on each side; others (impossible unless a
    # tokenizer emits empty tokens) are masked
    s_has = {s for s in s_span if s >= 0}
    t_has = {s for s in t_span if s >= 0}
    bad_spans |= (s_has ^ t_has)
    s_span = [-1 if s in bad_spans else s for s in s_span]
    t_span = [-1 if s in bad_spans else s for s in t_span]
    if has_eos:
        s_span.append(n_spans)
        t_ids = t_ids + [int(teacher_eos)]
        t_span.append(n_spans)
        n_spans += 1
    first_t, first_s = [-1] * n_spans, [-1] * n_spans
    for j, s in enumerate(t_span):
        if s >= 0 and first_t[s] < 0:
            first_t[s] = j
    sizes: dict[int, int] = {}
    for i, s in enumerate(s_span):
        if s >= 0:
            sizes[s] = sizes.get(s, 0) + 1
            if first_s[s] < 0:
                first_s[s] = i
    counts["masked_tokens"] = sum(1 for s in s_span if s < 0)
    counts["multi_token_spans"] = sum(1 for n in sizes.values() if n > 1)
    counts["tokens_in_multi_token_spans"] = sum(n for n in sizes.values() if n > 1)
    return Alignment(text, t_ids, s_span, t_span, n_spans, first_t, first_s, counts)


def _zero_width(tok: Any, i: int) -> bool:
    return tok.decode([i], skip_special_tokens=True) == ""
