"""Evaluate a student on a task: single-turn accuracy or multi-turn step accuracy / success.

Keys (per family ``<key>/<family>`` as well):
* single-turn: ``accuracy`` = mean over families of the per-family accuracy (the paper-table
  "Avg"), ``accuracy_micro`` = mean over all states, ``n``;
* episodic (full on-policy episodes through the environment): ``step_accuracy`` and
  ``episode_success`` (macro over families), their ``_micro`` versions, ``accuracy`` =
  ``step_accuracy``, ``n`` episodes, ``count/episode_truncated``.

``outcomes`` (a list, optional) receives one ``{"id", "family", "value"}`` per evaluated item
(episodes also carry their ``actions``)
(state: verify score; episode: success), in evaluation order: what an interval over items needs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from madopd.distill.data import is_episodic
from madopd.errors import DataError
from madopd.opad import rollout_episodes
from madopd.types import Sampling


def _macro(per_family: dict[str, list[float]]) -> float:
    means = [sum(v) / len(v) for v in per_family.values() if v]
    return sum(means) / len(means) if means else float("nan")


def evaluate_student(student: Any, task: Any, sampling: Sampling, *, limit: int | None = None,
                     batch_size: int = 16, max_steps: int = 10,
                     outcomes: list | None = None) -> dict[str, float]:
    if is_episodic(task):
        return _evaluate_episodes(student, task, sampling, limit, batch_size, max_steps, outcomes)
    states = list(task.eval_states())[:limit]
    if not states:
        raise DataError(f"task {getattr(task, 'name', task)!r} has no evaluation states")
    scores: dict[str, list[float]] = defaultdict(list)
    all_scores = []
    for s in range(0, len(states), batch_size):
        batch = states[s:s + batch_size]
        samples = student.rollout(batch, sampling)
        for st, text in zip(batch, samples.texts):
            v = float(task.verify(st, text))
            scores[st.family or "all"].append(v)
            all_scores.append(v)
            if outcomes is not None:
                outcomes.append({"id": st.id, "family": st.family or "all", "value": v})
    out = {"accuracy": _macro(scores), "accuracy_micro": sum(all_scores) / len(all_scores),
           "n": float(len(states))}
    if len(scores) > 1 or "all" not in scores:
        out.update({f"accuracy/{f}": sum(v) / len(v) for f, v in scores.items()})
    return out


def _evaluate_episodes(student, task, sampling, limit, batch_size, max_steps,
                       outcomes=None) -> dict[str, float]:
    episodes = list(task.eval_episodes())[:limit]
    if not episodes:
        raise DataError(f"task {getattr(task, 'name', task)!r} has no evaluation episodes")
    steps: dict[str, list[float]] = defaultdict(list)
    success: dict[str, list[float]] = defaultdict(list)
    counters: dict[str, float] = {}
    for s in range(0, len(episodes), batch_size):
        runs = rollout_episodes(student, episodes[s:s + batch_size], task.environment, sampling,
                                max_steps, counters)
        for r in runs:
            fam = r.episode.family or "all"
            for st, action in zip(r.states, r.actions):
                steps[fam].append(float(task.step_correct(r.episode, st.messages, action)))
            success[fam].append(float(task.episode_success(r.episode, r.history)))
            if outcomes is not None:
                outcomes.append({"id": r.episode.id, "family": fam, "value": success[fam][-1],
                                 "actions": list(r.actions)})
    flat_steps = [x for v in steps.values() for x in v]
    flat_succ = [x for v in success.values() for x in v]
    out = {"step_accuracy": _macro(steps), "episode_success": _macro(success),
           "step_accuracy_micro": sum(flat_steps) / max(1, len(flat_steps)),
           "episode_success_micro": sum(flat_succ) / len(flat_succ),
           "n": float(len(episodes)), **counters}
    out["accuracy"] = out["step_accuracy"]
    if len(steps) > 1 or "all" not in steps:
        out.update({f"step_accuracy/{f}": sum(v) / len(v) for f, v in steps.items()})
        out.update({f"episode_success/{f}": sum(v) / len(v) for f, v in success.items()})
    return out
