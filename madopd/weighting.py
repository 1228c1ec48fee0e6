"""Teacher weights: confidence tags, softmax weights (paper Eqs. 6-7), other sources, n_eff.

Conventions: B = samples, T = response tokens, K = teachers, V = vocabulary.
A *confidence* is a number in [0, 100] (or NaN = missing) per sample and teacher, [B, K].
Weights are non-negative and sum to 1 over K.

Why so much care for a small formula: the official code silently fell back to 0.5/0.5 whenever a
tag was missing, did not clamp N to [0, 100], and hard-coded K = 2 (paper digest W3, W13, W1).
Here every fallback is a named policy and every fallback is counted.

Confidence tag grammar (``parse_confidence``), exactly::

    tag     := "<<" ws NAME ws "=" ws PAYLOAD ">>"       (ws = spaces/tabs, never newlines)
    NAME    := "CONFIDENCE"  (any letter case)
    PAYLOAD := any characters except "<", ">" and newlines
    value   := PAYLOAD stripped of spaces/tabs, with one optional trailing "%",
               matching  [+-]? ( digits ["." digits*] | "." digits )

* The LAST tag in the text wins, well-formed or not: if the last tag's payload is not a
  ``value`` (``abc``, ``1e3``, ``nan``, ``80/100``, empty), the result is missing (None) —
  an earlier valid tag is not used, because the teacher's final statement is unreadable.
* Values are clamped to [0, 100] ("150" -> 100, "-5" -> 0) and the clamp is reported.
* Anything that is not a tag is ignored: ``<<CONFIDENCE=70`` (unclosed), ``<CONFIDENCE=70>``,
  ``CONFIDENCE: 70``. Nested text such as ``<<CONFIDENCE=<<CONFIDENCE=70>>>>`` contains one
  tag (the inner one) -> 70.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from madopd.errors import ConfigError, ShapeError, ValueRangeError

MISSING_POLICIES = ("uniform", "drop_teacher", "skip_sample")

_TAG = re.compile(r"<<[ \t]*confidence[ \t]*=([^<>\n]*)>>", re.IGNORECASE)
_VALUE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")  # ASCII digits only


# --------------------------------------------------------------------------- tag parsing

@dataclass(frozen=True)
class ConfidenceParse:
    """Outcome of parsing one text: ``value`` in [0, 100] or None, and why.

    status: "ok" | "clamped" (value was outside [0, 100]) | "absent" (no tag) |
            "malformed" (the last tag's payload is not a number).
    """

    value: float | None
    status: str
    raw: str | None = None  # the last tag's payload, for debugging


def parse_confidence_detail(text: str | None) -> ConfidenceParse:
    """Parse the last ``<<CONFIDENCE=N>>`` tag of ``text`` (grammar in the module docstring)."""
    if not text:
        return ConfidenceParse(None, "absent")
    tags = _TAG.findall(text)
    if not tags:
        return ConfidenceParse(None, "absent")
    raw = tags[-1]
    payload = raw.strip(" \t")
    if payload.endswith("%"):
        payload = payload[:-1].rstrip(" \t")
    if not _VALUE.fullmatch(payload):
        return ConfidenceParse(None, "malformed", raw)
    value = float(payload)  # digits only: never inf/nan, huge values saturate below
    if not math.isfinite(value) or value > 100.0:
        return ConfidenceParse(100.0, "clamped", raw)
    if value < 0.0:
        return ConfidenceParse(0.0, "clamped", raw)
    return ConfidenceParse(value + 0.0, "ok", raw)  # + 0.0 turns -0.0 into 0.0


def parse_confidence(text: str | None) -> float | None:
    """The last confidence tag's value clamped to [0, 100]; None when absent or malformed."""
    return parse_confidence_detail(text).value


def strip_confidence(text: str | None) -> str:
    """The answer without any confidence tags (valid or malformed), whitespace-stripped."""
    if not text:
        return ""
    return _TAG.sub("", text).strip()


# --------------------------------------------------------------------------- softmax weights

def _check_tau(tau: float) -> float:
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueRangeError(f"tau: expected a finite number > 0, got {tau!r}")
    return float(tau)


def _float(x: torch.Tensor) -> torch.Tensor:
    """Upcast half precisions to fp32; keep fp32/fp64 (fp64 references stay fp64)."""
    if not torch.is_floating_point(x):
        return x.to(torch.float32)
    return x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)


