"""Training text for the toy zoo: teachers' debate turns and the Base student's SFT data.

Every teacher chat is produced by ``madopd.debate.Debate.prompt`` / ``.score_context`` with the
toy templates, so train-time and run-time formats are the same bytes. What a teacher says in a
chat is given by the oracle of its ``TeacherSkill`` (toy_common): its believed operation, a
confidence that says whether it knows, and the shared revision rule.

Per training state and teacher k, five examples:
  round 1       prompt(r=1)                  -> "ANSWER<<CONFIDENCE=N>>"
  round 2       prompt(r=2, peers' round 1)  -> revised "ANSWER<<CONFIDENCE=N>>"
  score, R = 1  score_context(peers' round 1) -> revised ANSWER (no tag)
  score, R = 2  score_context(peers' round 2) -> revised ANSWER (no tag)
  score_blind   score_context(None)          -> own ANSWER (no tag)
Half of the peers are random answers with random confidences, so "adopt a confident peer" is
learned as reading and copying (toy-world-prototype.md, lesson 2).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from madopd.toyworld.toy_common import (
    FAMILIES,
    TeacherSkill,
    confidence_tag,
    revise,
)
from madopd.toyworld.toy_tools import ToyToolsTask, oracle_action, parse_history
from madopd.types import Chat, DebateMessage, State, Transcript

RANDOM_PEER_CONF = (10, 20, 30, 60, 70, 90)


class _Stub:
    """Stands in for a model in ``Debate``'s constructor: only prompts are built here."""

    def __init__(self, name: str):
        self.name = name

    def generate(self, chats, sampling):  # pragma: no cover - never called
        raise RuntimeError("prompt-building stub")


def make_debate(names: list[str], rounds: int = 2):
    from madopd.debate import Debate, DebateProtocol
    from madopd.toyworld.toy_common import toy_templates

    return Debate([_Stub(n) for n in names], DebateProtocol(rounds=rounds, templates=toy_templates()))


# --------------------------------------------------------------------------- oracle turns

def teacher_turn(skill: TeacherSkill, task, state: State) -> tuple[str, int]:
    """(answer, confidence) of a teacher with ``skill`` in round 1 (no peers)."""
    op, believes = skill.belief(state.family, state.meta["u"], bool(state.meta["trap"]))
    answer = task.answer_with(state, op)
    # an answer that does not depend on the skill (e.g. "get c") is known for sure
    sure = believes or answer == task.answer_with(state, FAMILIES[state.family].tool)
    return answer, skill.confidence(sure)


def revised_turn(skill: TeacherSkill, task, state: State,
                 peers: list[tuple[str, int | None]]) -> tuple[str, int]:
    own = teacher_turn(skill, task, state)
    return revise(own, peers, stubborn=state.family in skill.stubborn)


def _msg(k: int, r: int, answer: str, conf: int) -> DebateMessage:
    return DebateMessage(teacher=k, round=r, text=answer + confidence_tag(conf), answer=answer,
                         confidence=float(conf))


def oracle_transcript(skills: list[TeacherSkill], task, state: State, rounds: int) -> Transcript:
    """The debate the skills *should* produce (what a perfectly trained zoo says)."""
    tr = Transcript(state.id, [s.name for s in skills], rounds)
    r1 = [teacher_turn(s, task, state) for s in skills]
    tr.messages += [_msg(k, 1, a, c) for k, (a, c) in enumerate(r1)]
    prev = r1
    for r in range(2, rounds + 1):
        cur = [revised_turn(s, task, state, [p for j, p in enumerate(prev) if j != k])
               for k, s in enumerate(skills)]
        tr.messages += [_msg(k, r, a, c) for k, (a, c) in enumerate(cur)]
        prev = cur
    return tr


# --------------------------------------------------------------------------- examples

@dataclass
class Example:
    chat: Chat  # the prompt (rendered with add_generation_prompt)
    target: str  # the completion text (EOS appended at tokenisation)
    kind: str  # r1 | r2 | s1 | s2 | blind | sft (| r3 | s3 ... with debate_rounds > 2)


def _random_peer(task, state: State, rng: random.Random) -> tuple[str, int]:
    return task.answer_with(state, rng.choice(list(FAMILIES))), rng.choice(RANDOM_PEER_CONF)


