"""Debate diagnostics: how the debate changed answers, and whether the confidences mean anything.

Computed over a batch of transcripts (B samples, K teachers, R rounds) and, when the task has a
verifier ``verify(state, answer_text) -> float`` (>= ``threshold`` = correct), over correctness.
Failure modes measured (shared/docs/anchors.md §2):

  flips           a teacher's (normalised) answer changes from round r to r + 1; with a verifier
                  split into helpful (wrong -> right) and harmful (right -> wrong), net = h - h'
  conformity      a teacher that disagreed with its peers' strict majority in round r adopts
                  that majority answer in round r + 1 (with K = 2 the "majority" is the peer)
  wrong consensus all K final answers equal and wrong
  oracle gap      some teacher's final answer is right but the weighted answer (the answer of
                  the max-weight teacher, ties -> lowest index) is wrong
  calibration     per teacher: accuracy by confidence bucket (10 buckets of width 10), ECE, Brier
  weight collapse share of samples whose max weight > 0.9; mean n_eff = 1/Σw²

Failed turns (teacher errors) and turns with empty answers are left out of every event they
would take part in. Rates whose denominator is empty are NaN (never a made-up 0); the
denominators are reported next to them (keys ending in ``_n``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from madopd.errors import ConfigError, ShapeError
from madopd.weighting import default_normalize, effective_teachers, weights_from_transcripts

Verify = Callable[[Any, str], float]


def _rate(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


@dataclass
class _Sample:
    """Per-sample view: keys[r][k] normalised answer (None = failed/empty), ok[r][k] bool|None."""

    state_id: str
    keys: list[list[str | None]]
    ok: list[list[bool | None]] | None
    conf: list[list[float | None]]
    weights: list[float] | None


def _analyse(transcripts: Sequence[Any], states: Sequence[Any] | None, verify: Verify | None,
             weights: Any, normalize: Callable[[str], str], threshold: float) -> list[_Sample]:
    if (states is None) != (verify is None):
        raise ConfigError("states and verify: pass both (correctness metrics) or neither")
    if states is not None and len(states) != len(transcripts):
        raise ShapeError(f"states: expected {len(transcripts)} (one per transcript), got {len(states)}")
    if weights is not None:
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.ndim != 2 or weights.shape[0] != len(transcripts):
            raise ShapeError(f"weights: expected [B={len(transcripts)}, K], got {tuple(weights.shape)}")
    out = []
    for b, tr in enumerate(transcripts):
        K, R = len(tr.teacher_names), tr.rounds
        if weights is not None and weights.shape[1] != K:
            raise ShapeError(f"weights: expected K={K} columns, got {weights.shape[1]}")
        keys = [[None] * K for _ in range(R)]
        conf = [[None] * K for _ in range(R)]
        ok = [[None] * K for _ in range(R)] if verify is not None else None
        cache: dict[str, bool] = {}  # verify may be expensive (sandboxed code): once per answer
        for m in tr.messages:
            if getattr(m, "failed", False) or not m.answer.strip():
                continue
            r, k = m.round - 1, m.teacher
            keys[r][k] = normalize(m.answer)
            conf[r][k] = m.confidence
            if verify is not None:
                if m.answer not in cache:
                    cache[m.answer] = float(verify(states[b], m.answer)) >= threshold
                ok[r][k] = cache[m.answer]
        w = None if weights is None else weights[b].tolist()
        out.append(_Sample(tr.state_id, keys, ok, conf, w))
    return out


def _peer_majority(keys: list[str | None], k: int) -> str | None:
    """The answer held by a strict majority of teacher k's peers, or None."""
    peers = [a for j, a in enumerate(keys) if j != k]
    for a in set(x for x in peers if x is not None):
        if sum(x == a for x in peers) * 2 > len(peers):
            return a
    return None