def confidence_weights(confidences: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Paper Eqs. 6-7: w_k = softmax_k(c_k / 100 / tau).  [B, K] -> [B, K].

    With tau = 1 and K = 2 the weights can only range in [0.269, 0.731]: the paper's weighting
    is a mild perturbation of uniform. Lower tau to sharpen it. Missing confidences (NaN) are
    an error here; ``weights_from_confidences`` applies a missing-tag policy first.
    """
    tau = _check_tau(tau)
    c = _float(torch.as_tensor(confidences))
    if c.ndim != 2 or c.shape[1] < 1:
        raise ShapeError(f"confidences: expected [B, K] with K >= 1, got shape {tuple(c.shape)}")
    if not torch.isfinite(c).all():
        raise ValueRangeError("confidences: NaN/inf found (missing tags?); use "
                              "weights_from_confidences(..., on_missing=...) to apply a policy")
    return torch.softmax(c / 100.0 / tau, dim=-1)


def uniform_weights(batch: int, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """1/K for every sample: MT-OPD's weights.  -> [B, K]."""
    if batch < 0 or k < 1:
        raise ValueRangeError(f"uniform_weights: expected batch >= 0 and k >= 1, got {batch}, {k}")
    return torch.full((batch, k), 1.0 / k, dtype=dtype)


def fixed_weights(weights: Sequence[float], batch: int) -> torch.Tensor:
    """The same user-given mixture for every sample (MT-SeqKD's fixed mix), normalised.  -> [B, K]."""
    w = torch.as_tensor(list(weights), dtype=torch.float64)
    if w.ndim != 1 or len(w) < 1 or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueRangeError(f"weights: expected K >= 1 finite non-negative numbers with a "
                              f"positive sum, got {list(weights)!r}")
    return (w / w.sum()).to(torch.float32).expand(batch, -1).clone()


def effective_teachers(weights: torch.Tensor) -> torch.Tensor:
    """n_eff = 1 / Σ_k w_k²: 1 = one teacher carries all weight, K = uniform.

    [B, K] -> [B], [B, T, K] -> [B, T]. A zero row (a skipped sample) gives inf.
    """
    w = _float(torch.as_tensor(weights))
    if w.ndim < 1:
        raise ShapeError("weights: expected [..., K]")
    return 1.0 / (w * w).sum(-1)


# --------------------------------------------------------------------------- missing-tag policy

@dataclass
class WeightResult:
    """weights [B, K] (rows of skipped samples are all 0), keep [B] bool, counters (ints)."""

    weights: torch.Tensor
    keep: torch.Tensor
    counters: dict[str, int] = field(default_factory=dict)


def weights_from_confidences(confidences: torch.Tensor, *, tau: float = 1.0,
                             on_missing: str = "uniform") -> WeightResult:
    """Softmax weights (Eqs. 6-7) with a policy for missing confidences (NaN).  [B, K] -> [B, K].

    on_missing:
      "uniform"      a sample with any missing confidence gets 1/K for every teacher;
      "drop_teacher" softmax over the teachers that have a confidence, 0 for the others;
                     a sample with none gets 1/K (counted as ``all_missing_uniform``);
      "skip_sample"  a sample with any missing confidence is excluded: keep = False, weights 0.
    Counters: ``missing_confidence`` (teacher turns), ``samples_with_missing``, and the count of
    the policy's action (``uniform_fallback`` | ``dropped_teachers``/``all_missing_uniform`` |
    ``skipped_samples``).
    """
    tau = _check_tau(tau)
    if on_missing not in MISSING_POLICIES:
        raise ConfigError(f"on_missing: expected one of {MISSING_POLICIES}, got {on_missing!r}")
    c = _float(torch.as_tensor(confidences))
    if c.ndim != 2 or c.shape[1] < 1:
        raise ShapeError(f"confidences: expected [B, K] with K >= 1, got shape {tuple(c.shape)}")
    if torch.isinf(c).any():
        raise ValueRangeError("confidences: inf found; expected values in [0, 100] or NaN = missing")
    B, K = c.shape
    present = ~torch.isnan(c)  # [B, K]
    row_missing = ~present.all(-1)  # [B]
    counters = {"missing_confidence": int((~present).sum()),
                "samples_with_missing": int(row_missing.sum())}
    logits = torch.where(present, c, torch.zeros_like(c)) / 100.0 / tau  # [B, K]
    keep = torch.ones(B, dtype=torch.bool)
    if on_missing == "uniform":
        w = torch.softmax(logits, -1)
        w[row_missing] = 1.0 / K
        counters["uniform_fallback"] = int(row_missing.sum())
    elif on_missing == "drop_teacher":
        none = ~present.any(-1)  # [B]
        masked = logits.masked_fill(~present, float("-inf"))
        masked[none] = 0.0  # all missing: uniform, counted below
        w = torch.softmax(masked, -1)
        counters["dropped_teachers"] = int((~present[~none]).sum())
        counters["all_missing_uniform"] = int(none.sum())
    else:  # skip_sample
        w = torch.softmax(logits, -1)
        w[row_missing] = 0.0
        keep = ~row_missing
        counters["skipped_samples"] = int(row_missing.sum())
    return WeightResult(w, keep, counters)


def _final_turns(transcripts: Sequence[Any]) -> tuple[int, list[list[Any]]]:
    if len(transcripts) == 0:
        raise ShapeError("transcripts: expected at least one transcript")
    K = len(transcripts[0].teacher_names)
    rows = []
    for b, tr in enumerate(transcripts):
        if len(tr.teacher_names) != K:
            raise ShapeError(f"transcripts[{b}]: {len(tr.teacher_names)} teachers, expected {K}")
        if tr.rounds < 1:
            raise ConfigError(f"transcripts[{b}] (state {tr.state_id!r}) has rounds=0: there are no "
                              "confidences; use uniform_weights/fixed_weights for R = 0 methods")
        rows.append([tr.turn(k, tr.rounds) for k in range(K)])
    return K, rows


def transcript_confidences(transcripts: Sequence[Any]) -> tuple[torch.Tensor, dict[str, int]]:
    """Final-round confidences [B, K] (NaN = missing) and tag-status counters.

    The tags are re-parsed from each final turn's text so the counters can tell an absent tag
    from a malformed one and report clamps; a failed turn (teacher error) counts as
    ``failed_turns``; every present confidence counts under ``confidence_from_<source>`` (its
    ``confidence_source``: tag, forced_tag, forced_ask, answer_logprob; "unlabelled" for old transcripts). The stored ``confidence`` is what the weights use; the re-parse only
    classifies (a hand-edited transcript may store a confidence its text does not show).
    """
    K, rows = _final_turns(transcripts)
    conf = torch.full((len(rows), K), float("nan"), dtype=torch.float64)
    counters = {"failed_turns": 0, "absent_tag": 0, "malformed_tag": 0, "clamped_tag": 0}
    sources: dict[str, int] = {}  # confidence_source of the final turns (madopd.confidence)
    for b, turns in enumerate(rows):
        for k, m in enumerate(turns):
            if getattr(m, "failed", False):
                counters["failed_turns"] += 1
                continue
            parsed = parse_confidence_detail(m.text)
            if parsed.status in ("absent", "malformed"):
                counters[f"{parsed.status}_tag"] += 1
            elif parsed.status == "clamped":
                counters["clamped_tag"] += 1
            if m.confidence is not None:
                conf[b, k] = float(m.confidence)
                src = getattr(m, "confidence_source", None) or "unlabelled"
                sources[f"confidence_from_{src}"] = sources.get(f"confidence_from_{src}", 0) + 1
    return conf, {**counters, **sources}


def weights_from_transcripts(transcripts: Sequence[Any], *, tau: float = 1.0,
                             on_missing: str = "uniform") -> WeightResult:
    """Confidence weights from each teacher's last-round tag (Eqs. 6-7) + missing-tag policy.

    Returns WeightResult(weights [B, K] float32, keep [B] bool, counters) whose counters merge
    the tag statistics of ``transcript_confidences`` and the policy counters of
    ``weights_from_confidences``, all prefixed with ``weights/``.
    """
    conf, tag_counters = transcript_confidences(transcripts)
    res = weights_from_confidences(conf, tau=tau, on_missing=on_missing)
    counters = {f"weights/{k}": v for k, v in {**tag_counters, **res.counters}.items()}
    return WeightResult(res.weights.to(torch.float32), res.keep, counters)


# --------------------------------------------------------------------------- other sources

def default_normalize(answer: str) -> str:
    """Answer normalisation for agreement: strip, collapse whitespace, lower-case."""
    return " ".join(answer.split()).lower()


def agreement_confidence(transcripts: Sequence[Any], *,
                         normalize: Callable[[str], str] = default_normalize) -> torch.Tensor:
    """100 × share of the K teachers (itself included) whose final answer equals this teacher's.

    [B, K] in [100/K, 100]; NaN for a failed turn or an empty answer (there is nothing to agree
    with). Failed/empty peers count as disagreeing.
    """
    K, rows = _final_turns(transcripts)
    out = torch.full((len(rows), K), float("nan"), dtype=torch.float64)
    for b, turns in enumerate(rows):
        keys = [None if getattr(m, "failed", False) or not m.answer.strip() else normalize(m.answer)
                for m in turns]
        for k, key in enumerate(keys):
            if key is not None:
                out[b, k] = 100.0 * sum(key == other for other in keys) / K
    return out


def logprob_confidence(teachers: Sequence[Any], states: Sequence[Any],
                       transcripts: Sequence[Any], debate: Any) -> torch.Tensor:
    """100 · exp(mean log-prob) of each teacher's own final answer under its score context.

    One ``score`` call per teacher over all samples (dense log-probs). [B, K] float64 in
    [0, 100]; NaN where the turn failed or the answer is empty.
    """
    K, rows = _final_turns(transcripts)
    if len(teachers) != K or len(states) != len(rows):
        raise ShapeError(f"expected {K} teachers and {len(rows)} states, got "
                         f"{len(teachers)} and {len(states)}")
    out = torch.full((len(rows), K), float("nan"), dtype=torch.float64)
    for k, teacher in enumerate(teachers):
        idx, contexts, conts = [], [], []
        for b, turns in enumerate(rows):
            m = turns[k]
            if getattr(m, "failed", False) or not m.answer.strip():
                continue
            ids = list(teacher.tokenizer(m.answer, add_special_tokens=False)["input_ids"])
            idx.append(b)
            contexts.append(debate.score_context(states[b], transcripts[b], k))
            conts.append(ids)
        if not idx:
            continue
        scores = teacher.score(contexts, conts, top_k=None)
        lp = _float(torch.as_tensor(scores.dists))  # [n, T, V] log-probs
        ids_t = torch.zeros(lp.shape[:2], dtype=torch.long)
        for i, ids in enumerate(conts):
            ids_t[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        tok_lp = lp.gather(-1, ids_t.unsqueeze(-1)).squeeze(-1)  # [n, T]
        mask = scores.mask.to(torch.bool)
        mean = (tok_lp * mask).sum(-1).double() / mask.sum(-1).clamp_min(1).double()  # [n]
        out[torch.tensor(idx), k] = 100.0 * mean.exp()
    return out


# --------------------------------------------------------------------------- per-token weights

def _per_teacher_logprobs(teacher_logprobs: Any) -> tuple[list[Any], torch.Tensor | None]:
    """Normalise the input to a list of K per-teacher dists ([B, T, V] tensors or TopKLogprobs)."""
    if torch.is_tensor(teacher_logprobs):
        if teacher_logprobs.ndim != 4:
            raise ShapeError(f"teacher_logprobs: expected [B, T, K, V], got {tuple(teacher_logprobs.shape)}")
        return [teacher_logprobs[:, :, k] for k in range(teacher_logprobs.shape[2])], None
    items = list(teacher_logprobs)
    if not items:
        raise ShapeError("teacher_logprobs: expected K >= 1 Scores")
    dists = [getattr(s, "dists", s) for s in items]
    masks = [getattr(s, "mask", None) for s in items]
    mask = None
    for m in masks:
        if m is not None:
            mask = m.bool() if mask is None else (mask & m.bool())
    return dists, mask


def _entropy_and_token_prob(dist: Any, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy [B, T] and p(ids) [B, T] of one teacher's dense or top-k log-probs."""
    if torch.is_tensor(dist):
        lp = torch.log_softmax(_float(dist), -1)  # renormalise: accepts logits or log-probs
        ent = -(lp.exp() * lp).sum(-1)
        tok = lp.gather(-1, ids.unsqueeze(-1)).squeeze(-1).exp()
        return ent, tok
    # Top-k: entropy of the k ids plus the tail as one bucket (a lower bound of the dense
    # entropy); a token outside the top-k gets probability 0 (a lower bound as well).
    lp = _float(dist.logprobs)  # [B, T, k]
    tail = dist.tail_mass if dist.tail_mass is not None else (1 - lp.exp().sum(-1)).clamp_min(0)
    tail = _float(tail).clamp_min(0)
    ent = -(lp.exp() * lp).sum(-1) - torch.where(tail > 0, tail * tail.clamp_min(1e-30).log(),
                                                  torch.zeros_like(tail))
    hit = dist.ids == ids.unsqueeze(-1)  # [B, T, k]
    tok = (lp.exp() * hit).sum(-1)
    return ent, tok


def token_weights(teacher_logprobs: Any, response_ids: Any, *, mode: str = "entropy",
                  tau: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token teacher weights [B, T, K], normalised over K (a per-token Eq. 7).

    teacher_logprobs: [B, T, K, V] dense log-probs (or logits), or a list of K ``Scores``
    (dense [B, T, V] or top-k) aligned with ``response_ids`` [B, T] (Long tensor or ragged
    lists, right-padded here). mode:
      "entropy"    w ∝ exp(-H(p_k,t) / tau)   (H in nats): a sure teacher counts more;
      "token_prob" w ∝ exp(p_k(y_t) / tau):  a teacher that would have written the student's
                   token counts more (same bounded range as the confidence weights).
    Positions where ``mask`` (or the Scores' masks) is False get uniform weights 1/K.
    """
    tau = _check_tau(tau)
    if mode not in ("entropy", "token_prob"):
        raise ConfigError(f"mode: expected 'entropy' or 'token_prob', got {mode!r}")
    dists, score_mask = _per_teacher_logprobs(teacher_logprobs)
    if torch.is_tensor(response_ids):
        ids = response_ids.long()
    else:
        rows = [list(r) for r in response_ids]
        T = max((len(r) for r in rows), default=0)
        ids = torch.zeros(len(rows), T, dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
    first = dists[0] if torch.is_tensor(dists[0]) else dists[0].logprobs
    B, T = first.shape[:2]
    if ids.shape[0] != B or ids.shape[1] < T:
        raise ShapeError(f"response_ids: expected [B={B}, >= T={T}], got {tuple(ids.shape)}")
    ids = ids[:, :T]
    scores = []
    for d in dists:
        ent, tok = _entropy_and_token_prob(d, ids)  # [B, T] each
        scores.append(-ent if mode == "entropy" else tok)
    s = torch.stack(scores, -1) / tau  # [B, T, K]
    w = torch.softmax(s, -1)
    valid = score_mask
    if mask is not None:
        valid = mask.bool() if valid is None else (valid & mask.bool())
    if valid is not None:
        w = torch.where(valid[:, :T].unsqueeze(-1), w, torch.full_like(w, 1.0 / w.shape[-1]))
    return w
