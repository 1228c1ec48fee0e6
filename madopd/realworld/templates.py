"""The real world's debate texts for the zoo's teachers (issue 22, items 1 and 3).

Round 1 adds no cue: the teacher sees exactly the student's prompt (format shots as earlier
chat turns, then the request — the form that works for SmolLM2, docs/real-models.md) and was
trained to end its turn with ``<<CONFIDENCE=N>>``. Later rounds and the scoring context add
one user turn with the transcript. ``render_turn`` is the transcript's one-line form, shared by
the zoo's training data and the debate (the teachers see at test time what they trained on).
"""

from __future__ import annotations

from madopd.debate import DebateTemplates, _fmt_conf

TURN = "{name}: {answer} (confidence {confidence})"
_CUE = ("Answers so far:\n{transcript}\n\nYou are {name}. Give the final call; adopt an answer "
        "stated with high confidence if yours was not.")
HOUSE_TEMPLATES = DebateTemplates(system="", round1="", revise=_CUE, score=_CUE, score_blind="",
                                  turn=TURN)


def render_turn(name: str, round: int, answer: str, confidence: float | None) -> str:
    return TURN.format(name=name, round=round, text=answer, answer=answer,
                       confidence=_fmt_conf(confidence))
