"""Held-out report of a built zoo: what each teacher knows, per round, and how calibrated it is.

Runs the real debate (``madopd.debate.Debate`` with the toy templates, greedy) over held-out
states of both tasks with the trained teachers, and the Base student greedily. A teacher answer
is correct when it equals the state's reference action/expression exactly (for code this is a
lower bound of passing the hidden tests; the canonical forms are what teachers are trained on).

Report keys: ``params``; ``teachers[name][stage][task][family]`` accuracy for stages round1,
round2 (the debate), score (greedy answer in the force-decoding context after R = 2),
blind (score_blind context, what OPD teachers see); ``oracle_match[name]`` share of turns equal
to what the skill spec prescribes; ``calibration[name]`` reliability rows (5 buckets, all
rounds) and ``calibration_summary`` (ECE, accuracy, mean confidence); ``student_base``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from madopd.toyworld.progress import Phase
from madopd.types import Sampling, State

GREEDY = Sampling(greedy=True, max_new_tokens=16)


def eval_states(zoo, n_tool_episodes: int = 60) -> tuple[dict[str, list[State]], dict[str, Any]]:
    """Held-out states per task (tool episodes along the gold path) and the task objects."""
    tools, code = zoo.tasks()
    if zoo.spec.code_world == "multi":  # code-only members (zoo_train.code_only)
        return {"toy-code": code.eval_states()}, {"toy-code": code}
    tool_states = [s for ep in tools.eval_episodes()[:n_tool_episodes] for s in tools.states_of(ep)]
    return {"toy-tools": tool_states, "toy-code": code.eval_states()}, {"toy-tools": tools, "toy-code": code}


def _by_family(states: list[State], ok: list[bool]) -> dict[str, float]:
    acc: dict[str, list[float]] = defaultdict(list)
    for s, o in zip(states, ok):
        acc[s.family].append(float(o))
        acc["all"].append(float(o))
    return {f: round(sum(v) / len(v), 4) for f, v in sorted(acc.items())}


def _same(state: State, answer: str) -> float:
    # a multi-mode spec lists every correct form (meta["forms"]); any of them is the answer
    return float(answer.strip() in state.meta.get("forms", [state.reference or ""]))


def evaluate_zoo(zoo, *, n_tool_episodes: int = 60, progress: bool = False,
                 log=print) -> dict[str, Any]:
    """The report (module docstring); ``progress``: a bar counting states through each pass
    (the debate, every teacher's scoring and blind answers, the student), with an ETA."""
    import torch

    from madopd.debate import Debate, DebateProtocol
    from madopd.diagnostics import calibration_table, debate_metrics
    from madopd.models.tiny import count_parameters
    from madopd.toyworld.toy_common import toy_templates

    torch.manual_seed(0)
    states_by_task, tasks = eval_states(zoo, n_tool_episodes)
    teachers = zoo.teachers()
    student = zoo.student()
    names = [t.name for t in teachers]
    debate = Debate(teachers, DebateProtocol(rounds=2, templates=toy_templates(), sampling=GREEDY))
    report: dict[str, Any] = {
        "params": {**{t.name: count_parameters(t.model) for t in teachers},
                   "student": count_parameters(student.model)},
        "teachers": {n: defaultdict(dict) for n in names}, "oracle_match": {},
        "calibration": {}, "calibration_summary": {}, "student_base": {}, "debate": {}}
    all_tr, all_states, match = [], [], defaultdict(list)
    passes = 2 + 2 * len(names)  # the debate, (score, blind) per teacher, the student
    total = passes * sum(len(s) for s in states_by_task.values())
    with Phase("zoo report", total, unit="state", enabled=progress, log=log) as phase:
        for task_name, states in states_by_task.items():
            transcripts = _evaluate_task(zoo, task_name, states, tasks[task_name], debate,
                                         teachers, student, report, match, phase)
            all_tr += transcripts
            all_states += states
    report["oracle_match"] = {n: round(sum(v) / len(v), 4) for n, v in match.items()}
    if zoo.spec.code_world == "multi":  # are the teachers (and Base) really multi-modal?
        from madopd.toyworld.multimode import form_summary, program_logprobs, teacher_modes

        st = states_by_task["toy-code"]
        report["modes"] = teacher_modes(teachers, debate, st, transcripts)
        report["modes"]["student (Base)"] = {
            "blind": form_summary(st, program_logprobs(student, [s.messages for s in st], st))}
    rows = calibration_table(all_tr, all_states, _same, rounds="all", n_buckets=5)
    for name in names:
        report["calibration"][name] = [
            {"bucket": f"{int(r['lo'])}-{int(r['hi'])}", "n": r["n"],
             "mean_confidence": None if r["n"] == 0 else round(r["mean_confidence"], 3),
             "accuracy": None if r["n"] == 0 else round(r["accuracy"], 3)}
            for r in rows if r["teacher"] == name]
    dm = debate_metrics(all_tr, all_states, _same, calibration_rounds="all", n_buckets=5)
    report["calibration_summary"] = {k: round(v, 4) for k, v in dm.items()
                                     if k.startswith("calib/") and isinstance(v, float) and v == v}
    report["teachers"] = {n: dict(v) for n, v in report["teachers"].items()}
    return report


def _evaluate_task(zoo, task_name, states, task, debate, teachers, student, report, match,
                   phase) -> list:
    """One task's part of the report (into ``report`` and ``match``), ticking ``phase`` after
    each pass over ``states``; returns the task's debate transcripts."""
    from madopd.diagnostics import debate_metrics
    from madopd.toyworld.zoo_data import oracle_transcript

    names = [t.name for t in teachers]
    transcripts = debate.run(states)
    phase.update(len(states))
    for k, name in enumerate(names):
        for r, stage in ((1, "round1"), (2, "round2")):
            ok = [_same(s, tr.turn(k, r).answer) for s, tr in zip(states, transcripts)]
            report["teachers"][name][stage][task_name] = _by_family(states, ok)
        score = teachers[k].generate([debate.score_context(s, tr, k)
                                      for s, tr in zip(states, transcripts)], GREEDY)
        phase.update(len(states))
        blind = teachers[k].generate([debate.score_context(s, None, k) for s in states], GREEDY)
        phase.update(len(states))
        report["teachers"][name]["score"][task_name] = _by_family(
            states, [_same(s, a) for s, a in zip(states, score)])
        report["teachers"][name]["blind"][task_name] = _by_family(
            states, [_same(s, a) for s, a in zip(states, blind)])
    for s, tr in zip(states, transcripts):  # how closely the models follow their spec
        want = oracle_transcript(zoo.skills, task, s, 2)
        canon = getattr(task, "canonical", None)  # multi-mode: compare programs, not forms
        for m in tr.messages:
            w = want.turn(m.teacher, m.round)
            if canon is None:
                match[names[m.teacher]].append(m.text.strip() == w.text)
            else:
                match[names[m.teacher]].append(
                    (canon(s, m.answer or ""), m.confidence) == (canon(s, w.answer), w.confidence))
    out = student.rollout(states, GREEDY)
    phase.update(len(states))
    report["student_base"][task_name] = _by_family(states, [_same(s, t) for s, t in zip(states, out.texts)])
    dm = debate_metrics(transcripts, states, _same)
    report["debate"][task_name] = {k: round(v, 4) for k, v in dm.items()
                                   if isinstance(v, float) and v == v and "calib" not in k}
    return transcripts


def format_report(report: dict) -> str:
    """Plain-text tables for ``madopd zoo info``."""
    lines = []
    if "params" in report:
        lines.append("parameters: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in report["params"].items()))
    for name, stages in report.get("teachers", {}).items():
        lines.append(f"\nteacher {name}: held-out accuracy (%) by family")
        fams = None
        for stage, by_task in stages.items():
            for task, accs in by_task.items():
                if fams is None:
                    fams = [f for f in accs if f != "all"] + ["all"]
                    lines.append(f"  {'stage':<8} {'task':<10} " + " ".join(f"{f:>5}" for f in fams))
                lines.append(f"  {stage:<8} {task:<10} " + " ".join(
                    f"{100 * accs[f]:5.1f}" if f in accs else "    -" for f in fams))
    if report.get("oracle_match"):
        lines.append("\nturns equal to the skill spec: " + ", ".join(
            f"{k} {100 * v:.1f}%" for k, v in report["oracle_match"].items()))
    for name, rows in report.get("calibration", {}).items():
        lines.append(f"\ncalibration of {name} (all rounds): confidence bucket -> n, accuracy")
        for r in rows:
            if r["n"]:
                lines.append(f"  {r['bucket']:>7}: n={r['n']:<5} accuracy={100 * r['accuracy']:5.1f}%  "
                             f"(mean stated {100 * r['mean_confidence']:.0f})")
    summ = report.get("calibration_summary", {})
    if summ:
        lines.append("calibration summary: " + ", ".join(f"{k}={v}" for k, v in summ.items() if "ece" in k))
    for task, accs in report.get("student_base", {}).items():
        lines.append(f"\nBase student, {task}: " + ", ".join(f"{f} {100 * v:.1f}" for f, v in accs.items()))
    for name, m in report.get("modes", {}).items():  # multi-mode world: is p spread over forms?
        lines.append(f"\nforms, {name}: " + "; ".join(
            f"{ctx} evenness {v['evenness']:.2f}, top form {v['top_share']:.2f}, P(right form) "
            f"{v['mass']:.2f}" for ctx, v in m.items() if ctx in ("blind", "privileged")))
        if "samples_blind" in m:
            sm = m["samples_blind"]
            lines.append(f"  T=1 blind samples: forms {100 * sm['share/form']:.1f}%, hybrids "
                         f"{100 * sm['share/hybrid']:.1f}%, commitment {sm['commitment']:.2f}")
    if "build_seconds" in report:
        lines.append(f"\nbuild time: {report['build_seconds']} s")
    return "\n".join(lines)