def teacher_examples(skills: list[TeacherSkill], k: int, task, state: State,
                     rng: random.Random, debate, rounds: int = 2) -> list[Example]:
    """The debate/scoring examples of teacher k on one state: five for ``rounds`` = 2 (r1, r2,
    s1, s2, blind), two more per extra round (r_R: the round-R turn after R - 1 rounds, s_R:
    scoring after R rounds), so a zoo trained with ``ZooSpec.debate_rounds`` = R debates R rounds
    in its training distribution."""
    skill, K = skills[k], len(skills)
    own1 = teacher_turn(skill, task, state)
    # peers' round-1 turns: the real skills' (half the time) or random ones
    if rng.random() < 0.5:
        peers1 = [teacher_turn(skills[j], task, state) for j in range(K) if j != k]
    else:
        peers1 = [_random_peer(task, state, rng) for _ in range(K - 1)]
    own2 = revised_turn(skill, task, state, peers1)
    tr1 = _transcript(state, skills, k, 1, {1: (own1, peers1)})
    # peers' round-2 turns: the real revision (of the real round 1) or random ones
    if rng.random() < 0.5:
        real1 = [teacher_turn(s, task, state) for s in skills]
        peers2 = [revised_turn(skills[j], task, state, [p for i, p in enumerate(real1) if i != j])
                  for j in range(K) if j != k]
    else:
        peers2 = [_random_peer(task, state, rng) for _ in range(K - 1)]
    own_s2 = revised_turn(skill, task, state, peers2)
    tr2 = _transcript(state, skills, k, 2, {1: (own1, peers1), 2: (own_s2, peers2)})
    out = [
        Example(debate.prompt(state, None, k, 1), own1[0] + confidence_tag(own1[1]), "r1"),
        Example(debate.prompt(state, tr1, k, 2), own2[0] + confidence_tag(own2[1]), "r2"),
        Example(debate.score_context(state, tr1, k), own2[0], "s1"),
        Example(debate.score_context(state, tr2, k), own_s2[0], "s2"),
        Example(debate.score_context(state, None, k), own1[0], "blind"),
    ]
    turns, peers, tr = {1: (own1, peers1), 2: (own_s2, peers2)}, peers2, tr2
    for r in range(3, rounds + 1):  # later rounds: revise on the peers' latest turns
        own_r = revised_turn(skill, task, state, peers)
        out.append(Example(debate.prompt(state, tr, k, r), own_r[0] + confidence_tag(own_r[1]), f"r{r}"))
        peers = ([revised_turn(skills[j], task, state, [turns[r - 1][0]]) for j in range(K) if j != k]
                 if rng.random() < 0.5 else [_random_peer(task, state, rng) for _ in range(K - 1)])
        turns[r] = (own_r, peers)
        tr = _transcript(state, skills, k, r, turns)
        out.append(Example(debate.score_context(state, tr, k), revised_turn(skill, task, state, peers)[0],
                           f"s{r}"))
    return out


def _transcript(state: State, skills, k: int, rounds: int, turns: dict) -> Transcript:
    tr = Transcript(state.id, [s.name for s in skills], rounds)
    for r, (own, peers) in turns.items():
        others = iter(peers)
        for j in range(len(skills)):
            a, c = own if j == k else next(others)
            tr.messages.append(_msg(j, r, a, c))
    return tr


# --------------------------------------------------------------------------- states to train on

def noisy_tool_states(task: ToyToolsTask, n_episodes: int, rng: random.Random,
                      p_wrong_op: float = 0.35, p_junk: float = 0.08) -> list[State]:
    """Step-level states from a sloppy policy, so teachers also see the student's kind of errors."""
    states = []
    eps = task.train_episodes()
    for _ in range(n_episodes):
        ep = rng.choice(eps)
        op = rng.choice(list(FAMILIES)) if rng.random() < p_wrong_op else ep.family
        history = list(ep.messages)
        while True:
            states.append(task.state_at(ep, history))
            a = oracle_action(ep, history, op)
            if rng.random() < p_junk:
                a = f"get {rng.choice('abcdefgh')}"
            obs, done = task.environment.step(ep, history, a)
            history.append({"role": "assistant", "content": a})
            if done:
                break
            history.append({"role": "tool", "content": obs})
    return states


def student_examples(task, states: list[State], skill: float, rng: random.Random,
                     tools: ToyToolsTask | None = None) -> list[Example]:
    """Base-student SFT data: the formats, with the skill-bearing operation right only by chance.

    With probability ``skill`` the operation is the family's, otherwise uniform over all five
    (so Base ~ skill + (1 - skill)/5 on skill steps). Tool histories follow that same choice,
    so the student learns to answer the result of the operation it called.
    """
    out = []
    if tools is None:
        for st in states:
            op = st.family if rng.random() < skill else rng.choice(list(FAMILIES))
            out.append(Example(st.messages, task.answer_with(st, FAMILIES[op].tool), "sft"))
        return out
    eps = {}
    for st in states:
        eps.setdefault(st.meta["episode"], st)
    for st in eps.values():
        ep = tools.episode_of(st)
        op = ep.family if rng.random() < skill else rng.choice(list(FAMILIES))
        history = list(ep.messages)
        for _ in range(tools.max_steps):
            a = oracle_action(ep, history, op)
            out.append(Example(list(history), a, "sft"))
            obs, done = tools.environment.step(ep, history, a)
            history.append({"role": "assistant", "content": a})
            if done:
                break
            history.append({"role": "tool", "content": obs})
    return out


def n_actions(state: State) -> int:
    return len(parse_history(state.messages))
