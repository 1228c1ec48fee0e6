"""The single-teacher ceiling: a teacher answering BLIND, evaluated exactly like a student.

The paper's title claim is that the student breaks the single-teacher ceiling, so the table
needs each teacher's own score on the same held-out items and metric. ``BlindTeacherPolicy``
makes a teacher look like a student (``rollout(states, sampling) -> Samples``): for each state
it decodes from the teacher's *blind* scoring context — the state's messages plus the score cue
with no debate transcript (``Debate.score_context(state, None, k)``, the toy template ``#S``).
That is the context the zoo trained the teachers to answer from alone; the student's
distillation target is the same teacher with the transcript in that context instead. So the
teacher's row goes through the same code as a student's: ``evaluate_student`` (toy-tools:
greedy episodes through the environment) and ``demo.evaluate_code`` (toy-code: sampled
programs in the sandbox).
"""

from __future__ import annotations

from typing import Any

from madopd.types import Samples, Sampling, State


class BlindTeacherPolicy:
    """``teacher`` (an ``HFTeacher``) answering without a transcript, as a student would.

    ``protocol``: the ``DebateProtocol`` whose ``score_blind`` template forms the context.
    The context is built by a one-teacher ``Debate``, so a template naming ``{num_teachers}``
    would read 1 (the toy templates name neither the teacher nor the count).
    """

    def __init__(self, teacher: Any, protocol: Any):
        from madopd.debate import Debate

        self.teacher = teacher
        self.name = getattr(teacher, "name", "teacher")
        self.debate = Debate([teacher], protocol, names=[self.name])

    def contexts(self, states: list[State]) -> list[list[dict]]:
        return [self.debate.score_context(s, None, 0) for s in states]

    def rollout(self, states: list[State], sampling: Sampling) -> Samples:
        prompts, replies, hit_limit = self.teacher.generate_ids(self.contexts(states), sampling)
        return Samples(prompt_ids=prompts, response_ids=replies,
                       texts=[self.teacher.decode(r) for r in replies], truncated=hit_limit)