def _events(s: _Sample) -> dict[str, list[tuple[int, int]]]:
    """(round r, teacher k) of each transition event from round r to r + 1 (0-based r)."""
    ev: dict[str, list[tuple[int, int]]] = {k: [] for k in (
        "transitions", "flips", "helpful", "harmful", "verified_transitions",
        "conformity_eligible", "conformity")}
    R = len(s.keys)
    for r in range(R - 1):
        for k in range(len(s.keys[r])):
            a, b = s.keys[r][k], s.keys[r + 1][k]
            if a is None or b is None:
                continue
            ev["transitions"].append((r, k))
            if a != b:
                ev["flips"].append((r, k))
            if s.ok is not None:
                ev["verified_transitions"].append((r, k))
                if not s.ok[r][k] and s.ok[r + 1][k]:
                    ev["helpful"].append((r, k))
                if s.ok[r][k] and not s.ok[r + 1][k]:
                    ev["harmful"].append((r, k))
            maj = _peer_majority(s.keys[r], k)
            if maj is not None and a != maj:
                ev["conformity_eligible"].append((r, k))
                if b == maj:
                    ev["conformity"].append((r, k))
    return ev


def _final(s: _Sample) -> tuple[bool, bool | None, bool | None, bool | None]:
    """(unanimous, unanimous-and-wrong, some teacher right, weighted answer right)."""
    if not s.keys:
        return False, None, None, None
    keys = s.keys[-1]
    unanimous = all(a is not None for a in keys) and len(set(keys)) == 1
    if s.ok is None:
        return unanimous, None, None, None
    oks = s.ok[-1]
    wrong_consensus = unanimous and not oks[0]
    oracle = any(bool(o) for o in oks)
    weighted = None
    if s.weights is not None and sum(s.weights) > 0:
        best = max(range(len(s.weights)), key=lambda k: (s.weights[k], -k))
        weighted = bool(oks[best])  # a failed best turn counts as wrong
    return unanimous, wrong_consensus, oracle, weighted


def _bucket(c: float, n_buckets: int) -> int:
    return min(int(c * n_buckets / 100.0), n_buckets - 1)  # 100 falls in the top bucket


def calibration_table(transcripts: Sequence[Any], states: Sequence[Any], verify: Verify, *,
                      rounds: str = "final", n_buckets: int = 10, threshold: float = 0.5,
                      normalize: Callable[[str], str] = default_normalize) -> list[dict[str, Any]]:
    """Reliability rows per teacher and bucket: teacher, bucket, lo, hi, n, mean_confidence
    (in [0, 1]), accuracy (NaN for empty buckets). ``rounds``: "final" or "all" turns."""
    if rounds not in ("final", "all"):
        raise ConfigError(f"rounds: expected 'final' or 'all', got {rounds!r}")
    if n_buckets < 1:
        raise ConfigError(f"n_buckets: expected >= 1, got {n_buckets}")
    samples = _analyse(transcripts, states, verify, None, normalize, threshold)
    names = list(transcripts[0].teacher_names) if transcripts else []
    rows = []
    for k, name in enumerate(names):
        n = [0] * n_buckets
        conf_sum = [0.0] * n_buckets
        ok_sum = [0.0] * n_buckets
        for s in samples:
            rs = range(len(s.keys)) if rounds == "all" else range(len(s.keys) - 1, len(s.keys))
            for r in rs:
                c, o = s.conf[r][k], s.ok[r][k]
                if c is None or o is None:
                    continue
                i = _bucket(c, n_buckets)
                n[i] += 1
                conf_sum[i] += c / 100.0
                ok_sum[i] += float(o)
        for i in range(n_buckets):
            rows.append({"teacher": name, "bucket": i, "lo": 100.0 * i / n_buckets,
                         "hi": 100.0 * (i + 1) / n_buckets, "n": n[i],
                         "mean_confidence": _rate(conf_sum[i], n[i]),
                         "accuracy": _rate(ok_sum[i], n[i])})
    return rows


