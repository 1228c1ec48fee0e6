"""A teacher of another tokenizer that scores the student's tokens (madopd.crosstok.align).

``CrossTokenizerTeacher(teacher, student_tokenizer, mode)`` wraps any teacher with
``score(contexts, ids)`` over its own tokenizer. Its ``score`` takes the student's response
ids, decodes them, lets the teacher re-tokenize the text and force-decode its own tokens in
its own context (the chat the caller passes: the teacher renders it with its own chat template
or plain text, debate transcript included), and returns ``Scores`` on the student's tokens:

* mode "sampled": ``AlignedLogprobs`` (span ids per student token + the teacher's span
  log-probs) for the sampled-token reverse KL (divergence 'srkl');
* mode "full": ``TopKLogprobs`` over the student's vocabulary at the first student token of
  each span, where the teacher's context is exactly the student's text so far: the teacher's
  log-probs of the tokens whose strings exist in both vocabularies (the top ``top_k`` of them;
  the rest of the teacher's mass, unmatched tokens included, is the tail bucket). Other
  positions are masked (``Scores.mask``) and counted; the matched mass is reported as coverage.

Counters (``crosstok_counters``, summed into the step's "count/crosstok/..."): tokens,
masked_tokens, roundtrip_failures, zero_width_tokens, multi_token_spans,
tokens_in_multi_token_spans; full mode adds full_rows, full_rows_masked and
full_coverage_sum (Σ over full rows of the matched teacher mass; coverage = sum / rows).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch

from madopd.crosstok.align import Alignment, align
from madopd.errors import ConfigError
from madopd.types import AlignedLogprobs, Scores, TopKLogprobs

MODES = ("sampled", "full")


def _eos_of(tok: Any) -> int | None:
    return getattr(tok, "eos_token_id", None)


def vocab_map(student_tok: Any, teacher_tok: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher ids [M], student ids [M]) of the tokens whose strings match in both
    vocabularies. Identical vocabularies map id to id; otherwise a token's string is
    ``convert_tokens_to_string([token])``, and strings that several ids share, partial UTF-8
    pieces ("\\ufffd") and special tokens are left out (their mass goes to the tail); the two
    end-of-sequence tokens are paired."""
    sv, tv = student_tok.get_vocab(), teacher_tok.get_vocab()
    if sv == tv:
        ids = torch.tensor(sorted(sv.values()), dtype=torch.long)
        return ids, ids.clone()

    def strings(tok, vocab):
        special = set(getattr(tok, "all_special_ids", []) or [])
        by_str: dict[str, list[int]] = defaultdict(list)
        for piece, i in vocab.items():
            if i in special:
                continue
            s = tok.convert_tokens_to_string([piece])
            if s and "\ufffd" not in s:
                by_str[s].append(i)
        return {s: v[0] for s, v in by_str.items() if len(v) == 1}

    ss, ts = strings(student_tok, sv), strings(teacher_tok, tv)
    pairs = sorted((ts[s], ss[s]) for s in ss.keys() & ts.keys())
    se, te = _eos_of(student_tok), _eos_of(teacher_tok)
    if se is not None and te is not None:
        pairs.append((te, se))
    t = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    s = torch.tensor([p[1] for p in pairs], dtype=torch.long)
    return t, s


