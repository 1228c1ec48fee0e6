"""A toy tokenizer with byte fallback and whitespace normalisation, and a byte-level
brute-force reference of the span alignment (tests of madopd.crosstok)."""

from __future__ import annotations

EOS = 0
N_SPECIAL = 1
N_BYTES = 256


class ToyTok:
    """Greedy longest-match over ``pieces``; characters no piece covers become UTF-8 byte
    tokens ("<0xNN>", when ``byte_fallback``) or one unknown token (decoded as "?", so the
    text does not round-trip). ``squash_spaces`` collapses runs of spaces before encoding
    (a normalising tokenizer: no round trip either). Ids: 0 = EOS, 1..256 bytes, then pieces.
    """

    def __init__(self, pieces, byte_fallback=True, squash_spaces=False, expose_bytes=False):
        self.pieces = list(pieces)
        self.expose_bytes = expose_bytes
        if expose_bytes:  # exact bytes per token (like a byte-level BPE's pieces)
            self.token_bytes = lambda ids: [self.piece_bytes(i) for i in ids]
        self.byte_fallback, self.squash = byte_fallback, squash_spaces
        self.unk = N_SPECIAL + N_BYTES + len(self.pieces)
        self.eos_token_id = EOS

    def __len__(self):
        return self.unk + 1

    def piece_bytes(self, i: int) -> bytes:
        if i == EOS:
            return b""
        if i < N_SPECIAL + N_BYTES:
            return bytes([i - N_SPECIAL])
        if i == self.unk:
            return b"?"
        return self.pieces[i - N_SPECIAL - N_BYTES].encode()

    def encode(self, text: str) -> list[int]:
        if self.squash:
            while "  " in text:
                text = text.replace("  ", " ")
        out, i = [], 0
        order = sorted(range(len(self.pieces)), key=lambda k: -len(self.pieces[k]))
        while i < len(text):
            for k in order:
                if text.startswith(self.pieces[k], i):
                    out.append(N_SPECIAL + N_BYTES + k)
                    i += len(self.pieces[k])
                    break
            else:
                if self.byte_fallback:
                    out += [N_SPECIAL + b for b in text[i].encode()]
                else:
                    out.append(self.unk)
                i += 1
        return out

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": self.encode(text)}

    def decode(self, ids, skip_special_tokens=True):
        return b"".join(self.piece_bytes(i) for i in ids).decode("utf-8", errors="replace")


def reference_spans(s_tok: ToyTok, t_tok: ToyTok, s_ids: list[int]):
    """Byte-level brute force: (student span per token, teacher span per token, n_spans) for
    a response without EOS. A cut is a cumulative byte offset (any, when the tokenizer
    exposes its bytes and they spell the text; else one that ends a whole UTF-8 prefix); common cuts up to the first byte where the teacher's decoded text differs
    (plus the end when it round-trips) delimit the spans; a token lies in the span holding
    its last byte; tokens outside a closed span are -1."""
    text = s_tok.decode(s_ids).encode()
    t_ids = t_tok.encode(text.decode())
    t_text = t_tok.decode(t_ids).encode()

    def cuts(tok, ids, full):
        out, off = [], 0
        for i in ids:
            out.append(off)
            off += len(tok.piece_bytes(i))
        if tok.expose_bytes and b"".join(tok.piece_bytes(i) for i in ids) == full:
            return out, set(out), off
        ok = set()
        for c in out:  # a valid cut: the prefix decodes cleanly and is a prefix of the text
            pre = full[:c]
            try:
                pre.decode("utf-8")
            except UnicodeDecodeError:
                continue
            ok.add(c)
        return out, ok, off

    s_start, s_ok, s_end = cuts(s_tok, s_ids, text)
    t_start, t_ok, t_end = cuts(t_tok, t_ids, t_text)
    good = 0
    while good < min(len(text), len(t_text)) and text[good] == t_text[good]:
        good += 1
    common = sorted(c for c in s_ok & t_ok if c <= good)
    if text == t_text and text:
        common = sorted(set(common) | {len(text)})

    def spans(tok, ids, starts, ok, full):
        res = []
        for n, i in enumerate(ids):
            nb = len(tok.piece_bytes(i))
            end = starts[n] + nb
            # the token's text ends at the next valid cut at or after its own end
            later = [c for c in ok if c >= end] + [len(full)]
            e = min(later)
            pos = e - 1
            j = max((k for k, c in enumerate(common) if c <= pos), default=-1)
            res.append(j if 0 <= j < len(common) - 1 and e <= common[j + 1] else -1)
        return res

    return (spans(s_tok, s_ids, s_start, s_ok, text), spans(t_tok, t_ids, t_start, t_ok, t_text),
            max(len(common) - 1, 0))