def _calibration_metrics(samples: list[_Sample], names: list[str], rounds: str,
                         n_buckets: int) -> dict[str, float]:
    out: dict[str, float] = {}
    pooled: list[tuple[float, float]] = []
    for k, name in enumerate(names + ["all"]):
        pairs = []
        for s in samples:
            rs = range(len(s.keys)) if rounds == "all" else range(len(s.keys) - 1, len(s.keys))
            for r in rs:
                ks = range(len(names)) if name == "all" else [k]
                for j in ks:
                    if s.conf[r][j] is not None and s.ok[r][j] is not None:
                        pairs.append((s.conf[r][j], float(s.ok[r][j])))
        if name != "all":
            pooled += pairs
        ece = 0.0
        for i in range(n_buckets):
            inb = [(c / 100.0, o) for c, o in pairs if _bucket(c, n_buckets) == i]
            if inb:
                ece += len(inb) / len(pairs) * abs(sum(o for _, o in inb) / len(inb)
                                                   - sum(c for c, _ in inb) / len(inb))
        n = len(pairs)
        out[f"calib/{name}/n"] = float(n)
        out[f"calib/{name}/ece"] = ece if n else float("nan")
        out[f"calib/{name}/brier"] = _rate(sum((c / 100.0 - o) ** 2 for c, o in pairs), n)
        out[f"calib/{name}/mean_confidence"] = _rate(sum(c / 100.0 for c, _ in pairs), n)
        out[f"calib/{name}/accuracy"] = _rate(sum(o for _, o in pairs), n)
    return out


def debate_metrics(transcripts: Sequence[Any], states: Sequence[Any] | None = None,
                   verify: Verify | None = None, *, weights: Any = None, tau: float = 1.0,
                   on_missing: str = "uniform",
                   normalize: Callable[[str], str] = default_normalize, threshold: float = 0.5,
                   calibration_rounds: str = "final", n_buckets: int = 10) -> dict[str, float]:
    """A flat dict of floats describing a batch of debates (see the module docstring).

    weights: [B, K] teacher weights; None = ``weights_from_transcripts(tau, on_missing)``.
    Keys: debate/{n_samples, rounds, flip_rate, flip_n, unanimous_first, unanimous_final,
    conformity_rate, conformity_n, weight_collapse, n_eff_mean, failed_turn_rate,
    missing_confidence_rate} and, with a verifier, debate/{acc_round1.., acc_final,
    helpful_flips, harmful_flips, net_correction, verified_n, wrong_consensus, oracle_acc,
    weighted_acc, oracle_gap} and calib/{name|all}/{n, ece, brier, mean_confidence, accuracy}.
    """
    if calibration_rounds not in ("final", "all"):
        raise ConfigError(f"calibration_rounds: expected 'final' or 'all', got {calibration_rounds!r}")
    B = len(transcripts)
    out: dict[str, float] = {"debate/n_samples": float(B)}
    if B == 0:
        return out
    names = list(transcripts[0].teacher_names)
    R = transcripts[0].rounds
    out["debate/rounds"] = float(R)
    if R == 0:
        return out
    if weights is None:
        weights = weights_from_transcripts(transcripts, tau=tau, on_missing=on_missing).weights
    samples = _analyse(transcripts, states, verify, weights, normalize, threshold)
    K = len(names)
    turns = [m for tr in transcripts for m in tr.messages]
    finals = [m for tr in transcripts for m in tr.messages if m.round == tr.rounds]
    out["debate/failed_turn_rate"] = _rate(sum(bool(getattr(m, "failed", False)) for m in turns),
                                           len(turns))
    out["debate/missing_confidence_rate"] = _rate(sum(m.confidence is None for m in finals),
                                                  len(finals))

    ev = {k: 0 for k in ("transitions", "flips", "helpful", "harmful", "verified_transitions",
                         "conformity_eligible", "conformity")}
    for s in samples:
        for k, v in _events(s).items():
            ev[k] += len(v)
    out["debate/flip_n"] = float(ev["transitions"])
    out["debate/flip_rate"] = _rate(ev["flips"], ev["transitions"])
    out["debate/conformity_n"] = float(ev["conformity_eligible"])
    out["debate/conformity_rate"] = _rate(ev["conformity"], ev["conformity_eligible"])
    unan = lambda r: [all(a is not None for a in s.keys[r]) and len(set(s.keys[r])) == 1
                      for s in samples]
    out["debate/unanimous_first"] = _rate(sum(unan(0)), B)
    out["debate/unanimous_final"] = _rate(sum(unan(-1)), B)

    w = torch.as_tensor(weights, dtype=torch.float64)
    live = w.sum(-1) > 0  # rows of skipped samples are all zero
    out["debate/weight_collapse"] = _rate(float((w[live].max(-1).values > 0.9).sum()), float(live.sum()))
    out["debate/n_eff_mean"] = float(effective_teachers(w[live]).mean()) if live.any() else math.nan

    if verify is None:
        return out
    for r in range(R):
        oks = [s.ok[r][k] for s in samples for k in range(K) if s.ok[r][k] is not None]
        out[f"debate/acc_round{r + 1}"] = _rate(sum(oks), len(oks))
    out["debate/acc_final"] = out[f"debate/acc_round{R}"]
    vt = ev["verified_transitions"]
    out["debate/verified_n"] = float(vt)
    out["debate/helpful_flips"] = _rate(ev["helpful"], vt)
    out["debate/harmful_flips"] = _rate(ev["harmful"], vt)
    out["debate/net_correction"] = _rate(ev["helpful"] - ev["harmful"], vt)
    finals_ = [_final(s) for s in samples]
    out["debate/wrong_consensus"] = _rate(sum(bool(f[1]) for f in finals_), B)
    out["debate/oracle_acc"] = _rate(sum(bool(f[2]) for f in finals_), B)
    scored = [f for f in finals_ if f[3] is not None]
    out["debate/weighted_acc"] = _rate(sum(bool(f[3]) for f in scored), len(scored))
    out["debate/oracle_gap"] = _rate(sum(bool(f[2]) and not f[3] for f in scored), len(scored))
    out.update(_calibration_metrics(samples, names, calibration_rounds, n_buckets))
    return out


