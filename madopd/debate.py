"""The debate engine: K teachers discuss a student's *state* for R rounds (paper Eq. 5, Def. 1).

Who sees what (docs/architecture.md §3; the student's answer is never shown to anyone):
  round 1      [system?] + state.messages + [user: round1]      blind, independent
  round r >= 2 [system?] + state.messages + [user: revise]      all turns of rounds < r
  scoring      [system?] + state.messages + [user: score]       the whole transcript (H_R)
               [system?] + state.messages + [user: score_blind] R = 0 / OPD baselines
A template whose text is empty adds no message. If the state's chat already starts with a
system message, the system template's text is prepended to it (one system message: many chat
templates reject a second one). Every chat goes through the teacher's own chat template
(the official code sent raw strings to a completions endpoint: paper digest W2).

Batching: one ``generate`` call per teacher per round with all states. Failures are a policy
(``on_teacher_error``) and always counted (``Debate.counters``): the official code turned any
error into an empty turn silently (W3).

K = 1 with R >= 1 is allowed: it is self-refinement (the teacher revises its own answer; the
``{peers_last}`` placeholder is empty). K = 2 is not hard-coded anywhere (W1).
"""

from __future__ import annotations

import json
import string
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from madopd.errors import ConfigError, DataError, ShapeError, TeacherError
from madopd.types import Chat, DebateMessage, Sampling, State, Transcript
from madopd.weighting import (
    MISSING_POLICIES,
    WeightResult,
    parse_confidence_detail,
    strip_confidence,
    weights_from_transcripts,
)

ERROR_POLICIES = ("raise", "drop_teacher")
CONFIDENCE_SOURCES = ("tag", "forced_tag", "forced_ask", "answer_logprob")  # madopd.confidence.SOURCES
TRANSCRIPT_FORMAT = "madopd.transcript/1"

# --------------------------------------------------------------------------- templates

# Which placeholders each template may use (str.format syntax; write literal braces as {{ }}).
_DEBATE_KEYS = {"transcript", "own_last", "peers_last", "name", "round", "num_teachers"}
PLACEHOLDERS = {
    "system": {"name", "num_teachers"},
    "round1": {"name", "round", "num_teachers"},
    "revise": _DEBATE_KEYS,
    "score": _DEBATE_KEYS,
    "score_blind": {"name", "num_teachers"},
    "turn": {"name", "round", "text", "answer", "confidence"},
}

CONFIDENCE_INSTRUCTION = (
    "End your reply with one last line of exactly this form: <<CONFIDENCE=N>>\n"
    "where N is an integer from 0 to 100: your probability, in percent, that your final answer "
    "is correct. Write nothing after that line."
)


def _texts(task_line: str, revise_focus: str, score_line: str) -> dict[str, str]:
    """Preset wording: persona + task (round 1), critical revision (r >= 2), score cue."""
    return dict(
        round1=(
            "You are {name}, one of {num_teachers} experts. Each expert first answers on their "
            f"own; later you will see each other's answers. {task_line}\n\n"
            + CONFIDENCE_INSTRUCTION),
        revise=(
            "Round {round} of the discussion. The experts' answers so far:\n\n{transcript}\n\n"
            "You are {name}. Read the other answers critically; you do not have to agree. "
            "Keep your answer if it is still right, fix it if an argument shows a mistake. "
            f"{revise_focus} Then give your complete final answer.\n\n" + CONFIDENCE_INSTRUCTION),
        score=(
            "The experts discussed the conversation above:\n\n{transcript}\n\n"
            f"You are {{name}}. Using what the discussion established, {score_line} "
            "Reply with that response only, without a confidence tag."),
    )