class CrossTokenizerTeacher:
    """Scores the student's tokens with a teacher of another tokenizer (module docstring).

    Everything else (name, generate, tokenizer, prefix cache, model) is the wrapped teacher's;
    ``generate_ids`` is hidden because its ids are the teacher's, not the student's.
    """

    def __init__(self, teacher: Any, student_tokenizer: Any, *, mode: str = "sampled",
                 top_k: int = 64, batch_size: int = 2):
        if mode not in MODES:
            raise ConfigError(f"cross_tokenizer mode must be one of {MODES}, got {mode!r}")
        if top_k < 1 or batch_size < 1:
            raise ConfigError(f"cross_tokenizer top_k and batch_size must be >= 1, got "
                              f"{top_k}, {batch_size}")
        self.teacher, self.student_tokenizer = teacher, student_tokenizer
        self.mode, self.top_k, self.batch_size = mode, int(top_k), int(batch_size)
        self.crosstok_counters: dict[str, float] = defaultdict(float)
        self._map: tuple[torch.Tensor, torch.Tensor] | None = None
        s_eos = _eos_of(student_tokenizer)
        self.student_eos = {s_eos} if s_eos is not None else set()
        self.teacher_eos = _eos_of(teacher.tokenizer)

    def __getattr__(self, name: str) -> Any:
        if name in ("generate_ids", "logit_width", "vocab_columns", "teacher"):
            raise AttributeError(name)
        return getattr(self.teacher, name)

    def __repr__(self) -> str:
        return f"CrossTokenizerTeacher({self.teacher!r}, mode={self.mode!r})"

    def align(self, ids: list[int]) -> Alignment:
        return align(self.student_tokenizer, self.teacher.tokenizer, ids,
                     student_eos=self.student_eos, teacher_eos=self.teacher_eos)

    def score(self, contexts: list, continuation_ids: list[list[int]], *,
              top_k: int | None = None) -> Scores:
        """Scores on the student's tokens: AlignedLogprobs ("sampled") or TopKLogprobs over
        the student's vocabulary ("full"); mask [B, T] = the positions that carry a value."""
        if any(isinstance(c, list) and c and isinstance(c[0], int) for c in contexts):
            raise ConfigError("a cross-tokenizer teacher needs chat contexts (it renders them "
                              "in its own tokenizer), not the student's token ids")
        al = [self.align(list(r)) for r in continuation_ids]
        for a in al:
            for key, v in a.counts.items():
                self.crosstok_counters[f"crosstok/{key}"] += v
        B = len(al)
        T = max((len(r) for r in continuation_ids), default=0)
        S = max((a.n_spans for a in al), default=0)
        span_id = torch.full((B, T), -1, dtype=torch.long)
        span_logp = torch.zeros(B, max(S, 1), dtype=torch.float64)
        full = self.mode == "full"
        k = int(top_k or self.top_k)
        if full:
            t_ids, s_ids = self._vocab()
            k = min(k, int(t_ids.numel()))
            rows = _FullRows(B, T, k)
        truncated: list[bool] = [False] * B
        for s in range(0, B, self.batch_size):
            idx = [b for b in range(s, min(B, s + self.batch_size)) if al[b].teacher_ids]
            if not idx:
                continue
            sc = self.teacher.score([contexts[b] for b in idx], [al[b].teacher_ids for b in idx])
            lp_all = sc.dists  # [b, Tt, Vt] dense log-probs of the teacher's own tokens
            for r, b in enumerate(idx):
                a = al[b]
                truncated[b] = bool(sc.truncated[r]) if sc.truncated else False
                tt = torch.tensor(a.teacher_ids, dtype=torch.long)
                lp = lp_all[r, : len(tt)].gather(-1, tt[:, None]).squeeze(-1).double()
                tspan = torch.tensor(a.teacher_span, dtype=torch.long)
                ok = tspan >= 0
                span_logp[b].index_add_(0, tspan[ok], lp[ok])
                span_id[b, : len(a.student_span)] = torch.tensor(a.student_span)
                if full:
                    self._full_rows(rows, b, a, lp_all[r], t_ids, s_ids)
        mask = span_id >= 0
        if not full:
            return Scores(AlignedLogprobs(span_id, span_logp), mask, truncated)
        self.crosstok_counters["crosstok/full_rows_masked"] += int(mask.sum() - rows.mask.sum())
        return Scores(rows.topk(), rows.mask, truncated)

    def _vocab(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._map is None:
            self._map = vocab_map(self.student_tokenizer, self.teacher.tokenizer)
        return self._map

    def _full_rows(self, rows: _FullRows, b: int, a: Alignment, lp_t: torch.Tensor,
                   t_ids: torch.Tensor, s_ids: torch.Tensor) -> None:
        """At the first student token of every span, the teacher's next-token distribution
        (its first token of the span) restricted to the matched tokens, top-k + tail."""
        for j in range(a.n_spans):
            i, tj = a.span_first_student[j], a.span_first_teacher[j]
            if i < 0 or tj < 0:
                continue
            row = lp_t[tj].double()[t_ids]  # [M] teacher log-probs of matched tokens
            vals, pos = torch.topk(row, rows.k)
            rows.ids[b, i] = s_ids[pos]
            rows.logp[b, i] = vals
            rows.tail[b, i] = (1.0 - vals.exp().sum()).clamp_min(0.0)
            rows.mask[b, i] = True
            self.crosstok_counters["crosstok/full_rows"] += 1
            self.crosstok_counters["crosstok/full_coverage_sum"] += float(row.exp().sum())


class _FullRows:
    """TopKLogprobs [B, T, k] being filled; unfilled rows hold a valid placeholder (k ids,
    uniform with the tail) and are masked, so the divergences never read garbage."""

    def __init__(self, B: int, T: int, k: int):
        self.k = k
        self.ids = torch.arange(k).expand(B, T, k).clone()
        self.logp = torch.full((B, T, k), -math.log(k + 1), dtype=torch.float64)
        self.tail = torch.full((B, T), 1.0 / (k + 1), dtype=torch.float64)
        self.mask = torch.zeros(B, T, dtype=torch.bool)

    def topk(self) -> TopKLogprobs:
        return TopKLogprobs(self.ids, self.logp.float(), self.tail.float())
