"""Measurements of the real zoo (issue 22, item 3): one two-round debate on the held-out items.

Round 1 is each teacher answering blind (its prompt = the student's prompt), round 2 each
teacher with the round-1 transcript. Per teacher, over the held-out house-calls items:

* ``blind_in`` / ``blind_out``: round-1 call accuracy inside / outside its skill group;
* ``tag_rate``: share of round-1 turns with a readable ``<<CONFIDENCE=N>>``;
* ``auroc``: AUROC of the round-1 stated confidence vs round-1 correctness (untagged turns
  count as confidence 0; None when all turns are right or all wrong);
* ``peer_group_with_transcript``: round-2 accuracy on the peer's group, next to
  ``peer_blind``, the peer's own round-1 accuracy there (target: >= 80 % of it).
"""

from __future__ import annotations

import time
from typing import Any


def auroc(scores: list[float], labels: list[float]) -> float | None:
    """P(score of a positive > score of a negative) + 0.5 P(tie); None without both classes."""
    pos = [s for s, y in zip(scores, labels) if y > 0.5]
    neg = [s for s, y in zip(scores, labels) if y <= 0.5]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def measure_zoo(zoo: Any, *, log=print, n_examples: int = 2) -> dict[str, Any]:
    from madopd.debate import Debate, transcript_to_dict

    t0, c0 = time.perf_counter(), time.process_time()
    task = zoo.task()
    states = task.eval_states()
    groups = [task.group_of(s.family) for s in states]
    teachers = zoo.teachers(batch_size=32)
    debate = Debate(teachers, zoo.debate_protocol(rounds=2), names=zoo.names)
    transcripts = debate.run(states)
    spec_groups = zoo.spec.groups()
    per: dict[str, Any] = {}
    correct = {}
    for k in range(len(zoo.names)):
        r1 = [tr.turn(k, 1) for tr in transcripts]
        r2 = [tr.turn(k, 2) for tr in transcripts]
        correct[k] = ([task.verify(s, m.text) for s, m in zip(states, r1)],
                      [task.verify(s, m.text) for s, m in zip(states, r2)])
    for k, name in enumerate(zoo.names):
        r1 = [tr.turn(k, 1) for tr in transcripts]
        ok1, ok2 = correct[k]
        own = spec_groups[k]
        inside = [i for i, g in enumerate(groups) if g == own]
        outside = [i for i, g in enumerate(groups) if g != own]
        conf = [m.confidence if m.confidence is not None else 0.0 for m in r1]
        peers = [j for j in range(len(zoo.names)) if j != k and spec_groups[j] != own]
        peer_items = [i for i in outside if peers and groups[i] in {spec_groups[j] for j in peers}]
        per[name] = {
            "group": own, "n_in": len(inside), "n_out": len(outside),
            "blind_in": _mean([ok1[i] for i in inside]),
            "blind_out": _mean([ok1[i] for i in outside]),
            "tag_rate": _mean([float(m.confidence_source == "tag") for m in r1]),
            "auroc": auroc(conf, ok1),
            "mean_confidence_in": _mean([conf[i] for i in inside]),
            "mean_confidence_out": _mean([conf[i] for i in outside]),
            "round2_in": _mean([ok2[i] for i in inside]),
            "peer_group_with_transcript": _mean([ok2[i] for i in peer_items]),
            "peer_blind": _mean([max(correct[j][0][i] for j in peers) for i in peer_items])
            if peer_items else None,
        }
    examples = []
    for want in [0, len(states) - 1][:n_examples]:
        examples.append({"state": {"id": states[want].id, "reference": states[want].reference,
                                   "request": states[want].messages[-1]["content"]},
                         "transcript": transcript_to_dict(transcripts[want])})
    report = {"teachers": per, "n_items": len(states), "counters": dict(debate.counters),
              "examples": examples,
              "eval_wall_seconds": round(time.perf_counter() - t0, 1),
              "eval_cpu_seconds": round(time.process_time() - c0, 1)}
    for line in format_zoo_report(report).splitlines():
        log(line)
    return report


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}"


# issue 22's targets for every teacher: name -> (the report's value, the bound, its text)
TARGETS = {"tag rate": ("tag_rate", 0.95), "AUROC": ("auroc", 0.7), "blind in": ("blind_in", 0.6)}
PEER_SHARE = 0.8  # peer group with the transcript >= 80 % of the peer's own blind accuracy


def zoo_targets(report: dict[str, Any]) -> dict[str, dict[str, bool]]:
    """{teacher: {target: met?}} of the zoo report (a value of None misses its target)."""
    out = {}
    for name, t in report["teachers"].items():
        met = {k: t.get(f) is not None and t[f] >= bound for k, (f, bound) in TARGETS.items()}
        got, peer = t.get("peer_group_with_transcript"), t.get("peer_blind")
        met["peer w/ transcript"] = None not in (got, peer) and got >= PEER_SHARE * peer
        out[name] = met
    return out


def format_zoo_report(report: dict[str, Any]) -> str:
    lines = [f"real zoo on {report['n_items']} held-out items (blind = round 1; "
             "with transcript = round 2):",
             "teacher (group)       blind in  blind out  tag rate  AUROC  peer group w/ transcript"
             " (peer blind)"]
    for name, t in report["teachers"].items():
        au = "  n/a" if t["auroc"] is None else f"{t['auroc']:.2f}"
        lines.append(f"{name + ' (' + t['group'] + ')':<20} {_pct(t['blind_in'])} %  "
                     f"{_pct(t['blind_out'])} %   {_pct(t['tag_rate'])} %  {au}   "
                     f"{_pct(t['peer_group_with_transcript'])} % ({_pct(t['peer_blind'])} %)")
    missed = [f"{n}: {k}" for n, met in zoo_targets(report).items() for k, ok in met.items()
              if not ok]
    lines.append("targets (tag rate >= 95 %, AUROC >= 0.70, blind in >= 60 %, peer group w/ "
                 f"transcript >= {100 * PEER_SHARE:.0f} % of peer blind): "
                 + ("all met" if not missed else "missed " + "; ".join(missed)))
    return "\n".join(lines)