_PRESET_TEXTS = {
    "general": _texts(
        "Solve the task in the conversation above. Reason briefly, then state your final "
        "answer clearly.",
        "Check the reasoning step by step.",
        "now give the best response to the conversation yourself."),
    "tool_use": _texts(
        "Decide what the assistant should do next in the conversation above: which tool(s) "
        "to call with which exact argument names and values, in the call format the "
        "conversation specifies, or the reply to the user when no tool is needed. Check every "
        "argument against the tool specification. Your answer is that next assistant message.",
        "Focus on the choice of tool, the argument names and values, and the order of calls.",
        "now write the best next assistant message (tool call(s) or reply), exactly in the "
        "conversation's format."),
    "code": _texts(
        "Solve the programming task in the conversation above. Think about correctness, edge "
        "cases and efficiency, then give one complete solution in a single code block.",
        "Focus on correctness, edge cases, and time and memory complexity.",
        "now write the best complete solution to the task in a single code block."),
}
# For small instruct models (SmolLM2-135M copies the long presets' "N" literally): short cues,
# the tag shown with example numbers. The examples may anchor the stated values; the measured
# tag rates per preset are in docs/real-models.md.
_COMPACT_TAG = ("Then write one last line <<CONFIDENCE=N>> where N is an integer from 0 to 100, "
                "your chance of being right, for example <<CONFIDENCE=30>> or <<CONFIDENCE=90>>.")
_PRESET_TEXTS["compact"] = dict(
    round1="You are {name}. Answer the conversation above in one or two lines. " + _COMPACT_TAG,
    revise=("Answers so far:\n\n{transcript}\n\nYou are {name}. Give your final answer (fix it "
            "if another answer shows a mistake). " + _COMPACT_TAG),
    score=("Answers so far:\n\n{transcript}\n\nYou are {name}. Now give the best response to "
           "the conversation yourself, without a confidence tag."))
_GENERAL = _PRESET_TEXTS["general"]


@dataclass(frozen=True)
class DebateTemplates:
    """The debate's prompt texts (``str.format`` templates, user-overridable).

    system      optional system text ({name}, {num_teachers}); "" = no system message
    round1      round-1 cue, blind ({name}, {round}, {num_teachers})
    revise      round r >= 2 cue ({transcript}, {own_last}, {peers_last}, {name}, {round},
                {num_teachers}); {transcript} = all earlier turns, {own_last}/{peers_last} =
                this teacher's answer / the peers' rendered turns of round r - 1
    score       force-decoding cue after a debate (same placeholders; {round} = R, all turns)
    score_blind force-decoding cue without a debate (R = 0, OPD baselines); "" = the teacher
                sees exactly the student's prompt
    turn        how one transcript entry renders ({name}, {round}, {text} = raw reply,
                {answer} = reply without tags, {confidence} = number or "not stated")
    Failed turns (teacher errors) are left out of the rendered transcript. Defaults: the
    "general" preset; ``TEMPLATES`` holds "general", "tool_use", "code" and "compact" (short
    cues for small models).
    """

    system: str = ""
    round1: str = _GENERAL["round1"]
    revise: str = _GENERAL["revise"]
    score: str = _GENERAL["score"]
    score_blind: str = ""
    turn: str = "{name} (round {round}):\n{answer}\nConfidence: {confidence}"

    def __post_init__(self):
        for name, allowed in PLACEHOLDERS.items():
            text = getattr(self, name)
            if not isinstance(text, str):
                raise ConfigError(f"DebateTemplates.{name}: expected a str, got {type(text).__name__}")
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
            except ValueError as e:
                raise ConfigError(f"DebateTemplates.{name}: bad format string ({e}); "
                                  "write literal braces as {{ and }}") from e
            for f in fields:
                if f not in allowed:
                    raise ConfigError(f"DebateTemplates.{name}: unknown placeholder {{{f}}}; "
                                      f"allowed: {sorted(allowed)} (literal braces: {{{{ }}}})")


TEMPLATES: dict[str, DebateTemplates] = {
    name: DebateTemplates(**texts) for name, texts in _PRESET_TEXTS.items()}


# --------------------------------------------------------------------------- protocol

def _default_sampling() -> Sampling:
    return Sampling(temperature=0.7, top_p=0.8, top_k=20, max_new_tokens=512)


