"""Is this debate / run worth reading? Counts the widgets show as a banner, and notebooks print.

A debate whose teachers never emit a parsable ``<<CONFIDENCE=N>>`` tag is weighted by the
missing-tag policy (``uniform``: w_k = 1/K), so τ and the confidence weighting (Eqs. 6-7) change
nothing. That happens when the debate templates or the sampling differ from what the teachers
were trained on (e.g. the generic ``tool_use`` templates on the toy world's teachers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from madopd.types import StepRecord, Transcript

MOSTLY_MISSING = 0.5  # banner when more than this share of teacher turns has no confidence


def confidence_counts(transcripts: Iterable[Transcript | None]) -> dict:
    """{"turns": teacher turns, "missing": turns without a parsed confidence}."""
    turns = missing = 0
    for tr in transcripts:
        if tr is None:
            continue
        for m in tr.messages:
            turns += 1
            missing += m.confidence is None
    return {"turns": turns, "missing": missing}


def merge_counts(a: dict, b: dict) -> dict:
    return {"turns": a.get("turns", 0) + b.get("turns", 0),
            "missing": a.get("missing", 0) + b.get("missing", 0)}


def missing_banner(counts: dict | None, policy: str = "uniform") -> str | None:
    """The banner text when most confidences are missing, else None (same rule as common.js)."""
    if not counts or not counts.get("turns"):
        return None
    n, m = counts["turns"], counts["missing"]
    if m / n <= MOSTLY_MISSING:
        return None
    why = {"uniform": "so every such sample is weighted uniformly (w_k = 1/K) and τ changes nothing",
           "drop_teacher": "so those teachers are dropped from the weights",
           "skip_sample": "so those samples are skipped"}.get(policy, f"missing-tag policy {policy}")
    return (f"{m} of {n} teacher turns have no parsable <<CONFIDENCE=N>> tag, {why}. Usually the "
            "debate templates or sampling differ from what the teachers were trained on.")


def run_health(records: Sequence[StepRecord] = (), transcripts: Sequence[Transcript] = ()) -> dict:
    """What the notebooks print and CI checks: the share of teacher turns with a parsed
    confidence, and the mean per-token student-teacher divergence of the records (nan without)."""
    counts = confidence_counts([t for r in records for t in r.transcripts] + list(transcripts))
    vals = [v for r in records for sample in r.per_token_divergence for row in sample for v in row
            if v is not None and math.isfinite(v)]
    return {"teacher_turns": counts["turns"],
            "confidence_parsed": round(1 - counts["missing"] / counts["turns"], 4) if counts["turns"] else 0.0,
            "mean_token_divergence": round(sum(vals) / len(vals), 4) if vals else float("nan"),
            "ln2": round(math.log(2), 4)}