def debate_cases(transcripts: Sequence[Any], states: Sequence[Any] | None = None,
                 verify: Verify | None = None, *, weights: Any = None, tau: float = 1.0,
                 on_missing: str = "uniform", normalize: Callable[[str], str] = default_normalize,
                 threshold: float = 0.5) -> dict[str, list[str]]:
    """State ids per failure case, for the failure-case widgets: flip, helpful_flip,
    harmful_flip, conformity, wrong_consensus, oracle_gap, failed_turn (a state appears once
    per case however many events it has)."""
    if not transcripts or transcripts[0].rounds == 0:
        return {}
    if weights is None:
        weights = weights_from_transcripts(transcripts, tau=tau, on_missing=on_missing).weights
    samples = _analyse(transcripts, states, verify, weights, normalize, threshold)
    cases: dict[str, list[str]] = {k: [] for k in (
        "flip", "helpful_flip", "harmful_flip", "conformity", "wrong_consensus", "oracle_gap",
        "failed_turn")}
    for s, tr in zip(samples, transcripts):
        ev = _events(s)
        for case, key in (("flip", "flips"), ("helpful_flip", "helpful"),
                          ("harmful_flip", "harmful"), ("conformity", "conformity")):
            if ev[key]:
                cases[case].append(s.state_id)
        _, wrong, oracle, weighted = _final(s)
        if wrong:
            cases["wrong_consensus"].append(s.state_id)
        if oracle and weighted is False:
            cases["oracle_gap"].append(s.state_id)
        if any(getattr(m, "failed", False) for m in tr.messages):
            cases["failed_turn"].append(s.state_id)
    return cases