@dataclass
class DebateProtocol:
    """How a debate runs. R = 0 means no debate (teachers score with ``score_blind``)."""

    rounds: int = field(default=2, metadata={"help": "debate rounds R >= 0 (0 = no debate)"})
    templates: DebateTemplates | str = field(default="general", metadata={
        "help": "a DebateTemplates or a preset name: 'general', 'tool_use', 'code', 'compact' "
                "(short cues for small models)"})
    sampling: Sampling = field(default_factory=_default_sampling, metadata={
        "help": "teachers' decoding settings; a set seed is offset per round and teacher"})
    on_teacher_error: str = field(default="raise", metadata={
        "help": "'raise' (TeacherError naming teacher and round) or 'drop_teacher' (the turn is "
                "recorded as failed: text '', confidence None; counted)"})
    on_missing_confidence: str = field(default="uniform", metadata={
        "help": "missing-tag policy for weights: 'uniform' | 'drop_teacher' | 'skip_sample'"})
    parallel_teachers: bool = field(default=False, metadata={
        "help": "call the K teachers of a round from threads (for server backends)"})
    confidence_fallback: str = field(default="none", metadata={
        "help": "a turn without a readable tag: 'none' (stays missing), 'forced_tag' (expected "
                "N after forcing '<<CONFIDENCE='), 'forced_ask' (expected N of the first reply "
                "token when asked for a 0-100 number), 'answer_logprob' (the teacher's mean "
                "probability of its own reply); see madopd.confidence; counted per source"})

    def __post_init__(self):
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 0:
            raise ConfigError(f"DebateProtocol.rounds: expected an int >= 0, got {self.rounds!r}")
        if isinstance(self.templates, str):
            if self.templates not in TEMPLATES:
                raise ConfigError(f"DebateProtocol.templates: unknown preset {self.templates!r}; "
                                  f"expected one of {sorted(TEMPLATES)} or a DebateTemplates")
            self.templates = TEMPLATES[self.templates]
        if not isinstance(self.templates, DebateTemplates):
            raise ConfigError("DebateProtocol.templates: expected a DebateTemplates or a preset name")
        if not isinstance(self.sampling, Sampling):
            raise ConfigError("DebateProtocol.sampling: expected madopd.types.Sampling")
        if self.on_teacher_error not in ERROR_POLICIES:
            raise ConfigError(f"DebateProtocol.on_teacher_error: expected one of {ERROR_POLICIES}, "
                              f"got {self.on_teacher_error!r}")
        from madopd.confidence import FALLBACKS

        if self.confidence_fallback not in FALLBACKS:
            raise ConfigError(f"DebateProtocol.confidence_fallback: expected one of {FALLBACKS}, "
                              f"got {self.confidence_fallback!r}")
        if self.on_missing_confidence not in MISSING_POLICIES:
            raise ConfigError(f"DebateProtocol.on_missing_confidence: expected one of "
                              f"{MISSING_POLICIES}, got {self.on_missing_confidence!r}")


# --------------------------------------------------------------------------- turns and JSON

@dataclass
class FailedTurn(DebateMessage):
    """A turn whose teacher call failed (policy 'drop_teacher'): text '', confidence None."""

    failed: bool = True
    error: str = ""


def is_failed(message: DebateMessage) -> bool:
    return bool(getattr(message, "failed", False))


def transcript_to_dict(transcript: Transcript) -> dict[str, Any]:
    """A JSON-ready dict (strings are stored verbatim; escaping is the renderer's job)."""
    msgs = []
    for m in transcript.messages:
        d = {"teacher": m.teacher, "round": m.round, "text": m.text, "answer": m.answer,
             "confidence": m.confidence}
        if getattr(m, "confidence_source", None) is not None:
            d["confidence_source"] = m.confidence_source
        if is_failed(m):
            d.update(failed=True, error=getattr(m, "error", ""))
        msgs.append(d)
    return {"format": TRANSCRIPT_FORMAT, "state_id": transcript.state_id,
            "teacher_names": list(transcript.teacher_names), "rounds": transcript.rounds,
            "messages": msgs}


