"""Episodes -> step-level states, teacher-forced (the part of OPAD that a task needs).

``madopd.opad`` re-exports these three (its API: paper §4.4, Eqs. 9-10); they live here so a
task's ``train_states`` builds its states without importing ``opad``, which imports the tasks
(imports run one way: ``opad`` -> ``tasks``).
"""

from __future__ import annotations

from madopd.errors import DataError
from madopd.tasks.base import Environment, Episode
from madopd.types import Chat, Message, State, step_state_id


def env_step_messages(environment: Environment, episode: Episode, history: Chat,
                      action: str) -> tuple[list[Message], bool]:
    """Messages to append after ``action`` (observations), and whether the episode is over.

    Environments may implement ``step_messages(episode, history, action)`` to return several
    messages (e.g. a replayed dialogue's next user turn); otherwise ``step``'s observation
    becomes one ``tool`` message (none when it is None).
    """
    if hasattr(environment, "step_messages"):
        msgs, done = environment.step_messages(episode, history, action)
        return [dict(m) for m in msgs], bool(done)
    obs, done = environment.step(episode, history, action)
    return ([] if obs is None else [{"role": "tool", "content": str(obs)}]), bool(done)


def step_state(episode: Episode, history: Chat, m: int, mode: str,
               deviated_at: int | None = None) -> State:
    """The decision point before action m (history is copied so later steps cannot change it).

    ``deviated_at``: the step at which the acting policy's action left the reference path (full
    mode). From then on the history is the student's own, so the gold path's action m is no
    longer the reference of this state: ``reference`` is None and ``meta["reference_valid"]``
    False (the state itself is unchanged: training never reads the reference).
    """
    refs = episode.reference_actions or []
    valid = deviated_at is None or m <= deviated_at
    meta = {"episode_id": episode.id, "step": m, "opad_mode": mode, "num_reference_steps": len(refs)}
    if deviated_at is not None:
        meta["deviated_at"] = deviated_at
    meta["reference_valid"] = valid and m < len(refs)
    return State(
        id=step_state_id(episode.id, m), messages=[dict(x) for x in history],
        reference=refs[m] if valid and m < len(refs) else None, family=episode.family, meta=meta)


def same_action(a: str, b: str | None) -> bool:
    """Whether an action equals a reference action up to whitespace (how a step stays on path)."""
    return b is not None and " ".join(str(a).split()) == " ".join(str(b).split())


def teacher_forced_states(episode: Episode, environment: Environment) -> list[State]:
    """One state per reference action; earlier actions are the references (official default)."""
    refs = episode.reference_actions
    if not refs:
        raise DataError("teacher-forced OPAD needs reference actions", path=episode.id,
                        field="reference_actions")
    history: Chat = [dict(x) for x in episode.messages]
    states = []
    for m, action in enumerate(refs):
        states.append(step_state(episode, history, m, "teacher_forced"))
        observations, done = env_step_messages(environment, episode, history, action)
        history = history + [{"role": "assistant", "content": action}] + observations
        if done and m < len(refs) - 1:
            raise DataError(f"the environment ended the episode after step {m} but the reference "
                            f"has {len(refs)} actions", path=episode.id, field="reference_actions")
    return states