def _get(d: Any, key: str, types: tuple[type, ...], where: str) -> Any:
    """d[key] checked against ``types`` (bool is not accepted as an int)."""
    if not isinstance(d, dict) or key not in d:
        raise DataError(f"{where}: missing", field=key)
    v = d[key]
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
        names = " or ".join(t.__name__ for t in types)
        raise DataError(f"{where}: expected {names}, got {type(v).__name__}", field=key)
    return v


def transcript_from_dict(d: dict[str, Any]) -> Transcript:
    """Inverse of ``transcript_to_dict``; malformed input raises DataError naming the field."""
    fmt = d.get("format", TRANSCRIPT_FORMAT) if isinstance(d, dict) else None
    if fmt != TRANSCRIPT_FORMAT:
        raise DataError(f"transcript: unsupported format {fmt!r}, expected {TRANSCRIPT_FORMAT!r}",
                        field="format")
    names = _get(d, "teacher_names", (list,), "transcript")
    if not all(isinstance(n, str) for n in names):
        raise DataError("transcript: expected a list of str", field="teacher_names")
    tr = Transcript(state_id=_get(d, "state_id", (str,), "transcript"), teacher_names=names,
                    rounds=_get(d, "rounds", (int,), "transcript"))
    for i, m in enumerate(_get(d, "messages", (list,), "transcript")):
        where = f"transcript.messages[{i}]"
        conf = _get(m, "confidence", (int, float, type(None)), where)
        args = dict(teacher=_get(m, "teacher", (int,), where), round=_get(m, "round", (int,), where),
                    text=_get(m, "text", (str,), where), answer=_get(m, "answer", (str,), where),
                    confidence=None if conf is None else float(conf))
        if not 0 <= args["teacher"] < len(names):
            raise DataError(f"{where}: expected 0 <= teacher < {len(names)}", field="teacher")
        if not 1 <= args["round"] <= tr.rounds:
            raise DataError(f"{where}: expected 1 <= round <= {tr.rounds}", field="round")
        if conf is not None and not 0.0 <= conf <= 100.0:  # also rejects NaN
            raise DataError(f"{where}: expected a confidence in [0, 100] or null", field="confidence")
        source = m.get("confidence_source")
        if source is not None and source not in CONFIDENCE_SOURCES:
            raise DataError(f"{where}: expected a confidence source in {CONFIDENCE_SOURCES} or "
                            "null", field="confidence_source")
        args["confidence_source"] = source
        if m.get("failed", False):
            tr.messages.append(FailedTurn(**args, error=str(m.get("error", ""))))
        else:
            tr.messages.append(DebateMessage(**args))
    return tr


def transcript_to_json(transcript: Transcript) -> str:
    return json.dumps(transcript_to_dict(transcript), ensure_ascii=False)


def transcript_from_json(text: str) -> Transcript:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"transcript JSON: {e}") from e
    return transcript_from_dict(data)


# --------------------------------------------------------------------------- the runner

def _truncations(teacher: Any) -> int:
    """Sum of a backend's truncation counters (``teacher.counters`` keys containing 'truncat')."""
    counters = getattr(teacher, "counters", None)
    if not isinstance(counters, dict):
        return 0
    return int(sum(v for k, v in counters.items() if "truncat" in k and isinstance(v, (int, float))))


def _fmt_conf(c: float | None) -> str:
    return "not stated" if c is None else f"{c:g}"


class Debate:
    """Run a debate among ``teachers`` under ``protocol``; step it round by round if you like.

    ``counters`` (cumulative, ints): debate/turns, debate/failed_turns, debate/teacher_errors,
    debate/empty_turns, debate/absent_confidence, debate/malformed_confidence,
    debate/clamped_confidence, debate/truncated_contexts, debate/generate_calls.
    ``errors``: one dict per failed teacher call (round, teacher, name, error).
    ``timings``: seconds spent in ``generate`` per teacher name.
    """

    def __init__(self, teachers: Sequence[Any], protocol: DebateProtocol | None = None, *,
                 names: Sequence[str] | None = None):
        self.teachers = list(teachers)
        self.protocol = protocol if protocol is not None else DebateProtocol()
        if not isinstance(self.protocol, DebateProtocol):
            raise ConfigError("protocol: expected a DebateProtocol")
        if len(self.teachers) < 1:
            raise ConfigError("teachers: expected at least one teacher")
        for k, t in enumerate(self.teachers):
            if not callable(getattr(t, "generate", None)):
                raise ConfigError(f"teachers[{k}]: expected an object with generate(chats, sampling)")
        from madopd.confidence import check_fallback

        check_fallback(self.protocol.confidence_fallback, self.teachers)
        self.names = self._names(names)
        self.counters: dict[str, int] = {}
        self.errors: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {}
        self.reset_counters()

    def _names(self, names: Sequence[str] | None) -> list[str]:
        K = len(self.teachers)
        if names is not None:
            names = list(names)
            if len(names) != K or len(set(names)) != K or not all(isinstance(n, str) and n for n in names):
                raise ConfigError(f"names: expected {K} distinct non-empty strings, got {names!r}")
            return names
        out = [getattr(t, "name", None) or f"T{k + 1}" for k, t in enumerate(self.teachers)]
        if len(set(out)) != K:  # e.g. the same model twice (self-debate): index-based names
            out = [f"T{k + 1}" for k in range(K)]
        return out

    @property
    def K(self) -> int:
        return len(self.teachers)

    def reset_counters(self) -> None:
        keys = ("turns", "failed_turns", "teacher_errors", "empty_turns", "absent_confidence",
                "malformed_confidence", "clamped_confidence", "truncated_contexts", "generate_calls",
                *(f"confidence_from_{s}" for s in CONFIDENCE_SOURCES), "confidence_missing",
                "forced_tag_low_mass", "forced_ask_low_mass")
        self.counters = {f"debate/{k}": 0 for k in keys}
        self.errors, self.timings = [], {}

    # ----- prompts -------------------------------------------------------------------------

    def _base(self, state: State, k: int) -> Chat:
        if not isinstance(state, State) or not isinstance(state.messages, list):
            raise ShapeError(f"state: expected madopd.types.State with a message list, got {state!r:.80}")
        chat = [dict(m) for m in state.messages]  # copies: never mutate the task's state
        system = self.protocol.templates.system.format(name=self.names[k], num_teachers=self.K)
        if system:
            if chat and chat[0].get("role") == "system":
                chat[0]["content"] = system + "\n\n" + chat[0].get("content", "")
            else:
                chat.insert(0, {"role": "system", "content": system})
        return chat

    def _with_cue(self, state: State, k: int, cue: str) -> Chat:
        chat = self._base(state, k)
        if cue:
            chat.append({"role": "user", "content": cue})
        return chat

    def render_turn(self, transcript: Transcript, m: DebateMessage) -> str:
        return self.protocol.templates.turn.format(
            name=transcript.teacher_names[m.teacher], round=m.round, text=m.text,
            answer=m.answer, confidence=_fmt_conf(m.confidence))

    def _values(self, transcript: Transcript, k: int, upto: int) -> dict[str, Any]:
        """Placeholder values from the turns of rounds <= ``upto`` (failed turns left out)."""
        if len(transcript.teacher_names) != self.K:
            raise ShapeError(f"transcript {transcript.state_id!r}: {len(transcript.teacher_names)} "
                             f"teachers, this debate has {self.K}")
        if transcript.rounds < upto:
            raise ShapeError(f"transcript {transcript.state_id!r}: has {transcript.rounds} rounds, "
                             f"round {upto} is needed")
        turns = sorted((m for m in transcript.messages if m.round <= upto and not is_failed(m)),
                       key=lambda m: (m.round, m.teacher))
        last = [m for m in turns if m.round == upto]
        own = [m.answer for m in last if m.teacher == k]
        return dict(
            transcript="\n\n".join(self.render_turn(transcript, m) for m in turns),
            own_last=own[0] if own else "",
            peers_last="\n\n".join(self.render_turn(transcript, m) for m in last if m.teacher != k),
            name=self.names[k], num_teachers=self.K)

    def prompt(self, state: State, transcript: Transcript | None, k: int, r: int) -> Chat:
        """The chat teacher k sees in round r (1-based); round 1 ignores the transcript."""
        tpl = self.protocol.templates
        if not 0 <= k < self.K:
            raise ShapeError(f"k: expected a teacher index in [0, {self.K}), got {k}")
        if r < 1:
            raise ShapeError(f"r: rounds are 1-based, got {r}")
        if r == 1:
            return self._with_cue(state, k, tpl.round1.format(
                name=self.names[k], round=1, num_teachers=self.K))
        if transcript is None:
            raise ShapeError(f"round {r} needs the transcript of rounds 1..{r - 1}, got None")
        return self._with_cue(state, k, tpl.revise.format(
            **self._values(transcript, k, r - 1), round=r))

    def score_context(self, state: State, transcript: Transcript | None, k: int) -> Chat:
        """Teacher k's privileged force-decoding context: the whole debate + the score cue."""
        tpl = self.protocol.templates
        if not 0 <= k < self.K:
            raise ShapeError(f"k: expected a teacher index in [0, {self.K}), got {k}")
        if transcript is None or transcript.rounds == 0:
            return self._with_cue(state, k, tpl.score_blind.format(
                name=self.names[k], num_teachers=self.K))
        return self._with_cue(state, k, tpl.score.format(
            **self._values(transcript, k, transcript.rounds), round=transcript.rounds))

    # ----- running -------------------------------------------------------------------------

    def new_transcripts(self, states: Sequence[State]) -> list[Transcript]:
        return [Transcript(state_id=s.id, teacher_names=list(self.names), rounds=0) for s in states]

    def _sampling(self, k: int, r: int) -> Sampling:
        s = self.protocol.sampling
        if s.seed is None:
            return s
        # Distinct streams per (round, teacher): the same model twice must not say the same thing.
        # Backends may add the sample index (vLLM: seed + i), hence the large stride.
        return replace(s, seed=s.seed + 100_003 * ((r - 1) * self.K + k))

    def _generate(self, k: int, r: int, chats: list[Chat]) -> tuple[list[str] | None, str, int]:
        teacher, name = self.teachers[k], self.names[k]
        before = _truncations(teacher)
        t0 = time.perf_counter()
        try:
            texts = teacher.generate(chats, self._sampling(k, r))
            if texts is None:  # a backend whose own failure policy dropped the batch
                raise TeacherError("the backend returned None (it dropped the batch)")
            if not isinstance(texts, list) or len(texts) != len(chats) or \
                    not all(isinstance(t, str) for t in texts):
                raise TeacherError(f"generate returned {type(texts).__name__} of "
                                   f"{len(texts) if hasattr(texts, '__len__') else '?'} items, "
                                   f"expected a list of {len(chats)} str")
            return texts, "", _truncations(teacher) - before
        except (TeacherError, TimeoutError) as e:
            return None, f"{type(e).__name__}: {e}", _truncations(teacher) - before
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    def round(self, r: int, states: Sequence[State],
              transcripts: Sequence[Transcript] | None = None) -> list[Transcript]:
        """Run round r for every state (transcripts must hold rounds 1..r-1; None for r = 1).

        Returns new Transcript objects (the inputs are not modified), so re-running a notebook
        cell is safe.
        """
        if transcripts is None:
            if r != 1:
                raise ShapeError(f"round {r}: transcripts of rounds 1..{r - 1} are required")
            transcripts = self.new_transcripts(states)
        if not states:  # nothing to debate: no teacher call
            return []
        if len(transcripts) != len(states):
            raise ShapeError(f"transcripts: expected {len(states)} (one per state), got {len(transcripts)}")
        for b, (s, tr) in enumerate(zip(states, transcripts)):
            if tr.state_id != s.id or tr.rounds != r - 1:
                raise ShapeError(f"transcripts[{b}]: state {tr.state_id!r} with {tr.rounds} rounds; "
                                 f"expected state {s.id!r} with {r - 1} rounds before round {r}")
        chats = [[self.prompt(s, tr, k, r) for s, tr in zip(states, transcripts)]
                 for k in range(self.K)]  # [K][B]
        if self.protocol.parallel_teachers and self.K > 1:
            with ThreadPoolExecutor(max_workers=self.K) as pool:
                results = list(pool.map(lambda k: self._generate(k, r, chats[k]), range(self.K)))
        else:
            results = [self._generate(k, r, chats[k]) for k in range(self.K)]
        c = self.counters
        new = [Transcript(tr.state_id, list(tr.teacher_names), r, list(tr.messages))
               for tr in transcripts]
        for k, (texts, error, truncated) in enumerate(results):
            c["debate/generate_calls"] += 1
            c["debate/truncated_contexts"] += max(0, truncated)
            c["debate/turns"] += len(states)
            if texts is None:
                c["debate/teacher_errors"] += 1
                self.errors.append({"round": r, "teacher": k, "name": self.names[k], "error": error})
                if self.protocol.on_teacher_error == "raise":
                    raise TeacherError(f"debate round {r}: teacher {self.names[k]!r} (index {k}) "
                                       f"failed: {error}")
                c["debate/failed_turns"] += len(states)
                for tr in new:
                    tr.messages.append(FailedTurn(k, r, "", "", None, error=error))
                continue
            parsed = [parse_confidence_detail(text) for text in texts]
            missing = [b for b, pr in enumerate(parsed) if pr.value is None]
            fallback = {}
            if missing and self.protocol.confidence_fallback != "none":
                fallback = dict(zip(missing, self._fallback_confidences(
                    k, [chats[k][b] for b in missing], [texts[b] for b in missing])))
            for b, (tr, text, pr) in enumerate(zip(new, texts, parsed)):
                if not text.strip():
                    c["debate/empty_turns"] += 1
                if pr.status != "ok":
                    c[f"debate/{pr.status}_confidence"] += 1
                value, source = pr.value, "tag" if pr.value is not None else None
                if value is None and fallback.get(b) is not None:
                    value, source = fallback[b], self.protocol.confidence_fallback
                c[f"debate/confidence_from_{source}" if source else "debate/confidence_missing"] += 1
                tr.messages.append(DebateMessage(k, r, text, strip_confidence(text), value,
                                                 confidence_source=source))
        return new

    def _fallback_confidences(self, k: int, chats: list[Chat], texts: list[str]) -> list[float | None]:
        """The protocol's labelled confidence source for the turns without a readable tag
        (one teacher, one round; the forced reads run batched)."""
        from madopd.confidence import (
            FORCED,
            answer_logprob_confidence,
            forced_confidences,
            forced_ids,
        )

        teacher, source = self.teachers[k], self.protocol.confidence_fallback
        t0 = time.perf_counter()
        try:
            if source in FORCED:
                reads = forced_confidences(teacher, [forced_ids(teacher, chat, text, source)
                                                     for chat, text in zip(chats, texts)])
                self.counters[f"debate/{source}_low_mass"] += sum(m < 0.5 for _, m in reads)
                return [v for v, _ in reads]
            return [answer_logprob_confidence(teacher, chat, text)
                    for chat, text in zip(chats, texts)]
        finally:
            key = f"{self.names[k]}/confidence_fallback"
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0

    def run(self, states: Sequence[State]) -> list[Transcript]:
        """All R rounds for a batch of states (R = 0: empty transcripts with rounds = 0)."""
        transcripts = self.new_transcripts(states)
        for r in range(1, self.protocol.rounds + 1):
            transcripts = self.round(r, states, transcripts)
        return transcripts

    def weights(self, transcripts: Sequence[Transcript], *, tau: float = 1.0) -> WeightResult:
        """Confidence weights with this protocol's missing-tag policy (Eqs. 6-7)."""
        return weights_from_transcripts(transcripts, tau=tau,
                                        on_missing=self.protocol.on_missing_confidence)
